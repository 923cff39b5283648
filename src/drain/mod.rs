//! Draining nodes: moving every pod that must move off them, as fast as the
//! PodDisruptionBudgets allow and never faster.
//!
//! # Eviction, not delete
//! A pod is removed through the `policy/v1` Eviction API (`POST …/pods/{name}/eviction`),
//! never by a plain DELETE: the API server checks the pod's PDB and answers 429 when the
//! disruption would take the workload below what the PDB requires. Only the API server
//! can make that check atomically, so only eviction keeps the promise that no PDB is
//! broken. kbg never falls back to DELETE (kubectl does when eviction is not served).
//!
//! # Which pods
//! The rules are kubectl drain's filters ([`classify`]): mirror pods (static pods) and
//! DaemonSet pods are skipped — the first cannot be removed through the API, the second
//! would be put straight back by a controller that ignores cordons. Finished pods
//! (Succeeded/Failed) are evicted without blocking anything. Pods that declare no
//! controller (nothing would recreate them) block the node unless `force`; so do pods of
//! a DaemonSet that no longer exists. Pods with emptyDir volumes (their data is lost)
//! block unless `delete_emptydir_data`. `pod_selector` narrows the drain. Pods already
//! terminating are only waited for.
//!
//! # Where kbg departs from kubectl drain
//! - **One watch per node** (`fieldSelector=spec.nodeName=…`) both lists what to evict
//!   and sees each pod go, checked by UID (a same-name pod with a new UID is a new pod,
//!   as a StatefulSet makes). kubectl GETs every evicted pod every second.
//! - **PDBs are watched** ([`pdb`]): a pod whose PDB allows no disruption waits, without
//!   a request, until the PDB's status allows one, then is evicted at once. kubectl
//!   retries a refused pod every 5 s, which costs a request each time and up to 5 s per
//!   PDB round. [`DrainOptions::eviction_retry_interval`] (kubectl's 5 s) still applies
//!   whenever kbg cannot see the PDB (not watchable, or not named).
//! - **Nodes are drained together** with one bound on evictions in flight
//!   ([`DrainOptions::max_concurrent_evictions`]); one pod waiting on its PDB never
//!   pauses the others.
//! - **Evictions carry a UID precondition**, so the pod evicted is the pod classified.
//! - **Every pod that did not move is reported** with its reason, not just the first
//!   error.
//! - A node with blocked pods is refused as a whole (kubectl's behaviour); the other
//!   nodes go on.
//!
//! Transient faults (5xx, dropped connections, 429s that are not a PDB's) are retried
//! with backoff in exactly one place per request: evictions in [`evict`], the one read
//! the drain sends outside its watches (DaemonSet metadata) in [`crate::retry`]; kbg's
//! kube client is built with `default_retry = false` so no layer retries underneath, and
//! each eviction sent is counted ([`NodeDrainReport::eviction_requests`]) so a test can
//! hold the API server's audit log against it.

mod classify;
mod evict;
mod node;
pub(crate) mod pdb;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use classify::{
    BlockReason, MIRROR_POD_ANNOTATION, Owners, PodDisposition, SkipReason, block_reasons,
    classify, classify_with,
};
pub(crate) use classify::{Classifier, is_finished, is_ready};

pub use evict::{DISRUPTION_BUDGET_CAUSE, NAMESPACE_TERMINATING_CAUSE};

use crate::clock::Clock;

/// How long a pod refused by a PDB waits before it is tried again when kbg cannot watch
/// that PDB: 5 s, as `kubectl drain` waits after a 429 (k8s.io/kubectl/pkg/drain).
pub const EVICTION_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// The default bound on eviction requests in flight at once, across every node being
/// drained. kubectl drain has no bound (one goroutine per pod); kbg's keeps a
/// 30,000-pod migration from opening thousands of requests at once.
pub const DEFAULT_MAX_CONCURRENT_EVICTIONS: usize = 50;

/// How a drain behaves: kubectl drain's flags, kbg's concurrency bound, and the clock.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// kubectl `--force`: also evict pods that declare no controller (and pods of a
    /// DaemonSet that no longer exists). Default false.
    pub force: bool,
    /// kubectl `--delete-emptydir-data`: also evict pods with emptyDir volumes, losing
    /// that data. Default false.
    pub delete_emptydir_data: bool,
    /// kubectl `--grace-period` in seconds: overrides each pod's
    /// `terminationGracePeriodSeconds`; `None` or negative = the pod's own (kubectl's -1).
    pub grace_period: Option<i64>,
    /// kubectl `--pod-selector`: only pods whose labels match are drained, in `kubectl -l`
    /// syntax (e.g. `app=web,tier notin (db)`), parsed by kbg's one selector parser
    /// ([`crate::selector::Selector`]). Default none, or blank: every pod.
    pub pod_selector: Option<String>,
    /// Cluster time a pod refused by a PDB waits before trying again when kbg cannot see
    /// that PDB's status on its watch. Default [`EVICTION_RETRY_INTERVAL`] (kubectl's 5 s).
    pub eviction_retry_interval: Duration,
    /// Eviction requests in flight at once across all nodes being drained
    /// (`--max-concurrent-evictions`). Must be at least 1. Default
    /// [`DEFAULT_MAX_CONCURRENT_EVICTIONS`].
    pub max_concurrent_evictions: usize,
    /// Cluster time each node may take, from the start of its drain to its last pod gone
    /// (kbg `--drain-timeout`, kubectl `--timeout`). Default `None`: no limit, as kubectl's
    /// `--timeout=0`; kbg's CLI always sets one, and its overall `--timeout` bounds the
    /// whole migration.
    pub node_timeout: Option<Duration>,
    /// The clock every wait goes through (cluster time). Default: wall time.
    pub clock: Clock,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            force: false,
            delete_emptydir_data: false,
            grace_period: None,
            pod_selector: None,
            eviction_retry_interval: EVICTION_RETRY_INTERVAL,
            max_concurrent_evictions: DEFAULT_MAX_CONCURRENT_EVICTIONS,
            node_timeout: None,
            clock: Clock::real(),
        }
    }
}

impl DrainOptions {
    /// Check the options a user gives: the pod selector parses and the concurrency bound
    /// is at least 1.
    ///
    /// # Errors
    /// [`DrainError::InvalidPodSelector`] or [`DrainError::InvalidOption`], each naming the
    /// flag.
    pub fn validate(&self) -> Result<(), DrainError> {
        if let Some(selector) = self.pod_selector.as_deref()
            && !selector.trim().is_empty()
        {
            crate::selector::Selector::parse(selector).map_err(DrainError::InvalidPodSelector)?;
        }
        if self.max_concurrent_evictions == 0 {
            return Err(DrainError::InvalidOption {
                flag: "--max-concurrent-evictions",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// A pod, by namespace, name and UID (the UID tells a pod from its same-name successor).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl PodRef {
    /// The reference of a pod object (empty strings for missing fields).
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Told about a drain's progress as it happens (progress bars, Events). Every method
/// defaults to doing nothing; calls come from the drain's own task, so keep them quick.
pub trait DrainObserver: Send + Sync {
    /// The API server accepted the eviction of `pod` (201): it is terminating.
    fn pod_evicted(&self, node: &str, pod: &PodRef) {
        let _ = (node, pod);
    }
    /// `pod`, which the drain evicted or waited for, is gone (checked by UID).
    fn pod_gone(&self, node: &str, pod: &PodRef) {
        let _ = (node, pod);
    }
    /// `pod` waits for PDB `pdb` (its name): either the API server refused it (429), or
    /// kbg's PDB watch shows no disruption allowed yet. `message` says which and why.
    fn pdb_blocked(&self, node: &str, pod: &PodRef, pdb: &str, message: &str) {
        let _ = (node, pod, pdb, message);
    }
    /// The drain of `node` ended, whatever the outcome (`report.outcome`).
    fn node_drained(&self, node: &str, report: &NodeDrainReport) {
        let _ = (node, report);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;
impl DrainObserver for NoopObserver {}

/// How a node's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOutcome {
    /// Every pod that had to move is gone.
    Drained,
    /// Pods that no flag allowed were on it when the drain started: nothing was evicted
    /// (kubectl's behaviour). `not_moved` names those pods and the flag for each; the
    /// node's other pods were not touched and are not listed.
    Blocked,
    /// `node_timeout` passed with pods still there (`not_moved` says why each stayed).
    TimedOut,
    /// Some pods could not be evicted (the API server refused for good, or the pods could
    /// not be listed); the others are gone.
    Failed,
}

/// Why a pod that had to move did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotMovedReason {
    /// Refused by classification: a flag would allow it.
    Blocked {
        /// Why, and (through [`BlockReason::flag`]) which flag.
        reason: BlockReason,
    },
    /// Still waiting for its PDB at the deadline.
    PdbBlocked {
        /// The PDB's name (or "unknown").
        pdb: String,
        /// The last word on it: the API server's 429 message or the PDB's status.
        message: String,
    },
    /// Evicted (or deleted by someone else) but still present at the deadline.
    Terminating,
    /// Not evicted yet at the deadline (waiting for a request slot or a retry).
    NotEvicted,
    /// The API server refused the eviction for good, or transient faults outlasted the
    /// retries.
    EvictionFailed {
        /// HTTP status (0 when no answer came).
        code: u16,
        /// The error's message.
        message: String,
    },
}

impl fmt::Display for NotMovedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotMovedReason::Blocked { reason } => {
                write!(f, "{reason} (use {} to evict it anyway)", reason.flag())
            }
            NotMovedReason::PdbBlocked { pdb, message } => {
                write!(f, "waiting for PodDisruptionBudget {pdb}: {message}")
            }
            NotMovedReason::Terminating => f.write_str("still terminating"),
            NotMovedReason::NotEvicted => f.write_str("not evicted yet"),
            NotMovedReason::EvictionFailed { code, message } => {
                write!(f, "eviction failed ({code}): {message}")
            }
        }
    }
}

/// A pod that did not move, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodProblem {
    /// The pod.
    pub pod: PodRef,
    /// Why it is still there.
    pub reason: NotMovedReason,
}

impl fmt::Display for PodProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pod, self.reason)
    }
}

/// What happened on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDrainReport {
    /// The node's name.
    pub node: String,
    /// How it ended.
    pub outcome: NodeOutcome,
    /// Pods whose eviction the API server accepted.
    pub pods_evicted: usize,
    /// Pods already terminating when seen, waited for without a request.
    pub pods_waited: usize,
    /// Pods left alone: DaemonSet, mirror, not selected.
    pub pods_skipped: usize,
    /// 429s from a PDB (each one request).
    pub pdb_retries: u32,
    /// Times a pod waited for its PDB without asking, because kbg's PDB watch showed no
    /// disruption allowed (each one request saved).
    pub pdb_waits: u32,
    /// Transient faults retried (5xx, dropped connections, throttling 429s), on
    /// evictions and on the node's pod watch.
    pub transient_retries: u32,
    /// Eviction requests sent and answered (or failed): first tries, tries again after a
    /// PDB's refusal, and retries after transient faults. Nothing retries underneath the
    /// drain, so the API server's audit log shows exactly this many.
    #[serde(default)]
    pub eviction_requests: u32,
    /// Every pod that had to move and did not, with why.
    pub not_moved: Vec<PodProblem>,
    /// The error that stopped this node's drain before its pods could be seen (e.g. not
    /// allowed to watch pods), if one did.
    pub error: Option<String>,
    /// Cluster seconds from the start of this node's drain to its end.
    pub cluster_seconds: f64,
}

impl NodeDrainReport {
    fn new(node: &str) -> Self {
        NodeDrainReport {
            node: node.to_string(),
            outcome: NodeOutcome::Drained,
            pods_evicted: 0,
            pods_waited: 0,
            pods_skipped: 0,
            pdb_retries: 0,
            pdb_waits: 0,
            transient_retries: 0,
            eviction_requests: 0,
            not_moved: Vec::new(),
            error: None,
            cluster_seconds: 0.0,
        }
    }
}

/// What happened on every node of one [`drain_nodes`] call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReport {
    /// One report per node, in the order the nodes were given.
    pub nodes: Vec<NodeDrainReport>,
    /// Pods whose eviction the API server accepted, on all nodes.
    pub pods_evicted: usize,
    /// Pods that had to move and did not, on all nodes (each named in its node's report).
    pub pods_not_moved: usize,
    /// 429s from PDBs, on all nodes.
    pub pdb_retries: u32,
    /// Transient faults retried, on all nodes.
    pub transient_retries: u32,
    /// Eviction requests sent, on all nodes ([`NodeDrainReport::eviction_requests`]).
    #[serde(default)]
    pub eviction_requests: u32,
    /// Cluster seconds from the start of the call to its end.
    pub cluster_seconds: f64,
}

impl DrainReport {
    fn from_nodes(nodes: Vec<NodeDrainReport>, cluster_seconds: f64) -> Self {
        DrainReport {
            pods_evicted: nodes.iter().map(|n| n.pods_evicted).sum(),
            pods_not_moved: nodes.iter().map(|n| n.not_moved.len()).sum(),
            pdb_retries: nodes.iter().map(|n| n.pdb_retries).sum(),
            transient_retries: nodes.iter().map(|n| n.transient_retries).sum(),
            eviction_requests: nodes.iter().map(|n| n.eviction_requests).sum(),
            cluster_seconds,
            nodes,
        }
    }

    /// Every pod that did not move, with its node.
    pub fn not_moved(&self) -> impl Iterator<Item = (&str, &PodProblem)> {
        self.nodes
            .iter()
            .flat_map(|n| n.not_moved.iter().map(move |p| (n.node.as_str(), p)))
    }

    /// The nodes that were not fully drained.
    pub fn undrained(&self) -> impl Iterator<Item = &NodeDrainReport> {
        self.nodes
            .iter()
            .filter(|n| n.outcome != NodeOutcome::Drained)
    }
}

/// Why a drain did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// `pod_selector` does not parse ([`crate::selector::Selector::parse`]'s one-line
    /// reason); nothing was touched.
    #[error("--pod-selector: {0}")]
    InvalidPodSelector(String),
    /// Another option is out of range; nothing was touched.
    #[error("{flag}: {message}")]
    InvalidOption {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Some nodes were not fully drained. The report says, for every node, how it ended
    /// and every pod still there with why; pods that did move are gone for good.
    #[error("{}", not_drained_message(report))]
    NotDrained {
        /// The whole drain's report.
        report: Box<DrainReport>,
        /// The first API error behind a failure, if one was.
        #[source]
        source: Option<kube::Error>,
    },
}

impl DrainError {
    /// The report, when the drain ran.
    pub fn report(&self) -> Option<&DrainReport> {
        match self {
            DrainError::NotDrained { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// At most this many pods are named per node in the error's one-line message (the
/// report names all of them).
const PODS_NAMED_PER_NODE: usize = 3;

fn not_drained_message(report: &DrainReport) -> String {
    let undrained: Vec<String> = report
        .undrained()
        .map(|n| {
            let how = match n.outcome {
                NodeOutcome::Drained => "drained",
                NodeOutcome::Blocked => "refused",
                NodeOutcome::TimedOut => "timed out",
                NodeOutcome::Failed => "failed",
            };
            let mut pods: Vec<String> = n
                .not_moved
                .iter()
                .take(PODS_NAMED_PER_NODE)
                .map(ToString::to_string)
                .collect();
            if n.not_moved.len() > PODS_NAMED_PER_NODE {
                pods.push(format!(
                    "and {} more",
                    n.not_moved.len() - PODS_NAMED_PER_NODE
                ));
            }
            match &n.error {
                Some(error) => format!("node {} {how}: {error}", n.node),
                None => format!(
                    "node {} {how} with {} pods left ({})",
                    n.node,
                    n.not_moved.len(),
                    pods.join("; ")
                ),
            }
        })
        .collect();
    format!(
        "{} of {} nodes not drained: {}",
        undrained.len(),
        report.nodes.len(),
        undrained.join("; ")
    )
}

/// What the nodes' drains share.
pub(crate) struct Shared<'a> {
    pub(crate) client: kube::Client,
    pub(crate) opts: &'a DrainOptions,
    pub(crate) classifier: Classifier,
    pub(crate) observer: &'a dyn DrainObserver,
    pub(crate) permits: tokio::sync::Semaphore,
    pub(crate) pdbs: pdb::PdbTracker,
    daemonsets: tokio::sync::OnceCell<Owners>,
}

impl Shared<'_> {
    /// Which DaemonSets exist, listed once per drain (metadata only) the first time a
    /// DaemonSet pod is seen, through kbg's one retry layer for reads
    /// ([`crate::retry::retry`]: transient faults only). If they cannot be listed, every
    /// one is assumed to exist:
    /// its pods stay, and teardown's own check refuses a node that is not empty.
    pub(crate) async fn owners(&self) -> &Owners {
        self.daemonsets
            .get_or_init(|| async {
                let api: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
                    kube::Api::all(self.client.clone());
                let params = kube::api::ListParams::default();
                let list = crate::retry::retry(self.opts.clock, "list daemonsets", || {
                    api.list_metadata(&params)
                })
                .await;
                match list {
                    Ok(list) => Owners::with_daemonsets(list.items.into_iter().map(|d| {
                        (
                            d.metadata.namespace.unwrap_or_default(),
                            d.metadata.name.unwrap_or_default(),
                        )
                    })),
                    Err(error) => {
                        tracing::debug!(%error, "cannot list DaemonSets; assuming they all exist");
                        Owners::assume_all_exist()
                    }
                }
            })
            .await
    }
}

/// Drain `nodes` at once: evict every pod that must move through the Eviction API,
/// honouring PDBs, and wait until each is gone. The caller cordons the nodes first
/// (otherwise evicted pods may come straight back). Running it again on a half-drained
/// node finishes the job: pods already terminating are waited for, pods gone are gone.
///
/// Requests: per node one LIST and one WATCH of its pods (plus a re-watch when the server
/// closes it); per call one LIST+WATCH of all PDBs and at most one LIST of DaemonSet
/// metadata; per pod one eviction, plus one per 429 and per transient fault.
///
/// # Errors
/// - [`DrainError::InvalidPodSelector`] / [`DrainError::InvalidOption`] before anything
///   is sent.
/// - [`DrainError::NotDrained`] when any node was not fully drained: blocked pods, pods
///   still waiting for a PDB or terminating at `node_timeout`, evictions refused for
///   good. Its report names every such pod and why; the other nodes are drained.
pub async fn drain_nodes(
    client: &kube::Client,
    nodes: &[String],
    opts: &DrainOptions,
    observer: &dyn DrainObserver,
) -> Result<DrainReport, DrainError> {
    opts.validate()?;
    let clock = opts.clock;
    let start = clock.now();
    if nodes.is_empty() {
        return Ok(DrainReport::from_nodes(Vec::new(), 0.0));
    }
    let shared = Shared {
        client: client.clone(),
        opts,
        classifier: Classifier::new(opts),
        observer,
        permits: tokio::sync::Semaphore::new(opts.max_concurrent_evictions),
        pdbs: pdb::PdbTracker::new(),
        daemonsets: tokio::sync::OnceCell::new(),
    };
    tracing::debug!(nodes = nodes.len(), "draining");
    let drains =
        futures::future::join_all(nodes.iter().map(|node| node::drain_node(&shared, node)));
    let results = tokio::select! {
        results = drains => results,
        () = shared.pdbs.run(client.clone(), clock) => unreachable!("the PDB watch runs until dropped"),
    };
    let mut source = None;
    let reports: Vec<NodeDrainReport> = results
        .into_iter()
        .map(|(report, error)| {
            source = source.take().or(error);
            report
        })
        .collect();
    let report = DrainReport::from_nodes(reports, clock.elapsed(start).as_secs_f64());
    tracing::debug!(
        evicted = report.pods_evicted,
        not_moved = report.pods_not_moved,
        pdb_retries = report.pdb_retries,
        "drained"
    );
    if report.undrained().next().is_some() {
        Err(DrainError::NotDrained {
            report: Box::new(report),
            source,
        })
    } else {
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kubectls() {
        let d = DrainOptions::default();
        assert!(!d.force && !d.delete_emptydir_data);
        assert_eq!(d.grace_period, None);
        assert_eq!(d.pod_selector, None);
        assert_eq!(d.eviction_retry_interval, Duration::from_secs(5));
        assert_eq!(d.node_timeout, None);
        assert!(d.max_concurrent_evictions >= 1);
        d.validate().unwrap();
    }

    #[test]
    fn validate_names_the_flag() {
        let bad = DrainOptions {
            pod_selector: Some("app in (web".into()),
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().starts_with("--pod-selector: "), "{e}");
        let zero = DrainOptions {
            max_concurrent_evictions: 0,
            ..Default::default()
        };
        let e = zero.validate().unwrap_err();
        assert!(
            e.to_string().starts_with("--max-concurrent-evictions: "),
            "{e}"
        );
    }

    /// The drain takes every selector kbg's command line takes (one parser,
    /// [`crate::selector::Selector`]): `--pod-selector 'gen>2'` passes the CLI, so it
    /// must pass here too.
    #[test]
    fn validate_accepts_what_the_command_line_accepts() {
        for text in [
            "gen>2",
            "gen < 3",
            "app=web,gen>1",
            "!gen",
            "tier notin (db)",
        ] {
            crate::selector::Selector::parse(text).unwrap();
            let o = DrainOptions {
                pod_selector: Some(text.into()),
                ..Default::default()
            };
            assert!(o.validate().is_ok(), "{text}: {:?}", o.validate());
        }
    }

    fn problem(name: &str, reason: NotMovedReason) -> PodProblem {
        PodProblem {
            pod: PodRef {
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            reason,
        }
    }

    #[test]
    fn the_error_names_nodes_pods_and_why() {
        let mut stuck = NodeDrainReport::new("alpha-1");
        stuck.outcome = NodeOutcome::TimedOut;
        stuck.not_moved = vec![
            problem(
                "web-1",
                NotMovedReason::PdbBlocked {
                    pdb: "web".into(),
                    message: "needs 3 healthy pods and has 3".into(),
                },
            ),
            problem("web-2", NotMovedReason::Terminating),
            problem("web-3", NotMovedReason::NotEvicted),
            problem(
                "web-4",
                NotMovedReason::EvictionFailed {
                    code: 500,
                    message: "more than one".into(),
                },
            ),
        ];
        let mut refused = NodeDrainReport::new("alpha-2");
        refused.outcome = NodeOutcome::Blocked;
        refused.not_moved = vec![problem(
            "solo",
            NotMovedReason::Blocked {
                reason: BlockReason::NoController,
            },
        )];
        let fine = NodeDrainReport::new("alpha-3");
        let report = DrainReport::from_nodes(vec![stuck, refused, fine], 12.0);
        assert_eq!(report.pods_not_moved, 5);
        assert_eq!(report.not_moved().count(), 5);
        let e = DrainError::NotDrained {
            report: Box::new(report),
            source: None,
        };
        let text = e.to_string();
        for needle in [
            "2 of 3 nodes not drained",
            "node alpha-1 timed out with 4 pods left",
            "default/web-1: waiting for PodDisruptionBudget web: needs 3 healthy pods and has 3",
            "default/web-2: still terminating",
            "and 1 more",
            "node alpha-2 refused with 1 pods left (default/solo: declares no controller (use --force to evict it anyway))",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert!(!text.contains("alpha-3"));
        let json = serde_json::to_value(e.report().unwrap()).unwrap();
        assert_eq!(
            json["nodes"][0]["not_moved"][0]["reason"]["kind"],
            "pdb_blocked"
        );
        assert_eq!(json["nodes"][1]["outcome"], "blocked");
    }

    /// Compiled, never run: `drain_nodes`' future must be `Send` so callers can spawn it.
    #[allow(dead_code)]
    fn drain_nodes_is_send(client: &kube::Client, opts: &DrainOptions) {
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&drain_nodes(client, &[], opts, &NoopObserver));
    }
}
