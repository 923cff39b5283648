//! The cluster's behaviour: kubelets, scheduler, controllers, control plane.
//!
//! Controllers are incremental: writes mark what they touch dirty (`Dirty`), and a single
//! driver task runs [`State::tick`] whenever something is dirty or a timer is due. Delays
//! (boot, start-up, termination, grace periods, expiries) are timers in simulated time.

pub(crate) mod controlplane;
pub(crate) mod disruption;
pub(crate) mod kubelet;
pub(crate) mod lifecycle;
pub(crate) mod scheduler;
pub(crate) mod workloads;

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;

use crate::object::Key;
use crate::state::{Ref, State};

/// What the controllers have to look at.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// Deployments to sync.
    pub deployments: BTreeSet<Key>,
    /// ReplicaSets to sync.
    pub replicasets: BTreeSet<Key>,
    /// DaemonSets to sync.
    pub daemonsets: BTreeSet<Key>,
    /// Every DaemonSet (nodes changed).
    pub all_daemonsets: bool,
    /// StatefulSets to sync.
    pub statefulsets: BTreeSet<Key>,
    /// Terminating namespaces.
    pub namespaces: BTreeSet<Key>,
    /// UIDs of deleted owners whose dependents the garbage collector must handle.
    pub gc: Vec<Arc<str>>,
    /// Owners in foreground deletion, by uid.
    pub foreground: HashMap<Arc<str>, Ref>,
    /// Foreground owners to check for remaining dependents.
    pub foreground_check: BTreeSet<Arc<str>>,
    /// PDBs whose spec changed (the disruption controller observes them asynchronously).
    pub pdbs_async: BTreeSet<Key>,
    /// Nodes whose static pods the kubelet must sync.
    pub static_pods: BTreeSet<Arc<str>>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.deployments.is_empty()
            && self.replicasets.is_empty()
            && self.daemonsets.is_empty()
            && !self.all_daemonsets
            && self.statefulsets.is_empty()
            && self.namespaces.is_empty()
            && self.gc.is_empty()
            && self.foreground_check.is_empty()
            && self.pdbs_async.is_empty()
            && self.static_pods.is_empty()
    }
}

/// A timer's job.
#[derive(Debug, Clone)]
pub(crate) enum TimerKind {
    /// A booting node becomes Ready.
    NodeReady {
        /// node name
        node: Arc<str>,
        /// node uid
        uid: Arc<str>,
    },
    /// A bound pod's containers are up: Running and Ready.
    PodStart {
        /// pod
        key: Key,
        /// pod uid
        uid: Arc<str>,
    },
    /// A terminating pod's containers have stopped: the pod goes.
    PodGone {
        /// pod
        key: Key,
        /// pod uid
        uid: Arc<str>,
    },
    /// A node whose kubelet stopped is declared lost (NotReady/Unknown).
    NodeLost {
        /// node name
        node: Arc<str>,
        /// kubelet epoch at the stop
        epoch: u64,
    },
    /// Taint-based eviction of a pod on an unreachable node.
    TaintEvict {
        /// pod
        key: Key,
        /// pod uid
        uid: Arc<str>,
    },
    /// A PDB's `disruptedPods` entry expires.
    PdbRecheck {
        /// pdb
        key: Key,
    },
    /// Unschedulable pods are tried again.
    SchedRetry,
}

/// A timer: fires at `at` (simulated time).
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    /// When.
    pub at: Timestamp,
    /// Tie-breaker (insertion order).
    pub seq: u64,
    /// What.
    pub kind: TimerKind,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    // reversed: BinaryHeap is a max-heap, the earliest timer must come first
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl State {
    /// The time of the next timer.
    pub(crate) fn next_timer(&self) -> Option<Timestamp> {
        self.timers.peek().map(|t| t.at)
    }

    /// One round of the controllers: due timers, garbage collection, namespaces,
    /// workloads, scheduling, PDBs. Does at most about `budget` units of work per step and
    /// returns whether work remains (the caller releases the lock and calls again).
    pub(crate) fn tick(&mut self, budget: usize) -> bool {
        let now = self.now();
        let mut fired = 0;
        if self.settling {
            // loading a scenario: the kubelets' delays have already passed
            let all = std::mem::take(&mut self.timers).into_vec();
            for t in all {
                let settles = matches!(
                    t.kind,
                    TimerKind::NodeReady { .. }
                        | TimerKind::PodStart { .. }
                        | TimerKind::PodGone { .. }
                        | TimerKind::SchedRetry
                );
                if settles || t.at <= now {
                    self.fire(t.kind);
                } else {
                    self.timers.push(t);
                }
            }
        }
        while let Some(t) = self.timers.peek() {
            if t.at > now || fired >= budget {
                break;
            }
            let t = self.timers.pop().expect("peeked");
            self.fire(t.kind);
            fired += 1;
        }
        self.run_gc();
        self.run_namespaces();
        self.run_static_pods();
        self.run_deployments();
        self.run_replicasets(budget);
        self.run_statefulsets();
        self.run_daemonsets(budget);
        self.run_scheduler(budget);
        self.run_pdbs_async();
        self.end_tx();
        let due = if self.settling {
            self.timers.iter().any(|t| {
                t.at <= now
                    || matches!(
                        t.kind,
                        TimerKind::NodeReady { .. }
                            | TimerKind::PodStart { .. }
                            | TimerKind::PodGone { .. }
                            | TimerKind::SchedRetry
                    )
            })
        } else {
            self.timers.peek().is_some_and(|t| t.at <= now)
        };
        due || !self.dirty.is_empty() || !self.sched.queue.is_empty()
    }

    fn fire(&mut self, kind: TimerKind) {
        match kind {
            TimerKind::NodeReady { node, uid } => self.kubelet_node_ready(&node, &uid),
            TimerKind::PodStart { key, uid } => self.kubelet_pod_start(&key, &uid),
            TimerKind::PodGone { key, uid } => self.kubelet_pod_gone(&key, &uid),
            TimerKind::NodeLost { node, epoch } => self.node_lost(&node, epoch),
            TimerKind::TaintEvict { key, uid } => self.taint_evict(&key, &uid),
            TimerKind::PdbRecheck { key } => {
                self.disruption.sync_dirty.insert(key);
            }
            TimerKind::SchedRetry => self.sched_retry_fire(),
        }
    }
}

impl State {
    /// A pod was added, changed or removed.
    pub(crate) fn pod_changed(
        &mut self,
        old: Option<&Arc<crate::object::Obj>>,
        new: Option<&Arc<crate::object::Obj>>,
    ) {
        use crate::object::Phase;
        // index by node and resource use
        let contrib = |o: &crate::object::Obj| {
            let p = o.pod();
            match (&p.node, p.phase) {
                (Some(n), ph) if !matches!(ph, Phase::Succeeded | Phase::Failed) => {
                    Some((n.clone(), p.cpu, p.mem))
                }
                _ => None,
            }
        };
        let old_node = old.and_then(|o| o.pod().node.clone());
        let new_node = new.and_then(|n| n.pod().node.clone());
        if old_node != new_node {
            if let (Some(o), Some(n)) = (old, &old_node)
                && let Some(s) = self.pods_by_node.get_mut(n)
            {
                s.remove(&o.meta.key);
                if s.is_empty() {
                    self.pods_by_node.remove(n);
                }
            }
            if let (Some(p), Some(n)) = (new, &new_node) {
                self.pods_by_node
                    .entry(n.clone())
                    .or_default()
                    .insert(p.meta.key.clone());
            }
        }
        let oc = old.and_then(|o| contrib(o));
        let nc = new.and_then(|n| contrib(n));
        if oc != nc {
            if let Some((n, cpu, mem)) = &oc {
                let u = self.usage.entry(n.clone()).or_default();
                u.cpu -= cpu;
                u.mem -= mem;
                u.pods -= 1;
                self.sched_usage_changed(n);
                // room freed: pods waiting for it may fit now
                self.sched_retry_soon();
            }
            if let Some((n, cpu, mem)) = &nc {
                let u = self.usage.entry(n.clone()).or_default();
                u.cpu += cpu;
                u.mem += mem;
                u.pods += 1;
                self.sched_usage_changed(n);
            }
        }
        // owners
        for o in [old, new].into_iter().flatten() {
            if let Some(c) = o.meta.controller() {
                let key = Key::new(o.ns(), &c.name);
                match &*c.kind {
                    "ReplicaSet" => {
                        self.dirty.replicasets.insert(key);
                    }
                    "DaemonSet" => {
                        self.dirty.daemonsets.insert(key);
                    }
                    "StatefulSet" => {
                        self.dirty.statefulsets.insert(key);
                    }
                    _ => {}
                }
            }
        }
        match new {
            Some(p) => {
                let pe = p.pod();
                if pe.node.is_none() && !p.terminating() && pe.default_scheduler && old.is_none() {
                    self.sched_enqueue(&p.meta.key);
                }
                if pe.node.is_some() && old.is_none_or(|o| o.pod().node.is_none()) {
                    self.kubelet_pod_bound(p);
                }
                if p.terminating() && old.is_some_and(|o| o.meta.deletion != p.meta.deletion) {
                    self.kubelet_pod_terminating(p);
                }
                if p.terminating() && old.is_none() {
                    self.kubelet_pod_terminating(p);
                }
            }
            None => {
                if let Some(o) = old
                    && o.pod().mirror
                    && let Some(n) = &o.pod().node
                    && self.static_pods.contains_key(n)
                {
                    self.dirty.static_pods.insert(n.clone());
                }
            }
        }
        self.pdb_pod_changed(old, new);
    }

    /// A node was added, changed or removed.
    pub(crate) fn node_changed(
        &mut self,
        old: Option<&Arc<crate::object::Obj>>,
        new: Option<&Arc<crate::object::Obj>>,
    ) {
        let relevant = match (old, new) {
            (Some(o), Some(n)) => {
                let (a, b) = (o.node(), n.node());
                a.ready != b.ready
                    || a.unschedulable != b.unschedulable
                    || a.taints != b.taints
                    || a.cpu != b.cpu
                    || a.mem != b.mem
                    || a.pods != b.pods
                    || o.meta.labels != n.meta.labels
            }
            _ => true,
        };
        if relevant {
            self.dirty.all_daemonsets = true;
        }
        self.sched_node_changed(old, new, relevant);
        self.kubelet_node_changed(old, new);
    }
}
