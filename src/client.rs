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
//! - every request must be answered (its response headers arrive) within the request
//!   timeout ([`DEFAULT_REQUEST_TIMEOUT`], `--request-timeout`): kube's client has no
//!   read timeout by default, so an API server that keeps the connection open and says
//!   nothing (a wedged server, a VPN that stopped passing packets) would hang kbg
//!   forever. A request that times out is a transient fault for [`crate::retry`]. Watches
//!   are not cut short: their headers come at once, and the events after them are
//!   bounded by each wait's own deadline.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// How long an API request may go unanswered (until its response headers) before it
/// fails: 60 s, kube-apiserver's own `--request-timeout` default, after which a real API
/// server gives up on a request itself. Wall time: it is about a server answering, not
/// about the cluster's clock. Zero means no limit (kubectl's `--request-timeout=0`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The product part of the User-Agent kbg sends.
pub const USER_AGENT: &str = concat!("kbg/", env!("CARGO_PKG_VERSION"));

/// The User-Agent kbg sends: `kbg/<version> (pid <pid>)`, so an audit log tells one kbg
/// process from another.
pub fn user_agent() -> String {
    format!("{USER_AGENT} (pid {})", std::process::id())
}

/// Which cluster to talk to, as resolved from flags, environment and `kbg.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeTarget {
    /// A kubeconfig file, when one was named (`--kubeconfig`, `KUBECONFIG`,
    /// `cluster.kubeconfig`); `None`: `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The context, when one was named.
    pub context: Option<String>,
    /// How long each request may go unanswered (wall time; zero: no limit). Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
}

impl Default for KubeTarget {
    fn default() -> Self {
        KubeTarget {
            kubeconfig: None,
            context: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The API server did not answer a request within the request timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the API server did not answer within {} (--request-timeout)",
    crate::duration::display(*.0)
)]
pub struct NoAnswer(pub Duration);

/// A tower layer failing every request whose response does not start within its limit
/// with [`NoAnswer`] (which kube reports as `kube::Error::Service`).
#[derive(Debug, Clone, Copy)]
struct AnswerWithin(Duration);

impl<S> tower::Layer<S> for AnswerWithin {
    type Service = AnswerWithinService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnswerWithinService {
            inner,
            limit: self.0,
        }
    }
}

/// The service of [`AnswerWithin`].
#[derive(Debug, Clone)]
struct AnswerWithinService<S> {
    inner: S,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower::Service<R> for AnswerWithinService<S>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let answer = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(NoAnswer(limit)) as BoxError),
            }
        })
    }
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
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| Error::usage(format!("cannot build a client for the cluster: {e}")))?;
    Ok(if target.request_timeout.is_zero() {
        builder.build()
    } else {
        builder
            .with_layer(&AnswerWithin(target.request_timeout))
            .build()
    })
}

/// The [`NoAnswer`] behind `e`, if the API server did not answer in time.
pub fn no_answer(e: &kube::Error) -> Option<&NoAnswer> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(n) = s.downcast_ref::<NoAnswer>() {
            return Some(n);
        }
        source = s.source();
    }
    None
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
        kube::Error::Service(_) if no_answer(e).is_some() => {
            no_answer(e).map(ToString::to_string).unwrap_or_default()
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
