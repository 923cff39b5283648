//! What the cluster says about its control plane and kubelets, read in one pass.
//!
//! kubeadm's `upgrade plan` reads the versions of the control plane from the static pods
//! of each master (their mirror pods in `kube-system`, whose images carry the version in
//! their tag) and from `/version`; the kubelets' versions come from each node's
//! `status.nodeInfo.kubeletVersion`. kbg does the same. Behind a load balancer `/version`
//! answers from any API server, so during an upgrade it may name either version: every
//! skew decision uses the **oldest** kube-apiserver the static pods show, and `/version`
//! only where no static pod is visible (managed control planes, Charmed Kubernetes' snaps).
//!
//! [`Facts::from_objects`] builds the facts from listed objects (pure, unit-tested);
//! [`gather`] lists them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::commands::Ctx;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pool;
use crate::retry::retry;
use crate::version::KubeVersion;

/// The control-plane components whose static pods carry the Kubernetes version, in the
/// order kubeadm lists them.
pub const VERSIONED_COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The namespace of the static pods' mirror pods.
pub const STATIC_POD_NAMESPACE: &str = "kube-system";

/// One static pod of a master, as its mirror pod shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticPod {
    /// The container image, `registry.k8s.io/kube-apiserver:v1.33.1`.
    pub image: String,
    /// Its tag, `v1.33.1` (empty when the image has none).
    pub tag: String,
    /// The tag as a Kubernetes version, when it is one (etcd's `3.5.21-0` is not).
    pub version: Option<KubeVersion>,
    /// Running, Ready and not terminating.
    pub ready: bool,
}

/// One master (a node labelled `node-role.kubernetes.io/control-plane`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MasterFacts {
    /// The node's name.
    pub node: String,
    /// Its `Ready` condition.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub cordoned: bool,
    /// `spec.providerID`, if set.
    pub provider_id: Option<String>,
    /// Its kubelet's version.
    pub kubelet: Option<KubeVersion>,
    /// Its static pods by component (`etcd`, `kube-apiserver`, …); empty when the
    /// control plane does not run as static pods.
    pub static_pods: BTreeMap<String, StaticPod>,
}

impl MasterFacts {
    /// The version a component's static pod runs, when visible.
    pub fn version_of(&self, component: &str) -> Option<&KubeVersion> {
        self.static_pods.get(component)?.version.as_ref()
    }

    /// The oldest version among its versioned static pods (kube-apiserver,
    /// kube-controller-manager, kube-scheduler); `None` when none is visible.
    pub fn control_plane_version(&self) -> Option<KubeVersion> {
        VERSIONED_COMPONENTS
            .iter()
            .filter_map(|c| self.version_of(c))
            .min()
            .cloned()
    }

    /// Whether its control plane runs `target` and is up: every versioned static pod at
    /// `target` and Ready. Where no static pod is visible (the control plane runs as
    /// snaps or services), the kubelet's version stands in: the charm upgrades both.
    pub fn control_plane_at(&self, target: &KubeVersion) -> bool {
        let pods: Vec<&StaticPod> = VERSIONED_COMPONENTS
            .iter()
            .filter_map(|c| self.static_pods.get(*c))
            .collect();
        if pods.is_empty() {
            return self.kubelet.as_ref() == Some(target);
        }
        pods.iter()
            .all(|p| p.ready && p.version.as_ref() == Some(target))
    }

    /// Whether its kubelet reports `target`.
    pub fn kubelet_at(&self, target: &KubeVersion) -> bool {
        self.kubelet.as_ref() == Some(target)
    }
}

/// The worker nodes of one pool (or of no pool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolFacts {
    /// The pool's name; `-` for worker nodes in no pool.
    pub name: String,
    /// Its nodes.
    pub nodes: Vec<String>,
    /// The kubelet versions its nodes report, sorted, without duplicates.
    pub kubelets: Vec<KubeVersion>,
    /// Nodes whose kubelet reports no readable version.
    pub unknown: Vec<String>,
    /// Its nodes that are not Ready.
    pub not_ready: Vec<String>,
    /// The version `kbg.yaml` gives the pool, if any.
    pub configured: Option<KubeVersion>,
}

impl PoolFacts {
    /// Its oldest kubelet: the one the skew policy bounds.
    pub fn oldest(&self) -> Option<&KubeVersion> {
        self.kubelets.first()
    }

    /// Its newest kubelet.
    pub fn newest(&self) -> Option<&KubeVersion> {
        self.kubelets.last()
    }
}

/// The control plane and the kubelets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// What `/version` answers.
    pub api_server: KubeVersion,
    /// The masters, sorted by name.
    pub masters: Vec<MasterFacts>,
    /// The worker pools, sorted by name (`-` last).
    pub pools: Vec<PoolFacts>,
}

/// A mirror pod's image tag: `registry:5000/kube-apiserver:v1.33.1@sha256:…` → `v1.33.1`.
pub fn image_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map_or("", |(_, tag)| tag)
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .as_ref()
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
}

/// The control-plane component a mirror pod runs: its `component` label (kubeadm's),
/// else its name without the `-<node>` suffix.
fn component_of(p: &Pod, node: &str) -> Option<String> {
    if let Some(c) = p.metadata.labels.as_ref().and_then(|l| l.get("component")) {
        return Some(c.clone());
    }
    let name = p.metadata.name.as_deref()?;
    name.strip_suffix(&format!("-{node}")).map(str::to_string)
}

/// The static pods of master `node` among `pods`.
pub fn static_pods_of<'a>(
    node: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> BTreeMap<String, StaticPod> {
    let mut out = BTreeMap::new();
    for p in pods {
        if p.metadata.namespace.as_deref() != Some(STATIC_POD_NAMESPACE)
            || !pool::is_mirror_pod(p)
            || p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
        {
            continue;
        }
        let Some(component) = component_of(p, node) else {
            continue;
        };
        let image = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let tag = image_tag(&image).to_string();
        out.insert(
            component,
            StaticPod {
                version: KubeVersion::parse(&tag).ok(),
                tag,
                image,
                ready: pod_ready(p),
            },
        );
    }
    out
}

impl Facts {
    /// The facts of `nodes` and `pods` (the static pods' mirror pods among them), with
    /// `/version` answering `api_server` and pools as `config` defines them.
    pub fn from_objects(
        api_server: KubeVersion,
        nodes: &[Node],
        pods: &[Pod],
        config: &Config,
    ) -> Facts {
        let mut masters = Vec::new();
        let mut pools: BTreeMap<String, PoolFacts> = BTreeMap::new();
        for n in nodes {
            let name = pool::name(n).to_string();
            let kubelet = pool::kubelet_version(n).and_then(|v| KubeVersion::parse(v).ok());
            if pool::is_control_plane(n) {
                masters.push(MasterFacts {
                    static_pods: static_pods_of(&name, pods),
                    ready: pool::is_ready(n),
                    cordoned: pool::is_cordoned(n),
                    provider_id: pool::provider_id(n).map(str::to_string),
                    kubelet,
                    node: name,
                });
                continue;
            }
            let p = pool::pool_of(n, config).unwrap_or_else(|| "-".into());
            let entry = pools.entry(p.clone()).or_insert_with(|| PoolFacts {
                configured: config.pools.get(&p).and_then(|c| c.version.clone()),
                name: p,
                nodes: Vec::new(),
                kubelets: Vec::new(),
                unknown: Vec::new(),
                not_ready: Vec::new(),
            });
            match kubelet {
                Some(v) => entry.kubelets.push(v),
                None => entry.unknown.push(name.clone()),
            }
            if !pool::is_ready(n) {
                entry.not_ready.push(name.clone());
            }
            entry.nodes.push(name);
        }
        masters.sort_by(|a, b| a.node.cmp(&b.node));
        let mut pools: Vec<PoolFacts> = pools.into_values().collect();
        for p in &mut pools {
            p.kubelets.sort();
            p.kubelets.dedup();
            p.nodes.sort();
        }
        // Nodes in no pool last.
        pools.sort_by_key(|p| (p.name == "-", p.name.clone()));
        Facts {
            api_server,
            masters,
            pools,
        }
    }

    /// Every kube-apiserver's version: the static pods', else `/version`.
    pub fn apiservers(&self) -> Vec<KubeVersion> {
        let seen: Vec<KubeVersion> = self
            .masters
            .iter()
            .filter_map(|m| m.version_of("kube-apiserver").cloned())
            .collect();
        if seen.is_empty() {
            vec![self.api_server.clone()]
        } else {
            seen
        }
    }

    /// The oldest kube-apiserver: what kubelets and pools are held against.
    pub fn oldest_apiserver(&self) -> KubeVersion {
        self.apiservers()
            .into_iter()
            .min()
            .unwrap_or_else(|| self.api_server.clone())
    }

    /// The nodes that are not Ready, masters first.
    pub fn not_ready(&self) -> Vec<String> {
        self.masters
            .iter()
            .filter(|m| !m.ready)
            .map(|m| m.node.clone())
            .chain(self.pools.iter().flat_map(|p| p.not_ready.iter().cloned()))
            .collect()
    }
}

/// The versions of every kube-apiserver: the masters' static pods (one list of
/// `kube-system`'s pods), else `/version`. What `deploy-pool` holds a new pool against.
///
/// # Errors
/// When the cluster cannot be read.
pub async fn apiserver_versions(ctx: &Ctx) -> Result<Vec<KubeVersion>> {
    Ok(gather(ctx).await?.apiservers())
}

/// Read the facts: `/version`, every node, the pods of `kube-system`.
///
/// # Errors
/// When the cluster cannot be read.
pub async fn gather(ctx: &Ctx) -> Result<Facts> {
    let api_server = ctx.api_server_version().await?;
    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let lp = ListParams::default();
    let nodes = retry(ctx.clock, "list nodes", || nodes_api.list(&lp))
        .await
        .map_err(|e| Error::kube("listing nodes", e))?
        .items;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), STATIC_POD_NAMESPACE);
    let pods = retry(ctx.clock, "list pods", || pods_api.list(&lp))
        .await
        .map_err(|e| Error::kube("listing the pods of kube-system", e))?
        .items;
    Ok(Facts::from_objects(
        api_server,
        &nodes,
        &pods,
        &ctx.settings.config,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, PodCondition, PodSpec,
        PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn node(name: &str, master: bool, pool: Option<&str>, kubelet: &str) -> Node {
        let mut labels = BTreeMap::new();
        if master {
            labels.insert(
                "node-role.kubernetes.io/control-plane".to_string(),
                String::new(),
            );
        }
        if let Some(p) = pool {
            labels.insert("kbg.io/pool".to_string(), p.to_string());
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                node_info: Some(NodeSystemInfo {
                    kubelet_version: kubelet.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    pub(crate) fn mirror(component: &str, node: &str, tag: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{component}-{node}")),
                namespace: Some("kube-system".into()),
                labels: Some(BTreeMap::from([(
                    "component".to_string(),
                    component.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "kubernetes.io/config.mirror".to_string(),
                    "abc".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    name: component.into(),
                    image: Some(format!("registry.k8s.io/{component}:{tag}")),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    pub(crate) fn master_pods(node: &str, tag: &str) -> Vec<Pod> {
        let mut pods: Vec<Pod> = VERSIONED_COMPONENTS
            .iter()
            .map(|c| mirror(c, node, tag, true))
            .collect();
        pods.push(mirror("etcd", node, "3.5.21-0", true));
        pods
    }

    #[test]
    fn image_tags() {
        for (image, tag) in [
            ("registry.k8s.io/kube-apiserver:v1.33.1", "v1.33.1"),
            ("registry.local:5000/kube-apiserver:v1.33.1", "v1.33.1"),
            ("registry.local:5000/kube-apiserver", ""),
            ("kube-apiserver:v1.33.1@sha256:abcd", "v1.33.1"),
            (
                "quay.io/coreos/hyperkube:v1.0.6_coreos.0",
                "v1.0.6_coreos.0",
            ),
        ] {
            assert_eq!(image_tag(image), tag, "{image}");
        }
    }

    #[test]
    fn masters_pools_and_the_oldest_api_server() {
        let cfg = Config::parse(
            "pools:\n  alpha:\n    provider: sim\n    version: v1.31.2\n    count: 2\n",
        )
        .unwrap();
        let nodes = vec![
            node("cp-1", true, None, "v1.33.1"),
            node("cp-0", true, None, "v1.33.1"),
            node("alpha-1", false, Some("alpha"), "v1.31.2"),
            node("alpha-0", false, Some("alpha"), "v1.31.0"),
            node("stray", false, None, "v1.32.0"),
        ];
        let mut pods = master_pods("cp-0", "v1.34.0");
        pods.extend(master_pods("cp-1", "v1.33.1"));
        // A pod that is not a mirror pod does not count.
        let mut fake = mirror("kube-apiserver", "cp-1", "v1.20.0", true);
        fake.metadata.annotations = None;
        fake.metadata.name = Some("impostor".into());
        pods.push(fake);
        let f = Facts::from_objects(KubeVersion::parse("v1.34.0").unwrap(), &nodes, &pods, &cfg);
        assert_eq!(
            f.masters
                .iter()
                .map(|m| m.node.as_str())
                .collect::<Vec<_>>(),
            ["cp-0", "cp-1"]
        );
        assert_eq!(f.oldest_apiserver().to_string(), "v1.33.1", "not /version");
        let v34 = KubeVersion::parse("v1.34.0").unwrap();
        assert!(f.masters[0].control_plane_at(&v34));
        assert!(!f.masters[1].control_plane_at(&v34));
        assert_eq!(f.masters[0].static_pods["etcd"].version, None);
        assert_eq!(
            f.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["alpha", "-"]
        );
        assert_eq!(f.pools[0].oldest().unwrap().to_string(), "v1.31.0");
        assert_eq!(
            f.pools[0].configured.as_ref().unwrap().to_string(),
            "v1.31.2"
        );
        assert!(f.not_ready().is_empty());
    }

    #[test]
    fn without_static_pods_version_and_kubelets_stand_in() {
        let nodes = vec![node("cp-0", true, None, "v1.33.1")];
        let f = Facts::from_objects(
            KubeVersion::parse("v1.33.2").unwrap(),
            &nodes,
            &[],
            &Config::default(),
        );
        assert_eq!(f.apiservers(), [KubeVersion::parse("v1.33.2").unwrap()]);
        assert!(f.masters[0].control_plane_at(&KubeVersion::parse("v1.33.1").unwrap()));
        // A static pod that is not Ready is not "at" its version yet.
        let pods = vec![mirror("kube-apiserver", "cp-0", "v1.34.0", false)];
        let f = Facts::from_objects(
            KubeVersion::parse("v1.33.2").unwrap(),
            &nodes,
            &pods,
            &Config::default(),
        );
        assert!(!f.masters[0].control_plane_at(&KubeVersion::parse("v1.34.0").unwrap()));
    }
}
