//! The Kubernetes client kbg talks through.
//!
//! The kubeconfig is chosen the usual way: `--kubeconfig`, else `KUBECONFIG`, else
//! `cluster.kubeconfig` from `kbg.yaml`, else `~/.kube/config`, else the in-cluster
//! service account; `--context` (else `cluster.context`) picks the context. Two things
//! differ from `kube::Client::try_default()`:
//!
//! - kube's own retry layer is off (`default_retry = false`): it would retry a PDB's 429
//!   up to 15 times under the drain engine and stack a second retry layer under
//!   [`crate::retry`]. kbg retries in exactly one place.
//! - every request carries `User-Agent: kbg/<version> (pid <pid>)`, so audit logs tell
//!   kbg's requests from everyone else's, and one kbg process from another.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// The product part of the User-Agent kbg sends.
pub const USER_AGENT: &str = concat!("kbg/", env!("CARGO_PKG_VERSION"));

/// The User-Agent kbg sends: `kbg/<version> (pid <pid>)`, so an audit log tells one kbg
/// process from another.
pub fn user_agent() -> String {
    format!("{USER_AGENT} (pid {})", std::process::id())
}

/// Which cluster to talk to, as resolved from flags, environment and `kbg.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeTarget {
    /// A kubeconfig file, when one was named (`--kubeconfig`, `KUBECONFIG`,
    /// `cluster.kubeconfig`); `None`: `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The context, when one was named.
    pub context: Option<String>,
}

/// Build the client for `target`.
///
/// # Errors
/// [`Error::Usage`] (exit 2) when no kubeconfig can be loaded or the context does not
/// exist: nothing was sent anywhere.
pub async fn connect(target: &KubeTarget) -> Result<kube::Client> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let mut config = match &target.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Error::usage(format!(
                    "cannot read the kubeconfig {}: {e}; set --kubeconfig, KUBECONFIG or cluster.kubeconfig",
                    path.display()
                ))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::usage(format!("kubeconfig {}: {e}", path.display())))?
        }
        None if target.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::usage(format!("kubeconfig: {e}")))?,
        None => kube::Config::infer().await.map_err(|e| {
            Error::usage(format!(
                "no cluster to talk to: {e}; set --kubeconfig, KUBECONFIG or cluster.kubeconfig"
            ))
        })?,
    };
    config.default_retry = false;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&user_agent()).expect("a printable User-Agent"),
    ));
    kube::Client::try_from(config)
        .map_err(|e| Error::usage(format!("cannot build a client for the cluster: {e}")))
}

/// One line describing a client error for a user: the API server's status and message,
/// or why the server could not be reached.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", s.reason)
            };
            format!("the API server answered {}{reason}: {}", s.code, s.message)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            format!("cannot reach the API server: {msg}")
        }
        other => other.to_string(),
    }
}

/// Whether `e` is the API server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether `e` is the API server's 409 (a stale `resourceVersion`, or `AlreadyExists`).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
