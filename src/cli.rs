//! The command line: what each flag means, with kubectl's names where kubectl has one.
//!
//! These types only carry what was typed (and what the environment gave, through clap's
//! `env`); [`crate::settings`] merges them with `kbg.yaml` and the defaults in one place.
//! Every optional knob is an `Option` here so that "not given" stays distinguishable
//! from "given with the default value".

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::clap_parse as duration;
use crate::plan::BatchSize;
use crate::selector::Selector;
use crate::version::KubeVersion;

/// Replace Kubernetes worker pools blue/green: deploy a new pool, migrate the workloads
/// onto it through the Eviction API, tear the old pool down.
#[derive(Debug, Parser)]
#[command(name = "kbg", version, about, long_about = None)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// kbg's config file [default: ./kbg.yaml]
    #[arg(long, global = true, env = "KBG_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The kubeconfig file (else KUBECONFIG, cluster.kubeconfig, ~/.kube/config, in-cluster)
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context (else cluster.context, else the current context)
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace of kbg's state ConfigMap and Leases [default: kube-system]
    #[arg(
        long,
        global = true,
        env = "KBG_STATE_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub state_namespace: Option<String>,

    /// For simulated clusters: how many cluster seconds pass per wall second. Every
    /// duration kbg is given is cluster time [default: 1]
    #[arg(
        long,
        global = true,
        env = "KBG_CLOCK_SPEED",
        allow_negative_numbers = true,
        value_name = "X"
    )]
    pub clock_speed: Option<f64>,

    /// Client-side limit on API requests per second, as client-go's QPS (kubectl: 5) [default: none]
    #[arg(long, global = true, env = "KBG_KUBE_API_QPS", value_name = "QPS")]
    pub kube_api_qps: Option<f64>,

    /// Requests that may go at once above --kube-api-qps, as client-go's Burst [default: 10]
    #[arg(long, global = true, env = "KBG_KUBE_API_BURST", value_name = "N")]
    pub kube_api_burst: Option<u32>,

    /// How long the API server may take to answer each request (wall time; 0: no
    /// limit), kube-apiserver's own limit by default [default: 60s]
    #[arg(
        long,
        global = true,
        env = "KBG_REQUEST_TIMEOUT",
        value_parser = duration,
        allow_hyphen_values = true,
        value_name = "DURATION"
    )]
    pub request_timeout: Option<Duration>,
    /// Output format of the result on stdout
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// More logs on stderr (-v info, -vv debug, -vvv trace; RUST_LOG overrides)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Human tables and sentences.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// kbg's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision pool NAME and wait until all its nodes are Ready
    DeployPool(DeployPoolArgs),
    /// Cordon pool FROM and drain it so its workloads move to pool TO
    Migrate(MigrateArgs),
    /// Delete pool NAME's nodes and deprovision its machines
    Teardown(TeardownArgs),
    /// Uncordon the FROM nodes kbg cordoned; optionally drain TO back onto FROM
    Rollback(RollbackArgs),
    /// Show the pools, their nodes and the operations in progress
    Status(StatusArgs),
    /// Show the control plane and kubelet versions and the steps of an upgrade, like kubeadm upgrade plan
    Plan(PlanArgs),
    /// Upgrade the masters in place to VERSION, one by one, then their kubelets
    UpgradeControlPlane(UpgradeControlPlaneArgs),
    /// Run deploy-pool, migrate and teardown on an embedded simulated cluster
    Demo(DemoArgs),
    /// Print the RBAC manifest kbg needs (ServiceAccount, roles, bindings) for kubectl apply
    Rbac(RbacArgs),
    /// The simulated cluster
    #[command(subcommand)]
    Sim(SimCommand),
}

/// `kbg sim …`.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve a simulated cluster in the foreground until Ctrl-C or SIGTERM
    Serve(kbg_sim::ServeArgs),
}

/// `kbg deploy-pool NAME`.
#[derive(Debug, Args, Clone)]
pub struct DeployPoolArgs {
    /// The pool, as named under pools: in kbg.yaml
    pub name: String,

    /// How long to wait for every node to register and be Ready (cluster time)
    #[arg(long, value_parser = duration, allow_hyphen_values = true, default_value = "10m", value_name = "DURATION")]
    pub timeout: Duration,

    /// Deprovision the machines that failed or never joined before giving up
    #[arg(long)]
    pub cleanup_on_failure: bool,

    /// Replace machines that failed or never joined, up to N times, with fresh ones
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub retry_failed: usize,

    /// Bare metal: accept hosts missing from known_hosts (a changed key is still refused)
    #[arg(long)]
    pub insecure_accept_host_keys: bool,
}

/// The drain flags: kubectl drain's names and meanings, and migrate's own.
#[derive(Debug, Args, Clone, Default)]
pub struct DrainArgs {
    /// Nodes drained at once: a count, or a share of the pool such as 25% [default: 1]
    #[arg(
        long,
        env = "KBG_BATCH_SIZE",
        allow_negative_numbers = true,
        value_name = "N|N%"
    )]
    pub batch_size: Option<BatchSize>,

    /// Wait after each batch but the last, source nodes still present [default: 0s]
    #[arg(long, env = "KBG_BATCH_SOAK", value_parser = duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub batch_soak: Option<Duration>,

    /// Wait after the whole pool is drained, its nodes kept cordoned (rollback window) [default: 0s]
    #[arg(long, env = "KBG_FINAL_SOAK", value_parser = duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub final_soak: Option<Duration>,

    /// Evictions in flight at once
    #[arg(long, env = "KBG_MAX_CONCURRENT_EVICTIONS", value_parser = clap::value_parser!(u32).range(1..), allow_negative_numbers = true, value_name = "N")]
    pub max_concurrent_evictions: Option<u32>,

    /// Wait before retrying a pod whose PodDisruptionBudget refused it [default: 5s, as kubectl drain]
    #[arg(long, env = "KBG_EVICTION_RETRY_INTERVAL", value_parser = duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub eviction_retry_interval: Option<Duration>,

    /// Give up on a node after this long (kubectl drain's --timeout) [default: 1h]
    #[arg(long, env = "KBG_DRAIN_TIMEOUT", value_parser = duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub drain_timeout: Option<Duration>,

    /// Give up on the whole operation after this long [default: none]
    #[arg(long, env = "KBG_TIMEOUT", value_parser = duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Wait until the moved workloads are Ready again before the next batch [default: true]
    #[arg(long, env = "KBG_WAIT_FOR_READY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub wait_for_ready: Option<bool>,

    /// How long to wait for the moved workloads to be Ready again [default: 10m]
    #[arg(long, env = "KBG_READY_TIMEOUT", value_parser = duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub ready_timeout: Option<Duration>,

    /// Also evict pods that no controller manages (they are not recreated)
    #[arg(long, env = "KBG_FORCE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub force: Option<bool>,

    /// Also evict pods with emptyDir volumes (their data is lost)
    #[arg(long, env = "KBG_DELETE_EMPTYDIR_DATA", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub delete_emptydir_data: Option<bool>,

    /// Seconds each evicted pod gets to stop; -1 uses the pod's own [default: -1]
    #[arg(long, env = "KBG_GRACE_PERIOD", allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..), value_name = "SECONDS")]
    pub grace_period: Option<i64>,

    /// Only evict pods matching this label selector
    #[arg(
        long,
        env = "KBG_POD_SELECTOR",
        allow_hyphen_values = true,
        value_name = "SELECTOR"
    )]
    pub pod_selector: Option<Selector>,
}

/// `kbg migrate FROM TO`.
#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    /// The pool to drain (source, blue)
    pub from: String,
    /// The pool that receives the workloads (target, green)
    pub to: String,

    /// Print the plan (batches, pods per node, blockers) and touch nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Drain flags.
    #[command(flatten)]
    pub drain: DrainArgs,
}

/// `kbg teardown NAME`.
#[derive(Debug, Args, Clone)]
pub struct TeardownArgs {
    /// The pool to remove
    pub name: String,

    /// Delete the nodes even with pods other than DaemonSet and mirror pods on them
    #[arg(long)]
    pub force: bool,

    /// How long to wait for the nodes and machines to be gone (cluster time)
    #[arg(long, value_parser = duration, allow_hyphen_values = true, default_value = "10m", value_name = "DURATION")]
    pub timeout: Duration,

    /// Bare metal: accept hosts missing from known_hosts (a changed key is still refused)
    #[arg(long)]
    pub insecure_accept_host_keys: bool,
}

/// `kbg rollback FROM TO`.
#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    /// The source pool of the migration to undo
    pub from: String,
    /// Its target pool
    pub to: String,

    /// After uncordoning FROM, cordon and drain TO so the workloads go back
    #[arg(long)]
    pub drain_back: bool,

    /// Drain flags, for --drain-back.
    #[command(flatten)]
    pub drain: DrainArgs,
}

/// `kbg status`.
#[derive(Debug, Args, Clone, Default)]
pub struct StatusArgs {
    /// Only this pool
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
}

/// `kbg plan`.
#[derive(Debug, Args, Clone, Default)]
pub struct PlanArgs {
    /// The version to plan for (without it: the versions on offer)
    #[arg(long, value_name = "VERSION")]
    pub to: Option<KubeVersion>,
}

/// `kbg upgrade-control-plane VERSION`.
#[derive(Debug, Args, Clone)]
pub struct UpgradeControlPlaneArgs {
    /// The version the masters move to: v1.34.1, 1.34.1 (one minor at most above the oldest API server)
    pub version: KubeVersion,

    /// Print the steps and the scripts kbg would run, and touch nothing
    #[arg(long)]
    pub dry_run: bool,

    /// How long each master gets to come back (cluster time) [default: control_plane.master_timeout, else 10m]
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub master_timeout: Option<Duration>,

    /// Pause before repeating a secondary master's failed upgrade [default: control_plane.retry_pause, else 90s]
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub retry_pause: Option<Duration>,

    /// How many times a secondary master's failed upgrade is repeated [default: control_plane.retries, else 2]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Do not snapshot etcd before the first master
    #[arg(long)]
    pub no_etcd_backup: bool,

    /// Bare metal: accept hosts missing from known_hosts (a changed key is still refused)
    #[arg(long)]
    pub insecure_accept_host_keys: bool,
}

/// `kbg rbac`.
#[derive(Debug, Args, Clone)]
pub struct RbacArgs {
    /// Namespace of the ServiceAccount kbg runs as
    #[arg(long, default_value = "kube-system", value_name = "NAMESPACE")]
    pub namespace: String,

    /// Name of the ServiceAccount, ClusterRole and ClusterRoleBinding (the Role and
    /// RoleBinding are NAME-state)
    #[arg(long, default_value = "kbg", value_name = "NAME")]
    pub service_account: String,
}

/// `kbg demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Speed of the embedded cluster: cluster seconds per wall second
    #[arg(long, default_value_t = 10.0, value_name = "X")]
    pub speed: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_follow_kubectl() {
        let cli = Cli::try_parse_from([
            "kbg",
            "migrate",
            "alpha",
            "beta",
            "--force",
            "--delete-emptydir-data=false",
            "--grace-period",
            "-1",
            "--pod-selector",
            "app=web",
            "--batch-size",
            "25%",
            "--drain-timeout",
            "5m",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Command::Migrate(m) = cli.command else {
            panic!()
        };
        assert_eq!(m.drain.force, Some(true));
        assert_eq!(m.drain.delete_emptydir_data, Some(false));
        assert_eq!(m.drain.grace_period, Some(-1));
        assert_eq!(m.drain.batch_size, Some(BatchSize::Percent(25)));
        assert_eq!(m.drain.drain_timeout, Some(Duration::from_secs(300)));
        assert_eq!(m.drain.wait_for_ready, None);
        assert!(!m.dry_run);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["kbg", "migrate", "a", "b", "--batch-size", "0"][..],
            &["kbg", "migrate", "a", "b", "--batch-soak", "5"],
            &["kbg", "migrate", "a", "b", "--grace-period", "-2"],
            &[
                "kbg",
                "migrate",
                "a",
                "b",
                "--max-concurrent-evictions",
                "0",
            ],
            &["kbg", "migrate", "a", "b", "--pod-selector", "a in b"],
            &["kbg", "deploy-pool"],
            &["kbg", "teardown", "a", "--timeout", "forever"],
            &["kbg", "upgrade-control-plane", "1.x"],
            &["kbg", "upgrade-control-plane"],
            &["kbg", "plan", "--to", "latest"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
