//! Running the `juju` CLI: one process per call, output captured, a deadline, and Juju's
//! `ERROR …` lines turned into typed [`ProviderError`]s.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kbg_provider::{ErrorKind, ProviderError};
use tokio::process::Command;

use crate::PROVIDER;

/// What one `juju` call printed.
#[derive(Clone, Debug)]
pub(crate) struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Juju's own message: the last `ERROR …` line of stderr, else its last line.
    pub fn message(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let line = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("ERROR"))
            .or(lines.last())
            .copied()
            .unwrap_or("no message on stderr");
        line.trim_start_matches("ERROR").trim().to_string()
    }
}

/// How to reach the CLI: its path, `JUJU_DATA`, the model, and the per-call deadline.
#[derive(Clone, Debug)]
pub(crate) struct Cli {
    pub program: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub model: Option<String>,
    pub timeout: Duration,
    /// The settings path of `program`, for errors: `pools.beta.juju.juju`.
    pub program_field: String,
}

impl Cli {
    /// `args` with `-m MODEL` after the command name, when a model is set.
    fn argv(&self, args: &[String], with_model: bool) -> Vec<String> {
        let mut argv = Vec::with_capacity(args.len() + 2);
        let mut it = args.iter();
        if let Some(cmd) = it.next() {
            argv.push(cmd.clone());
        }
        if let (true, Some(model)) = (with_model, &self.model) {
            argv.push("-m".into());
            argv.push(model.clone());
        }
        argv.extend(it.cloned());
        argv
    }

    /// Run `juju args…` and return what it printed, whatever its exit status.
    ///
    /// # Errors
    /// Only when it could not be started or ran past `timeout` (+`extra`).
    pub async fn raw(
        &self,
        args: &[String],
        with_model: bool,
        extra: Duration,
    ) -> Result<CliOutput, ProviderError> {
        let argv = self.argv(args, with_model);
        let mut cmd = Command::new(&self.program);
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.data_dir {
            cmd.env("JUJU_DATA", dir);
        }
        let name = argv.first().cloned().unwrap_or_default();
        tracing::debug!(command = %name, "running juju");
        let child = cmd.spawn().map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ErrorKind::InvalidConfig {
                        field: self.program_field.clone(),
                    }
                }
                _ => ErrorKind::Failed,
            };
            ProviderError::new(
                PROVIDER,
                kind,
                format!(
                    "cannot run `{}`: {e}; install the Juju CLI or set {}",
                    self.program.display(),
                    self.program_field
                ),
            )
            .with_source(e)
        })?;
        let deadline = self.timeout + extra;
        match tokio::time::timeout(deadline, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(CliOutput {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Ok(Err(e)) => Err(ProviderError::new(
                PROVIDER,
                ErrorKind::Transient,
                format!("`juju {name}` failed to run: {e}"),
            )
            .with_source(e)),
            Err(_) => Err(ProviderError::new(
                PROVIDER,
                ErrorKind::Timeout,
                format!(
                    "`juju {name}` did not finish within {} s and was killed",
                    deadline.as_secs()
                ),
            )),
        }
    }

    /// Run `juju args…` (with the model) and return its stdout.
    ///
    /// # Errors
    /// As [`Cli::raw`], and a non-zero exit as the error Juju printed, classified.
    pub async fn run(&self, args: &[String]) -> Result<String, ProviderError> {
        let out = self.raw(args, true, Duration::ZERO).await?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(failure(args, &out))
        }
    }

    /// Like [`Cli::run`], retrying without `--no-prompt` when this CLI does not know
    /// the flag (it arrived during 3.x; 2.9's late releases accept it as a no-op).
    pub async fn run_prompt_free(&self, args: &[String]) -> Result<String, ProviderError> {
        let out = self.raw(args, true, Duration::ZERO).await?;
        if out.success {
            return Ok(out.stdout);
        }
        if out.stderr.contains("--no-prompt") && out.stderr.contains("not defined") {
            let without: Vec<String> = args
                .iter()
                .filter(|a| *a != "--no-prompt")
                .cloned()
                .collect();
            return self.run(&without).await;
        }
        Err(failure(args, &out))
    }
}

/// A failed call as a [`ProviderError`]: `juju <command>: <Juju's words>`.
pub(crate) fn failure(args: &[String], out: &CliOutput) -> ProviderError {
    let message = out.message();
    let command = args.first().map_or("", String::as_str);
    ProviderError::new(
        PROVIDER,
        classify(&message),
        format!("juju {command}: {message}"),
    )
}

/// The kind of a Juju error message.
pub(crate) fn classify(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if any(&[
        "permission denied",
        "unauthorized",
        "access denied",
        "not permitted",
    ]) {
        ErrorKind::PermissionDenied
    } else if any(&[
        "quota",
        "insufficient capacity",
        "insufficientinstancecapacity",
        "no capacity",
    ]) {
        ErrorKind::Capacity
    } else if any(&["rate limit", "throttl", "too many requests"]) {
        ErrorKind::Throttled
    } else if any(&[
        "connection refused",
        "connection reset",
        "i/o timeout",
        "cannot connect",
        "unable to connect",
        "no route to host",
        "unexpected eof",
        "try again",
    ]) {
        ErrorKind::Transient
    } else if any(&["not found", "no such", "does not exist"]) {
        ErrorKind::NotFound
    } else {
        ErrorKind::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_jujus_last_error_line() {
        let out = CliOutput {
            success: false,
            stdout: String::new(),
            stderr: "Located charm \"kubernetes-worker\"\nERROR cannot add application \"beta\": application already exists\n\n".into(),
        };
        assert_eq!(
            out.message(),
            "cannot add application \"beta\": application already exists"
        );
        let quiet = CliOutput {
            success: false,
            stdout: String::new(),
            stderr: String::new(),
        };
        assert_eq!(quiet.message(), "no message on stderr");
    }

    #[test]
    fn messages_classify() {
        for (m, kind) in [
            ("model \"k9s\" not found", ErrorKind::NotFound),
            ("permission denied", ErrorKind::PermissionDenied),
            (
                "cannot connect to API: dial tcp: connection refused",
                ErrorKind::Transient,
            ),
            ("instance quota exceeded", ErrorKind::Capacity),
            ("Rate limit exceeded", ErrorKind::Throttled),
            (
                "cannot add application: application already exists",
                ErrorKind::Failed,
            ),
        ] {
            assert_eq!(classify(m), kind, "{m}");
        }
    }

    #[test]
    fn the_model_goes_after_the_command() {
        let cli = Cli {
            program: "juju".into(),
            data_dir: None,
            model: Some("k8s".into()),
            timeout: Duration::from_secs(1),
            program_field: "pools.beta.juju.juju".into(),
        };
        let args = vec!["status".to_string(), "--format=json".to_string()];
        assert_eq!(
            cli.argv(&args, true),
            ["status", "-m", "k8s", "--format=json"]
        );
        assert_eq!(cli.argv(&args, false), ["status", "--format=json"]);
    }
}
