//! The one place where kbg retries failed API requests.
//!
//! kube 5 builds clients with a retry layer of its own (`Config::default_retry`, which
//! retries 429/503/504 up to 15 times under the caller). kbg switches it off
//! ([`crate::client`]) so that a PDB's 429 reaches the drain engine, which waits and
//! retries that pod itself, and so that no request is ever retried by two stacked layers.
//! Everything else kbg sends goes through [`retry`]: transient faults (5xx, a 429 that is
//! not a PDB's refusal, dropped connections) are retried with exponential backoff and
//! jitter (backon); every other error is returned at once.
//!
//! Backoff waits are cluster time through [`Clock`], like every wait of kbg's.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::clock::Clock;

/// First wait after a transient fault (client-go's default backoff starts at 10 ms
/// for watches; kbg starts higher, its requests are few).
pub const MIN_DELAY: Duration = Duration::from_millis(200);
/// Longest single wait.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Attempts after the first before giving up.
pub const MAX_RETRIES: usize = 8;

/// Whether `e` is a passing fault worth retrying: a 5xx (500, 502, 503, 504), a 429
/// that is not a PodDisruptionBudget's refusal (API priority and fairness), or a
/// connection-level error. A 429 carrying a `DisruptionBudget` cause is not transient:
/// the PDB says "not now", and only the drain engine decides when to ask again.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => match status.code {
            500 | 502 | 503 | 504 => true,
            429 => !is_pdb_refusal(status),
            _ => false,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Whether a 429 `Status` is an eviction refused by a PodDisruptionBudget
/// (`details.causes[].reason == "DisruptionBudget"`).
pub fn is_pdb_refusal(status: &kube::core::Status) -> bool {
    status.code == 429
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"))
}

/// Exponential backoff with jitter, from [`MIN_DELAY`] to [`MAX_DELAY`], at most
/// [`MAX_RETRIES`] retries.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_max_times(MAX_RETRIES)
        .with_jitter()
}

/// Run `op`, retrying transient faults ([`is_transient`]) with exponential backoff.
///
/// `what` names the request for the debug log. Requests that create objects must treat
/// `AlreadyExists` after a retry as "my earlier attempt went through".
///
/// # Errors
/// The first non-transient error, or the last transient one after [`MAX_RETRIES`].
pub async fn retry<T, F, Fut>(clock: Clock, what: &str, op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    op.retry(backoff())
        .sleep(move |d| async move { clock.sleep(d).await })
        .when(is_transient)
        .notify(|e, d| tracing::debug!(request = what, error = %e, wait = ?d, "retrying"))
        .await
}

/// Run a provider call `op`, retrying it while it fails with a retryable
/// [`kbg_provider::ProviderError`] (throttled, transient, capacity), with the same
/// backoff as [`retry`]. Provider calls are idempotent by machine name, so a retry never
/// doubles anything.
///
/// A whole call that timed out ([`kbg_provider::ErrorKind::Timeout`] naming no machine:
/// the provider did not answer within the deadline the user gave it, e.g. the exec
/// plugin's `timeout_secs`) is not retried: that deadline is the call's deadline, and
/// retrying would stretch it [`MAX_RETRIES`] + 1 times. A machine that timed out inside
/// an answered call is the caller's to retry (its rounds in [`crate::providers`]).
///
/// # Errors
/// The first non-retryable error (or whole-call timeout), or the last retryable one after
/// [`MAX_RETRIES`].
pub async fn retry_provider<T, F, Fut>(
    clock: Clock,
    what: &str,
    op: F,
) -> Result<T, kbg_provider::ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kbg_provider::ProviderError>>,
{
    op.retry(backoff())
        .sleep(move |d| async move { clock.sleep(d).await })
        .when(retry_provider_call)
        .notify(
            |e, d| tracing::debug!(call = what, error = %e, wait = ?d, "retrying provider call"),
        )
        .await
}

/// Whether [`retry_provider`] asks again after `e`.
///
/// Not after an error the provider's own retry layer already retried (the AWS SDK's), nor
/// after a whole call that timed out: one retry layer, never two stacked.
fn retry_provider_call(e: &kbg_provider::ProviderError) -> bool {
    e.is_retryable()
        && !e.was_retried()
        && !(matches!(e.kind, kbg_provider::ErrorKind::Timeout) && e.machine.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn status(code: u16, cause: Option<&str>) -> kube::Error {
        let mut s = kube::core::Status::failure("m", "r").with_code(code);
        if let Some(c) = cause {
            s.details = Some(kube::core::response::StatusDetails {
                causes: vec![kube::core::response::StatusCause {
                    reason: c.into(),
                    message: "x".into(),
                    field: String::new(),
                }],
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                retry_after_seconds: 0,
            });
        }
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn what_is_transient() {
        for (e, t) in [
            (status(500, None), true),
            (status(503, None), true),
            (status(504, None), true),
            (status(429, None), true),
            (status(429, Some("DisruptionBudget")), false),
            (status(404, None), false),
            (status(409, None), false),
            (status(422, None), false),
            (status(403, None), false),
        ] {
            assert_eq!(is_transient(&e), t, "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_faults_only() {
        let calls = AtomicUsize::new(0);
        let r = retry(Clock::real(), "get", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(status(500, None)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry(Clock::real(), "get", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(404, None))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 404 is not retried");

        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry(Clock::real(), "get", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(503, None))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), MAX_RETRIES + 1, "gives up");
    }

    #[test]
    fn a_whole_provider_call_that_timed_out_is_not_retried() {
        use kbg_provider::{ErrorKind, ProviderError};
        let timeout = || ProviderError::new("exec", ErrorKind::Timeout, "did not answer");
        assert!(!retry_provider_call(&timeout()));
        assert!(retry_provider_call(&timeout().with_machine("beta-1")));
        for kind in [
            ErrorKind::Transient,
            ErrorKind::Throttled,
            ErrorKind::Capacity,
        ] {
            assert!(retry_provider_call(&ProviderError::new("exec", kind, "m")));
        }
        assert!(!retry_provider_call(&ProviderError::new(
            "exec",
            ErrorKind::Failed,
            "m"
        )));
        assert!(
            !retry_provider_call(
                &ProviderError::new("aws", ErrorKind::Throttled, "m").already_retried()
            ),
            "the SDK retried it already"
        );
    }
}
