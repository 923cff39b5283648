//! What the drain knows about PodDisruptionBudgets, from one watch on all of them.
//!
//! kubectl drain learns about a PDB only from the 429 it gets back, and asks again every
//! 5 s. kbg watches the PDBs instead: a pod whose PDB allows no disruption waits, without
//! a request, until the PDB's status (`disruptionsAllowed`) says one is possible, and is
//! evicted at once then.
//!
//! Tries are handed out across all the nodes being drained so a PDB that allows one
//! disruption gets one eviction, not a thundering herd of 429s: a PDB has
//! `disruptionsAllowed` minus the pods kbg has sent for it that its status does not yet
//! list in `disruptedPods` (the API server records there every pod it spent budget on,
//! in the same write that lowers `disruptionsAllowed`). The API server still decides: a
//! try only saves requests that would be refused; a 429 after all just parks the pod
//! again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::watcher;

use crate::clock::Clock;

/// A PDB's `(namespace, name)`.
pub(crate) type PdbKey = (String, String);

/// Which PDBs select a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PdbMatch {
    /// None: the API server evicts without a PDB check.
    None,
    /// Exactly one.
    One(PdbKey),
    /// More than one: the API server refuses every eviction of the pod (500).
    Many(Vec<PdbKey>),
}

#[derive(Debug)]
struct Entry {
    /// `None`: no selector, which in policy/v1 selects no pod.
    selector: Option<Selector>,
    allowed: i32,
    desired_healthy: i32,
    current_healthy: i32,
    /// `status.observedGeneration < metadata.generation`: the API server answers 429 with
    /// Retry-After until the disruption controller catches up.
    stale: bool,
    /// `status.disruptedPods`: pods the API server spent budget on, by name.
    disrupted: HashSet<String>,
    /// Pods (by name) kbg has sent, or is sending, for this PDB that `disrupted` does not
    /// list yet: `allowed` does not account for them.
    outstanding: HashSet<String>,
    /// A 429 came after this status: hand out nothing until the next one.
    refused: bool,
}

impl Entry {
    /// Disruptions not yet handed out.
    fn available(&self) -> i32 {
        if self.stale || self.refused {
            0
        } else {
            self.allowed
                .saturating_sub(i32::try_from(self.outstanding.len()).unwrap_or(i32::MAX))
        }
    }

    /// Take over what kbg sent under the previous status of the same PDB and this status
    /// does not account for yet.
    fn inherit(&mut self, previous: &mut Entry) {
        self.outstanding = std::mem::take(&mut previous.outstanding);
        self.outstanding.retain(|pod| !self.disrupted.contains(pod));
    }
}

#[derive(Debug, Default)]
struct State {
    /// Whether the watch has listed every PDB and is running.
    live: bool,
    /// Whether the first list ended, either way (listed, or failed).
    settled: bool,
    /// Set for good when the PDBs cannot be watched at all (e.g. RBAC).
    unavailable: bool,
    by_namespace: HashMap<String, BTreeMap<String, Entry>>,
    /// PDBs seen during a re-list, replacing `by_namespace` at its end.
    relist: Option<HashMap<String, BTreeMap<String, Entry>>>,
    /// Bumped whenever a PDB appears, goes or changes its selector: pods' cached
    /// matches are stale then.
    selectors_generation: u64,
    /// The node drains to wake when a PDB changes, by PDB.
    waiters: HashMap<PdbKey, Vec<Arc<tokio::sync::Notify>>>,
}

impl State {
    fn entry_mut(&mut self, key: &PdbKey) -> Option<&mut Entry> {
        self.by_namespace.get_mut(&key.0)?.get_mut(&key.1)
    }
}

/// The drain's view of every PDB, kept by [`PdbTracker::run`].
///
/// Node drains learn of changes two ways: each registers a `Notify` with the PDBs its
/// pods wait on ([`PdbTracker::register`]) and is woken only when one of those changes —
/// with a thousand nodes draining, a status change must not wake them all — and every
/// one hears [`PdbTracker::subscribe`] when the view as a whole changes (listed, re-listed,
/// lost).
pub(crate) struct PdbTracker {
    state: Mutex<State>,
    health: tokio::sync::watch::Sender<u64>,
}

/// Backoff between failed PDB watch attempts (cluster time).
const WATCH_RETRY_MIN: Duration = Duration::from_millis(200);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);

/// A PDB watch failing for this long (cluster time) no longer counts as a view: pods
/// waiting on it fall back to the retry interval.
pub(crate) const WATCH_STALE_AFTER: Duration = Duration::from_secs(60);

impl PdbTracker {
    pub(crate) fn new() -> Self {
        PdbTracker {
            state: Mutex::new(State::default()),
            health: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify_health(&self) {
        self.health.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever the view as a whole changes: first listed,
    /// re-listed, or lost.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.health.subscribe()
    }

    /// Wake `waiter` whenever PDB `key` changes (idempotent).
    pub(crate) fn register(&self, key: &PdbKey, waiter: &Arc<tokio::sync::Notify>) {
        let mut state = self.lock();
        let waiters = state.waiters.entry(key.clone()).or_default();
        if !waiters.iter().any(|w| Arc::ptr_eq(w, waiter)) {
            waiters.push(Arc::clone(waiter));
        }
    }

    /// The generation of the PDB set and selectors, for caching [`PdbTracker::matching`].
    pub(crate) fn selectors_generation(&self) -> u64 {
        self.lock().selectors_generation
    }

    /// Whether the watch is listed and running, so a pod may wait on it.
    pub(crate) fn is_live(&self) -> bool {
        self.lock().live
    }

    /// Whether the first list of PDBs has ended, listed or failed: evictions start then,
    /// so the first wave already knows which PDBs allow nothing.
    pub(crate) fn is_settled(&self) -> bool {
        self.lock().settled
    }

    /// Keep the view up to date, forever. Transient watch failures are retried with
    /// backoff; the watch resumes from the last resourceVersion it saw, so the view stays
    /// good meanwhile, unless the failures last [`WATCH_STALE_AFTER`]. A permanent
    /// failure (401/403/404: kbg may not watch PDBs), or a stale view, leaves the drain
    /// with kubectl's retry interval.
    pub(crate) async fn run(&self, client: kube::Client, clock: Clock) {
        let api: Api<PodDisruptionBudget> = Api::all(client);
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        let mut delays = retry_delays();
        let mut failing_since = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    delays = retry_delays();
                    failing_since = None;
                    self.apply(event);
                }
                Err(error) => {
                    let permanent = is_permanent(&error);
                    let since = *failing_since.get_or_insert_with(|| clock.now());
                    let stale = permanent || clock.elapsed(since) >= WATCH_STALE_AFTER;
                    tracing::debug!(%error, permanent, stale, "PodDisruptionBudget watch failed");
                    if stale {
                        {
                            let mut state = self.lock();
                            state.live = false;
                            state.settled = true;
                            state.unavailable = permanent;
                        }
                        self.notify_health();
                    }
                    if permanent {
                        break;
                    }
                    let delay = delays.next().unwrap_or(WATCH_RETRY_MAX);
                    clock.sleep(delay).await;
                }
            }
        }
        std::future::pending::<()>().await;
    }

    fn apply(&self, event: watcher::Event<PodDisruptionBudget>) {
        let mut state = self.lock();
        let mut health = false;
        let mut changed: Option<PdbKey> = None;
        match event {
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(pdb) => {
                if let (Some(relist), Some((ns, name, entry))) = (&mut state.relist, entry_of(&pdb))
                {
                    relist.entry(ns).or_default().insert(name, entry);
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut relist) = state.relist.take() {
                    for (ns, pdbs) in &mut relist {
                        for (name, entry) in pdbs.iter_mut() {
                            if let Some(previous) =
                                state.by_namespace.get_mut(ns).and_then(|p| p.get_mut(name))
                            {
                                entry.inherit(previous);
                            }
                        }
                    }
                    state.by_namespace = relist;
                }
                state.selectors_generation += 1;
                state.live = true;
                state.settled = true;
                health = true;
            }
            watcher::Event::Apply(pdb) => {
                if let Some((ns, name, mut entry)) = entry_of(&pdb) {
                    let pdbs = state.by_namespace.entry(ns.clone()).or_default();
                    let same_selector = match pdbs.get_mut(&name) {
                        Some(previous) => {
                            entry.inherit(previous);
                            previous.selector == entry.selector
                        }
                        None => false,
                    };
                    pdbs.insert(name.clone(), entry);
                    if !same_selector {
                        state.selectors_generation += 1;
                    }
                    changed = Some((ns, name));
                }
            }
            watcher::Event::Delete(pdb) => {
                let ns = pdb.metadata.namespace.unwrap_or_default();
                let name = pdb.metadata.name.unwrap_or_default();
                if let Some(pdbs) = state.by_namespace.get_mut(&ns) {
                    pdbs.remove(&name);
                }
                state.selectors_generation += 1;
                changed = Some((ns, name));
            }
        }
        let woken: Vec<Arc<tokio::sync::Notify>> = match &changed {
            Some(key) => state.waiters.get(key).cloned().unwrap_or_default(),
            None => Vec::new(),
        };
        drop(state);
        // notify_one keeps a permit for a drain that is busy right now: no wake-up lost.
        for waiter in woken {
            waiter.notify_one();
        }
        if health {
            self.notify_health();
        }
    }

    /// The PDBs in `namespace` whose selector matches `labels`.
    pub(crate) fn matching(&self, namespace: &str, labels: &BTreeMap<String, String>) -> PdbMatch {
        let state = self.lock();
        let mut found: Vec<PdbKey> = state
            .by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|(_, e)| e.selector.as_ref().is_some_and(|s| s.matches(labels)))
            .map(|(name, _)| (namespace.to_string(), name.clone()))
            .collect();
        match found.len() {
            0 => PdbMatch::None,
            1 => PdbMatch::One(found.remove(0)),
            _ => PdbMatch::Many(found),
        }
    }

    /// Whether the view has this PDB (so waiting on its status makes sense).
    pub(crate) fn knows(&self, key: &PdbKey) -> bool {
        let state = self.lock();
        state.live
            && state
                .by_namespace
                .get(&key.0)
                .is_some_and(|p| p.contains_key(&key.1))
    }

    /// Take one try at evicting `pod` (its name) under this PDB, if the PDB's status
    /// allows a disruption not yet handed out. An unknown PDB (or a view that is not
    /// live) always allows a try: the API server decides.
    pub(crate) fn try_take(&self, key: &PdbKey, pod: &str) -> bool {
        let mut state = self.lock();
        if !state.live {
            return true;
        }
        let Some(entry) = state.entry_mut(key) else {
            return true;
        };
        if entry.outstanding.contains(pod) {
            return true;
        }
        if entry.available() <= 0 {
            return false;
        }
        entry.outstanding.insert(pod.to_string());
        true
    }

    /// `pod`'s try is over without the API server spending budget on it (refused,
    /// failed, gone, or evicted while not Ready), or the pod is gone (whatever was spent
    /// is in the status by now).
    pub(crate) fn release(&self, key: &PdbKey, pod: &str) {
        if let Some(entry) = self.lock().entry_mut(key) {
            entry.outstanding.remove(pod);
        }
    }

    /// The API server refused a pod of this PDB: hand out nothing more until its next
    /// status.
    pub(crate) fn refused(&self, key: &PdbKey) {
        if let Some(entry) = self.lock().entry_mut(key) {
            entry.refused = true;
        }
    }

    /// "needs D healthy pods and has C" for a report, from the last status seen.
    pub(crate) fn describe(&self, key: &PdbKey) -> Option<String> {
        let state = self.lock();
        let entry = state.by_namespace.get(&key.0)?.get(&key.1)?;
        Some(if entry.stale {
            format!(
                "PodDisruptionBudget {}/{} is still being processed by the server",
                key.0, key.1
            )
        } else {
            format!(
                "PodDisruptionBudget {}/{} needs {} healthy pods and has {} (allows {} disruptions)",
                key.0, key.1, entry.desired_healthy, entry.current_healthy, entry.allowed
            )
        })
    }
}

fn entry_of(pdb: &PodDisruptionBudget) -> Option<(String, String, Entry)> {
    let ns = pdb.metadata.namespace.clone()?;
    let name = pdb.metadata.name.clone()?;
    let selector = pdb
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .and_then(|s| Selector::try_from(s).ok());
    let status = pdb.status.clone().unwrap_or_default();
    let stale = match (pdb.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed < generation,
        (Some(_), None) => true,
        _ => false,
    };
    Some((
        ns,
        name,
        Entry {
            selector,
            allowed: status.disruptions_allowed,
            desired_healthy: status.desired_healthy,
            current_healthy: status.current_healthy,
            stale,
            disrupted: status
                .disrupted_pods
                .map(|d| d.into_keys().collect())
                .unwrap_or_default(),
            outstanding: HashSet::new(),
            refused: false,
        },
    ))
}

/// Exponential delays for watch retries, in cluster time.
pub(crate) fn retry_delays() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(WATCH_RETRY_MIN)
        .with_max_delay(WATCH_RETRY_MAX)
        .without_max_times()
        .with_jitter()
        .build()
}

/// Whether a watch failure cannot be helped by retrying (not allowed, or no such API).
pub(crate) fn is_permanent(error: &watcher::Error) -> bool {
    let api = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        },
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    matches!(api, Some(401 | 403 | 404))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn pdb(
        name: &str,
        app: Option<&str>,
        allowed: i32,
        generation: i64,
        observed: i64,
    ) -> PodDisruptionBudget {
        let mut pdb = PodDisruptionBudget::default();
        pdb.metadata.namespace = Some("default".into());
        pdb.metadata.name = Some(name.into());
        pdb.metadata.generation = Some(generation);
        pdb.spec = Some(PodDisruptionBudgetSpec {
            selector: app.map(|app| LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        pdb.status = Some(PodDisruptionBudgetStatus {
            disruptions_allowed: allowed,
            desired_healthy: 2,
            current_healthy: 2 + allowed,
            expected_pods: 3,
            observed_generation: Some(observed),
            ..Default::default()
        });
        pdb
    }

    fn with_disrupted(mut pdb: PodDisruptionBudget, pods: &[&str]) -> PodDisruptionBudget {
        let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        pdb.status.as_mut().unwrap().disrupted_pods =
            Some(pods.iter().map(|p| (p.to_string(), at.clone())).collect());
        pdb
    }

    fn listed(pdbs: Vec<PodDisruptionBudget>) -> PdbTracker {
        let t = PdbTracker::new();
        t.apply(watcher::Event::Init);
        for p in pdbs {
            t.apply(watcher::Event::InitApply(p));
        }
        t.apply(watcher::Event::InitDone);
        t
    }

    fn key(name: &str) -> PdbKey {
        ("default".into(), name.into())
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    #[test]
    fn hands_out_as_many_tries_as_the_status_allows() {
        let t = listed(vec![pdb("web", Some("web"), 2, 1, 1)]);
        let web = key("web");
        assert!(t.is_live() && t.is_settled());
        assert!(t.try_take(&web, "a"));
        assert!(t.try_take(&web, "b"));
        assert!(t.try_take(&web, "b"), "a pod holding a try keeps it");
        assert!(!t.try_take(&web, "c"), "a third pod would be refused");
        t.release(&web, "b");
        assert!(t.try_take(&web, "c"), "a try released is available again");
        // a's eviction lands: the server lowers disruptionsAllowed to 1 and lists a. c is
        // still in flight, so nothing is left to hand out.
        t.apply(watcher::Event::Apply(with_disrupted(
            pdb("web", Some("web"), 1, 1, 1),
            &["a"],
        )));
        assert!(
            !t.try_take(&web, "d"),
            "c's eviction is not accounted for yet"
        );
        // c lands too.
        t.apply(watcher::Event::Apply(with_disrupted(
            pdb("web", Some("web"), 0, 1, 1),
            &["a", "c"],
        )));
        assert!(!t.try_take(&web, "d"));
        // A replacement becomes Ready: one more disruption allowed.
        t.apply(watcher::Event::Apply(with_disrupted(
            pdb("web", Some("web"), 1, 1, 1),
            &["a", "c"],
        )));
        assert!(t.try_take(&web, "d"));
        t.release(&web, "d");
        t.refused(&web);
        assert!(
            !t.try_take(&web, "e"),
            "after a 429, wait for the next status"
        );
        t.apply(watcher::Event::Apply(pdb("web", Some("web"), 1, 1, 1)));
        assert!(t.try_take(&web, "e"));
    }

    #[test]
    fn a_relist_keeps_what_is_in_flight() {
        let t = listed(vec![pdb("web", Some("web"), 1, 1, 1)]);
        assert!(t.try_take(&key("web"), "a"));
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitApply(pdb("web", Some("web"), 1, 1, 1)));
        t.apply(watcher::Event::InitDone);
        assert!(!t.try_take(&key("web"), "b"), "a is still unaccounted for");
    }

    #[test]
    fn stale_and_unknown_pdbs() {
        let t = listed(vec![pdb("stale", Some("db"), 3, 2, 1)]);
        assert!(
            !t.try_take(&key("stale"), "a"),
            "a stale PDB is answered with Retry-After"
        );
        assert!(
            t.try_take(&key("unknown"), "a"),
            "the API server decides for a PDB we do not know"
        );
        assert!(!t.knows(&key("unknown")));
        assert!(t.knows(&key("stale")));
        assert!(
            t.describe(&key("stale"))
                .unwrap()
                .contains("still being processed")
        );
        let not_listed = PdbTracker::new();
        assert!(!not_listed.is_live() && !not_listed.is_settled());
        assert!(not_listed.try_take(&key("stale"), "a"));
        assert!(!not_listed.knows(&key("stale")));
    }

    #[test]
    fn matches_by_namespace_and_selector() {
        let t = listed(vec![
            pdb("web", Some("web"), 1, 1, 1),
            pdb("web-too", Some("web"), 1, 1, 1),
            pdb("db", Some("db"), 1, 1, 1),
            pdb("none", None, 1, 1, 1),
        ]);
        assert_eq!(
            t.matching("default", &labels("db")),
            PdbMatch::One(key("db"))
        );
        assert_eq!(
            t.matching("default", &labels("web")),
            PdbMatch::Many(vec![key("web"), key("web-too")])
        );
        assert_eq!(t.matching("default", &labels("cache")), PdbMatch::None);
        assert_eq!(t.matching("other", &labels("db")), PdbMatch::None);
        t.apply(watcher::Event::Delete(pdb("db", Some("db"), 1, 1, 1)));
        assert_eq!(t.matching("default", &labels("db")), PdbMatch::None);
    }

    #[test]
    fn empty_selector_selects_the_whole_namespace() {
        let mut all = pdb("all", None, 0, 1, 1);
        all.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        let t = listed(vec![all]);
        assert_eq!(
            t.matching("default", &labels("anything")),
            PdbMatch::One(key("all"))
        );
        assert!(!t.try_take(&key("all"), "a"));
        assert!(
            t.describe(&key("all"))
                .unwrap()
                .contains("needs 2 healthy pods and has 2")
        );
    }

    #[test]
    fn wakes_only_the_drains_waiting_on_the_pdb_that_changed() {
        use futures::FutureExt;
        let t = listed(vec![
            pdb("web", Some("web"), 0, 1, 1),
            pdb("db", Some("db"), 0, 1, 1),
        ]);
        let on_web = Arc::new(tokio::sync::Notify::new());
        let on_db = Arc::new(tokio::sync::Notify::new());
        t.register(&key("web"), &on_web);
        t.register(&key("web"), &on_web);
        t.register(&key("db"), &on_db);
        let generation = t.selectors_generation();
        t.apply(watcher::Event::Apply(pdb("web", Some("web"), 1, 1, 1)));
        assert!(on_web.notified().now_or_never().is_some());
        assert!(
            on_web.notified().now_or_never().is_none(),
            "registered once, woken once"
        );
        assert!(on_db.notified().now_or_never().is_none());
        assert_eq!(
            t.selectors_generation(),
            generation,
            "a status change keeps the matches"
        );
        t.apply(watcher::Event::Apply(pdb("web", Some("other"), 1, 1, 1)));
        assert_ne!(
            t.selectors_generation(),
            generation,
            "a new selector invalidates them"
        );
        t.apply(watcher::Event::Delete(pdb("db", Some("db"), 0, 1, 1)));
        assert!(
            on_db.notified().now_or_never().is_some(),
            "a deleted PDB wakes its waiters"
        );
    }

    #[test]
    fn a_relist_replaces_the_view() {
        let t = listed(vec![pdb("old", Some("web"), 1, 1, 1)]);
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitApply(pdb("new", Some("web"), 1, 1, 1)));
        t.apply(watcher::Event::InitDone);
        assert_eq!(
            t.matching("default", &labels("web")),
            PdbMatch::One(key("new"))
        );
    }
}
