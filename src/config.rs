//! `kbg.yaml`: the cluster's settings and its pools, parsed and validated in one pass.
//!
//! The file is read with serde-saphyr into a `serde_json::Value` and then walked field by
//! field, so that every problem is found in one run and reported as one line naming the
//! field's full path and the fix (`pools.beta.version: "1.x" is not a Kubernetes version;
//! accepted forms: …`). Unknown fields are errors too (with a suggestion when a known
//! field is close): a typo in `kbg.yaml` must not silently become a default.
//!
//! ```yaml
//! cluster:
//!   kubeconfig: ~/.kube/prod.yaml   # default: KUBECONFIG, ~/.kube/config, in-cluster
//!   context: prod                   # default: the kubeconfig's current context
//!   state_namespace: kube-system    # where the state ConfigMap and the Leases live
//!   state_configmap: kbg-state
//!   lease_duration: 15s
//!   join:                           # how new machines join (providers that bootstrap)
//!     endpoint: 10.0.0.10:6443
//!     token: …                      # better: KBG_JOIN_TOKEN in the environment
//!     ca_cert_hash: sha256:…        # or KBG_JOIN_CA_CERT_HASH
//! migration:                        # defaults for every `kbg migrate`
//!   batch_size: 1                   # nodes, or a percentage: "25%"
//! control_plane:                    # masters, upgraded in place (`kbg upgrade-control-plane`)
//!   method: kubeadm                 # kubeadm | manifests | charm
//!   provider: metal                 # whose run-command reaches the masters
//!   metal: { … }                    # that provider's own block
//!   available_versions: [v1.33.4, v1.34.1]   # what `kbg plan` offers
//! pools:
//!   alpha:
//!     provider: aws
//!     selector: eks.amazonaws.com/nodegroup=alpha   # adopt a pool kbg did not create
//!     aws: { … }                    # the provider's own settings
//!   beta:
//!     provider: aws
//!     version: v1.31.2
//!     count: 3
//!     labels: { tier: web }
//!     taints: [ "dedicated=web:NoSchedule" ]
//!     template: templates/my-cloud-init.yaml.j2
//!     migration: { batch_size: 25%, final_soak: 1h }  # when this pool is the source
//!     aws: { … }
//! ```
//!
//! Secrets (the join token and CA hash) are kept as [`kbg_provider::Secret`] from the
//! moment they are read, and no error message ever quotes them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kbg_provider::{POOL_LABEL, Secret, Taint, TaintEffect};
use serde_json::{Map, Value};

use crate::plan::BatchSize;
use crate::selector::{
    Selector, validate_dns_label, validate_dns_subdomain, validate_label_value,
    validate_qualified_name,
};
use crate::version::{ACCEPTED_FORMS as VERSION_FORMS, KubeVersion};

/// The config file read when neither `--config` nor `KBG_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "kbg.yaml";
/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "KBG_CONFIG";
/// The environment variables that carry the join settings (and override the file).
pub const JOIN_ENDPOINT_ENV: &str = "KBG_JOIN_ENDPOINT";
/// See [`JOIN_ENDPOINT_ENV`].
pub const JOIN_TOKEN_ENV: &str = "KBG_JOIN_TOKEN";
/// See [`JOIN_ENDPOINT_ENV`].
pub const JOIN_CA_CERT_HASH_ENV: &str = "KBG_JOIN_CA_CERT_HASH";

/// The providers kbg knows by name, whether or not this build includes them.
pub const PROVIDERS: &[&str] = &["sim", "aws", "juju", "metal", "exec"];

/// One problem in `kbg.yaml`: the field's full path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The full path of the field (`pools.beta.version`), or empty for the file as a whole.
    pub field: String,
    /// What is wrong, and the fix.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in a config file. Displays as one line per problem, each prefixed
/// with the file's path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub path: PathBuf,
    /// The problems, in file order.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {issue}", self.path.display())?;
        }
        Ok(())
    }
}

/// The migration knobs as a file gives them: every one optional; flags and the
/// environment override them (see `settings`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationKnobs {
    /// Nodes per batch.
    pub batch_size: Option<BatchSize>,
    /// Wait after each batch but the last (cluster time).
    pub batch_soak: Option<Duration>,
    /// Wait after the whole pool is drained, nodes kept cordoned (cluster time).
    pub final_soak: Option<Duration>,
    /// Evictions in flight at once, across the batch.
    pub max_concurrent_evictions: Option<usize>,
    /// Wait before retrying a pod whose PDB refused (429).
    pub eviction_retry_interval: Option<Duration>,
    /// Deadline per node.
    pub drain_timeout: Option<Duration>,
    /// Deadline for the whole migration.
    pub timeout: Option<Duration>,
    /// Deadline for the moved workloads to be Ready again after a batch.
    pub ready_timeout: Option<Duration>,
    /// Grace period given to evicted pods, seconds; absent = each pod's own.
    pub grace_period: Option<i64>,
    /// Evict pods that have no controller (kubectl `--force`).
    pub force: Option<bool>,
    /// Evict pods with emptyDir volumes (kubectl `--delete-emptydir-data`).
    pub delete_emptydir_data: Option<bool>,
    /// Only evict pods matching this selector (kubectl `--pod-selector`).
    pub pod_selector: Option<Selector>,
    /// Wait until the moved workloads are Ready again before the next batch.
    pub wait_for_ready: Option<bool>,
}

impl MigrationKnobs {
    /// `self` where set, else `fallback`.
    pub fn or(&self, fallback: &MigrationKnobs) -> MigrationKnobs {
        MigrationKnobs {
            batch_size: self.batch_size.or(fallback.batch_size),
            batch_soak: self.batch_soak.or(fallback.batch_soak),
            final_soak: self.final_soak.or(fallback.final_soak),
            max_concurrent_evictions: self
                .max_concurrent_evictions
                .or(fallback.max_concurrent_evictions),
            eviction_retry_interval: self
                .eviction_retry_interval
                .or(fallback.eviction_retry_interval),
            drain_timeout: self.drain_timeout.or(fallback.drain_timeout),
            timeout: self.timeout.or(fallback.timeout),
            ready_timeout: self.ready_timeout.or(fallback.ready_timeout),
            grace_period: self.grace_period.or(fallback.grace_period),
            force: self.force.or(fallback.force),
            delete_emptydir_data: self.delete_emptydir_data.or(fallback.delete_emptydir_data),
            pod_selector: self
                .pod_selector
                .clone()
                .or_else(|| fallback.pod_selector.clone()),
            wait_for_ready: self.wait_for_ready.or(fallback.wait_for_ready),
        }
    }
}

/// How new machines join the cluster, as the file gives it.
#[derive(Clone, Debug, Default)]
pub struct JoinSettings {
    /// `host:port` of the API server a joining kubelet talks to.
    pub endpoint: Option<String>,
    /// The bootstrap token (secret).
    pub token: Option<Secret>,
    /// `sha256:<hex>` of the cluster CA's public key (secret).
    pub ca_cert_hash: Option<Secret>,
}

/// The `cluster:` block.
#[derive(Clone, Debug, Default)]
pub struct ClusterSettings {
    /// The kubeconfig file to use.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    pub context: Option<String>,
    /// The namespace of kbg's state ConfigMap and Leases.
    pub state_namespace: Option<String>,
    /// The name of kbg's state ConfigMap.
    pub state_configmap: Option<String>,
    /// How long a Lease stays valid without renewal (wall time).
    pub lease_duration: Option<Duration>,
    /// Join settings.
    pub join: JoinSettings,
}

/// How kbg tells which nodes make up a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Nodes labelled `kbg.io/pool=<pool>`: the pools kbg deploys.
    PoolLabel,
    /// Nodes matching a selector: a pool kbg adopted.
    Selector(Selector),
}

/// One pool of `pools:`.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The pool's name (the key under `pools:`).
    pub name: String,
    /// The provider's name, one of [`PROVIDERS`].
    pub provider: String,
    /// The provider's own block (`sim:`, `aws:` …), or `Null`.
    pub settings: Value,
    /// The kubelet version of the pool's machines.
    pub version: Option<KubeVersion>,
    /// How many machines the pool has.
    pub count: Option<usize>,
    /// Labels for the nodes, including `kbg.io/pool=<name>`.
    pub labels: BTreeMap<String, String>,
    /// Taints the nodes register with.
    pub taints: Vec<Taint>,
    /// How the pool's nodes are found.
    pub membership: Membership,
    /// A bootstrap template overriding the provider's default.
    pub template: Option<PathBuf>,
    /// Migration knobs used when this pool is the source of a migration.
    pub migration: MigrationKnobs,
}

impl PoolConfig {
    /// The label selector that lists this pool's nodes.
    pub fn selector(&self) -> Selector {
        match &self.membership {
            Membership::PoolLabel => Selector::equals(POOL_LABEL, &self.name),
            Membership::Selector(s) => s.clone(),
        }
    }

    /// A pool known only by its name (no `kbg.yaml`, or a pool absent from it): nodes
    /// labelled `kbg.io/pool=<name>`, no provider.
    pub fn by_label(name: &str) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            provider: String::new(),
            settings: Value::Null,
            version: None,
            count: None,
            labels: BTreeMap::from([(POOL_LABEL.to_string(), name.to_string())]),
            taints: Vec::new(),
            membership: Membership::PoolLabel,
            template: None,
            migration: MigrationKnobs::default(),
        }
    }
}

/// How the masters are upgraded in place (`control_plane.method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpMethod {
    /// `kubeadm upgrade apply` on the first master, `kubeadm upgrade node` on the others,
    /// kubeadm and kubelet packages through the host's package manager.
    Kubeadm,
    /// Back up `/etc/kubernetes/manifests`, rewrite the control-plane images' tags, let
    /// the kubelet restart the static pods (CoreOS style).
    Manifests,
    /// `juju refresh` of the control-plane charm, then its `upgrade` action unit by unit
    /// (Charmed Kubernetes).
    Charm,
}

impl CpMethod {
    /// The names `control_plane.method` accepts.
    pub const NAMES: &'static str = "kubeadm, manifests, charm";
}

impl fmt::Display for CpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpMethod::Kubeadm => "kubeadm",
            CpMethod::Manifests => "manifests",
            CpMethod::Charm => "charm",
        })
    }
}

/// How the kubeadm, kubectl and kubelet packages are installed on a master
/// (`control_plane.package_manager`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageManager {
    /// Debian and Ubuntu: `apt-get install kubelet=1.34.1-*` from pkgs.k8s.io.
    Apt,
    /// RHEL 7 style: `yum install kubelet-1.34.1`.
    Yum,
    /// Fedora and RHEL 8+: `dnf install kubelet-1.34.1`.
    Dnf,
    /// CoreOS: the kubelet's version is `KUBELET_IMAGE_TAG` in its systemd unit
    /// (kubelet-wrapper); no kubeadm.
    KubeletWrapper,
}

impl PackageManager {
    /// The names `control_plane.package_manager` accepts.
    pub const NAMES: &'static str = "apt, yum, dnf, kubelet-wrapper";
}

/// The `control_plane:` block: how kbg reaches and upgrades the masters. Every field is
/// optional in the file; `kbg upgrade-control-plane` needs `method` (and `provider`,
/// except for `charm`, whose provider is `juju`); `kbg plan` needs none of it.
#[derive(Clone, Debug, Default)]
pub struct ControlPlaneConfig {
    /// The upgrade method.
    pub method: Option<CpMethod>,
    /// The provider whose run-command reaches the masters, one of [`PROVIDERS`].
    pub provider: Option<String>,
    /// That provider's own block (`metal:`, `juju:` …), or `Null`.
    pub settings: Value,
    /// Versions the masters may move to, for `kbg plan` to offer (sorted, no duplicates).
    pub available_versions: Vec<KubeVersion>,
    /// How kubeadm and kubelet packages are installed.
    pub package_manager: Option<PackageManager>,
    /// Snapshot etcd before the first master (where the method can).
    pub etcd_backup: Option<bool>,
    /// Where backups go on the masters (etcd snapshots, copies of the manifests).
    pub backup_dir: Option<String>,
    /// Where the static pod manifests are on the masters.
    pub manifests_dir: Option<String>,
    /// `charm`: the etcd application whose `snapshot` action backs etcd up.
    pub etcd_application: Option<String>,
    /// How long each master gets to come back after its upgrade (cluster time).
    pub master_timeout: Option<Duration>,
    /// How long one command may run on a master (wall time).
    pub command_timeout: Option<Duration>,
    /// The pause before repeating a secondary master's failed upgrade (cluster time).
    pub retry_pause: Option<Duration>,
    /// How many times a secondary master's failed upgrade is repeated.
    pub retries: Option<u32>,
    /// Scripts replacing the shipped `templates/cp-*.sh.j2`, by step: `etcd_backup`,
    /// `first_master`, `other_masters`, `kubelet`.
    pub templates: BTreeMap<String, PathBuf>,
}

/// The steps whose scripts `control_plane.templates` may replace.
pub const CP_TEMPLATE_STEPS: &[&str] = &["etcd_backup", "first_master", "other_masters", "kubelet"];

/// A parsed and validated `kbg.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Where it was read from (`None`: no file, all defaults).
    pub path: Option<PathBuf>,
    /// The `cluster:` block.
    pub cluster: ClusterSettings,
    /// The `control_plane:` block.
    pub control_plane: ControlPlaneConfig,
    /// The top-level `migration:` defaults.
    pub migration: MigrationKnobs,
    /// The pools, by name.
    pub pools: BTreeMap<String, PoolConfig>,
}

impl Config {
    /// Read and validate the file at `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] with one issue when the file cannot be read, or every problem
    /// found in it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            issues: vec![ConfigIssue {
                field: String::new(),
                message: format!(
                    "cannot be read: {e}; name the file with --config or {CONFIG_ENV}"
                ),
            }],
        })?;
        let mut cfg = Config::parse(&text).map_err(|issues| ConfigError {
            path: path.to_path_buf(),
            issues,
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parse and validate `text`.
    ///
    /// # Errors
    /// Every problem found, in file order.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigIssue>> {
        let value: Value = serde_saphyr::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("").trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            vec![ConfigIssue {
                field: String::new(),
                message: format!("is not valid YAML: {first}"),
            }]
        })?;
        let mut w = Walker { issues: Vec::new() };
        let cfg = w.config(&value);
        if w.issues.is_empty() {
            Ok(cfg)
        } else {
            Err(w.issues)
        }
    }

    /// The pool `name`.
    ///
    /// # Errors
    /// One line naming the pool and the pools the file has, for exit code 2.
    pub fn pool(&self, name: &str) -> Result<&PoolConfig, String> {
        self.pools.get(name).ok_or_else(|| {
            let file = self.path.as_ref().map_or_else(
                || DEFAULT_CONFIG_PATH.to_string(),
                |p| p.display().to_string(),
            );
            if self.pools.is_empty() {
                format!("pool {name:?} is not defined: {file} has no pools; add it under pools:")
            } else {
                let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
                format!(
                    "pool {name:?} is not defined in {file}; its pools are: {}",
                    known.join(", ")
                )
            }
        })
    }
}

struct Walker {
    issues: Vec<ConfigIssue>,
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

const TOP_FIELDS: &[&str] = &["cluster", "control_plane", "migration", "pools"];
const CONTROL_PLANE_FIELDS: &[&str] = &[
    "method",
    "provider",
    "available_versions",
    "package_manager",
    "etcd_backup",
    "backup_dir",
    "manifests_dir",
    "etcd_application",
    "master_timeout",
    "command_timeout",
    "retry_pause",
    "retries",
    "templates",
    "sim",
    "aws",
    "juju",
    "metal",
    "exec",
];
const CLUSTER_FIELDS: &[&str] = &[
    "kubeconfig",
    "context",
    "state_namespace",
    "state_configmap",
    "lease_duration",
    "join",
];
const JOIN_FIELDS: &[&str] = &["endpoint", "token", "ca_cert_hash"];
const MIGRATION_FIELDS: &[&str] = &[
    "batch_size",
    "batch_soak",
    "final_soak",
    "max_concurrent_evictions",
    "eviction_retry_interval",
    "drain_timeout",
    "timeout",
    "ready_timeout",
    "grace_period",
    "force",
    "delete_emptydir_data",
    "pod_selector",
    "wait_for_ready",
];
const POOL_FIELDS: &[&str] = &[
    "provider",
    "version",
    "count",
    "labels",
    "taints",
    "selector",
    "template",
    "migration",
    "sim",
    "aws",
    "juju",
    "metal",
    "exec",
];
const TAINT_FIELDS: &[&str] = &["key", "value", "effect"];

impl Walker {
    fn issue(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `v` as a mapping whose keys are all in `allowed`; unknown keys are reported.
    /// `Null` is an empty mapping.
    fn mapping<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        allowed: Option<&[&str]>,
    ) -> Option<&'v Map<String, Value>> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let m = match v {
            Value::Object(m) => m,
            Value::Null => EMPTY.get_or_init(Map::new),
            other => {
                let field = if path.is_empty() { "(the file)" } else { path };
                self.issue(field, format!("must be a mapping, not {}", describe(other)));
                return None;
            }
        };
        if let Some(allowed) = allowed {
            for k in m.keys() {
                if !allowed.contains(&k.as_str()) {
                    let hint = allowed
                        .iter()
                        .map(|a| (strsim::jaro_winkler(a, k), a))
                        .filter(|(score, _)| *score > 0.8)
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .map(|(_, a)| format!("; did you mean {a}?"))
                        .unwrap_or_else(|| format!("; known fields: {}", allowed.join(", ")));
                    self.issue(join(path, k), format!("unknown field{hint}"));
                }
            }
        }
        Some(m)
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.issue(path, "is empty; remove it or give a value");
                None
            }
            other => {
                self.issue(path, format!("must be a string, not {}", describe(other)));
                None
            }
        }
    }

    /// A secret string: never quoted in messages.
    fn secret(&mut self, v: &Value, path: &str) -> Option<Secret> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            Value::String(_) => {
                self.issue(path, "is empty; remove it or give a value");
                None
            }
            other => {
                self.issue(path, format!("must be a string, not {}", describe(other)));
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.issue(
                    path,
                    format!("must be true or false, not {}", describe(other)),
                );
                None
            }
        }
    }

    fn integer(&mut self, v: &Value, path: &str, min: i64) -> Option<i64> {
        match v.as_i64() {
            Some(n) if n >= min => Some(n),
            Some(n) => {
                self.issue(path, format!("{n} is too small; it must be at least {min}"));
                None
            }
            None => {
                let what = match v {
                    Value::Number(n) => format!("{n} is not a whole number"),
                    other => format!("must be a whole number, not {}", describe(other)),
                };
                self.issue(path, what);
                None
            }
        }
    }

    fn duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        match v {
            Value::String(s) => match crate::duration::parse(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.issue(path, e);
                    None
                }
            },
            Value::Number(n) => {
                self.issue(
                    path,
                    format!("{n} has no unit; write it with one, such as \"{n}s\" or \"{n}m\""),
                );
                None
            }
            other => {
                self.issue(
                    path,
                    format!(
                        "must be a duration such as 30s, 5m or 1h30m, not {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn config(&mut self, v: &Value) -> Config {
        let mut cfg = Config::default();
        let Some(top) = self.mapping(v, "", Some(TOP_FIELDS)) else {
            return cfg;
        };
        if let Some(c) = top.get("cluster") {
            cfg.cluster = self.cluster(c, "cluster");
        }
        if let Some(m) = top.get("migration") {
            cfg.migration = self.migration(m, "migration");
        }
        if let Some(c) = top.get("control_plane") {
            cfg.control_plane = self.control_plane(c, "control_plane");
        }
        if let Some(p) = top.get("pools")
            && let Some(pools) = self.mapping(p, "pools", None)
        {
            for (name, pv) in pools {
                let path = format!("pools.{name}");
                if let Err(e) = validate_dns_label(name) {
                    self.issue(
                        &path,
                        format!(
                            "the pool name {e}; pool names are DNS labels such as beta or workers-2"
                        ),
                    );
                    continue;
                }
                if let Some(pool) = self.pool(name, pv, &path) {
                    cfg.pools.insert(name.clone(), pool);
                }
            }
        }
        cfg
    }

    fn cluster(&mut self, v: &Value, path: &str) -> ClusterSettings {
        let mut c = ClusterSettings::default();
        let Some(m) = self.mapping(v, path, Some(CLUSTER_FIELDS)) else {
            return c;
        };
        if let Some(x) = m.get("kubeconfig") {
            c.kubeconfig = self.string(x, &join(path, "kubeconfig")).map(PathBuf::from);
        }
        if let Some(x) = m.get("context") {
            c.context = self.string(x, &join(path, "context"));
        }
        if let Some(x) = m.get("state_namespace") {
            let f = join(path, "state_namespace");
            if let Some(s) = self.string(x, &f) {
                match validate_dns_label(&s) {
                    Ok(()) => c.state_namespace = Some(s),
                    Err(e) => self.issue(f, format!("the namespace {s:?} {e}")),
                }
            }
        }
        if let Some(x) = m.get("state_configmap") {
            let f = join(path, "state_configmap");
            if let Some(s) = self.string(x, &f) {
                match validate_dns_subdomain(&s) {
                    Ok(()) => c.state_configmap = Some(s),
                    Err(e) => self.issue(f, format!("the ConfigMap name {s:?} {e}")),
                }
            }
        }
        if let Some(x) = m.get("lease_duration") {
            let f = join(path, "lease_duration");
            if let Some(d) = self.duration(x, &f) {
                if d < Duration::from_secs(2) {
                    self.issue(f, "must be at least 2s");
                } else {
                    c.lease_duration = Some(d);
                }
            }
        }
        if let Some(x) = m.get("join") {
            let jp = join(path, "join");
            if let Some(j) = self.mapping(x, &jp, Some(JOIN_FIELDS)) {
                if let Some(e) = j.get("endpoint") {
                    let f = join(&jp, "endpoint");
                    if let Some(s) = self.string(e, &f) {
                        match check_endpoint(&s) {
                            Ok(()) => c.join.endpoint = Some(s),
                            Err(e) => self.issue(f, e),
                        }
                    }
                }
                if let Some(t) = j.get("token") {
                    let f = join(&jp, "token");
                    if let Some(s) = self.secret(t, &f) {
                        match check_token(s.expose()) {
                            Ok(()) => c.join.token = Some(s),
                            Err(e) => self.issue(f, e),
                        }
                    }
                }
                if let Some(h) = j.get("ca_cert_hash") {
                    let f = join(&jp, "ca_cert_hash");
                    if let Some(s) = self.secret(h, &f) {
                        match check_ca_cert_hash(s.expose()) {
                            Ok(()) => c.join.ca_cert_hash = Some(s),
                            Err(e) => self.issue(f, e),
                        }
                    }
                }
            }
        }
        c
    }

    fn migration(&mut self, v: &Value, path: &str) -> MigrationKnobs {
        let mut k = MigrationKnobs::default();
        let Some(m) = self.mapping(v, path, Some(MIGRATION_FIELDS)) else {
            return k;
        };
        if let Some(x) = m.get("batch_size") {
            let f = join(path, "batch_size");
            let s = match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                other => {
                    self.issue(
                        &f,
                        format!(
                            "must be a node count or a percentage such as 25%, not {}",
                            describe(other)
                        ),
                    );
                    None
                }
            };
            if let Some(s) = s {
                match s.parse::<BatchSize>() {
                    Ok(b) => k.batch_size = Some(b),
                    Err(e) => self.issue(
                        f,
                        format!("{:?} {}; accepted forms: a node count such as 3, or a percentage from 1% to 100% such as 25%", e.value, e.problem),
                    ),
                }
            }
        }
        for (name, slot) in [
            ("batch_soak", &mut k.batch_soak),
            ("final_soak", &mut k.final_soak),
            ("drain_timeout", &mut k.drain_timeout),
            ("timeout", &mut k.timeout),
            ("ready_timeout", &mut k.ready_timeout),
        ] {
            if let Some(x) = m.get(name) {
                *slot = self.duration(x, &join(path, name));
            }
        }
        if let Some(x) = m.get("eviction_retry_interval") {
            let f = join(path, "eviction_retry_interval");
            if let Some(d) = self.duration(x, &f) {
                if d.is_zero() {
                    self.issue(f, "must be longer than 0s (kubectl drain waits 5s)");
                } else {
                    k.eviction_retry_interval = Some(d);
                }
            }
        }
        if let Some(x) = m.get("max_concurrent_evictions") {
            k.max_concurrent_evictions = self
                .integer(x, &join(path, "max_concurrent_evictions"), 1)
                .map(|n| n as usize);
        }
        if let Some(x) = m.get("grace_period") {
            k.grace_period = self.integer(x, &join(path, "grace_period"), 0);
        }
        for (name, slot) in [
            ("force", &mut k.force),
            ("delete_emptydir_data", &mut k.delete_emptydir_data),
            ("wait_for_ready", &mut k.wait_for_ready),
        ] {
            if let Some(x) = m.get(name) {
                *slot = self.boolean(x, &join(path, name));
            }
        }
        if let Some(x) = m.get("pod_selector") {
            let f = join(path, "pod_selector");
            if let Some(s) = self.string(x, &f) {
                match Selector::parse(&s) {
                    Ok(sel) => k.pod_selector = Some(sel),
                    Err(e) => self.issue(f, e),
                }
            }
        }
        k
    }

    /// A version string, as in `pools.<pool>.version`.
    fn version(&mut self, v: &Value, path: &str) -> Option<KubeVersion> {
        match v {
            Value::String(s) => {
                match KubeVersion::parse(s) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.issue(
                        path,
                        format!("{:?} is not a Kubernetes version: {}; accepted forms: {VERSION_FORMS}", e.input, e.reason),
                    );
                        None
                    }
                }
            }
            Value::Number(n) => {
                self.issue(
                    path,
                    format!("{n} is a number; write the version as a string such as \"v1.31.2\" (YAML reads 1.30 as 1.3); accepted forms: {VERSION_FORMS}"),
                );
                None
            }
            other => {
                self.issue(
                    path,
                    format!(
                        "must be a version string such as v1.31.2, not {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn control_plane(&mut self, v: &Value, path: &str) -> ControlPlaneConfig {
        let mut c = ControlPlaneConfig::default();
        let Some(m) = self.mapping(v, path, Some(CONTROL_PLANE_FIELDS)) else {
            return c;
        };
        if let Some(x) = m.get("method") {
            let f = join(path, "method");
            if let Some(s) = self.string(x, &f) {
                match s.as_str() {
                    "kubeadm" => c.method = Some(CpMethod::Kubeadm),
                    "manifests" => c.method = Some(CpMethod::Manifests),
                    "charm" => c.method = Some(CpMethod::Charm),
                    other => self.issue(
                        f,
                        format!("{other:?} is not a method; one of: {}", CpMethod::NAMES),
                    ),
                }
            }
        }
        if let Some(x) = m.get("provider") {
            let f = join(path, "provider");
            if let Some(p) = self.string(x, &f) {
                if PROVIDERS.contains(&p.as_str()) {
                    c.provider = Some(p);
                } else {
                    self.issue(
                        f,
                        format!("{p:?} is not a provider; one of: {}", PROVIDERS.join(", ")),
                    );
                }
            }
        }
        if c.method == Some(CpMethod::Charm) && c.provider.is_none() {
            c.provider = Some("juju".into());
        }
        if c.method == Some(CpMethod::Charm)
            && let Some(p) = c.provider.as_deref().filter(|p| *p != "juju")
        {
            self.issue(
                join(path, "provider"),
                format!(
                    "the charm method upgrades masters through Juju; set provider: juju (not {p})"
                ),
            );
        }
        let provider = c.provider.clone().unwrap_or_default();
        for p in PROVIDERS {
            if let Some(block) = m.get(*p) {
                let f = join(path, p);
                if provider == *p {
                    if matches!(block, Value::Object(_) | Value::Null) {
                        c.settings = block.clone();
                    } else {
                        self.issue(
                            f,
                            format!(
                                "must be a mapping of the {p} provider's settings, not {}",
                                describe(block)
                            ),
                        );
                    }
                } else {
                    self.issue(
                        f,
                        format!(
                            "is for the {p} provider but control_plane.provider is {}; remove the block or set provider: {p}",
                            if provider.is_empty() { "not set" } else { &provider }
                        ),
                    );
                }
            }
        }
        if let Some(x) = m.get("available_versions") {
            let f = join(path, "available_versions");
            match x {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(v) = self.version(item, &format!("{f}[{i}]")) {
                            c.available_versions.push(v);
                        }
                    }
                    c.available_versions.sort();
                    c.available_versions.dedup();
                }
                Value::Null => {}
                other => self.issue(
                    f,
                    format!(
                        "must be a list of versions such as [v1.33.4, v1.34.1], not {}",
                        describe(other)
                    ),
                ),
            }
        }
        if let Some(x) = m.get("package_manager") {
            let f = join(path, "package_manager");
            if let Some(s) = self.string(x, &f) {
                c.package_manager = match s.as_str() {
                    "apt" => Some(PackageManager::Apt),
                    "yum" => Some(PackageManager::Yum),
                    "dnf" => Some(PackageManager::Dnf),
                    "kubelet-wrapper" => Some(PackageManager::KubeletWrapper),
                    other => {
                        self.issue(
                            f,
                            format!(
                                "{other:?} is not a package manager kbg knows; one of: {}",
                                PackageManager::NAMES
                            ),
                        );
                        None
                    }
                };
            }
        }
        if c.method == Some(CpMethod::Kubeadm)
            && c.package_manager == Some(PackageManager::KubeletWrapper)
        {
            self.issue(
                join(path, "package_manager"),
                "kubelet-wrapper hosts have no kubeadm; use method: manifests, or apt, yum or dnf",
            );
        }
        if let Some(x) = m.get("etcd_backup") {
            c.etcd_backup = self.boolean(x, &join(path, "etcd_backup"));
        }
        for (name, slot) in [
            ("backup_dir", &mut c.backup_dir),
            ("manifests_dir", &mut c.manifests_dir),
        ] {
            if let Some(x) = m.get(name) {
                let f = join(path, name);
                if let Some(s) = self.string(x, &f) {
                    if s.starts_with('/') && !s.contains(['\'', '"', '`', '$', '\n']) {
                        *slot = Some(s.trim_end_matches('/').to_string());
                    } else {
                        self.issue(
                            f,
                            format!("{s:?} must be an absolute path on the masters, without quotes, $ or backquotes"),
                        );
                    }
                }
            }
        }
        if let Some(x) = m.get("etcd_application") {
            let f = join(path, "etcd_application");
            if let Some(s) = self.string(x, &f) {
                if validate_dns_label(&s).is_ok() {
                    c.etcd_application = Some(s);
                } else {
                    self.issue(
                        f,
                        format!("{s:?} is not a Juju application name such as etcd"),
                    );
                }
            }
        }
        for (name, slot, may_be_zero) in [
            ("master_timeout", &mut c.master_timeout, false),
            ("command_timeout", &mut c.command_timeout, false),
            ("retry_pause", &mut c.retry_pause, true),
        ] {
            if let Some(x) = m.get(name) {
                let f = join(path, name);
                match self.duration(x, &f) {
                    Some(d) if d.is_zero() && !may_be_zero => {
                        self.issue(f, "must be longer than 0s");
                    }
                    d => *slot = d,
                }
            }
        }
        if let Some(x) = m.get("retries") {
            c.retries = self
                .integer(x, &join(path, "retries"), 0)
                .map(|n| n.min(100) as u32);
        }
        if let Some(x) = m.get("templates") {
            let tp = join(path, "templates");
            if c.method == Some(CpMethod::Charm) {
                self.issue(
                    &tp,
                    "the charm method runs the charm's actions, no scripts; remove templates or choose method: kubeadm or manifests",
                );
            } else if let Some(t) = self.mapping(x, &tp, Some(CP_TEMPLATE_STEPS)) {
                for (k, v) in t {
                    if let Some(s) = self.string(v, &join(&tp, k)) {
                        c.templates.insert(k.clone(), PathBuf::from(s));
                    }
                }
            }
        }
        c
    }

    fn pool(&mut self, name: &str, v: &Value, path: &str) -> Option<PoolConfig> {
        let m = self.mapping(v, path, Some(POOL_FIELDS))?;
        let before = self.issues.len();
        let mut pool = PoolConfig::by_label(name);

        match m.get("provider") {
            None => self.issue(
                join(path, "provider"),
                format!("is required; one of: {}", PROVIDERS.join(", ")),
            ),
            Some(x) => {
                if let Some(p) = self.string(x, &join(path, "provider")) {
                    if PROVIDERS.contains(&p.as_str()) {
                        pool.provider = p;
                    } else {
                        self.issue(
                            join(path, "provider"),
                            format!("{p:?} is not a provider; one of: {}", PROVIDERS.join(", ")),
                        );
                    }
                }
            }
        }
        for p in PROVIDERS {
            if let Some(block) = m.get(*p) {
                let f = join(path, p);
                if pool.provider == *p {
                    if matches!(block, Value::Object(_) | Value::Null) {
                        pool.settings = block.clone();
                    } else {
                        self.issue(
                            f,
                            format!(
                                "must be a mapping of the {p} provider's settings, not {}",
                                describe(block)
                            ),
                        );
                    }
                } else if !pool.provider.is_empty() {
                    self.issue(
                        f,
                        format!(
                            "is for the {p} provider but the pool's provider is {}; remove the block or set provider: {p}",
                            pool.provider
                        ),
                    );
                }
            }
        }

        if let Some(x) = m.get("selector") {
            let f = join(path, "selector");
            if let Some(s) = self.string(x, &f) {
                match Selector::parse(&s) {
                    Ok(sel) => pool.membership = Membership::Selector(sel),
                    Err(e) => self.issue(f, e),
                }
            }
        }
        let adopted = m.contains_key("selector");

        match m.get("version") {
            Some(x) => pool.version = self.version(x, &join(path, "version")),
            None if !adopted => self.issue(
                join(path, "version"),
                format!("is required for a pool kbg deploys (or give a selector to adopt an existing pool); accepted forms: {VERSION_FORMS}"),
            ),
            None => {}
        }

        match m.get("count") {
            Some(x) => {
                pool.count = self.integer(x, &join(path, "count"), 1).map(|n| n as usize);
            }
            None if !adopted => self.issue(
                join(path, "count"),
                "is required for a pool kbg deploys: how many machines, at least 1",
            ),
            None => {}
        }

        if let Some(x) = m.get("labels") {
            let lp = join(path, "labels");
            if let Some(labels) = self.mapping(x, &lp, None) {
                for (k, lv) in labels {
                    let f = join(&lp, k);
                    if let Err(e) = validate_qualified_name(k) {
                        self.issue(&f, format!("the label key {e}"));
                        continue;
                    }
                    let value = match lv {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        other => {
                            self.issue(
                                &f,
                                format!("must be a string, not {}; quote it", describe(other)),
                            );
                            continue;
                        }
                    };
                    if let Err(e) = validate_label_value(&value) {
                        self.issue(&f, format!("the label value {value:?} {e}"));
                        continue;
                    }
                    if k == POOL_LABEL && value != name {
                        self.issue(
                            &f,
                            format!("kbg sets {POOL_LABEL}={name} on the pool's nodes; remove this label"),
                        );
                        continue;
                    }
                    pool.labels.insert(k.clone(), value);
                }
            }
        }

        if let Some(x) = m.get("taints") {
            let tp = join(path, "taints");
            match x {
                Value::Array(items) => {
                    for (i, t) in items.iter().enumerate() {
                        if let Some(t) = self.taint(t, &format!("{tp}[{i}]")) {
                            pool.taints.push(t);
                        }
                    }
                }
                Value::Null => {}
                other => self.issue(
                    tp,
                    format!(
                        "must be a list of taints such as \"dedicated=web:NoSchedule\", not {}",
                        describe(other)
                    ),
                ),
            }
        }

        if let Some(x) = m.get("template") {
            pool.template = self.string(x, &join(path, "template")).map(PathBuf::from);
        }
        if let Some(x) = m.get("migration") {
            pool.migration = self.migration(x, &join(path, "migration"));
        }
        // The sim provider is always built in: check its block with the rest.
        if pool.provider == kbg_provider_sim::NAME {
            let spec = crate::providers::pool_spec(&pool, &JoinSettings::default(), None);
            if let Err(e) = kbg_provider_sim::SimSettings::from_pool(&spec) {
                let field = match &e.kind {
                    kbg_provider::ErrorKind::InvalidConfig { field } => field.clone(),
                    _ => join(path, kbg_provider_sim::NAME),
                };
                self.issue(field, e.message);
            }
        }
        (self.issues.len() == before).then_some(pool)
    }

    fn taint(&mut self, v: &Value, path: &str) -> Option<Taint> {
        let (key, value, effect) = match v {
            Value::String(s) => match parse_taint(s) {
                Ok(t) => return Some(t),
                Err(e) => {
                    self.issue(path, e);
                    return None;
                }
            },
            Value::Object(_) => {
                let m = self.mapping(v, path, Some(TAINT_FIELDS))?;
                let key = match m.get("key") {
                    Some(k) => self.string(k, &join(path, "key"))?,
                    None => {
                        self.issue(join(path, "key"), "is required");
                        return None;
                    }
                };
                let value = match m.get("value") {
                    Some(Value::Null) | None => None,
                    Some(x) => Some(self.string(x, &join(path, "value"))?),
                };
                let effect = match m.get("effect") {
                    Some(e) => self.string(e, &join(path, "effect"))?,
                    None => {
                        self.issue(
                            join(path, "effect"),
                            "is required: NoSchedule, PreferNoSchedule or NoExecute",
                        );
                        return None;
                    }
                };
                (key, value, effect)
            }
            other => {
                self.issue(
                    path,
                    format!("must be a taint such as \"dedicated=web:NoSchedule\" or a mapping with key, value, effect; not {}", describe(other)),
                );
                return None;
            }
        };
        let s = match &value {
            Some(val) => format!("{key}={val}:{effect}"),
            None => format!("{key}:{effect}"),
        };
        match parse_taint(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                self.issue(path, e);
                None
            }
        }
    }
}

/// Parse a taint in the kubelet's `--register-with-taints` form: `key=value:Effect` or
/// `key:Effect`.
///
/// # Errors
/// One line naming the accepted form and what is wrong.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let form = "accepted forms: key=value:Effect or key:Effect, Effect one of NoSchedule, PreferNoSchedule, NoExecute";
    let Some((kv, effect)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no effect; {form}"));
    };
    let effect = match effect {
        "NoSchedule" => TaintEffect::NoSchedule,
        "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
        "NoExecute" => TaintEffect::NoExecute,
        other => return Err(format!("{other:?} is not a taint effect; {form}")),
    };
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    validate_qualified_name(key).map_err(|e| format!("the taint key {key:?} {e}; {form}"))?;
    if let Some(v) = value {
        validate_label_value(v).map_err(|e| format!("the taint value {v:?} {e}; {form}"))?;
    }
    Ok(Taint {
        key: key.to_string(),
        value: value.filter(|v| !v.is_empty()).map(str::to_string),
        effect,
    })
}

fn check_endpoint(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not host:port, such as 10.0.0.10:6443 or api.example.com:6443");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

/// A kubeadm bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`. The message never quotes the
/// token.
fn check_token(s: &str) -> Result<(), String> {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split_once('.') {
        Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(()),
        _ => Err(format!(
            "is not a kubeadm bootstrap token (six and sixteen characters of a-z0-9 joined by a dot, as `kubeadm token create` prints); better set it in {JOIN_TOKEN_ENV}"
        )),
    }
}

/// `sha256:` and 64 hex digits, as `kubeadm join --discovery-token-ca-cert-hash` takes it.
fn check_ca_cert_hash(s: &str) -> Result<(), String> {
    match s.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => Err(
            "is not sha256: followed by 64 hex digits (kubeadm's --discovery-token-ca-cert-hash)"
                .into(),
        ),
    }
}

/// Apply the join settings from the environment over the file's
/// ([`JOIN_ENDPOINT_ENV`], [`JOIN_TOKEN_ENV`], [`JOIN_CA_CERT_HASH_ENV`]).
///
/// # Errors
/// One line per bad variable, naming the variable (never its value).
pub fn join_from_env(
    file: &JoinSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<JoinSettings, Vec<String>> {
    let mut j = file.clone();
    let mut errors = Vec::new();
    if let Some(e) = env(JOIN_ENDPOINT_ENV).filter(|s| !s.is_empty()) {
        match check_endpoint(&e) {
            Ok(()) => j.endpoint = Some(e),
            Err(m) => errors.push(format!("{JOIN_ENDPOINT_ENV}: {m}")),
        }
    }
    if let Some(t) = env(JOIN_TOKEN_ENV).filter(|s| !s.is_empty()) {
        match check_token(t.trim()) {
            Ok(()) => j.token = Some(Secret::new(t.trim())),
            Err(m) => errors.push(format!("{JOIN_TOKEN_ENV}: {m}")),
        }
    }
    if let Some(h) = env(JOIN_CA_CERT_HASH_ENV).filter(|s| !s.is_empty()) {
        match check_ca_cert_hash(h.trim()) {
            Ok(()) => j.ca_cert_hash = Some(Secret::new(h.trim())),
            Err(m) => errors.push(format!("{JOIN_CA_CERT_HASH_ENV}: {m}")),
        }
    }
    if errors.is_empty() {
        Ok(j)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster:
  context: prod
  state_namespace: kbg-system
  lease_duration: 20s
  join:
    endpoint: 10.0.0.10:6443
    token: abcdef.0123456789abcdef
    ca_cert_hash: sha256:0000000000000000000000000000000000000000000000000000000000000000
migration:
  batch_size: 2
  eviction_retry_interval: 5s
pools:
  alpha:
    provider: aws
    selector: eks.amazonaws.com/nodegroup=alpha
    migration:
      batch_size: 25%
      final_soak: 1h
      pod_selector: app!=batch
  beta:
    provider: sim
    version: v1.31.2
    count: 3
    labels:
      tier: web
      spot: true
    taints:
      - dedicated=web:NoSchedule
      - key: spot
        effect: PreferNoSchedule
    sim:
      boot_seconds: 5
"#;

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.cluster.context.as_deref(), Some("prod"));
        assert_eq!(c.cluster.state_namespace.as_deref(), Some("kbg-system"));
        assert_eq!(c.cluster.lease_duration, Some(Duration::from_secs(20)));
        assert!(c.cluster.join.token.is_some());
        assert_eq!(c.migration.batch_size, Some(BatchSize::Nodes(2)));
        let alpha = c.pool("alpha").unwrap();
        assert_eq!(
            alpha.selector().to_string(),
            "eks.amazonaws.com/nodegroup=alpha"
        );
        assert_eq!(alpha.version, None);
        assert_eq!(alpha.migration.batch_size, Some(BatchSize::Percent(25)));
        assert_eq!(alpha.migration.final_soak, Some(Duration::from_secs(3600)));
        let beta = c.pool("beta").unwrap();
        assert_eq!(beta.selector().to_string(), "kbg.io/pool=beta");
        assert_eq!(beta.version.as_ref().unwrap().to_string(), "v1.31.2");
        assert_eq!(beta.count, Some(3));
        assert_eq!(beta.labels["tier"], "web");
        assert_eq!(beta.labels["spot"], "true");
        assert_eq!(beta.labels[POOL_LABEL], "beta");
        assert_eq!(beta.taints.len(), 2);
        assert_eq!(beta.taints[0].to_string(), "dedicated=web:NoSchedule");
        assert_eq!(beta.taints[1].to_string(), "spot:PreferNoSchedule");
        assert_eq!(beta.settings["boot_seconds"], 5);
        // Pool knobs fall back to the file's defaults.
        let k = alpha.migration.or(&c.migration);
        assert_eq!(k.batch_size, Some(BatchSize::Percent(25)));
        assert_eq!(k.eviction_retry_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_example_files_parse() {
        for (name, text) in [
            ("examples/kbg.yaml", include_str!("../examples/kbg.yaml")),
            (
                "examples/demo/kbg.yaml",
                include_str!("../examples/demo/kbg.yaml"),
            ),
            (
                "examples/metal.yaml",
                include_str!("../examples/metal.yaml"),
            ),
            ("examples/juju.yaml", include_str!("../examples/juju.yaml")),
            ("examples/exec.yaml", include_str!("../examples/exec.yaml")),
        ] {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(c.pools.len() >= 2, "{name}");
        }
    }

    #[test]
    fn the_control_plane_block() {
        let c = Config::parse(
            r#"
control_plane:
  method: kubeadm
  provider: metal
  metal: {inventory: hosts.yaml}
  available_versions: [v1.34.1, "1.33.4", v1.34.1]
  package_manager: dnf
  etcd_backup: false
  backup_dir: /srv/kbg/
  master_timeout: 15m
  retry_pause: 2m
  retries: 3
  templates: {kubelet: my-kubelet.sh.j2}
"#,
        )
        .unwrap();
        let cp = &c.control_plane;
        assert_eq!(cp.method, Some(CpMethod::Kubeadm));
        assert_eq!(cp.provider.as_deref(), Some("metal"));
        assert_eq!(cp.settings["inventory"], "hosts.yaml");
        let versions: Vec<String> = cp
            .available_versions
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(versions, ["v1.33.4", "v1.34.1"], "sorted, once each");
        assert_eq!(cp.package_manager, Some(PackageManager::Dnf));
        assert_eq!(cp.etcd_backup, Some(false));
        assert_eq!(cp.backup_dir.as_deref(), Some("/srv/kbg"));
        assert_eq!(cp.master_timeout, Some(Duration::from_secs(900)));
        assert_eq!(cp.retry_pause, Some(Duration::from_secs(120)));
        assert_eq!(cp.retries, Some(3));
        assert_eq!(cp.templates["kubelet"], PathBuf::from("my-kubelet.sh.j2"));
        // The charm method goes through Juju.
        let c = Config::parse("control_plane: {method: charm}").unwrap();
        assert_eq!(c.control_plane.provider.as_deref(), Some("juju"));
        // Each bad field, named with its fix.
        for (file, field, says) in [
            (
                "control_plane: {method: ansible}",
                "control_plane.method",
                "one of: kubeadm, manifests, charm",
            ),
            (
                "control_plane: {provider: gce}",
                "control_plane.provider",
                "is not a provider",
            ),
            (
                "control_plane: {method: charm, provider: sim}",
                "control_plane.provider",
                "set provider: juju",
            ),
            (
                "control_plane: {available_versions: [1.x]}",
                "control_plane.available_versions[0]",
                "accepted forms",
            ),
            (
                "control_plane: {available_versions: [1.30]}",
                "control_plane.available_versions[0]",
                "YAML reads 1.30 as 1.3",
            ),
            (
                "control_plane: {available_versions: v1.34.1}",
                "control_plane.available_versions",
                "must be a list",
            ),
            (
                "control_plane: {package_manager: brew}",
                "control_plane.package_manager",
                "apt, yum, dnf, kubelet-wrapper",
            ),
            (
                "control_plane: {method: kubeadm, package_manager: kubelet-wrapper}",
                "control_plane.package_manager",
                "no kubeadm",
            ),
            (
                "control_plane: {backup_dir: backups}",
                "control_plane.backup_dir",
                "absolute path",
            ),
            (
                "control_plane: {manifests_dir: \"/etc/$x\"}",
                "control_plane.manifests_dir",
                "absolute path",
            ),
            (
                "control_plane: {master_timeout: 0s}",
                "control_plane.master_timeout",
                "longer than 0s",
            ),
            (
                "control_plane: {retries: -1}",
                "control_plane.retries",
                "at least 0",
            ),
            (
                "control_plane: {templates: {first: x.j2}}",
                "control_plane.templates.first",
                "did you mean first_master?",
            ),
            (
                "control_plane: {provider: sim, metal: {}}",
                "control_plane.metal",
                "set provider: metal",
            ),
            (
                "control_plane: {methd: kubeadm}",
                "control_plane.methd",
                "did you mean method?",
            ),
            (
                "control_plane: {method: charm, templates: {kubelet: k.j2}}",
                "control_plane.templates",
                "runs the charm's actions",
            ),
        ] {
            let issues = Config::parse(file).expect_err(file);
            assert_eq!(issues.len(), 1, "{file}: {issues:?}");
            assert_eq!(issues[0].field, field, "{file}: {issues:?}");
            assert!(issues[0].message.contains(says), "{file}: {}", issues[0]);
        }
    }

    #[test]
    fn an_empty_file_is_an_empty_config() {
        let c = Config::parse("").unwrap();
        assert!(c.pools.is_empty());
        let e = c.pool("beta").unwrap_err();
        assert!(e.contains("no pools"), "{e}");
    }

    /// Each case: a file, and the one issue (field, a part of the message) it must give.
    #[test]
    fn each_bad_field_is_named_with_its_fix() {
        let pool = |extra: &str| {
            format!(
                "pools:\n  beta:\n    provider: sim\n    version: v1.31.2\n    count: 3\n{extra}"
            )
        };
        for (file, field, says) in [
            ("pools: [a]".to_string(), "pools", "must be a mapping"),
            ("- 1\n".to_string(), "(the file)", "must be a mapping"),
            ("pool: {}".to_string(), "pool", "did you mean pools?"),
            (
                "clusterx: {}".to_string(),
                "clusterx",
                "did you mean cluster?",
            ),
            ("pools: {Beta: {}}".to_string(), "pools.Beta", "DNS labels"),
            (
                "pools:\n  beta:\n    version: v1.31.2\n    count: 1\n".to_string(),
                "pools.beta.provider",
                "is required; one of: sim, aws",
            ),
            (
                pool("").replace("provider: sim", "provider: gce"),
                "pools.beta.provider",
                "\"gce\" is not a provider",
            ),
            (
                pool("").replace("version: v1.31.2", "version: 1.x"),
                "pools.beta.version",
                "accepted forms: v1.31.2",
            ),
            (
                pool("").replace("version: v1.31.2", "version: 1.30"),
                "pools.beta.version",
                "YAML reads 1.30 as 1.3",
            ),
            (
                pool("").replace("    version: v1.31.2\n", ""),
                "pools.beta.version",
                "is required",
            ),
            (
                pool("").replace("count: 3", "count: 0"),
                "pools.beta.count",
                "at least 1",
            ),
            (
                pool("").replace("count: 3", "count: three"),
                "pools.beta.count",
                "whole number",
            ),
            (
                pool("    verison: v1\n"),
                "pools.beta.verison",
                "did you mean version?",
            ),
            (
                pool("    labels: {\"Bad Key\": x}\n"),
                "pools.beta.labels.Bad Key",
                "the label key",
            ),
            (
                pool("    labels: {kbg.io/pool: gamma}\n"),
                "pools.beta.labels.kbg.io/pool",
                "remove this label",
            ),
            (
                pool("    labels: {v: 1.5}\n"),
                "pools.beta.labels.v",
                "quote it",
            ),
            (
                pool("    taints: [\"a=b:Sometimes\"]\n"),
                "pools.beta.taints[0]",
                "is not a taint effect",
            ),
            (
                pool("    taints: [{key: a}]\n"),
                "pools.beta.taints[0].effect",
                "is required",
            ),
            (
                pool("    taints: x\n"),
                "pools.beta.taints",
                "must be a list",
            ),
            (
                pool("    selector: \"a in b\"\n"),
                "pools.beta.selector",
                "invalid label selector",
            ),
            (
                pool("    aws: {region: x}\n"),
                "pools.beta.aws",
                "remove the block or set provider: aws",
            ),
            (pool("    sim: 3\n"), "pools.beta.sim", "must be a mapping"),
            (
                pool("    sim: {capacity: {cpu: lots}}\n"),
                "pools.beta.sim.capacity.cpu",
                "is not a quantity",
            ),
            (
                pool("    sim: {boots: 1}\n"),
                "pools.beta.sim",
                "unknown field",
            ),
            (
                pool("    migration: {batch_size: 0}\n"),
                "pools.beta.migration.batch_size",
                "accepted forms",
            ),
            (
                pool("    migration: {batch_size: 101%}\n"),
                "pools.beta.migration.batch_size",
                "accepted forms",
            ),
            (
                pool("    migration: {batch_soak: 60}\n"),
                "pools.beta.migration.batch_soak",
                "has no unit",
            ),
            (
                pool("    migration: {final_soak: soon}\n"),
                "pools.beta.migration.final_soak",
                "30s, 5m",
            ),
            (
                pool("    migration: {eviction_retry_interval: 0s}\n"),
                "pools.beta.migration.eviction_retry_interval",
                "longer than 0s",
            ),
            (
                pool("    migration: {max_concurrent_evictions: 0}\n"),
                "pools.beta.migration.max_concurrent_evictions",
                "at least 1",
            ),
            (
                pool("    migration: {force: yes please}\n"),
                "pools.beta.migration.force",
                "true or false",
            ),
            (
                pool("    migration: {pod_selector: \"=x\"}\n"),
                "pools.beta.migration.pod_selector",
                "invalid label selector",
            ),
            (
                "cluster: {state_namespace: Kube_System}".to_string(),
                "cluster.state_namespace",
                "lowercase",
            ),
            (
                "cluster: {lease_duration: 1s}".to_string(),
                "cluster.lease_duration",
                "at least 2s",
            ),
            (
                "cluster: {join: {endpoint: \"10.0.0.1\"}}".to_string(),
                "cluster.join.endpoint",
                "host:port",
            ),
            (
                "cluster: {join: {token: secrettoken123}}".to_string(),
                "cluster.join.token",
                "bootstrap token",
            ),
            (
                "cluster: {join: {ca_cert_hash: md5:00}}".to_string(),
                "cluster.join.ca_cert_hash",
                "sha256:",
            ),
        ] {
            let issues = Config::parse(&file).expect_err(&file);
            assert_eq!(issues.len(), 1, "{file}: {issues:?}");
            assert_eq!(issues[0].field, field, "{file}: {issues:?}");
            assert!(issues[0].message.contains(says), "{file}: {}", issues[0]);
            assert!(!issues[0].to_string().contains('\n'));
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let file = "pools:\n  alpha:\n    provider: nope\n    version: x\n    count: -1\n  beta:\n    provider: sim\n    version: v1.31\n    count: 2\n    colour: blue\n";
        let issues = Config::parse(file).unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "pools.alpha.provider",
                "pools.alpha.version",
                "pools.alpha.count",
                "pools.beta.colour"
            ]
        );
    }

    #[test]
    fn yaml_errors_are_one_line_with_the_position() {
        for file in ["pools: [1\n", "a: 1\na: 2\n", "a: b: c\n"] {
            let issues = Config::parse(file).unwrap_err();
            assert_eq!(issues.len(), 1);
            let m = issues[0].to_string();
            assert!(m.starts_with("is not valid YAML: line"), "{m}");
            assert!(!m.contains('\n'), "{m}");
        }
    }

    #[test]
    fn secrets_are_never_quoted_in_errors() {
        let canary = "zzzzzz.canarycanarycanary";
        let file = format!("cluster: {{join: {{token: {canary}, ca_cert_hash: {canary}}}}}");
        let issues = Config::parse(&file).unwrap_err();
        assert_eq!(issues.len(), 2);
        for i in &issues {
            assert!(!i.to_string().contains("canary"), "{i}");
        }
        let env = |k: &str| (k == JOIN_TOKEN_ENV).then(|| canary.to_string());
        let errs = join_from_env(&JoinSettings::default(), env).unwrap_err();
        assert!(errs[0].starts_with(JOIN_TOKEN_ENV) && !errs[0].contains("canary"));
        let c = Config::parse(GOOD).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn the_environment_overrides_the_files_join_settings() {
        let c = Config::parse(GOOD).unwrap();
        let env = |k: &str| match k {
            JOIN_TOKEN_ENV => Some("zyxwvu.0000000000000000".to_string()),
            JOIN_ENDPOINT_ENV => Some("api.example.com:443".to_string()),
            _ => None,
        };
        let j = join_from_env(&c.cluster.join, env).unwrap();
        assert_eq!(j.token.unwrap().expose(), "zyxwvu.0000000000000000");
        assert_eq!(j.endpoint.as_deref(), Some("api.example.com:443"));
        assert!(j.ca_cert_hash.is_some(), "kept from the file");
    }

    #[test]
    fn unknown_pools_name_the_known_ones() {
        let c = Config::parse(GOOD).unwrap();
        let e = c.pool("gamma").unwrap_err();
        assert_eq!(
            e,
            "pool \"gamma\" is not defined in kbg.yaml; its pools are: alpha, beta"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn yamlish() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            Just("sim".to_string()),
            Just("v1.31.2".to_string()),
            Just("1.30".to_string()),
            Just("3".to_string()),
            Just("-1".to_string()),
            Just("25%".to_string()),
            Just("5s".to_string()),
            Just("~".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            "[a-z0-9 .:%/=-]{0,12}",
        ];
        let key = prop_oneof![
            Just("pools"),
            Just("cluster"),
            Just("migration"),
            Just("provider"),
            Just("version"),
            Just("count"),
            Just("labels"),
            Just("taints"),
            Just("selector"),
            Just("sim"),
            Just("join"),
            Just("token"),
            Just("batch_size"),
            Just("beta"),
            Just("x"),
        ];
        proptest::collection::vec((0usize..4, key, scalar), 0..12).prop_map(|lines| {
            lines
                .into_iter()
                .map(|(indent, k, v)| format!("{}{k}: {v}\n", "  ".repeat(indent)))
                .collect()
        })
    }

    proptest! {
        /// Any text: a config or one-line issues naming a field, never a panic.
        #[test]
        fn arbitrary_text_never_panics(input in ".{0,200}") {
            if let Err(issues) = Config::parse(&input) {
                prop_assert!(!issues.is_empty());
                for i in &issues {
                    prop_assert!(!i.to_string().contains('\n'), "{}", i);
                }
            }
        }

        #[test]
        fn config_shaped_text_never_panics(input in yamlish()) {
            if let Err(issues) = Config::parse(&input) {
                for i in &issues {
                    prop_assert!(!i.to_string().contains('\n'), "{}", i);
                }
            }
        }

        #[test]
        fn durations_never_panic(input in ".{0,20}") {
            let _ = crate::duration::parse(&input);
        }
    }
}
