//! kbg's commands, one file each, and what they share: the context and the way every
//! changing command runs (holding its pools' Leases, stopping cleanly on Ctrl-C,
//! SIGTERM or a lost Lease).

pub mod demo;
pub mod deploy_pool;
pub mod migrate;
pub mod plan;
pub mod rbac;
pub mod rollback;
pub mod status;
pub mod teardown;
pub mod upgrade_control_plane;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{Cli, Command};
use crate::client::{self, describe};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::lock::{self, Holder};
use crate::settings::{self, Settings};
use crate::state::StateStore;
use crate::ui::Ui;
use crate::version::KubeVersion;

/// What a command that talks to the cluster works with.
pub struct Ctx {
    /// Resolved settings.
    pub settings: Settings,
    /// The API client (no retry layer of its own: see [`crate::retry`]).
    pub client: kube::Client,
    /// The clock every wait goes through.
    pub clock: Clock,
    /// Where results and progress go.
    pub ui: Ui,
    /// kbg's state ConfigMap.
    pub state: StateStore,
    /// Events on nodes.
    pub events: EventSink,
    /// This process, as Leases and records name it.
    pub holder: Holder,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ctx({})", self.holder.command)
    }
}

impl Ctx {
    /// Connect to the cluster for `command` (as a person would type it). Nothing is
    /// sent yet.
    ///
    /// # Errors
    /// A usage error when no client can be built.
    pub async fn new(settings: Settings, command: String, ui: Ui) -> Result<Ctx> {
        let client = client::connect(&settings.target).await?;
        Ok(Ctx::with_client(settings, client, command, ui))
    }

    /// A context over an existing client (the demo builds its own).
    pub fn with_client(settings: Settings, client: kube::Client, command: String, ui: Ui) -> Ctx {
        let clock = settings.clock;
        let holder = Holder::current(&command);
        let state = StateStore::new(
            client.clone(),
            &settings.state_namespace,
            &settings.state_configmap,
            clock,
        );
        let events = EventSink::new(
            client.clone(),
            format!("{}@{}", holder.user, holder.host),
            ui.clone(),
        );
        Ctx {
            settings,
            client,
            clock,
            ui,
            state,
            events,
            holder,
        }
    }

    /// The command line, as Leases and records name it.
    pub fn command(&self) -> &str {
        &self.holder.command
    }

    /// The API server's version (`GET /version`).
    ///
    /// # Errors
    /// When it cannot be asked, or answers something that is not a version.
    pub async fn api_server_version(&self) -> Result<KubeVersion> {
        let info = crate::retry::retry(self.clock, "get version", || {
            self.client.apiserver_version()
        })
        .await
        .map_err(|e| Error::kube("asking the API server for its version", e))?;
        KubeVersion::parse(&info.git_version).map_err(|e| {
            Error::Failed(format!(
                "the API server reports version {:?}, which kbg cannot read: {}",
                info.git_version, e.reason
            ))
        })
    }

    /// Run `op` holding the Leases of `pools`; stop it on Ctrl-C, SIGTERM, or when a
    /// Lease is lost. The Leases are released in every case, and queued Events flushed.
    ///
    /// # Errors
    /// [`Error::Lock`] when a pool is held by another kbg (nothing was run), or when a
    /// Lease is lost while `op` runs; [`Error::Interrupted`] on a signal; otherwise
    /// `op`'s own error.
    pub async fn locked<T>(
        &self,
        pools: &[&str],
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let locks = lock::acquire(
            self.client.clone(),
            &self.settings.state_namespace,
            pools,
            self.holder.clone(),
            self.settings.lease_duration,
            self.clock,
        )
        .await?;
        let result = tokio::select! {
            r = op => r,
            e = locks.lost() => Err(Error::Lock(e)),
            s = interrupted() => Err(Error::Interrupted(format!(
                "interrupted by {s}: `{}` stopped where it was; every step is recorded, so running the same command again continues from there",
                self.command()
            ))),
        };
        locks.release(self.clock).await;
        result
    }

    /// Publish the Events still queued (at most a few seconds).
    pub async fn finish(self) {
        self.events.flush(Duration::from_secs(5)).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = term => "SIGTERM",
    }
}

/// Run the command `cli` asks for.
///
/// # Errors
/// The command's error; [`Error::exit_code`] gives the process exit code.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let ui = Ui::new(cli.global.output);
    let env = |k: &str| std::env::var(k).ok();
    let resolve = || settings::resolve(&cli.global, &env);
    match cli.command {
        Command::DeployPool(ref args) => deploy_pool::run(resolve()?, args.clone(), ui).await,
        Command::Migrate(ref args) => migrate::run(resolve()?, args.clone(), ui).await,
        Command::Teardown(ref args) => teardown::run(resolve()?, args.clone(), ui).await,
        Command::Rollback(ref args) => rollback::run(resolve()?, args.clone(), ui).await,
        Command::Status(ref args) => status::run(resolve()?, args.clone(), ui).await,
        Command::Plan(ref args) => plan::run(resolve()?, args.clone(), ui).await,
        Command::UpgradeControlPlane(ref args) => {
            upgrade_control_plane::run(resolve()?, args.clone(), ui).await
        }
        Command::Demo(ref args) => demo::run(&cli.global, args.clone(), ui).await,
        Command::Rbac(ref args) => rbac::run(&resolve()?, args),
        Command::Sim(crate::cli::SimCommand::Serve(ref args)) => kbg_sim::serve(args.clone())
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| match e {
                kbg_sim::SimError::Scenario(_) | kbg_sim::SimError::Config(_) => {
                    Error::usage(e.to_string())
                }
                other => Error::Failed(other.to_string()),
            }),
    }
}

/// One line for a kube error, for messages that add their own context.
pub fn kube_line(e: &kube::Error) -> String {
    describe(e)
}
