//! `kbg rollback FROM TO`: undo `kbg migrate FROM TO`.
//!
//! Uncordons the FROM nodes that migration cordoned, as their cordon notes say: a node a
//! person had cordoned before stays cordoned (kbg only removes its note), a node without
//! the migration's note is not touched. When FROM was handed over by its provider
//! (`juju.use_charm_pause`), the provider's hand-over of the uncordoned nodes is undone
//! too (the worker charm's `resume` action), so the charm no longer reports them paused;
//! a rollback interrupted before that finishes it when run again. Marks the migration rolled back in kbg's state,
//! so a rerun of `kbg migrate FROM TO` starts afresh. With `--drain-back`, then runs
//! `kbg migrate TO FROM` (preflight, cordon, batches) so the workloads go back.
//!
//! Holds both pools' Leases: a migration still running refuses it (stop it first with
//! Ctrl-C; it stops where it is and its state stays consistent).

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use super::Ctx;
use super::migrate::{self, MigrateReport, pool_def};
use crate::cli::RollbackArgs;
use crate::config::PoolConfig;
use crate::cordon::{self, Uncordoned};
use crate::error::{Error, Result};
use crate::hand_over::HandOver;
use crate::pool;
use crate::settings::{DrainSettings, Settings, resolve_drain};
use crate::state::{MigrateRecord, OpHeader, Phase, RollbackRecord, op_key};
use crate::ui::Ui;

/// What `kbg rollback` did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// Source pool of the migration undone.
    pub from: String,
    /// Its target pool.
    pub to: String,
    /// FROM nodes uncordoned.
    pub uncordoned: Vec<String>,
    /// FROM nodes left cordoned because a person had cordoned them before.
    pub left_cordoned: Vec<String>,
    /// FROM nodes the migration had not cordoned (untouched).
    pub untouched: Vec<String>,
    /// FROM nodes whose provider's hand-over was undone (Juju: the charm's `resume`).
    pub handed_back: Vec<String>,
    /// The drain back, with `--drain-back`.
    pub drain_back: Option<MigrateReport>,
}

impl RollbackReport {
    fn human(&self) -> String {
        let mut out = format!(
            "rolled back {} -> {}: {} nodes uncordoned ({})",
            self.from,
            self.to,
            self.uncordoned.len(),
            self.uncordoned.join(", ")
        );
        if !self.left_cordoned.is_empty() {
            out.push_str(&format!(
                "; left cordoned as a person had cordoned them: {}",
                self.left_cordoned.join(", ")
            ));
        }
        if !self.handed_back.is_empty() {
            out.push_str(&format!(
                "; provider's hand-over undone on {}",
                self.handed_back.join(", ")
            ));
        }
        if let Some(d) = &self.drain_back {
            out.push_str(&format!(
                "\ndrained {} back: {} nodes, {} pods evicted",
                self.to,
                d.nodes_drained.len(),
                d.pods_evicted
            ));
        }
        out
    }
}

/// `kbg rollback`.
///
/// # Errors
/// Exit 2 for bad names or flags; exit 1 when a pool is held or a step fails.
pub async fn run(settings: Settings, args: RollbackArgs, ui: Ui) -> Result<ExitCode> {
    if args.from == args.to {
        return Err(Error::usage(format!(
            "FROM and TO are both {:?}: rollback undoes a migration between two pools",
            args.from
        )));
    }
    let from = pool_def(&settings.config, &args.from)?;
    let to = pool_def(&settings.config, &args.to)?;
    // Draining back drains TO: TO's knobs apply.
    let drain = resolve_drain(&args.drain, Some(&to), &settings.config.migration);
    migrate::drain_options(&drain, settings.clock)
        .validate()
        .map_err(|e| Error::usage(e.to_string()))?;
    let ctx = Ctx::new(
        settings,
        format!("kbg rollback {} {}", from.name, to.name),
        ui,
    )
    .await?;
    let outcome = ctx
        .locked(
            &[&from.name, &to.name],
            rollback(&ctx, &from, &to, args.drain_back, &drain),
        )
        .await
        .map(|r| {
            ctx.ui.result(&r, RollbackReport::human);
            ExitCode::SUCCESS
        });
    ctx.finish().await;
    outcome
}

async fn rollback(
    ctx: &Ctx,
    from: &PoolConfig,
    to: &PoolConfig,
    drain_back: bool,
    drain: &DrainSettings,
) -> Result<RollbackReport> {
    let migration = op_key("migrate", &[&from.name, &to.name]);
    let key = op_key("rollback", &[&from.name, &to.name]);
    // A rollback stopped half way has uncordoned nodes whose notes are gone now: carry
    // them over, so their hand-over is still undone.
    let unfinished = ctx
        .state
        .get::<RollbackRecord>(&key)
        .await?
        .filter(|r| !r.op.phase.is_finished());
    let mut record = RollbackRecord {
        op: OpHeader::new(ctx.command(), &ctx.holder.identity()),
        uncordoned: unfinished
            .as_ref()
            .map(|r| r.uncordoned.clone())
            .unwrap_or_default(),
        left_cordoned: Vec::new(),
        handed_back: unfinished.map(|r| r.handed_back).unwrap_or_default(),
    };
    record.op.go(Phase::Uncordoning);
    ctx.state.put(&key, &record).await?;

    let nodes = pool::list_nodes(&ctx.client, from, ctx.clock)
        .await
        .map_err(|e| Error::kube(format!("listing the nodes of pool {}", from.name), e))?;
    let mut untouched = Vec::new();
    for n in &nodes {
        let name = pool::name(n);
        match cordon::uncordon_if_ours(&ctx.client, name, &migration, ctx.clock)
            .await
            .map_err(|e| Error::kube(format!("uncordoning node {name}"), e))?
        {
            Uncordoned::Uncordoned if record.uncordoned.iter().any(|u| u == name) => {}
            Uncordoned::Uncordoned => {
                ctx.events.normal(
                    name,
                    "Uncordoned",
                    "Uncordon",
                    format!(
                        "{}: uncordoned; kbg had cordoned it for {migration}",
                        ctx.command()
                    ),
                );
                record.uncordoned.push(name.to_string());
            }
            Uncordoned::LeftCordoned => record.left_cordoned.push(name.to_string()),
            Uncordoned::NotOurs | Uncordoned::Gone => untouched.push(name.to_string()),
        }
    }
    ctx.ui.step(format_args!(
        "uncordoned {} nodes of pool {}",
        record.uncordoned.len(),
        from.name
    ));
    ctx.state
        .update(&migration, |cur: Option<MigrateRecord>| {
            let next = cur.map(|mut r| {
                if r.op.phase != Phase::RolledBack {
                    r.op.go(Phase::RolledBack);
                }
                r
            });
            (next, ())
        })
        .await?;
    ctx.state.put(&key, &record).await?;

    let pending: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            let name = pool::name(n);
            record.uncordoned.iter().any(|u| u == name)
                && !record.handed_back.iter().any(|h| h == name)
        })
        .collect();
    if !pending.is_empty()
        && let Some(h) = HandOver::for_pool(ctx, from, drain).await?
    {
        let done = h.hand_back(ctx, &pending).await?;
        ctx.ui.step(format_args!(
            "undid the {} provider's hand-over of {}",
            h.kind(),
            done.join(", ")
        ));
        record.handed_back.extend(done);
        ctx.state.put(&key, &record).await?;
    }

    let mut back = None;
    if drain_back {
        let back_key = op_key("migrate", &[&to.name, &from.name]);
        back = Some(migrate::migrate(ctx, to, from, drain, &back_key).await?);
    }
    record.op.go(Phase::Done);
    ctx.state.put(&key, &record).await?;
    Ok(RollbackReport {
        from: from.name.clone(),
        to: to.name.clone(),
        uncordoned: record.uncordoned,
        left_cordoned: record.left_cordoned,
        untouched,
        handed_back: record.handed_back,
        drain_back: back,
    })
}
