//! The `kbg` command: parse the command line, set up logs, run, map the outcome to an
//! exit code (0 done, 1 failed, 2 bad usage or input; see `kbg::error`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kbg::cli::Cli::parse();
    init_logs(cli.global.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kbg::commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            tracing::debug!(error = ?e, "failed");
            e.exit()
        }
    }
}

/// Logs go to stderr: off unless `-v` (info), `-vv` (debug), `-vvv` (trace), or
/// `RUST_LOG` says otherwise.
fn init_logs(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "off",
        1 => "kbg=info,warn",
        2 => "kbg=debug,kbg_provider_sim=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
