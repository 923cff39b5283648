//! kbg provider that delegates to any external program speaking a small JSON protocol.
//!
//! A *plugin* is any executable: a shell script around the MAAS CLI, a Terraform wrapper,
//! an OpenStack client, a site's own tooling. For every operation kbg starts it once,
//! writes one JSON request on its stdin and reads one JSON response from its stdout
//! (`PROTOCOL.md` next to this crate is the specification, with examples):
//!
//! | op            | request carries                          | response carries          |
//! |---------------|------------------------------------------|---------------------------|
//! | `provision`   | machine names, a bootstrap each, `join`  | `machines`, `errors`      |
//! | `list`        | —                                        | `machines`                |
//! | `deprovision` | the machines                             | `removed`, `errors`       |
//! | `run`         | one machine, `command`                   | `output`                  |
//!
//! Every request also carries `"protocol": 1` and the pool (name, version, labels,
//! taints, and the plugin's own `config`); every response must echo `"protocol": 1`.
//!
//! What kbg guarantees a plugin, and what it asks of one:
//!
//! - **Secrets travel only on stdin.** The join token and the rendered bootstraps are in
//!   the request and nowhere else: never in argv (visible in `ps`), never in the
//!   environment (kbg removes any inherited variable whose value contains a secret), never
//!   in kbg's logs. Text the plugin prints that contains one is redacted before kbg shows
//!   it.
//! - **Idempotent by machine name.** A `provision` of a name that exists returns the
//!   existing machine. kbg may repeat any request after a crash.
//! - **Errors are typed.** Per-machine errors name the machine and may say `kind` and
//!   `retryable`; a whole-request failure is an `error` object or a non-zero exit.
//!   Output that is not a response — not JSON, the wrong protocol, a missing field, more
//!   than 16 MiB — is a typed error naming the program; it never panics kbg
//!   (property-tested).
//! - **Bounded.** Each request has a deadline (`timeout_secs`, default 600 s; `run` gets
//!   the command's timeout plus [`RUN_GRACE_SECS`]); a plugin past it is killed with its
//!   whole process group. The last 64 KiB of stderr are kept for error messages.

mod protocol;
mod runner;
mod settings;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use kbg_provider::bootstrap::{self, BootstrapContext, BuiltinTemplate};
use kbg_provider::{
    CommandOutput, DeprovisionReport, ErrorKind, Machine, MachineState, PoolSpec, Provider,
    ProviderError, ProvisionReport, RemoteCommand, Result, Secret,
};
use serde_json::{Value, json};

pub use protocol::PROTOCOL_VERSION;
use protocol::{
    CommandView, JoinView, Op, PluginError, PoolView, Request, Response, ResponseError, one_line,
};
use runner::RunFailure;
pub use settings::{Bootstrap, DEFAULT_TIMEOUT_SECS, ExecSettings};

const PROVIDER: &str = "exec";

/// Extra wall-clock seconds a `run` request gets beyond the command's own timeout, for
/// the plugin to reach the machine and report back.
pub const RUN_GRACE_SECS: u64 = 30;

/// Why a plugin's answer was refused; kept as the [`ProviderError`]'s source so callers
/// can tell a protocol mismatch from a crash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The program could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The plugin.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not answer within the deadline, in wall-clock seconds, and was killed.
    #[error("`{program}` did not answer within {secs} s")]
    Timeout {
        /// The plugin.
        program: String,
        /// The deadline.
        secs: u64,
    },
    /// It exited unsuccessfully without a usable `error` response.
    #[error("`{program}` exited with {status}")]
    Exit {
        /// The plugin.
        program: String,
        /// Its exit status, as the OS reports it.
        status: String,
        /// The tail of its stderr (secrets redacted).
        stderr: String,
    },
    /// It printed more than 16 MiB on stdout.
    #[error("`{program}` printed more than {limit} bytes")]
    TooLarge {
        /// The plugin.
        program: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// Its stdout was not a protocol-1 response; `reason` says how.
    #[error("`{program}` gave a bad response: {reason}")]
    BadResponse {
        /// The plugin.
        program: String,
        /// What was wrong, one line.
        reason: String,
    },
    /// Reading its output failed.
    #[error("reading from `{program}` failed: {source}")]
    Io {
        /// The plugin.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A pool whose machines an external program makes. Build it with
/// [`ExecProvider::from_pool`].
pub struct ExecProvider {
    pool: String,
    settings: ExecSettings,
    /// The pool's own `template:` source, read and test-rendered up front.
    template: Option<(String, String)>,
}

impl fmt::Debug for ExecProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecProvider")
            .field("pool", &self.pool)
            .field("program", &self.settings.program)
            .field("timeout_secs", &self.settings.timeout_secs)
            .field("bootstrap", &self.settings.bootstrap)
            .field("template", &self.template.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

impl ExecProvider {
    /// The provider for `pool`, from its `exec:` block ([`PoolSpec::settings`]).
    ///
    /// Checks every setting and, when the pool has a `template:`, reads it and renders it
    /// once for a first machine, so a bad template is reported before any machine is
    /// asked for. Starts nothing.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming `pools.<pool>.exec.<field>` or
    /// `pools.<pool>.template`.
    pub fn from_pool(pool: &PoolSpec) -> Result<Self> {
        let settings = ExecSettings::parse(&pool.name, &pool.settings)?;
        let template = match &pool.template {
            None => None,
            Some(path) => {
                let field = format!("pools.{}.template", pool.name);
                let source = std::fs::read_to_string(path).map_err(|e| {
                    ProviderError::invalid_config(
                        PROVIDER,
                        &field,
                        format!("cannot read {path}: {e}"),
                    )
                })?;
                let ctx = BootstrapContext::new(pool, &kbg_provider::machine_name(&pool.name, 0));
                bootstrap::render_str(path, &source, &ctx)
                    .map_err(|e| ProviderError::invalid_config(PROVIDER, &field, e.message))?;
                Some((path.clone(), source))
            }
        };
        Ok(ExecProvider {
            pool: pool.name.clone(),
            settings,
            template,
        })
    }

    /// The parsed settings.
    pub fn settings(&self) -> &ExecSettings {
        &self.settings
    }

    fn program(&self) -> String {
        self.settings.program.display().to_string()
    }

    /// The bootstrap for `machine`, or `None` when the pool asks for none.
    fn bootstrap_for(&self, pool: &PoolSpec, machine: &str) -> Result<Option<Secret>> {
        let ctx = BootstrapContext::new(pool, machine);
        if let Some((name, source)) = &self.template {
            return bootstrap::render_str(name, source, &ctx).map(Some);
        }
        let template = match self.settings.bootstrap {
            Bootstrap::CloudInit => BuiltinTemplate::CloudInitKubeadm,
            Bootstrap::KubeletUnit => BuiltinTemplate::KubeletService,
            Bootstrap::None => return Ok(None),
        };
        bootstrap::render_builtin(template, &ctx).map(Some)
    }

    /// One request, one response.
    async fn call(
        &self,
        pool: &PoolSpec,
        op: Op,
        machines: Option<Vec<Value>>,
        command: Option<&RemoteCommand>,
        timeout_secs: u64,
    ) -> Result<Response> {
        let secrets = Secrets::of(pool, machines.as_deref());
        let join = (op == Op::Provision).then(|| JoinView {
            endpoint: &pool.join.api_server_endpoint,
            token: pool.join.token.as_ref().map_or("", Secret::expose),
            ca_cert_hash: pool.join.ca_cert_hash.as_ref().map_or("", Secret::expose),
        });
        let request = Request {
            protocol: PROTOCOL_VERSION,
            op,
            pool: PoolView {
                name: &pool.name,
                version: &pool.version,
                labels: &pool.labels,
                taints: &pool.taints,
                config: &self.settings.config,
            },
            machines,
            join,
            command: command.map(|c| CommandView {
                script: &c.script,
                timeout_secs: c.timeout_secs,
            }),
        };
        let input = serde_json::to_vec(&request).map_err(|e| {
            ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!("cannot encode the request: {e}"),
            )
        })?;
        drop(request);
        let env_remove = env_holding(&secrets_of(pool), std::env::vars_os());
        let program = self.program();
        tracing::debug!(pool = %pool.name, op = op.as_str(), %program, "running exec plugin");
        let outcome = runner::run(
            &self.settings.program,
            &self.settings.args,
            &env_remove,
            input,
            Duration::from_secs(timeout_secs),
        )
        .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(RunFailure::Spawn(source)) => {
                let kind = match source.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        ErrorKind::InvalidConfig {
                            field: format!("pools.{}.exec.program", pool.name),
                        }
                    }
                    _ => ErrorKind::Failed,
                };
                let message = format!("cannot run plugin `{program}`: {source}");
                return Err(ProviderError::new(PROVIDER, kind, message)
                    .with_source(ExecError::Spawn { program, source }));
            }
            Err(RunFailure::Timeout { stderr }) => {
                let stderr = redact(&stderr, &secrets);
                let mut message = format!(
                    "plugin `{program}` did not answer `{}` within {timeout_secs} s and was killed",
                    op.as_str()
                );
                if let Some(line) = last_line(&stderr) {
                    message.push_str(&format!("; it last said: {line}"));
                }
                return Err(
                    ProviderError::new(PROVIDER, ErrorKind::Timeout, message).with_source(
                        ExecError::Timeout {
                            program,
                            secs: timeout_secs,
                        },
                    ),
                );
            }
            Err(RunFailure::TooLarge) => {
                return Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!(
                        "plugin `{program}` printed more than {} MiB in answer to `{}`",
                        runner::STDOUT_LIMIT / (1024 * 1024),
                        op.as_str()
                    ),
                )
                .with_source(ExecError::TooLarge {
                    program,
                    limit: runner::STDOUT_LIMIT,
                }));
            }
            Err(RunFailure::Io(source)) => {
                return Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Transient,
                    format!("reading from plugin `{program}` failed: {source}"),
                )
                .with_source(ExecError::Io { program, source }));
            }
        };
        let stderr = redact(&outcome.stderr, &secrets);
        let parsed = protocol::parse_response(op, &pool.name, &outcome.stdout);
        match (outcome.status.success(), parsed) {
            (_, Err(ResponseError::Plugin(e))) => {
                Err(plugin_error(&program, &pool.name, e, &secrets))
            }
            (true, Ok(response)) => Ok(response),
            (false, _) => {
                let status = outcome.status.to_string();
                let said = last_line(&stderr).unwrap_or_else(|| "nothing on stderr".into());
                Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!(
                        "plugin `{program}` failed `{}` ({status}): {said}",
                        op.as_str()
                    ),
                )
                .with_source(ExecError::Exit {
                    program,
                    status,
                    stderr,
                }))
            }
            (true, Err(bad)) => {
                let reason = match bad {
                    ResponseError::NotJson(e) => format!("not JSON ({e})"),
                    ResponseError::NotAnObject => "not a JSON object".into(),
                    ResponseError::Protocol(None) => {
                        format!("no \"protocol\" field; kbg speaks protocol {PROTOCOL_VERSION}")
                    }
                    ResponseError::Protocol(Some(v)) => {
                        format!("it speaks protocol {v}, kbg speaks protocol {PROTOCOL_VERSION}")
                    }
                    ResponseError::Malformed(detail) => redact(&detail, &secrets),
                    ResponseError::Plugin(_) => unreachable!("handled above"),
                };
                Err(ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!(
                        "plugin `{program}` answered `{}` with a bad response: {reason}",
                        op.as_str()
                    ),
                )
                .with_source(ExecError::BadResponse { program, reason }))
            }
        }
    }
}

/// The non-empty secret values of `pool`: what must never reach argv, the environment or
/// a message.
fn secrets_of(pool: &PoolSpec) -> Vec<String> {
    [&pool.join.token, &pool.join.ca_cert_hash]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Names of the variables in `vars` whose value contains one of `secrets` (kbg may have
/// been given the join token through its own environment; the plugin gets it on stdin
/// only).
fn env_holding(
    secrets: &[String],
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<String> {
    if secrets.is_empty() {
        return Vec::new();
    }
    vars.filter(|(_, value)| {
        let value = value.to_string_lossy();
        secrets.iter().any(|s| value.contains(s.as_str()))
    })
    .map(|(key, _)| key.to_string_lossy().into_owned())
    .collect()
}

/// Bootstrap lines at least this long (trimmed) are redacted wherever they appear in what
/// a plugin says; shorter ones (`runcmd:`, `- curl`) only when a whole line is one of
/// them, so that a plugin's own words are not blotted out.
const BOOTSTRAP_LINE_ANYWHERE: usize = 16;

/// What must never come back from a plugin in a message or a log: the pool's secret
/// values, and the rendered bootstraps of the request (user-data is a secret as a whole:
/// it may carry certificates and keys of a template's own, not only the join token).
#[derive(Debug, Default)]
struct Secrets {
    /// Replaced wherever they appear.
    anywhere: Vec<String>,
    /// Replaced where a whole line (trimmed) is one of them.
    lines: BTreeSet<String>,
}

impl Secrets {
    /// The secrets of a request for `pool` carrying `machines` (with their `bootstrap`).
    fn of(pool: &PoolSpec, machines: Option<&[Value]>) -> Secrets {
        let mut s = Secrets {
            anywhere: secrets_of(pool),
            lines: BTreeSet::new(),
        };
        let bootstraps = machines
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.get("bootstrap")?.as_str());
        for line in bootstraps.flat_map(str::lines) {
            let line = line.trim();
            if line.chars().count() >= BOOTSTRAP_LINE_ANYWHERE {
                // As written, and as a JSON string carries it (a plugin echoing its request).
                let escaped = serde_json::to_string(line).unwrap_or_default();
                s.anywhere.push(escaped.trim_matches('"').to_string());
                s.anywhere.push(line.to_string());
            } else if !line.is_empty() {
                s.lines.insert(line.to_string());
            }
        }
        // Longest first, so that a line holding the token is replaced whole.
        s.anywhere.sort_by_key(|a| std::cmp::Reverse(a.len()));
        s.anywhere.dedup();
        s
    }
}

/// `text` with every secret replaced by `***`.
fn redact(text: &str, secrets: &Secrets) -> String {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| {
            if secrets.lines.contains(l.trim()) {
                "***"
            } else {
                l
            }
        })
        .collect();
    secrets
        .anywhere
        .iter()
        .fold(lines.join("\n"), |t, s| t.replace(s.as_str(), "***"))
}

/// The last non-empty line of `text`, on one bounded line.
fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(one_line)
}

/// A plugin's own error as a [`ProviderError`]; its `invalid_config` names the pool's
/// `exec.config` block.
fn plugin_error(program: &str, pool: &str, e: PluginError, secrets: &Secrets) -> ProviderError {
    let kind = match e.kind {
        ErrorKind::InvalidConfig { .. } => ErrorKind::InvalidConfig {
            field: format!("pools.{pool}.exec.config"),
        },
        other => other,
    };
    let err = ProviderError::new(
        PROVIDER,
        kind,
        format!("plugin `{program}`: {}", redact(&e.message, secrets)),
    );
    match e.machine {
        Some(m) => err.with_machine(m),
        None => err,
    }
}

impl ExecProvider {
    fn not_reported(&self, machine: &str, op: Op) -> ProviderError {
        ProviderError::new(
            PROVIDER,
            ErrorKind::Failed,
            format!(
                "plugin `{}` did not report this machine in its `{}` response",
                self.program(),
                op.as_str()
            ),
        )
        .with_machine(machine)
    }

    fn per_machine(
        &self,
        pool: &PoolSpec,
        errors: Vec<PluginError>,
        secrets: &Secrets,
    ) -> Vec<ProviderError> {
        let program = self.program();
        errors
            .into_iter()
            .map(|e| plugin_error(&program, &pool.name, e, secrets))
            .collect()
    }

    fn unexpected(&self, op: Op) -> ProviderError {
        ProviderError::new(
            PROVIDER,
            ErrorKind::Failed,
            format!(
                "plugin `{}`: wrong response kind for `{}`",
                self.program(),
                op.as_str()
            ),
        )
    }
}

#[async_trait]
impl Provider for ExecProvider {
    fn kind(&self) -> &str {
        PROVIDER
    }

    async fn provision(&self, pool: &PoolSpec, names: &[String]) -> Result<ProvisionReport> {
        if names.is_empty() {
            return Ok(ProvisionReport::default());
        }
        let mut machines = Vec::with_capacity(names.len());
        for name in names {
            let mut m = json!({ "name": name });
            if let Some(bootstrap) = self.bootstrap_for(pool, name)? {
                m["bootstrap"] = Value::String(bootstrap.expose().to_string());
            }
            machines.push(m);
        }
        let secrets = Secrets::of(pool, Some(&machines));
        let response = self
            .call(
                pool,
                Op::Provision,
                Some(machines),
                None,
                self.settings.timeout_secs,
            )
            .await?;
        let Response::Machines { machines, errors } = response else {
            return Err(self.unexpected(Op::Provision));
        };
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut report = ProvisionReport::default();
        let mut answered = BTreeSet::new();
        for m in machines {
            if wanted.contains(m.name.as_str()) {
                answered.insert(m.name.clone());
                report.machines.push(m);
            } else {
                tracing::warn!(pool = %pool.name, machine = %m.name, "plugin reported a machine kbg did not ask for; ignored");
            }
        }
        for e in self.per_machine(pool, errors, &secrets) {
            if let Some(m) = &e.machine {
                answered.insert(m.clone());
            }
            report.failed.push(e);
        }
        for name in names {
            if !answered.contains(name) {
                report.failed.push(self.not_reported(name, Op::Provision));
            }
        }
        Ok(report)
    }

    async fn list(&self, pool: &PoolSpec) -> Result<Vec<Machine>> {
        match self
            .call(pool, Op::List, None, None, self.settings.timeout_secs)
            .await?
        {
            Response::Machines { machines, .. } => Ok(machines
                .into_iter()
                .filter(|m| m.state != MachineState::Gone)
                .collect()),
            _ => Err(self.unexpected(Op::List)),
        }
    }

    async fn deprovision(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
    ) -> Result<DeprovisionReport> {
        if machines.is_empty() {
            return Ok(DeprovisionReport::default());
        }
        let list = machines
            .iter()
            .map(|m| serde_json::to_value(m).expect("a Machine is plain data"))
            .collect();
        let response = self
            .call(
                pool,
                Op::Deprovision,
                Some(list),
                None,
                self.settings.timeout_secs,
            )
            .await?;
        let Response::Removed { removed, errors } = response else {
            return Err(self.unexpected(Op::Deprovision));
        };
        let asked: BTreeSet<&str> = machines.iter().map(|m| m.name.as_str()).collect();
        let mut report = DeprovisionReport::default();
        let mut answered = BTreeSet::new();
        for name in removed {
            if asked.contains(name.as_str()) && answered.insert(name.clone()) {
                report.removed.push(name);
            }
        }
        for e in self.per_machine(pool, errors, &Secrets::of(pool, None)) {
            if let Some(m) = &e.machine {
                answered.insert(m.clone());
            }
            report.failed.push(e);
        }
        for m in machines {
            if !answered.contains(&m.name) {
                report
                    .failed
                    .push(self.not_reported(&m.name, Op::Deprovision));
            }
        }
        Ok(report)
    }

    async fn run_command(
        &self,
        pool: &PoolSpec,
        machine: &Machine,
        command: &RemoteCommand,
    ) -> Result<CommandOutput> {
        let m = serde_json::to_value(machine).expect("a Machine is plain data");
        let response = self
            .call(
                pool,
                Op::Run,
                Some(vec![m]),
                Some(command),
                command.timeout_secs.saturating_add(RUN_GRACE_SECS),
            )
            .await
            .map_err(|e| match e.machine {
                Some(_) => e,
                None => e.with_machine(&machine.name),
            })?;
        match response {
            Response::Output(out) => Ok(out),
            _ => Err(self.unexpected(Op::Run)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// A plugin that echoes the user-data it was given (a `set -x` script, a tool that
    /// logs its input) gets it redacted, whether it prints the lines or the request's
    /// JSON; its own short words stay.
    #[test]
    fn rendered_bootstraps_are_redacted_too() {
        let pool = PoolSpec {
            name: "beta".into(),
            version: "v1.33.1".into(),
            labels: std::collections::BTreeMap::new(),
            taints: Vec::new(),
            settings: json!({}),
            template: None,
            join: kbg_provider::JoinConfig {
                api_server_endpoint: "10.0.0.1:6443".into(),
                token: Some(Secret::new("abcdef.0123456789abcdef")),
                ca_cert_hash: None,
            },
        };
        let bootstrap = "#cloud-config\nruncmd:\n  - [kubeadm, join, --token, \"abcdef.0123456789abcdef\"]\n  - echo \"site key K3yM4t3r1al0nly\" > /etc/site\n";
        let machines = [json!({"name": "beta-0", "bootstrap": bootstrap})];
        let secrets = Secrets::of(&pool, Some(&machines));
        let said = format!(
            "booting beta-0\n{bootstrap}request: {}\nruncmd: is not supported here",
            json!({"machines": machines})
        );
        let shown = redact(&said, &secrets);
        for leak in ["K3yM4t3r1al0nly", "0123456789abcdef"] {
            assert!(!shown.contains(leak), "{leak} in {shown}");
        }
        assert!(shown.starts_with("booting beta-0\n***\n***\n"), "{shown}");
        assert!(shown.ends_with("runcmd: is not supported here"), "{shown}");
    }

    #[test]
    fn variables_holding_a_secret_are_not_inherited() {
        let secrets = vec!["abcdef.0123456789abcdef".to_string()];
        let vars = vec![
            (OsString::from("PATH"), OsString::from("/usr/bin")),
            (
                OsString::from("KBG_JOIN_TOKEN"),
                OsString::from("abcdef.0123456789abcdef"),
            ),
            (
                OsString::from("SOME_URL"),
                OsString::from("https://x/?t=abcdef.0123456789abcdef"),
            ),
        ];
        assert_eq!(
            env_holding(&secrets, vars.clone().into_iter()),
            ["KBG_JOIN_TOKEN", "SOME_URL"]
        );
        assert!(env_holding(&[], vars.into_iter()).is_empty());
    }

    #[test]
    fn secrets_are_redacted_from_what_a_plugin_says() {
        let secrets = Secrets {
            anywhere: vec!["tok.en".to_string(), "sha256:ff".to_string()],
            lines: BTreeSet::new(),
        };
        assert_eq!(
            redact("join with tok.en and sha256:ff", &secrets),
            "join with *** and ***"
        );
        assert_eq!(last_line("a\n  \nb c\n\n").as_deref(), Some("b c"));
        assert_eq!(last_line(" \n"), None);
    }
}
