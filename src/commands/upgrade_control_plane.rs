//! `kbg upgrade-control-plane VERSION`: the masters in place, one by one, then their
//! kubelets; see [`crate::control_plane::upgrade`] for the steps and the guarantees.

use std::process::ExitCode;

use super::Ctx;
use crate::cli::UpgradeControlPlaneArgs;
use crate::control_plane::upgrade::{self, UpgradeReport};
use crate::error::Result;
use crate::settings::{self, Settings};
use crate::ui::Ui;

/// `kbg upgrade-control-plane`.
///
/// # Errors
/// Exit 2 for bad settings, a version the skew policy refuses (a skipped minor, a
/// downgrade, kubelets that would fall behind), or another upgrade in progress, all
/// found before anything changes; exit 1 for an unhealthy cluster (nothing touched) or a
/// master that failed (the message and `kbg status` say where it stopped).
pub async fn run(settings: Settings, args: UpgradeControlPlaneArgs, ui: Ui) -> Result<ExitCode> {
    let cp = settings::resolve_control_plane(&settings.config.control_plane, &args)?;
    let command = format!(
        "kbg upgrade-control-plane {}{}",
        args.version,
        if args.dry_run { " --dry-run" } else { "" }
    );
    let ctx = Ctx::new(settings, command, ui).await?;
    let out = match upgrade::execute(&ctx, &cp, &args).await {
        Ok(report) => {
            ctx.ui.result(&report, UpgradeReport::human);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    };
    ctx.finish().await;
    out
}
