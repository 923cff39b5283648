//! The cluster's state: every object, the one resourceVersion counter, the watch history
//! of each resource, the indexes (pods by node, objects by owner), and the controllers'
//! queues. One `State` sits behind one mutex; API requests and the controller driver take
//! it in turn, so every write is atomic and ordered by resourceVersion.
//!
//! Every write goes through [`State::store`] or [`State::purge`], which bump the
//! resourceVersion, append the watch event, update the indexes and tell the controllers
//! what changed ([`State::on_change`]). A request or a driver tick ends with
//! [`State::end_tx`], which brings the PodDisruptionBudgets touched by the transaction up
//! to date and keeps the books of PDB safety (see `disruption.rs`).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use jiff::Timestamp;
use parking_lot::RwLock;
use serde_json::Value;

use crate::Faults;
use crate::clock::SimClock;
use crate::controllers::disruption::Disruption;
use crate::controllers::scheduler::Scheduler;
use crate::controllers::{Dirty, Timer};
use crate::object::{Key, Obj, set};
use crate::resources::Res;
use crate::scenario::Defaults;
use crate::stats::Counters;

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvType {
    /// ADDED
    Added,
    /// MODIFIED
    Modified,
    /// DELETED
    Deleted,
}

impl EvType {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EvType::Added => "ADDED",
            EvType::Modified => "MODIFIED",
            EvType::Deleted => "DELETED",
        }
    }
}

/// One change of one object, as watchers see it.
#[derive(Debug)]
pub(crate) struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub ty: EvType,
    /// The object after the change (for DELETED: as last seen, at the deletion's rv).
    pub obj: Arc<Obj>,
    /// The object before the change (to tell a watcher with a selector that an object
    /// left or entered its selection).
    pub prev: Option<Arc<Obj>>,
    lines: [OnceLock<Bytes>; 3],
}

impl Event {
    /// The newline-terminated watch line for this event as type `ty`, serialized once and
    /// shared by every watcher.
    pub(crate) fn line(&self, ty: EvType) -> Bytes {
        self.lines[ty as usize]
            .get_or_init(|| {
                let prefix = format!("{{\"type\":\"{}\",\"object\":", ty.as_str());
                let mut b = Vec::with_capacity(prefix.len() + self.obj.bytes.len() + 2);
                b.extend_from_slice(prefix.as_bytes());
                b.extend_from_slice(&self.obj.bytes);
                b.extend_from_slice(b"}\n");
                Bytes::from(b)
            })
            .clone()
    }
}

/// The bounded history of one resource's events, for watches to resume from.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Events, oldest first.
    pub events: VecDeque<Arc<Event>>,
    /// Events with a resourceVersion above this one are all present; a watch from an
    /// older resourceVersion gets 410 Gone.
    pub floor: u64,
}

/// A resource's history and the signal watchers wait on.
#[derive(Debug)]
pub(crate) struct Hist {
    /// The history.
    pub inner: RwLock<History>,
    /// The resourceVersion of the latest event.
    pub latest: tokio::sync::watch::Sender<u64>,
    cap: usize,
}

impl Hist {
    fn push(&self, ev: Arc<Event>) {
        let rv = ev.rv;
        {
            let mut h = self.inner.write();
            h.events.push_back(ev);
            while h.events.len() > self.cap {
                if let Some(old) = h.events.pop_front() {
                    h.floor = old.rv;
                }
            }
        }
        self.latest.send_replace(rv);
    }
}

/// One resource's objects.
#[derive(Debug)]
pub(crate) struct Table {
    /// Objects by key, in key order (lists and `continue` tokens follow it).
    pub objs: BTreeMap<Key, Arc<Obj>>,
    /// Watch history.
    pub hist: Arc<Hist>,
}

/// A reference to an object of any resource.
pub(crate) type Ref = (Res, Key);

/// What a transaction did, for [`State::end_tx`].
#[derive(Debug, Default)]
pub(crate) struct Tx {
    /// The transaction is a client's request that may take pods away (DELETE of a pod,
    /// node or namespace, deletecollection, eviction): PDB violations are counted.
    pub client_action: bool,
}

/// Kubelet state of one node.
#[derive(Debug, Clone)]
pub(crate) struct Kubelet {
    /// The simulated kubelet runs (see `POST /sim/v1/nodes/{name}/stop-kubelet`).
    pub running: bool,
    /// Incremented on every stop, so a stale "node lost" timer can tell.
    pub epoch: u64,
    /// The node's InternalIP (the pods' hostIP).
    pub ip: Arc<str>,
}

/// Resource use of the pods bound to one node.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// cpu requests, millicores
    pub cpu: i64,
    /// memory requests, bytes
    pub mem: i64,
    /// pods
    pub pods: i64,
}

/// The whole cluster.
pub(crate) struct State {
    /// The simulated clock.
    pub clock: SimClock,
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Objects, by `Res as usize`.
    pub tables: Vec<Table>,
    /// Pods by `spec.nodeName`.
    pub pods_by_node: HashMap<Arc<str>, BTreeSet<Key>>,
    /// Objects by the uid of each of their owners (the current version of each, so
    /// controllers read their dependents without lookups).
    pub by_owner: HashMap<Arc<str>, BTreeMap<Ref, Arc<Obj>>>,
    /// Every object by uid.
    pub uids: HashMap<Arc<str>, Ref>,
    /// Requests of the pods bound to each node name (terminal pods excluded).
    pub usage: HashMap<Arc<str>, Usage>,
    /// Kubelets by node name.
    pub kubelets: HashMap<Arc<str>, Kubelet>,
    /// Controllers' dirty sets.
    pub dirty: Dirty,
    /// Timers, earliest first.
    pub timers: BinaryHeap<Timer>,
    /// Sequence for timers' order.
    pub timer_seq: u64,
    /// The scheduler.
    pub sched: Scheduler,
    /// The disruption controller and the PDB books.
    pub disruption: Disruption,
    /// Defaults for delays and capacities.
    pub defaults: Defaults,
    /// Faults in force.
    pub faults: Faults,
    /// Counters for [`crate::SimStats`].
    pub counters: Counters,
    /// The control plane's version (`/version` when no kube-apiserver mirror pod says
    /// otherwise).
    pub version: String,
    /// Static pod manifests of each node (the kubelet keeps a mirror pod for each).
    pub static_pods: BTreeMap<Arc<str>, Vec<Value>>,
    /// The current transaction.
    pub tx: Tx,
    /// Pods whose deletion the kubelet has finished but whose finalizers remain.
    pub pods_terminated: HashSet<Key>,
    /// Next pod IP suffix.
    pub next_ip: u32,
    /// Settling mode: timers due "now" fire at once (used while loading a scenario).
    pub settling: bool,
    /// The latest resourceVersion whose event is in the history, readable without the
    /// lock (watch bookmarks).
    pub published_rv: Arc<std::sync::atomic::AtomicU64>,
}

impl State {
    /// An empty cluster.
    pub(crate) fn new(
        clock: SimClock,
        defaults: Defaults,
        faults: Faults,
        version: String,
        history: usize,
    ) -> State {
        let tables = Res::all()
            .map(|_| Table {
                objs: BTreeMap::new(),
                hist: Arc::new(Hist {
                    inner: RwLock::new(History::default()),
                    latest: tokio::sync::watch::channel(0).0,
                    cap: history.max(16),
                }),
            })
            .collect();
        State {
            clock,
            rv: 0,
            tables,
            pods_by_node: HashMap::new(),
            by_owner: HashMap::new(),
            uids: HashMap::new(),
            usage: HashMap::new(),
            kubelets: HashMap::new(),
            dirty: Dirty::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            sched: Scheduler::default(),
            disruption: Disruption::default(),
            defaults,
            faults,
            counters: Counters::default(),
            version,
            static_pods: BTreeMap::new(),
            tx: Tx::default(),
            pods_terminated: HashSet::new(),
            next_ip: 0,
            settling: false,
            published_rv: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Simulated now.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The table of `res`.
    pub(crate) fn table(&self, res: Res) -> &Table {
        &self.tables[res as usize]
    }

    /// An object.
    pub(crate) fn get(&self, res: Res, key: &Key) -> Option<&Arc<Obj>> {
        self.tables[res as usize].objs.get(key)
    }

    /// An object by namespace and name.
    pub(crate) fn get_nn(&self, res: Res, ns: &str, name: &str) -> Option<&Arc<Obj>> {
        self.get(res, &Key::new(ns, name))
    }

    /// Objects of `res` in namespace `ns` (all when `ns` is `None`).
    pub(crate) fn objects<'a>(
        &'a self,
        res: Res,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Obj>> + 'a> {
        let t = &self.tables[res as usize].objs;
        match ns {
            None => Box::new(t.values()),
            Some(ns) => Box::new(
                t.range(Key::new(ns, "")..)
                    .take_while(move |(k, _)| &*k.ns == ns)
                    .map(|(_, v)| v),
            ),
        }
    }

    /// Objects of `res` in namespace `ns` (all when `None`) whose key comes after
    /// `after` (a `continue` token's position), in key order.
    pub(crate) fn objects_after<'a>(
        &'a self,
        res: Res,
        ns: Option<&'a str>,
        after: Option<&Key>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Obj>> + 'a> {
        use std::ops::Bound;
        let Some(after) = after else {
            return self.objects(res, ns);
        };
        let t = &self.tables[res as usize].objs;
        let it = t
            .range((Bound::Excluded(after.clone()), Bound::Unbounded))
            .map(|(_, v)| v);
        match ns {
            None => Box::new(it),
            Some(ns) => Box::new(it.take_while(move |o| o.ns() == ns)),
        }
    }

    /// Objects owned by `uid`.
    pub(crate) fn owned(&self, uid: &str) -> Vec<Ref> {
        self.by_owner
            .get(uid)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Pods owned by `uid` (the controller's pods).
    pub(crate) fn owned_pods(&self, uid: &str) -> Vec<Arc<Obj>> {
        let Some(s) = self.by_owner.get(uid) else {
            return vec![];
        };
        s.iter()
            .filter(|((r, _), _)| *r == Res::Pod)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Pods bound to node `name`.
    pub(crate) fn pods_on(&self, name: &str) -> Vec<Arc<Obj>> {
        self.pods_by_node
            .get(name)
            .map(|s| {
                s.iter()
                    .filter_map(|k| self.get(Res::Pod, k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stores `v` as the new version of its object (creating it if new): assigns the next
    /// resourceVersion, emits ADDED or MODIFIED, updates indexes and controllers.
    pub(crate) fn store(&mut self, res: Res, mut v: Value) -> Arc<Obj> {
        self.rv += 1;
        set(
            &mut v,
            &["metadata", "resourceVersion"],
            Value::String(self.rv.to_string()),
        );
        let obj = Arc::new(Obj::new(res, &v));
        let key = obj.meta.key.clone();
        let old = self.tables[res as usize].objs.insert(key, obj.clone());
        let ty = if old.is_some() {
            EvType::Modified
        } else {
            EvType::Added
        };
        self.emit(res, ty, obj.clone(), old.clone());
        self.on_change(res, old.as_ref(), Some(&obj));
        obj
    }

    /// Removes an object for good: emits DELETED (the object as last seen, at a new
    /// resourceVersion), updates indexes and controllers. Returns that last state.
    pub(crate) fn purge(&mut self, res: Res, key: &Key) -> Option<Arc<Obj>> {
        let old = self.tables[res as usize].objs.remove(key)?;
        self.rv += 1;
        let mut v = old.value();
        set(
            &mut v,
            &["metadata", "resourceVersion"],
            Value::String(self.rv.to_string()),
        );
        let last = Arc::new(Obj::new(res, &v));
        self.emit(res, EvType::Deleted, last.clone(), Some(old.clone()));
        self.on_change(res, Some(&old), None);
        if res == Res::Pod {
            self.counters.pods_removed += 1;
            self.pods_terminated.remove(key);
        }
        Some(last)
    }

    fn emit(&mut self, res: Res, ty: EvType, obj: Arc<Obj>, prev: Option<Arc<Obj>>) {
        let ev = Arc::new(Event {
            rv: self.rv,
            ty,
            obj,
            prev,
            lines: Default::default(),
        });
        self.tables[res as usize].hist.push(ev);
        self.published_rv
            .store(self.rv, std::sync::atomic::Ordering::Release);
    }

    /// Tells indexes and controllers about a change.
    fn on_change(&mut self, res: Res, old: Option<&Arc<Obj>>, new: Option<&Arc<Obj>>) {
        self.index_owners(res, old, new);
        match (old, new) {
            (None, Some(n)) => {
                self.uids
                    .insert(n.meta.uid.clone(), (res, n.meta.key.clone()));
            }
            (Some(o), None) => {
                self.uids.remove(&o.meta.uid);
            }
            _ => {}
        }
        match res {
            Res::Pod => self.pod_changed(old, new),
            Res::Node => self.node_changed(old, new),
            Res::ReplicaSet => {
                for o in [old, new].into_iter().flatten() {
                    self.dirty.replicasets.insert(o.meta.key.clone());
                    if let Some(c) = o.meta.controller()
                        && &*c.kind == "Deployment"
                    {
                        self.dirty.deployments.insert(Key::new(o.ns(), &c.name));
                    }
                }
            }
            Res::Deployment => {
                if let Some(o) = new.or(old) {
                    self.dirty.deployments.insert(o.meta.key.clone());
                }
            }
            Res::DaemonSet => {
                if let Some(o) = new.or(old) {
                    self.dirty.daemonsets.insert(o.meta.key.clone());
                }
            }
            Res::StatefulSet => {
                if let Some(o) = new.or(old) {
                    self.dirty.statefulsets.insert(o.meta.key.clone());
                }
            }
            Res::Pdb => self.pdb_changed(old, new),
            Res::Namespace => {
                if let Some(n) = new
                    && n.terminating()
                {
                    self.dirty.namespaces.insert(n.meta.key.clone());
                }
            }
            _ => {}
        }
        if new.is_none()
            && let Some(o) = old
        {
            if self.by_owner.contains_key(&o.meta.uid) {
                self.dirty.gc.push(o.meta.uid.clone());
            }
            if res.def().namespaced
                && self
                    .get_nn(Res::Namespace, "", o.ns())
                    .is_some_and(|n| n.terminating())
            {
                self.dirty.namespaces.insert(Key::new("", o.ns()));
            }
        }
        // an owner that waits for its dependents (foreground deletion)
        for o in [old, new].into_iter().flatten() {
            for r in o.meta.owners.iter() {
                if self.dirty.foreground.contains_key(&r.uid) {
                    self.dirty.foreground_check.insert(r.uid.clone());
                }
            }
        }
    }

    fn index_owners(&mut self, res: Res, old: Option<&Arc<Obj>>, new: Option<&Arc<Obj>>) {
        if let Some(o) = old {
            for r in o.meta.owners.iter() {
                let still = new.is_some_and(|n| n.meta.owners.iter().any(|x| x.uid == r.uid));
                if still {
                    continue;
                }
                if let Some(s) = self.by_owner.get_mut(&r.uid) {
                    s.remove(&(res, o.meta.key.clone()));
                    if s.is_empty() {
                        self.by_owner.remove(&r.uid);
                    }
                }
            }
        }
        if let Some(n) = new {
            for r in n.meta.owners.iter() {
                self.by_owner
                    .entry(r.uid.clone())
                    .or_default()
                    .insert((res, n.meta.key.clone()), n.clone());
            }
        }
    }

    /// Adds a timer.
    pub(crate) fn add_timer(&mut self, at: Timestamp, kind: crate::controllers::TimerKind) {
        self.timer_seq += 1;
        self.timers.push(Timer {
            at,
            seq: self.timer_seq,
            kind,
        });
    }

    /// Ends a transaction: PDB statuses and books (see `disruption.rs`).
    pub(crate) fn end_tx(&mut self) {
        self.sync_pdbs();
        self.tx = Tx::default();
    }
}
