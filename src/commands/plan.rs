//! `kbg plan [--to VERSION]`: where the control plane and the kubelets stand, and the
//! steps of an upgrade, like `kubeadm upgrade plan`. Read-only: `/version`, one list of
//! nodes, one of `kube-system`'s pods. The plan itself is [`crate::control_plane::plan`].

use std::process::ExitCode;

use super::Ctx;
use crate::cli::PlanArgs;
use crate::control_plane::planner::{Action, Plan};
use crate::control_plane::{facts, plan};
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::ui::Ui;

fn versions(vs: &[crate::version::KubeVersion]) -> String {
    if vs.is_empty() {
        return "-".into();
    }
    vs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The human form of a plan.
pub fn human(p: &Plan) -> String {
    let mut out = format!(
        "Control plane: {} (the oldest kube-apiserver; /version says {})\n",
        p.control_plane_version, p.api_server_version
    );
    if let Some(t) = &p.target {
        let hops: Vec<String> = p.hops.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "Target: {t} ({})\n",
            match hops.len() {
                0 => "already there".to_string(),
                1 => "one hop".to_string(),
                n => format!("{n} hops, one minor each: {}", hops.join(" → ")),
            }
        ));
    }
    out.push('\n');
    out.push_str(&crate::ui::table(
        ["COMPONENT", "NODE", "CURRENT", "TARGET", "SKEW"],
        p.components.iter().map(|c| {
            [
                c.component.clone(),
                c.node.clone(),
                c.current.clone(),
                c.target.clone().unwrap_or_else(|| "-".into()),
                match (c.skew_ok, &c.note) {
                    (Some(true), _) => "ok".into(),
                    (_, Some(n)) => n.clone(),
                    (Some(false), None) => "refused".into(),
                    (None, None) => "-".into(),
                },
            ]
        }),
    ));
    out.push_str("\n\n");
    out.push_str(&crate::ui::table(
        ["KUBELETS", "NODES", "CURRENT", "TARGET", "SKEW"],
        p.kubelets.iter().map(|k| {
            [
                k.pool.clone(),
                k.nodes.to_string(),
                versions(&k.current),
                k.target
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                match (k.skew_ok, &k.note) {
                    (Some(true), None) => "ok".into(),
                    (Some(true), Some(n)) => format!("ok: {n}"),
                    (_, Some(n)) => n.clone(),
                    (Some(false), None) => "refused".into(),
                    (None, None) => "-".into(),
                },
            ]
        }),
    ));
    out.push('\n');
    if !p.offers.is_empty() {
        out.push_str("\nUpgrades on offer (control_plane.available_versions):\n");
        for o in &p.offers {
            out.push_str(&format!(
                "  {:<6} {:<10} kbg plan --to {}\n",
                o.kind,
                o.version.to_string(),
                o.version
            ));
        }
    }
    if !p.steps.is_empty() {
        out.push_str("\nSteps:\n");
        let mut hop = usize::MAX;
        for s in &p.steps {
            if s.hop != hop {
                hop = s.hop;
                if hop == 0 {
                    out.push_str("  then:\n");
                } else {
                    out.push_str(&format!(
                        "  hop {hop}: the control plane to {}\n",
                        p.hops[hop - 1]
                    ));
                }
            }
            let what = match &s.action {
                Action::ReplacePool {
                    pool,
                    from,
                    to,
                    required,
                    reason,
                } => format!(
                    "{}replace pool {pool} ({}) with a {to} pool blue/green (kbg deploy-pool, migrate, teardown): {reason}",
                    if *required { "" } else { "(optional) " },
                    versions(from)
                ),
                Action::UpgradeMaster {
                    node,
                    from,
                    to,
                    first,
                    done,
                } => format!(
                    "upgrade master {node} {} → {to}{}{}",
                    from.as_ref()
                        .map_or_else(|| "-".into(), ToString::to_string),
                    if *first { " (first master)" } else { "" },
                    if *done { ": done" } else { "" }
                ),
                Action::UpgradeKubelets { nodes, to } => format!(
                    "upgrade the kubelets of {} → {to}, one by one (cordon, upgrade, restart, uncordon)",
                    nodes.join(", ")
                ),
            };
            out.push_str(&format!("  {:>3}. {what}\n", s.number));
        }
        if let Some(t) = &p.target
            && p.hops.len() == 1
        {
            out.push_str(&format!("\nRun: kbg upgrade-control-plane {t}\n"));
        } else if let Some(h) = p.hops.first() {
            out.push_str(&format!(
                "\nRun one hop at a time: kbg upgrade-control-plane {h}\n"
            ));
        }
    }
    if !p.notes.is_empty() {
        out.push('\n');
        for n in &p.notes {
            out.push_str(&format!("note: {n}\n"));
        }
    }
    out
}

/// `kbg plan`.
///
/// # Errors
/// Exit 2 for a `--to` the skew policy refuses (down across a minor); exit 1 when the
/// cluster cannot be read.
pub async fn run(settings: Settings, args: PlanArgs, ui: Ui) -> Result<ExitCode> {
    let available = settings.config.control_plane.available_versions.clone();
    let ctx = Ctx::new(settings, "kbg plan".into(), ui).await?;
    let out = async {
        let facts = facts::gather(&ctx).await?;
        let p = plan(&facts, args.to.as_ref(), &available).map_err(|v| {
            Error::usage(format!(
                "--to {}: {v}",
                args.to
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string)
            ))
        })?;
        ctx.ui.result(&p, human);
        Ok(ExitCode::SUCCESS)
    }
    .await;
    ctx.finish().await;
    out
}
