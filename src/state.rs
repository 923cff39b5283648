//! kbg's state in the cluster: one ConfigMap, one key per record, written with optimistic
//! concurrency.
//!
//! Progress lives in the cluster, not on the operator's laptop, so a rerun from any
//! machine continues where the last run stopped. The ConfigMap (default
//! `kube-system/kbg-state`) holds one JSON document per key:
//!
//! | key | record |
//! | --- | --- |
//! | `pool.<name>` | [`PoolRecord`]: the machine names kbg chose for the pool |
//! | `deploy-pool.<name>` | [`DeployRecord`] |
//! | `migrate.<from>.<to>` | [`MigrateRecord`] |
//! | `teardown.<name>` | [`TeardownRecord`] |
//! | `rollback.<from>.<to>` | [`RollbackRecord`] |
//! | `upgrade-control-plane` | [`ControlPlaneRecord`]: the masters' in-place upgrade |
//! | `ledger.<key>` | a provider's [`kbg_provider::Ledger`] record |
//!
//! Every write is read–modify–write of the whole ConfigMap with its `resourceVersion`:
//! a 409 means someone else wrote first (another kbg on other pools), so kbg reads
//! again and reapplies its change ([`StateStore::update`] takes the change as a
//! function of the current value for that reason). A change that leaves the value as it
//! is writes nothing.
//!
//! The state never holds a secret: records carry names, phases, counts and times.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kbg_provider::{ErrorKind, Ledger, LedgerEntry, ProviderError};
use kube::api::{Api, ObjectMeta, PostParams};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{describe, is_conflict, is_not_found};
use crate::clock::Clock;
use crate::retry::retry;

/// Label on kbg's own objects (the state ConfigMap, Leases).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kbg");

/// How many conflicting writes in a row before giving up.
const MAX_CONFLICTS: usize = 30;

/// The state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A request for the ConfigMap failed.
    #[error("{action} kbg's state (ConfigMap {namespace}/{name}): {}", describe(.source))]
    Request {
        /// "reading" or "writing".
        action: &'static str,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A record does not parse: written by another kbg version, or edited by hand.
    #[error(
        "kbg's state key {key} in ConfigMap {namespace}/{name} cannot be read: {source}; fix or remove that key"
    )]
    Corrupt {
        /// The key.
        key: String,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Others kept writing the ConfigMap between kbg's read and write.
    #[error(
        "kbg's state (ConfigMap {namespace}/{name}) kept changing under kbg: {MAX_CONFLICTS} conflicting writes in a row"
    )]
    Contention {
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
}

/// kbg's state ConfigMap.
#[derive(Clone)]
pub struct StateStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    clock: Clock,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateStore({}/{})", self.namespace, self.name)
    }
}

impl StateStore {
    /// The ConfigMap `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, clock: Clock) -> Self {
        StateStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            clock,
        }
    }

    /// `namespace/name` of the ConfigMap.
    pub fn location(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn request_error(&self, action: &'static str, source: kube::Error) -> StateError {
        StateError::Request {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    async fn fetch(&self) -> Result<Option<ConfigMap>, StateError> {
        match retry(self.clock, "get state", || self.api.get(&self.name)).await {
            Ok(cm) => Ok(Some(cm)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.request_error("reading", e)),
        }
    }

    /// Every key and its raw JSON (empty when the ConfigMap does not exist yet).
    ///
    /// # Errors
    /// When the ConfigMap cannot be read.
    pub async fn read_all(&self) -> Result<BTreeMap<String, String>, StateError> {
        Ok(self
            .fetch()
            .await?
            .and_then(|cm| cm.data)
            .unwrap_or_default())
    }

    fn parse<T: DeserializeOwned>(&self, key: &str, raw: &str) -> Result<T, StateError> {
        serde_json::from_str(raw).map_err(|source| StateError::Corrupt {
            key: key.to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        })
    }

    /// The record under `key`, if any.
    ///
    /// # Errors
    /// When the ConfigMap cannot be read or the record does not parse.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let data = self.read_all().await?;
        data.get(key).map(|raw| self.parse(key, raw)).transpose()
    }

    /// Change the record under `key`: `change` gets the current value (`None`: absent)
    /// and returns the new one (`None`: remove the key) and a result for the caller.
    ///
    /// `change` may run several times (after each conflicting write), so it must be a
    /// function of its argument only. Nothing is written when the value stays the same.
    ///
    /// # Errors
    /// When the ConfigMap cannot be read or written, the record does not parse, or
    /// others keep writing it ([`StateError::Contention`]).
    pub async fn update<T, R>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> (Option<T>, R),
    ) -> Result<R, StateError>
    where
        T: Serialize + DeserializeOwned,
    {
        let pp = PostParams::default();
        for _ in 0..MAX_CONFLICTS {
            let cm = self.fetch().await?;
            let data = cm.as_ref().and_then(|c| c.data.clone()).unwrap_or_default();
            let current_raw = data.get(key);
            let current: Option<T> = current_raw.map(|raw| self.parse(key, raw)).transpose()?;
            let (next, result) = change(current);
            let next_raw =
                next.map(|v| serde_json::to_string(&v).expect("state records serialise"));
            if next_raw.as_ref() == current_raw {
                return Ok(result);
            }
            let mut data = data;
            match next_raw {
                Some(raw) => data.insert(key.to_string(), raw),
                None => data.remove(key),
            };
            let written = match cm {
                None => {
                    let fresh = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                MANAGED_BY.0.to_string(),
                                MANAGED_BY.1.to_string(),
                            )])),
                            ..Default::default()
                        },
                        data: Some(data),
                        ..Default::default()
                    };
                    retry(self.clock, "create state", || self.api.create(&pp, &fresh)).await
                }
                Some(mut cm) => {
                    cm.data = Some(data);
                    retry(self.clock, "update state", || {
                        self.api.replace(&self.name, &pp, &cm)
                    })
                    .await
                }
            };
            match written {
                Ok(_) => return Ok(result),
                // Someone wrote first (or our own earlier attempt did): read again.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(self.request_error("writing", e)),
            }
        }
        Err(StateError::Contention {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })
    }

    /// Write `value` under `key`.
    ///
    /// # Errors
    /// As [`StateStore::update`].
    pub async fn put<T: Serialize + DeserializeOwned + Clone>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        self.update(key, |_: Option<T>| (Some(value.clone()), ()))
            .await
    }

    /// Remove `key`.
    ///
    /// # Errors
    /// As [`StateStore::update`].
    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        self.update(key, |_: Option<serde_json::Value>| (None, ()))
            .await
    }
}

/// The key of pool `name`'s [`PoolRecord`].
pub fn pool_key(name: &str) -> String {
    format!("pool.{name}")
}

/// The key of a command's record: `migrate.alpha.beta`.
pub fn op_key(command: &str, pools: &[&str]) -> String {
    let mut k = command.to_string();
    for p in pools {
        k.push('.');
        k.push_str(p);
    }
    k
}

/// What kbg remembers about a pool it deployed: the machine names it chose.
///
/// Names are the providers' idempotency key: a rerun asks for the same names and gets the
/// same machines. A machine that failed and was replaced is retired, and its name is never
/// used again (`next_index` only grows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// The provider that made the machines.
    pub provider: String,
    /// The machine names the pool uses now.
    pub machines: Vec<String>,
    /// The index the next new machine name gets (`<pool>-<index>`).
    pub next_index: usize,
    /// Names used before and given up (failed and replaced, or cleaned up), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

impl PoolRecord {
    /// Make sure the pool has `count` machine names, adding fresh ones as needed.
    /// Returns the names added.
    pub fn grow_to(&mut self, pool: &str, count: usize) -> Vec<String> {
        let mut added = Vec::new();
        while self.machines.len() < count {
            let name = kbg_provider::machine_name(pool, self.next_index);
            self.next_index += 1;
            if self.retired.contains(&name) || self.machines.contains(&name) {
                continue;
            }
            self.machines.push(name.clone());
            added.push(name);
        }
        added
    }

    /// Give up `names`: they leave the pool and are never reused.
    pub fn retire(&mut self, names: &[String]) {
        self.machines.retain(|m| !names.contains(m));
        for n in names {
            if !self.retired.contains(n) {
                self.retired.push(n.clone());
            }
        }
        self.retired.sort();
    }
}

/// Where an operation stands. Which phases follow which is [`Phase::may_follow`]; a
/// rerun of the same command after a crash continues from the recorded phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Recorded, nothing changed yet.
    Planned,
    /// deploy-pool: asking the provider for machines.
    Provisioning,
    /// deploy-pool: waiting for the nodes to register and be Ready.
    WaitingReady,
    /// migrate, teardown: cordoning the pool's nodes.
    Cordoning,
    /// migrate: draining batch after batch.
    Draining,
    /// migrate: soaking after a batch.
    Soaking,
    /// migrate: the final soak, all nodes drained and cordoned.
    FinalSoak,
    /// teardown: deleting Node objects.
    DeletingNodes,
    /// teardown: deprovisioning machines.
    Deprovisioning,
    /// rollback: uncordoning the source pool.
    Uncordoning,
    /// Finished.
    Done,
    /// Stopped on an error; the record's message says which. A rerun continues.
    Failed,
    /// migrate: undone by `kbg rollback`.
    RolledBack,
    /// upgrade-control-plane: upgrading the masters' control planes one by one.
    UpgradingMasters,
    /// upgrade-control-plane: upgrading the masters' kubelets one by one.
    UpgradingKubelets,
}

impl Phase {
    /// Whether an operation may go from `prev` to `self`. The first phase of a run
    /// (`Planned`) may follow a finished one (`Done`, `RolledBack`) or a stopped one
    /// (`Failed`, or any phase a crash left behind); `Failed` and `RolledBack` may follow
    /// any phase; otherwise phases go forward in their command's order.
    pub fn may_follow(self, prev: Phase) -> bool {
        use Phase::*;
        match (prev, self) {
            (_, Planned) | (_, Failed) => true,
            (p, RolledBack) => p != RolledBack,
            (Planned, Provisioning) => true,
            (Provisioning, WaitingReady) => true,
            (WaitingReady, Provisioning) => true, // replacing failed machines
            (WaitingReady, Done) => true,
            (Planned, Cordoning) => true,
            (Cordoning, Draining) => true,
            (Draining, Draining | Soaking | FinalSoak | Done) => true,
            (Soaking, Draining) => true,
            (FinalSoak, Done) => true,
            (Cordoning, DeletingNodes) => true,
            (DeletingNodes, Deprovisioning) => true,
            (Deprovisioning, Done) => true,
            (Planned, Uncordoning) => true,
            (Uncordoning, Cordoning | Done) => true,
            (Planned, UpgradingMasters | UpgradingKubelets | Done) => true,
            (UpgradingMasters, UpgradingKubelets) => true,
            (UpgradingKubelets, Done) => true,
            _ => false,
        }
    }

    /// Whether the operation is over (nothing for a rerun to continue).
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Done | Phase::RolledBack)
    }
}

/// What every operation's record carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpHeader {
    /// The command, as a person would type it: `kbg migrate alpha beta`.
    pub command: String,
    /// Where it stands.
    pub phase: Phase,
    /// Who runs (or last ran) it: `user@host pid N`.
    pub holder: String,
    /// When this run of it started (wall clock).
    pub started_at: Timestamp,
    /// When the record last changed (wall clock).
    pub updated_at: Timestamp,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl OpHeader {
    /// A new record for `command`, in phase `Planned`.
    pub fn new(command: &str, holder: &str) -> Self {
        let now = Timestamp::now();
        OpHeader {
            command: command.to_string(),
            phase: Phase::Planned,
            holder: holder.to_string(),
            started_at: now,
            updated_at: now,
            message: None,
        }
    }

    /// Move to `next`.
    ///
    /// # Panics
    /// In debug builds, when `next` may not follow the current phase: a bug in kbg.
    pub fn go(&mut self, next: Phase) {
        debug_assert!(
            next.may_follow(self.phase),
            "{:?} may not follow {:?}",
            next,
            self.phase
        );
        self.phase = next;
        self.updated_at = Timestamp::now();
        if next != Phase::Failed {
            self.message = None;
        }
    }

    /// Move to `Failed` with `message`.
    pub fn fail(&mut self, message: &str) {
        self.go(Phase::Failed);
        self.message = Some(message.to_string());
    }
}

/// `deploy-pool.<name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// Common fields.
    #[serde(flatten)]
    pub op: OpHeader,
    /// The machines asked for.
    pub machines: Vec<String>,
    /// Machines that failed or never joined, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

/// `migrate.<from>.<to>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateRecord {
    /// Common fields.
    #[serde(flatten)]
    pub op: OpHeader,
    /// Source nodes cordoned for this migration, and whether each was already
    /// unschedulable before (then rollback leaves it cordoned). The same facts are on
    /// each node as an annotation, which is what rollback trusts.
    pub cordoned: BTreeMap<String, bool>,
    /// Source nodes fully drained so far, in order.
    pub drained: Vec<String>,
    /// Pods evicted, over every run of this migration: written whole after each batch,
    /// and kept up while a batch drains (at most once a second), so a run killed
    /// mid-batch loses only the evictions of its last second.
    pub pods_evicted: u64,
    /// PDB refusals (429) retried, over every run.
    pub pdb_retries: u64,
    /// When the final soak started (wall clock), once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_soak_started_at: Option<Timestamp>,
    /// The workloads of the batch being drained (`Deployment default/web`), written
    /// before its drain and cleared once they are Ready again: a rerun after a kill in
    /// between waits for them before it goes on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_ready: Vec<String>,
}

impl MigrateRecord {
    /// The record a run starts from: the recorded one when it is unfinished (a rerun
    /// after a crash continues it), else a fresh one.
    pub fn resume_or_new(prev: Option<MigrateRecord>, command: &str, holder: &str) -> Self {
        match prev {
            Some(mut r) if !r.op.phase.is_finished() => {
                r.op.holder = holder.to_string();
                r
            }
            _ => MigrateRecord {
                op: OpHeader::new(command, holder),
                cordoned: BTreeMap::new(),
                drained: Vec::new(),
                pods_evicted: 0,
                pdb_retries: 0,
                final_soak_started_at: None,
                waiting_ready: Vec::new(),
            },
        }
    }
}

/// `teardown.<name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeardownRecord {
    /// Common fields.
    #[serde(flatten)]
    pub op: OpHeader,
    /// Node objects deleted so far.
    pub nodes_deleted: Vec<String>,
    /// Machines deprovisioned so far.
    pub machines_removed: Vec<String>,
}

/// `rollback.<from>.<to>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// Common fields.
    #[serde(flatten)]
    pub op: OpHeader,
    /// Source nodes uncordoned.
    pub uncordoned: Vec<String>,
    /// Source nodes left cordoned because a person had cordoned them.
    pub left_cordoned: Vec<String>,
    /// Source nodes whose provider's hand-over was undone (Juju: the charm's `resume`),
    /// for pools handed over by their provider.
    #[serde(default)]
    pub handed_back: Vec<String>,
}

/// The key of the control-plane upgrade's [`ControlPlaneRecord`].
pub const CONTROL_PLANE_KEY: &str = "upgrade-control-plane";

/// Where one master stands in an upgrade, in StarlingX's host words
/// (`system kube-host-upgrade-list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostStatus {
    /// Not started.
    Pending,
    /// Its control plane is being upgraded.
    UpgradingControlPlane,
    /// Its control plane's upgrade failed; it still runs the old version.
    UpgradingControlPlaneFailed,
    /// Its control plane runs the new version; its kubelet does not yet.
    UpgradedControlPlane,
    /// Its kubelet is being upgraded (the node is cordoned).
    UpgradingKubelet,
    /// Its kubelet's upgrade failed (the node stays cordoned by kbg).
    UpgradingKubeletFailed,
    /// Control plane and kubelet run the new version.
    Upgraded,
}

impl HostStatus {
    /// The word as stored and shown (`upgrading-kubelet-failed`): its serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Pending => "pending",
            HostStatus::UpgradingControlPlane => "upgrading-control-plane",
            HostStatus::UpgradingControlPlaneFailed => "upgrading-control-plane-failed",
            HostStatus::UpgradedControlPlane => "upgraded-control-plane",
            HostStatus::UpgradingKubelet => "upgrading-kubelet",
            HostStatus::UpgradingKubeletFailed => "upgrading-kubelet-failed",
            HostStatus::Upgraded => "upgraded",
        }
    }
}

/// One master in a [`ControlPlaneRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterRecord {
    /// The node.
    pub node: String,
    /// Where it stands.
    pub status: HostStatus,
    /// How many times its control-plane upgrade was tried, over every run.
    #[serde(default)]
    pub attempts: u32,
    /// Why its last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `upgrade-control-plane`: the in-place upgrade of the masters, StarlingX style.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlPlaneRecord {
    /// Common fields.
    #[serde(flatten)]
    pub op: OpHeader,
    /// `kubeadm`, `manifests` or `charm`.
    pub method: String,
    /// The oldest API server's version when the upgrade started.
    pub from_version: String,
    /// The version the masters move to.
    pub to_version: String,
    /// Where the upgrade stands: `upgrading-second-master-failed`, ….
    pub state: crate::control_plane::UpgradeState,
    /// The masters, in the order kbg upgrades them (the first is kubeadm's `apply`).
    pub masters: Vec<MasterRecord>,
    /// Where etcd was snapshotted before the first master, once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_backup: Option<String>,
    /// `charm`: the control-plane charm was refreshed to the target's channel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub charm_refreshed: bool,
}

impl ControlPlaneRecord {
    /// The master record of `node`.
    pub fn master_mut(&mut self, node: &str) -> Option<&mut MasterRecord> {
        self.masters.iter_mut().find(|m| m.node == node)
    }
}

/// A [`Ledger`] over the state ConfigMap: key `ledger.<key>`, each record carrying its
/// own version counter, so writes to other keys of the ConfigMap never make a provider's
/// compare-and-swap fail.
#[derive(Debug, Clone)]
pub struct StateLedger {
    store: StateStore,
}

#[derive(Clone, Serialize, Deserialize)]
struct LedgerRecord {
    version: u64,
    value: serde_json::Value,
}

impl StateLedger {
    /// A ledger in `store`.
    pub fn new(store: StateStore) -> Self {
        StateLedger { store }
    }

    /// The ConfigMap key of ledger key `key`: `ledger.` and the key with every byte
    /// outside `[-.a-zA-Z0-9]` written `_HH` (ConfigMap keys allow only `[-._a-zA-Z0-9]`),
    /// so `juju/k8s/workers-b` is `ledger.juju_2fk8s_2fworkers-b`, one to one.
    fn key(key: &str) -> kbg_provider::Result<String> {
        let mut out = String::from("ledger.");
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("_{b:02x}"));
            }
        }
        if key.is_empty() || out.len() > 253 {
            return Err(ProviderError::new(
                "ledger",
                ErrorKind::Failed,
                format!("ledger key {key:?} is empty or too long for a ConfigMap key"),
            ));
        }
        Ok(out)
    }

    fn error(e: StateError) -> ProviderError {
        let kind = match &e {
            StateError::Request { source, .. } if crate::retry::is_transient(source) => {
                ErrorKind::Transient
            }
            StateError::Contention { .. } => ErrorKind::Transient,
            _ => ErrorKind::Failed,
        };
        ProviderError::new("ledger", kind, e.to_string()).with_source(e)
    }
}

#[async_trait]
impl Ledger for StateLedger {
    async fn load(&self, key: &str) -> kbg_provider::Result<Option<LedgerEntry>> {
        let k = Self::key(key)?;
        let rec: Option<LedgerRecord> = self.store.get(&k).await.map_err(Self::error)?;
        Ok(rec.map(|r| LedgerEntry {
            value: r.value,
            version: r.version.to_string(),
        }))
    }

    async fn store(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Option<&str>,
    ) -> kbg_provider::Result<String> {
        let k = Self::key(key)?;
        let outcome = self
            .store
            .update(&k, |cur: Option<LedgerRecord>| {
                let cur_version = cur.as_ref().map(|r| r.version.to_string());
                if cur_version.as_deref() != expected {
                    return (cur, Err(()));
                }
                let next = cur.as_ref().map_or(1, |r| r.version + 1);
                (
                    Some(LedgerRecord {
                        version: next,
                        value: value.clone(),
                    }),
                    Ok(next.to_string()),
                )
            })
            .await
            .map_err(Self::error)?;
        outcome.map_err(|()| {
            ProviderError::new(
                "ledger",
                ErrorKind::Transient,
                format!("conflict writing {key}: it changed since it was read"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_status_words_are_their_serde_names() {
        for s in [
            HostStatus::Pending,
            HostStatus::UpgradingControlPlane,
            HostStatus::UpgradingControlPlaneFailed,
            HostStatus::UpgradedControlPlane,
            HostStatus::UpgradingKubelet,
            HostStatus::UpgradingKubeletFailed,
            HostStatus::Upgraded,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn ledger_keys_are_configmap_keys_one_to_one() {
        for (key, stored) in [
            ("metal.hosts", "ledger.metal.hosts"),
            ("juju/k8s/workers-b", "ledger.juju_2fk8s_2fworkers-b"),
            ("a_b", "ledger.a_5fb"),
            ("a_5fb", "ledger.a_5f5fb"),
        ] {
            assert_eq!(StateLedger::key(key).unwrap(), stored);
        }
        assert!(StateLedger::key("").is_err());
        assert!(StateLedger::key(&"x".repeat(300)).is_err());
    }

    #[test]
    fn pool_records_never_reuse_a_name() {
        let mut r = PoolRecord {
            provider: "sim".into(),
            ..Default::default()
        };
        assert_eq!(r.grow_to("beta", 3), ["beta-0", "beta-1", "beta-2"]);
        assert!(r.grow_to("beta", 3).is_empty(), "idempotent");
        r.retire(&["beta-1".to_string()]);
        assert_eq!(r.machines, ["beta-0", "beta-2"]);
        assert_eq!(r.grow_to("beta", 3), ["beta-3"]);
        assert_eq!(r.machines, ["beta-0", "beta-2", "beta-3"]);
        assert_eq!(r.retired, ["beta-1"]);
        // Round trip through JSON, as stored.
        let back: PoolRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    /// Each case: (from, to, allowed).
    #[test]
    fn phase_transitions() {
        use Phase::*;
        for (from, to, ok) in [
            // deploy-pool
            (Planned, Provisioning, true),
            (Provisioning, WaitingReady, true),
            (WaitingReady, Done, true),
            (WaitingReady, Provisioning, true),
            (Planned, WaitingReady, false),
            (Provisioning, Done, false),
            // migrate
            (Planned, Cordoning, true),
            (Cordoning, Draining, true),
            (Draining, Draining, true),
            (Draining, Soaking, true),
            (Soaking, Draining, true),
            (Draining, FinalSoak, true),
            (FinalSoak, Done, true),
            (Draining, Done, true),
            (Planned, Draining, false),
            (Cordoning, Done, false),
            (Soaking, Done, false),
            (Done, Draining, false),
            // teardown
            (Cordoning, DeletingNodes, true),
            (DeletingNodes, Deprovisioning, true),
            (Deprovisioning, Done, true),
            (Planned, DeletingNodes, false),
            (DeletingNodes, Done, false),
            // rollback
            (Planned, Uncordoning, true),
            (Uncordoning, Done, true),
            (Uncordoning, Cordoning, true),
            // anything may fail, be rolled back, or start over
            (Draining, Failed, true),
            (Failed, Planned, true),
            (Done, Planned, true),
            (FinalSoak, RolledBack, true),
            (Done, RolledBack, true),
            (RolledBack, RolledBack, false),
            (Failed, Done, false),
            // upgrade-control-plane
            (Planned, UpgradingMasters, true),
            (UpgradingMasters, UpgradingKubelets, true),
            (UpgradingKubelets, Done, true),
            (Planned, UpgradingKubelets, true),
            (UpgradingMasters, Done, false),
            (Draining, UpgradingMasters, false),
        ] {
            assert_eq!(to.may_follow(from), ok, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_rerun_continues_an_unfinished_migration_and_restarts_a_finished_one() {
        let mut r = MigrateRecord::resume_or_new(None, "kbg migrate a b", "me@h pid 1");
        r.op.go(Phase::Cordoning);
        r.cordoned.insert("a-0".into(), false);
        r.op.go(Phase::Draining);
        r.drained.push("a-0".into());
        r.pods_evicted = 4;
        // Crash, rerun by someone else: continues, counters kept.
        let again = MigrateRecord::resume_or_new(Some(r.clone()), "kbg migrate a b", "you@h pid 2");
        assert_eq!(again.drained, ["a-0"]);
        assert_eq!(again.pods_evicted, 4);
        assert_eq!(again.op.phase, Phase::Draining);
        assert_eq!(again.op.holder, "you@h pid 2");
        // Failed: continues too.
        let mut failed = r.clone();
        failed.op.fail("node a-1 timed out");
        let again = MigrateRecord::resume_or_new(Some(failed), "kbg migrate a b", "x");
        assert_eq!(again.drained, ["a-0"]);
        // Finished: a new run starts from scratch.
        let mut done = r;
        done.op.go(Phase::Done);
        let again = MigrateRecord::resume_or_new(Some(done), "kbg migrate a b", "x");
        assert!(again.drained.is_empty());
        assert_eq!(again.op.phase, Phase::Planned);
    }

    #[test]
    fn records_serialise_flat_with_kebab_phases() {
        let mut r = TeardownRecord {
            op: OpHeader::new("kbg teardown alpha", "me"),
            nodes_deleted: vec!["alpha-0".into()],
            machines_removed: vec![],
        };
        r.op.go(Phase::Cordoning);
        r.op.go(Phase::DeletingNodes);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["phase"], "deleting-nodes");
        assert_eq!(v["command"], "kbg teardown alpha");
        assert_eq!(op_key("migrate", &["alpha", "beta"]), "migrate.alpha.beta");
    }
}
