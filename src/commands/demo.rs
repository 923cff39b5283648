//! `kbg demo`: the whole blue/green job on an embedded simulated cluster.
//!
//! Starts a simulated cluster from `examples/demo/scenario.yaml` (a control plane at
//! v1.33 and pool `alpha` one minor behind, running Deployments with PDBs, a StatefulSet,
//! a DaemonSet and a finished Job's pod), then runs exactly what an operator runs, through
//! the same code and the cluster's HTTPS API, with `examples/demo/kbg.yaml`:
//! `kbg deploy-pool beta`, `kbg migrate alpha beta`, `kbg teardown alpha`. It ends with a
//! summary, and exits 0 only when every workload is back at its desired Ready replicas on
//! beta and the simulator's own books show no PodDisruptionBudget violated.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::{Ctx, deploy_pool, migrate, teardown};
use crate::cli::{DemoArgs, DeployPoolArgs, DrainArgs, GlobalArgs, OutputFormat, TeardownArgs};
use crate::client::{self, KubeTarget};
use crate::clock::Clock;
use crate::config::{Config, JoinSettings};
use crate::error::{Error, Result};
use crate::providers::pool_spec;
use crate::settings::{self, Settings};
use crate::ui::Ui;

/// The demo's scenario (also a file to run by hand).
pub const SCENARIO: &str = include_str!("../../examples/demo/scenario.yaml");
/// The demo's `kbg.yaml` (also a file to run by hand).
pub const CONFIG: &str = include_str!("../../examples/demo/kbg.yaml");

/// One workload at the end.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRow {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// `namespace/name`.
    pub name: String,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// Its pods, by pool of the node they run on.
    pub pods_by_pool: BTreeMap<String, usize>,
}

/// What `kbg demo` prints at the end (`-o json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Whether every workload is back at its desired Ready replicas on beta and no PDB
    /// was violated.
    pub ok: bool,
    /// Pods evicted by the migration.
    pub pods_evicted: u64,
    /// PDB refusals (429) the drain retried.
    pub pdb_retries: u64,
    /// Times a pod waited on its PDB's watch instead of asking.
    pub pdb_waits: u64,
    /// PDB violations in the simulator's books (must be 0).
    pub pdb_violations: u64,
    /// Nodes that joined with pool beta.
    pub nodes_added: usize,
    /// Nodes of pool alpha deleted.
    pub nodes_removed: usize,
    /// Simulated seconds from the first command to the end.
    pub cluster_seconds: f64,
    /// Wall seconds, cluster start included.
    pub wall_seconds: f64,
    /// The cluster's speed (cluster seconds per wall second).
    pub speed: f64,
    /// API requests kbg sent.
    pub kbg_requests: usize,
    /// Every workload at the end.
    pub workloads: Vec<WorkloadRow>,
    /// How to run each step by hand.
    pub by_hand: Vec<String>,
}

impl DemoReport {
    fn human(&self) -> String {
        let table = crate::ui::table(
            ["WORKLOAD", "READY", "PODS BY POOL"],
            self.workloads.iter().map(|w| {
                [
                    format!("{} {}", w.kind, w.name),
                    format!("{}/{}", w.ready, w.desired),
                    w.pods_by_pool
                        .iter()
                        .map(|(p, n)| format!("{p}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            }),
        );
        format!(
            "{table}\n\n{}: {} nodes added, {} removed, {} pods evicted ({} PDB refusals, {} waits on PDBs), {} PDB violations; {:.0}s of cluster time in {:.1}s ({}x), {} API requests by kbg\n\nRun each step by hand:\n  {}",
            if self.ok { "done" } else { "FAILED" },
            self.nodes_added,
            self.nodes_removed,
            self.pods_evicted,
            self.pdb_retries,
            self.pdb_waits,
            self.pdb_violations,
            self.cluster_seconds,
            self.wall_seconds,
            self.speed,
            self.kbg_requests,
            self.by_hand.join("\n  ")
        )
    }
}

fn by_hand(speed: f64) -> Vec<String> {
    vec![
        format!(
            "kbg sim serve --scenario examples/demo/scenario.yaml --speed {speed} --kubeconfig kbg-demo.kubeconfig &"
        ),
        format!(
            "export KUBECONFIG=$PWD/kbg-demo.kubeconfig KBG_CONFIG=examples/demo/kbg.yaml KBG_CLOCK_SPEED={speed}"
        ),
        "kbg status".into(),
        "kbg deploy-pool beta".into(),
        "kbg migrate alpha beta --dry-run".into(),
        "kbg migrate alpha beta".into(),
        "kbg teardown alpha".into(),
        "kill %1   # stop the simulated cluster".into(),
    ]
}

/// `kbg demo`.
///
/// # Errors
/// Exit 2 for a bad `--speed`; exit 1 when a step fails or the end state is not right.
pub async fn run(global: &GlobalArgs, args: DemoArgs, ui: Ui) -> Result<ExitCode> {
    let clock = Clock::with_speed(args.speed)
        .map_err(|e| Error::usage(e.replace("--clock-speed", "--speed")))?;
    let scenario = kbg_sim::Scenario::from_yaml(SCENARIO).expect("the demo's scenario is valid");
    let wall = Instant::now();
    ui.step(format_args!(
        "starting a simulated cluster: control plane {}, pool alpha one minor behind; {} cluster seconds per second",
        scenario.version, args.speed
    ));
    let sim = kbg_sim::SimCluster::start(kbg_sim::SimConfig {
        scenario,
        speed: args.speed,
        ..kbg_sim::SimConfig::default()
    })
    .await
    .map_err(|e| Error::Failed(format!("starting the simulated cluster: {e}")))?;
    let result = demo(&sim, global, clock, args.speed, wall, &ui).await;
    sim.shutdown().await;
    let report = result?;
    ui.result(&report, DemoReport::human);
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::Failed(
            "the demo did not end as it must: see the workloads and PDB violations above".into(),
        ))
    }
}

async fn demo(
    sim: &kbg_sim::SimCluster,
    global: &GlobalArgs,
    clock: Clock,
    speed: f64,
    wall: Instant,
    ui: &Ui,
) -> Result<DemoReport> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::Failed(format!("creating a temp dir for the kubeconfig: {e}")))?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)
        .map_err(|e| Error::Failed(format!("writing the kubeconfig: {e}")))?;
    let settings = Settings {
        config: Config::parse(CONFIG).expect("the demo's kbg.yaml is valid"),
        target: KubeTarget {
            kubeconfig: Some(kubeconfig),
            ..KubeTarget::default()
        },
        state_namespace: settings::DEFAULT_STATE_NAMESPACE.into(),
        state_configmap: settings::DEFAULT_STATE_CONFIGMAP.into(),
        lease_duration: settings::DEFAULT_LEASE_DURATION,
        clock,
        output: global.output,
        join: JoinSettings::default(),
    };
    let client = client::connect(&settings.target).await?;
    let alpha = settings
        .config
        .pool("alpha")
        .map_err(Error::Failed)?
        .clone();
    let beta = settings.config.pool("beta").map_err(Error::Failed)?.clone();
    let started = sim.now();
    let step_ui = if global.output == OutputFormat::Table {
        ui.clone()
    } else {
        Ui::new(OutputFormat::Table)
    };

    ui.step("step 1/3: kbg deploy-pool beta");
    let ctx = Ctx::with_client(
        settings.clone(),
        client.clone(),
        "kbg deploy-pool beta".into(),
        step_ui.clone(),
    );
    let deployed = deploy_pool::execute(
        &ctx,
        &beta,
        &pool_spec(&beta, &settings.join, None),
        &DeployPoolArgs {
            name: "beta".into(),
            timeout: Duration::from_secs(600),
            cleanup_on_failure: false,
            retry_failed: 0,
            insecure_accept_host_keys: false,
        },
    )
    .await;
    ctx.finish().await;
    let deployed = deployed?;
    deployed.outcome()?;

    ui.step("step 2/3: kbg migrate alpha beta");
    let ctx = Ctx::with_client(
        settings.clone(),
        client.clone(),
        "kbg migrate alpha beta".into(),
        step_ui.clone(),
    );
    let drain = settings::resolve_drain(
        &DrainArgs::default(),
        Some(&alpha),
        &settings.config.migration,
    );
    let migrated = migrate::execute(&ctx, &alpha, &beta, &drain).await;
    ctx.finish().await;
    let migrated = migrated?;

    ui.step("step 3/3: kbg teardown alpha");
    let ctx = Ctx::with_client(
        settings.clone(),
        client.clone(),
        "kbg teardown alpha".into(),
        step_ui,
    );
    let torn = teardown::execute(
        &ctx,
        &alpha,
        &pool_spec(&alpha, &settings.join, None),
        &TeardownArgs {
            name: "alpha".into(),
            force: false,
            timeout: Duration::from_secs(600),
            insecure_accept_host_keys: false,
        },
    )
    .await;
    ctx.finish().await;
    let torn = torn?;

    let cluster_seconds = sim.now().duration_since(started).as_secs_f64();
    let workloads = workloads(&client).await?;
    let stats = sim.stats();
    let all_ready = workloads
        .iter()
        .all(|w| w.ready == w.desired && w.pods_by_pool.keys().all(|p| p == "beta"));
    Ok(DemoReport {
        ok: all_ready && stats.pdb_violations == 0,
        pods_evicted: migrated.pods_evicted,
        pdb_retries: migrated.pdb_retries,
        pdb_waits: migrated.pdb_waits,
        pdb_violations: stats.pdb_violations,
        nodes_added: deployed.nodes_ready,
        nodes_removed: torn.nodes_deleted.len(),
        cluster_seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
        speed,
        kbg_requests: sim
            .audit()
            .iter()
            .filter(|e| e.user_agent.starts_with("kbg/"))
            .count(),
        workloads,
        by_hand: by_hand(speed),
    })
}

/// Every Deployment and StatefulSet outside kube-system, with where its pods run.
async fn workloads(client: &kube::Client) -> Result<Vec<WorkloadRow>> {
    let lp = ListParams::default();
    let pods = Api::<Pod>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::kube("listing pods", e))?
        .items;
    let nodes: BTreeMap<String, String> =
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| Error::kube("listing nodes", e))?
            .items
            .iter()
            .map(|n| {
                let pool = crate::pool::labels(n)
                    .get(kbg_provider::POOL_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "-".into());
                (crate::pool::name(n).to_string(), pool)
            })
            .collect();
    let pool_of_node = |node: &str| {
        nodes
            .get(node)
            .cloned()
            .unwrap_or_else(|| format!("(node {node} gone)"))
    };
    let pods_of = |ns: &str, selector: &BTreeMap<String, String>| {
        let mut by_pool = BTreeMap::new();
        for p in pods.iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && p.metadata.deletion_timestamp.is_none()
                && selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        }) {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                *by_pool.entry(pool_of_node(n)).or_insert(0) += 1;
            }
        }
        by_pool
    };
    let mut rows = Vec::new();
    for d in Api::<Deployment>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::kube("listing Deployments", e))?
        .items
    {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        if ns == "kube-system" {
            continue;
        }
        let spec = d.spec.clone().unwrap_or_default();
        rows.push(WorkloadRow {
            kind: "Deployment".into(),
            name: format!("{ns}/{}", d.metadata.name.clone().unwrap_or_default()),
            desired: spec.replicas.unwrap_or(1),
            ready: d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
            pods_by_pool: pods_of(&ns, &spec.selector.match_labels.unwrap_or_default()),
        });
    }
    for s in Api::<StatefulSet>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::kube("listing StatefulSets", e))?
        .items
    {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let spec = s.spec.clone().unwrap_or_default();
        rows.push(WorkloadRow {
            kind: "StatefulSet".into(),
            name: format!("{ns}/{}", s.metadata.name.clone().unwrap_or_default()),
            desired: spec.replicas.unwrap_or(1),
            ready: s.status.and_then(|s| s.ready_replicas).unwrap_or(0),
            pods_by_pool: pods_of(&ns, &spec.selector.match_labels.unwrap_or_default()),
        });
    }
    rows.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    Ok(rows)
}
