//! The scheduler: binds pending pods (default scheduler, no node yet) to a node that is
//! Ready, schedulable (or tolerated), whose NoSchedule/NoExecute taints the pod tolerates,
//! whose labels match the pod's nodeSelector and required node affinity, and that has room
//! for the pod's requests (pods, cpu, memory against allocatable).
//!
//! Like kube-scheduler it does not look at every node for every pod: it walks the nodes
//! from a rotating cursor and stops after finding `numFeasibleNodesToFind` feasible ones
//! (`percentageOfNodesToScore`: 50% minus 1% per 125 nodes, at least 5%, at least 100
//! nodes), then picks the least allocated. Pods that fit nowhere get `PodScheduled=False,
//! reason Unschedulable` with kube-scheduler's message shape, and are tried again when a
//! node or a pod's resources change (at most once per simulated second).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::{add_secs, rfc3339};
use crate::controllers::TimerKind;
use crate::object::{CondStatus, Key, Obj, Taint, get, set, set_condition};
use crate::resources::Res;
use crate::selector::NodeSelectorTerm;
use crate::state::{State, Usage};

/// The scheduler's queues and node list.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    /// Pods to schedule, in order.
    pub queue: VecDeque<Key>,
    queued: HashSet<Key>,
    unschedulable: HashSet<Key>,
    retry_armed: bool,
    /// Nodes, in no particular order (the cursor walks them).
    pub nodes: Vec<SchedNode>,
    /// Index into `nodes` by name.
    pub node_idx: HashMap<Arc<str>, usize>,
    cursor: usize,
}

/// The scheduler's view of a node: the object and the requests of the pods bound to it
/// (a copy of `State::usage`, kept next to the node so the scheduler's scan does no
/// lookups).
#[derive(Debug)]
pub(crate) struct SchedNode {
    /// The node.
    pub obj: Arc<Obj>,
    /// Requests of its pods.
    pub usage: Usage,
}

/// A toleration.
#[derive(Debug, Clone)]
pub(crate) struct Toleration {
    key: String,
    exists: bool,
    value: String,
    effect: String,
}

impl Toleration {
    /// Parses `spec.tolerations`.
    pub(crate) fn list(v: Option<&Value>) -> Vec<Toleration> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                Toleration {
                    key: s("key"),
                    exists: s("operator") == "Exists",
                    value: s("value"),
                    effect: s("effect"),
                }
            })
            .collect()
    }

    /// k8s.io/api `Toleration.ToleratesTaint`.
    pub(crate) fn tolerates(&self, t: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != *t.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != *t.key {
            return false;
        }
        if self.key.is_empty() && !self.exists {
            return false;
        }
        self.exists || self.value == *t.value
    }
}

/// Whether `tols` tolerate every NoSchedule/NoExecute taint of a node.
pub(crate) fn taints_tolerated(taints: &[Taint], tols: &[Toleration]) -> Result<(), String> {
    for t in taints {
        if &*t.effect == "PreferNoSchedule" {
            continue;
        }
        if !tols.iter().any(|x| x.tolerates(t)) {
            return Err(format!("{{{}: {}}}", t.key, t.value));
        }
    }
    Ok(())
}

/// What a pod asks of a node.
#[derive(Debug)]
pub(crate) struct Constraints {
    node_selector: Vec<(String, String)>,
    terms: Option<Vec<NodeSelectorTerm>>,
    tolerations: Vec<Toleration>,
    cpu: i64,
    mem: i64,
}

impl Constraints {
    /// From a pod (or pod template) spec.
    pub(crate) fn of(spec: &Value, cpu: i64, mem: i64) -> Constraints {
        let node_selector = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let terms = get(
            spec,
            &[
                "affinity",
                "nodeAffinity",
                "requiredDuringSchedulingIgnoredDuringExecution",
                "nodeSelectorTerms",
            ],
        )
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| NodeSelectorTerm::from_value(t).ok())
                .collect()
        });
        Constraints {
            node_selector,
            terms,
            tolerations: Toleration::list(spec.get("tolerations")),
            cpu,
            mem,
        }
    }

    /// The node name a DaemonSet pod is pinned to.
    pub(crate) fn pinned(&self) -> Option<&str> {
        let terms = self.terms.as_ref()?;
        if terms.len() == 1 {
            terms[0].pinned_name()
        } else {
            None
        }
    }

    /// Whether the node's labels, name and taints admit the pod (not resources, not
    /// readiness).
    pub(crate) fn admits(&self, node: &Obj) -> Result<(), Reject> {
        for (k, v) in &self.node_selector {
            if node
                .meta
                .labels
                .iter()
                .find(|(lk, _)| **lk == **k)
                .map(|(_, lv)| &**lv)
                != Some(v.as_str())
            {
                return Err(Reject::Affinity);
            }
        }
        if let Some(terms) = &self.terms
            && !terms
                .iter()
                .any(|t| t.matches(&*node.meta.labels, node.name()))
        {
            return Err(Reject::Affinity);
        }
        let ext = node.node();
        if ext.unschedulable {
            let t = Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                value: "".into(),
                effect: "NoSchedule".into(),
            };
            if !self.tolerations.iter().any(|x| x.tolerates(&t)) {
                return Err(Reject::Unschedulable);
            }
        }
        taints_tolerated(&ext.taints, &self.tolerations).map_err(Reject::Taint)?;
        Ok(())
    }
}

/// Why a node does not fit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reject {
    /// node selector / affinity
    Affinity,
    /// cordoned
    Unschedulable,
    /// an untolerated taint
    Taint(String),
    /// not Ready
    NotReady,
    /// pods
    Pods,
    /// cpu
    Cpu,
    /// memory
    Memory,
}

impl Reject {
    fn text(&self) -> String {
        match self {
            Reject::Affinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Reject::Unschedulable => "node(s) were unschedulable".into(),
            Reject::Taint(t) => format!("node(s) had untolerated taint {t}"),
            Reject::NotReady => {
                "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into()
            }
            Reject::Pods => "Too many pods".into(),
            Reject::Cpu => "Insufficient cpu".into(),
            Reject::Memory => "Insufficient memory".into(),
        }
    }
}

/// What binding a pod to `node` writes: `spec.nodeName` and `PodScheduled=True`.
pub(crate) fn bind(v: &mut Value, node: &str, now: &str) {
    set(v, &["spec", "nodeName"], json!(node));
    set_condition(
        v,
        &["status", "conditions"],
        "PodScheduled",
        "True",
        "",
        "",
        now,
        false,
    );
}

impl State {
    /// Queues a pod for scheduling.
    pub(crate) fn sched_enqueue(&mut self, key: &Key) {
        if self.sched.queued.insert(key.clone()) {
            self.sched.unschedulable.remove(key);
            self.sched.queue.push_back(key.clone());
        }
    }

    /// Something changed that may let unschedulable pods fit: retry them (at most once a
    /// simulated second).
    pub(crate) fn sched_retry_soon(&mut self) {
        if self.sched.unschedulable.is_empty() || self.sched.retry_armed {
            return;
        }
        self.sched.retry_armed = true;
        let at = add_secs(self.now(), 1.0);
        self.add_timer(at, TimerKind::SchedRetry);
    }

    pub(crate) fn sched_retry_fire(&mut self) {
        self.sched.retry_armed = false;
        let keys: Vec<Key> = self.sched.unschedulable.drain().collect();
        for k in keys {
            self.sched_enqueue(&k);
        }
    }

    /// Keeps the node list in step with nodes. `relevant`: something the scheduler
    /// filters on changed (unschedulable pods are tried again).
    pub(crate) fn sched_node_changed(
        &mut self,
        old: Option<&Arc<Obj>>,
        new: Option<&Arc<Obj>>,
        relevant: bool,
    ) {
        match (old, new) {
            (_, Some(n)) => {
                let name: Arc<str> = n.name().into();
                match self.sched.node_idx.get(&name) {
                    Some(&i) => self.sched.nodes[i].obj = n.clone(),
                    None => {
                        let usage = self.usage.get(&name).copied().unwrap_or_default();
                        self.sched.node_idx.insert(name, self.sched.nodes.len());
                        self.sched.nodes.push(SchedNode {
                            obj: n.clone(),
                            usage,
                        });
                    }
                }
            }
            (Some(o), None) => {
                if let Some(i) = self.sched.node_idx.remove(o.name()) {
                    self.sched.nodes.swap_remove(i);
                    if i < self.sched.nodes.len() {
                        let moved: Arc<str> = self.sched.nodes[i].obj.name().into();
                        self.sched.node_idx.insert(moved, i);
                    }
                }
            }
            _ => {}
        }
        if relevant {
            self.sched_retry_soon();
        }
    }

    /// Keeps the scheduler's copy of a node's usage.
    pub(crate) fn sched_usage_changed(&mut self, node: &str) {
        if let Some(&i) = self.sched.node_idx.get(node) {
            self.sched.nodes[i].usage = self.usage.get(node).copied().unwrap_or_default();
        }
    }

    fn fits(node: &SchedNode, c: &Constraints) -> Result<i64, Reject> {
        let ext = node.obj.node();
        if ext.ready != CondStatus::True {
            return Err(Reject::NotReady);
        }
        c.admits(&node.obj)?;
        let u = node.usage;
        if u.pods + 1 > ext.pods {
            return Err(Reject::Pods);
        }
        if u.cpu + c.cpu > ext.cpu {
            return Err(Reject::Cpu);
        }
        if u.mem + c.mem > ext.mem {
            return Err(Reject::Memory);
        }
        // NodeResourcesFit LeastAllocated, plus a little for fewer pods
        let free = |alloc: i64, used: i64| {
            if alloc <= 0 {
                0
            } else {
                (alloc - used) * 100 / alloc
            }
        };
        let score = free(ext.cpu, u.cpu + c.cpu)
            + free(ext.mem, u.mem + c.mem)
            + free(ext.pods, u.pods + 1);
        Ok(score)
    }

    /// Schedules up to `budget` pods.
    pub(crate) fn run_scheduler(&mut self, budget: usize) {
        let mut n = 0;
        while n < budget {
            let Some(key) = self.sched.queue.pop_front() else {
                break;
            };
            self.sched.queued.remove(&key);
            n += 1;
            self.schedule_one(&key);
        }
    }

    fn schedule_one(&mut self, key: &Key) {
        let Some(pod) = self.get(Res::Pod, key).cloned() else {
            return;
        };
        let pe = pod.pod();
        if pe.node.is_some() || pod.terminating() || !pe.default_scheduler {
            return;
        }
        let v = pod.value();
        let c = Constraints::of(v.get("spec").unwrap_or(&Value::Null), pe.cpu, pe.mem);
        let total = self.sched.nodes.len();
        let mut best: Option<(i64, Arc<str>)> = None;
        let mut rejects: BTreeMap<Reject, usize> = BTreeMap::new();
        if let Some(name) = c.pinned() {
            if let Some(&i) = self.sched.node_idx.get(name) {
                let node = &self.sched.nodes[i];
                match Self::fits(node, &c) {
                    Ok(s) => best = Some((s, node.obj.name().into())),
                    Err(r) => *rejects.entry(r).or_default() += 1,
                }
            }
            // the other nodes do not match the pinned name
            let others = total.saturating_sub(usize::from(self.sched.node_idx.contains_key(name)));
            if others > 0 {
                *rejects.entry(Reject::Affinity).or_default() += others;
            }
        } else if total > 0 {
            let pct = (50 - (total as i64) / 125).max(5) as usize;
            let want = if total < 100 {
                total
            } else {
                (total * pct / 100).max(100)
            };
            let mut found = 0;
            let start = self.sched.cursor % total;
            let mut scanned = 0;
            let mut best_i = None;
            while scanned < total && found < want {
                let i = (start + scanned) % total;
                scanned += 1;
                match Self::fits(&self.sched.nodes[i], &c) {
                    Ok(s) => {
                        found += 1;
                        if best.as_ref().is_none_or(|(b, _)| s > *b) {
                            best = Some((s, Arc::from("")));
                            best_i = Some(i);
                        }
                    }
                    Err(r) => *rejects.entry(r).or_default() += 1,
                }
            }
            if let (Some(i), Some(b)) = (best_i, best.as_mut()) {
                b.1 = self.sched.nodes[i].obj.name().into();
            }
            self.sched.cursor = (start + scanned) % total;
        }
        let now = rfc3339(self.now());
        match best {
            Some((_, node)) => {
                self.modify(Res::Pod, key, |v| bind(v, &node, &now));
            }
            None => {
                let mut parts: Vec<String> = rejects
                    .iter()
                    .map(|(r, n)| format!("{n} {}", r.text()))
                    .collect();
                parts.sort();
                let msg = format!(
                    "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
                    if parts.is_empty() {
                        "no nodes available to schedule pods".to_string()
                    } else {
                        parts.join(", ")
                    }
                );
                self.modify(Res::Pod, key, |v| {
                    set_condition(
                        v,
                        &["status", "conditions"],
                        "PodScheduled",
                        "False",
                        "Unschedulable",
                        &msg,
                        &now,
                        false,
                    );
                });
                self.sched.unschedulable.insert(key.clone());
            }
        }
    }
}
