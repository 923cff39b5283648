//! Every setting resolved in one place: flags > environment > `kbg.yaml` > defaults.
//!
//! clap already puts a flag before its environment variable (each knob's `env`); here
//! the result is laid over the file and the defaults. For migration knobs the file has
//! two levels: the source pool's `migration:` block, then the top-level `migration:`.
//! Each default says where it comes from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{DrainArgs, GlobalArgs, OutputFormat};
use crate::client::{ApiRateLimit, DEFAULT_KUBE_API_BURST, KubeTarget};
use crate::clock::Clock;
use crate::config::{
    CONFIG_ENV, Config, DEFAULT_CONFIG_PATH, JoinSettings, MigrationKnobs, PoolConfig,
    join_from_env,
};
use crate::error::{Error, Result};
use crate::plan::BatchSize;
use crate::selector::{Selector, validate_dns_label};

/// Where kbg keeps its state and Leases unless told otherwise.
pub const DEFAULT_STATE_NAMESPACE: &str = "kube-system";
/// The state ConfigMap's name unless told otherwise.
pub const DEFAULT_STATE_CONFIGMAP: &str = "kbg-state";
/// How long a Lease stays valid without renewal: client-go leader election's default
/// `LeaseDuration` (15 s). Wall time: it is about a process being alive.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// One node per batch: kops rolling updates and EKS managed node groups
/// (`maxUnavailable: 1`) replace one node at a time by default.
pub const DEFAULT_BATCH_SIZE: BatchSize = BatchSize::Nodes(1);
/// kubectl drain waits 5 s before evicting a pod again after a PDB's 429 (the drain
/// engine's [`crate::drain::EVICTION_RETRY_INTERVAL`]).
pub const DEFAULT_EVICTION_RETRY_INTERVAL: Duration = crate::drain::EVICTION_RETRY_INTERVAL;
/// kubectl drain evicts every pod of a node at once; kbg bounds the evictions in flight
/// (the drain engine's [`crate::drain::DEFAULT_MAX_CONCURRENT_EVICTIONS`]).
pub const DEFAULT_MAX_CONCURRENT_EVICTIONS: usize = crate::drain::DEFAULT_MAX_CONCURRENT_EVICTIONS;
/// Per-node deadline. kubectl drain's `--timeout` defaults to none; kbg bounds every wait.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long moved workloads get to be Ready again after a batch.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a master gets to come back after its upgrade: kubeadm waits up to 5 minutes
/// for each upgraded static pod (`UpgradeManifestTimeout`); kbg waits for the whole master.
pub const DEFAULT_MASTER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one command may run on a master (wall time): a package download and
/// `kubeadm upgrade apply` with its image pulls.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(900);
/// The pause before repeating a secondary master's failed upgrade: the kubeadm HA upgrade
/// guide saw them succeed "when the operation is simply repeated after a little pause of
/// one or two minutes".
pub const DEFAULT_RETRY_PAUSE: Duration = Duration::from_secs(90);
/// How many times a secondary master's failed upgrade is repeated.
pub const DEFAULT_RETRIES: u32 = 2;
/// Where the static pod manifests are: kubeadm's (and the kubelet's `staticPodPath`).
pub const DEFAULT_MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";
/// Where kbg keeps backups on the masters.
pub const DEFAULT_BACKUP_DIR: &str = "/var/lib/kbg/backups";
/// The etcd application of a Charmed Kubernetes bundle.
pub const DEFAULT_ETCD_APPLICATION: &str = "etcd";

/// `kbg upgrade-control-plane`'s settings, resolved: flags > `control_plane:` > defaults.
#[derive(Clone, Debug)]
pub struct CpSettings {
    /// The provider whose run-command reaches the masters.
    pub provider: String,
    /// Its block under `control_plane:`.
    pub provider_settings: serde_json::Value,
    /// What the scripts need (method, package manager, directories).
    pub scripts: crate::control_plane::ScriptSettings,
    /// Snapshot etcd before the first master.
    pub etcd_backup: bool,
    /// `charm`: the etcd application.
    pub etcd_application: String,
    /// Each master's deadline to come back (cluster time).
    pub master_timeout: Duration,
    /// One command's deadline (wall time).
    pub command_timeout: Duration,
    /// Pause before repeating a secondary master's failed upgrade (cluster time).
    pub retry_pause: Duration,
    /// How many times it is repeated.
    pub retries: u32,
    /// Replacement scripts, by step.
    pub templates: std::collections::BTreeMap<String, PathBuf>,
}

/// Resolve `kbg upgrade-control-plane`'s settings from its flags and `file`.
///
/// # Errors
/// A usage error (exit 2) when `control_plane.method` or `control_plane.provider` is
/// missing.
pub fn resolve_control_plane(
    file: &crate::config::ControlPlaneConfig,
    flags: &crate::cli::UpgradeControlPlaneArgs,
) -> Result<CpSettings> {
    use crate::config::{CpMethod, PackageManager};
    let method = file.method.ok_or_else(|| {
        Error::usage(format!(
            "control_plane.method: is required to upgrade the masters; one of: {} (add a control_plane: block to kbg.yaml)",
            CpMethod::NAMES
        ))
    })?;
    let provider = file.provider.clone().ok_or_else(|| {
        Error::usage(
            "control_plane.provider: is required: the provider whose run-command reaches the masters (metal, exec, sim; juju for the charm method)",
        )
    })?;
    let package_manager = file.package_manager.unwrap_or(match method {
        CpMethod::Manifests => PackageManager::KubeletWrapper,
        _ => PackageManager::Apt,
    });
    Ok(CpSettings {
        provider,
        provider_settings: file.settings.clone(),
        scripts: crate::control_plane::ScriptSettings {
            method,
            package_manager,
            manifests_dir: file
                .manifests_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_MANIFESTS_DIR.into()),
            backup_dir: file
                .backup_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_BACKUP_DIR.into()),
        },
        etcd_backup: !flags.no_etcd_backup && file.etcd_backup.unwrap_or(true),
        etcd_application: file
            .etcd_application
            .clone()
            .unwrap_or_else(|| DEFAULT_ETCD_APPLICATION.into()),
        master_timeout: flags
            .master_timeout
            .or(file.master_timeout)
            .unwrap_or(DEFAULT_MASTER_TIMEOUT),
        command_timeout: file.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
        retry_pause: flags
            .retry_pause
            .or(file.retry_pause)
            .unwrap_or(DEFAULT_RETRY_PAUSE),
        retries: flags.retries.or(file.retries).unwrap_or(DEFAULT_RETRIES),
        templates: file.templates.clone(),
    })
}

/// What every command needs: the config, the cluster, where state lives, the clock, the
/// output format.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `kbg.yaml` (empty when there is none).
    pub config: Config,
    /// The cluster to talk to.
    pub target: KubeTarget,
    /// Namespace of the state ConfigMap and the Leases.
    pub state_namespace: String,
    /// Name of the state ConfigMap.
    pub state_configmap: String,
    /// Lease validity without renewal (wall time).
    pub lease_duration: Duration,
    /// The clock every wait goes through.
    pub clock: Clock,
    /// How results are printed.
    pub output: OutputFormat,
    /// How new machines join (secret parts stay secret).
    pub join: JoinSettings,
}

fn expand_home(p: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (p.strip_prefix("~"), env("HOME")) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => p.to_path_buf(),
    }
}

impl Settings {
    /// The directory of `kbg.yaml`, against which relative paths in it are resolved.
    pub fn base_dir(&self) -> Option<PathBuf> {
        let path = self.config.path.as_ref()?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
        Some(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
    }
}

/// Resolve the global settings.
///
/// `env` reads an environment variable (tests pass a closure).
///
/// # Errors
/// [`Error::Config`] for a bad or unreadable `kbg.yaml` (a missing file is an error only
/// when `--config` or `KBG_CONFIG` named it); [`Error::Usage`] for bad flags or
/// environment variables. Nothing is contacted.
pub fn resolve(global: &GlobalArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let config = match &global.config {
        Some(path) => Config::load(path)?,
        None => {
            let path = Path::new(DEFAULT_CONFIG_PATH);
            if path.exists() {
                Config::load(path)?
            } else {
                Config::default()
            }
        }
    };
    let _ = CONFIG_ENV; // clap reads it for --config.
    let mut problems = Vec::new();

    let clock = match global.clock_speed {
        None => Clock::real(),
        Some(s) => Clock::with_speed(s).unwrap_or_else(|e| {
            problems.push(e);
            Clock::real()
        }),
    };

    let kubeconfig = match (&global.kubeconfig, env("KUBECONFIG")) {
        (Some(p), _) => Some(p.clone()),
        // Let kube read KUBECONFIG itself: it may list several files to merge.
        (None, Some(k)) if !k.is_empty() => None,
        _ => config
            .cluster
            .kubeconfig
            .as_deref()
            .map(|p| expand_home(p, env)),
    };
    let rate_limit = match (global.kube_api_qps, global.kube_api_burst) {
        (None, None) => None,
        (None, Some(_)) => {
            problems.push("--kube-api-burst: needs --kube-api-qps (the sustained rate)".into());
            None
        }
        (Some(qps), burst) => {
            let burst = burst.unwrap_or(DEFAULT_KUBE_API_BURST);
            if !(qps.is_finite() && qps > 0.0) {
                problems.push(format!(
                    "--kube-api-qps: {qps} is not a number of requests per second greater than 0"
                ));
            }
            if burst == 0 {
                problems.push("--kube-api-burst: must be at least 1".into());
            }
            Some(ApiRateLimit { qps, burst })
        }
    };
    let target = KubeTarget {
        kubeconfig,
        context: global
            .context
            .clone()
            .or_else(|| config.cluster.context.clone()),
        rate_limit,
        request_timeout: global
            .request_timeout
            .unwrap_or(crate::client::DEFAULT_REQUEST_TIMEOUT),
    };

    let state_namespace = global
        .state_namespace
        .clone()
        .or_else(|| config.cluster.state_namespace.clone())
        .unwrap_or_else(|| DEFAULT_STATE_NAMESPACE.to_string());
    if let Err(e) = validate_dns_label(&state_namespace) {
        problems.push(format!(
            "--state-namespace: the namespace {state_namespace:?} {e}"
        ));
    }

    let join = join_from_env(&config.cluster.join, env).unwrap_or_else(|errs| {
        problems.extend(errs);
        JoinSettings::default()
    });

    if !problems.is_empty() {
        return Err(Error::Usage(problems));
    }
    Ok(Settings {
        state_configmap: config
            .cluster
            .state_configmap
            .clone()
            .unwrap_or_else(|| DEFAULT_STATE_CONFIGMAP.to_string()),
        lease_duration: config
            .cluster
            .lease_duration
            .unwrap_or(DEFAULT_LEASE_DURATION),
        config,
        target,
        state_namespace,
        clock,
        output: global.output,
        join,
    })
}

/// The drain and migration settings, resolved.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DrainSettings {
    /// Nodes per batch.
    #[serde(serialize_with = "display")]
    pub batch_size: BatchSize,
    /// Wait after each batch but the last (cluster time).
    #[serde(with = "secs")]
    pub batch_soak: Duration,
    /// Wait after the last batch, nodes cordoned (cluster time).
    #[serde(with = "secs")]
    pub final_soak: Duration,
    /// Evictions in flight at once.
    pub max_concurrent_evictions: usize,
    /// Wait before retrying a pod after its PDB's 429 (cluster time).
    #[serde(with = "secs")]
    pub eviction_retry_interval: Duration,
    /// Deadline per node (cluster time).
    #[serde(with = "secs")]
    pub drain_timeout: Duration,
    /// Deadline for the whole operation (cluster time), if any.
    #[serde(with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Wait for moved workloads to be Ready after each batch.
    pub wait_for_ready: bool,
    /// Deadline for that wait (cluster time).
    #[serde(with = "secs")]
    pub ready_timeout: Duration,
    /// Evict pods no controller manages.
    pub force: bool,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// Grace period for evicted pods, seconds; `None` = each pod's own.
    pub grace_period: Option<i64>,
    /// Only pods matching this selector are evicted.
    #[serde(serialize_with = "display_opt")]
    pub pod_selector: Option<Selector>,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_opt<S: serde::Serializer>(v: &Option<Selector>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// Resolve the drain settings of a migration whose source pool is `source`: flags (and
/// their environment variables) > `pools.<source>.migration` > top-level `migration` >
/// the defaults above.
pub fn resolve_drain(
    flags: &DrainArgs,
    source: Option<&PoolConfig>,
    file: &MigrationKnobs,
) -> DrainSettings {
    let knobs = match source {
        Some(p) => p.migration.or(file),
        None => file.clone(),
    };
    let grace = flags.grace_period.or(knobs.grace_period);
    DrainSettings {
        batch_size: flags
            .batch_size
            .or(knobs.batch_size)
            .unwrap_or(DEFAULT_BATCH_SIZE),
        batch_soak: flags.batch_soak.or(knobs.batch_soak).unwrap_or_default(),
        final_soak: flags.final_soak.or(knobs.final_soak).unwrap_or_default(),
        max_concurrent_evictions: flags
            .max_concurrent_evictions
            .map(|n| n as usize)
            .or(knobs.max_concurrent_evictions)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_EVICTIONS),
        eviction_retry_interval: flags
            .eviction_retry_interval
            .or(knobs.eviction_retry_interval)
            .unwrap_or(DEFAULT_EVICTION_RETRY_INTERVAL),
        drain_timeout: flags
            .drain_timeout
            .or(knobs.drain_timeout)
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        timeout: flags.timeout.or(knobs.timeout).filter(|d| !d.is_zero()),
        wait_for_ready: flags
            .wait_for_ready
            .or(knobs.wait_for_ready)
            .unwrap_or(true),
        ready_timeout: flags
            .ready_timeout
            .or(knobs.ready_timeout)
            .unwrap_or(DEFAULT_READY_TIMEOUT),
        force: flags.force.or(knobs.force).unwrap_or(false),
        delete_emptydir_data: flags
            .delete_emptydir_data
            .or(knobs.delete_emptydir_data)
            .unwrap_or(false),
        // kubectl: a negative grace period means "the pod's own".
        grace_period: grace.filter(|g| *g >= 0),
        pod_selector: flags.pod_selector.clone().or(knobs.pod_selector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kbg.yaml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let (_d, p) = file(
            "cluster: {kubeconfig: ~/k.yaml, context: from-file, state_namespace: file-ns}\npools: {}\n",
        );
        let mut g = GlobalArgs {
            config: Some(p),
            ..Default::default()
        };
        // File only.
        let s = resolve(&g, &env(&[("HOME", "/home/op")])).unwrap();
        assert_eq!(
            s.target.kubeconfig.as_deref(),
            Some(Path::new("/home/op/k.yaml"))
        );
        assert_eq!(s.target.context.as_deref(), Some("from-file"));
        assert_eq!(s.state_namespace, "file-ns");
        assert_eq!(s.state_configmap, DEFAULT_STATE_CONFIGMAP);
        assert_eq!(s.lease_duration, DEFAULT_LEASE_DURATION);
        // KUBECONFIG beats the file (kube reads it itself).
        let s = resolve(&g, &env(&[("KUBECONFIG", "/a:/b")])).unwrap();
        assert_eq!(s.target.kubeconfig, None);
        // Flags beat both.
        g.kubeconfig = Some("/flag.yaml".into());
        g.context = Some("from-flag".into());
        g.state_namespace = Some("flag-ns".into());
        let s = resolve(&g, &env(&[("KUBECONFIG", "/a")])).unwrap();
        assert_eq!(
            s.target.kubeconfig.as_deref(),
            Some(Path::new("/flag.yaml"))
        );
        assert_eq!(s.target.context.as_deref(), Some("from-flag"));
        assert_eq!(s.state_namespace, "flag-ns");
    }

    #[test]
    fn a_named_config_must_exist_a_default_one_need_not() {
        let g = GlobalArgs {
            config: Some("/nonexistent/kbg.yaml".into()),
            ..Default::default()
        };
        let e = resolve(&g, &env(&[])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/kbg.yaml: cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn bad_global_settings_are_usage_errors_all_at_once() {
        let g = GlobalArgs {
            config: None,
            clock_speed: Some(0.0),
            state_namespace: Some("Bad_NS".into()),
            ..Default::default()
        };
        let e = resolve(&g, &env(&[("KBG_JOIN_TOKEN", "nope")])).unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("--clock-speed"));
        assert!(lines[1].starts_with("--state-namespace"));
        assert!(lines[2].starts_with("KBG_JOIN_TOKEN") && !lines[2].contains("nope"));
    }

    #[test]
    fn kube_api_rate_limit_is_off_unless_asked_and_checked() {
        let mut g = GlobalArgs::default();
        assert_eq!(resolve(&g, &env(&[])).unwrap().target.rate_limit, None);
        g.kube_api_qps = Some(5.0);
        assert_eq!(
            resolve(&g, &env(&[])).unwrap().target.rate_limit,
            Some(ApiRateLimit {
                qps: 5.0,
                burst: 10
            })
        );
        g.kube_api_burst = Some(0);
        g.kube_api_qps = Some(0.0);
        let e = resolve(&g, &env(&[])).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("--kube-api-qps: "), "{e}");
        assert!(lines[1].starts_with("--kube-api-burst: "), "{e}");
        g.kube_api_qps = None;
        g.kube_api_burst = Some(20);
        let e = resolve(&g, &env(&[])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("--kube-api-burst: needs"), "{e}");
    }

    #[test]
    fn control_plane_flags_then_file_then_defaults() {
        use crate::cli::UpgradeControlPlaneArgs;
        use crate::config::{CpMethod, PackageManager};
        let args = |extra: &[&str]| {
            let mut argv = vec!["kbg", "upgrade-control-plane", "v1.34.0"];
            argv.extend_from_slice(extra);
            match <crate::cli::Cli as clap::Parser>::try_parse_from(argv)
                .unwrap()
                .command
            {
                crate::cli::Command::UpgradeControlPlane(a) => a,
                _ => unreachable!(),
            }
        };
        let none: UpgradeControlPlaneArgs = args(&[]);
        let e = resolve_control_plane(&Config::default().control_plane, &none).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("control_plane.method: is required"),
            "{e}"
        );
        let cfg =
            Config::parse("control_plane: {method: manifests, provider: sim, retry_pause: 30s}")
                .unwrap();
        let s = resolve_control_plane(&cfg.control_plane, &none).unwrap();
        assert_eq!(s.scripts.method, CpMethod::Manifests);
        assert_eq!(
            s.scripts.package_manager,
            PackageManager::KubeletWrapper,
            "CoreOS"
        );
        assert_eq!(s.scripts.manifests_dir, DEFAULT_MANIFESTS_DIR);
        assert_eq!(s.master_timeout, DEFAULT_MASTER_TIMEOUT);
        assert_eq!(s.retry_pause, Duration::from_secs(30));
        assert_eq!(s.retries, DEFAULT_RETRIES);
        assert!(s.etcd_backup);
        let flags = args(&[
            "--retry-pause",
            "5s",
            "--retries",
            "0",
            "--no-etcd-backup",
            "--master-timeout",
            "1m",
        ]);
        let s = resolve_control_plane(&cfg.control_plane, &flags).unwrap();
        assert_eq!(
            (s.retry_pause, s.retries, s.etcd_backup, s.master_timeout),
            (Duration::from_secs(5), 0, false, Duration::from_secs(60))
        );
    }

    #[test]
    fn drain_knobs_flags_then_source_pool_then_file_then_defaults() {
        let cfg = Config::parse(
            "migration: {batch_size: 2, batch_soak: 1m, force: true, grace_period: 30}\npools:\n  alpha:\n    provider: sim\n    selector: x=y\n    migration: {batch_size: 50%, final_soak: 10m}\n",
        )
        .unwrap();
        let alpha = cfg.pool("alpha").unwrap();
        // Defaults only.
        let d = resolve_drain(&DrainArgs::default(), None, &MigrationKnobs::default());
        assert_eq!(d.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(d.eviction_retry_interval, Duration::from_secs(5));
        assert_eq!(d.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert!(d.wait_for_ready && !d.force && !d.delete_emptydir_data);
        assert_eq!((d.grace_period, d.timeout), (None, None));
        // File, with the source pool's block first.
        let d = resolve_drain(&DrainArgs::default(), Some(alpha), &cfg.migration);
        assert_eq!(d.batch_size, BatchSize::Percent(50));
        assert_eq!(d.final_soak, Duration::from_secs(600));
        assert_eq!(d.batch_soak, Duration::from_secs(60));
        assert!(d.force);
        assert_eq!(d.grace_period, Some(30));
        // Flags win; --grace-period -1 means the pod's own.
        let flags = DrainArgs {
            batch_size: Some(BatchSize::Nodes(3)),
            force: Some(false),
            grace_period: Some(-1),
            ..Default::default()
        };
        let d = resolve_drain(&flags, Some(alpha), &cfg.migration);
        assert_eq!(d.batch_size, BatchSize::Nodes(3));
        assert!(!d.force);
        assert_eq!(d.grace_period, None);
        assert_eq!(d.final_soak, Duration::from_secs(600));
    }
}
