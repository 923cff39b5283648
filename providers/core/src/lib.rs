//! The contract between kbg and the things that make machines.
//!
//! A *provider* turns a pool spec into machines and back: EC2 instances, Juju units,
//! bare-metal hosts taken from an inventory, Node objects in a simulated cluster, or
//! whatever an external program does. kbg never talks to a cloud directly; it asks a
//! [`Provider`] and then watches the Kubernetes API for the nodes the machines'
//! kubelets register.
//!
//! The rules every provider keeps:
//!
//! - **Idempotent by machine name.** kbg names every machine it wants (`beta-0`,
//!   `beta-1`, …, see [`machine_name`]) and asks for those names. Asking again for a name
//!   that already exists returns the existing machine and creates nothing, so a rerun
//!   after a crash never doubles a pool.
//! - **Machines map to nodes by provider ID.** [`Machine::provider_id`] is what the
//!   node's `spec.providerID` will say (`aws:///us-east-1a/i-0abc…`); where a provider
//!   cannot know it in advance it gives the node name instead ([`Machine::node_name`]).
//! - **Errors are typed.** A [`ProviderError`] says which machine, what the provider
//!   said, and through [`ProviderError::is_retryable`] whether trying again can help.
//! - **Bootstrap data is secret.** Join tokens and rendered user-data travel as
//!   [`Secret`], which has no `Display`, no `Serialize`, and a redacted `Debug`.
//!
//! This crate holds the trait, its types and the bootstrap templates every provider
//! renders ([`bootstrap`]); it knows nothing of Kubernetes clients or of any one
//! provider.

pub mod bootstrap;
mod error;
mod ledger;
mod secret;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use error::{ErrorKind, ProviderError};
pub use ledger::{Ledger, LedgerEntry, MemoryLedger};
pub use secret::Secret;

/// The label kbg puts on every node of a pool it manages: `kbg.io/pool=<pool>`.
pub const POOL_LABEL: &str = "kbg.io/pool";

/// Convenience alias for provider results.
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// The stable name of the `index`-th machine of `pool`: `<pool>-<index>`.
///
/// Names are the idempotency key of [`Provider::provision`]; kbg records which names a
/// pool uses in its state, so a replacement for a failed machine gets a fresh index
/// rather than reusing a name.
pub fn machine_name(pool: &str, index: usize) -> String {
    format!("{pool}-{index}")
}

/// The index in a [`machine_name`] of `pool` (`beta-3` → 3); `None` when `machine` is
/// not `<pool>-<index>` (`beta-x-1` is not pool `beta`'s).
pub fn machine_index(pool: &str, machine: &str) -> Option<usize> {
    machine.strip_prefix(pool)?.strip_prefix('-')?.parse().ok()
}

/// A Kubernetes node taint, as in `Node.spec.taints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// Taint key, e.g. `dedicated`.
    pub key: String,
    /// Taint value; may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

impl fmt::Display for Taint {
    /// The kubelet's `--register-with-taints` form: `key=value:Effect` or `key:Effect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

/// The effect of a [`Taint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Pods that do not tolerate the taint are not scheduled on the node.
    NoSchedule,
    /// The scheduler tries to avoid the node.
    PreferNoSchedule,
    /// Pods that do not tolerate the taint are evicted.
    NoExecute,
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        })
    }
}

/// How new machines join the cluster: the `kubeadm join` parameters.
///
/// Comes from `kbg.yaml` or the environment; the token and the CA hash are secret and
/// only ever reach a rendered bootstrap template.
#[derive(Clone, Debug, Default)]
pub struct JoinConfig {
    /// The API server endpoint a joining kubelet talks to, `host:port`.
    pub api_server_endpoint: String,
    /// The bootstrap token, `abcdef.0123456789abcdef`.
    pub token: Option<Secret>,
    /// `sha256:<hex>` of the cluster CA's public key (`--discovery-token-ca-cert-hash`).
    pub ca_cert_hash: Option<Secret>,
}

/// What a provider is asked to build: one pool, as resolved from `kbg.yaml`.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    /// The pool's name, e.g. `beta`.
    pub name: String,
    /// The kubelet version for the pool's machines, normalised with a leading `v`
    /// (`v1.31.2`).
    pub version: String,
    /// Labels the nodes must carry; includes [`POOL_LABEL`].
    pub labels: BTreeMap<String, String>,
    /// Taints the nodes register with.
    pub taints: Vec<Taint>,
    /// The provider's own settings block from `kbg.yaml` (`aws:`, `juju:`, …), or
    /// `Null`. Each provider parses it into its own typed settings and reports a bad
    /// field as [`ErrorKind::InvalidConfig`] naming `pools.<pool>.<provider>.<field>`.
    pub settings: serde_json::Value,
    /// The pool's `template:` override (a path to a minijinja template), if any.
    pub template: Option<String>,
    /// How machines join the cluster; secret parts stay [`Secret`].
    pub join: JoinConfig,
}

/// Where a machine stands, as its provider sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    /// Being created or booting.
    Pending,
    /// Up; its kubelet may or may not have registered yet.
    Running,
    /// Being removed.
    Stopping,
    /// Removed; kept in a listing only when the provider still reports it.
    Gone,
    /// The provider gave up on it; see [`Machine::details`] for why.
    Failed,
}

/// One machine of a pool, as its provider reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// kbg's stable name for it (`beta-0`), the idempotency key.
    pub name: String,
    /// The pool it belongs to.
    pub pool: String,
    /// What the node's `spec.providerID` is or will be, when the provider knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The node name its kubelet registers, when the provider knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Where it stands.
    pub state: MachineState,
    /// An address kbg or a person can reach it at, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Provider facts worth showing (`instance-type`, `zone`, `unit`, …). Never secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl Machine {
    /// Whether `node` (by its `spec.providerID` and name) is this machine's node.
    ///
    /// Provider IDs are compared first; the node name is the fallback for providers
    /// that cannot know the provider ID in advance.
    pub fn matches_node(&self, node_provider_id: Option<&str>, node_name: &str) -> bool {
        match (&self.provider_id, node_provider_id) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => self.node_name.as_deref() == Some(node_name),
        }
    }
}

/// The outcome of [`Provider::provision`]: the machines that exist, and those that
/// could not be made.
#[derive(Debug, Default)]
pub struct ProvisionReport {
    /// Every requested machine that exists now (created by this call or before it).
    pub machines: Vec<Machine>,
    /// One error per requested machine that could not be made; each names its machine.
    pub failed: Vec<ProviderError>,
}

/// The outcome of [`Provider::deprovision`].
#[derive(Debug, Default)]
pub struct DeprovisionReport {
    /// Names of the machines that are gone now (including those already gone).
    pub removed: Vec<String>,
    /// One error per machine that could not be removed; each names its machine.
    pub failed: Vec<ProviderError>,
}

/// How kbg's drain flags reach a provider's own hand-over ([`Provider::hand_over`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandOverOptions {
    /// kbg's `--delete-emptydir-data` (kubectl drain's flag of the same name; the Juju
    /// worker charm's `pause` calls it `delete-local-data`): also evict pods with
    /// `emptyDir` volumes.
    pub delete_emptydir_data: bool,
    /// kbg's `--force`: also evict pods no controller manages.
    pub force: bool,
}

/// The outcome of [`Provider::hand_over`].
#[derive(Debug, Default)]
pub struct HandOverReport {
    /// Names of the machines the provider handed over (its drain finished on them).
    pub handed_over: Vec<String>,
    /// One error per machine it could not hand over, with the provider's own words.
    pub failed: Vec<ProviderError>,
}

/// A command to run on a machine, for the control-plane path.
#[derive(Clone, Debug)]
pub struct RemoteCommand {
    /// A POSIX shell script, run as `sh -c` (or the provider's equivalent).
    pub script: String,
    /// How long it may run, in wall-clock seconds.
    pub timeout_secs: u64,
}

/// What a [`RemoteCommand`] printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The exit status; 0 is success.
    pub exit_code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// A source of machines for one pool.
///
/// A provider value is built for one pool from that pool's [`PoolSpec::settings`] (each
/// provider crate has its own constructor, which validates the settings before anything
/// is touched). Every method is safe to call again after a crash.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's name as written in `kbg.yaml` (`aws`, `juju`, `metal`, `exec`, `sim`).
    fn kind(&self) -> &str;

    /// Make sure a machine exists for each of `names`, creating only the missing ones.
    ///
    /// Returns once each machine is created and running (or has failed), not when its
    /// node is Ready: kbg waits for that on the Kubernetes API.
    ///
    /// # Errors
    /// A per-machine failure goes into [`ProvisionReport::failed`]; an `Err` means the
    /// whole request failed (bad credentials, unreachable API) and nothing was created.
    async fn provision(&self, pool: &PoolSpec, names: &[String]) -> Result<ProvisionReport>;

    /// Every machine of `pool` the provider knows of, except those already gone.
    ///
    /// # Errors
    /// When the provider cannot be asked.
    async fn list(&self, pool: &PoolSpec) -> Result<Vec<Machine>>;

    /// Remove `machines` and wait until they are gone. Machines already gone are a
    /// success.
    ///
    /// kbg calls this only after the machines' nodes are drained and deleted.
    ///
    /// # Errors
    /// A per-machine failure goes into [`DeprovisionReport::failed`]; an `Err` means the
    /// whole request failed.
    async fn deprovision(&self, pool: &PoolSpec, machines: &[Machine])
    -> Result<DeprovisionReport>;

    /// Whether this pool asks for the provider's own hand-over ([`Provider::hand_over`])
    /// instead of kbg's drain when it is the source of a migration (Juju:
    /// `use_charm_pause: true`). Default: `false`.
    fn hands_over(&self) -> bool {
        false
    }

    /// Move the workloads off `machines` with the provider's own drain: the Juju worker
    /// charm's `pause` action, which runs `kubectl drain` on its node. kbg has already
    /// cordoned their nodes, and checks afterwards with its own drain that nothing is left
    /// and that no PodDisruptionBudget went below its desired healthy count meanwhile.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] where the provider has no drain of its own (the
    /// default); a per-machine failure goes into [`HandOverReport::failed`]; an `Err`
    /// means the hand-over could not be started.
    async fn hand_over(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
        options: &HandOverOptions,
    ) -> Result<HandOverReport> {
        let _ = (pool, machines, options);
        Err(ProviderError::unsupported(
            self.kind(),
            "this provider has no drain of its own; kbg drains the pool itself",
        ))
    }

    /// Undo [`Provider::hand_over`] on `machines` whose nodes kbg has uncordoned again
    /// (`kbg rollback`): the Juju worker charm's `resume` action, so the charm no longer
    /// reports its unit paused. Called only for pools whose [`Provider::hands_over`] is
    /// `true`, and only for the machines whose nodes the rollback uncordoned.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] where the provider has no hand-over (the default); a
    /// per-machine failure goes into [`HandOverReport::failed`]; an `Err` means the
    /// provider could not be asked.
    async fn hand_back(&self, pool: &PoolSpec, machines: &[Machine]) -> Result<HandOverReport> {
        let _ = (pool, machines);
        Err(ProviderError::unsupported(
            self.kind(),
            "this provider has no hand-over of its own to undo",
        ))
    }

    /// Run `command` on `machine` (control-plane upgrades).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] where the provider cannot run commands; otherwise when
    /// the command could not be started or did not finish in time. A command that ran
    /// and failed is an `Ok` with a non-zero [`CommandOutput::exit_code`].
    async fn run_command(
        &self,
        pool: &PoolSpec,
        machine: &Machine,
        command: &RemoteCommand,
    ) -> Result<CommandOutput>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(provider_id: Option<&str>, node_name: Option<&str>) -> Machine {
        Machine {
            name: "beta-0".into(),
            pool: "beta".into(),
            provider_id: provider_id.map(Into::into),
            node_name: node_name.map(Into::into),
            state: MachineState::Running,
            address: None,
            details: BTreeMap::new(),
        }
    }

    #[test]
    fn machines_match_nodes_by_provider_id_first() {
        let m = machine(Some("aws:///us-east-1a/i-1"), Some("ip-10-0-0-1"));
        assert!(m.matches_node(Some("aws:///us-east-1a/i-1"), "whatever"));
        assert!(!m.matches_node(Some("aws:///us-east-1a/i-2"), "ip-10-0-0-1"));
        // A node that has no provider ID yet falls back to its name.
        assert!(m.matches_node(None, "ip-10-0-0-1"));
        let by_name = machine(None, Some("worker-3"));
        assert!(by_name.matches_node(Some("metal://worker-3"), "worker-3"));
        assert!(!by_name.matches_node(None, "worker-4"));
    }

    #[test]
    fn taints_print_in_kubelet_form() {
        let t = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: TaintEffect::NoSchedule,
        };
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        let t = Taint {
            key: "spot".into(),
            value: None,
            effect: TaintEffect::NoExecute,
        };
        assert_eq!(t.to_string(), "spot:NoExecute");
    }

    #[test]
    fn machine_names_are_pool_and_index() {
        assert_eq!(machine_name("beta", 3), "beta-3");
    }
}
