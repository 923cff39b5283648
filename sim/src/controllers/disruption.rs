//! The disruption controller (PodDisruptionBudget status, exactly as kube-controller-manager
//! computes it) and the simulator's own books of PDB safety.
//!
//! ## Status (k8s.io/kubernetes `pkg/controller/disruption`)
//! - `maxUnavailable` (int or percent): `expectedPods` = sum of the scale of the matching
//!   pods' controllers (a ReplicaSet owned by a Deployment counts the Deployment's
//!   replicas; StatefulSets their replicas; each controller once; pods without a
//!   controller are ignored); `desiredHealthy = expectedPods − maxUnavailable` (percent of
//!   `expectedPods`, rounded up), at least 0.
//! - integer `minAvailable`: `desiredHealthy = minAvailable`, `expectedPods` = number of
//!   matching pods. Percent `minAvailable`: `desiredHealthy = ceil(p × expected scale)`.
//! - `currentHealthy` = matching pods that are Ready, not terminating, and not in
//!   `disruptedPods` (entries expire after two minutes).
//! - `disruptionsAllowed = currentHealthy − desiredHealthy`, 0 when negative or when
//!   `expectedPods <= 0`. A controller without a scale (a DaemonSet) makes the sync fail:
//!   `disruptionsAllowed = 0`, condition reason `SyncFailed`.
//! - In policy/v1 an empty selector matches every pod of the namespace; a missing one
//!   matches none.
//!
//! Spec changes (a new `metadata.generation`) are observed asynchronously, by the driver,
//! as the real controller does: until then `status.observedGeneration` lags and evictions
//! get 429 with `Retry-After: 10`. Pod changes are reflected at the end of the transaction
//! that made them, so the status an eviction reads is never stale about pods — which is
//! what makes the books below meaningful.
//!
//! ## The books (how tests prove that nothing went around a PDB)
//! Kept for every PDB, independently of any client and of the status above:
//! - the PDB is *armed* from the first moment its `currentHealthy ≥ desiredHealthy`;
//! - once armed, each transaction that is a client's action taking pods away — a DELETE
//!   of a pod or of a node with pods on it, a deletecollection of pods, an eviction —
//!   and that lowers the PDB's `currentHealthy` to below `desiredHealthy` counts **one
//!   violation** (however many pods it took);
//! - `min_margin_seen` is the lowest `currentHealthy − desiredHealthy` seen at the end of
//!   any transaction after the PDB was armed.
//!
//! Controllers' own deletions (a Deployment scaled down, a rolling update, the garbage
//! collector, the namespace controller after a namespace is deleted), the kubelet losing
//! a pod's readiness and taint-based evictions are not client actions and never count. Since eviction refuses exactly what the API server refuses, an eviction never
//! makes a violation; a violation means a client deleted pods directly.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::admission::{int_or_percent, scaled};
use crate::clock::{add_secs, parse_time, rfc3339};
use crate::controllers::TimerKind;
use crate::object::{Key, Obj, get, get_i64, get_str, set};
use crate::resources::Res;
use crate::selector::Selector;
use crate::state::State;

/// How long a `disruptedPods` entry counts (kube-controller-manager's `DeletionTimeout`).
pub(crate) const DISRUPTED_POD_TIMEOUT_SECONDS: f64 = 120.0;

/// The books of one PDB.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Books {
    /// Has been satisfied at least once.
    pub armed: bool,
    /// Client actions that took it below its desired healthy count.
    pub violations: u64,
    /// Lowest `currentHealthy − desiredHealthy` since armed.
    pub min_margin: Option<i64>,
    /// Latest computed numbers.
    pub current_healthy: i64,
    /// Latest desired healthy.
    pub desired_healthy: i64,
}

/// A PDB as the controller tracks it.
#[derive(Debug)]
pub(crate) struct PdbEntry {
    /// The selector (`Selector::nothing()` for a missing one).
    pub selector: Selector,
    /// Its uid.
    pub uid: Arc<str>,
    /// The matching pods, by name (current versions).
    pub pods: BTreeMap<Arc<str>, Arc<Obj>>,
    /// The books.
    pub books: Books,
}

/// The disruption controller's state.
#[derive(Debug, Default)]
pub(crate) struct Disruption {
    /// PDBs by namespace and name.
    pub by_ns: HashMap<Arc<str>, BTreeMap<Arc<str>, PdbEntry>>,
    /// PDBs to bring up to date at the end of the transaction.
    pub sync_dirty: BTreeSet<Key>,
    /// Books of deleted PDBs (namespace, name, books).
    pub retired: Vec<(String, String, Books)>,
}

/// A controller's uid and replicas, `None` for a pod without one, or why not.
type ScaleResult = Result<Option<(Arc<str>, i64)>, String>;

/// The numbers of a PDB.
#[derive(Debug, Clone)]
pub(crate) struct Computed {
    pub expected: i64,
    pub desired: i64,
    pub current: i64,
    pub allowed: i64,
    pub disrupted: Map<String, Value>,
    pub recheck: Option<Timestamp>,
    pub error: Option<String>,
}

fn selector_of(v: &Value) -> Selector {
    match get(v, &["spec", "selector"]) {
        None | Some(Value::Null) => Selector::nothing(),
        Some(s) => Selector::from_label_selector(s)
            .ok()
            .flatten()
            .unwrap_or_else(Selector::nothing),
    }
}

impl State {
    /// A PDB was added, changed or removed.
    pub(crate) fn pdb_changed(&mut self, old: Option<&Arc<Obj>>, new: Option<&Arc<Obj>>) {
        match new {
            Some(n) => {
                let v = n.value();
                let selector = selector_of(&v);
                let ns: Arc<str> = n.ns().into();
                let name: Arc<str> = n.name().into();
                let existing = self
                    .disruption
                    .by_ns
                    .get(&ns)
                    .and_then(|m| m.get(&name))
                    .filter(|e| e.uid == n.meta.uid)
                    .map(|e| (e.selector.clone(), e.books.clone()));
                let (reselect, books) = match existing {
                    Some((s, b)) => (s != selector, b),
                    None => (true, Books::default()),
                };
                if reselect {
                    let pods: BTreeMap<Arc<str>, Arc<Obj>> = self
                        .objects(Res::Pod, Some(&ns))
                        .filter(|p| selector.matches(&***p))
                        .map(|p| (Arc::from(p.name()), p.clone()))
                        .collect();
                    self.disruption.by_ns.entry(ns.clone()).or_default().insert(
                        name.clone(),
                        PdbEntry {
                            selector,
                            uid: n.meta.uid.clone(),
                            pods,
                            books,
                        },
                    );
                    self.disruption.sync_dirty.insert(n.meta.key.clone());
                }
                if old.is_none_or(|o| {
                    o.meta.generation != n.meta.generation || o.meta.uid != n.meta.uid
                }) {
                    self.dirty.pdbs_async.insert(n.meta.key.clone());
                }
            }
            None => {
                if let Some(o) = old
                    && let Some(m) = self.disruption.by_ns.get_mut(o.ns())
                    && let Some(e) = m.remove(o.name())
                {
                    self.disruption.retired.push((
                        o.ns().to_string(),
                        o.name().to_string(),
                        e.books,
                    ));
                }
            }
        }
    }

    /// A pod changed: the PDBs selecting it (before or after) need a new status.
    pub(crate) fn pdb_pod_changed(&mut self, old: Option<&Arc<Obj>>, new: Option<&Arc<Obj>>) {
        let Some(any) = new.or(old) else { return };
        let Some(m) = self.disruption.by_ns.get_mut(any.ns()) else {
            return;
        };
        let name: Arc<str> = any.name().into();
        for (pdb, e) in m.iter_mut() {
            let was = old.is_some_and(|o| e.selector.matches(&**o));
            let is = new.is_some_and(|n| e.selector.matches(&**n));
            match new {
                Some(n) if is => {
                    e.pods.insert(name.clone(), n.clone());
                }
                _ => {
                    if was || e.pods.contains_key(&name) {
                        e.pods.remove(&name);
                    }
                }
            }
            if was || is {
                self.disruption.sync_dirty.insert(Key::new(any.ns(), pdb));
            }
        }
    }

    /// The PDBs (keys) whose selector matches a pod.
    pub(crate) fn pdbs_for(&self, pod: &Obj) -> Vec<Key> {
        self.disruption
            .by_ns
            .get(pod.ns())
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| e.selector.matches(pod))
                    .map(|(n, _)| Key::new(pod.ns(), n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The scale of a pod's controller: `(controller uid, replicas)`.
    fn controller_scale(&self, pod: &Obj) -> ScaleResult {
        let Some(c) = pod.meta.controller() else {
            return Ok(None);
        };
        let ns = pod.ns();
        let replicas = |res: Res, name: &str| {
            self.get_nn(res, ns, name).map(|o| {
                let v = o.value();
                (
                    o.meta.uid.clone(),
                    get_i64(&v, &["spec", "replicas"]).unwrap_or(1),
                    v,
                )
            })
        };
        match &*c.kind {
            "ReplicaSet" => {
                let Some((uid, n, v)) = replicas(Res::ReplicaSet, &c.name) else {
                    return Ok(None);
                };
                // a ReplicaSet of a Deployment: the Deployment's scale
                let dep = get(&v, &["metadata", "ownerReferences"])
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter().find(|o| {
                            o.get("controller").and_then(Value::as_bool) == Some(true)
                                && o.get("kind").and_then(Value::as_str) == Some("Deployment")
                        })
                    })
                    .and_then(|o| o.get("name").and_then(Value::as_str))
                    .map(str::to_string);
                if let Some(d) = dep
                    && let Some((duid, dn, _)) = replicas(Res::Deployment, &d)
                {
                    return Ok(Some((duid, dn)));
                }
                Ok(Some((uid, n)))
            }
            "StatefulSet" => Ok(replicas(Res::StatefulSet, &c.name).map(|(u, n, _)| (u, n))),
            "Deployment" => Ok(replicas(Res::Deployment, &c.name).map(|(u, n, _)| (u, n))),
            other => Err(format!(
                "found no controllers for pod {:?}: {other} {:?} has no scale subresource",
                pod.name(),
                c.name
            )),
        }
    }

    /// Computes a PDB's numbers now.
    pub(crate) fn pdb_compute(&self, key: &Key) -> Option<Computed> {
        let pdb = self.get(Res::Pdb, key)?;
        let entry = self.disruption.by_ns.get(&key.ns)?.get(&key.name)?;
        let v = pdb.value();
        let now = self.now();
        let pods: Vec<&Arc<Obj>> = entry.pods.values().collect();
        let mut error = None;
        let mut expected_scale = || -> i64 {
            let mut seen: HashSet<Arc<str>> = HashSet::new();
            // one lookup per controller, not per pod
            let mut memo: HashMap<(Box<str>, Box<str>), ScaleResult> = HashMap::new();
            let mut total = 0;
            for p in &pods {
                let scale = match p.meta.controller() {
                    None => Ok(None),
                    Some(c) => memo
                        .entry((c.kind.clone(), c.name.clone()))
                        .or_insert_with(|| self.controller_scale(p))
                        .clone(),
                };
                match scale {
                    Ok(Some((uid, n))) => {
                        if seen.insert(uid) {
                            total += n;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            total
        };
        let spec = v.get("spec");
        let min = spec
            .and_then(|s| s.get("minAvailable"))
            .and_then(int_or_percent);
        let max = spec
            .and_then(|s| s.get("maxUnavailable"))
            .and_then(int_or_percent);
        let (expected, desired) = if let Some(m) = max {
            let expected = expected_scale();
            (expected, (expected - scaled(m, expected, true)).max(0))
        } else if let Some(m) = min {
            match m {
                crate::admission::IntOrPercent::Int(n) => (pods.len() as i64, n),
                p => {
                    let expected = expected_scale();
                    (expected, scaled(p, expected, true))
                }
            }
        } else {
            (0, 0)
        };
        let old_disrupted = get(&v, &["status", "disruptedPods"])
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut disrupted = Map::new();
        let mut recheck: Option<Timestamp> = None;
        let mut current = 0;
        for p in &pods {
            if p.terminating() {
                continue;
            }
            let mut in_map = false;
            if let Some(t) = old_disrupted.get(p.name()).and_then(Value::as_str)
                && let Some(at) = parse_time(t)
            {
                let expiry = add_secs(at, DISRUPTED_POD_TIMEOUT_SECONDS);
                if expiry > now {
                    disrupted.insert(p.name().to_string(), json!(t));
                    in_map = true;
                    recheck = Some(recheck.map_or(expiry, |r| r.min(expiry)));
                }
            }
            if !in_map && p.pod().ready {
                current += 1;
            }
        }
        let mut allowed = current - desired;
        if expected <= 0 || allowed <= 0 {
            allowed = 0;
        }
        if error.is_some() {
            allowed = 0;
        }
        Some(Computed {
            expected,
            desired,
            current,
            allowed,
            disrupted,
            recheck,
            error,
        })
    }

    /// Writes a PDB's status from `c`, observing its current generation.
    fn pdb_write_status(&mut self, key: &Key, c: &Computed) {
        let Some(pdb) = self.get(Res::Pdb, key) else {
            return;
        };
        let generation = pdb.meta.generation;
        let now = rfc3339(self.now());
        let (status, reason, message) = match &c.error {
            Some(e) => ("False", "SyncFailed", e.clone()),
            None if c.allowed > 0 => ("True", "SufficientPods", String::new()),
            None => ("False", "InsufficientPods", String::new()),
        };
        self.modify(Res::Pdb, key, |v| {
            let old_cond = get(v, &["status", "conditions"])
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == "DisruptionAllowed"))
                .cloned();
            let mut cond = json!({
                "type": "DisruptionAllowed", "status": status, "reason": reason,
                "message": message, "observedGeneration": generation, "lastTransitionTime": now,
            });
            if let Some(o) = old_cond
                && o["status"] == status
            {
                cond["lastTransitionTime"] = o["lastTransitionTime"].clone();
            }
            let mut s = json!({
                "observedGeneration": generation,
                "disruptionsAllowed": c.allowed,
                "currentHealthy": c.current,
                "desiredHealthy": c.desired,
                "expectedPods": c.expected,
                "conditions": [cond],
            });
            if !c.disrupted.is_empty() {
                s["disruptedPods"] = Value::Object(c.disrupted.clone());
            }
            set(v, &["status"], s);
        });
        if let Some(at) = c.recheck {
            self.add_timer(at, TimerKind::PdbRecheck { key: key.clone() });
        }
    }

    /// End of a transaction: PDBs touched by pod changes get their status (when the
    /// controller runs and has observed their spec), and the books are kept.
    pub(crate) fn sync_pdbs(&mut self) {
        if self.disruption.sync_dirty.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.disruption.sync_dirty);
        let client = self.tx.client_action;
        for key in keys {
            let Some(c) = self.pdb_compute(&key) else {
                continue;
            };
            if let Some(e) = self
                .disruption
                .by_ns
                .get_mut(&key.ns)
                .and_then(|m| m.get_mut(&key.name))
            {
                let b = &mut e.books;
                if b.armed && client && c.current < b.current_healthy && c.current < c.desired {
                    b.violations += 1;
                    self.counters.pdb_violations += 1;
                }
                if c.current >= c.desired {
                    b.armed = true;
                }
                if b.armed {
                    let margin = c.current - c.desired;
                    b.min_margin = Some(b.min_margin.map_or(margin, |m| m.min(margin)));
                }
                b.current_healthy = c.current;
                b.desired_healthy = c.desired;
            }
            let stopped = self.faults.disruption_controller_stopped;
            let stale = self.get(Res::Pdb, &key).is_some_and(|p| {
                let v = p.value();
                get_i64(&v, &["status", "observedGeneration"]).unwrap_or(0) < p.meta.generation
            });
            if !stopped && !stale {
                self.pdb_write_status(&key, &c);
            }
        }
    }

    /// The driver's part: PDBs whose spec changed are observed.
    pub(crate) fn run_pdbs_async(&mut self) {
        if self.faults.disruption_controller_stopped || self.dirty.pdbs_async.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.dirty.pdbs_async);
        for key in keys {
            if let Some(c) = self.pdb_compute(&key) {
                self.pdb_write_status(&key, &c);
            }
        }
    }

    /// Books of every PDB, live and deleted: (namespace, name, books, deleted).
    pub(crate) fn pdb_books(&self) -> Vec<(String, String, Books, bool)> {
        let mut out: Vec<(String, String, Books, bool)> = self
            .disruption
            .by_ns
            .iter()
            .flat_map(|(ns, m)| {
                m.iter()
                    .map(|(n, e)| (ns.to_string(), n.to_string(), e.books.clone(), false))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out.extend(
            self.disruption
                .retired
                .iter()
                .map(|(ns, n, b)| (ns.clone(), n.clone(), b.clone(), true)),
        );
        out
    }
}

/// Reads `status` numbers of a PDB object (for eviction).
pub(crate) struct PdbStatus {
    pub observed_generation: i64,
    pub generation: i64,
    pub allowed: i64,
    pub current: i64,
    pub desired: i64,
    pub disrupted: usize,
    pub always_allow: bool,
}

impl PdbStatus {
    /// From a PDB object.
    pub(crate) fn of(pdb: &Obj) -> PdbStatus {
        let v = pdb.value();
        let n = |k: &str| get_i64(&v, &["status", k]).unwrap_or(0);
        PdbStatus {
            observed_generation: n("observedGeneration"),
            generation: pdb.meta.generation,
            allowed: n("disruptionsAllowed"),
            current: n("currentHealthy"),
            desired: n("desiredHealthy"),
            disrupted: get(&v, &["status", "disruptedPods"])
                .and_then(Value::as_object)
                .map_or(0, Map::len),
            always_allow: get_str(&v, &["spec", "unhealthyPodEvictionPolicy"])
                == Some("AlwaysAllow"),
        }
    }
}
