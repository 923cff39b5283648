//! `kbg migrate FROM TO`: move every workload off pool FROM onto pool TO.
//!
//! 1. Before anything changes: both pools are named rightly (in `kbg.yaml`, or by label
//!    when there is no `kbg.yaml`), the drain flags are valid.
//! 2. Preflight (reads only): both pools have nodes, neither holds a control-plane node,
//!    the target's kubelets hold against the API server's version, and the drain engine's
//!    preflight ([`crate::preflight::preflight`]): target nodes Ready and schedulable with room for
//!    what must move, no PDB that can never allow a disruption, unreplicated and emptyDir
//!    pods named. Any blocker the flags do not allow: refuse with the full list, nothing
//!    changed. `--dry-run` stops here and prints the plan.
//! 3. Cordon every source node first (so no evicted pod lands on another old node), each
//!    with kbg's cordon note ([`crate::cordon`]), and an Event.
//! 4. Drain in batches ([`crate::plan::plan_batches`] over the sorted source nodes) with
//!    [`crate::drain::drain_nodes`]; after each batch, optionally wait until the moved
//!    workloads are Ready again, then soak (`--batch-soak`) before the next.
//! 5. `--final-soak`: keep the drained nodes cordoned and present for that long: the
//!    rollback window.
//!
//! Progress is recorded in kbg's state (`migrate.<from>.<to>`): the nodes cordoned and
//! drained, counters, when the final soak started. A rerun after a crash, Ctrl-C or a
//! timeout continues: cordoning is idempotent, drained nodes are skipped, the final soak
//! only waits what is left of it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::Ctx;
use crate::cli::MigrateArgs;
use crate::config::{Config, PoolConfig};
use crate::cordon::{self, Cordoned};
use crate::drain::{
    DrainError, DrainObserver, DrainOptions, DrainReport, NodeDrainReport, NodeOutcome,
    PodDisposition, PodRef, drain_nodes,
};
use crate::error::{Error, Result};
use crate::hand_over::HandOver;
use crate::plan::plan_batches;
use crate::pool;
use crate::preflight::{Allowances, Blocker, PreflightReport, preflight};
use crate::selector::validate_dns_label;
use crate::settings::{DrainSettings, Settings, resolve_drain};
use crate::skew;
use crate::state::{MigrateRecord, Phase, op_key};
use crate::ui::Ui;
use crate::version::KubeVersion;
use crate::workloads::{self, Workload};

/// Nodes read or cordoned at once (one request each): a 1,000-node pool is cordoned and
/// assessed in seconds, not minutes, without a burst of a thousand requests.
const NODE_CONCURRENCY: usize = 8;

/// The pool `name` as the command line names it: from `kbg.yaml`, or (when there is no
/// `kbg.yaml` at all) the nodes labelled `kbg.io/pool=<name>`.
///
/// # Errors
/// A usage error for a name that is not a pool name, or a pool `kbg.yaml` does not have.
pub fn pool_def(config: &Config, name: &str) -> Result<PoolConfig> {
    validate_dns_label(name).map_err(|e| Error::usage(format!("pool name {name:?} {e}")))?;
    if config.path.is_none() && config.pools.is_empty() {
        return Ok(PoolConfig::by_label(name));
    }
    config.pool(name).cloned().map_err(Error::usage)
}

/// The drain engine's options for `d`.
pub fn drain_options(d: &DrainSettings, clock: crate::clock::Clock) -> DrainOptions {
    DrainOptions {
        force: d.force,
        delete_emptydir_data: d.delete_emptydir_data,
        grace_period: d.grace_period,
        pod_selector: d.pod_selector.as_ref().map(ToString::to_string),
        eviction_retry_interval: d.eviction_retry_interval,
        max_concurrent_evictions: d.max_concurrent_evictions,
        node_timeout: Some(d.drain_timeout),
        clock,
    }
}

/// What `--dry-run` prints.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// Source pool.
    pub from: String,
    /// Target pool.
    pub to: String,
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// The settings the migration would run with.
    pub settings: DrainSettings,
    /// The batches, in order.
    pub batches: Vec<Vec<String>>,
    /// Pods the drain would evict.
    pub pods_to_evict: usize,
    /// The blockers under the flags given (the migration would refuse if any).
    pub blockers: Vec<Blocker>,
    /// Target kubelets the version skew policy refuses (the migration would refuse).
    pub skew: Vec<String>,
    /// The provider whose own drain hands each batch over (`juju` for a pool with
    /// `juju.use_charm_pause: true`), kbg's drain then confirming nothing is left; `None`
    /// when kbg's drain does the job.
    pub handed_over_by: Option<String>,
    /// Everything preflight read and decided.
    pub preflight: PreflightReport,
}

impl PlanReport {
    fn human(&self) -> String {
        let mut out = format!(
            "plan: migrate {} -> {}: {} source nodes in {} batches of {}, {} pods to evict\n",
            self.from,
            self.to,
            self.batches.iter().map(Vec::len).sum::<usize>(),
            self.batches.len(),
            self.settings.batch_size,
            self.pods_to_evict
        );
        if let Some(provider) = &self.handed_over_by {
            out.push_str(&format!(
                "each batch is handed over by the {provider} provider's own drain (Juju: the worker charm's pause action), then kbg's drain confirms nothing is left\n"
            ));
        }
        for (i, b) in self.batches.iter().enumerate() {
            out.push_str(&format!("batch {}: {}\n", i + 1, b.join(", ")));
            for n in b {
                let Some(node) = self.preflight.source_nodes.iter().find(|s| &s.name == n) else {
                    continue;
                };
                for p in &node.pods {
                    let what = match &p.disposition {
                        PodDisposition::Evict => "evict".to_string(),
                        PodDisposition::Skip { reason } => format!("skip ({reason})"),
                        PodDisposition::Block { reason } => format!("BLOCKED ({reason})"),
                    };
                    out.push_str(&format!("  {n}: {}: {what}\n", p.pod));
                }
            }
        }
        out.push_str(&format!(
            "target {}: {} nodes; free {}; to move {}\n",
            self.to,
            self.preflight.target_nodes.len(),
            self.preflight.target_free,
            self.preflight.to_move
        ));
        if self.blockers.is_empty() && self.skew.is_empty() {
            out.push_str("blockers: none; nothing was changed (dry run)");
        } else {
            out.push_str(&format!(
                "blockers ({}):{}\n",
                self.blockers.len() + self.skew.len(),
                blocker_lines(&self.blockers, &self.skew)
            ));
            out.push_str("nothing was changed (dry run)");
        }
        out
    }
}

/// What `kbg migrate` did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// Source pool.
    pub from: String,
    /// Target pool.
    pub to: String,
    /// Source nodes, all cordoned.
    pub source_nodes: Vec<String>,
    /// The batches, in order.
    pub batches: Vec<Vec<String>>,
    /// Nodes drained by this run.
    pub nodes_drained: Vec<String>,
    /// Nodes the source pool's provider drained itself before kbg's drain confirmed them
    /// (Juju's charm `pause`, `juju.use_charm_pause: true`); empty otherwise.
    pub handed_over: Vec<String>,
    /// Pods evicted by this run.
    pub pods_evicted: u64,
    /// PDB refusals (429) retried by this run.
    pub pdb_retries: u64,
    /// Times a pod waited on its PDB's watch instead of asking.
    pub pdb_waits: u64,
    /// Transient API faults retried by the drain.
    pub transient_retries: u64,
    /// Eviction requests sent by this run (every try and retry; the audit log's count).
    pub eviction_requests: u64,
    /// Pods evicted over every run of this migration.
    pub total_pods_evicted: u64,
    /// Final soak waited by this run (cluster seconds).
    pub final_soak_seconds: f64,
    /// Cluster seconds this run took.
    pub cluster_seconds: f64,
    /// Per-node drain reports of this run.
    pub drains: Vec<NodeDrainReport>,
}

impl MigrateReport {
    fn human(&self) -> String {
        format!(
            "migrated {} -> {}: {} nodes drained in {} batches, {} pods evicted, {} PDB refusals retried, {} waits on PDBs, {:.0}s cluster time; {}'s nodes stay cordoned until `kbg teardown {}` (`kbg rollback {} {}` undoes)",
            self.from,
            self.to,
            self.nodes_drained.len(),
            self.batches.len(),
            self.pods_evicted,
            self.pdb_retries,
            self.pdb_waits,
            self.cluster_seconds,
            self.from,
            self.from,
            self.from,
            self.to
        )
    }
}

/// `kbg migrate`.
///
/// # Errors
/// Exit 2 for bad names or flags; exit 1 when preflight refuses, another kbg holds a
/// pool, or the drain fails (the message says where the pools stand).
pub async fn run(settings: Settings, args: MigrateArgs, ui: Ui) -> Result<ExitCode> {
    if args.from == args.to {
        return Err(Error::usage(format!(
            "FROM and TO are both {:?}: migrate moves workloads between two pools",
            args.from
        )));
    }
    let from = pool_def(&settings.config, &args.from)?;
    let to = pool_def(&settings.config, &args.to)?;
    let drain = resolve_drain(&args.drain, Some(&from), &settings.config.migration);
    drain_options(&drain, settings.clock)
        .validate()
        .map_err(|e| Error::usage(e.to_string()))?;
    let ctx = Ctx::new(
        settings,
        format!("kbg migrate {} {}", from.name, to.name),
        ui,
    )
    .await?;
    let outcome = if args.dry_run {
        dry_run(&ctx, &from, &to, &drain).await
    } else {
        execute(&ctx, &from, &to, &drain).await.map(|r| {
            ctx.ui.result(&r, MigrateReport::human);
            ExitCode::SUCCESS
        })
    };
    ctx.finish().await;
    outcome
}

/// Migrate `from` to `to` through `ctx`, under both pools' Leases.
///
/// # Errors
/// As [`migrate`], and [`Error::Lock`] when a pool is held.
pub async fn execute(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain: &DrainSettings,
) -> Result<MigrateReport> {
    let key = op_key("migrate", &[&from.name, &to.name]);
    // A bad provider block of a pool that hands over is exit 2 before anything is written.
    HandOver::for_pool(ctx, from, drain).await?;
    // Refuse before taking the Leases, so a refusal writes nothing at all; preflight runs
    // again under them.
    let p = plan(ctx, from, to, drain).await?;
    if p.refuses() {
        return Err(Error::Refused(blocker_message(&from.name, &to.name, &p)));
    }
    ctx.locked(&[&from.name, &to.name], migrate(ctx, from, to, drain, &key))
        .await
}

/// The source and target nodes, checked: both pools have nodes, no control-plane node,
/// no node in both.
async fn pools(ctx: &Ctx, from: &PoolConfig, to: &PoolConfig) -> Result<(Vec<Node>, Vec<Node>)> {
    let source = list_pool(ctx, from).await?;
    let target = list_pool(ctx, to).await?;
    for (p, nodes) in [(from, &source), (to, &target)] {
        if nodes.is_empty() {
            return Err(Error::Refused(format!(
                "pool {} has no nodes (selector {}); nothing was changed",
                p.name,
                p.selector()
            )));
        }
        let masters = pool::control_plane_names(nodes);
        if !masters.is_empty() {
            return Err(Error::Refused(format!(
                "pool {} holds control-plane nodes ({}): kbg migrates worker pools only; nothing was changed",
                p.name,
                masters.join(", ")
            )));
        }
    }
    let both: Vec<&str> = source
        .iter()
        .map(pool::name)
        .filter(|n| target.iter().any(|t| pool::name(t) == *n))
        .collect();
    if !both.is_empty() {
        return Err(Error::Refused(format!(
            "nodes {} belong to both pools {} and {}; fix the pools' selectors; nothing was changed",
            both.join(", "),
            from.name,
            to.name
        )));
    }
    Ok((source, target))
}

async fn list_pool(ctx: &Ctx, p: &PoolConfig) -> Result<Vec<Node>> {
    pool::list_nodes(&ctx.client, p, ctx.clock)
        .await
        .map_err(|e| {
            Error::kube(
                format!("listing the nodes of pool {} ({})", p.name, p.selector()),
                e,
            )
        })
}

/// The controllers of the pods bound to `node` (a metadata list), each as a stand-in pod
/// with nothing but its namespace and owner references (all [`workloads::owners`] reads),
/// keyed by (namespace, controller kind, controller name). Pods without a controller are
/// left out: they have no workload to wait for.
async fn controllers_on(
    ctx: &Ctx,
    node: &str,
) -> std::result::Result<Vec<((String, String, String), Pod)>, kube::Error> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let list = crate::retry::retry(ctx.clock, "list pods", || api.list_metadata(&lp)).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|m| {
            let ns = m.metadata.namespace.unwrap_or_default();
            let refs = m.metadata.owner_references?;
            let c = refs.iter().find(|o| o.controller == Some(true))?;
            let key = (ns.clone(), c.kind.clone(), c.name.clone());
            let mut pod = Pod::default();
            pod.metadata.namespace = Some(ns);
            pod.metadata.owner_references = Some(refs);
            Some((key, pod))
        })
        .collect())
}

/// Target kubelets that the skew policy refuses against the API server, one line each.
fn skew_problems(target: &[Node], api: &KubeVersion) -> Vec<String> {
    target
        .iter()
        .filter_map(|n| {
            let v = pool::kubelet_version(n)?;
            let kv = KubeVersion::parse(v).ok()?;
            skew::check_kubelet(&kv, std::slice::from_ref(api))
                .err()
                .map(|e| format!("node {}: {e}", pool::name(n)))
        })
        .collect()
}

struct Planned {
    source: Vec<Node>,
    batches: Vec<Vec<String>>,
    preflight: PreflightReport,
    blockers: Vec<Blocker>,
    skew: Vec<String>,
}

impl Planned {
    fn refuses(&self) -> bool {
        !self.blockers.is_empty() || !self.skew.is_empty()
    }
}

async fn plan(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain: &DrainSettings,
) -> Result<Planned> {
    let (source, target) = pools(ctx, from, to).await?;
    let api = ctx.api_server_version().await?;
    let opts = drain_options(drain, ctx.clock);
    let report = preflight(&ctx.client, &source, &target, &opts)
        .await
        .map_err(|e| Error::kube(format!("preflight of {} -> {}", from.name, to.name), e))?;
    let blockers = report.blockers(&Allowances::from(&opts));
    let names: Vec<String> = source.iter().map(|n| pool::name(n).to_string()).collect();
    Ok(Planned {
        batches: plan_batches(&names, drain.batch_size),
        source,
        preflight: report,
        blockers,
        skew: skew_problems(&target, &api),
    })
}

async fn dry_run(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain: &DrainSettings,
) -> Result<ExitCode> {
    let handed_over_by = HandOver::for_pool(ctx, from, drain)
        .await?
        .map(|h| h.kind().to_string());
    let p = plan(ctx, from, to, drain).await?;
    let refuses = p.refuses();
    let report = PlanReport {
        from: from.name.clone(),
        to: to.name.clone(),
        dry_run: true,
        settings: drain.clone(),
        batches: p.batches,
        pods_to_evict: p.preflight.pods_to_evict(),
        blockers: p.blockers,
        skew: p.skew,
        handed_over_by,
        preflight: p.preflight,
    };
    ctx.ui.result(&report, PlanReport::human);
    if refuses {
        Err(Error::Refused(format!(
            "migrate {} -> {} would refuse: {} blockers (listed above); nothing was changed",
            from.name,
            to.name,
            report.blockers.len() + report.skew.len()
        )))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// One indented line per blocker, each starting with a newline.
fn blocker_lines(blockers: &[Blocker], skew: &[String]) -> String {
    blockers
        .iter()
        .map(ToString::to_string)
        .chain(skew.iter().cloned())
        .map(|l| format!("\n  {l}"))
        .collect()
}

fn blocker_message(from: &str, to: &str, p: &Planned) -> String {
    format!(
        "migrate {from} -> {to} refused before anything changed: {} blockers:{}",
        p.blockers.len() + p.skew.len(),
        blocker_lines(&p.blockers, &p.skew)
    )
}

/// Progress, Events and counters while draining.
struct Observer<'a> {
    ctx: &'a Ctx,
    command: String,
    bar: ProgressBar,
    /// Pods evicted by this run so far.
    evicted: AtomicU64,
    /// Told at each eviction, for [`record_evictions`].
    evicted_changed: tokio::sync::Notify,
    pdb_waits: AtomicU64,
    drained: Mutex<Vec<String>>,
}

/// The shortest time between two writes of the running eviction count (wall time): a
/// run killed mid-batch loses at most the evictions of this last moment from the
/// migration's total, and a large drain writes the state at most this often.
const EVICTION_COUNT_PERIOD: Duration = Duration::from_secs(1);

/// Keep `pods_evicted` of the migration's record (`key`) at `before` + this run's
/// evictions while a batch drains, so a kill mid-batch does not lose its count (the
/// record is written whole after each batch). Runs until dropped; a failed write is
/// tried again at the next eviction.
async fn record_evictions(ctx: &Ctx, key: &str, observer: &Observer<'_>, before: u64) {
    let mut written = observer.evicted.load(Ordering::Relaxed);
    loop {
        observer.evicted_changed.notified().await;
        let now = observer.evicted.load(Ordering::Relaxed);
        if now == written {
            continue;
        }
        let total = before + now;
        let saved = ctx
            .state
            .update(key, |cur: Option<MigrateRecord>| {
                let next = cur.map(|mut r| {
                    r.pods_evicted = r.pods_evicted.max(total);
                    r
                });
                (next, ())
            })
            .await;
        match saved {
            Ok(()) => written = now,
            Err(e) => tracing::debug!(error = %e, "could not record the eviction count yet"),
        }
        tokio::time::sleep(EVICTION_COUNT_PERIOD).await;
    }
}

impl DrainObserver for Observer<'_> {
    fn pod_evicted(&self, node: &str, pod: &PodRef) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
        self.evicted_changed.notify_one();
        tracing::debug!(%node, %pod, "evicted");
    }

    fn pod_gone(&self, _node: &str, _pod: &PodRef) {
        self.bar.inc(1);
    }

    fn pdb_blocked(&self, node: &str, pod: &PodRef, pdb: &str, message: &str) {
        self.pdb_waits.fetch_add(1, Ordering::Relaxed);
        self.bar.set_message(format!("{pod} waits for PDB {pdb}"));
        tracing::debug!(%node, %pod, pdb, message, "waiting for PDB");
    }

    fn node_drained(&self, node: &str, report: &NodeDrainReport) {
        if report.outcome == NodeOutcome::Drained {
            self.drained
                .lock()
                .expect("observer lock")
                .push(node.to_string());
            self.ctx.ui.step(format_args!(
                "drained {node}: {} pods evicted, {} PDB refusals retried, {:.0}s",
                report.pods_evicted, report.pdb_retries, report.cluster_seconds
            ));
            self.ctx.events.normal(
                node,
                "Drained",
                "Drain",
                format!(
                    "{}: {} pods evicted, {} PDB refusals retried, {:.0}s cluster time",
                    self.command, report.pods_evicted, report.pdb_retries, report.cluster_seconds
                ),
            );
        } else {
            let pods: Vec<String> = report
                .not_moved
                .iter()
                .take(5)
                .map(ToString::to_string)
                .collect();
            self.ctx.events.warning(
                node,
                "DrainFailed",
                "Drain",
                format!(
                    "{}: {:?}: {}",
                    self.command,
                    report.outcome,
                    pods.join("; ")
                ),
            );
        }
    }
}

/// Run the migration `key` from `from` to `to` (the caller holds both pools' Leases).
///
/// # Errors
/// [`Error::Refused`] when preflight finds blockers (nothing changed);
/// [`Error::Failed`] when the drain or a wait fails (the message says where the pools
/// stand); API errors.
pub async fn migrate(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain: &DrainSettings,
    key: &str,
) -> Result<MigrateReport> {
    let work = migrate_inner(ctx, from, to, drain, key);
    let Some(limit) = drain.timeout else {
        return work.await;
    };
    match ctx.clock.timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => {
            let msg = format!(
                "--timeout {} passed: migrate {} -> {} stopped; {}'s nodes stay cordoned; run the same command again to continue, or `kbg rollback {} {}`",
                crate::duration::display(limit),
                from.name,
                to.name,
                from.name,
                from.name,
                to.name
            );
            let m = msg.clone();
            let _ = ctx
                .state
                .update(key, |cur: Option<MigrateRecord>| {
                    let next = cur.map(|mut r| {
                        r.op.fail(&m);
                        r
                    });
                    (next, ())
                })
                .await;
            Err(Error::Failed(msg))
        }
    }
}

async fn migrate_inner(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain: &DrainSettings,
    key: &str,
) -> Result<MigrateReport> {
    let start = ctx.clock.now();
    let p = plan(ctx, from, to, drain).await?;
    if p.refuses() {
        return Err(Error::Refused(blocker_message(&from.name, &to.name, &p)));
    }
    let opts = drain_options(drain, ctx.clock);
    let hand_over = HandOver::for_pool(ctx, from, drain).await?;

    let prev = ctx.state.get::<MigrateRecord>(key).await?;
    let mut record = MigrateRecord::resume_or_new(prev, ctx.command(), &ctx.holder.identity());
    record.op.go(Phase::Planned);
    record.op.go(Phase::Cordoning);
    ctx.state.put(key, &record).await?;

    // Cordon the whole source pool first.
    ctx.ui.step(format_args!(
        "cordoning the {} nodes of pool {}",
        p.source.len(),
        from.name
    ));
    let cordons = stream::iter(&p.source)
        .map(|n| async move {
            let node = pool::name(n);
            let done = cordon::cordon(&ctx.client, node, key, ctx.clock)
                .await
                .map_err(|e| {
                    Error::kube(format!("cordoning node {node} of pool {}", from.name), e)
                })?;
            Ok::<_, Error>((node, done))
        })
        .buffered(NODE_CONCURRENCY);
    futures::pin_mut!(cordons);
    while let Some(cordoned) = cordons.next().await {
        let (node, done) = cordoned?;
        let was = match done {
            Cordoned::Now { was_unschedulable } => {
                ctx.events.normal(
                    node,
                    "Cordoned",
                    "Cordon",
                    format!(
                        "{}: cordoned before draining{}",
                        ctx.command(),
                        if was_unschedulable {
                            " (it was already unschedulable; rollback leaves it so)"
                        } else {
                            ""
                        }
                    ),
                );
                was_unschedulable
            }
            Cordoned::Already(note) => note.was_unschedulable,
        };
        record.cordoned.insert(node.to_string(), was);
    }
    record.op.go(Phase::Draining);
    ctx.state.put(key, &record).await?;

    let total = p.preflight.pods_to_evict() as u64;
    let observer = Observer {
        ctx,
        command: ctx.command().to_string(),
        bar: ctx.ui.bar(total, "evicted"),
        evicted: AtomicU64::new(0),
        evicted_changed: tokio::sync::Notify::new(),
        pdb_waits: AtomicU64::new(0),
        drained: Mutex::new(Vec::new()),
    };
    let mut report = MigrateReport {
        from: from.name.clone(),
        to: to.name.clone(),
        source_nodes: p.source.iter().map(|n| pool::name(n).to_string()).collect(),
        batches: p.batches.clone(),
        nodes_drained: Vec::new(),
        handed_over: Vec::new(),
        pods_evicted: 0,
        pdb_retries: 0,
        pdb_waits: 0,
        transient_retries: 0,
        eviction_requests: 0,
        total_pods_evicted: 0,
        final_soak_seconds: 0.0,
        cluster_seconds: 0.0,
        drains: Vec::new(),
    };
    let evicted_before = record.pods_evicted;
    // A run killed before the workloads of its last batch were Ready again: wait for
    // them first, as that run would have.
    let pending: BTreeSet<Workload> = record
        .waiting_ready
        .iter()
        .filter_map(|w| Workload::parse(w))
        .collect();
    if drain.wait_for_ready && !pending.is_empty() {
        let stopped = "stopped before draining further".to_string();
        wait_moved_ready(ctx, from, to, drain, &mut record, key, &pending, &stopped).await?;
    }
    let last = p.batches.len().saturating_sub(1);
    for (i, batch) in p.batches.iter().enumerate() {
        let todo: Vec<String> = batch
            .iter()
            .filter(|n| !record.drained.contains(n))
            .cloned()
            .collect();
        if todo.is_empty() {
            continue;
        }
        ctx.ui.step(format_args!(
            "batch {}/{}: draining {}",
            i + 1,
            p.batches.len(),
            todo.join(", ")
        ));
        for n in &todo {
            ctx.events.normal(
                n,
                "Draining",
                "Drain",
                format!("{}: batch {}/{}", ctx.command(), i + 1, p.batches.len()),
            );
        }
        let moving = if drain.wait_for_ready {
            // Only the controllers are needed: one stand-in per controller, not 30,000
            // whole pods at 1,000 nodes.
            let pods: Vec<Pod> = stream::iter(&todo)
                .map(|n| async move {
                    controllers_on(ctx, n)
                        .await
                        .map_err(|e| Error::kube(format!("listing the pods on node {n}"), e))
                })
                .buffered(NODE_CONCURRENCY)
                .try_fold(BTreeMap::new(), |mut all, on_node| async move {
                    for (key, pod) in on_node {
                        all.entry(key).or_insert(pod);
                    }
                    Ok(all)
                })
                .await?
                .into_values()
                .collect();
            workloads::owners(&ctx.client, &pods, ctx.clock)
                .await
                .map_err(|e| Error::kube("reading the workloads of the pods to move", e))?
        } else {
            BTreeSet::new()
        };

        if drain.wait_for_ready && !moving.is_empty() {
            // Recorded before the drain: a rerun after a kill waits for them first.
            record.waiting_ready = moving.iter().map(ToString::to_string).collect();
            ctx.state.put(key, &record).await?;
        }
        // The provider's own drain first where the pool asks for it; kbg's drain then
        // confirms that nothing is left (and moves what is).
        if let Some(h) = &hand_over {
            let nodes: Vec<&Node> = p
                .source
                .iter()
                .filter(|n| todo.iter().any(|t| t == pool::name(n)))
                .collect();
            match h.run(ctx, &nodes).await {
                Ok(o) => report.handed_over.extend(o.nodes),
                Err(e) => {
                    record.op.fail(&e.to_string());
                    ctx.state.put(key, &record).await?;
                    return Err(e);
                }
            }
        }
        let result = tokio::select! {
            r = drain_nodes(&ctx.client, &todo, &opts, &observer) => r,
            () = record_evictions(ctx, key, &observer, evicted_before) => {
                unreachable!("recording the eviction count runs until dropped")
            }
        };
        let (drained, failure) = match result {
            Ok(r) => (r, None),
            Err(e @ DrainError::NotDrained { .. }) => {
                let mut msg = e.to_string();
                let r = e.report().cloned().expect("NotDrained carries its report");
                if r.nodes.iter().any(|n| n.outcome == NodeOutcome::TimedOut) {
                    msg.push_str(&format!(
                        " (each node's drain is given --drain-timeout {})",
                        crate::duration::display(drain.drain_timeout)
                    ));
                }
                (r, Some(msg))
            }
            Err(e) => return Err(Error::Failed(format!("draining {}: {e}", todo.join(", ")))),
        };
        add(&mut report, &mut record, &drained);
        ctx.state.put(key, &record).await?;
        if let Some(msg) = failure {
            record.op.fail(&msg);
            ctx.state.put(key, &record).await?;
            return Err(Error::Failed(format!(
                "{msg}; pool {}'s nodes stay cordoned ({} of {} drained); fix what blocks and run the same command again to continue, or `kbg rollback {} {}`",
                from.name,
                record.drained.len(),
                p.source.len(),
                from.name,
                to.name
            )));
        }

        if drain.wait_for_ready && !moving.is_empty() {
            let stopped = format!("stopped after batch {}", i + 1);
            wait_moved_ready(ctx, from, to, drain, &mut record, key, &moving, &stopped).await?;
        }
        if i < last && !drain.batch_soak.is_zero() {
            record.op.go(Phase::Soaking);
            ctx.state.put(key, &record).await?;
            ctx.ui.step(format_args!(
                "batch soak: {}",
                crate::duration::display(drain.batch_soak)
            ));
            ctx.clock.sleep(drain.batch_soak).await;
            record.op.go(Phase::Draining);
            ctx.state.put(key, &record).await?;
        }
    }
    observer.bar.finish_and_clear();
    report.pdb_waits = observer.pdb_waits.load(Ordering::Relaxed);

    if !drain.final_soak.is_zero() {
        let started = *record
            .final_soak_started_at
            .get_or_insert_with(jiff::Timestamp::now);
        record.op.go(Phase::FinalSoak);
        ctx.state.put(key, &record).await?;
        let wall_since = jiff::Timestamp::now()
            .duration_since(started)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let left = drain
            .final_soak
            .saturating_sub(ctx.clock.to_cluster(wall_since));
        ctx.ui.step(format_args!(
            "final soak: keeping pool {}'s {} nodes cordoned for {} (rollback: kbg rollback {} {})",
            from.name,
            p.source.len(),
            crate::duration::display(left),
            from.name,
            to.name
        ));
        ctx.clock.sleep(left).await;
        report.final_soak_seconds = left.as_secs_f64();
    }
    record.op.go(Phase::Done);
    ctx.state.put(key, &record).await?;
    report.total_pods_evicted = record.pods_evicted;
    report.cluster_seconds = ctx.clock.elapsed(start).as_secs_f64();
    Ok(report)
}

/// Wait until the workloads `moving` are back at their desired Ready replicas, then clear
/// the record's note of them; on `--ready-timeout`, record the failure and say where the
/// migration `stopped`.
#[allow(clippy::too_many_arguments)]
async fn wait_moved_ready(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain: &DrainSettings,
    record: &mut MigrateRecord,
    key: &str,
    moving: &BTreeSet<Workload>,
    stopped: &str,
) -> Result<()> {
    ctx.ui.step(format_args!(
        "waiting for {} moved workloads to be Ready",
        moving.len()
    ));
    if let Err(missing) =
        workloads::wait_ready(&ctx.client, moving, ctx.clock, drain.ready_timeout).await
    {
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        let msg = format!(
            "moved workloads not back at their desired Ready replicas after {} (--ready-timeout; --wait-for-ready=false skips this wait): {}",
            crate::duration::display(drain.ready_timeout),
            names.join(", ")
        );
        record.op.fail(&msg);
        ctx.state.put(key, record).await?;
        return Err(Error::Failed(format!(
            "{msg}; {stopped}; pool {}'s nodes stay cordoned; run the same command again to continue, or `kbg rollback {} {}`",
            from.name, from.name, to.name
        )));
    }
    record.waiting_ready.clear();
    ctx.state.put(key, record).await?;
    Ok(())
}

fn add(report: &mut MigrateReport, record: &mut MigrateRecord, d: &DrainReport) {
    report.pods_evicted += d.pods_evicted as u64;
    report.pdb_retries += u64::from(d.pdb_retries);
    report.transient_retries += u64::from(d.transient_retries);
    report.eviction_requests += u64::from(d.eviction_requests);
    record.pods_evicted += d.pods_evicted as u64;
    record.pdb_retries += u64::from(d.pdb_retries);
    for n in &d.nodes {
        if n.outcome == NodeOutcome::Drained && !record.drained.contains(&n.node) {
            record.drained.push(n.node.clone());
            report.nodes_drained.push(n.node.clone());
        }
        report.drains.push(n.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_by_label_without_a_config_and_by_name_with_one() {
        let none = Config::default();
        assert_eq!(
            pool_def(&none, "alpha").unwrap().selector().to_string(),
            "kbg.io/pool=alpha"
        );
        assert_eq!(pool_def(&none, "Alpha").unwrap_err().exit_code(), 2);
        let mut cfg =
            Config::parse("pools:\n  beta:\n    provider: sim\n    version: v1.31\n    count: 1\n")
                .unwrap();
        cfg.path = Some("kbg.yaml".into());
        assert!(pool_def(&cfg, "beta").is_ok());
        let e = pool_def(&cfg, "gamma").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("its pools are: beta"), "{e}");
    }

    #[test]
    fn drain_options_carry_every_setting() {
        let d = resolve_drain(
            &crate::cli::DrainArgs {
                force: Some(true),
                grace_period: Some(30),
                pod_selector: Some("app=web".parse().unwrap()),
                max_concurrent_evictions: Some(7),
                ..Default::default()
            },
            None,
            &Default::default(),
        );
        let o = drain_options(&d, crate::clock::Clock::real());
        assert!(o.force && !o.delete_emptydir_data);
        assert_eq!(o.grace_period, Some(30));
        assert_eq!(o.pod_selector.as_deref(), Some("app=web"));
        assert_eq!(o.max_concurrent_evictions, 7);
        assert_eq!(o.node_timeout, Some(crate::settings::DEFAULT_DRAIN_TIMEOUT));
        assert_eq!(o.eviction_retry_interval, Duration::from_secs(5));
        assert!(o.validate().is_ok());
    }
}
