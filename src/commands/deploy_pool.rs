//! `kbg deploy-pool NAME`: provision the pool's machines and wait until every node is
//! registered and Ready.
//!
//! 1. Before anything changes: the pool is in `kbg.yaml`, its provider builds (its
//!    settings are valid), and its version holds under the skew policy against the
//!    oldest kube-apiserver (the masters' static pods; `/version` where none is
//!    visible): a kubelet not newer than kube-apiserver, at most three minors older.
//! 2. The machine names come from the pool's record in kbg's state (`beta-0` …
//!    `beta-N`): a rerun asks the provider for the same names, and providers create only
//!    what is missing, so a crash never doubles the pool.
//! 3. Provision; transient provider failures are retried, others reported per machine.
//! 4. Watch nodes until each machine's node (matched by providerID, else name) is Ready;
//!    then make sure it carries the pool's labels (`kbg.io/pool=NAME` …) and taints.
//! 5. On `--timeout`: report the machines that failed or never joined; with
//!    `--retry-failed N` replace them with fresh machines (new names) up to N times;
//!    with `--cleanup-on-failure` delete their nodes and deprovision them.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint as KTaint};
use kbg_provider::{Machine, MachineState, PoolSpec, Provider};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde::Serialize;

use super::Ctx;
use crate::cli::DeployPoolArgs;
use crate::client::is_not_found;
use crate::config::{Membership, PoolConfig};
use crate::error::{Error, Result};
use crate::pool;
use crate::providers::{self, ProviderOptions, pool_spec};
use crate::retry::retry;
use crate::settings::Settings;
use crate::skew;
use crate::state::{DeployRecord, OpHeader, Phase, PoolRecord, StateLedger, op_key, pool_key};
use crate::ui::Ui;
use crate::wait;

/// One machine in the report.
#[derive(Debug, Clone, Serialize)]
pub struct MachineRow {
    /// The machine's name.
    pub name: String,
    /// Its node, once registered.
    pub node: Option<String>,
    /// Its provider ID.
    pub provider_id: Option<String>,
    /// Whether its node is Ready.
    pub ready: bool,
}

/// A machine that did not make it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedMachine {
    /// The machine's name.
    pub name: String,
    /// Why: the provider's words, or what the watch saw.
    pub reason: String,
}

/// The result of `kbg deploy-pool`.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The pool.
    pub pool: String,
    /// Its provider.
    pub provider: String,
    /// The kubelet version asked for.
    pub version: String,
    /// The oldest kube-apiserver's version, which the pool was checked against.
    pub api_server_version: String,
    /// The pool's machines that exist now.
    pub machines: Vec<MachineRow>,
    /// How many of the pool's nodes are Ready.
    pub nodes_ready: usize,
    /// Machines the provider could not make.
    pub failed: Vec<FailedMachine>,
    /// Machines made whose node never registered or never became Ready in time.
    pub never_joined: Vec<FailedMachine>,
    /// Machines given up and replaced by fresh ones (`--retry-failed`).
    pub replaced: Vec<String>,
    /// Machines deprovisioned after failing (`--cleanup-on-failure`).
    pub cleaned_up: Vec<String>,
    /// Cluster seconds the command took.
    pub cluster_seconds: f64,
}

impl DeployReport {
    /// Whether every machine of the pool joined.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.never_joined.is_empty()
    }

    /// Exit 0 when every machine joined, else the error naming those that did not and
    /// why (the provider's words, or the node not Ready within `--timeout`).
    ///
    /// # Errors
    /// [`Error::Failed`] naming the machines that failed or never joined.
    pub fn outcome(&self) -> Result<ExitCode> {
        if self.ok() {
            return Ok(ExitCode::SUCCESS);
        }
        let bad: Vec<&str> = self
            .failed
            .iter()
            .chain(&self.never_joined)
            .map(|f| f.name.as_str())
            .collect();
        let why: Vec<String> = self
            .failed
            .iter()
            .chain(&self.never_joined)
            .map(|f| format!("{}: {}", f.name, f.reason))
            .collect();
        Err(Error::Failed(format!(
            "pool {}: {} of {} machines did not join: {} ({}); {}",
            self.pool,
            bad.len(),
            self.machines.len() + self.failed.len(),
            bad.join(", "),
            why.join("; "),
            if self.cleaned_up.is_empty() {
                "they are left as they are: rerun to wait again, or add --cleanup-on-failure / --retry-failed N"
            } else {
                "they were deprovisioned; rerun to make replacements"
            }
        )))
    }

    fn human(&self) -> String {
        let t = crate::ui::table(
            ["MACHINE", "NODE", "READY", "PROVIDER ID"],
            self.machines.iter().map(|m| {
                [
                    m.name.clone(),
                    m.node.clone().unwrap_or_else(|| "-".into()),
                    if m.ready { "yes" } else { "no" }.to_string(),
                    m.provider_id.clone().unwrap_or_else(|| "-".into()),
                ]
            }),
        );
        let mut out = format!("{t}\n");
        for f in &self.failed {
            out.push_str(&format!("failed: {}: {}\n", f.name, f.reason));
        }
        for f in &self.never_joined {
            out.push_str(&format!("never joined: {}: {}\n", f.name, f.reason));
        }
        if !self.replaced.is_empty() {
            out.push_str(&format!("replaced: {}\n", self.replaced.join(", ")));
        }
        if !self.cleaned_up.is_empty() {
            out.push_str(&format!("deprovisioned: {}\n", self.cleaned_up.join(", ")));
        }
        out.push_str(&format!(
            "pool {}: {} of {} nodes Ready, {} (API server {}), {:.0}s cluster time",
            self.pool,
            self.nodes_ready,
            self.machines.len(),
            self.version,
            self.api_server_version,
            self.cluster_seconds
        ));
        out
    }
}

/// `kbg deploy-pool`.
///
/// # Errors
/// Exit 2 for a pool missing from `kbg.yaml`, an adopted pool, bad provider settings or
/// a version the skew policy refuses; exit 1 when machines failed or never joined (after
/// printing the report), or on any other failure.
pub async fn run(settings: Settings, args: DeployPoolArgs, ui: Ui) -> Result<ExitCode> {
    let pool = settings
        .config
        .pool(&args.name)
        .map_err(Error::usage)?
        .clone();
    let spec = pool_spec(&pool, &settings.join, settings.base_dir().as_deref());
    let ctx = Ctx::new(settings, format!("kbg deploy-pool {}", pool.name), ui).await?;
    let result = execute(&ctx, &pool, &spec, &args).await;
    let outcome = match result {
        Ok(report) => {
            ctx.ui.result(&report, DeployReport::human);
            report.outcome()
        }
        Err(e) => Err(e),
    };
    ctx.finish().await;
    outcome
}

/// Deploy `pool` (its [`PoolSpec`] is `spec`) through `ctx`: check, then provision and
/// wait under the pool's Lease.
///
/// # Errors
/// Usage errors (exit 2) for an adopted pool, bad provider settings or a version the
/// skew policy refuses, found before anything changes; then as [`run`].
pub async fn execute(
    ctx: &Ctx,
    pool: &PoolConfig,
    spec: &PoolSpec,
    args: &DeployPoolArgs,
) -> Result<DeployReport> {
    if let Membership::Selector(s) = &pool.membership {
        return Err(Error::usage(format!(
            "pools.{}.selector: the pool is adopted through the selector {s}; kbg does not deploy adopted pools (remove selector: to let kbg deploy it)",
            pool.name
        )));
    }
    let version = pool.version.clone().ok_or_else(|| {
        Error::usage(format!(
            "pools.{}.version: is required to deploy the pool",
            pool.name
        ))
    })?;
    let ledger = Arc::new(StateLedger::new(ctx.state.clone()));
    let options = ProviderOptions {
        base_dir: ctx.settings.base_dir(),
        insecure_accept_host_keys: args.insecure_accept_host_keys,
    };
    let provider = providers::build(pool, spec, &ctx.client, ledger, &options).await?;
    // Against the oldest kube-apiserver: half-way through a control-plane upgrade,
    // `/version` may answer from an upgraded master.
    let apis = crate::control_plane::facts::apiserver_versions(ctx).await?;
    let api = skew::oldest(&apis).clone();
    skew::check_kubelet(&version, &apis)
        .map_err(|v| Error::usage(format!("pools.{}.version: {v}", pool.name)))?;

    ctx.locked(
        &[&pool.name],
        deploy(ctx, pool, spec, provider.as_ref(), args, api.to_string()),
    )
    .await
}

fn node_of<'a>(m: &Machine, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
    nodes
        .iter()
        .find(|n| m.matches_node(pool::provider_id(n), pool::name(n)))
}

/// Make sure `node` carries `pool`'s labels and taints.
async fn ensure_labels_and_taints(ctx: &Ctx, pool: &PoolConfig, node: &Node) -> Result<()> {
    let labels = pool::labels(node);
    let missing_labels: BTreeMap<&String, &String> = pool
        .labels
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .collect();
    let current: Vec<KTaint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut taints = current.clone();
    for t in &pool.taints {
        if !current
            .iter()
            .any(|c| c.key == t.key && c.effect == t.effect.to_string() && c.value == t.value)
        {
            taints.push(KTaint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.to_string(),
                time_added: None,
            });
        }
    }
    if missing_labels.is_empty() && taints.len() == current.len() {
        return Ok(());
    }
    let name = pool::name(node).to_string();
    let mut patch = serde_json::json!({ "metadata": { "labels": missing_labels } });
    if taints.len() != current.len() {
        patch["spec"] = serde_json::json!({ "taints": taints });
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    let pp = PatchParams::default();
    let mp = Patch::Merge(&patch);
    retry(ctx.clock, "label node", || api.patch(&name, &pp, &mp))
        .await
        .map_err(|e| Error::kube(format!("labelling node {name} of pool {}", pool.name), e))?;
    Ok(())
}

/// Delete the nodes of `machines` and deprovision them. Returns the names removed.
async fn remove_machines(
    ctx: &Ctx,
    provider: &dyn Provider,
    spec: &PoolSpec,
    names: &[String],
) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let existing = providers::list(provider, spec, ctx.clock).await?;
    let doomed: Vec<Machine> = existing
        .into_iter()
        .filter(|m| names.contains(&m.name))
        .collect();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let lp = kube::api::ListParams::default();
    let nodes = retry(ctx.clock, "list nodes", || api.list(&lp))
        .await
        .map_err(|e| Error::kube("listing nodes", e))?;
    let nodes: Vec<Arc<Node>> = nodes.items.into_iter().map(Arc::new).collect();
    for m in &doomed {
        if let Some(n) = node_of(m, &nodes) {
            let name = pool::name(n).to_string();
            ctx.events.normal(
                &name,
                "Deleting",
                "DeleteNode",
                format!(
                    "kbg deploy-pool {}: machine {} never became Ready; deleting its node",
                    spec.name, m.name
                ),
            );
            let dp = DeleteParams::default();
            match retry(ctx.clock, "delete node", || api.delete(&name, &dp)).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("deleting node {name}"), e)),
            }
        }
    }
    let report = providers::deprovision(provider, spec, &doomed, ctx.clock).await?;
    if let Some(e) = report.failed.into_iter().next() {
        return Err(Error::provider(
            format!("deprovisioning machines of pool {}", spec.name),
            e,
        ));
    }
    // Machines the provider never made are gone as well.
    Ok(names.to_vec())
}

async fn deploy(
    ctx: &Ctx,
    pool: &PoolConfig,
    spec: &PoolSpec,
    provider: &dyn Provider,
    args: &DeployPoolArgs,
    api_version: String,
) -> Result<DeployReport> {
    let start = ctx.clock.now();
    let name = pool.name.as_str();
    let count = pool.count.unwrap_or(1);
    let key = op_key("deploy-pool", &[name]);

    let record: PoolRecord = ctx
        .state
        .update(&pool_key(name), |cur: Option<PoolRecord>| {
            let mut r = cur.unwrap_or_else(|| PoolRecord {
                provider: pool.provider.clone(),
                ..Default::default()
            });
            r.grow_to(name, count);
            (Some(r.clone()), r)
        })
        .await?;
    if record.provider != pool.provider {
        return Err(Error::Refused(format!(
            "pool {name}: its machines were made by the {} provider (kbg's state in {}), but kbg.yaml now says {}; tear the pool down before changing its provider",
            record.provider,
            ctx.state.location(),
            pool.provider
        )));
    }
    if record.machines.len() > count {
        ctx.ui.warn(format_args!(
            "pool {name} has {} machines and kbg.yaml says count: {count}; deploy-pool never removes machines (migrate and tear the pool down to shrink it)",
            record.machines.len()
        ));
    }
    let mut names = record.machines.clone();
    let mut op = DeployRecord {
        op: OpHeader::new(ctx.command(), &ctx.holder.identity()),
        machines: names.clone(),
        failed: BTreeMap::new(),
    };
    op.op.go(Phase::Provisioning);
    ctx.state.put(&key, &op).await?;

    let mut report = DeployReport {
        pool: name.to_string(),
        provider: pool.provider.clone(),
        version: spec.version.clone(),
        api_server_version: api_version,
        machines: Vec::new(),
        nodes_ready: 0,
        failed: Vec::new(),
        never_joined: Vec::new(),
        replaced: Vec::new(),
        cleaned_up: Vec::new(),
        cluster_seconds: 0.0,
    };
    let mut rounds_left = args.retry_failed;
    loop {
        ctx.ui.step(format_args!(
            "provisioning {} machines of pool {name} ({} {})",
            names.len(),
            pool.provider,
            spec.version
        ));
        let (made, failed) = providers::provision(provider, spec, &names, ctx.clock).await?;
        let made: Vec<Machine> = made
            .into_iter()
            .filter(|m| m.state != MachineState::Failed)
            .collect();
        report.failed = failed
            .iter()
            .map(|e| FailedMachine {
                name: e.machine.clone().unwrap_or_default(),
                reason: e.to_string(),
            })
            .collect();
        op.op.go(Phase::WaitingReady);
        ctx.state.put(&key, &op).await?;

        ctx.ui.step(format_args!(
            "waiting for {} nodes of pool {name} to be Ready (timeout {})",
            made.len(),
            crate::duration::display(args.timeout)
        ));
        let bar = ctx.ui.bar(made.len() as u64, "ready");
        let api: Api<Node> = Api::all(ctx.client.clone());
        let waited = wait::until(
            api,
            watcher::Config::default(),
            ctx.clock,
            args.timeout,
            format!("the nodes of pool {name} to be Ready"),
            |nodes| {
                let ready = made
                    .iter()
                    .filter(|m| node_of(m, nodes).is_some_and(|n| pool::is_ready(n)))
                    .count();
                bar.set_position(ready as u64);
                ready == made.len()
            },
        )
        .await;
        bar.finish_and_clear();
        let nodes = match waited {
            Ok(n) => n,
            Err(t) => t.last,
        };
        report.machines.clear();
        report.never_joined.clear();
        for m in &made {
            let node = node_of(m, &nodes);
            let ready = node.is_some_and(|n| pool::is_ready(n));
            if let Some(n) = node.filter(|_| ready) {
                ensure_labels_and_taints(ctx, pool, n).await?;
            }
            if !ready {
                report.never_joined.push(FailedMachine {
                    name: m.name.clone(),
                    reason: match node {
                        None => format!(
                            "no node registered within --timeout {}",
                            crate::duration::display(args.timeout)
                        ),
                        Some(n) => format!(
                            "node {} registered but was not Ready within --timeout {}",
                            pool::name(n),
                            crate::duration::display(args.timeout)
                        ),
                    },
                });
            }
            report.machines.push(MachineRow {
                name: m.name.clone(),
                node: node.map(|n| pool::name(n).to_string()),
                provider_id: m.provider_id.clone(),
                ready,
            });
        }
        report.nodes_ready = report.machines.iter().filter(|m| m.ready).count();
        let bad: Vec<String> = report
            .failed
            .iter()
            .chain(&report.never_joined)
            .map(|f| f.name.clone())
            .collect();
        if bad.is_empty() {
            break;
        }
        if rounds_left > 0 || args.cleanup_on_failure {
            ctx.ui.step(format_args!(
                "deprovisioning {} machines that did not join: {}",
                bad.len(),
                bad.join(", ")
            ));
            remove_machines(ctx, provider, spec, &bad).await?;
            let replace = rounds_left > 0;
            let record: PoolRecord = ctx
                .state
                .update(&pool_key(name), |cur: Option<PoolRecord>| {
                    let mut r = cur.unwrap_or_default();
                    r.retire(&bad);
                    if replace {
                        r.grow_to(name, count);
                    }
                    (Some(r.clone()), r)
                })
                .await?;
            if replace {
                rounds_left -= 1;
                report.replaced.extend(bad.iter().cloned());
                names = record.machines.clone();
                op.machines = names.clone();
                op.op.go(Phase::Provisioning);
                ctx.state.put(&key, &op).await?;
                continue;
            }
            report.cleaned_up = bad.clone();
            report.machines.retain(|m| !bad.contains(&m.name));
        }
        break;
    }

    op.failed = report
        .failed
        .iter()
        .chain(&report.never_joined)
        .map(|f| (f.name.clone(), f.reason.clone()))
        .collect();
    if report.ok() {
        op.op.go(Phase::Done);
    } else {
        op.op
            .fail(&format!("{} machines did not join", op.failed.len()));
    }
    ctx.state.put(&key, &op).await?;
    report.cluster_seconds = ctx.clock.elapsed(start).as_secs_f64();
    Ok(report)
}
