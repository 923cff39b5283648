//! One node's drain: a watch on the node's pods, the pods' states, and the evictions in
//! flight, driven by one loop.
//!
//! A pod that must move goes Queued → InFlight → Evicted → Gone. A 429 (or kbg's PDB
//! watch showing no disruption allowed) parks it until the PDB's status allows one (or,
//! when kbg cannot see that PDB, for the retry interval), then it is queued again. Pods
//! already terminating go straight to Terminating → Gone. "Gone" is the watch's DELETED
//! event for that UID (or its absence from a re-list): a same-name successor has another
//! UID, so it is another pod.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;

use super::classify::{ASSUME_ALL_EXIST, needs_owners};
use super::evict::{self, EvictOutcome, Evicted};
use super::pdb::{self, PdbKey, PdbMatch};
use super::{
    BlockReason, EVICTION_RETRY_INTERVAL, NodeDrainReport, NodeOutcome, NotMovedReason,
    PodDisposition, PodProblem, PodRef, Shared, SkipReason, is_ready,
};

/// A pod parked on a PDB that kbg watches is retried when the PDB's status allows a
/// disruption; this long (cluster time) without one, it is tried anyway — a safety net
/// under the watch, not a poll: a pod waiting ten minutes costs one request more.
const PARKED_RECHECK: Duration = Duration::from_secs(600);

/// The first evictions wait for the PDB watch's first list (a few milliseconds), so they
/// already know which PDBs allow nothing; at most this long (cluster time) if it hangs.
const PDB_SYNC_GRACE: Duration = Duration::from_secs(10);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Refused by classification (a flag would allow it).
    Blocked(BlockReason),
    /// Waiting to be sent.
    Queued,
    /// Its eviction request (with retries) is under way.
    InFlight,
    /// Waiting: on the PDB's status (`on_watch`) or on a timer.
    Parked { pdb: Option<PdbKey>, on_watch: bool },
    /// Evicted by us; waiting until it is gone.
    Evicted,
    /// Terminating when first seen, or deleted by someone else: waiting until gone.
    Terminating,
    /// Gone (or, for a blocked or failed pod, went away by itself).
    Gone,
    /// Could not be evicted.
    Failed(NotMovedReason),
}

struct Tracked {
    pod: PodRef,
    labels: BTreeMap<String, String>,
    ready: bool,
    /// `deletionTimestamp` seen on the watch.
    terminating: bool,
    state: State,
    /// A try handed out by the PDB tracker that this pod holds.
    token: Option<PdbKey>,
    /// Bumped at every park, so a stale timer is ignored.
    park_seq: u32,
    /// Send the next eviction even if the PDB view says no (a timer expired).
    force_attempt: bool,
    /// The last thing a PDB said about this pod: (PDB name, message).
    last_pdb: Option<(String, String)>,
    /// The PDBs selecting this pod, as of a generation of the PDB set.
    pdb_match: Option<(u64, PdbMatch)>,
}

impl Tracked {
    /// The PDBs selecting this pod, matched again only when the PDB set changed.
    fn pdbs(&mut self, sh: &Shared<'_>) -> PdbMatch {
        let generation = sh.pdbs.selectors_generation();
        match &self.pdb_match {
            Some((g, m)) if *g == generation => m.clone(),
            _ => {
                let m = sh.pdbs.matching(&self.pod.namespace, &self.labels);
                self.pdb_match = Some((generation, m.clone()));
                m
            }
        }
    }

    /// Give back the PDB try this pod holds, if any.
    fn release(&mut self, sh: &Shared<'_>) {
        if let Some(key) = self.token.take() {
            sh.pdbs.release(&key, &self.pod.name);
        }
    }
}

/// Drain one node until every pod that must move is gone, or `node_timeout` passes.
/// Returns its report and the first API error behind a failure.
pub(super) async fn drain_node(
    shared: &Shared<'_>,
    node: &str,
) -> (NodeDrainReport, Option<kube::Error>) {
    let clock = shared.opts.clock;
    let start = clock.now();
    let mut run = NodeRun::new(shared, node);
    let timed_out = match shared.opts.node_timeout {
        Some(limit) => clock.timeout(limit, run.run()).await.is_err(),
        None => {
            run.run().await;
            false
        }
    };
    let report = run.finish(timed_out, clock.elapsed(start).as_secs_f64());
    tracing::debug!(
        node,
        outcome = ?report.outcome,
        evicted = report.pods_evicted,
        not_moved = report.not_moved.len(),
        "node drain ended"
    );
    shared.observer.node_drained(node, &report);
    (report, run.first_error)
}

struct NodeRun<'s, 'o> {
    sh: &'s Shared<'o>,
    node: String,
    pods: HashMap<String, Tracked>,
    skipped: HashSet<String>,
    queue: VecDeque<String>,
    /// Pods parked on a PDB's status, by PDB, oldest first.
    parked: HashMap<PdbKey, VecDeque<String>>,
    /// The first complete list has been seen.
    listed: bool,
    /// Blocked pods were there at the first list: nothing is evicted.
    blocked_at_start: bool,
    /// UIDs seen during a re-list.
    relist: Option<HashSet<String>>,
    /// Woken by the PDB tracker when a PDB this node's pods wait on changes.
    waker: Arc<tokio::sync::Notify>,
    report: NodeDrainReport,
    first_error: Option<kube::Error>,
}

impl<'s, 'o> NodeRun<'s, 'o> {
    fn new(sh: &'s Shared<'o>, node: &str) -> Self {
        NodeRun {
            sh,
            node: node.to_string(),
            pods: HashMap::new(),
            skipped: HashSet::new(),
            queue: VecDeque::new(),
            parked: HashMap::new(),
            listed: false,
            blocked_at_start: false,
            relist: None,
            waker: Arc::new(tokio::sync::Notify::new()),
            report: NodeDrainReport::new(node),
            first_error: None,
        }
    }

    fn is_done(&self) -> bool {
        self.blocked_at_start
            || (self.listed
                && self
                    .pods
                    .values()
                    .all(|t| matches!(t.state, State::Gone | State::Blocked(_) | State::Failed(_))))
    }

    async fn run(&mut self) {
        let sh = self.sh;
        let clock = sh.opts.clock;
        let api: Api<Pod> = Api::all(sh.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let stream = watcher(api, config);
        futures::pin_mut!(stream);
        let mut inflight: FuturesUnordered<BoxFuture<'s, (String, Evicted)>> =
            FuturesUnordered::new();
        let mut timers: FuturesUnordered<BoxFuture<'s, (String, u32)>> = FuturesUnordered::new();
        let mut pdb_view = sh.pdbs.subscribe();
        let waker = Arc::clone(&self.waker);
        let mut watch_pause: Option<BoxFuture<'s, ()>> = None;
        let mut watch_delays = pdb::retry_delays();
        let mut pdb_grace: Option<BoxFuture<'s, ()>> =
            Some(Box::pin(async move { clock.sleep(PDB_SYNC_GRACE).await }));
        loop {
            // Answers already on their way are read even when every pod is gone: a pod's
            // DELETED event can be seen before its eviction's 201.
            if self.is_done() && inflight.is_empty() {
                return;
            }
            if pdb_grace.is_some() && sh.pdbs.is_settled() {
                pdb_grace = None;
            }
            if self.listed && pdb_grace.is_none() {
                while let Some(uid) = self.queue.pop_front() {
                    if let Some(eviction) = self.launch(&uid, &mut timers) {
                        inflight.push(eviction);
                    }
                }
            }
            tokio::select! {
                event = stream.next(), if watch_pause.is_none() => match event {
                    Some(Ok(event)) => {
                        watch_delays = pdb::retry_delays();
                        self.on_event(event).await;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(node = %self.node, %error, "pod watch failed");
                        if pdb::is_permanent(&error) {
                            self.report.error = Some(format!("cannot watch the node's pods: {error}"));
                            self.first_error.get_or_insert(watch_error_source(error));
                            return;
                        }
                        self.report.transient_retries += 1;
                        let delay = watch_delays.next().unwrap_or(Duration::from_secs(30));
                        watch_pause = Some(Box::pin(async move { clock.sleep(delay).await }));
                    }
                    None => {
                        watch_pause = Some(Box::pin(async move { clock.sleep(Duration::from_secs(1)).await }));
                    }
                },
                () = pause(&mut watch_pause), if watch_pause.is_some() => watch_pause = None,
                () = pause(&mut pdb_grace), if pdb_grace.is_some() => pdb_grace = None,
                Some((uid, result)) = inflight.next(), if !inflight.is_empty() => {
                    self.on_evicted(&uid, result, &mut timers);
                }
                Some((uid, seq)) = timers.next(), if !timers.is_empty() => self.on_timer(&uid, seq),
                () = waker.notified() => self.wake_parked(&mut timers),
                Ok(()) = pdb_view.changed() => self.wake_parked(&mut timers),
            }
        }
    }

    async fn on_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (&mut self.relist, &pod.metadata.uid) {
                    seen.insert(uid.clone());
                }
                self.on_pod(pod).await;
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let vanished: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in vanished {
                        self.gone(&uid);
                    }
                    self.skipped.retain(|uid| seen.contains(uid));
                }
                if !self.listed {
                    self.listed = true;
                    self.blocked_at_start = self
                        .pods
                        .values()
                        .any(|t| matches!(t.state, State::Blocked(_)));
                    tracing::debug!(
                        node = %self.node,
                        to_evict = self.queue.len(),
                        refused = self.blocked_at_start,
                        "listed the node's pods"
                    );
                }
            }
            watcher::Event::Apply(pod) => self.on_pod(pod).await,
            watcher::Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.gone(uid);
                    self.skipped.remove(uid);
                }
            }
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(t) = self.pods.get_mut(&uid) {
            t.ready = is_ready(&pod);
            if pod.metadata.deletion_timestamp.is_some() {
                t.terminating = true;
                if matches!(t.state, State::Queued | State::Parked { .. }) {
                    t.state = State::Terminating;
                    t.release(self.sh);
                }
            }
            return;
        }
        if self.skipped.contains(&uid) {
            return;
        }
        let owners = if needs_owners(&pod) {
            self.sh.owners().await
        } else {
            &ASSUME_ALL_EXIST
        };
        let disposition = self.sh.classifier.classify(&pod, owners);
        let state = match disposition {
            PodDisposition::Evict => {
                self.queue.push_back(uid.clone());
                State::Queued
            }
            PodDisposition::Skip {
                reason: SkipReason::Terminating,
            } => {
                self.report.pods_waited += 1;
                State::Terminating
            }
            PodDisposition::Skip { .. } => {
                self.report.pods_skipped += 1;
                self.skipped.insert(uid);
                return;
            }
            PodDisposition::Block { reason } => State::Blocked(reason),
        };
        self.pods.insert(
            uid,
            Tracked {
                pod: PodRef::of(&pod),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                ready: is_ready(&pod),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                state,
                token: None,
                park_seq: 0,
                force_attempt: false,
                last_pdb: None,
                pdb_match: None,
            },
        );
    }

    /// The pod with this UID is gone.
    fn gone(&mut self, uid: &str) {
        let Some(t) = self.pods.get_mut(uid) else {
            return;
        };
        let was = std::mem::replace(&mut t.state, State::Gone);
        match was {
            State::Gone | State::Blocked(_) | State::Failed(_) => {}
            // The eviction's answer releases its try.
            State::InFlight => self.sh.observer.pod_gone(&self.node, &t.pod),
            State::Queued | State::Parked { .. } | State::Evicted | State::Terminating => {
                t.release(self.sh);
                self.sh.observer.pod_gone(&self.node, &t.pod);
            }
        }
    }

    /// Start evicting a queued pod, unless its PDB allows no disruption now.
    fn launch(
        &mut self,
        uid: &str,
        timers: &mut FuturesUnordered<BoxFuture<'s, (String, u32)>>,
    ) -> Option<BoxFuture<'s, (String, Evicted)>> {
        let sh = self.sh;
        let t = self.pods.get_mut(uid)?;
        if t.state != State::Queued {
            return None;
        }
        if t.token.is_none()
            && !t.force_attempt
            && t.ready
            && sh.pdbs.is_live()
            && let PdbMatch::One(key) = t.pdbs(sh)
        {
            if sh.pdbs.try_take(&key, &t.pod.name) {
                t.token = Some(key);
            } else {
                self.report.pdb_waits += 1;
                let message = sh
                    .pdbs
                    .describe(&key)
                    .unwrap_or_else(|| "allows no disruption now".to_string());
                sh.observer
                    .pdb_blocked(&self.node, &t.pod, &key.1, &message);
                t.last_pdb = Some((key.1.clone(), message));
                self.park(uid, Some(key), None, timers);
                return None;
            }
        }
        t.force_attempt = false;
        t.state = State::InFlight;
        let pod = t.pod.clone();
        tracing::trace!(node = %self.node, pod = %pod, "evicting");
        Some(Box::pin(async move {
            let result = evict::evict(
                &sh.client,
                &pod,
                sh.opts.grace_period,
                &sh.permits,
                sh.opts.clock,
            )
            .await;
            (pod.uid, result)
        }))
    }

    /// Park a pod: on `pdb`'s status if kbg watches that PDB (with a long safety
    /// recheck), otherwise for `wait` (default: the retry interval).
    fn park(
        &mut self,
        uid: &str,
        pdb: Option<PdbKey>,
        wait: Option<Duration>,
        timers: &mut FuturesUnordered<BoxFuture<'s, (String, u32)>>,
    ) {
        let sh = self.sh;
        let Some(t) = self.pods.get_mut(uid) else {
            return;
        };
        let on_watch = wait.is_none() && pdb.as_ref().is_some_and(|k| sh.pdbs.knows(k));
        let wait = match wait {
            Some(wait) => wait,
            None if on_watch => PARKED_RECHECK,
            None => sh.opts.eviction_retry_interval,
        };
        t.park_seq = t.park_seq.wrapping_add(1);
        t.state = State::Parked {
            pdb: pdb.clone(),
            on_watch,
        };
        if let Some(key) = pdb {
            sh.pdbs.register(&key, &self.waker);
            self.parked
                .entry(key)
                .or_default()
                .push_back(uid.to_string());
        }
        let seq = t.park_seq;
        let uid = uid.to_string();
        let clock = sh.opts.clock;
        timers.push(Box::pin(async move {
            clock.sleep(wait).await;
            (uid, seq)
        }));
    }

    fn on_timer(&mut self, uid: &str, seq: u32) {
        if let Some(t) = self.pods.get_mut(uid)
            && matches!(t.state, State::Parked { .. })
            && t.park_seq == seq
        {
            t.state = State::Queued;
            t.force_attempt = true;
            self.queue.push_back(uid.to_string());
        }
    }

    /// A PDB's status (or the PDB watch's health) changed: wake the parked pods it now
    /// allows, as many as it allows — those waiting on the watch, and those waiting on a
    /// timer (a Retry-After, a PDB not seen before) whose PDB the watch now shows.
    fn wake_parked(&mut self, timers: &mut FuturesUnordered<BoxFuture<'s, (String, u32)>>) {
        let pdbs = &self.sh.pdbs;
        if !pdbs.is_live() {
            // The view is gone: pods waiting on it are tried after the retry interval.
            let waiting: Vec<(String, PdbKey)> = self
                .parked
                .drain()
                .flat_map(|(key, uids)| uids.into_iter().map(move |uid| (uid, key.clone())))
                .filter(|(uid, _)| {
                    self.pods
                        .get(uid)
                        .is_some_and(|t| matches!(t.state, State::Parked { on_watch: true, .. }))
                })
                .collect();
            for (uid, key) in waiting {
                let interval = self.sh.opts.eviction_retry_interval;
                self.park(&uid, Some(key), Some(interval), timers);
            }
            return;
        }
        for (key, uids) in &mut self.parked {
            if !pdbs.knows(key) {
                // Deleted since (or never seen): pods that waited on it go now; those on a
                // timer keep it.
                for uid in uids.drain(..) {
                    if let Some(t) = self.pods.get_mut(&uid)
                        && matches!(&t.state, State::Parked { pdb: Some(k), on_watch: true } if k == key)
                    {
                        t.state = State::Queued;
                        t.force_attempt = true;
                        self.queue.push_back(uid);
                    }
                }
                continue;
            }
            while let Some(uid) = uids.front() {
                let waiting = self.pods.get_mut(uid).filter(|t| {
                    t.token.is_none()
                        && matches!(&t.state, State::Parked { pdb: Some(k), .. } if k == key)
                });
                if let Some(t) = waiting {
                    if !pdbs.try_take(key, &t.pod.name) {
                        break;
                    }
                    t.token = Some(key.clone());
                    t.state = State::Queued;
                    self.queue.push_back(uid.clone());
                }
                uids.pop_front();
            }
        }
        self.parked.retain(|_, uids| !uids.is_empty());
    }

    fn on_evicted(
        &mut self,
        uid: &str,
        result: Evicted,
        timers: &mut FuturesUnordered<BoxFuture<'s, (String, u32)>>,
    ) {
        let sh = self.sh;
        self.report.transient_retries += result.transient_retries;
        self.report.eviction_requests += 1 + result.transient_retries;
        let Some(t) = self.pods.get_mut(uid) else {
            return;
        };
        let already_gone = t.state == State::Gone;
        let held = t.token.clone();
        if !matches!(result.outcome, EvictOutcome::Evicted) || !t.ready || already_gone {
            // No budget spent on it (or, for a pod not Ready, none that the PDB's next
            // status would name); a gone pod's budget is in the status by now.
            t.release(sh);
        }
        match result.outcome {
            EvictOutcome::Evicted => {
                self.report.pods_evicted += 1;
                tracing::debug!(node = %self.node, pod = %t.pod, "evicted");
                sh.observer.pod_evicted(&self.node, &t.pod);
                if !already_gone {
                    t.state = State::Evicted;
                }
            }
            EvictOutcome::Gone => {
                if !already_gone {
                    t.state = State::Gone;
                    sh.observer.pod_gone(&self.node, &t.pod);
                }
            }
            EvictOutcome::PdbRefused { pdb, message } => {
                self.report.pdb_retries += 1;
                let key = pdb
                    .map(|name| (t.pod.namespace.clone(), name))
                    .or(held)
                    .or_else(|| match t.pdbs(sh) {
                        PdbMatch::One(key) => Some(key),
                        _ => None,
                    });
                if let Some(key) = &key {
                    sh.pdbs.refused(key);
                }
                let name = key.as_ref().map_or("unknown", |k| k.1.as_str()).to_string();
                tracing::debug!(node = %self.node, pod = %t.pod, pdb = %name, "refused by PDB");
                sh.observer.pdb_blocked(&self.node, &t.pod, &name, &message);
                t.last_pdb = Some((name, message));
                if !already_gone {
                    self.park(uid, key, None, timers);
                }
            }
            EvictOutcome::RetryAfter {
                after,
                pdb,
                message,
            } => {
                self.report.pdb_retries += 1;
                let name = pdb.unwrap_or_else(|| "unknown".to_string());
                sh.observer.pdb_blocked(&self.node, &t.pod, &name, &message);
                t.last_pdb = Some((name.clone(), message));
                if !already_gone {
                    let key = (t.pod.namespace.clone(), name);
                    self.park(uid, Some(key), Some(after), timers);
                }
            }
            EvictOutcome::NamespaceTerminating => {
                // kubectl: a pod already terminating is waited for; otherwise retried
                // after 5 s until the namespace controller deletes it.
                if already_gone {
                } else if t.terminating {
                    t.state = State::Terminating;
                } else {
                    self.park(uid, None, Some(EVICTION_RETRY_INTERVAL), timers);
                }
            }
            EvictOutcome::Failed(error) => {
                let (code, message) = match &error {
                    kube::Error::Api(status) => (status.code, status.message.clone()),
                    other => (0, other.to_string()),
                };
                tracing::debug!(node = %self.node, pod = %t.pod, code, %message, "eviction failed");
                if !already_gone {
                    t.state = State::Failed(NotMovedReason::EvictionFailed { code, message });
                }
                self.first_error.get_or_insert(error);
            }
        }
    }

    fn finish(&mut self, timed_out: bool, cluster_seconds: f64) -> NodeDrainReport {
        // Tries held by evictions cut off at the deadline go back, so the other nodes
        // draining under the same PDBs do not wait for them. (An evicted pod's try is
        // in the PDB's status already, or soon.)
        let sh = self.sh;
        for t in self.pods.values_mut() {
            if t.state != State::Evicted {
                t.release(sh);
            }
        }
        let blocked_at_start = self.blocked_at_start;
        let mut not_moved: Vec<PodProblem> = self
            .pods
            .values()
            .filter_map(|t| {
                let reason = match &t.state {
                    State::Gone => return None,
                    // A refused node names what refuses it; its other pods were not touched.
                    _ if blocked_at_start && !matches!(t.state, State::Blocked(_)) => return None,
                    State::Queued | State::InFlight => NotMovedReason::NotEvicted,
                    State::Parked { pdb, .. } => {
                        let described = pdb.as_ref().and_then(|k| self.sh.pdbs.describe(k));
                        let (name, message) = match (&t.last_pdb, pdb) {
                            (Some((name, message)), _) => (name.clone(), message.clone()),
                            (None, Some(key)) => (key.1.clone(), String::new()),
                            (None, None) => ("unknown".to_string(), String::new()),
                        };
                        NotMovedReason::PdbBlocked {
                            pdb: name,
                            message: described.unwrap_or(message),
                        }
                    }
                    State::Evicted | State::Terminating => NotMovedReason::Terminating,
                    State::Blocked(reason) => NotMovedReason::Blocked {
                        reason: reason.clone(),
                    },
                    State::Failed(reason) => reason.clone(),
                };
                Some(PodProblem {
                    pod: t.pod.clone(),
                    reason,
                })
            })
            .collect();
        not_moved.sort_by(|a, b| a.pod.cmp(&b.pod));
        let mut report = std::mem::replace(&mut self.report, NodeDrainReport::new(&self.node));
        report.outcome = if self.blocked_at_start {
            NodeOutcome::Blocked
        } else if timed_out {
            NodeOutcome::TimedOut
        } else if !not_moved.is_empty() || report.error.is_some() {
            NodeOutcome::Failed
        } else {
            NodeOutcome::Drained
        };
        report.not_moved = not_moved;
        report.cluster_seconds = cluster_seconds;
        report
    }
}

/// Wait for a pending pause (only polled while there is one).
async fn pause(pause: &mut Option<BoxFuture<'_, ()>>) {
    match pause {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

fn watch_error_source(error: watcher::Error) -> kube::Error {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        other => kube::Error::Service(Box::new(other)),
    }
}
