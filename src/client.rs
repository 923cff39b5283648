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
//! - `--kube-api-qps` / `--kube-api-burst` put client-go's client-side limit in front of
//!   every request ([`ApiRateLimit`]); none by default.
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
use std::task::{Context, Poll, ready};
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
#[derive(Clone, Debug, PartialEq)]
pub struct KubeTarget {
    /// A kubeconfig file, when one was named (`--kubeconfig`, `KUBECONFIG`,
    /// `cluster.kubeconfig`); `None`: `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The context, when one was named.
    pub context: Option<String>,
    /// How long each request may go unanswered (wall time; zero: no limit). Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// A client-side limit on requests (`--kube-api-qps`, `--kube-api-burst`); `None`:
    /// no limit.
    pub rate_limit: Option<ApiRateLimit>,
}

impl Default for KubeTarget {
    fn default() -> Self {
        KubeTarget {
            kubeconfig: None,
            context: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rate_limit: None,
        }
    }
}

/// A client-side limit on API requests: client-go's token bucket
/// (`flowcontrol.NewTokenBucketRateLimiter(QPS, Burst)`), which kubectl runs with
/// QPS 5 and Burst 10. The bucket holds at most `burst` tokens, refills at `qps` per
/// second of wall time (it protects the API server, which lives in wall time, so it
/// ignores `--clock-speed`), and every request takes one, waiting in order when none is
/// left. A watch is one request when it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApiRateLimit {
    /// Requests per second, sustained (> 0).
    pub qps: f64,
    /// Requests that may go at once after a quiet spell (>= 1).
    pub burst: u32,
}

/// client-go's default `Burst` (kubectl's), when only `--kube-api-qps` is given.
pub const DEFAULT_KUBE_API_BURST: u32 = 10;

/// The tower layer of [`ApiRateLimit`].
#[derive(Clone, Copy, Debug)]
pub struct RateLimitLayer(pub ApiRateLimit);

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            limit: self.0,
            tokens: f64::from(self.0.burst),
            last: tokio::time::Instant::now(),
            wait: None,
        }
    }
}

/// A service whose requests go no faster than its [`ApiRateLimit`] allows: it is not
/// ready until a token is there (kube's client buffers requests in front of it, so they
/// leave in order).
pub struct RateLimited<S> {
    inner: S,
    limit: ApiRateLimit,
    tokens: f64,
    last: tokio::time::Instant,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> std::fmt::Debug for RateLimited<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimited")
            .field("limit", &self.limit)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        loop {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(self.last).as_secs_f64() * self.limit.qps;
            self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
            self.last = now;
            if self.tokens >= 1.0 {
                break;
            }
            let secs = (1.0 - self.tokens) / self.limit.qps;
            self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(secs))));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.tokens -= 1.0;
        self.inner.call(req)
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
    // The rate limit is outermost: waiting for a token is not waiting for an answer.
    let answer = AnswerWithin(target.request_timeout);
    Ok(
        match (target.rate_limit, target.request_timeout.is_zero()) {
            (None, true) => builder.build(),
            (None, false) => builder.with_layer(&answer).build(),
            (Some(limit), true) => builder.with_layer(&RateLimitLayer(limit)).build(),
            (Some(limit), false) => builder
                .with_layer(&answer)
                .with_layer(&RateLimitLayer(limit))
                .build(),
        },
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    /// client-go's bucket: `burst` requests at once, then one every 1/qps s, in order.
    #[tokio::test(start_paused = true)]
    async fn requests_leave_at_the_limit() {
        let start = tokio::time::Instant::now();
        let inner = tower::service_fn(move |i: u32| async move {
            Ok::<_, std::convert::Infallible>((i, start.elapsed()))
        });
        let mut svc = RateLimitLayer(ApiRateLimit {
            qps: 5.0,
            burst: 10,
        })
        .layer(inner);
        let mut at = Vec::new();
        for i in 0..13 {
            let (n, t) = svc.ready().await.unwrap().call(i).await.unwrap();
            assert_eq!(n, i);
            at.push(t.as_millis());
        }
        assert!(at[..10].iter().all(|t| *t == 0), "{at:?}");
        assert_eq!(&at[10..], &[200, 400, 600], "{at:?}");
        // A quiet spell refills the bucket, up to `burst`.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let before = start.elapsed().as_millis();
        for i in 0..10 {
            let (_, t) = svc.ready().await.unwrap().call(i).await.unwrap();
            assert_eq!(t.as_millis(), before);
        }
        let (_, t) = svc.ready().await.unwrap().call(10).await.unwrap();
        assert_eq!(t.as_millis(), before + 200);
    }
}
