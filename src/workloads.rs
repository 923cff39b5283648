//! The workloads behind pods, and waiting until they are Ready again.
//!
//! After a batch is drained, `kbg migrate` can wait until every workload that had pods on
//! the batch's nodes is back at its desired Ready replicas (now on the target pool)
//! before it drains the next batch: a Deployment's or a StatefulSet's
//! `status.readyReplicas >= spec.replicas`, with the status observed for the current
//! generation. Only workloads that were fully Ready before the batch are waited for: one
//! already short of replicas for reasons of its own would make the wait time out.
//! Pods are traced to their workload through owner references (Pod → ReplicaSet →
//! Deployment; Pod → StatefulSet; a ReplicaSet without a Deployment counts as itself).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use serde::Serialize;

use crate::client::is_not_found;
use crate::clock::Clock;
use crate::retry::retry;
use crate::wait;

/// A workload kbg can wait for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Workload {
    /// `Deployment`, `StatefulSet` or `ReplicaSet`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

fn controller_of(
    refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> Option<(String, String)> {
    refs?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()))
}

/// The workloads that own `pods` (DaemonSet pods, mirror pods and bare pods have none
/// kbg waits for).
///
/// # Errors
/// When a ReplicaSet cannot be read (one GET per distinct ReplicaSet).
pub async fn owners(
    client: &kube::Client,
    pods: &[Pod],
    clock: Clock,
) -> Result<BTreeSet<Workload>, kube::Error> {
    let mut out = BTreeSet::new();
    let mut replicasets = BTreeSet::new();
    for p in pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        match controller_of(p.metadata.owner_references.as_ref()) {
            Some((kind, name)) if kind == "StatefulSet" => {
                out.insert(Workload {
                    kind: "StatefulSet",
                    namespace: ns,
                    name,
                });
            }
            Some((kind, name)) if kind == "ReplicaSet" => {
                replicasets.insert((ns, name));
            }
            _ => {}
        }
    }
    for (ns, name) in replicasets {
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        match retry(clock, "get replicaset", || api.get(&name)).await {
            Ok(rs) => match controller_of(rs.metadata.owner_references.as_ref()) {
                Some((kind, dep)) if kind == "Deployment" => {
                    out.insert(Workload {
                        kind: "Deployment",
                        namespace: ns,
                        name: dep,
                    });
                }
                _ => {
                    out.insert(Workload {
                        kind: "ReplicaSet",
                        namespace: ns,
                        name,
                    });
                }
            },
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn ready(
    desired: Option<i32>,
    ready: Option<i32>,
    generation: Option<i64>,
    observed: Option<i64>,
) -> bool {
    ready.unwrap_or(0) >= desired.unwrap_or(1) && observed.unwrap_or(0) >= generation.unwrap_or(0)
}

fn deployment_ready(d: &Deployment) -> bool {
    let s = d.status.as_ref();
    ready(
        d.spec.as_ref().and_then(|s| s.replicas),
        s.and_then(|s| s.ready_replicas),
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
    )
}

fn statefulset_ready(d: &StatefulSet) -> bool {
    let s = d.status.as_ref();
    ready(
        d.spec.as_ref().and_then(|s| s.replicas),
        s.and_then(|s| s.ready_replicas),
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
    )
}

fn replicaset_ready(d: &ReplicaSet) -> bool {
    let s = d.status.as_ref();
    ready(
        d.spec.as_ref().and_then(|s| s.replicas),
        s.and_then(|s| s.ready_replicas),
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
    )
}

fn named<K: kube::Resource>(set: &[Arc<K>], w: &Workload) -> Option<Arc<K>> {
    set.iter()
        .find(|o| {
            o.meta().name.as_deref() == Some(w.name.as_str())
                && o.meta().namespace.as_deref() == Some(w.namespace.as_str())
        })
        .cloned()
}

/// The workloads of `set` that are Ready now (a workload that no longer exists counts
/// as Ready: nothing is left to wait for).
///
/// # Errors
/// When the workloads cannot be read.
pub async fn ready_now(
    client: &kube::Client,
    set: &BTreeSet<Workload>,
    clock: Clock,
) -> Result<BTreeSet<Workload>, kube::Error> {
    let mut out = BTreeSet::new();
    for w in set {
        let is_ready = match w.kind {
            "Deployment" => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
                retry(clock, "get deployment", || api.get_opt(&w.name))
                    .await?
                    .is_none_or(|d| deployment_ready(&d))
            }
            "StatefulSet" => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
                retry(clock, "get statefulset", || api.get_opt(&w.name))
                    .await?
                    .is_none_or(|d| statefulset_ready(&d))
            }
            _ => {
                let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &w.namespace);
                retry(clock, "get replicaset", || api.get_opt(&w.name))
                    .await?
                    .is_none_or(|d| replicaset_ready(&d))
            }
        };
        if is_ready {
            out.insert(w.clone());
        }
    }
    Ok(out)
}

/// Wait, on watches, until every workload of `set` is Ready, within `limit` (cluster
/// time).
///
/// # Errors
/// The workloads still not Ready when `limit` passed.
pub async fn wait_ready(
    client: &kube::Client,
    set: &BTreeSet<Workload>,
    clock: Clock,
    limit: Duration,
) -> Result<(), Vec<Workload>> {
    let start = clock.now();
    let left = |start| limit.saturating_sub(clock.elapsed(start));
    let of =
        |kind: &str| -> Vec<Workload> { set.iter().filter(|w| w.kind == kind).cloned().collect() };
    let mut missing = Vec::new();

    let deps = of("Deployment");
    if !deps.is_empty() {
        let r = wait::until(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
            clock,
            left(start),
            "Deployments to be Ready",
            |all| {
                deps.iter()
                    .all(|w| named(all, w).is_none_or(|d| deployment_ready(&d)))
            },
        )
        .await;
        if let Err(t) = r {
            missing.extend(
                deps.iter()
                    .filter(|w| named(&t.last, w).is_some_and(|d| !deployment_ready(&d)))
                    .cloned(),
            );
        }
    }
    let sts = of("StatefulSet");
    if !sts.is_empty() {
        let r = wait::until(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
            clock,
            left(start),
            "StatefulSets to be Ready",
            |all| {
                sts.iter()
                    .all(|w| named(all, w).is_none_or(|d| statefulset_ready(&d)))
            },
        )
        .await;
        if let Err(t) = r {
            missing.extend(
                sts.iter()
                    .filter(|w| named(&t.last, w).is_some_and(|d| !statefulset_ready(&d)))
                    .cloned(),
            );
        }
    }
    let rss = of("ReplicaSet");
    if !rss.is_empty() {
        let r = wait::until(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
            clock,
            left(start),
            "ReplicaSets to be Ready",
            |all| {
                rss.iter()
                    .all(|w| named(all, w).is_none_or(|d| replicaset_ready(&d)))
            },
        )
        .await;
        if let Err(t) = r {
            missing.extend(
                rss.iter()
                    .filter(|w| named(&t.last, w).is_some_and(|d| !replicaset_ready(&d)))
                    .cloned(),
            );
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness() {
        for (desired, r, generation, observed, ok) in [
            (Some(3), Some(3), Some(2), Some(2), true),
            (Some(3), Some(2), Some(2), Some(2), false),
            (Some(3), Some(3), Some(3), Some(2), false),
            (Some(0), None, None, None, true),
            (None, Some(1), None, None, true),
            (None, None, None, None, false),
        ] {
            assert_eq!(
                ready(desired, r, generation, observed),
                ok,
                "{desired:?} {r:?} {generation:?} {observed:?}"
            );
        }
    }
}
