//! `kbg teardown NAME`: delete a pool's Node objects and deprovision its machines.
//!
//! Refuses, with nothing changed:
//! - always, while the pool holds a control-plane node (masters are upgraded in place,
//!   never torn down);
//! - unless `--force`, while any pod other than DaemonSet pods, mirror pods and
//!   finished pods is on the pool's nodes (the workloads have not been migrated).
//!
//! Then: cordon the nodes (so nothing lands between the check and the delete) and check
//! again, publish an Event and delete each Node, wait on a watch until they are gone,
//! deprovision every machine the provider lists for the pool, and verify that the
//! provider lists none and no node of the pool is left. Every step is idempotent: a rerun
//! after a crash finds fewer nodes and machines and finishes the job.

use std::process::ExitCode;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kbg_provider::{PoolSpec, Provider};
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use serde::Serialize;

use super::Ctx;
use crate::cli::TeardownArgs;
use crate::client::is_not_found;
use crate::config::PoolConfig;
use crate::cordon;
use crate::error::{Error, Result};
use crate::pool;
use crate::providers::{self, ProviderOptions, pool_spec};
use crate::retry::retry;
use crate::settings::Settings;
use crate::state::{OpHeader, Phase, StateLedger, TeardownRecord, op_key, pool_key};
use crate::ui::Ui;
use crate::wait;

/// The result of `kbg teardown`.
#[derive(Debug, Clone, Serialize)]
pub struct TeardownReport {
    /// The pool.
    pub pool: String,
    /// Node objects deleted.
    pub nodes_deleted: Vec<String>,
    /// Machines deprovisioned.
    pub machines_deprovisioned: Vec<String>,
    /// Pods that were still on the nodes (only with `--force`).
    pub pods_left: Vec<String>,
    /// Cluster seconds the command took.
    pub cluster_seconds: f64,
}

impl TeardownReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if !self.pods_left.is_empty() {
            out.push_str(&format!(
                "forced: {} pods were still on the nodes: {}\n",
                self.pods_left.len(),
                self.pods_left.join(", ")
            ));
        }
        out.push_str(&format!(
            "pool {}: {} nodes deleted ({}), {} machines deprovisioned, {:.0}s cluster time",
            self.pool,
            self.nodes_deleted.len(),
            self.nodes_deleted.join(", "),
            self.machines_deprovisioned.len(),
            self.cluster_seconds
        ));
        out
    }
}

/// `kbg teardown`.
///
/// # Errors
/// Exit 2 for a pool missing from `kbg.yaml` or bad provider settings; exit 1 when it
/// refuses (control-plane node, pods left) or fails.
pub async fn run(settings: Settings, args: TeardownArgs, ui: Ui) -> Result<ExitCode> {
    let pool = settings
        .config
        .pool(&args.name)
        .map_err(Error::usage)?
        .clone();
    let spec = pool_spec(&pool, &settings.join, settings.base_dir().as_deref());
    let ctx = Ctx::new(settings, format!("kbg teardown {}", pool.name), ui).await?;
    let result = execute(&ctx, &pool, &spec, &args).await;
    let outcome = result.map(|report| {
        ctx.ui.result(&report, TeardownReport::human);
        ExitCode::SUCCESS
    });
    ctx.finish().await;
    outcome
}

/// Tear `pool` down through `ctx`, under the pool's Lease.
///
/// # Errors
/// As [`run`].
pub async fn execute(
    ctx: &Ctx,
    pool: &PoolConfig,
    spec: &PoolSpec,
    args: &TeardownArgs,
) -> Result<TeardownReport> {
    let ledger = Arc::new(StateLedger::new(ctx.state.clone()));
    let options = ProviderOptions {
        base_dir: ctx.settings.base_dir(),
        insecure_accept_host_keys: args.insecure_accept_host_keys,
    };
    let provider = providers::build(pool, spec, &ctx.client, ledger, &options).await?;
    // Refuse before taking the Lease, so a refusal writes nothing; checked again under it.
    check(ctx, pool, args.force).await?;
    ctx.locked(
        &[&pool.name],
        teardown(ctx, pool, spec, provider.as_ref(), args),
    )
    .await
}

/// The pool's nodes and the workloads left on them, after refusing (nothing changed)
/// when the pool holds a control-plane node, or workloads without `force`.
async fn check(ctx: &Ctx, pool: &PoolConfig, force: bool) -> Result<(Vec<Node>, Vec<String>)> {
    let name = pool.name.as_str();
    let nodes = pool::list_nodes(&ctx.client, pool, ctx.clock)
        .await
        .map_err(|e| Error::kube(format!("listing the nodes of pool {name}"), e))?;
    let masters = pool::control_plane_names(&nodes);
    if !masters.is_empty() {
        return Err(Error::Refused(format!(
            "pool {name} holds control-plane nodes ({}): kbg never tears down the control plane; nothing was changed",
            masters.join(", ")
        )));
    }
    let left = workloads_on(ctx, &nodes).await?;
    if !left.is_empty() && !force {
        return Err(Error::Refused(format!(
            "pool {name} still runs {} pods other than DaemonSet and mirror pods ({}); move them first (kbg migrate {name} <pool>) or pass --force; nothing was changed",
            left.len(),
            left.join(", ")
        )));
    }

    Ok((nodes, left))
}

/// The pods that keep each of `nodes` from being deleted.
async fn workloads_on(ctx: &Ctx, nodes: &[Node]) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for n in nodes {
        let name = pool::name(n);
        let pods = pool::pods_on(&ctx.client, name, ctx.clock)
            .await
            .map_err(|e| Error::kube(format!("listing the pods on node {name}"), e))?;
        left.extend(
            pods.iter()
                .filter(|p| pool::is_workload(p))
                .map(|p| format!("{} on {name}", pool::pod_ref(p))),
        );
    }
    Ok(left)
}

async fn teardown(
    ctx: &Ctx,
    pool: &PoolConfig,
    spec: &PoolSpec,
    provider: &dyn Provider,
    args: &TeardownArgs,
) -> Result<TeardownReport> {
    let start = ctx.clock.now();
    let name = pool.name.as_str();
    let key = op_key("teardown", &[name]);
    let list_err = |e| Error::kube(format!("listing the nodes of pool {name}"), e);

    let (nodes, _) = check(ctx, pool, args.force).await?;

    let mut record = ctx
        .state
        .get::<TeardownRecord>(&key)
        .await?
        .filter(|r| !r.op.phase.is_finished())
        .unwrap_or_else(|| TeardownRecord {
            op: OpHeader::new(ctx.command(), &ctx.holder.identity()),
            nodes_deleted: Vec::new(),
            machines_removed: Vec::new(),
        });
    record.op.holder = ctx.holder.identity();
    if record.op.phase != Phase::Cordoning {
        record.op.go(Phase::Planned);
        record.op.go(Phase::Cordoning);
    }
    ctx.state.put(&key, &record).await?;

    // Cordon, then look again: nothing may have landed since the check.
    for n in &nodes {
        let node = pool::name(n);
        let done = cordon::cordon(&ctx.client, node, &key, ctx.clock)
            .await
            .map_err(|e| Error::kube(format!("cordoning node {node}"), e))?;
        if let cordon::Cordoned::Now { .. } = done {
            ctx.events.normal(
                node,
                "Cordoned",
                "Cordon",
                format!("{}: cordoned before deleting the node", ctx.command()),
            );
        }
    }
    let left = workloads_on(ctx, &nodes).await?;
    if !left.is_empty() && !args.force {
        record.op.fail("pods arrived while cordoning");
        ctx.state.put(&key, &record).await?;
        return Err(Error::Refused(format!(
            "pool {name}: {} pods arrived while its nodes were being cordoned ({}); the nodes are cordoned and kept; move the pods and run teardown again",
            left.len(),
            left.join(", ")
        )));
    }
    if !left.is_empty() {
        ctx.ui.warn(format_args!(
            "--force: deleting nodes with {} pods still on them",
            left.len()
        ));
    }

    // The machines, listed while their nodes still exist (a simulated machine is its
    // node, and other providers may need the node to find theirs).
    let machines = providers::list(provider, spec, ctx.clock).await?;

    record.op.go(Phase::DeletingNodes);
    ctx.state.put(&key, &record).await?;
    let api: Api<Node> = Api::all(ctx.client.clone());
    let names: Vec<String> = nodes.iter().map(|n| pool::name(n).to_string()).collect();
    ctx.ui.step(format_args!(
        "deleting {} nodes of pool {name}",
        names.len()
    ));
    for node in &nodes {
        let n = pool::name(node);
        if pool::is_control_plane(node) {
            continue; // Checked above; never, whatever happens.
        }
        ctx.events.normal(
            n,
            "Deleting",
            "DeleteNode",
            format!(
                "{}: deleting the node, then deprovisioning its machine",
                ctx.command()
            ),
        );
        let dp = DeleteParams::default();
        match retry(ctx.clock, "delete node", || api.delete(n, &dp)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting node {n} of pool {name}"), e)),
        }
        if !record.nodes_deleted.iter().any(|d| d == n) {
            record.nodes_deleted.push(n.to_string());
        }
    }
    ctx.state.put(&key, &record).await?;
    wait::until(
        api.clone(),
        watcher::Config::default(),
        ctx.clock,
        args.timeout,
        format!("the deleted nodes of pool {name} to be gone"),
        |all| !all.iter().any(|n| names.iter().any(|d| d == pool::name(n))),
    )
    .await
    .map_err(|t| Error::Failed(format!("{t}: {}", still_there(&t.last, &names))))?;

    record.op.go(Phase::Deprovisioning);
    ctx.state.put(&key, &record).await?;
    let mut machines = machines;
    for m in providers::list(provider, spec, ctx.clock).await? {
        if !machines.iter().any(|k| k.name == m.name) {
            machines.push(m);
        }
    }
    let mut removed = Vec::new();
    if !machines.is_empty() {
        ctx.ui.step(format_args!(
            "deprovisioning {} machines of pool {name}",
            machines.len()
        ));
        let report = providers::deprovision(provider, spec, &machines, ctx.clock).await?;
        removed = report.removed;
        if !report.failed.is_empty() {
            let why: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
            record.op.fail(&why.join("; "));
            ctx.state.put(&key, &record).await?;
            return Err(Error::Failed(format!(
                "pool {name}: its nodes are deleted but {} machines could not be deprovisioned: {}; run teardown again",
                why.len(),
                why.join("; ")
            )));
        }
    }
    for r in removed {
        if !record.machines_removed.contains(&r) {
            record.machines_removed.push(r);
        }
    }

    // Verify: no machine listed, no node of the pool.
    let still = providers::list(provider, spec, ctx.clock).await?;
    let nodes_left = pool::list_nodes(&ctx.client, pool, ctx.clock)
        .await
        .map_err(list_err)?;
    if !still.is_empty() || !nodes_left.is_empty() {
        let m: Vec<&str> = still.iter().map(|m| m.name.as_str()).collect();
        let n: Vec<&str> = nodes_left.iter().map(pool::name).collect();
        record.op.fail("machines or nodes still present");
        ctx.state.put(&key, &record).await?;
        return Err(Error::Failed(format!(
            "pool {name}: still present after teardown: machines [{}], nodes [{}]; run teardown again",
            m.join(", "),
            n.join(", ")
        )));
    }
    record.op.go(Phase::Done);
    ctx.state.put(&key, &record).await?;
    ctx.state.remove(&pool_key(name)).await?;
    Ok(TeardownReport {
        pool: name.to_string(),
        nodes_deleted: record.nodes_deleted.clone(),
        machines_deprovisioned: record.machines_removed.clone(),
        pods_left: left,
        cluster_seconds: ctx.clock.elapsed(start).as_secs_f64(),
    })
}

/// The nodes of `deleted` still in `last`, each with the finalizers holding it (what a
/// teardown that timed out waiting for them to be gone names).
fn still_there(last: &[Arc<Node>], deleted: &[String]) -> String {
    let left: Vec<String> = last
        .iter()
        .filter(|n| deleted.iter().any(|d| d == pool::name(n)))
        .map(|n| match n.metadata.finalizers.as_deref() {
            Some(f) if !f.is_empty() => {
                format!(
                    "{} still there (finalizers: {})",
                    pool::name(n),
                    f.join(", ")
                )
            }
            _ => format!("{} still there", pool::name(n)),
        })
        .collect();
    if left.is_empty() {
        "the watch saw none of them".into()
    } else {
        left.join("; ")
    }
}
