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
use crate::object::{Key, annotation, get_str, remove, set};
use crate::ops::DeleteOpts;
use crate::resources::Res;
use crate::state::State;
use crate::status::ApiError;
use crate::version::{etcd_tag, parse};

/// The label of control-plane nodes.
pub(crate) const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// What [`State::upgrade_master`] can move to a new version: the static pods and the
/// kubelet.
pub(crate) const UPGRADABLE: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
];

/// Node annotation: the master's control-plane upgrades fail (`"true"`), or the next `N`
/// of them do (`"2"`).
pub(crate) const FAIL_UPGRADE_ANNOTATION: &str = "sim.kbg.io/fail-upgrade";

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
    /// As [`State::upgrade_master`].
    pub(crate) fn upgrade_control_plane_node(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<(), ApiError> {
        self.upgrade_master(name, version, &UPGRADABLE)
    }

    /// Upgrades part of a master in place: the static pods of `components` (any of
    /// [`UPGRADABLE`] but `kubelet`) move to `version` (etcd to the tag kubeadm ships with that
    /// minor), and with `kubelet` among them its kubelet reports `version`.
    ///
    /// A master annotated [`FAIL_UPGRADE_ANNOTATION`] refuses a control-plane upgrade
    /// and keeps running what it ran: `"true"` every time, a number `N` the next `N`
    /// times (the annotation counts down and is removed at zero). Kubelet-only upgrades
    /// are not refused.
    ///
    /// # Errors
    /// 404 when the node has no static pods; 400 for an unknown component; 500 for an
    /// injected failure.
    pub(crate) fn upgrade_master(
        &mut self,
        name: &str,
        version: &str,
        components: &[&str],
    ) -> Result<(), ApiError> {
        if !self.static_pods.contains_key(name) {
            return Err(ApiError::not_found("nodes", "", name));
        }
        if let Some(bad) = components.iter().find(|c| !UPGRADABLE.contains(c)) {
            return Err(ApiError::bad_request(format!(
                "components: {bad:?} is not one of {}",
                UPGRADABLE.join(", ")
            )));
        }
        let key = Key::new("", name);
        let static_pods = components.iter().any(|c| *c != "kubelet");
        if static_pods {
            let fault = self
                .get(Res::Node, &key)
                .and_then(|n| annotation(&n.value(), FAIL_UPGRADE_ANNOTATION).map(str::to_string));
            let fail = match fault.as_deref() {
                Some("true") => true,
                Some(n) => match n.parse::<u64>() {
                    Ok(0) | Err(_) => false,
                    Ok(left) => {
                        self.modify(Res::Node, &key, |v| {
                            let path = ["metadata", "annotations", FAIL_UPGRADE_ANNOTATION];
                            if left > 1 {
                                set(v, &path, json!((left - 1).to_string()));
                            } else {
                                remove(v, &path);
                            }
                        });
                        true
                    }
                },
                None => false,
            };
            if fail {
                return Err(ApiError::internal(format!(
                    "upgrading control-plane node {name} to {version} failed: timed out waiting for the restarted static pods (fault injected by the node annotation {FAIL_UPGRADE_ANNOTATION}); it still runs its previous version"
                )));
            }
            let minor = parse(version).map_or(33, |v| v.1);
            if let Some(manifests) = self.static_pods.get_mut(name) {
                for m in manifests.iter_mut() {
                    let component = get_str(m, &["metadata", "name"]).unwrap_or("").to_string();
                    if !components.contains(&component.as_str()) {
                        continue;
                    }
                    let tag = if component == "etcd" {
                        etcd_tag(minor).to_string()
                    } else {
                        version.to_string()
                    };
                    m["spec"]["containers"][0]["image"] =
                        json!(format!("registry.k8s.io/{component}:{tag}"));
                }
            }
            self.dirty.static_pods.insert(name.into());
        }
        if components.contains(&"kubelet") {
            let v = version.to_string();
            self.modify(Res::Node, &key, |n| {
                set(n, &["status", "nodeInfo", "kubeletVersion"], json!(v));
                set(n, &["status", "nodeInfo", "kubeProxyVersion"], json!(v));
            });
        }
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

    /// The `kube-system/kubeadm-config` ConfigMap `kubeadm init` uploads: its
    /// `ClusterConfiguration` names the cluster's `kubernetesVersion`, which
    /// `kubeadm upgrade apply` rewrites and `kubeadm upgrade node` follows.
    pub(crate) fn kubeadm_config(&mut self) -> Result<(), ApiError> {
        let version = self.version.clone();
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": format!(
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: kubernetes\nkubernetesVersion: {version}\nimageRepository: registry.k8s.io\nnetworking:\n  serviceSubnet: 10.96.0.0/12\n  dnsDomain: cluster.local\n"
            )},
        });
        self.create(Res::ConfigMap, "kube-system", cm, false)
            .map(|_| ())
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
