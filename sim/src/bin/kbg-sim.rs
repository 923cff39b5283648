//! `kbg-sim`: the simulated cluster alone (`kbg sim serve` does the same).

use clap::Parser;

/// Runs a simulated Kubernetes cluster on 127.0.0.1 until SIGINT or SIGTERM.
#[derive(Parser)]
#[command(name = "kbg-sim", version)]
struct Cli {
    #[command(flatten)]
    serve: kbg_sim::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match kbg_sim::serve(cli.serve).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kbg-sim: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
