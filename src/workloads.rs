//! The workloads behind pods, and waiting until they are Ready again.
//!
//! After a batch is drained, `kbg migrate` can wait until every workload that had pods on
//! the batch's nodes is back at its desired Ready replicas (now on the target pool)
//! before it drains the next batch: a Deployment's or a StatefulSet's
//! `status.readyReplicas >= spec.replicas`, with the status observed for the current
//! generation. A workload short of replicas for reasons of its own (a replica that fits
//! nowhere) makes the wait time out, naming it: `--wait-for-ready=false` skips the wait.
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

impl Workload {
    /// A workload as [`Workload`]'s `Display` writes it (`Deployment default/web`);
    /// `None` for anything else.
    pub fn parse(text: &str) -> Option<Workload> {
        let (kind, rest) = text.split_once(' ')?;
        let (namespace, name) = rest.split_once('/')?;
        let kind = ["Deployment", "StatefulSet", "ReplicaSet"]
            .into_iter()
            .find(|k| *k == kind)?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then(|| Workload {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
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

/// A workload kind kbg waits for: its replicas, ready replicas and observed generation.
trait Scaled:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// `Deployment`, `StatefulSet`, `ReplicaSet`.
    const KIND: &'static str;
    /// `(spec.replicas, status.readyReplicas, status.observedGeneration)`.
    fn counts(&self) -> (Option<i32>, Option<i32>, Option<i64>);
    /// Ready for the current generation.
    fn is_ready(&self) -> bool {
        let (desired, r, observed) = self.counts();
        ready(desired, r, self.meta().generation, observed)
    }
}

macro_rules! scaled {
    ($t:ty, $kind:literal) => {
        impl Scaled for $t {
            const KIND: &'static str = $kind;
            fn counts(&self) -> (Option<i32>, Option<i32>, Option<i64>) {
                let s = self.status.as_ref();
                (
                    self.spec.as_ref().and_then(|s| s.replicas),
                    s.and_then(|s| s.ready_replicas),
                    s.and_then(|s| s.observed_generation),
                )
            }
        }
    };
}
scaled!(Deployment, "Deployment");
scaled!(StatefulSet, "StatefulSet");
scaled!(ReplicaSet, "ReplicaSet");

fn named<K: kube::Resource>(set: &[Arc<K>], w: &Workload) -> Option<Arc<K>> {
    set.iter()
        .find(|o| {
            o.meta().name.as_deref() == Some(w.name.as_str())
                && o.meta().namespace.as_deref() == Some(w.namespace.as_str())
        })
        .cloned()
}

/// Wait on a watch of kind `K` until the workloads of `set` of that kind are Ready;
/// returns those still not Ready at `limit`.
async fn wait_kind<K: Scaled>(
    client: &kube::Client,
    set: &BTreeSet<Workload>,
    clock: Clock,
    limit: Duration,
) -> Vec<Workload> {
    let mine: Vec<&Workload> = set.iter().filter(|w| w.kind == K::KIND).collect();
    if mine.is_empty() {
        return Vec::new();
    }
    let result = wait::until(
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        clock,
        limit,
        format!("{}s to be Ready", K::KIND),
        |all| {
            mine.iter()
                .all(|w| named(all, w).is_none_or(|d| d.is_ready()))
        },
    )
    .await;
    match result {
        Ok(_) => Vec::new(),
        Err(t) => mine
            .into_iter()
            .filter(|w| named(&t.last, w).is_some_and(|d| !d.is_ready()))
            .cloned()
            .collect(),
    }
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
    let left = || limit.saturating_sub(clock.elapsed(start));
    let mut missing = wait_kind::<Deployment>(client, set, clock, left()).await;
    missing.extend(wait_kind::<StatefulSet>(client, set, clock, left()).await);
    missing.extend(wait_kind::<ReplicaSet>(client, set, clock, left()).await);
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
    fn workloads_read_back_what_they_write() {
        for kind in ["Deployment", "StatefulSet", "ReplicaSet"] {
            let w = Workload {
                kind,
                namespace: "default".into(),
                name: "web".into(),
            };
            assert_eq!(Workload::parse(&w.to_string()), Some(w));
        }
        for bad in [
            "",
            "Deployment",
            "Pod default/web",
            "Deployment /web",
            "Deployment a/b/c",
        ] {
            assert_eq!(Workload::parse(bad), None, "{bad:?}");
        }
    }

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
