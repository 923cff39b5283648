//! Pools in the cluster: which nodes make up a pool, and the facts kbg reads off nodes
//! and pods.
//!
//! A pool kbg deployed is the nodes labelled `kbg.io/pool=<pool>`; a pool kbg adopted is
//! the nodes its `selector` matches. Listing asks the API server with that selector and
//! checks each node again locally with the same parsed [`crate::selector::Selector`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

use crate::clock::Clock;
use crate::config::{Config, PoolConfig};
use crate::retry::retry;

/// Labels that mark a control-plane node (the second is the pre-1.24 name).
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// The annotation the kubelet puts on a static pod's mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A node's labels (empty when it has none).
pub fn labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

/// Whether `node` belongs to `pool`.
pub fn belongs(node: &Node, pool: &PoolConfig) -> bool {
    pool.selector().matches(&labels(node))
}

/// The pool `node` belongs to: the first pool of `config` (by name) whose selector
/// matches, else its `kbg.io/pool` label.
pub fn pool_of(node: &Node, config: &Config) -> Option<String> {
    let l = labels(node);
    config
        .pools
        .values()
        .find(|p| p.selector().matches(&l))
        .map(|p| p.name.clone())
        .or_else(|| l.get(kbg_provider::POOL_LABEL).cloned())
}

/// Whether `node` is a control-plane node.
pub fn is_control_plane(node: &Node) -> bool {
    let l = node.metadata.labels.as_ref();
    CONTROL_PLANE_LABELS
        .iter()
        .any(|k| l.is_some_and(|l| l.contains_key(*k)))
}

/// The names of the control-plane nodes among `nodes`.
pub fn control_plane_names(nodes: &[Node]) -> Vec<&str> {
    nodes
        .iter()
        .filter(|n| is_control_plane(n))
        .map(name)
        .collect()
}

/// `control-plane` or `worker`.
pub fn role(node: &Node) -> &'static str {
    if is_control_plane(node) {
        "control-plane"
    } else {
        "worker"
    }
}

/// Whether `node`'s `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `node` is cordoned (`spec.unschedulable`).
pub fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// `status.nodeInfo.kubeletVersion`, if reported.
pub fn kubelet_version(node: &Node) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.as_str())
        .filter(|v| !v.is_empty())
}

/// `spec.providerID`, if set.
pub fn provider_id(node: &Node) -> Option<&str> {
    node.spec.as_ref().and_then(|s| s.provider_id.as_deref())
}

/// The node's name.
pub fn name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or("")
}

/// Whether a pod is owned by a DaemonSet.
pub fn is_daemonset_pod(pod: &Pod) -> bool {
    pod.metadata.owner_references.as_ref().is_some_and(|os| {
        os.iter()
            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    })
}

/// Whether a pod is a static pod's mirror.
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// Whether a pod has finished (`Succeeded` or `Failed`): it runs nothing any more.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a pod counts as a workload still running on its node: not a DaemonSet pod,
/// not a mirror pod, not finished. Teardown refuses while any remains.
pub fn is_workload(pod: &Pod) -> bool {
    !is_daemonset_pod(pod) && !is_mirror_pod(pod) && !is_finished(pod)
}

/// `namespace/name` of a pod.
pub fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The nodes of `pool`, sorted by name.
///
/// # Errors
/// When the API server cannot be asked (after retries of transient faults).
pub async fn list_nodes(
    client: &kube::Client,
    pool: &PoolConfig,
    clock: Clock,
) -> Result<Vec<Node>, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels(&pool.selector().to_string());
    let list = retry(clock, "list nodes", || api.list(&lp)).await?;
    let mut nodes: Vec<Node> = list
        .items
        .into_iter()
        .filter(|n| belongs(n, pool))
        .collect();
    nodes.sort_by(|a, b| name(a).cmp(name(b)));
    Ok(nodes)
}

/// The pods bound to node `node`.
///
/// # Errors
/// When the API server cannot be asked.
pub async fn pods_on(
    client: &kube::Client,
    node: &str,
    clock: Clock,
) -> Result<Vec<Pod>, kube::Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(retry(clock, "list pods", || api.list(&lp)).await?.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Each case: node labels, pool, belongs?
    #[test]
    fn membership() {
        let cfg = Config::parse(
            "pools:\n  alpha:\n    provider: aws\n    selector: eks.amazonaws.com/nodegroup=alpha\n  beta:\n    provider: sim\n    version: v1.31\n    count: 1\n",
        )
        .unwrap();
        let alpha = cfg.pool("alpha").unwrap();
        let beta = cfg.pool("beta").unwrap();
        for (labels, pool, yes, owner) in [
            (
                vec![("eks.amazonaws.com/nodegroup", "alpha")],
                alpha,
                true,
                Some("alpha"),
            ),
            (
                vec![("eks.amazonaws.com/nodegroup", "gamma")],
                alpha,
                false,
                None,
            ),
            (vec![("kbg.io/pool", "alpha")], alpha, false, Some("alpha")),
            (vec![("kbg.io/pool", "beta")], beta, true, Some("beta")),
            (
                vec![("kbg.io/pool", "betamax")],
                beta,
                false,
                Some("betamax"),
            ),
            (vec![], beta, false, None),
            (
                vec![("node-role.kubernetes.io/control-plane", "")],
                beta,
                false,
                None,
            ),
        ] {
            let n = node("n", &labels);
            assert_eq!(belongs(&n, pool), yes, "{labels:?} in {}", pool.name);
            assert_eq!(pool_of(&n, &cfg).as_deref(), owner, "{labels:?}");
        }
    }

    #[test]
    fn roles() {
        assert!(is_control_plane(&node(
            "m",
            &[("node-role.kubernetes.io/control-plane", "")]
        )));
        assert!(is_control_plane(&node(
            "m",
            &[("node-role.kubernetes.io/master", "")]
        )));
        assert_eq!(role(&node("w", &[("kbg.io/pool", "a")])), "worker");
    }

    fn pod(owner: Option<&str>, mirror: bool, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                owner_references: owner.map(|k| {
                    vec![OwnerReference {
                        kind: k.into(),
                        controller: Some(true),
                        name: "o".into(),
                        api_version: "apps/v1".into(),
                        uid: "u".into(),
                        ..Default::default()
                    }]
                }),
                annotations: mirror
                    .then(|| BTreeMap::from([(MIRROR_ANNOTATION.to_string(), "x".to_string())])),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Which pods keep teardown from deleting a node.
    #[test]
    fn workloads() {
        for (p, w) in [
            (pod(Some("ReplicaSet"), false, "Running"), true),
            (pod(None, false, "Running"), true),
            (pod(Some("StatefulSet"), false, "Pending"), true),
            (pod(Some("DaemonSet"), false, "Running"), false),
            (pod(None, true, "Running"), false),
            (pod(Some("Job"), false, "Succeeded"), false),
            (pod(None, false, "Failed"), false),
        ] {
            assert_eq!(is_workload(&p), w, "{:?}", p.metadata.owner_references);
        }
    }
}
