//! kbg provider for Juju Charmed Kubernetes worker applications, through the `juju` CLI.
//!
//! A pool is a Juju *application* named after it, running the worker charm
//! (`kubernetes-worker` by default), as in Charmed Kubernetes' own blue/green upgrade:
//! deploy a new worker application, move the workloads off the old one (kbg's drain, or
//! the charm's `pause` action), remove the old application.
//!
//! | Provider call   | juju (3.x spelling; [`syntax`] has the 2.9 one)                        |
//! |-----------------|------------------------------------------------------------------------|
//! | `provision`     | `deploy <charm> <pool> --channel … -n N --constraints … --base …       |
//! |                 | --config <file>`, or `add-unit <pool> -n K`; `integrate` the relations;|
//! |                 | then `status --format=json <pool>` until the units run                 |
//! | `list`          | `status --format=json <pool>`                                          |
//! | `deprovision`   | `remove-unit <units…> --no-prompt`, or `remove-application <pool>      |
//! |                 | --no-prompt` when every unit goes; then `status` until they are gone   |
//! | `run_command`   | `exec --unit <unit> --timeout Ns -- <script>`                          |
//! | `hand_over`, [`JujuProvider::pause`] | `run <units…> pause delete-local-data=… force=…` (when `use_charm_pause`) |
//! | `hand_back`, [`JujuProvider::resume`] | `run <units…> resume` (`kbg rollback` of a paused pool) |
//! | [`JujuProvider::refresh_application`] | `refresh <application> --channel …` (masters)    |
//!
//! **Machines and units.** Juju names units itself (`beta/3`) and never reuses a number,
//! while kbg provisions by its own stable names (`beta-0`, …). The provider records which
//! unit each name got in kbg's state ([`Ledger`]; give it kbg's with
//! [`JujuProvider::with_ledger`]), and adopts units no record claims before adding any, so
//! a rerun after a crash never adds units twice ([`plan`] explains the rules). A machine's
//! node is found by the unit machine's hostname ([`Machine::node_name`]) — the name the
//! charm's kubelet registers — or by a provider ID spelled from the machine when
//! `provider_id` is set.
//!
//! **The pool's labels and taints** reach the kubelet through the charm's options (for
//! `kubernetes-worker`: `labels`, `kubelet-extra-args register-with-taints=…`, and the snap
//! `channel` of the pool's minor version; for `k8s-worker`: `node-labels`,
//! `bootstrap-node-taints`). Charm options go to Juju in a 0600 file, never on the command
//! line, since they can be secret.
//!
//! **Readiness** is what `juju status` says: the unit's machine `started` and its agent
//! `idle`/`executing` is a running machine; a provisioning error, a failed hook or a lost
//! agent is a failed one (removed, unless `keep_failed_units`, so nothing leaks). kbg then
//! waits for the node itself on the Kubernetes API.

mod cli;
mod output;
mod plan;
mod settings;
mod status;
pub mod syntax;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use kbg_provider::bootstrap::{self, BootstrapContext, BuiltinTemplate};
use kbg_provider::{
    CommandOutput, DeprovisionReport, ErrorKind, HandOverOptions, HandOverReport, Ledger, Machine,
    MachineState, MemoryLedger, PoolSpec, Provider, ProviderError, ProvisionReport, RemoteCommand,
    Result, Secret,
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use cli::Cli;
use plan::Pairs;
pub use settings::{DEFAULT_CHARM, JujuSettings, defaults, is_application_name};
use status::{AppStatus, Status, UnitView};
pub use syntax::JujuVersion;
use syntax::{Deploy, Syntax};

const PROVIDER: &str = "juju";

/// Extra wall-clock seconds a `juju exec` or action call gets beyond its own `--timeout`
/// or `--wait`, for the CLI to reach the controller and print the result.
pub const CLI_GRACE_SECS: u64 = 60;

/// The charm options that carry a pool's kubelet version, labels and taints, for the
/// worker charms kbg knows (empty for others: set their options under `config:`).
///
/// - `kubernetes-worker` (Charmed Kubernetes): `channel` = `<minor>/stable` (the kubelet
///   snap's channel), `labels` = `k=v k2=v2`, `kubelet-extra-args` =
///   `register-with-taints=k=v:NoSchedule,…`;
/// - `k8s-worker` (Canonical Kubernetes): `node-labels` = `k=v k2=v2`,
///   `bootstrap-node-taints` = `k=v:NoSchedule …`.
pub fn charm_options(charm: &str, pool: &PoolSpec) -> BTreeMap<String, Value> {
    let name = charm
        .trim_start_matches("ch:")
        .rsplit('/')
        .next()
        .unwrap_or(charm);
    let labels = pool
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let taints: Vec<String> = pool.taints.iter().map(ToString::to_string).collect();
    let mut out = BTreeMap::new();
    match name {
        "kubernetes-worker" => {
            if let Some(minor) = settings::minor_of(&pool.version) {
                out.insert("channel".into(), json!(format!("{minor}/stable")));
            }
            out.insert("labels".into(), json!(labels));
            if !taints.is_empty() {
                out.insert(
                    "kubelet-extra-args".into(),
                    json!(format!("register-with-taints={}", taints.join(","))),
                );
            }
        }
        "k8s-worker" => {
            out.insert("node-labels".into(), json!(labels));
            if !taints.is_empty() {
                out.insert("bootstrap-node-taints".into(), json!(taints.join(" ")));
            }
        }
        _ => {}
    }
    out
}

/// The outcome of a charm action on several units (or machines).
#[derive(Debug, Default)]
pub struct ActionReport {
    /// The machines (or units, for [`JujuProvider::run_action`]) where it completed.
    pub done: Vec<String>,
    /// One error per machine (or unit) where it failed, with the charm's message.
    pub failed: Vec<ProviderError>,
}

/// A charm action's outcome as a hand-over's (`pause`) or its undoing's (`resume`).
impl From<ActionReport> for HandOverReport {
    fn from(report: ActionReport) -> Self {
        HandOverReport {
            handed_over: report.done,
            failed: report.failed,
        }
    }
}

/// A pool that is a Juju application. Build it with [`JujuProvider::from_pool`].
#[derive(Debug)]
pub struct JujuProvider {
    pool: String,
    settings: JujuSettings,
    cli: Cli,
    ledger: Arc<dyn Ledger>,
    version: OnceCell<JujuVersion>,
}

impl JujuProvider {
    /// The provider for `pool`, from its `juju:` block ([`PoolSpec::settings`]).
    ///
    /// Checks every setting; runs nothing. The machine ↔ unit record lives in memory
    /// until [`JujuProvider::with_ledger`] gives it kbg's state.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming `pools.<pool>.juju.<field>`.
    pub fn from_pool(pool: &PoolSpec) -> Result<Self> {
        let settings = JujuSettings::parse(pool)?;
        let cli = Cli {
            program: settings.juju.clone(),
            data_dir: settings.data_dir.clone(),
            model: settings.model.clone(),
            timeout: Duration::from_secs(settings.command_timeout_secs),
            program_field: format!("pools.{}.juju.juju", pool.name),
        };
        Ok(JujuProvider {
            pool: pool.name.clone(),
            settings,
            cli,
            ledger: Arc::new(MemoryLedger::default()),
            version: OnceCell::new(),
        })
    }

    /// The same provider, recording machine ↔ unit pairs in `ledger` (kbg's state in the
    /// cluster) under the key `juju/<model>/<application>`.
    #[must_use]
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// The parsed settings.
    pub fn settings(&self) -> &JujuSettings {
        &self.settings
    }

    /// Whether the operator asked for the charm's own `pause` action at the hand-over
    /// (`use_charm_pause: true`) instead of kbg's drain.
    pub fn uses_charm_pause(&self) -> bool {
        self.settings.use_charm_pause
    }

    /// The Juju CLI's version (`juju version`), asked once.
    ///
    /// # Errors
    /// When the CLI cannot run, prints something else than a version, or is older than
    /// 2.x ([`ErrorKind::Unsupported`]).
    pub async fn version(&self) -> Result<JujuVersion> {
        self.version
            .get_or_try_init(|| async {
                let out = self
                    .cli
                    .raw(&Syntax::version(), false, Duration::ZERO)
                    .await?;
                if !out.success {
                    return Err(cli::failure(&Syntax::version(), &out));
                }
                let v = JujuVersion::parse(&out.stdout).ok_or_else(|| {
                    ProviderError::new(
                        PROVIDER,
                        ErrorKind::Failed,
                        format!(
                            "cannot read a version in what `juju version` printed: {:?}",
                            out.stdout.trim()
                        ),
                    )
                })?;
                if v.major < 2 {
                    return Err(ProviderError::unsupported(
                        PROVIDER,
                        format!(
                            "Juju {}.{} is not supported; use 2.9 or 3.x",
                            v.major, v.minor
                        ),
                    ));
                }
                Ok(v)
            })
            .await
            .copied()
    }

    async fn syntax(&self) -> Result<Syntax> {
        Ok(Syntax(self.version().await?))
    }

    /// The Juju bundle overlay that deploys this pool with `units` units, rendered from
    /// `templates/juju-bundle.yaml.j2` (for operators who deploy bundles themselves). A
    /// [`Secret`], as charm options may be.
    ///
    /// # Errors
    /// If the template does not render (a bug).
    pub fn bundle(&self, pool: &PoolSpec, units: usize) -> Result<Secret> {
        let s = &self.settings;
        // Bundles spell the OS as a base (Juju 3); a series setting is translated.
        let base = s
            .base
            .clone()
            .or_else(|| s.series.as_deref().and_then(syntax::base_of_series));
        let var = json!({
            "application": s.application,
            "charm": s.charm,
            "channel": s.channel,
            "base": base,
            "series": null,
            "num_units": units,
            "constraints": s.constraints,
            "options": s.config,
            "relations": s.relations,
        });
        let ctx = BootstrapContext::new(pool, &s.application).with_var("juju", var);
        bootstrap::render_builtin(BuiltinTemplate::JujuBundle, &ctx)
    }

    // ---- status -------------------------------------------------------------------

    async fn status_once(&self) -> Result<Status> {
        let out = self
            .cli
            .run(&Syntax::status(&self.settings.application))
            .await?;
        let st: Status = serde_json::from_str(&out).map_err(|e| {
            ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!("juju status: output is not the JSON status ({e})"),
            )
        })?;
        // Juju could not compute the application's status: its units are unknown, which
        // must not read as "no units".
        if let Some(err) = self.app(&st).and_then(|a| a.status_error.as_deref()) {
            return Err(ProviderError::new(
                PROVIDER,
                ErrorKind::Transient,
                format!(
                    "juju status: application {}: {err}",
                    self.settings.application
                ),
            ));
        }
        Ok(st)
    }

    /// `juju status` for the application, retrying passing faults (an unreachable
    /// controller) a few times.
    async fn status(&self) -> Result<Status> {
        let first = Duration::from_secs_f64(self.settings.poll_interval_secs.min(2.0));
        (|| self.status_once())
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(first)
                    .with_max_times(3),
            )
            .when(ProviderError::is_retryable)
            .await
    }

    fn app<'s>(&self, st: &'s Status) -> Option<&'s AppStatus> {
        st.applications.get(&self.settings.application)
    }

    fn view(st: &Status, app: &AppStatus, unit: &str) -> Option<UnitView> {
        let u = app.units.get(unit)?;
        let machine = u.machine.as_deref().and_then(|id| st.machine(id));
        Some(status::unit_view(u, machine))
    }

    /// Units of the application that are not being removed.
    fn live_units(st: &Status, app: Option<&AppStatus>) -> Vec<String> {
        let Some(app) = app else { return Vec::new() };
        app.units
            .keys()
            .filter(|u| Self::view(st, app, u).is_some_and(|v| v.state != MachineState::Stopping))
            .cloned()
            .collect()
    }

    /// The [`Machine`] for `unit`, named `name`.
    fn machine(&self, st: &Status, app: &AppStatus, name: &str, unit: &str) -> Machine {
        let u = app.units.get(unit);
        let machine_id = u.and_then(|u| u.machine.clone());
        let m = machine_id.as_deref().and_then(|id| st.machine(id));
        let view = Self::view(st, app, unit).unwrap_or(UnitView {
            state: MachineState::Gone,
            reason: None,
        });
        let mut details = BTreeMap::from([("unit".to_string(), unit.to_string())]);
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                details.insert(k.to_string(), v);
            }
        };
        put("juju-machine", machine_id.clone());
        put("instance-id", m.and_then(|m| m.instance_id.clone()));
        put("availability-zone", m.and_then(status::availability_zone));
        if let Some(u) = u {
            let ws = &u.workload_status;
            put(
                "workload",
                ws.current.as_ref().map(|c| match ws.message.as_deref() {
                    Some(msg) if !msg.is_empty() => format!("{c}: {msg}"),
                    _ => c.clone(),
                }),
            );
        }
        if matches!(view.state, MachineState::Failed | MachineState::Pending) {
            put("reason", view.reason.clone());
        }
        let hostname = m.and_then(|m| m.hostname.clone());
        let provider_id = self.settings.provider_id.as_deref().and_then(|t| {
            expand(t, |p| match p {
                "instance-id" => m.and_then(|m| m.instance_id.clone()),
                "availability-zone" => m.and_then(status::availability_zone),
                "hostname" => hostname.clone(),
                "unit" => Some(unit.to_string()),
                "machine" => machine_id.clone(),
                _ => None,
            })
        });
        Machine {
            name: name.to_string(),
            pool: self.pool.clone(),
            provider_id,
            node_name: hostname,
            state: view.state,
            address: u
                .and_then(|u| u.public_address.clone())
                .or_else(|| m.and_then(|m| m.dns_name.clone())),
            details,
        }
    }

    // ---- the machine ↔ unit record ----------------------------------------------------

    fn ledger_key(&self) -> String {
        format!(
            "juju/{}/{}",
            self.settings.model.as_deref().unwrap_or("-"),
            self.settings.application
        )
    }

    async fn load_pairs(&self) -> Result<Pairs> {
        Ok(self
            .ledger
            .load(&self.ledger_key())
            .await?
            .and_then(|e| serde_json::from_value(e.value.get("units")?.clone()).ok())
            .unwrap_or_default())
    }

    /// Record `add`, forget `remove` and every pair whose unit is not in `live` (when
    /// given); compare-and-swap, redone on a conflict.
    async fn record(
        &self,
        add: &[(String, String)],
        remove: &[String],
        live: Option<&[String]>,
    ) -> Result<()> {
        let key = self.ledger_key();
        let mut attempts = 0;
        loop {
            let entry = self.ledger.load(&key).await?;
            let mut pairs: Pairs = entry
                .as_ref()
                .and_then(|e| serde_json::from_value(e.value.get("units")?.clone()).ok())
                .unwrap_or_default();
            let before = pairs.clone();
            if let Some(live) = live {
                pairs = plan::prune(&pairs, live);
            }
            for name in remove {
                pairs.remove(name);
            }
            for (name, unit) in add {
                pairs.insert(name.clone(), unit.clone());
            }
            if pairs == before && entry.is_some() {
                return Ok(());
            }
            match self
                .ledger
                .store(
                    &key,
                    json!({ "units": pairs }),
                    entry.as_ref().map(|e| e.version.as_str()),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() && attempts < 5 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    // ---- provisioning ---------------------------------------------------------------

    /// `juju deploy` the application with `units` units.
    async fn deploy(&self, syntax: Syntax, units: usize) -> Result<()> {
        let s = &self.settings;
        let file = options_file(&json!({ &s.application: &s.config }))?;
        let args = syntax.deploy(&Deploy {
            charm: &s.charm,
            application: &s.application,
            channel: &s.channel,
            units,
            constraints: s.constraints.as_deref(),
            base: s.base.as_deref(),
            series: s.series.as_deref(),
            config_file: (!s.config.is_empty()).then(|| file.path()),
        });
        self.cli.run(&args).await.map(drop)
    }

    /// Relate the application as `relations:` says, skipping relations that exist.
    async fn ensure_relations(&self, syntax: Syntax, app: Option<&AppStatus>) -> Result<()> {
        let me = &self.settings.application;
        for (endpoint, other) in &self.settings.relations {
            let other_app = other.split(':').next().unwrap_or(other);
            if app.is_some_and(|a| a.related_on(endpoint).iter().any(|r| r == other_app)) {
                continue;
            }
            let args = syntax.relate(&format!("{me}:{endpoint}"), other);
            let out = self.cli.raw(&args, true, Duration::ZERO).await?;
            if !out.success && !out.message().contains("already exists") {
                let err = cli::failure(&args, &out);
                return Err(ProviderError::new(
                    PROVIDER,
                    err.kind.clone(),
                    format!(
                        "{}; the units are created and recorded: run again to retry",
                        err.message
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Poll `juju status` until each of `pairs` runs or fails, or the wait times out.
    async fn wait_running(
        &self,
        pairs: &[(String, String)],
    ) -> Result<(Vec<Machine>, Vec<(String, String, ProviderError)>)> {
        let timeout = Duration::from_secs(self.settings.wait_timeout_secs);
        let deadline = Instant::now() + timeout;
        let interval = Duration::from_secs_f64(self.settings.poll_interval_secs);
        loop {
            let st = match self.status().await {
                Ok(st) => st,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let app = self.app(&st);
            let mut running = Vec::new();
            let mut failed = Vec::new();
            let mut pending = Vec::new();
            for (name, unit) in pairs {
                let view = app.and_then(|a| Self::view(&st, a, unit));
                match view {
                    None => failed.push((
                        name.clone(),
                        unit.clone(),
                        ProviderError::new(
                            PROVIDER,
                            ErrorKind::Transient,
                            format!("unit {unit} disappeared from juju status"),
                        ),
                    )),
                    Some(v) => match v.state {
                        MachineState::Running => running.push(self.machine(
                            &st,
                            app.expect("a unit has an application"),
                            name,
                            unit,
                        )),
                        MachineState::Failed => failed.push((
                            name.clone(),
                            unit.clone(),
                            ProviderError::new(
                                PROVIDER,
                                ErrorKind::Failed,
                                format!("unit {unit}: {}", v.reason.as_deref().unwrap_or("failed")),
                            ),
                        )),
                        MachineState::Stopping | MachineState::Gone => failed.push((
                            name.clone(),
                            unit.clone(),
                            ProviderError::new(
                                PROVIDER,
                                ErrorKind::Transient,
                                format!("unit {unit} is being removed"),
                            ),
                        )),
                        MachineState::Pending => pending.push((name, unit, v.reason)),
                    },
                }
            }
            if pending.is_empty() || Instant::now() >= deadline {
                for (name, unit, reason) in pending {
                    failed.push((
                        name.clone(),
                        unit.clone(),
                        ProviderError::new(
                            PROVIDER,
                            ErrorKind::Timeout,
                            format!(
                                "unit {unit} not running after {} s ({})",
                                timeout.as_secs(),
                                reason.as_deref().unwrap_or("no status")
                            ),
                        ),
                    ));
                }
                return Ok((running, failed));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Units that failed to come up: removed (unless `keep_failed_units`) and forgotten,
    /// each reported by machine with Juju's words.
    async fn dispose_failed(
        &self,
        syntax: Syntax,
        failed: Vec<(String, String, ProviderError)>,
    ) -> Vec<ProviderError> {
        let broken: Vec<(String, String)> = failed
            .iter()
            .filter(|(_, _, e)| e.kind == ErrorKind::Failed)
            .map(|(n, u, _)| (n.clone(), u.clone()))
            .collect();
        let mut removal: Option<String> = None;
        if !broken.is_empty() && !self.settings.keep_failed_units {
            let units: Vec<String> = broken.iter().map(|(_, u)| u.clone()).collect();
            match self.cli.run_prompt_free(&syntax.remove_units(&units)).await {
                Ok(_) => {
                    let names: Vec<String> = broken.iter().map(|(n, _)| n.clone()).collect();
                    if let Err(e) = self.record(&[], &names, None).await {
                        tracing::warn!(error = %e, "could not forget removed units");
                    }
                    removal = Some("removed (set keep_failed_units to keep it)".into());
                }
                Err(e) => removal = Some(format!("removing it failed too: {}", e.message)),
            }
        }
        failed
            .into_iter()
            .map(|(name, _, e)| {
                let mut message = e.message.clone();
                if e.kind == ErrorKind::Failed
                    && let Some(r) = &removal
                {
                    message = format!("{message}; {r}");
                }
                ProviderError::new(PROVIDER, e.kind, message).with_machine(name)
            })
            .collect()
    }

    // ---- actions, masters -------------------------------------------------------------

    /// The unit behind `machine`.
    fn unit_for(&self, machine: &Machine, pairs: &Pairs) -> Option<String> {
        machine
            .details
            .get("unit")
            .cloned()
            .or_else(|| plan::unit_of(&self.pool, &self.settings.application, &machine.name, pairs))
    }

    /// Run the charm action `action` with `params` on `targets` (label → unit), waiting
    /// up to `action_timeout_secs`.
    async fn action_on(
        &self,
        targets: &[(String, String)],
        action: &str,
        params: &[(String, String)],
    ) -> Result<ActionReport> {
        if targets.is_empty() {
            return Ok(ActionReport::default());
        }
        let syntax = self.syntax().await?;
        let units: Vec<String> = targets.iter().map(|(_, u)| u.clone()).collect();
        let wait = self.settings.action_timeout_secs;
        let args = syntax.action(&units, action, params, wait);
        let out = self
            .cli
            .raw(&args, true, Duration::from_secs(wait + CLI_GRACE_SECS))
            .await?;
        let Some(tasks) = output::parse_tasks(&out.stdout) else {
            return Err(if out.success {
                ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!("juju {}: unexpected output for action {action}", args[0]),
                )
            } else {
                cli::failure(&args, &out)
            });
        };
        let mut report = ActionReport::default();
        for (label, unit) in targets {
            match tasks.get(unit) {
                Some(t) if t.succeeded() => report.done.push(label.clone()),
                Some(t) => {
                    let said = [t.message.as_str(), t.stderr.trim()]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .unwrap_or("no message");
                    let status = if t.status.is_empty() {
                        "failed"
                    } else {
                        &t.status
                    };
                    report.failed.push(
                        ProviderError::new(
                            PROVIDER,
                            ErrorKind::Failed,
                            format!("action {action} on {unit} {status}: {said}"),
                        )
                        .with_machine(label),
                    );
                }
                None => report.failed.push(
                    ProviderError::new(
                        PROVIDER,
                        if out.success {
                            ErrorKind::Failed
                        } else {
                            cli::classify(&out.message())
                        },
                        format!("action {action} on {unit}: no result ({})", out.message()),
                    )
                    .with_machine(label),
                ),
            }
        }
        Ok(report)
    }

    /// Run the charm's `pause` action on `machines` — the charm cordons and drains its
    /// own node (`kubectl drain`), kbg's hand-over when `use_charm_pause` is set — with
    /// `delete-local-data` and `force` following kbg's `--delete-emptydir-data` and
    /// `--force`. Waits up to `action_timeout_secs` for every unit.
    ///
    /// # Errors
    /// A per-machine failure (the charm's message) goes into [`ActionReport::failed`];
    /// an `Err` means the action could not be started.
    pub async fn pause(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
        delete_local_data: bool,
        force: bool,
    ) -> Result<ActionReport> {
        let params = [
            (
                "delete-local-data".to_string(),
                delete_local_data.to_string(),
            ),
            ("force".to_string(), force.to_string()),
        ];
        self.machine_action(pool, machines, "pause", &params).await
    }

    /// Run the charm's `resume` action (uncordon) on `machines`: rollback after
    /// [`JujuProvider::pause`].
    ///
    /// # Errors
    /// As [`JujuProvider::pause`].
    pub async fn resume(&self, pool: &PoolSpec, machines: &[Machine]) -> Result<ActionReport> {
        self.machine_action(pool, machines, "resume", &[]).await
    }

    async fn machine_action(
        &self,
        _pool: &PoolSpec,
        machines: &[Machine],
        action: &str,
        params: &[(String, String)],
    ) -> Result<ActionReport> {
        let pairs = self.load_pairs().await?;
        let mut targets = Vec::new();
        let mut unknown = Vec::new();
        for m in machines {
            match self.unit_for(m, &pairs) {
                Some(u) => targets.push((m.name.clone(), u)),
                None => unknown.push(
                    ProviderError::new(
                        PROVIDER,
                        ErrorKind::NotFound,
                        format!(
                            "no Juju unit is known for this machine of pool {}",
                            self.pool
                        ),
                    )
                    .with_machine(&m.name),
                ),
            }
        }
        let mut report = self.action_on(&targets, action, params).await?;
        report.failed.extend(unknown);
        Ok(report)
    }

    /// Run any charm action on named units (`kubernetes-control-plane/0`, …), for the
    /// control-plane path (e.g. the `upgrade` action after a refresh).
    ///
    /// # Errors
    /// As [`JujuProvider::pause`]; results are reported by unit name.
    pub async fn run_action(
        &self,
        units: &[String],
        action: &str,
        params: &[(String, String)],
    ) -> Result<ActionReport> {
        let targets: Vec<(String, String)> = units.iter().map(|u| (u.clone(), u.clone())).collect();
        self.action_on(&targets, action, params).await
    }

    /// Upgrade an application's charm in place — how Charmed Kubernetes upgrades its
    /// masters (`juju refresh kubernetes-control-plane --channel 1.32/stable`; 2.9:
    /// `upgrade-charm`). `channel` `None` keeps the current one.
    ///
    /// # Errors
    /// Juju's message when the refresh is refused.
    pub async fn refresh_application(
        &self,
        application: &str,
        channel: Option<&str>,
    ) -> Result<()> {
        let syntax = self.syntax().await?;
        self.cli
            .run(&syntax.refresh(application, channel))
            .await
            .map(drop)
    }

    /// Set charm options on an application (`juju config <application> --file …`, the
    /// options in a 0600 file), e.g. the kubelet snap `channel` of the masters.
    ///
    /// # Errors
    /// Juju's message when an option is refused.
    pub async fn set_charm_config(
        &self,
        application: &str,
        options: &BTreeMap<String, Value>,
    ) -> Result<()> {
        let file = options_file(&json!({ application: options }))?;
        self.cli
            .run(&Syntax::config_file(application, file.path()))
            .await
            .map(drop)
    }
}

/// Charm options for `--config`/`--file`: `{application: {option: value}}` written as
/// JSON (which is YAML) to a temporary file that only this user can read (0600) and that
/// is removed when the returned handle drops.
fn options_file(options: &Value) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("kbg-juju-config-")
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| {
            ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!("cannot create the charm options file: {e}"),
            )
        })?;
    file.write_all(options.to_string().as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| {
            ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!("cannot write the charm options file: {e}"),
            )
        })?;
    Ok(file)
}

/// `template` with each `{placeholder}` replaced by `value(placeholder)`; `None` if one
/// has no value.
fn expand(template: &str, value: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        out.push_str(&value(&after[..close])?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[async_trait]
impl Provider for JujuProvider {
    fn kind(&self) -> &str {
        PROVIDER
    }

    async fn provision(&self, _pool: &PoolSpec, names: &[String]) -> Result<ProvisionReport> {
        if names.is_empty() {
            return Ok(ProvisionReport::default());
        }
        let syntax = self.syntax().await?;
        let st = self.status().await?;
        let app = self.app(&st);
        if app.is_some_and(AppStatus::is_dying) {
            return Err(ProviderError::new(
                PROVIDER,
                ErrorKind::Transient,
                format!(
                    "application {} is being removed; run again once it is gone",
                    self.settings.application
                ),
            ));
        }
        let app_exists = app.is_some();
        let live = Self::live_units(&st, app);
        let pairs = self.load_pairs().await?;
        let assignment = plan::assign(&self.pool, names, &pairs, &live);
        let mut have = assignment.have.clone();
        let mut record = assignment.adopted.clone();
        let mut short = Vec::new();
        let mut latest = st;
        let mut latest_live = live.clone();
        if !assignment.missing.is_empty() {
            let k = assignment.missing.len();
            if !app_exists {
                self.deploy(syntax, k).await?;
            } else {
                self.cli
                    .run(&Syntax::add_unit(&self.settings.application, k))
                    .await?;
            }
            latest = self.status().await?;
            latest_live = Self::live_units(&latest, self.app(&latest));
            let (paired, left) = plan::pair_new(&assignment.missing, &live, &latest_live);
            record.extend(paired.iter().cloned());
            have.extend(paired);
            short = left;
        }
        self.record(&record, &[], Some(&latest_live)).await?;
        self.ensure_relations(syntax, self.app(&latest)).await?;

        let (machines, failed) = self.wait_running(&have).await?;
        let mut report = ProvisionReport {
            machines,
            failed: self.dispose_failed(syntax, failed).await,
        };
        for name in short {
            report.failed.push(
                ProviderError::new(
                    PROVIDER,
                    ErrorKind::Transient,
                    "juju added fewer units than asked; run again to add the rest",
                )
                .with_machine(name),
            );
        }
        // Report in the order asked.
        let order: BTreeMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        report
            .machines
            .sort_by_key(|m| order.get(m.name.as_str()).copied().unwrap_or(usize::MAX));
        Ok(report)
    }

    async fn list(&self, _pool: &PoolSpec) -> Result<Vec<Machine>> {
        let st = self.status().await?;
        let Some(app) = self.app(&st) else {
            return Ok(Vec::new());
        };
        let units: Vec<String> = app.units.keys().cloned().collect();
        let pairs = plan::prune(&self.load_pairs().await?, &units);
        let mut machines: Vec<Machine> = units
            .iter()
            .map(|u| self.machine(&st, app, &plan::name_of(&self.pool, u, &pairs), u))
            .collect();
        machines.sort_by_key(|m| {
            m.details
                .get("unit")
                .and_then(|u| status::unit_number(u))
                .unwrap_or(u32::MAX)
        });
        Ok(machines)
    }

    async fn deprovision(
        &self,
        _pool: &PoolSpec,
        machines: &[Machine],
    ) -> Result<DeprovisionReport> {
        if machines.is_empty() {
            return Ok(DeprovisionReport::default());
        }
        let syntax = self.syntax().await?;
        let st = self.status().await?;
        let app = self.app(&st);
        let present: BTreeSet<String> = app
            .map(|a| a.units.keys().cloned().collect())
            .unwrap_or_default();
        let live = Self::live_units(&st, app);
        let pairs = self.load_pairs().await?;

        let mut report = DeprovisionReport::default();
        let mut targets: Vec<(String, String)> = Vec::new();
        for m in machines {
            match self.unit_for(m, &pairs) {
                Some(u) if present.contains(&u) => targets.push((m.name.clone(), u)),
                _ => report.removed.push(m.name.clone()),
            }
        }
        let targeted: BTreeSet<&str> = targets.iter().map(|(_, u)| u.as_str()).collect();
        let to_remove: Vec<String> = live
            .iter()
            .filter(|u| targeted.contains(u.as_str()))
            .cloned()
            .collect();
        let whole_app = !live.is_empty() && live.iter().all(|u| targeted.contains(u.as_str()));
        let mut cli_error: Option<ProviderError> = None;
        if !to_remove.is_empty() {
            let args = if whole_app {
                syntax.remove_application(&self.settings.application)
            } else {
                syntax.remove_units(&to_remove)
            };
            if let Err(e) = self.cli.run_prompt_free(&args).await {
                cli_error = Some(e);
            }
        }

        // Wait until the units are gone from `juju status`.
        let timeout = Duration::from_secs(self.settings.remove_timeout_secs);
        let deadline = Instant::now() + timeout;
        let interval = Duration::from_secs_f64(self.settings.poll_interval_secs);
        let mut waiting = targets.clone();
        loop {
            if waiting.is_empty() {
                break;
            }
            let st = match self.status().await {
                Ok(st) => st,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let app = self.app(&st);
            let mut still = Vec::new();
            for (name, unit) in waiting {
                let view = app.and_then(|a| Self::view(&st, a, &unit));
                match view {
                    None => report.removed.push(name),
                    // The removal command failed and this unit is not on its way out.
                    Some(v) if v.state != MachineState::Stopping && cli_error.is_some() => {
                        let e = cli_error.as_ref().expect("checked");
                        report.failed.push(
                            ProviderError::new(PROVIDER, e.kind.clone(), e.message.clone())
                                .with_machine(name),
                        );
                    }
                    Some(_) => still.push((name, unit)),
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for (name, unit) in waiting {
                    report.failed.push(
                        ProviderError::new(
                            PROVIDER,
                            ErrorKind::Timeout,
                            format!(
                                "unit {unit} still present {} s after its removal",
                                timeout.as_secs()
                            ),
                        )
                        .with_machine(name),
                    );
                }
                break;
            }
            tokio::time::sleep(interval).await;
        }
        let gone: Vec<String> = report.removed.clone();
        self.record(&[], &gone, None).await?;
        Ok(report)
    }

    fn hands_over(&self) -> bool {
        self.settings.use_charm_pause
    }

    async fn hand_over(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
        options: &HandOverOptions,
    ) -> Result<HandOverReport> {
        self.pause(pool, machines, options.delete_emptydir_data, options.force)
            .await
            .map(Into::into)
    }

    async fn hand_back(&self, pool: &PoolSpec, machines: &[Machine]) -> Result<HandOverReport> {
        self.resume(pool, machines).await.map(Into::into)
    }

    async fn run_command(
        &self,
        _pool: &PoolSpec,
        machine: &Machine,
        command: &RemoteCommand,
    ) -> Result<CommandOutput> {
        let pairs = self.load_pairs().await?;
        let unit = self.unit_for(machine, &pairs).ok_or_else(|| {
            ProviderError::new(
                PROVIDER,
                ErrorKind::NotFound,
                format!(
                    "no Juju unit is known for this machine of pool {}",
                    self.pool
                ),
            )
            .with_machine(&machine.name)
        })?;
        let syntax = self.syntax().await?;
        let args = syntax.exec(&unit, &command.script, command.timeout_secs);
        let out = self
            .cli
            .raw(
                &args,
                true,
                Duration::from_secs(command.timeout_secs + CLI_GRACE_SECS),
            )
            .await
            .map_err(|e| e.with_machine(&machine.name))?;
        if let Some(task) = output::parse_tasks(&out.stdout).and_then(|mut t| t.remove(&unit)) {
            if task.status == "failed" && task.return_code == 0 && !task.message.is_empty() {
                return Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!("juju {}: {}", args[0], task.message),
                )
                .with_machine(&machine.name));
            }
            return Ok(task.into_output());
        }
        let err = if out.success {
            ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!("juju {}: no result for unit {unit}", args[0]),
            )
        } else if out.message().contains("timed out") {
            ProviderError::new(
                PROVIDER,
                ErrorKind::Timeout,
                format!("juju {}: {}", args[0], out.message()),
            )
        } else {
            cli::failure(&args, &out)
        };
        Err(err.with_machine(&machine.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::{JoinConfig, Taint, TaintEffect};

    fn pool(labels: &[(&str, &str)], taints: Vec<Taint>) -> PoolSpec {
        PoolSpec {
            name: "beta".into(),
            version: "v1.31.2".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints,
            settings: Value::Null,
            template: None,
            join: JoinConfig::default(),
        }
    }

    #[test]
    fn charm_options_carry_labels_taints_and_the_kubelet_channel() {
        let taints = vec![
            Taint {
                key: "dedicated".into(),
                value: Some("web".into()),
                effect: TaintEffect::NoSchedule,
            },
            Taint {
                key: "spot".into(),
                value: None,
                effect: TaintEffect::NoExecute,
            },
        ];
        let p = pool(&[("kbg.io/pool", "beta"), ("tier", "web")], taints);
        assert_eq!(
            charm_options("ch:kubernetes-worker", &p),
            BTreeMap::from([
                ("channel".to_string(), json!("1.31/stable")),
                ("labels".to_string(), json!("kbg.io/pool=beta tier=web")),
                (
                    "kubelet-extra-args".to_string(),
                    json!("register-with-taints=dedicated=web:NoSchedule,spot:NoExecute")
                ),
            ])
        );
        assert_eq!(
            charm_options("k8s-worker", &p),
            BTreeMap::from([
                (
                    "node-labels".to_string(),
                    json!("kbg.io/pool=beta tier=web")
                ),
                (
                    "bootstrap-node-taints".to_string(),
                    json!("dedicated=web:NoSchedule spot:NoExecute")
                ),
            ])
        );
        assert!(charm_options("./my-worker.charm", &p).is_empty());
        // No taints: no kubelet-extra-args at all.
        assert!(
            !charm_options("kubernetes-worker", &pool(&[], vec![]))
                .contains_key("kubelet-extra-args")
        );
    }

    #[test]
    fn provider_ids_are_spelled_from_the_machine() {
        let v = |p: &str| match p {
            "instance-id" => Some("i-0abc".to_string()),
            "availability-zone" => Some("us-east-1a".to_string()),
            _ => None,
        };
        assert_eq!(
            expand("aws:///{availability-zone}/{instance-id}", v).as_deref(),
            Some("aws:///us-east-1a/i-0abc")
        );
        assert_eq!(expand("x/{hostname}", v), None);
        assert_eq!(expand("plain", v).as_deref(), Some("plain"));
        assert_eq!(expand("broken{", v), None);
    }

    #[test]
    fn the_bundle_is_the_pool_as_an_overlay() {
        let mut p = pool(&[("kbg.io/pool", "beta")], vec![]);
        p.settings = json!({"constraints": "cores=4", "series": "jammy",
                            "relations": {"kube-control": "kubernetes-control-plane:kube-control"}});
        let provider = JujuProvider::from_pool(&p).unwrap();
        let text = provider.bundle(&p, 3).unwrap();
        let doc = text.expose();
        for want in [
            "  beta:\n",
            "    charm: \"kubernetes-worker\"",
            "    base: \"ubuntu@22.04\"",
            "    num_units: 3",
            "      labels: \"kbg.io/pool=beta\"",
            "  - [\"beta:kube-control\", \"kubernetes-control-plane:kube-control\"]",
        ] {
            assert!(doc.contains(want), "{want} not in\n{doc}");
        }
    }
}
