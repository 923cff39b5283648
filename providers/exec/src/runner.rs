//! Running a plugin once: request on stdin, bounded stdout and stderr, a deadline.
//!
//! The plugin runs in a process group of its own, so that on a timeout kbg kills
//! everything it started (a shell plugin's `terraform apply`, say), not just the shell.

use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The most a plugin may print on stdout for one response: 16 MiB, far more than a
/// listing of thousands of machines needs, and a bound on what a broken plugin costs.
pub(crate) const STDOUT_LIMIT: usize = 16 * 1024 * 1024;

/// How much of a plugin's stderr is kept: the last 64 KiB, where its final words are.
pub(crate) const STDERR_TAIL: usize = 64 * 1024;

/// What a plugin did with one request.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The tail of stderr, lossily decoded.
    pub stderr: String,
}

/// Why a plugin run gave no [`Outcome`].
#[derive(Debug)]
pub(crate) enum RunFailure {
    /// It could not be started.
    Spawn(io::Error),
    /// It did not finish in time and was killed; the stderr tail so far.
    Timeout { stderr: String },
    /// It printed more than [`STDOUT_LIMIT`] bytes and was killed.
    TooLarge,
    /// Reading its output failed.
    Io(io::Error),
}

/// Run `program args…` with `input` on stdin, removing `env_remove` from its environment,
/// and wait at most `timeout` for it to exit and close its output.
pub(crate) async fn run(
    program: &Path,
    args: &[String],
    env_remove: &[String],
    input: Vec<u8>,
    timeout: Duration,
) -> Result<Outcome, RunFailure> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for key in env_remove {
        cmd.env_remove(key);
    }
    let mut child = cmd.spawn().map_err(RunFailure::Spawn)?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let tail = Arc::new(Mutex::new(Tail::default()));

    let write = async move {
        // A plugin may exit without reading its request (a usage error, say): a broken
        // pipe here is not the error to report; its exit status and stderr are.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
    };
    let read_out = async {
        let mut buf = Vec::new();
        let mut limited = (&mut stdout).take(STDOUT_LIMIT as u64 + 1);
        let read = limited.read_to_end(&mut buf).await;
        if buf.len() > STDOUT_LIMIT {
            kill_group(pid);
            return Err(RunFailure::TooLarge);
        }
        read.map(|_| buf).map_err(RunFailure::Io)
    };
    let read_err = {
        let tail = Arc::clone(&tail);
        async move { drain_into(&mut stderr, &tail).await }
    };
    let work = async {
        let ((), out, ()) = tokio::join!(write, read_out, read_err);
        let out = out?;
        let status = child.wait().await.map_err(RunFailure::Io)?;
        Ok::<_, RunFailure>((status, out))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok((status, stdout))) => Ok(Outcome {
            status,
            stdout,
            stderr: tail.lock().expect("stderr tail").text(),
        }),
        Ok(Err(e)) => {
            kill_group(pid);
            Err(e)
        }
        Err(_) => {
            kill_group(pid);
            Err(RunFailure::Timeout {
                stderr: tail.lock().expect("stderr tail").text(),
            })
        }
    }
}

/// Kill the process group the plugin leads (it was started with `process_group(0)`, so
/// the group id is its pid). The direct child is also killed when it is dropped.
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // ESRCH (already gone) is the common case and fine.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

async fn drain_into(r: &mut (impl AsyncRead + Unpin), tail: &Mutex<Tail>) {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail.lock().expect("stderr tail").push(&chunk[..n]),
        }
    }
}

/// The last [`STDERR_TAIL`] bytes written.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > STDERR_TAIL {
            let excess = self.bytes.len() - STDERR_TAIL;
            self.bytes.drain(..excess);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_end() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; STDERR_TAIL]);
        t.push(b"last words");
        assert_eq!(t.bytes.len(), STDERR_TAIL);
        assert!(t.text().ends_with("last words"));
    }
}
