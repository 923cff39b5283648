#!/usr/bin/env -S python3 -S
"""A TEST DOUBLE of a machine's first boot with kbg's cloud-init user data, for kbg's
end-to-end tests of the exec and AWS providers. It is not a kubelet: it does the one thing
the kubelet that `kubeadm join` starts does to the API server when it comes up, register
its Node, and nothing else.

It reads the user data (templates/cloud-init-kubeadm.yaml.j2, rendered) on stdin and takes
what the kubelet would be configured with:

- from the JoinConfiguration in it: the node name (`nodeRegistration.name`), `node-labels`,
  `register-with-taints` and `provider-id`;
- from its runcmd: the kubelet version that `apt-get install -y kubelet=<V>-*` installs;
- `@PROVIDER_ID@` (the AWS boot script's placeholder) is filled in as that script does,
  `aws:///<az>/<instance-id>`, from `--availability-zone` and `--instance-id`: what EC2's
  instance metadata service answers on that instance. Without them it must not be there.

It then POSTs the Node to the cluster named by `--cluster FILE` (JSON: server, token,
ca_file), with the kwok annotation so that a simulated cluster's kubelet makes it Ready.
A Node of that name that exists already is left as it is (the kubelet reconciles it).

Options: --cluster FILE (required), --instance-id ID, --availability-zone AZ,
--record FILE (append the registered node's name, one per line).
"""

import json
import re
import ssl
import sys
import urllib.error
import urllib.request


def die(message):
    sys.stderr.write("kubelet-double: %s\n" % message)
    sys.exit(1)


def option(name):
    args = sys.argv[1:]
    if name in args:
        i = args.index(name)
        if i + 1 < len(args):
            return args[i + 1]
        die("%s needs a value" % name)
    return None


def quoted(key, text):
    """The value of the first `key: "value"` line."""
    m = re.search(r'^\s*%s: "(.*)"\s*$' % re.escape(key), text, re.M)
    return m.group(1) if m else None


user_data = sys.stdin.read()
if not user_data.startswith("#cloud-config"):
    die("the user data is not cloud-config")
name = quoted("name", user_data)
if not name:
    die("no nodeRegistration.name in the join configuration")
labels = quoted("node-labels", user_data) or ""
taints = quoted("register-with-taints", user_data) or ""
provider_id = quoted("provider-id", user_data)
if provider_id == "@PROVIDER_ID@":
    iid, az = option("--instance-id"), option("--availability-zone")
    if not iid or not az:
        die("the user data asks instance metadata for the provider ID; give --instance-id "
            "and --availability-zone")
    provider_id = "aws:///%s/%s" % (az, iid)
version = re.search(r"kubelet=([0-9][^ ]*)-\*", user_data)
if not version:
    die("no `apt-get install kubelet=<version>-*` in the runcmd")
version = "v" + version.group(1)

node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
for kv in filter(None, labels.split(",")):
    k, _, v = kv.partition("=")
    node_labels[k] = v
node_taints = []
for t in filter(None, taints.split(",")):
    kv, _, effect = t.rpartition(":")
    k, eq, v = kv.partition("=")
    taint = {"key": k, "effect": effect}
    if eq:
        taint["value"] = v
    node_taints.append(taint)
spec = {"taints": node_taints}
if provider_id:
    spec["providerID"] = provider_id
node = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": name, "labels": node_labels,
                 "annotations": {"kwok.x-k8s.io/node": "fake"}},
    "spec": spec,
    "status": {"nodeInfo": {"kubeletVersion": version, "kubeProxyVersion": version,
                            "operatingSystem": "linux", "architecture": "amd64",
                            "containerRuntimeVersion": "containerd://1.7.24",
                            "osImage": "Ubuntu 24.04 LTS", "kernelVersion": "6.8.0",
                            "machineID": name, "systemUUID": name, "bootID": name}},
}

path = option("--cluster")
if not path:
    die("--cluster FILE is required")
with open(path) as f:
    cluster = json.load(f)
ctx = ssl.create_default_context(cafile=cluster["ca_file"]) if cluster.get("ca_file") else None
req = urllib.request.Request(cluster["server"].rstrip("/") + "/api/v1/nodes", method="POST",
                             data=json.dumps(node).encode())
req.add_header("Authorization", "Bearer " + cluster["token"])
req.add_header("Content-Type", "application/json")
req.add_header("Accept", "application/json")
req.add_header("User-Agent", "kubelet-double/" + version)
try:
    with urllib.request.urlopen(req, context=ctx, timeout=30):
        pass
except urllib.error.HTTPError as e:
    if e.code != 409:
        die("registering node %s: HTTP %d %s" % (name, e.code, e.read()[:300]))
record = option("--record")
if record:
    with open(record, "a") as f:
        f.write(name + "\n")
