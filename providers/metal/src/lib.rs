//! kbg provider for pre-provisioned bare-metal hosts, over SSH.
//!
//! Bare metal cannot be created on demand: the machines exist, listed in an inventory file
//! ([`inventory`]), and a pool *takes* free ones. Provisioning machine `beta-1` means:
//! pick a free host that pool `beta` may take, record "host rack1-node2 is machine beta-1
//! of pool beta" in kbg's state ([`book`], through the [`Ledger`] kbg keeps in the
//! cluster) with compare-and-swap, then send the rendered bootstrap
//! (`templates/metal-bootstrap.sh.j2`: install the pool's kubelet/kubeadm, `kubeadm join`
//! with the pool's labels and taints) over SSH and run it ([`ssh`]). The node registers
//! as `beta-1` with provider ID `metal://rack1-node2`. Deprovisioning (after kbg has drained
//! and deleted the node) runs `kubeadm reset -f`, stops and disables the kubelet, and only
//! then frees the host.
//!
//! What a rerun does, and what happens to a host when something fails:
//!
//! - **Idempotent by machine name.** The ledger is looked up first; a machine that already
//!   holds a host keeps it. A ready one is returned untouched; one whose bootstrap failed
//!   or was cut short is reset (`kubeadm reset -f` when kubeadm is there) and bootstrapped
//!   again *on the same host*. A rerun never takes a second host for a name.
//! - **Failure before the bootstrap started** (connection refused, unknown host key, key
//!   rejected): nothing ran on the host, so a host taken by this call is handed back and
//!   the machine is reported failed.
//! - **Failure after it started** (non-zero exit, timeout, connection lost): the host may
//!   hold a half-installed kubelet that could still register a node, so it stays taken,
//!   marked failed, listed as a [`MachineState::Failed`] machine; deprovisioning it resets
//!   it and frees it. Nothing is leaked and nothing dirty is handed to the next pool.
//! - **A failed reset** keeps the host taken too: a kubelet left running would register
//!   its node again after kbg deleted it.
//!
//! Secrets: private keys stay in memory (`Debug` shows a fingerprint); the rendered
//! bootstrap goes over the SSH channel's stdin into a mode-0600 file, never on a command
//! line; script output is never logged, and the one line of a failed script's stderr that
//! goes into an error has the join token and CA hash replaced by `***`.

pub mod book;
pub mod inventory;
mod known_hosts;
pub mod settings;
mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt as _;
use kbg_provider::bootstrap::{self, BootstrapContext, BuiltinTemplate};
use kbg_provider::{
    CommandOutput, DeprovisionReport, ErrorKind, Ledger, Machine, PoolSpec, Provider,
    ProviderError, ProvisionReport, RemoteCommand, Secret,
};

use crate::book::{Assignment, Book, HostState, Step};
use crate::inventory::{Host, Inventory};
use crate::known_hosts::KnownHosts;
pub use crate::settings::MetalSettings;
use crate::ssh::{HostTrust, RunError, Session, SshError};

/// The provider's name in `kbg.yaml` and in its errors.
pub const PROVIDER: &str = "metal";

/// The script that returns a host to free: `kubeadm reset -f` (where kubeadm is
/// installed), then stop and disable the kubelet and check that it is stopped.
pub const RESET_SCRIPT: &str = r#"set -eu
if command -v kubeadm >/dev/null 2>&1; then
  kubeadm reset -f
fi
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop kubelet 2>/dev/null || true
  systemctl disable kubelet >/dev/null 2>&1 || true
  if systemctl is-active --quiet kubelet; then
    echo "kbg: the kubelet is still running after systemctl stop kubelet" >&2
    exit 1
  fi
fi
"#;

/// How the pool's bootstrap is rendered.
#[derive(Clone, Debug)]
enum Template {
    Builtin,
    File { path: PathBuf, source: String },
}

/// Options kbg passes besides the pool spec.
#[derive(Clone, Debug, Default)]
pub struct MetalOptions {
    /// The directory relative paths in the `metal:` block are resolved against (the
    /// directory of `kbg.yaml`); `None` is the current directory.
    pub base_dir: Option<PathBuf>,
    /// `--insecure-accept-host-keys`: accept hosts missing from `known_hosts`, as if the
    /// pool's settings said so. A changed or revoked key is refused regardless.
    pub insecure_accept_host_keys: bool,
}

/// The bare-metal provider for one pool.
#[derive(Debug)]
pub struct MetalProvider {
    pool: String,
    settings: MetalSettings,
    inventory: Inventory,
    trust: Arc<HostTrust>,
    template: Template,
    ledger: Arc<dyn Ledger>,
}

impl MetalProvider {
    /// The provider for `pool`, from its `metal:` block ([`PoolSpec::settings`]), keeping
    /// its record in `ledger`. Relative paths are resolved against the current directory.
    ///
    /// # Errors
    /// As [`MetalProvider::from_pool_with`].
    pub fn from_pool(pool: &PoolSpec, ledger: Arc<dyn Ledger>) -> Result<Self, ProviderError> {
        Self::from_pool_with(pool, ledger, &MetalOptions::default())
    }

    /// The provider for `pool`, with kbg's `options`.
    ///
    /// Checks everything before anything is touched: the settings, the inventory and every
    /// host in it (including loading each private key), the `known_hosts` file, and that
    /// the bootstrap template renders for this pool.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the field (`pools.beta.metal.inventory`, …) and
    /// the fix, every bad field in one line.
    pub fn from_pool_with(
        pool: &PoolSpec,
        ledger: Arc<dyn Ledger>,
        options: &MetalOptions,
    ) -> Result<Self, ProviderError> {
        let base = match &options.base_dir {
            Some(b) => b.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        let mut settings = MetalSettings::parse(&pool.name, &pool.settings, &base)?;
        settings.insecure_accept_host_keys |= options.insecure_accept_host_keys;
        let prefix = format!("pools.{}.metal", pool.name);
        let inventory = Inventory::load(&settings.inventory, &format!("{prefix}.inventory"))?;

        let known_hosts = match KnownHosts::read(&settings.known_hosts) {
            Ok(k) => k,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && settings.insecure_accept_host_keys =>
            {
                KnownHosts::empty(&settings.known_hosts)
            }
            Err(e) => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    format!("{prefix}.known_hosts"),
                    format!(
                        "cannot read {}: {e}; collect the hosts' keys into it (ssh-keyscan -p PORT ADDRESS, then check the fingerprints) or set insecure_accept_host_keys: true",
                        settings.known_hosts.display()
                    ),
                ));
            }
        };
        if known_hosts.skipped() > 0 {
            tracing::debug!(
                file = %known_hosts.path().display(),
                lines = known_hosts.skipped(),
                "skipped known_hosts lines that do not parse"
            );
        }

        let template = match (&settings.bootstrap, &pool.template) {
            (Some(_), Some(_)) => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    format!("{prefix}.bootstrap"),
                    format!(
                        "pools.{}.template is set too; keep one of the two",
                        pool.name
                    ),
                ));
            }
            (Some(path), None) => read_template(path, &format!("{prefix}.bootstrap"))?,
            (None, Some(t)) => read_template(
                &settings::resolve(&base, t),
                &format!("pools.{}.template", pool.name),
            )?,
            (None, None) => Template::Builtin,
        };
        if matches!(template, Template::Builtin) {
            // As kbg.yaml spells them (`cluster.join.*`) and the environment overrides them.
            for (field, env, missing) in [
                (
                    "endpoint",
                    "KBG_JOIN_ENDPOINT",
                    pool.join.api_server_endpoint.trim().is_empty(),
                ),
                ("token", "KBG_JOIN_TOKEN", pool.join.token.is_none()),
                (
                    "ca_cert_hash",
                    "KBG_JOIN_CA_CERT_HASH",
                    pool.join.ca_cert_hash.is_none(),
                ),
            ] {
                if missing {
                    return Err(ProviderError::invalid_config(
                        PROVIDER,
                        format!("cluster.join.{field}"),
                        format!(
                            "is required for pool {}: the metal bootstrap runs kubeadm join with it; set it or {env} (`kubeadm token create --print-join-command` prints all three)",
                            pool.name
                        ),
                    ));
                }
            }
        }

        let provider = MetalProvider {
            pool: pool.name.clone(),
            trust: Arc::new(HostTrust {
                known_hosts,
                accept_unknown: settings.insecure_accept_host_keys,
            }),
            settings,
            inventory,
            template,
            ledger,
        };
        // A template that does not render for this pool is bad input: say so now.
        if let Some(host) = provider.inventory.hosts.first() {
            provider.render(pool, &machine_example(&pool.name), host)?;
        }
        Ok(provider)
    }

    /// The resolved settings.
    pub fn settings(&self) -> &MetalSettings {
        &self.settings
    }

    /// The checked inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn check_pool(&self, pool: &PoolSpec) -> Result<(), ProviderError> {
        if pool.name == self.pool {
            Ok(())
        } else {
            Err(ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!(
                    "this provider was built for pool {}, not {} (a bug in kbg)",
                    self.pool, pool.name
                ),
            ))
        }
    }

    /// The bootstrap for `machine` on `host`. The template sees the usual variables
    /// ([`BootstrapContext`]) and, under `settings`, the `metal:` block plus
    /// `settings.host` (`name`, `address`, `port`, `user`, `labels`) and
    /// `settings.provider_id` (`metal://<host>`).
    fn render(&self, pool: &PoolSpec, machine: &str, host: &Host) -> Result<Secret, ProviderError> {
        let mut view = pool.clone();
        let mut settings = match &pool.settings {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        settings.insert(
            "host".into(),
            serde_json::json!({
                "name": host.name,
                "address": host.address,
                "port": host.port,
                "user": host.user,
                "labels": host.labels,
            }),
        );
        settings.insert(
            "provider_id".into(),
            serde_json::Value::String(book::provider_id(&host.name)),
        );
        view.settings = serde_json::Value::Object(settings);
        let ctx = BootstrapContext::new(&view, machine);
        match &self.template {
            Template::Builtin => bootstrap::render_builtin(BuiltinTemplate::MetalBootstrap, &ctx),
            Template::File { path, source } => {
                bootstrap::render_str(&path.display().to_string(), source, &ctx)
            }
        }
        .map_err(|e| ProviderError::new(PROVIDER, e.kind.clone(), e.message.clone()).with_source(e))
    }

    fn host_for(&self, host: &str, machine: &str) -> Result<&Host, ProviderError> {
        self.inventory.host(host).ok_or_else(|| {
            ProviderError::new(
                PROVIDER,
                ErrorKind::NotFound,
                format!(
                    "host {host} holds this machine but is no longer in {}; put it back to reset or use it",
                    self.inventory.path.display()
                ),
            )
            .with_machine(machine)
        })
    }

    async fn session(&self, host: &Host) -> Result<Session, SshError> {
        Session::connect(host, self.trust.clone(), self.settings.connect_timeout).await
    }

    /// Bootstrap `machine` on `host` (reset first when `retry`). `Ok` when the script ran
    /// to a zero exit.
    async fn bootstrap(
        &self,
        pool: &PoolSpec,
        machine: &str,
        host: &Host,
        retry: bool,
    ) -> Result<(), Failure> {
        let script = self.render(pool, machine, host).map_err(|e| Failure {
            started: false,
            error: e.with_machine(machine),
        })?;
        let secrets = secrets_of(pool);
        let session = self
            .session(host)
            .await
            .map_err(|e| Failure::ssh(machine, host, e, false))?;
        let result = async {
            if retry {
                tracing::info!(pool = %pool.name, %machine, host = %host.name, "resetting before bootstrapping again");
                let out = session
                    .run_script("reset", RESET_SCRIPT.as_bytes(), self.settings.reset_timeout)
                    .await
                    .map_err(|e| Failure::run(machine, host, e))?;
                if out.exit_code != 0 {
                    return Err(Failure::exit(machine, host, "reset before the retry", &out, &secrets));
                }
            }
            tracing::info!(pool = %pool.name, %machine, host = %host.name, "bootstrapping");
            let out = session
                .run_script(
                    "bootstrap",
                    script.expose().as_bytes(),
                    self.settings.bootstrap_timeout,
                )
                .await
                .map_err(|e| Failure::run(machine, host, e))?;
            if out.exit_code != 0 {
                return Err(Failure::exit(machine, host, "bootstrap", &out, &secrets));
            }
            Ok(())
        }
        .await;
        session.close().await;
        result
    }

    /// Reset `host` (held by `machine`): `kubeadm reset -f`, stop the kubelet.
    async fn reset(&self, machine: &str, host: &Host) -> Result<(), Failure> {
        let session = self
            .session(host)
            .await
            .map_err(|e| Failure::ssh(machine, host, e, false))?;
        tracing::info!(pool = %self.pool, %machine, host = %host.name, "resetting");
        let result = session
            .run_script(
                "reset",
                RESET_SCRIPT.as_bytes(),
                self.settings.reset_timeout,
            )
            .await
            .map_err(|e| Failure::run(machine, host, e));
        session.close().await;
        let out = result?;
        if out.exit_code != 0 {
            return Err(Failure::exit(machine, host, "reset", &out, &[]));
        }
        Ok(())
    }

    /// Provision one machine per its plan step; returns the machine or its error.
    async fn provision_one(
        &self,
        pool: &PoolSpec,
        name: &str,
        step: Step,
        snapshot: &Book,
    ) -> Result<Machine, ProviderError> {
        let (host_name, retry, taken_now) = match step {
            Step::NoHost => {
                return Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Capacity,
                    format!(
                        "no free host in {} that pool {} may take{}",
                        self.inventory.path.display(),
                        pool.name,
                        if self.settings.selector.is_empty() {
                            String::new()
                        } else {
                            format!(" (selector {})", label_list(&self.settings.selector))
                        }
                    ),
                )
                .with_machine(name));
            }
            Step::Existing {
                host,
                state: HostState::Ready,
            } => {
                // Ready when the plan was made: nothing to do, nothing to touch.
                let assignment = snapshot.hosts.get(&host).expect("planned from this book");
                return Ok(assignment.to_machine(&host));
            }
            Step::Existing {
                host,
                state: HostState::Resetting | HostState::ResetFailed,
            } => {
                return Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!("is being deprovisioned from host {host}; finish the teardown first, then ask for a new machine name"),
                )
                .with_machine(name));
            }
            Step::Existing { host, .. } => (host, true, false),
            Step::Take { host } => (host, false, true),
        };
        let host = self.host_for(&host_name, name)?;
        let outcome = self.bootstrap(pool, name, host, retry).await;
        let pool_name = pool.name.as_str();
        match outcome {
            Ok(()) => {
                let machine = book::update(self.ledger.as_ref(), |b| {
                    b.set_state(&host_name, pool_name, name, HostState::Ready, None);
                    b.hosts.get(&host_name).map(|a| a.to_machine(&host_name))
                })
                .await?;
                tracing::info!(pool = %pool_name, machine = %name, host = %host_name, "bootstrapped");
                machine.ok_or_else(|| {
                    ProviderError::new(
                        PROVIDER,
                        ErrorKind::Failed,
                        format!("host {host_name} was freed while it was being bootstrapped"),
                    )
                    .with_machine(name)
                })
            }
            Err(failure) => {
                let line = failure.error.message.clone();
                let recorded = if taken_now && !failure.started {
                    // Nothing ran on the host: hand it back.
                    tracing::warn!(pool = %pool_name, machine = %name, host = %host_name, error = %line, "could not start the bootstrap; handing the host back");
                    book::update(self.ledger.as_ref(), |b| {
                        b.release(&host_name, pool_name, name)
                    })
                    .await
                } else {
                    tracing::warn!(pool = %pool_name, machine = %name, host = %host_name, error = %line, "bootstrap failed; the host stays with the machine until it is deprovisioned");
                    self.mark(
                        &host_name,
                        pool_name,
                        name,
                        HostState::BootstrapFailed,
                        &line,
                    )
                    .await
                };
                match recorded {
                    Ok(()) => Err(failure.error),
                    // Say both: what failed on the host, and that kbg's record of it lags.
                    Err(e) => Err(ProviderError::new(
                        PROVIDER,
                        failure.error.kind.clone(),
                        format!("{line}; recording that in kbg's state failed too: {e}"),
                    )
                    .with_machine(name)
                    .with_source(failure.error)),
                }
            }
        }
    }

    /// Record that `host` (holding `machine` of `pool`) failed into `state`, with `error`.
    async fn mark(
        &self,
        host: &str,
        pool: &str,
        machine: &str,
        state: HostState,
        error: &str,
    ) -> Result<(), ProviderError> {
        book::update(self.ledger.as_ref(), |b| {
            b.set_state(host, pool, machine, state, Some(error.to_string()));
        })
        .await
    }

    async fn deprovision_one(&self, pool: &str, name: &str) -> Result<(), ProviderError> {
        let marked = book::update(self.ledger.as_ref(), |b| {
            let host = b.find(pool, name).map(|(h, _)| h.to_string())?;
            b.set_state(&host, pool, name, HostState::Resetting, None);
            Some(host)
        })
        .await?;
        let Some(host_name) = marked else {
            tracing::debug!(%pool, machine = %name, "holds no host; already deprovisioned");
            return Ok(());
        };
        let result = match self.host_for(&host_name, name) {
            Ok(host) => self.reset(name, host).await.map_err(|f| f.error),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                book::update(self.ledger.as_ref(), |b| b.release(&host_name, pool, name)).await?;
                tracing::info!(%pool, machine = %name, host = %host_name, "host reset and freed");
                Ok(())
            }
            Err(e) => {
                let line = e.message.clone();
                self.mark(&host_name, pool, name, HostState::ResetFailed, &line)
                    .await?;
                tracing::warn!(%pool, machine = %name, host = %host_name, error = %line, "reset failed; the host stays taken");
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Provider for MetalProvider {
    fn kind(&self) -> &str {
        PROVIDER
    }

    async fn provision(
        &self,
        pool: &PoolSpec,
        names: &[String],
    ) -> kbg_provider::Result<ProvisionReport> {
        self.check_pool(pool)?;
        let mut unique: Vec<String> = Vec::new();
        for n in names {
            if n.trim().is_empty() {
                return Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    "asked for a machine with an empty name (a bug in kbg)",
                ));
            }
            if !unique.contains(n) {
                unique.push(n.clone());
            }
        }
        // Take hosts for the new names, all in one compare-and-swap.
        let inventory = &self.inventory;
        let selector = &self.settings.selector;
        let (steps, snapshot) = book::update(self.ledger.as_ref(), |b| {
            let steps = book::plan(inventory, selector, b, &pool.name, &unique);
            for (name, step) in &steps {
                if let Step::Take { host } = step {
                    let h = inventory.host(host).expect("planned from the inventory");
                    b.hosts
                        .insert(host.clone(), Assignment::new(h, &pool.name, name));
                }
            }
            (steps, b.clone())
        })
        .await?;
        let snapshot = &snapshot;
        let results: Vec<(usize, Result<Machine, ProviderError>)> =
            futures::stream::iter(steps.into_iter().enumerate())
                .map(|(i, (name, step))| async move {
                    (i, self.provision_one(pool, &name, step, snapshot).await)
                })
                .buffer_unordered(self.settings.parallelism)
                .collect()
                .await;
        let mut results = results;
        results.sort_by_key(|(i, _)| *i);
        let mut report = ProvisionReport::default();
        for (_, r) in results {
            match r {
                Ok(m) => report.machines.push(m),
                Err(e) => report.failed.push(e),
            }
        }
        Ok(report)
    }

    async fn list(&self, pool: &PoolSpec) -> kbg_provider::Result<Vec<Machine>> {
        self.check_pool(pool)?;
        let (book, _) = book::load(self.ledger.as_ref()).await?;
        let mut machines: Vec<Machine> = book
            .hosts
            .iter()
            .filter(|(_, a)| a.pool == pool.name)
            .map(|(h, a)| a.to_machine(h))
            .collect();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    async fn deprovision(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
    ) -> kbg_provider::Result<DeprovisionReport> {
        self.check_pool(pool)?;
        let names: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
        let results: Vec<(usize, String, Result<(), ProviderError>)> =
            futures::stream::iter(names.into_iter().enumerate())
                .map(|(i, name)| async move {
                    let r = self.deprovision_one(&pool.name, &name).await;
                    (i, name, r)
                })
                .buffer_unordered(self.settings.parallelism)
                .collect()
                .await;
        let mut results = results;
        results.sort_by_key(|(i, _, _)| *i);
        let mut report = DeprovisionReport::default();
        for (_, name, r) in results {
            match r {
                Ok(()) => report.removed.push(name),
                Err(e) => report.failed.push(e),
            }
        }
        Ok(report)
    }

    async fn run_command(
        &self,
        pool: &PoolSpec,
        machine: &Machine,
        command: &RemoteCommand,
    ) -> kbg_provider::Result<CommandOutput> {
        self.check_pool(pool)?;
        // A machine of the pool, by the ledger; else an inventory host of that name (how
        // masters listed in the inventory are reached).
        let (book, _) = book::load(self.ledger.as_ref()).await?;
        let host = match book.find(&pool.name, &machine.name) {
            Some((h, _)) => self.host_for(h, &machine.name)?,
            None => self.inventory.host(&machine.name).ok_or_else(|| {
                ProviderError::new(
                    PROVIDER,
                    ErrorKind::NotFound,
                    format!(
                        "holds no host of pool {} and no inventory host has that name",
                        pool.name
                    ),
                )
                .with_machine(&machine.name)
            })?,
        };
        let timeout = std::time::Duration::from_secs(command.timeout_secs.max(1));
        let session = self
            .session(host)
            .await
            .map_err(|e| Failure::ssh(&machine.name, host, e, false).error)?;
        let result = session
            .run_script("command", command.script.as_bytes(), timeout)
            .await;
        session.close().await;
        let out = result.map_err(|e| Failure::run(&machine.name, host, e).error)?;
        Ok(CommandOutput {
            exit_code: out.exit_code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A machine that could not be bootstrapped or reset.
#[derive(Debug)]
struct Failure {
    /// Whether the script may have started on the host.
    started: bool,
    error: ProviderError,
}

impl Failure {
    fn ssh(machine: &str, host: &Host, e: SshError, started: bool) -> Self {
        Failure {
            started,
            error: ProviderError::new(PROVIDER, e.kind(), format!("host {}: {e}", host.name))
                .with_machine(machine)
                .with_source(e),
        }
    }

    fn run(machine: &str, host: &Host, e: RunError) -> Self {
        Self::ssh(machine, host, e.error, e.started)
    }

    fn exit(machine: &str, host: &Host, what: &str, out: &ssh::Output, secrets: &[String]) -> Self {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail = last_lines(&redact(&stderr, secrets), 3, 400);
        let mut message = format!(
            "host {} ({}): {what} exited {}",
            host.name,
            host.ssh_target(),
            out.exit_code
        );
        if !tail.is_empty() {
            message.push_str(": ");
            message.push_str(&tail);
        }
        Failure {
            started: true,
            error: ProviderError::new(PROVIDER, ErrorKind::Failed, message).with_machine(machine),
        }
    }
}

/// The secret strings of `pool`'s join configuration, to be cut out of any text that
/// came back from a host: the token, its secret half, the CA hash.
fn secrets_of(pool: &PoolSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = &pool.join.token {
        out.push(t.expose().to_string());
        if let Some((_, secret)) = t.expose().split_once('.') {
            out.push(secret.to_string());
        }
    }
    if let Some(h) = &pool.join.ca_cert_hash {
        out.push(h.expose().to_string());
    }
    out.retain(|s| s.len() >= 6);
    // Longest first, so the whole token goes before its half.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// `text` with every occurrence of each secret replaced by `***`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// The last `n` non-empty lines of `text`, joined with ` | `, at most `max` characters
/// (the end kept): one line fit for an error message.
fn last_lines(text: &str, n: usize, max: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(n)..].join(" | ");
    let count = joined.chars().count();
    if count <= max {
        joined
    } else {
        let cut: String = joined.chars().skip(count - max).collect();
        format!("…{cut}")
    }
}

fn label_list(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn machine_example(pool: &str) -> String {
    kbg_provider::machine_name(pool, 0)
}

fn read_template(path: &Path, field: &str) -> Result<Template, ProviderError> {
    std::fs::read_to_string(path)
        .map(|source| Template::File {
            path: path.to_path_buf(),
            source,
        })
        .map_err(|e| {
            ProviderError::invalid_config(
                PROVIDER,
                field,
                format!("cannot read {}: {e}", path.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::{JoinConfig, MemoryLedger, Taint, TaintEffect};

    /// Pool beta with labels and a taint, over a one-host inventory in `dir`.
    fn pool(dir: &Path, taints: Vec<Taint>) -> PoolSpec {
        inventory::testing::write_key(dir, "id", 7, 0o600);
        std::fs::write(
            dir.join("inventory.yaml"),
            "hosts:\n- {name: rack1-node2, address: 10.0.0.22, key: id, labels: {rack: r1}}\n",
        )
        .unwrap();
        PoolSpec {
            name: "beta".into(),
            version: "v1.31.2".into(),
            labels: BTreeMap::from([
                ("kbg.io/pool".to_string(), "beta".to_string()),
                ("tier".to_string(), "web".to_string()),
            ]),
            taints,
            settings: serde_json::json!({
                "inventory": dir.join("inventory.yaml"),
                "known_hosts": dir.join("known_hosts"),
                "insecure_accept_host_keys": true,
            }),
            template: None,
            join: JoinConfig {
                api_server_endpoint: "10.0.0.10:6443".into(),
                token: Some(Secret::new("abcdef.0123456789abcdef")),
                ca_cert_hash: Some(Secret::new("sha256:00ff")),
            },
        }
    }

    fn provider(pool: &PoolSpec) -> Result<MetalProvider, ProviderError> {
        MetalProvider::from_pool(pool, Arc::new(MemoryLedger::default()))
    }

    fn rendered(pool: &PoolSpec) -> String {
        let p = provider(pool).unwrap();
        let host = &p.inventory.hosts[0];
        p.render(pool, "beta-1", host).unwrap().expose().to_string()
    }

    #[test]
    fn the_bootstrap_installs_the_pools_version_and_joins_with_its_labels_and_taints() {
        let dir = tempfile::tempdir().unwrap();
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("web".into()),
            effect: TaintEffect::NoSchedule,
        };
        let script = rendered(&pool(dir.path(), vec![taint]));
        insta::assert_snapshot!(script);
        // It is a valid POSIX shell script.
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    #[test]
    fn without_taints_the_bootstrap_registers_none() {
        let dir = tempfile::tempdir().unwrap();
        let script = rendered(&pool(dir.path(), vec![]));
        assert!(!script.contains("register-with-taints"), "{script}");
        assert!(
            script.contains("    provider-id: \"metal://rack1-node2\"\nJOIN\n"),
            "{script}"
        );
    }

    #[test]
    fn a_template_of_the_users_renders_with_the_host_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pool(dir.path(), vec![]);
        let t = dir.path().join("mine.sh.j2");
        std::fs::write(&t, "echo {{ machine }} on {{ settings.host.name }} ({{ settings.host.labels.rack }}) as {{ settings.provider_id }}\n").unwrap();
        p.settings["bootstrap"] = serde_json::json!(t);
        assert_eq!(
            rendered(&p),
            "echo beta-1 on rack1-node2 (r1) as metal://rack1-node2\n"
        );

        std::fs::write(&t, "echo {{ settings.hots.name }}\n").unwrap();
        let err = provider(&p).unwrap_err();
        assert!(err.to_string().starts_with("metal: template "), "{err}");
        assert!(err.to_string().contains("mine.sh.j2"), "{err}");

        p.template = Some(t.display().to_string());
        let err = provider(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metal: pools.beta.metal.bootstrap: pools.beta.template is set too; keep one of the two"
        );
    }

    #[test]
    fn the_builtin_bootstrap_needs_the_whole_join_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pool(dir.path(), vec![]);
        p.join.token = None;
        let err = provider(&p).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metal: cluster.join.token: is required for pool beta: "),
            "{err}"
        );
    }

    /// A ledger that can be read (empty) but not written: kbg's state is unreachable.
    #[derive(Debug)]
    struct ReadOnlyLedger;

    #[async_trait]
    impl Ledger for ReadOnlyLedger {
        async fn load(&self, _: &str) -> kbg_provider::Result<Option<kbg_provider::LedgerEntry>> {
            Ok(None)
        }
        async fn store(
            &self,
            _: &str,
            _: serde_json::Value,
            _: Option<&str>,
        ) -> kbg_provider::Result<String> {
            Err(ProviderError::new(
                "ledger",
                ErrorKind::PermissionDenied,
                "configmaps is forbidden",
            ))
        }
    }

    #[tokio::test]
    async fn when_no_host_can_be_recorded_the_request_fails_before_any_ssh() {
        let dir = tempfile::tempdir().unwrap();
        let p = pool(dir.path(), vec![]);
        // The inventory's host is 10.0.0.22, unreachable from here: reaching SSH would
        // fail differently (and slowly).
        let provider = MetalProvider::from_pool(&p, Arc::new(ReadOnlyLedger)).unwrap();
        let err = provider
            .provision(&p, &["beta-0".into()])
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "ledger: configmaps is forbidden");
    }

    #[test]
    fn known_hosts_must_exist_unless_unknown_hosts_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pool(dir.path(), vec![]);
        p.settings["insecure_accept_host_keys"] = serde_json::json!(false);
        let err = provider(&p).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metal: pools.beta.metal.known_hosts: cannot read ")
                && err.to_string().contains("ssh-keyscan"),
            "{err}"
        );
    }

    #[test]
    fn redaction_cuts_the_token_its_secret_half_and_the_hash() {
        let pool = PoolSpec {
            name: "beta".into(),
            version: "v1.31.2".into(),
            labels: BTreeMap::new(),
            taints: vec![],
            settings: serde_json::Value::Null,
            template: None,
            join: kbg_provider::JoinConfig {
                api_server_endpoint: "10.0.0.1:6443".into(),
                token: Some(Secret::new("abcdef.0123456789abcdef")),
                ca_cert_hash: Some(Secret::new("sha256:feedbeef")),
            },
        };
        let s = secrets_of(&pool);
        let text = "token: abcdef.0123456789abcdef\nsecret 0123456789abcdef hash sha256:feedbeef\n";
        assert_eq!(redact(text, &s), "token: ***\nsecret *** hash ***\n");
    }

    #[test]
    fn last_lines_make_one_short_line() {
        assert_eq!(last_lines("a\n\nb\nc\nd\n", 3, 100), "b | c | d");
        assert_eq!(last_lines("", 3, 100), "");
        assert_eq!(last_lines("0123456789", 3, 4), "…6789");
    }
}
