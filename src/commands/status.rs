//! `kbg status`: the pools and their nodes, the masters' control-plane and kubelet
//! versions with the state of a control-plane upgrade (StarlingX's
//! `upgrading-second-master`, …), the operations kbg recorded, and who holds which pool.
//! Read-only: three lists, one read of the state ConfigMap.

use std::collections::BTreeMap;
use std::process::ExitCode;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::Ctx;
use crate::cli::StatusArgs;
use crate::control_plane::Facts;
use crate::cordon;
use crate::error::{Error, Result};
use crate::lock::COMMAND_ANNOTATION;
use crate::pool;
use crate::retry::retry;
use crate::settings::Settings;
use crate::state::{CONTROL_PLANE_KEY, ControlPlaneRecord, HostStatus, MANAGED_BY, OpHeader};
use crate::ui::Ui;

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Its pool, if any.
    pub pool: Option<String>,
    /// `control-plane` or `worker`.
    pub role: String,
    /// Kubelet version.
    pub kubelet_version: Option<String>,
    /// Ready condition.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub cordoned: bool,
    /// The operation that cordoned it, when kbg did.
    pub cordoned_by: Option<String>,
    /// Pods on it that have not finished.
    pub pods: usize,
    /// Its machine (the provider ID).
    pub machine: Option<String>,
}

/// One pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolRow {
    /// Pool name.
    pub name: String,
    /// Provider, when the pool is in `kbg.yaml`.
    pub provider: Option<String>,
    /// How its nodes are found.
    pub selector: String,
    /// Nodes.
    pub nodes: usize,
    /// Ready nodes.
    pub ready: usize,
    /// Cordoned nodes.
    pub cordoned: usize,
    /// `count` in `kbg.yaml`.
    pub desired: Option<usize>,
    /// The kubelet versions of its nodes.
    pub versions: Vec<String>,
}

/// One recorded operation.
#[derive(Debug, Clone, Serialize)]
pub struct OperationRow {
    /// The state key.
    pub key: String,
    /// The record's common fields.
    #[serde(flatten)]
    pub header: OpHeader,
}

/// One master: its control plane and kubelet, and where an upgrade left it.
#[derive(Debug, Clone, Serialize)]
pub struct MasterRow {
    /// Node name.
    pub name: String,
    /// The oldest version among its static pods (kube-apiserver,
    /// kube-controller-manager, kube-scheduler), when visible.
    pub control_plane_version: Option<String>,
    /// Its kubelet's version.
    pub kubelet_version: Option<String>,
    /// Ready condition.
    pub ready: bool,
    /// The version the recorded upgrade moves it to.
    pub target_version: Option<String>,
    /// Where the recorded upgrade left it (`upgraded-control-plane`,
    /// `upgrading-control-plane-failed`, …).
    pub upgrade_status: Option<HostStatus>,
}

/// The control-plane upgrade kbg recorded.
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneUpgradeRow {
    /// The version it started from.
    pub from_version: String,
    /// The version it moves to.
    pub to_version: String,
    /// `kubeadm`, `manifests` or `charm`.
    pub method: String,
    /// StarlingX's state: `upgrading-second-master-failed`, `upgrade-complete`, ….
    pub state: String,
    /// Why it stopped, when it failed.
    pub message: Option<String>,
    /// When the record last changed.
    pub updated_at: String,
    /// Where etcd was snapshotted.
    pub etcd_backup: Option<String>,
}

/// One held pool.
#[derive(Debug, Clone, Serialize)]
pub struct LockRow {
    /// The pool.
    pub pool: String,
    /// The holder's identity.
    pub holder: String,
    /// The holder's command.
    pub command: Option<String>,
    /// Last renewal.
    pub renewed_at: Option<String>,
}

/// The result of `kbg status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The API server's version.
    pub api_server_version: String,
    /// Pools.
    pub pools: Vec<PoolRow>,
    /// Nodes.
    pub nodes: Vec<NodeRow>,
    /// The masters' control-plane and kubelet versions.
    pub masters: Vec<MasterRow>,
    /// The control-plane upgrade kbg recorded, if any.
    pub control_plane_upgrade: Option<ControlPlaneUpgradeRow>,
    /// Operations recorded in kbg's state (unfinished first).
    pub operations: Vec<OperationRow>,
    /// Pools held by a kbg now.
    pub locks: Vec<LockRow>,
}

impl StatusReport {
    fn human(&self) -> String {
        let mut out = crate::ui::table(
            [
                "NODE", "POOL", "ROLE", "VERSION", "READY", "CORDONED", "PODS", "MACHINE",
            ],
            self.nodes.iter().map(|n| {
                [
                    n.name.clone(),
                    n.pool.clone().unwrap_or_else(|| "-".into()),
                    n.role.clone(),
                    n.kubelet_version.clone().unwrap_or_else(|| "-".into()),
                    if n.ready { "True" } else { "False" }.into(),
                    match (&n.cordoned, &n.cordoned_by) {
                        (false, _) => "no".into(),
                        (true, Some(op)) => format!("yes (kbg {op})"),
                        (true, None) => "yes".into(),
                    },
                    n.pods.to_string(),
                    n.machine.clone().unwrap_or_else(|| "-".into()),
                ]
            }),
        );
        out.push_str("\n\n");
        out.push_str(&crate::ui::table(
            [
                "POOL", "PROVIDER", "NODES", "READY", "CORDONED", "VERSIONS", "SELECTOR",
            ],
            self.pools.iter().map(|p| {
                [
                    p.name.clone(),
                    p.provider.clone().unwrap_or_else(|| "-".into()),
                    match p.desired {
                        Some(d) => format!("{}/{d}", p.nodes),
                        None => p.nodes.to_string(),
                    },
                    p.ready.to_string(),
                    p.cordoned.to_string(),
                    p.versions.join(","),
                    p.selector.clone(),
                ]
            }),
        ));
        out.push('\n');
        if !self.masters.is_empty() {
            out.push('\n');
            out.push_str(&crate::ui::table(
                [
                    "MASTER",
                    "CONTROL PLANE",
                    "KUBELET",
                    "READY",
                    "TARGET",
                    "UPGRADE",
                ],
                self.masters.iter().map(|m| {
                    [
                        m.name.clone(),
                        m.control_plane_version
                            .clone()
                            .unwrap_or_else(|| "-".into()),
                        m.kubelet_version.clone().unwrap_or_else(|| "-".into()),
                        if m.ready { "True" } else { "False" }.into(),
                        m.target_version.clone().unwrap_or_else(|| "-".into()),
                        m.upgrade_status.map_or("-", HostStatus::as_str).to_string(),
                    ]
                }),
            ));
            out.push('\n');
        }
        if let Some(u) = &self.control_plane_upgrade {
            out.push_str(&format!(
                "\ncontrol-plane upgrade {} → {} ({}): {}{} (updated {})\n",
                u.from_version,
                u.to_version,
                u.method,
                u.state,
                u.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
                u.updated_at
            ));
        }
        let active: Vec<&OperationRow> = self
            .operations
            .iter()
            .filter(|o| !o.header.phase.is_finished())
            .collect();
        if active.is_empty() {
            out.push_str("\nno operation in progress");
        } else {
            out.push('\n');
            for o in active {
                out.push_str(&format!(
                    "operation {}: {:?}{} (last run by {}, updated {})\n",
                    o.header.command,
                    o.header.phase,
                    o.header
                        .message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                    o.header.holder,
                    o.header.updated_at
                ));
            }
        }
        for l in &self.locks {
            out.push_str(&format!("\npool {} is held by {}", l.pool, l.holder));
        }
        out
    }
}

/// `kbg status`.
///
/// # Errors
/// Exit 1 when the cluster cannot be read.
pub async fn run(settings: Settings, args: StatusArgs, ui: Ui) -> Result<ExitCode> {
    let ctx = Ctx::new(settings, "kbg status".into(), ui).await?;
    let report = status(&ctx, &args).await;
    let out = report.map(|r| {
        ctx.ui.result(&r, StatusReport::human);
        ExitCode::SUCCESS
    });
    ctx.finish().await;
    out
}

/// Gather the status.
///
/// # Errors
/// When the cluster cannot be read.
pub async fn status(ctx: &Ctx, args: &StatusArgs) -> Result<StatusReport> {
    let api_version = ctx.api_server_version().await?;
    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let all = ListParams::default();
    let nodes = retry(ctx.clock, "list nodes", || nodes_api.list(&all))
        .await
        .map_err(|e| Error::kube("listing nodes", e))?
        .items;
    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let pods = retry(ctx.clock, "list pods", || pods_api.list(&all))
        .await
        .map_err(|e| Error::kube("listing pods", e))?
        .items;
    let mut pods_per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.iter().filter(|p| !pool::is_finished(p)) {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *pods_per_node.entry(n).or_default() += 1;
        }
    }
    let config = &ctx.settings.config;
    let mut rows: Vec<NodeRow> = nodes
        .iter()
        .map(|n| {
            let name = pool::name(n).to_string();
            NodeRow {
                pool: pool::pool_of(n, config),
                role: pool::role(n).into(),
                kubelet_version: pool::kubelet_version(n).map(String::from),
                ready: pool::is_ready(n),
                cordoned: pool::is_cordoned(n),
                cordoned_by: cordon::note_of(n).map(|c| c.operation),
                pods: pods_per_node.get(&name).copied().unwrap_or(0),
                machine: pool::provider_id(n).map(String::from),
                name,
            }
        })
        .filter(|r| args.pool.is_none() || r.pool == args.pool)
        .collect();
    rows.sort_by(|a, b| (&a.pool, &a.name).cmp(&(&b.pool, &b.name)));

    let mut pool_names: Vec<String> = config.pools.keys().cloned().collect();
    for r in &rows {
        if let Some(p) = &r.pool
            && !pool_names.contains(p)
        {
            pool_names.push(p.clone());
        }
    }
    pool_names.sort();
    let pools: Vec<PoolRow> = pool_names
        .iter()
        .filter(|p| args.pool.is_none() || args.pool.as_ref() == Some(*p))
        .map(|p| {
            let cfg = config.pools.get(p);
            let mine: Vec<&NodeRow> = rows.iter().filter(|r| r.pool.as_ref() == Some(p)).collect();
            let mut versions: Vec<String> = mine
                .iter()
                .filter_map(|r| r.kubelet_version.clone())
                .collect();
            versions.sort();
            versions.dedup();
            PoolRow {
                name: p.clone(),
                provider: cfg.map(|c| c.provider.clone()),
                selector: cfg
                    .map(|c| c.selector().to_string())
                    .unwrap_or_else(|| format!("{}={p}", kbg_provider::POOL_LABEL)),
                nodes: mine.len(),
                ready: mine.iter().filter(|r| r.ready).count(),
                cordoned: mine.iter().filter(|r| r.cordoned).count(),
                desired: cfg.and_then(|c| c.count),
                versions,
            }
        })
        .collect();

    let data = ctx.state.read_all().await?;
    let record: Option<ControlPlaneRecord> = data
        .get(CONTROL_PLANE_KEY)
        .and_then(|raw| serde_json::from_str(raw).ok());
    let facts = Facts::from_objects(api_version.clone(), &nodes, &pods, config);
    let masters: Vec<MasterRow> = facts
        .masters
        .iter()
        .map(|m| {
            let recorded = record
                .as_ref()
                .and_then(|r| r.masters.iter().find(|x| x.node == m.node));
            MasterRow {
                name: m.node.clone(),
                control_plane_version: m.control_plane_version().map(|v| v.to_string()),
                kubelet_version: m.kubelet.as_ref().map(ToString::to_string),
                ready: m.ready,
                target_version: recorded.and(record.as_ref()).map(|r| r.to_version.clone()),
                upgrade_status: recorded.map(|x| x.status),
            }
        })
        .collect();
    let control_plane_upgrade = record.map(|r| ControlPlaneUpgradeRow {
        from_version: r.from_version,
        to_version: r.to_version,
        method: r.method,
        state: r.state.to_string(),
        message: r.op.message,
        updated_at: r.op.updated_at.to_string(),
        etcd_backup: r.etcd_backup,
    });
    let mut operations: Vec<OperationRow> = data
        .iter()
        .filter(|(k, _)| !k.starts_with("pool.") && !k.starts_with("ledger."))
        .filter_map(|(k, raw)| {
            serde_json::from_str::<OpHeader>(raw)
                .ok()
                .map(|header| OperationRow {
                    key: k.clone(),
                    header,
                })
        })
        .collect();
    operations.sort_by_key(|o| {
        (
            o.header.phase.is_finished(),
            std::cmp::Reverse(o.header.updated_at),
        )
    });

    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.state_namespace);
    let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let locks = retry(ctx.clock, "list leases", || leases.list(&lp))
        .await
        .map_err(|e| Error::kube("listing kbg's Leases", e))?
        .items
        .into_iter()
        .filter_map(|l| {
            let pool = l
                .metadata
                .name
                .as_deref()?
                .strip_prefix("kbg-pool-")?
                .to_string();
            let spec = l.spec?;
            let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
            Some(LockRow {
                pool,
                holder,
                command: l
                    .metadata
                    .annotations
                    .and_then(|a| a.get(COMMAND_ANNOTATION).cloned()),
                renewed_at: spec.renew_time.map(|t| t.0.to_string()),
            })
        })
        .collect();

    Ok(StatusReport {
        api_server_version: api_version.to_string(),
        pools,
        nodes: rows,
        masters,
        control_plane_upgrade,
        operations,
        locks,
    })
}
