//! Running scripts on hosts over SSH, with russh.
//!
//! Why russh and not the `openssh` crate (which drives the system `ssh`): kbg has to decide
//! for itself which host keys it trusts — one `known_hosts` file named in `kbg.yaml`, unknown
//! keys refused unless the operator says otherwise — and a user's `~/.ssh/config`
//! (`StrictHostKeyChecking no`, `UserKnownHostsFile /dev/null`, a `ProxyCommand`) would
//! silently change that under `ssh`. russh is pure Rust, so kbg needs no `ssh` binary and
//! no control-socket directory where it runs (a CI job, a container), and it was already
//! built for the workspace with the one crypto backend (aws-lc-rs). The price: RSA keys are
//! not supported (the `rsa` feature is off, RUSTSEC-2023-0071), nor agents, certificates or
//! jump hosts; the inventory's keys must be ed25519 or ECDSA files.
//!
//! Every script — the bootstrap with its join token, the reset, a run-command — travels the
//! same way: the command line that `ps` on the host can show is a fixed wrapper
//! ([`wrapper`]) with no secret in it; the script itself goes over the channel's standard
//! input into a `mktemp` file (mode 0600 under `umask 077`), runs from there with stdin
//! closed, and is removed when the wrapper exits. Output is collected, never logged here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};

use crate::inventory::Host;
use crate::known_hosts::{HostKeyCheck, KnownHosts, fingerprint, lookup_name};

/// Output kept per stream; the rest is dropped (a bootstrap's apt output can be long).
const OUTPUT_LIMIT: usize = 1 << 20;

/// The wrapper's exit status when it could not write the script on the host.
const UPLOAD_FAILED: u32 = 125;

/// Which host keys to trust.
#[derive(Debug)]
pub(crate) struct HostTrust {
    /// The parsed `known_hosts` file.
    pub(crate) known_hosts: KnownHosts,
    /// Accept hosts with no line in `known_hosts` (never a changed or revoked key).
    pub(crate) accept_unknown: bool,
}

/// Why an SSH operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no SSH session with {target} within {secs} s (connect_timeout_seconds)")]
    ConnectTimeout { target: String, secs: u64 },
    #[error(
        "host key {fingerprint} of {name} is not in {known_hosts}; check it and add it (ssh-keyscan -p {port} {address} >> {known_hosts}), or set insecure_accept_host_keys: true"
    )]
    HostKeyUnknown {
        name: String,
        address: String,
        port: u16,
        fingerprint: String,
        known_hosts: String,
    },
    #[error(
        "host key {fingerprint} of {name} does not match {known_hosts} line {line}: the host was reinstalled or someone is in the middle; refusing (remove the old line once you know which)"
    )]
    HostKeyChanged {
        name: String,
        fingerprint: String,
        known_hosts: String,
        line: usize,
    },
    #[error("host key {fingerprint} of {name} is revoked in {known_hosts} line {line}; refusing")]
    HostKeyRevoked {
        name: String,
        fingerprint: String,
        known_hosts: String,
        line: usize,
    },
    #[error(
        "{name} offered a host certificate; kbg verifies plain host keys against known_hosts only"
    )]
    HostCertificate { name: String },
    #[error("{target} refused the key {key} (publickey authentication)")]
    AuthRejected { target: String, key: String },
    #[error("SSH session with {target} failed: {source}")]
    Protocol {
        target: String,
        #[source]
        source: russh::Error,
    },
    #[error("{target} refused to run the command")]
    ExecRefused { target: String },
    #[error("{what} on {target} did not finish within {secs} s")]
    CommandTimeout {
        what: String,
        target: String,
        secs: u64,
    },
}

impl SshError {
    /// The provider error kind for this failure.
    pub(crate) fn kind(&self) -> kbg_provider::ErrorKind {
        use kbg_provider::ErrorKind;
        match self {
            SshError::Connect { .. } | SshError::Protocol { .. } => ErrorKind::Transient,
            SshError::ConnectTimeout { .. } | SshError::CommandTimeout { .. } => ErrorKind::Timeout,
            SshError::AuthRejected { .. } => ErrorKind::PermissionDenied,
            SshError::HostKeyUnknown { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::HostCertificate { .. }
            | SshError::ExecRefused { .. } => ErrorKind::Failed,
        }
    }
}

/// What a script printed and how it ended.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Exit status; 128 + N when killed by signal N (as a shell reports it).
    pub(crate) exit_code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

/// A script run failed; `started` says whether the script may have begun on the host
/// (the exec request was sent), which decides whether the host can be handed back.
#[derive(Debug)]
pub(crate) struct RunError {
    pub(crate) started: bool,
    pub(crate) error: SshError,
}

struct Verifier {
    name: String,
    address: String,
    port: u16,
    trust: Arc<HostTrust>,
    verdict: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let known_hosts = self.trust.known_hosts.path().display().to_string();
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                *self.verdict.lock().expect("verdict lock") = Some(SshError::HostCertificate {
                    name: self.name.clone(),
                });
                return Ok(false);
            }
        };
        let fp = fingerprint(key);
        let refusal = match self.trust.known_hosts.check(&self.address, self.port, key) {
            HostKeyCheck::Known { .. } => None,
            HostKeyCheck::Unknown if self.trust.accept_unknown => {
                tracing::warn!(
                    host = %self.name,
                    fingerprint = %fp,
                    known_hosts = %known_hosts,
                    "accepting a host key not in known_hosts (insecure_accept_host_keys)"
                );
                None
            }
            HostKeyCheck::Unknown => Some(SshError::HostKeyUnknown {
                name: lookup_name(&self.address, self.port),
                address: self.address.clone(),
                port: self.port,
                fingerprint: fp,
                known_hosts,
            }),
            HostKeyCheck::Changed { line } => Some(SshError::HostKeyChanged {
                name: lookup_name(&self.address, self.port),
                fingerprint: fp,
                known_hosts,
                line,
            }),
            HostKeyCheck::Revoked { line } => Some(SshError::HostKeyRevoked {
                name: lookup_name(&self.address, self.port),
                fingerprint: fp,
                known_hosts,
                line,
            }),
        };
        let accepted = refusal.is_none();
        *self.verdict.lock().expect("verdict lock") = refusal;
        Ok(accepted)
    }
}

/// An authenticated SSH session with one host.
pub(crate) struct Session {
    handle: Handle<Verifier>,
    target: String,
    sudo: bool,
}

impl Session {
    /// Connect to `host`, verify its key against `trust`, and log in with its key, all
    /// within `timeout`.
    pub(crate) async fn connect(
        host: &Host,
        trust: Arc<HostTrust>,
        timeout: Duration,
    ) -> Result<Session, SshError> {
        let target = host.ssh_target();
        match tokio::time::timeout(timeout, Self::connect_inner(host, trust)).await {
            Ok(r) => r,
            Err(_) => Err(SshError::ConnectTimeout {
                target,
                secs: timeout.as_secs(),
            }),
        }
    }

    async fn connect_inner(host: &Host, trust: Arc<HostTrust>) -> Result<Session, SshError> {
        let target = host.ssh_target();
        let config = Arc::new(client::Config {
            // A bootstrap can be quiet for minutes (package downloads); keepalives find a
            // dead peer without cutting a slow one.
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            nodelay: true,
            ..client::Config::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            name: host.name.clone(),
            address: host.address.clone(),
            port: host.port,
            trust,
            verdict: verdict.clone(),
        };
        let socket = tokio::net::TcpStream::connect((host.address.as_str(), host.port))
            .await
            .map_err(|source| SshError::Connect {
                target: target.clone(),
                source,
            })?;
        tracing::debug!(host = %host.name, target = %target, "connected; checking host key");
        let mut handle = match client::connect_stream(config, socket, verifier).await {
            Ok(h) => h,
            Err(source) => {
                if let Some(refusal) = verdict.lock().expect("verdict lock").take() {
                    return Err(refusal);
                }
                return Err(SshError::Protocol { target, source });
            }
        };
        let key = PrivateKeyWithHashAlg::new(host.key.key.clone(), None);
        let auth = handle
            .authenticate_publickey(host.user.clone(), key)
            .await
            .map_err(|source| SshError::Protocol {
                target: target.clone(),
                source,
            })?;
        if !auth.success() {
            return Err(SshError::AuthRejected {
                target,
                key: host.key.path.display().to_string(),
            });
        }
        tracing::debug!(host = %host.name, target = %target, "logged in");
        Ok(Session {
            handle,
            target,
            sudo: host.sudo,
        })
    }

    /// Run `script` (a POSIX shell script, sent on stdin, never on the command line) and
    /// wait for it, at most `timeout`. `what` names it in errors (`bootstrap`).
    pub(crate) async fn run_script(
        &self,
        what: &str,
        script: &[u8],
        timeout: Duration,
    ) -> Result<Output, RunError> {
        let command = wrapper(self.sudo, timeout);
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|source| self.not_started(source))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(|source| self.not_started(source))?;
        let started = |error| RunError {
            started: true,
            error,
        };
        let work = async {
            channel
                .data(script)
                .await
                .map_err(|source| self.protocol(source))?;
            channel
                .eof()
                .await
                .map_err(|source| self.protocol(source))?;
            let mut out = Output::default();
            let mut exit = None;
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => keep(&mut out.stdout, &data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => keep(&mut out.stderr, &data),
                    ChannelMsg::ExitStatus { exit_status } => {
                        exit = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
                    }
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        exit = Some(128 + signal_number(&signal_name));
                    }
                    ChannelMsg::Failure => {
                        return Err(SshError::ExecRefused {
                            target: self.target.clone(),
                        });
                    }
                    _ => {}
                }
            }
            match exit {
                Some(code) => {
                    out.exit_code = code;
                    Ok(out)
                }
                // The channel closed without a status: the connection dropped mid-run.
                None => Err(SshError::Protocol {
                    target: self.target.clone(),
                    source: russh::Error::HUP,
                }),
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(out)) => {
                if out.exit_code == UPLOAD_FAILED as i32 {
                    tracing::debug!(target = %self.target, "the script wrapper could not write its temporary file");
                }
                Ok(out)
            }
            Ok(Err(error)) => Err(started(error)),
            Err(_) => {
                // Best effort: the remote `timeout` wrapper kills it shortly anyway.
                let _ = channel.signal(Sig::TERM).await;
                let _ = channel.close().await;
                Err(started(SshError::CommandTimeout {
                    what: what.to_string(),
                    target: self.target.clone(),
                    secs: timeout.as_secs(),
                }))
            }
        }
    }

    /// Say goodbye (best effort).
    pub(crate) async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }

    fn protocol(&self, source: russh::Error) -> SshError {
        SshError::Protocol {
            target: self.target.clone(),
            source,
        }
    }

    fn not_started(&self, source: russh::Error) -> RunError {
        RunError {
            started: false,
            error: self.protocol(source),
        }
    }
}

fn keep(buf: &mut Vec<u8>, data: &[u8]) {
    let room = OUTPUT_LIMIT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn signal_number(sig: &Sig) -> i32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 127,
    }
}

/// The command line the host runs: a fixed wrapper that reads the script from stdin into
/// a private temporary file and runs it with `sh`, under coreutils `timeout` where the
/// host has it (so a script kbg gave up on does not run on forever), through `sudo -n`
/// when the user is not root. It never contains the script.
pub(crate) fn wrapper(sudo: bool, timeout: Duration) -> String {
    // The remote limit is a little longer than kbg's own, which is the one that counts.
    let limit = timeout.as_secs() + 5;
    let inner = format!(
        "umask 077; f=$(mktemp \"${{TMPDIR:-/tmp}}/kbg.XXXXXXXX\") || exit {UPLOAD_FAILED}; \
         trap 'rm -f \"$f\"' EXIT; cat > \"$f\" || exit {UPLOAD_FAILED}; \
         if command -v timeout >/dev/null 2>&1; then timeout -k 10 {limit} sh \"$f\" </dev/null; \
         else sh \"$f\" </dev/null; fi"
    );
    let quoted = sh_quote(&inner);
    if sudo {
        format!("sudo -n sh -c {quoted}")
    } else {
        format!("sh -c {quoted}")
    }
}

/// `s` as one single-quoted shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_is_fixed_text_quoted_once() {
        let w = wrapper(false, Duration::from_secs(60));
        assert!(w.starts_with("sh -c 'umask 077; "), "{w}");
        assert!(w.contains("timeout -k 10 65 sh"), "{w}");
        let w = wrapper(true, Duration::from_secs(1));
        assert!(w.starts_with("sudo -n sh -c '"), "{w}");
        // The inner single quotes of the trap survive quoting.
        assert!(w.contains(r#"trap '\''rm -f "$f"'\'' EXIT"#), "{w}");
    }

    #[test]
    fn the_wrapper_runs_a_script_from_stdin_under_a_real_shell() {
        // The exact command line the host's login shell gets, run by a local sh.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(wrapper(false, Duration::from_secs(30)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"echo \"mode $(stat -c %a \"$0\")\"; read x || echo stdin-closed; exit 3\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "mode 600\nstdin-closed\n");
    }
}
