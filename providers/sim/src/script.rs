//! What the sim provider understands of a control-plane script.
//!
//! A simulated master has no shell. Its run-command reads the script kbg sends (rendered
//! from `templates/cp-*.sh.j2`, or a user's own) line by line and acts on the commands
//! that upgrade a master — the kubeadm, static-pod-manifest and package-manager commands
//! of the upstream procedures — through the simulated cluster's API:
//!
//! | command in the script | what happens to the simulated master |
//! | --- | --- |
//! | `kubeadm upgrade apply VERSION` | its static pods move to VERSION; `kubeadm-config`'s `kubernetesVersion` becomes VERSION |
//! | `kubeadm upgrade node` | its static pods move to `kubeadm-config`'s `kubernetesVersion` |
//! | `sed … <dir>/kube-apiserver.yaml` rewriting the image tag (`…\1:VERSION#`) | that static pod moves to VERSION (consecutive rewrites land together, as the kubelet sees them) |
//! | `apt-get`/`apt`/`yum`/`dnf install … kubelet=X` / `kubelet-X` | a new kubelet is installed, not yet running |
//! | `sed … KUBELET_VERSION=X` / `KUBELET_IMAGE_TAG=X` (CoreOS kubelet-wrapper unit) | the same |
//! | `systemctl restart kubelet` (or `start`) | the installed kubelet runs: the node reports its version |
//! | `etcdctl … snapshot save PATH` | a snapshot "is saved" (nothing is written) |
//!
//! Every other line (comments, `set -eu`, `mkdir`, `cp`, `if … fi`, …) is accepted and
//! does nothing. kubeadm's own check is kept: `kubeadm upgrade apply` refuses a version
//! newer than the kubeadm the script installed. A line ending with `\` continues on the
//! next; quotes group words as the shell does (no expansion).

/// A control-plane component with a static pod.
pub const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// One command the simulated master acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `kubeadm upgrade apply VERSION`.
    KubeadmApply(String),
    /// `kubeadm upgrade node`.
    KubeadmNode,
    /// A static pod manifest's image tag rewritten: `(component, version)`.
    SetImage(String, String),
    /// A package installed: `(package, version)` with version `1.34.0` (no `v`).
    Install(String, String),
    /// The kubelet's version set in its systemd unit (CoreOS kubelet-wrapper).
    KubeletUnit(String),
    /// `systemctl restart kubelet`.
    RestartKubelet,
    /// `etcdctl snapshot save PATH`.
    EtcdSnapshot(String),
}

/// Words of one shell command line: split on blanks, quotes grouping, quotes removed.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The script's logical lines: comments dropped, `\`-continuations joined.
fn lines(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in script.lines() {
        let t = raw.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        out.push(std::mem::take(&mut cur));
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// `1.34.0` of a package version such as `1.34.0-1.1`, `1.34.0-*`, `1.34.0`.
fn package_version(v: &str) -> Option<String> {
    let core = v.trim_start_matches('v').split(['-', '*']).next()?;
    let parts: Vec<&str> = core.split('.').collect();
    (parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    .then(|| core.to_string())
}

/// The text after `marker` up to a delimiter of a sed expression or a word.
fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let start = text.rfind(marker)? + marker.len();
    let rest = &text[start..];
    let end = rest
        .find(['#', '/', '|', '"', '\'', ' ', ';'])
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|s| !s.is_empty())
}

/// `NAME=value` with an upper-case shell variable name.
fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

fn action(words: &[String]) -> Option<Action> {
    // Skip `sudo` and leading environment assignments (`ETCDCTL_API=3 etcdctl …`).
    let start = words
        .iter()
        .position(|w| w != "sudo" && !is_assignment(w))?;
    let w: Vec<&str> = words[start..].iter().map(String::as_str).collect();
    match w.as_slice() {
        ["kubeadm", "upgrade", "apply", rest @ ..] => rest
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(|v| Action::KubeadmApply((*v).to_string())),
        ["kubeadm", "upgrade", "node", ..] => Some(Action::KubeadmNode),
        ["systemctl", verb, rest @ ..]
            if matches!(*verb, "restart" | "start")
                && rest
                    .iter()
                    .any(|u| *u == "kubelet" || *u == "kubelet.service") =>
        {
            Some(Action::RestartKubelet)
        }
        ["etcdctl", rest @ ..] => {
            let i = rest.iter().position(|a| *a == "save")?;
            (rest.get(i.checked_sub(1)?) == Some(&"snapshot"))
                .then(|| {
                    rest.get(i + 1)
                        .map(|p| Action::EtcdSnapshot((*p).to_string()))
                })
                .flatten()
        }
        ["sed", rest @ ..] => {
            let text = rest.join(" ");
            for component in STATIC_PODS {
                let file = format!("/{component}.yaml");
                if rest.iter().any(|a| a.ends_with(&file)) {
                    return after(&text, "\\1:")
                        .map(|v| Action::SetImage(component.to_string(), v.to_string()));
                }
            }
            after(&text, "KUBELET_IMAGE_TAG=")
                .or_else(|| after(&text, "KUBELET_VERSION="))
                .map(|v| Action::KubeletUnit(v.split('_').next().unwrap_or(v).to_string()))
        }
        _ => None,
    }
}

/// The packages a package-manager line installs: `kubelet=1.34.0-*` (apt) or
/// `kubelet-1.34.0` (rpm).
fn installs(words: &[String]) -> Vec<Action> {
    let Some(pm) = words
        .iter()
        .position(|w| matches!(w.as_str(), "apt-get" | "apt" | "yum" | "dnf"))
    else {
        return Vec::new();
    };
    if !words[pm..].iter().any(|w| w == "install") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for w in &words[pm + 1..] {
        for pkg in ["kubelet", "kubeadm", "kubectl"] {
            let v = w
                .strip_prefix(&format!("{pkg}="))
                .or_else(|| w.strip_prefix(&format!("{pkg}-")));
            if let Some(v) = v.and_then(package_version) {
                out.push(Action::Install(pkg.to_string(), v));
            }
        }
    }
    out
}

/// The actions of `script`, in order.
pub fn actions(script: &str) -> Vec<Action> {
    let mut out = Vec::new();
    for line in lines(script) {
        let w = words(&line);
        if w.is_empty() {
            continue;
        }
        let installed = installs(&w);
        if !installed.is_empty() {
            out.extend(installed);
            continue;
        }
        if let Some(a) = action(&w) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_shell_quoting() {
        assert_eq!(
            words(r#"apt-get install -y "kubelet=1.34.0-*" 'a b'"#),
            ["apt-get", "install", "-y", "kubelet=1.34.0-*", "a b"]
        );
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(words(r#"echo """#), ["echo", ""]);
    }

    #[test]
    fn understands_the_three_methods() {
        let kubeadm = r#"#!/bin/sh
# kbg: first master
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-mark unhold kubeadm
apt-get install -y -q --allow-change-held-packages "kubeadm=1.34.2-*"
kubeadm upgrade apply v1.34.2 --yes \
  --certificate-renewal=true
kubeadm upgrade node
ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 \
  snapshot save /var/lib/kbg/etcd.db
dnf install -y --disableexcludes=kubernetes kubelet-1.34.2 kubectl-1.34.2-150500.1.1
systemctl daemon-reload
systemctl restart kubelet
"#;
        assert_eq!(
            actions(kubeadm),
            [
                Action::Install("kubeadm".into(), "1.34.2".into()),
                Action::KubeadmApply("v1.34.2".into()),
                Action::KubeadmNode,
                Action::EtcdSnapshot("/var/lib/kbg/etcd.db".into()),
                Action::Install("kubelet".into(), "1.34.2".into()),
                Action::Install("kubectl".into(), "1.34.2".into()),
                Action::RestartKubelet,
            ]
        );
        let manifests = r#"
cp -a /etc/kubernetes/manifests/. /var/lib/kbg/backup/
sed -i -E "s#^([[:space:]]*image:[[:space:]]*[^[:space:]]*/kube-apiserver):[^[:space:]]+#\1:v1.34.0#" "/etc/kubernetes/manifests/kube-apiserver.yaml"
sed -i -E 's#^([[:space:]]*image:[[:space:]]*[^[:space:]]*/kube-scheduler):[^[:space:]]+#\1:v1.34.0#' /etc/kubernetes/manifests/kube-scheduler.yaml
sed -i -E "s#^Environment=\"?KUBELET_(VERSION|IMAGE_TAG)=[^\"]*\"?#Environment=KUBELET_IMAGE_TAG=v1.34.0_coreos.0#" /etc/systemd/system/kubelet.service
systemctl restart kubelet.service
"#;
        assert_eq!(
            actions(manifests),
            [
                Action::SetImage("kube-apiserver".into(), "v1.34.0".into()),
                Action::SetImage("kube-scheduler".into(), "v1.34.0".into()),
                Action::KubeletUnit("v1.34.0".into()),
                Action::RestartKubelet,
            ]
        );
    }

    #[test]
    fn ignores_what_it_does_not_know() {
        assert!(
            actions("mkdir -p /x\nif [ -f /y ]; then exit 1; fi\napt-get update\nkubeadm version\nsystemctl restart containerd\n")
                .is_empty()
        );
        assert_eq!(package_version("1.34.0-1.1").as_deref(), Some("1.34.0"));
        assert_eq!(package_version("1.34"), None);
        assert_eq!(package_version("*"), None);
    }
}
