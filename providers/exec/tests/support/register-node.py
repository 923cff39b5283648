#!/usr/bin/env -S python3 -S
"""Test helper, not part of kbg: a stand-in for a machine booting from its bootstrap.

Used as the example plugin's `boot_command` in tests. It reads the machine's bootstrap on
stdin (cloud-init user-data), checks that it carries the join token, and registers the
Node the machine's kubelet would: named after the machine, with the pool's labels and
taints from the plugin's hook environment (KBG_*), the provider ID the example plugin
reports, the pool's kubelet version, and the kwok annotation so that a simulated cluster's
kubelet makes it Ready.

    register-node.py SERVER TOKEN_FILE CA_FILE EXPECTED_JOIN_TOKEN_FILE
"""
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

server, token_file, ca_file, join_file = sys.argv[1:5]
bootstrap = sys.stdin.read()
with open(join_file) as f:
    if f.read().strip() not in bootstrap:
        sys.stderr.write("the bootstrap does not carry the join token\n")
        sys.exit(1)
machine, pool = os.environ["KBG_MACHINE"], os.environ["KBG_POOL"]
labels = dict(kv.split("=", 1) for kv in os.environ["KBG_NODE_LABELS"].split(",") if kv)
taints = []
for t in filter(None, os.environ["KBG_TAINTS"].split(",")):
    kv, _, effect = t.rpartition(":")
    k, eq, v = kv.partition("=")
    taints.append(dict({"key": k, "effect": effect}, **({"value": v} if eq else {})))
node = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": machine, "labels": labels,
                 "annotations": {"kwok.x-k8s.io/node": "fake"}},
    "spec": {"providerID": "example:///%s/%s" % (pool, machine), "taints": taints},
    "status": {"nodeInfo": {"kubeletVersion": os.environ["KBG_VERSION"]}},
}
with open(token_file) as f:
    token = f.read().strip()
req = urllib.request.Request(server + "/api/v1/nodes", method="POST",
                             data=json.dumps(node).encode())
req.add_header("Authorization", "Bearer " + token)
req.add_header("Content-Type", "application/json")
try:
    urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca_file), timeout=30)
except urllib.error.HTTPError as e:
    if e.code != 409:
        sys.stderr.write("registering node %s: HTTP %d\n" % (machine, e.code))
        sys.exit(1)
