#!/bin/sh
# A test double, not a real tool: it stands in for what kbg's bootstrap and reset scripts
# run on a bare-metal host (kubeadm, systemctl, apt-get, apt-mark, curl, gpg, modprobe,
# sysctl, swapoff, containerd), for the metal provider's tests, whose "host" is the test machine itself
# reached through a real sshd. The test puts it first on the SSH session's PATH under each
# of those names. It
#   - appends every call, as "tool args…", to $KBG_FAKE_STATE/calls;
#   - fails a tool when $KBG_FAKE_STATE/fail-<tool> exists (its contents go to stderr;
#     with $KBG_FAKE_STATE/fail-<tool>.echo-config, after the join configuration, the
#     way a `set -x` script would leak it);
#   - keeps the kubelet's state as files (active-<unit>, $KBG_BOOTSTRAP_ROOT/etc/kubernetes/kubelet.conf);
#   - for `kubeadm join --config F`, copies F to $KBG_FAKE_STATE/join.yaml, records F's
#     mode, the mode of the script kbg uploaded and the command lines `ps` shows for it
#     and its ancestors up to sshd, refuses to join twice (as kubeadm's
#     preflight does), and registers the Node in the simulated cluster when
#     $KBG_TEST_KUBECONFIG is set, as the kubelet would: the node name, labels, taints and
#     provider ID from F, the kubelet version that `apt-get install kubelet=V-*` installed,
#     created with `kubectl create --validate=false` (a kubelet POSTs its Node; it does not
#     download the OpenAPI schema first).
set -eu
tool=$(basename "$0")
state="${KBG_FAKE_STATE:?KBG_FAKE_STATE is not set}"
root="${KBG_BOOTSTRAP_ROOT:-}"
echo "$tool $*" >> "$state/calls"
if [ -f "$state/fail-$tool" ]; then
  if [ -f "$state/fail-$tool.echo-config" ]; then
    for f in "$root"/etc/kbg/*; do [ -f "$f" ] && cat "$f" >&2; done
  fi
  cat "$state/fail-$tool" >&2
  exit 1
fi

# The value of `key: "value"` in a kubeadm configuration file.
yaml_value() {
  sed -n "s/^ *$1: *\"\\(.*\\)\"\$/\\1/p" "$2" | head -n 1
}

case "$tool" in
  apt-get)
    for a in "$@"; do
      case "$a" in
        kubelet=*) v=${a#kubelet=}; echo "${v%-\*}" > "$state/kubelet-version" ;;
      esac
    done
    ;;
  gpg)
    cat > /dev/null
    out=""; prev=""
    for a in "$@"; do [ "$prev" = "-o" ] && out=$a; prev=$a; done
    [ -n "$out" ] && echo "fake keyring" > "$out"
    ;;
  curl) echo "fake release key" ;;
  systemctl)
    verb=$1; shift
    now=""
    [ "${1:-}" = "--now" ] && { now=yes; shift; }
    [ "${1:-}" = "--quiet" ] && shift
    for unit in "$@"; do
      case "$verb" in
        is-active) [ -f "$state/active-$unit" ] || exit 3 ;;
        start|restart) touch "$state/active-$unit" ;;
        stop) rm -f "$state/active-$unit" ;;
        enable) [ -n "$now" ] && touch "$state/active-$unit" ;;
        disable) [ -n "$now" ] && rm -f "$state/active-$unit" ;;
      esac
    done
    ;;
  kubeadm)
    case "${1:-}" in
      join)
        config=""; prev=""
        for a in "$@"; do [ "$prev" = "--config" ] && config=$a; prev=$a; done
        [ -f "$config" ] || { echo "kubeadm (fake): no --config file" >&2; exit 2; }
        if [ -f "$root/etc/kubernetes/kubelet.conf" ]; then
          echo "[preflight] Some fatal errors occurred: /etc/kubernetes/kubelet.conf already exists" >&2
          exit 1
        fi
        cp "$config" "$state/join.yaml"
        echo "$(stat -c %a "$config")" > "$state/join-config-mode"
        for s in "${TMPDIR:-/tmp}"/kbg.*; do [ -f "$s" ] && stat -c %a "$s"; done > "$state/script-modes"
        # What `ps` shows for this process and its ancestors, up to sshd.
        pid=$$; : > "$state/command-lines"
        for _ in 1 2 3 4 5 6 7 8; do
          [ "$pid" -gt 1 ] || break
          tr '\0' ' ' < "/proc/$pid/cmdline" >> "$state/command-lines"; echo >> "$state/command-lines"
          pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status")
        done
        name=$(yaml_value name "$config")
        labels=$(yaml_value node-labels "$config")
        taints=$(yaml_value register-with-taints "$config")
        provider_id=$(yaml_value provider-id "$config")
        version=$(cat "$state/kubelet-version" 2>/dev/null || echo unknown)
        if [ -n "${KBG_TEST_KUBECONFIG:-}" ]; then
          label_json="\"kubernetes.io/hostname\":\"$name\",\"kubernetes.io/os\":\"linux\""
          old_ifs=$IFS; IFS=,
          for kv in $labels; do label_json="$label_json,\"${kv%%=*}\":\"${kv#*=}\""; done
          taint_json=""
          for t in $taints; do
            effect=${t##*:}; kv=${t%:*}
            case "$kv" in
              *=*) one="{\"key\":\"${kv%%=*}\",\"value\":\"${kv#*=}\",\"effect\":\"$effect\"}" ;;
              *) one="{\"key\":\"$kv\",\"effect\":\"$effect\"}" ;;
            esac
            taint_json="$taint_json${taint_json:+,}$one"
          done
          IFS=$old_ifs
          cat > "$state/node.json" <<NODE
{"apiVersion":"v1","kind":"Node",
 "metadata":{"name":"$name","labels":{$label_json},"annotations":{"kwok.x-k8s.io/node":"fake"}},
 "spec":{"providerID":"$provider_id","taints":[$taint_json]},
 "status":{"nodeInfo":{"kubeletVersion":"v$version","kubeProxyVersion":"v$version",
   "machineID":"$name","systemUUID":"$name","bootID":"$name","kernelVersion":"6.1.0",
   "osImage":"Debian GNU/Linux 12 (bookworm)","containerRuntimeVersion":"containerd://1.6.20",
   "operatingSystem":"linux","architecture":"amd64"}}}
NODE
          "${KBG_TEST_KUBECTL:-kubectl}" --kubeconfig "$KBG_TEST_KUBECONFIG" create --validate=false -f "$state/node.json" >> "$state/kubectl.log" 2>&1 \
            || { echo "kubeadm (fake): the kubelet could not register node $name: $(tail -n 3 "$state/kubectl.log" | tr '\n' ' ')" >&2; exit 1; }
        fi
        mkdir -p "$root/etc/kubernetes"
        echo "fake kubelet.conf for $name" > "$root/etc/kubernetes/kubelet.conf"
        touch "$state/active-kubelet"
        echo "This node has joined the cluster (fake)"
        ;;
      reset)
        rm -f "$root/etc/kubernetes/kubelet.conf" "$state/active-kubelet"
        echo "[reset] (fake) done"
        ;;
    esac
    ;;
esac
exit 0
