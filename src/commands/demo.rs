//! `kbg demo` (placeholder while the demo is written).

use std::process::ExitCode;

use crate::cli::{DemoArgs, GlobalArgs};
use crate::error::{Error, Result};
use crate::ui::Ui;

/// `kbg demo`.
///
/// # Errors
/// Not written yet.
pub async fn run(_global: &GlobalArgs, _args: DemoArgs, _ui: Ui) -> Result<ExitCode> {
    Err(Error::Failed("not built yet".into()))
}
