//! The control plane: control-plane nodes (label `node-role.kubernetes.io/control-plane`,
//! taint `node-role.kubernetes.io/control-plane:NoSchedule`) whose kubelets run the static
//! pods `kube-apiserver`, `kube-controller-manager`, `kube-scheduler` and `etcd` from
//! manifests, as kubeadm lays them down. The simulated kubelet keeps a mirror pod
//! (`<component>-<node>` in kube-system, annotation `kubernetes.io/config.mirror`) for
//! each manifest: recreated if deleted, replaced when the manifest changes — which is how
//! a master is upgraded in place ([`State::upgrade_control_plane_node`]).
//!
//! `/version` reports the lowest version among the kube-apiserver mirror pods: behind a
//! load balancer a client may reach any master, and the lowest is what it can count on.

use serde_json::{Value, json};

use crate::controllers::kubelet::digest;
use crate::object::{Key, annotation, get_str, set};
use crate::ops::DeleteOpts;
use crate::resources::Res;
use crate::state::State;
use crate::status::ApiError;
use crate::version::{etcd_tag, parse};

/// The label of control-plane nodes.
pub(crate) const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// kubeadm's static pod manifests for a master at `version`.
pub(crate) fn static_manifests(node: &str, version: &str, ip: &str) -> Vec<Value> {
    let minor = parse(version).map_or(33, |v| v.1);
    let comp = |name: &str, image: String, cpu: &str, command: Vec<String>| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "kube-system",
                "labels": {"component": name, "tier": "control-plane"},
            },
            "spec": {
                "containers": [{
                    "name": name, "image": image, "command": command,
                    "resources": {"requests": {"cpu": cpu}},
                }],
                "hostNetwork": true,
                "priorityClassName": "system-node-critical",
                "priority": 2000001000,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
            },
        })
    };
    vec![
        comp(
            "etcd",
            format!("registry.k8s.io/etcd:{}", etcd_tag(minor)),
            "100m",
            vec![
                "etcd".into(),
                format!("--advertise-client-urls=https://{ip}:2379"),
                format!("--name={node}"),
            ],
        ),
        comp(
            "kube-apiserver",
            format!("registry.k8s.io/kube-apiserver:{version}"),
            "250m",
            vec![
                "kube-apiserver".into(),
                format!("--advertise-address={ip}"),
                "--secure-port=6443".into(),
            ],
        ),
        comp(
            "kube-controller-manager",
            format!("registry.k8s.io/kube-controller-manager:{version}"),
            "200m",
            vec![
                "kube-controller-manager".into(),
                "--leader-elect=true".into(),
            ],
        ),
        comp(
            "kube-scheduler",
            format!("registry.k8s.io/kube-scheduler:{version}"),
            "100m",
            vec!["kube-scheduler".into(), "--leader-elect=true".into()],
        ),
    ]
}

impl State {
    /// Adds a control-plane node running the static pods of `version`.
    ///
    /// # Errors
    /// The API errors of creating the node.
    pub(crate) fn add_control_plane_node(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<(), ApiError> {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {CONTROL_PLANE_LABEL: "", "node.kubernetes.io/exclude-from-external-load-balancers": ""},
                "annotations": {
                    crate::KWOK_ANNOTATION: "fake",
                    "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                },
            },
            "spec": {"taints": [{"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}]},
            "status": {"nodeInfo": {"kubeletVersion": version}},
        });
        self.create(Res::Node, "", node, false)?;
        self.set_static_pods(name, version);
        Ok(())
    }

    /// Lays down the static pod manifests of `version` on master `name`; the kubelet
    /// syncs its mirror pods.
    fn set_static_pods(&mut self, name: &str, version: &str) {
        let ip = self
            .kubelets
            .get(name)
            .map(|k| k.ip.to_string())
            .unwrap_or_default();
        self.static_pods
            .insert(name.into(), static_manifests(name, version, &ip));
        self.dirty.static_pods.insert(name.into());
    }

    /// Upgrades a master in place: its static pod manifests move to `version` (the
    /// kubelet replaces the mirror pods) and its kubelet reports `version`.
    ///
    /// # Errors
    /// 404 when the node has no static pods.
    pub(crate) fn upgrade_control_plane_node(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<(), ApiError> {
        if !self.static_pods.contains_key(name) {
            return Err(ApiError::not_found("nodes", "", name));
        }
        self.set_static_pods(name, version);
        let v = version.to_string();
        self.modify(Res::Node, &Key::new("", name), |n| {
            set(n, &["status", "nodeInfo", "kubeletVersion"], json!(v));
            set(n, &["status", "nodeInfo", "kubeProxyVersion"], json!(v));
        });
        Ok(())
    }

    /// The kubelet keeps one mirror pod per static manifest.
    pub(crate) fn run_static_pods(&mut self) {
        let nodes = std::mem::take(&mut self.dirty.static_pods);
        for node in nodes {
            let Some(manifests) = self.static_pods.get(&node).cloned() else {
                continue;
            };
            let Some(n) = self.get_nn(Res::Node, "", &node).cloned() else {
                continue;
            };
            if !self.kubelets.get(&node).is_some_and(|k| k.running) {
                continue;
            }
            for m in manifests {
                let base = get_str(&m, &["metadata", "name"]).unwrap_or("").to_string();
                let ns = get_str(&m, &["metadata", "namespace"])
                    .unwrap_or("kube-system")
                    .to_string();
                let name = format!("{base}-{node}");
                let hash = digest(&m.to_string())[..32].to_string();
                if let Some(existing) = self.get_nn(Res::Pod, &ns, &name).cloned() {
                    let v = existing.value();
                    if annotation(&v, "kubernetes.io/config.hash") == Some(&hash[..]) {
                        continue;
                    }
                    // the manifest changed: the kubelet replaces the pod
                    let _ = self.delete(
                        Res::Pod,
                        &existing.meta.key,
                        &DeleteOpts {
                            grace: Some(0),
                            ..DeleteOpts::default()
                        },
                    );
                    if self.get_nn(Res::Pod, &ns, &name).is_some() {
                        continue;
                    }
                }
                let mut pod = m.clone();
                set(&mut pod, &["metadata", "name"], json!(name));
                set(
                    &mut pod,
                    &["metadata", "annotations"],
                    json!({
                        "kubernetes.io/config.hash": hash,
                        "kubernetes.io/config.mirror": hash,
                        "kubernetes.io/config.seen": crate::clock::rfc3339_micro(self.now()),
                        "kubernetes.io/config.source": "file",
                    }),
                );
                set(
                    &mut pod,
                    &["metadata", "ownerReferences"],
                    json!([{"apiVersion": "v1", "kind": "Node", "name": &*node, "uid": &*n.meta.uid, "controller": true}]),
                );
                set(&mut pod, &["spec", "nodeName"], json!(&*node));
                set(&mut pod, &["spec", "enableServiceLinks"], json!(true));
                if let Err(e) = self.create(Res::Pod, &ns, pod, false) {
                    tracing::debug!(node = %node, error = %e.body["message"], "mirror pod not created");
                }
            }
        }
    }

    /// The kube-proxy DaemonSet kubeadm installs.
    pub(crate) fn kube_proxy(&mut self) -> Result<(), ApiError> {
        let version = self.version.clone();
        let ds = json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                "template": {
                    "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                    "spec": {
                        "containers": [{"name": "kube-proxy", "image": format!("registry.k8s.io/kube-proxy:{version}"),
                                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"]}],
                        "hostNetwork": true,
                        "priorityClassName": "system-node-critical",
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "serviceAccountName": "kube-proxy",
                        "tolerations": [{"operator": "Exists"}],
                    },
                },
            },
        });
        self.create(Res::DaemonSet, "kube-system", ds, false)
            .map(|_| ())
    }

    /// The API server's version: the lowest among kube-apiserver mirror pods, else the
    /// configured one.
    pub(crate) fn apiserver_version(&self) -> String {
        let mut best: Option<((u64, u64, u64), String)> = None;
        for node in self.static_pods.keys() {
            let Some(p) = self.get_nn(Res::Pod, "kube-system", &format!("kube-apiserver-{node}"))
            else {
                continue;
            };
            let v = p.value();
            let Some(image) = v["spec"]["containers"][0]["image"].as_str() else {
                continue;
            };
            let Some((_, tag)) = image.rsplit_once(':') else {
                continue;
            };
            if let Some(parsed) = parse(tag)
                && best.as_ref().is_none_or(|(b, _)| parsed < *b)
            {
                best = Some((parsed, tag.to_string()));
            }
        }
        best.map_or_else(|| self.version.clone(), |(_, t)| t)
    }
}
