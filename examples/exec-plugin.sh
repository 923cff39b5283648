#!/bin/sh
# kbg exec-provider example plugin (protocol 1; see providers/exec/PROTOCOL.md).
#
# A complete, working plugin whose "machines" are records in a directory. It shows every
# part of the protocol — one JSON request on stdin, one JSON response on stdout, idempotent
# provisioning by machine name, per-machine errors with `kind` and `retryable`, secrets only
# on stdin — and leaves the actual machine-making to two hooks you set in the pool's
# `exec.config`:
#
#   state_dir:          where the records live (required)
#   boot_command:       run once per new machine with `sh -c`, its bootstrap (cloud-init
#                       user-data, carrying the join token) on stdin and KBG_POOL,
#                       KBG_MACHINE, KBG_VERSION, KBG_NODE_LABELS, KBG_TAINTS in the
#                       environment; a non-zero exit fails that machine and records nothing
#   teardown_command:   run once per removed machine, same environment
#   boot_timeout_secs:  how long each hook may run (default 300)
#
# Replace the hooks with your tooling (`maas $PROFILE machines allocate`, `terraform apply`,
# `openstack server create --user-data /dev/stdin`) or replace the whole script: any program
# that speaks the protocol works. `run` executes the script on this host, as a stand-in for
# reaching the machine over SSH or an agent.
#
# Requires python3 (standard library only). Nothing here is printed to stdout except the
# response, and nothing secret is printed at all.
PROGRAM=$(cat <<'PYTHON'
import fcntl, json, os, subprocess, sys, tempfile, time

PROTOCOL = 1


def respond(obj):
    obj["protocol"] = PROTOCOL
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.exit(0)


def fail(message, kind="failed", retryable=False, machine=None):
    err = {"message": message, "kind": kind, "retryable": retryable}
    if machine:
        err["machine"] = machine
    respond({"error": err})


def log(message):
    sys.stderr.write("exec-plugin: %s\n" % message)


try:
    req = json.load(sys.stdin)
except ValueError as e:
    fail("request is not JSON: %s" % e)
if not isinstance(req, dict) or req.get("protocol") != PROTOCOL:
    fail("this plugin speaks protocol %d; the request says %r"
         % (PROTOCOL, req.get("protocol") if isinstance(req, dict) else None),
         kind="unsupported")

op = req.get("op")
pool = req.get("pool") or {}
name = pool.get("name") or ""
config = pool.get("config") or {}
state_dir = config.get("state_dir")
if not state_dir:
    fail("set exec.config.state_dir: the directory this plugin keeps its machines in",
         kind="invalid_config")
hook_timeout = int(config.get("boot_timeout_secs", 300))
pool_dir = os.path.join(state_dir, name)
os.makedirs(pool_dir, exist_ok=True)

# One request at a time per pool: kbg does not overlap them, people running two kbg might.
lock = open(os.path.join(pool_dir, ".lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX)


def record_path(machine):
    if not machine or "/" in machine or machine.startswith("."):
        fail("bad machine name %r" % machine)
    return os.path.join(pool_dir, machine + ".json")


def load(machine):
    try:
        with open(record_path(machine)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(record):
    fd, tmp = tempfile.mkstemp(dir=pool_dir, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.rename(tmp, record_path(record["name"]))


def hook_env(machine):
    env = dict(os.environ)
    env.update({
        "KBG_POOL": name,
        "KBG_MACHINE": machine,
        "KBG_VERSION": pool.get("version", ""),
        "KBG_NODE_LABELS": ",".join("%s=%s" % kv for kv in sorted((pool.get("labels") or {}).items())),
        "KBG_TAINTS": ",".join(
            ("%s=%s:%s" % (t["key"], t["value"], t["effect"])) if t.get("value") is not None
            else ("%s:%s" % (t["key"], t["effect"]))
            for t in (pool.get("taints") or [])),
    })
    return env


def hook(command, machine, stdin_text):
    """Run a hook; None when it succeeded, else its last words."""
    try:
        done = subprocess.run(["sh", "-c", command], input=stdin_text.encode(),
                              env=hook_env(machine), capture_output=True,
                              timeout=hook_timeout)
    except subprocess.TimeoutExpired:
        return "hook timed out after %d s" % hook_timeout
    if done.returncode == 0:
        return None
    words = [l for l in done.stderr.decode(errors="replace").splitlines() if l.strip()]
    return "hook exited with %d: %s" % (done.returncode, words[-1] if words else "no message")


def machines_of_pool():
    out = []
    for entry in sorted(os.listdir(pool_dir)):
        if entry.endswith(".json") and not entry.startswith("."):
            with open(os.path.join(pool_dir, entry)) as f:
                out.append(json.load(f))
    return out


if op == "provision":
    machines, errors = [], []
    for m in req.get("machines") or []:
        machine = m.get("name")
        existing = load(machine)
        if existing:
            machines.append(existing)  # idempotent: never a second machine for a name
            continue
        boot = config.get("boot_command")
        if boot:
            problem = hook(boot, machine, m.get("bootstrap") or "")
            if problem:
                errors.append({"machine": machine, "message": problem,
                               "kind": "failed", "retryable": False})
                continue
        record = {"name": machine, "pool": name, "state": "running",
                  "provider_id": "example:///%s/%s" % (name, machine),
                  "node_name": machine,
                  "details": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        save(record)
        log("provisioned %s" % machine)
        machines.append(record)
    respond({"machines": machines, "errors": errors})

elif op == "list":
    respond({"machines": machines_of_pool()})

elif op == "deprovision":
    removed, errors = [], []
    for m in req.get("machines") or []:
        machine = m.get("name")
        if load(machine) is None:
            removed.append(machine)  # already gone is a success
            continue
        teardown = config.get("teardown_command")
        if teardown:
            problem = hook(teardown, machine, "")
            if problem:
                errors.append({"machine": machine, "message": problem,
                               "kind": "transient", "retryable": True})
                continue
        os.remove(record_path(machine))
        log("deprovisioned %s" % machine)
        removed.append(machine)
    respond({"removed": removed, "errors": errors})

elif op == "run":
    targets = req.get("machines") or []
    command = req.get("command") or {}
    machine = targets[0].get("name") if targets else None
    if not machine or load(machine) is None:
        fail("no such machine %r in pool %r" % (machine, name), kind="not_found", machine=machine)
    timeout = int(command.get("timeout_secs", 60))
    try:
        done = subprocess.run(["sh", "-c", command.get("script", "")], env=hook_env(machine),
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("command did not finish within %d s" % timeout, kind="timeout",
             retryable=True, machine=machine)
    respond({"output": {"exit_code": done.returncode,
                        "stdout": done.stdout.decode(errors="replace"),
                        "stderr": done.stderr.decode(errors="replace")}})

else:
    fail("operation %r is not supported by this plugin" % op, kind="unsupported")
PYTHON
)
exec python3 -c "$PROGRAM" "$@"
