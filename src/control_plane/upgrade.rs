//! `kbg upgrade-control-plane VERSION`: the masters, in place, one by one.
//!
//! 1. **Preflight**, before anything changes (refusals touch nothing): one minor at most
//!    above the oldest API server and never down across a minor (exit 2); every
//!    kubelet within the skew policy against VERSION's API servers (exit 2, naming the
//!    pools to replace first); an unfinished upgrade to another version (exit 2); every
//!    node Ready and `/readyz` answering (exit 1); the method's scripts render and each
//!    master is reachable through the provider.
//! 2. Under the `control-plane` Lease, the upgrade is recorded (state
//!    `upgrade-started`), etcd is snapshotted where the method can (`backing-up-etcd`),
//!    then each master whose control plane does not run VERSION yet is upgraded
//!    (`upgrading-<n>-master`): kubeadm's `apply` on the first, `node` on the others, the
//!    manifests rewritten, or the charm's `upgrade` action. kbg then waits — on watches,
//!    with a deadline in cluster time — until the master's static pods run VERSION and
//!    are Ready, the node is Ready and `/readyz` answers; after the last master, until
//!    `/version` reports VERSION (`upgraded-<n>-master`).
//! 3. Then the masters' kubelets (`upgrading-kubelets`), one by one: cordon (with kbg's
//!    note, so `kbg status` shows who and a person's own cordon is kept), upgrade,
//!    restart, wait until the node reports VERSION and is Ready, uncordon. Kubelets come
//!    after every API server: a kubelet may not be newer than the oldest API server, so
//!    kbg does not upgrade a master's kubelet right after its control plane as a
//!    single-master guide would.
//! 4. `upgrade-complete`.
//!
//! A master that fails stops the run with the cluster still serving (the others keep
//! their API servers; kubeadm rolls a failed component back): the state says
//! `upgrading-<n>-master-failed`, the message says whether `/readyz` answers. A
//! secondary master's failure is first repeated after a pause (`--retry-pause`,
//! `--retries`), as the kubeadm HA guide advises. A rerun resumes: masters whose control
//! plane runs VERSION are skipped, kubeadm's `apply` is not run twice.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use serde::Serialize;

use super::facts::{self, Facts, MasterFacts, STATIC_POD_NAMESPACE, VERSIONED_COMPONENTS};
use super::methods::{self, Run, ScriptStep, ScriptUpgrader, Scripts, Upgrader};
use super::planner::master_order;
use super::stage::{Stage, UpgradeState};
use crate::cli::UpgradeControlPlaneArgs;
use crate::commands::Ctx;
use crate::config::{CpMethod, PoolConfig};
use crate::cordon;
use crate::error::{Error, Result};
use crate::pool;
use crate::providers::{self, ProviderOptions};
use crate::settings::CpSettings;
use crate::skew;
use crate::state::{
    CONTROL_PLANE_KEY, ControlPlaneRecord, HostStatus, MasterRecord, OpHeader, Phase, StateLedger,
};
use crate::version::KubeVersion;
use crate::wait;

/// The Lease name that keeps two control-plane upgrades apart.
pub const LOCK_NAME: &str = "control-plane";

/// How often `/readyz` and `/version` are asked while waiting (cluster time): they have
/// no watch.
const HEALTH_POLL: Duration = Duration::from_secs(2);

/// One master in the report.
#[derive(Clone, Debug, Serialize)]
pub struct MasterRow {
    /// The node.
    pub node: String,
    /// Its control plane's version before the run.
    pub control_plane_before: Option<KubeVersion>,
    /// Its kubelet's version before the run.
    pub kubelet_before: Option<KubeVersion>,
    /// Where it stands now.
    pub status: HostStatus,
    /// Control-plane attempts over every run.
    pub attempts: u32,
}

/// A step kbg would take (`--dry-run`) on a master.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    /// What it is.
    pub step: ScriptStep,
    /// Where.
    pub node: String,
    /// The script (or Juju calls) it runs.
    pub runs: Option<String>,
}

/// The result of `kbg upgrade-control-plane`.
#[derive(Clone, Debug, Serialize)]
pub struct UpgradeReport {
    /// The oldest API server's version when the upgrade started.
    pub from: KubeVersion,
    /// The target.
    pub to: KubeVersion,
    /// The method.
    pub method: CpMethod,
    /// Nothing was changed: these are the steps kbg would take.
    pub dry_run: bool,
    /// Where the upgrade stands (`upgrade-complete`), when kbg ran it.
    pub state: Option<String>,
    /// The masters, in upgrade order.
    pub masters: Vec<MasterRow>,
    /// Where etcd was snapshotted.
    pub etcd_backup: Option<String>,
    /// `--dry-run`: the steps, in order.
    pub steps: Vec<PlannedStep>,
    /// Cluster seconds the run took.
    pub cluster_seconds: f64,
}

impl UpgradeReport {
    /// The human form.
    pub fn human(&self) -> String {
        let mut out = String::new();
        if self.dry_run {
            out.push_str(&format!(
                "kbg would upgrade the control plane from {} to {} with the {} method (nothing was changed):\n",
                self.from, self.to, self.method
            ));
            if self.steps.is_empty() {
                out.push_str("  nothing to do: every master and its kubelet run the target\n");
            }
            for (i, s) in self.steps.iter().enumerate() {
                out.push_str(&format!(
                    "\n{}. {} on {}\n",
                    i + 1,
                    s.step.describe(),
                    s.node
                ));
                match &s.runs {
                    Some(text) => {
                        for l in text.lines() {
                            out.push_str(&format!("    {l}\n"));
                        }
                    }
                    None => out.push_str("    (done by the control-plane step)\n"),
                }
            }
            return out;
        }
        out.push_str(&crate::ui::table(
            [
                "MASTER",
                "CONTROL PLANE WAS",
                "KUBELET WAS",
                "TARGET",
                "STATUS",
                "ATTEMPTS",
            ],
            self.masters.iter().map(|m| {
                [
                    m.node.clone(),
                    m.control_plane_before
                        .as_ref()
                        .map_or_else(|| "-".into(), ToString::to_string),
                    m.kubelet_before
                        .as_ref()
                        .map_or_else(|| "-".into(), ToString::to_string),
                    self.to.to_string(),
                    m.status.as_str().to_string(),
                    m.attempts.to_string(),
                ]
            }),
        ));
        out.push('\n');
        if let Some(b) = &self.etcd_backup {
            out.push_str(&format!("etcd snapshot: {b}\n"));
        }
        out.push_str(&format!(
            "control plane {} → {} ({}): {}, {:.0}s cluster time",
            self.from,
            self.to,
            self.method,
            self.state.as_deref().unwrap_or("-"),
            self.cluster_seconds
        ));
        out
    }
}

/// The skew checks of the preflight: VERSION against the API servers and every kubelet.
///
/// # Errors
/// A usage error (exit 2) with one line per problem.
pub fn check_skew(facts: &Facts, target: &KubeVersion) -> Result<()> {
    let oldest = facts.oldest_apiserver();
    if let Err(v) = skew::check_control_plane_upgrade(&oldest, target) {
        let hint = if target > &oldest {
            format!(
                "; upgrade to {} first (kbg plan --to {target} shows every hop)",
                oldest.next_minor()
            )
        } else {
            String::new()
        };
        return Err(Error::usage(format!("VERSION {target}: {v}{hint}")));
    }
    let mut all = facts.apiservers();
    all.push(target.clone());
    if let Err(v) = skew::check_apiservers(&all) {
        return Err(Error::usage(format!("VERSION {target}: {v}")));
    }
    let mut problems = Vec::new();
    for p in &facts.pools {
        for v in [p.oldest(), p.newest()].into_iter().flatten() {
            if let Err(e) = skew::check_kubelet(v, std::slice::from_ref(target)) {
                let fix = if v < target {
                    format!(
                        "replace pool {} with a newer one first (kbg plan --to {target})",
                        p.name
                    )
                } else {
                    format!("pool {} is newer than the control plane would be", p.name)
                };
                problems.push(format!("pool {}: {e}; {fix}", p.name));
                break;
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(problems))
    }
}

/// `/readyz`, once.
async fn readyz(ctx: &Ctx) -> std::result::Result<(), String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match ctx.client.request_text(req).await {
        Ok(_) => Ok(()),
        Err(e) => Err(crate::client::describe(&e)),
    }
}

/// The masters in upgrade order: the recorded order of an unfinished upgrade to the
/// same version (masters added since go last), else [`master_order`].
fn ordered<'a>(
    facts: &'a Facts,
    target: &KubeVersion,
    prev: Option<&ControlPlaneRecord>,
) -> Vec<&'a MasterFacts> {
    let fresh = master_order(&facts.masters, target);
    let Some(prev) = prev.filter(|r| r.to_version == target.to_string()) else {
        return fresh;
    };
    let mut out: Vec<&MasterFacts> = prev
        .masters
        .iter()
        .filter_map(|r| facts.masters.iter().find(|m| m.node == r.node))
        .collect();
    for m in fresh {
        if !out.iter().any(|x| x.node == m.node) {
            out.push(m);
        }
    }
    out
}

/// The provider spec and pool the masters are reached through.
fn provider_pool(cp: &CpSettings, target: &KubeVersion) -> PoolConfig {
    let mut pool = PoolConfig::by_label(methods::CONTROL_PLANE_POOL);
    pool.provider = cp.provider.clone();
    pool.settings = cp.provider_settings.clone();
    pool.version = Some(target.clone());
    pool
}

/// A provider's bad setting, named under `control_plane.` rather than `pools.`.
fn as_control_plane_error(e: Error) -> Error {
    let prefix = format!("pools.{}.", methods::CONTROL_PLANE_POOL);
    match e {
        Error::Provider { source, .. }
            if matches!(source.kind, kbg_provider::ErrorKind::InvalidConfig { .. }) =>
        {
            let kbg_provider::ErrorKind::InvalidConfig { field } = &source.kind else {
                unreachable!()
            };
            let field = field
                .strip_prefix(&prefix)
                .map_or_else(|| field.clone(), |rest| format!("control_plane.{rest}"));
            Error::usage(format!("{field}: {}", source.message))
        }
        other => other,
    }
}

/// Build the method's upgrader for `masters`: the provider, the scripts, and each
/// master's machine (or unit).
///
/// # Errors
/// Usage errors (exit 2) for bad provider settings or scripts; [`Error::Refused`] when a
/// master cannot be matched to a machine; provider errors when it cannot be asked.
pub async fn build_upgrader(
    ctx: &Ctx,
    cp: &CpSettings,
    target: &KubeVersion,
    masters: &[MasterFacts],
    insecure_accept_host_keys: bool,
) -> Result<Box<dyn Upgrader>> {
    let ledger = Arc::new(StateLedger::new(ctx.state.clone()));
    let base = ctx.settings.base_dir();
    if cp.scripts.method == CpMethod::Charm {
        return build_charm(ctx, cp, target, masters, ledger).await;
    }
    let scripts = Scripts::new(cp.scripts.clone(), &cp.templates, base.as_deref())?;
    let pool = provider_pool(cp, target);
    let spec = methods::control_plane_spec(&cp.provider_settings, target);
    let options = ProviderOptions {
        base_dir: base,
        insecure_accept_host_keys,
    };
    let provider = providers::build(&pool, &spec, &ctx.client, ledger, &options)
        .await
        .map_err(as_control_plane_error)?;
    let listed = match provider.list(&spec).await {
        Ok(l) => l,
        Err(e) if e.kind == kbg_provider::ErrorKind::Unsupported => Vec::new(),
        Err(e) => {
            return Err(Error::provider(
                format!("asking the {} provider for the masters", cp.provider),
                e,
            ));
        }
    };
    let machines = methods::machines_for(masters, &listed);
    Ok(Box::new(ScriptUpgrader::new(
        provider,
        spec,
        scripts,
        machines,
        cp.command_timeout,
        ctx.clock,
    )))
}

#[cfg(feature = "juju")]
async fn build_charm(
    ctx: &Ctx,
    cp: &CpSettings,
    target: &KubeVersion,
    masters: &[MasterFacts],
    ledger: Arc<StateLedger>,
) -> Result<Box<dyn Upgrader>> {
    use kbg_provider::Provider;
    use kbg_provider_juju::JujuProvider;
    let _ = ctx;
    let mut settings = match &cp.provider_settings {
        serde_json::Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    settings
        .entry("application")
        .or_insert_with(|| serde_json::json!("kubernetes-control-plane"));
    let spec = methods::control_plane_spec(&serde_json::Value::Object(settings.clone()), target);
    let juju = JujuProvider::from_pool(&spec)
        .map_err(|e| as_control_plane_error(Error::provider("control_plane", e)))?
        .with_ledger(ledger.clone());
    let application = juju.settings().application.clone();
    let listed = juju
        .list(&spec)
        .await
        .map_err(|e| Error::provider(format!("asking Juju for the units of {application}"), e))?;
    let mut units = std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    for (node, machine) in methods::machines_for(masters, &listed) {
        match machine.details.get("unit") {
            Some(u) => {
                units.insert(node, u.clone());
            }
            None => missing.push(node),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Refused(format!(
            "no unit of the Juju application {application} runs on master {}: set control_plane.juju.application to the control-plane application; nothing was changed",
            missing.join(", ")
        )));
    }
    let etcd = if cp.etcd_backup {
        let mut e = settings.clone();
        e.insert("application".into(), serde_json::json!(cp.etcd_application));
        let espec = methods::control_plane_spec(&serde_json::Value::Object(e), target);
        Some((
            JujuProvider::from_pool(&espec)
                .map_err(|e| as_control_plane_error(Error::provider("control_plane", e)))?
                .with_ledger(ledger),
            cp.etcd_application.clone(),
        ))
    } else {
        None
    };
    Ok(Box::new(methods::CharmUpgrader::new(juju, units, etcd)))
}

#[cfg(not(feature = "juju"))]
async fn build_charm(
    _ctx: &Ctx,
    _cp: &CpSettings,
    _target: &KubeVersion,
    _masters: &[MasterFacts],
    _ledger: Arc<StateLedger>,
) -> Result<Box<dyn Upgrader>> {
    Err(Error::usage(
        "control_plane.method: the charm method needs the juju provider, which this kbg is built without; build it with `cargo build --features juju`",
    ))
}

/// Upgrade the masters to `args.version` (see the module docs).
///
/// # Errors
/// Exit 2 for a version or kubelets the skew policy refuses, another upgrade in
/// progress, or bad settings; exit 1 for an unhealthy cluster (nothing touched) or a
/// master that failed (the state records where).
pub async fn execute(
    ctx: &Ctx,
    cp: &CpSettings,
    args: &UpgradeControlPlaneArgs,
) -> Result<UpgradeReport> {
    let start = ctx.clock.now();
    let target = args.version.clone();
    let facts = facts::gather(ctx).await?;
    if facts.masters.is_empty() {
        return Err(Error::Refused(
            "no control-plane node is visible (nodes labelled node-role.kubernetes.io/control-plane): kbg upgrades masters it can see; nothing was changed".into(),
        ));
    }
    check_skew(&facts, &target)?;
    let prev: Option<ControlPlaneRecord> = ctx.state.get(CONTROL_PLANE_KEY).await?;
    if let Some(r) = &prev
        && !r.state.is_complete()
        && r.to_version != target.to_string()
    {
        return Err(Error::usage(format!(
            "VERSION {target}: an upgrade of the control plane to {} is unfinished ({}, in {}); finish it first with `kbg upgrade-control-plane {}`",
            r.to_version,
            r.state,
            ctx.state.location(),
            r.to_version
        )));
    }
    let resuming = prev
        .as_ref()
        .filter(|r| !r.state.is_complete() && r.to_version == target.to_string());
    let from = resuming
        .and_then(|r| KubeVersion::parse(&r.from_version).ok())
        .unwrap_or_else(|| facts.oldest_apiserver());
    let order = ordered(&facts, &target, resuming);
    let upgrader = build_upgrader(
        ctx,
        cp,
        &target,
        &facts.masters,
        args.insecure_accept_host_keys,
    )
    .await?;
    let not_ready = facts.not_ready();
    if !not_ready.is_empty() {
        return Err(Error::Refused(format!(
            "not every node is Ready ({}): kbg upgrades a control plane only when the whole cluster is healthy, as kubeadm does; nothing was changed",
            not_ready.join(", ")
        )));
    }
    if let Err(why) = readyz(ctx).await {
        return Err(Error::Refused(format!(
            "the API server is not ready (/readyz: {why}); nothing was changed"
        )));
    }

    let run = Run::new(from.clone(), target.clone());
    let cp_left: Vec<&MasterFacts> = order
        .iter()
        .copied()
        .filter(|m| !m.control_plane_at(&target))
        .collect();
    let kubelets_left = order.iter().any(|m| !m.kubelet_at(&target));
    let mut report = UpgradeReport {
        from: from.clone(),
        to: target.clone(),
        method: upgrader.method(),
        dry_run: args.dry_run,
        state: None,
        masters: order
            .iter()
            .map(|m| MasterRow {
                node: m.node.clone(),
                control_plane_before: m.control_plane_version(),
                kubelet_before: m.kubelet.clone(),
                status: host_status(m, &target),
                attempts: resuming
                    .and_then(|r| r.masters.iter().find(|x| x.node == m.node))
                    .map_or(0, |x| x.attempts),
            })
            .collect(),
        etcd_backup: resuming.and_then(|r| r.etcd_backup.clone()),
        steps: Vec::new(),
        cluster_seconds: 0.0,
    };

    if args.dry_run {
        let mut any_done = order.iter().any(|m| m.control_plane_at(&target));
        if cp.etcd_backup && !cp_left.is_empty() && report.etcd_backup.is_none() {
            report.steps.push(PlannedStep {
                step: ScriptStep::EtcdBackup,
                node: cp_left[0].node.clone(),
                runs: upgrader.describe(ScriptStep::EtcdBackup, &cp_left[0].node, &run)?,
            });
        }
        for m in &cp_left {
            let step = if any_done {
                ScriptStep::OtherMaster
            } else {
                ScriptStep::FirstMaster
            };
            any_done = true;
            report.steps.push(PlannedStep {
                step,
                node: m.node.clone(),
                runs: upgrader.describe(step, &m.node, &run)?,
            });
        }
        for m in order.iter().filter(|m| !m.kubelet_at(&target)) {
            report.steps.push(PlannedStep {
                step: ScriptStep::Kubelet,
                node: m.node.clone(),
                runs: upgrader.describe(ScriptStep::Kubelet, &m.node, &run)?,
            });
        }
        return Ok(report);
    }
    if cp_left.is_empty() && !kubelets_left && resuming.is_none() {
        report.state = Some(UpgradeState::at(Stage::Complete).to_string());
        ctx.ui.step(format_args!(
            "every master and its kubelet run {target}: nothing to do"
        ));
        return Ok(report);
    }

    let masters: Vec<MasterFacts> = order.into_iter().cloned().collect();
    ctx.locked(
        &[LOCK_NAME],
        upgrade(
            ctx,
            cp,
            upgrader.as_ref(),
            &masters,
            run,
            resuming.cloned(),
            &mut report,
        ),
    )
    .await?;
    report.cluster_seconds = ctx.clock.elapsed(start).as_secs_f64();
    Ok(report)
}

fn host_status(m: &MasterFacts, target: &KubeVersion) -> HostStatus {
    match (m.control_plane_at(target), m.kubelet_at(target)) {
        (true, true) => HostStatus::Upgraded,
        (true, false) => HostStatus::UpgradedControlPlane,
        _ => HostStatus::Pending,
    }
}

/// The upgrade's record and the places that show it.
struct Recorder<'a> {
    ctx: &'a Ctx,
    rec: ControlPlaneRecord,
    target: KubeVersion,
}

impl Recorder<'_> {
    async fn save(&self) -> Result<()> {
        self.ctx.state.put(CONTROL_PLANE_KEY, &self.rec).await?;
        Ok(())
    }

    async fn stage(&mut self, stage: Stage) -> Result<()> {
        let next = UpgradeState::at(stage);
        debug_assert!(
            next.may_follow(self.rec.state),
            "{next} may not follow {}",
            self.rec.state
        );
        self.rec.state = next;
        self.rec.op.updated_at = jiff::Timestamp::now();
        self.ctx
            .ui
            .step(format_args!("control plane → {}: {next}", self.target));
        self.save().await
    }

    async fn host(
        &mut self,
        node: &str,
        status: HostStatus,
        message: Option<String>,
    ) -> Result<()> {
        if let Some(m) = self.rec.master_mut(node) {
            m.status = status;
            m.message = message;
        }
        self.save().await
    }

    /// Record the failure of the current stage (and of `node`), say whether the cluster
    /// still serves, and return the error that ends the run.
    async fn fail(&mut self, node: Option<(&str, HostStatus)>, what: &str, why: &str) -> Error {
        self.rec.state = self.rec.state.failed();
        self.rec.op.fail(&format!("{what}: {why}"));
        if let Some((n, status)) = node {
            if let Some(m) = self.rec.master_mut(n) {
                m.status = status;
                m.message = Some(why.to_string());
            }
            self.ctx.events.warning(
                n,
                "UpgradeFailed",
                "Upgrade",
                format!("kbg upgrade-control-plane {}: {what}: {why}", self.target),
            );
        }
        let saved = self.save().await;
        let serving = match (readyz(self.ctx).await, self.ctx.api_server_version().await) {
            (Ok(()), Ok(v)) => format!("the cluster is still serving (/readyz ok, /version {v})"),
            (Err(e), _) => format!("the API server does not answer /readyz ({e})"),
            (_, Err(e)) => format!("/version does not answer ({e})"),
        };
        let recorded = match saved {
            Ok(()) => format!(
                "recorded as {} in {}",
                self.rec.state,
                self.ctx.state.location()
            ),
            Err(e) => format!("could not be recorded ({e})"),
        };
        Error::Failed(format!(
            "{what}: {why}; the upgrade stopped ({recorded}); {serving}; fix the cause and run `kbg upgrade-control-plane {}` again to resume",
            self.target
        ))
    }
}

async fn upgrade(
    ctx: &Ctx,
    cp: &CpSettings,
    up: &dyn Upgrader,
    masters: &[MasterFacts],
    run: Run,
    prev: Option<ControlPlaneRecord>,
    report: &mut UpgradeReport,
) -> Result<()> {
    let target = run.to.clone();
    let mut op = OpHeader::new(ctx.command(), &ctx.holder.identity());
    let cp_left = masters.iter().any(|m| !m.control_plane_at(&target));
    op.go(if cp_left {
        Phase::UpgradingMasters
    } else {
        Phase::UpgradingKubelets
    });
    let rec = ControlPlaneRecord {
        op,
        method: up.method().to_string(),
        from_version: run.from.to_string(),
        to_version: target.to_string(),
        state: UpgradeState::at(Stage::Started),
        masters: masters
            .iter()
            .map(|m| MasterRecord {
                node: m.node.clone(),
                status: host_status(m, &target),
                attempts: prev
                    .as_ref()
                    .and_then(|r| r.masters.iter().find(|x| x.node == m.node))
                    .map_or(0, |x| x.attempts),
                message: None,
            })
            .collect(),
        etcd_backup: prev.as_ref().and_then(|r| r.etcd_backup.clone()),
        charm_refreshed: prev.as_ref().is_some_and(|r| r.charm_refreshed),
    };
    let mut r = Recorder {
        ctx,
        rec,
        target: target.clone(),
    };
    let result = steps(ctx, cp, up, masters, &run, &mut r).await;
    report.state = Some(r.rec.state.to_string());
    report.etcd_backup = r.rec.etcd_backup.clone();
    for row in &mut report.masters {
        if let Some(m) = r.rec.masters.iter().find(|m| m.node == row.node) {
            row.status = m.status;
            row.attempts = m.attempts;
        }
    }
    result
}

async fn steps(
    ctx: &Ctx,
    cp: &CpSettings,
    up: &dyn Upgrader,
    masters: &[MasterFacts],
    run: &Run,
    r: &mut Recorder<'_>,
) -> Result<()> {
    let target = &run.to;
    r.save().await?;
    ctx.ui.step(format_args!(
        "control plane {} → {target} ({}): upgrade-started",
        run.from,
        up.method()
    ));
    let todo: Vec<(usize, &MasterFacts)> = masters
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.control_plane_at(target))
        .collect();
    if let Some((_, first)) = todo.first() {
        if cp.etcd_backup && r.rec.etcd_backup.is_none() {
            r.stage(Stage::BackingUpEtcd).await?;
            match up.etcd_backup(&first.node, run).await {
                Ok(at) => {
                    ctx.ui.step(format_args!("etcd snapshot: {at}"));
                    r.rec.etcd_backup = Some(at);
                    r.save().await?;
                }
                Err(e) => {
                    return Err(r
                        .fail(None, "backing up etcd failed; no master was touched", &e.0)
                        .await);
                }
            }
        }
        if up.method() == CpMethod::Charm && !r.rec.charm_refreshed {
            if let Err(e) = up.prepare(run).await {
                r.stage(Stage::UpgradingMaster(todo[0].0 as u32 + 1))
                    .await?;
                return Err(r
                    .fail(None, "refreshing the control-plane charm failed", &e.0)
                    .await);
            }
            r.rec.charm_refreshed = true;
            r.save().await?;
        }
    }
    let mut any_at_target = masters.iter().any(|m| m.control_plane_at(target));
    for (k, (i, m)) in todo.iter().enumerate() {
        let n = *i as u32 + 1;
        let node = m.node.as_str();
        let first = !any_at_target;
        let last = k + 1 == todo.len();
        r.stage(Stage::UpgradingMaster(n)).await?;
        r.host(node, HostStatus::UpgradingControlPlane, None)
            .await?;
        ctx.events.normal(
            node,
            "UpgradingControlPlane",
            "Upgrade",
            format!(
                "kbg upgrade-control-plane {target}: upgrading this master's control plane ({})",
                up.method()
            ),
        );
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(rec) = r.rec.master_mut(node) {
                rec.attempts += 1;
            }
            let outcome = match up.control_plane(node, first, run).await {
                Ok(()) => wait_master(ctx, m, target, cp.master_timeout, last).await,
                Err(e) => Err(e.0),
            };
            match outcome {
                Ok(()) => break,
                Err(why) if !first && attempt <= cp.retries => {
                    ctx.ui.warn(format_args!(
                        "master {node}: {why}; repeating in {} (attempt {} of {}), as the kubeadm HA guide advises for secondary masters",
                        crate::duration::display(cp.retry_pause),
                        attempt + 1,
                        cp.retries + 1
                    ));
                    r.host(node, HostStatus::UpgradingControlPlane, Some(why))
                        .await?;
                    ctx.clock.sleep(cp.retry_pause).await;
                }
                Err(why) => {
                    return Err(r
                        .fail(
                            Some((node, HostStatus::UpgradingControlPlaneFailed)),
                            &format!("master {node} ({} of {})", n, masters.len()),
                            &why,
                        )
                        .await);
                }
            }
        }
        any_at_target = true;
        r.host(node, HostStatus::UpgradedControlPlane, None).await?;
        r.stage(Stage::UpgradedMaster(n)).await?;
        ctx.events.normal(
            node,
            "UpgradedControlPlane",
            "Upgrade",
            format!(
                "kbg upgrade-control-plane {target}: this master's control plane runs {target}"
            ),
        );
    }

    // The kubelets, once every API server runs the target.
    if r.rec.op.phase != Phase::UpgradingKubelets {
        r.rec.op.go(Phase::UpgradingKubelets);
    }
    r.stage(Stage::UpgradingKubelets).await?;
    for m in masters {
        let node = m.node.as_str();
        if !up.separate_kubelet() {
            // The control-plane step moved the kubelet too: see that it did.
            if let Err(why) = wait_kubelet(ctx, node, target, cp.master_timeout).await {
                return Err(r
                    .fail(
                        Some((node, HostStatus::UpgradingKubeletFailed)),
                        &format!("the kubelet of master {node}"),
                        &why,
                    )
                    .await);
            }
            r.host(node, HostStatus::Upgraded, None).await?;
            continue;
        }
        // A kubelet already at the target was upgraded by a run that stopped before the
        // uncordon: only kbg's cordon is left to lift.
        let upgrade = !m.kubelet_at(target);
        if upgrade {
            r.host(node, HostStatus::UpgradingKubelet, None).await?;
            if let Err(e) = cordon::cordon(&ctx.client, node, CONTROL_PLANE_KEY, ctx.clock).await {
                return Err(r
                    .fail(
                        Some((node, HostStatus::UpgradingKubeletFailed)),
                        &format!("cordoning master {node}"),
                        &crate::client::describe(&e),
                    )
                    .await);
            }
            ctx.events.normal(
                node,
                "UpgradingKubelet",
                "Upgrade",
                format!("kbg upgrade-control-plane {target}: cordoned to upgrade the kubelet"),
            );
            let outcome = match up.kubelet(node, run).await {
                Ok(()) => wait_kubelet(ctx, node, target, cp.master_timeout).await,
                Err(e) => Err(e.0),
            };
            if let Err(why) = outcome {
                return Err(r
                    .fail(
                        Some((node, HostStatus::UpgradingKubeletFailed)),
                        &format!("the kubelet of master {node} (left cordoned by kbg)"),
                        &why,
                    )
                    .await);
            }
        }
        // A person's own cordon stays.
        if let Err(e) =
            cordon::uncordon_if_ours(&ctx.client, node, CONTROL_PLANE_KEY, ctx.clock).await
        {
            return Err(r
                .fail(
                    Some((node, HostStatus::UpgradingKubeletFailed)),
                    &format!("uncordoning master {node}"),
                    &crate::client::describe(&e),
                )
                .await);
        }
        r.host(node, HostStatus::Upgraded, None).await?;
        if upgrade {
            ctx.events.normal(
                node,
                "UpgradedKubelet",
                "Upgrade",
                format!("kbg upgrade-control-plane {target}: kubelet runs {target}; uncordoned"),
            );
        }
    }
    r.rec.op.go(Phase::Done);
    r.stage(Stage::Complete).await?;
    Ok(())
}

/// Poll `/readyz` (and, with `version`, `/version` for it) until it answers, for at most
/// `limit` (cluster time).
async fn wait_health(
    ctx: &Ctx,
    version: Option<&KubeVersion>,
    limit: Duration,
) -> std::result::Result<(), String> {
    let mut last = String::new();
    let poll = async {
        loop {
            match readyz(ctx).await {
                Err(e) => last = format!("/readyz: {e}"),
                Ok(()) => match version {
                    None => return,
                    Some(want) => match ctx.api_server_version().await {
                        Ok(v) if &v == want => return,
                        Ok(v) => last = format!("/version reports {v}"),
                        Err(e) => last = format!("/version: {e}"),
                    },
                },
            }
            ctx.clock.sleep(HEALTH_POLL).await;
        }
    };
    ctx.clock.timeout(limit, poll).await.map_err(|_| {
        format!(
            "timed out after {} (cluster time): {last}",
            crate::duration::display(limit)
        )
    })
}

/// Wait until master `m` is back at `target`: its static pods (or, without any, its
/// kubelet) at `target` and Ready, the node Ready, `/readyz` answering, and with
/// `last`, `/version` at `target`.
async fn wait_master(
    ctx: &Ctx,
    m: &MasterFacts,
    target: &KubeVersion,
    limit: Duration,
    last: bool,
) -> std::result::Result<(), String> {
    let start = ctx.clock.now();
    let left = |ctx: &Ctx| limit.saturating_sub(ctx.clock.elapsed(start));
    let node = m.node.as_str();
    if m.static_pods.is_empty() {
        wait_kubelet(ctx, node, target, left(ctx)).await?;
    } else {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), STATIC_POD_NAMESPACE);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        wait::until(
            pods,
            config,
            ctx.clock,
            left(ctx),
            format!("the static pods of {node} to run {target} and be Ready"),
            |set| {
                let sp = facts::static_pods_of(node, set.iter().map(|p| p.as_ref()));
                VERSIONED_COMPONENTS.iter().all(|c| {
                    sp.get(*c)
                        .is_some_and(|p| p.ready && p.version.as_ref() == Some(target))
                })
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        wait_node(ctx, node, left(ctx), "be Ready", pool::is_ready).await?;
    }
    wait_health(ctx, last.then_some(target), left(ctx)).await
}

async fn wait_node(
    ctx: &Ctx,
    node: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Node) -> bool,
) -> std::result::Result<(), String> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    wait::until(
        api,
        config,
        ctx.clock,
        limit,
        format!("node {node} to {what}"),
        |set| set.iter().any(|n| ok(n)),
    )
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Wait until `node` reports kubelet `target` and is Ready.
async fn wait_kubelet(
    ctx: &Ctx,
    node: &str,
    target: &KubeVersion,
    limit: Duration,
) -> std::result::Result<(), String> {
    wait_node(
        ctx,
        node,
        limit,
        &format!("report kubelet {target} and be Ready"),
        |n| {
            pool::is_ready(n)
                && pool::kubelet_version(n)
                    .and_then(|v| KubeVersion::parse(v).ok())
                    .as_ref()
                    == Some(target)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control_plane::facts::tests::{master_pods, node};

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    fn facts(alpha: &str) -> Facts {
        let nodes = vec![
            node("cp-0", true, None, "v1.33.1"),
            node("alpha-0", false, Some("alpha"), alpha),
        ];
        Facts::from_objects(
            v("v1.33.1"),
            &nodes,
            &master_pods("cp-0", "v1.33.1"),
            &Config::default(),
        )
    }

    #[test]
    fn the_preflight_refuses_what_the_skew_policy_refuses() {
        let f = facts("v1.31.0");
        assert!(check_skew(&f, &v("v1.34.0")).is_ok());
        assert!(check_skew(&f, &v("v1.33.4")).is_ok());
        for (target, says) in [
            (
                "v1.35.0",
                "one minor version at a time (upstream version skew policy); upgrade to v1.34 first (kbg plan --to v1.35.0",
            ),
            ("v1.32.9", "never downgraded across a minor"),
        ] {
            let e = check_skew(&f, &v(target)).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(says), "{target}: {e}");
        }
        // A pool three minors behind the current control plane falls out at +1.
        let e = check_skew(&facts("v1.30.5"), &v("v1.34.0")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with(
                "pool alpha: kubelet v1.30.5 is 4 minors older than kube-apiserver v1.34.0"
            ),
            "{e}"
        );
        // A pool newer than the target.
        let e = check_skew(&facts("v1.34.1"), &v("v1.34.0")).unwrap_err();
        assert!(e.to_string().contains("is newer than"), "{e}");
    }
}
