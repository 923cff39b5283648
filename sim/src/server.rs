//! The HTTP(S) server: accepts connections on 127.0.0.1 (`TCP_NODELAY`), speaks HTTP/1.1
//! and HTTP/2 (ALPN) over TLS, and hands requests to `api::handle`. Also the controller
//! driver task.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::clock::SimClock;
use crate::faults::Dice;
use crate::state::State;
use crate::stats::Audit;

/// Response bodies.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body of bytes.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into()).boxed_unsync()
}

/// What request handlers share.
pub(crate) struct Shared {
    /// The cluster.
    pub state: Mutex<State>,
    /// The clock (a copy of the state's, readable without the lock).
    pub clock: SimClock,
    /// The bearer token.
    pub token: String,
    /// Wakes the controller driver.
    pub driver: tokio::sync::Notify,
    /// Set to `true` to stop serving.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Audit log and request counters.
    pub audit: Mutex<Audit>,
    /// Faults and their dice.
    pub dice: Mutex<Dice>,
    /// `127.0.0.1:PORT`.
    pub server_address: String,
    /// The state's published resourceVersion.
    pub published_rv: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// Runs a write transaction: the closure, then the end-of-transaction work, then
    /// wakes the driver.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = {
            let mut st = self.state.lock();
            let r = f(&mut st);
            st.end_tx();
            r
        };
        self.driver.notify_one();
        r
    }

    /// The latest resourceVersion whose event is in its history.
    pub(crate) fn read_rv(&self) -> u64 {
        self.published_rv.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock())
    }
}

/// Runs the controllers whenever something is dirty or a timer is due.
pub(crate) async fn driver(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let (more, next) = {
            let mut st = shared.state.lock();
            // a bug in a controller must not stop the others for good
            let more = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.tick(2000)))
                .unwrap_or_else(|_| {
                    tracing::error!("kbg-sim: a controller panicked; the driver goes on");
                    st.end_tx();
                    false
                });
            (more, st.next_timer())
        };
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let wait = next
            .map(|t| shared.clock.wall_until(t))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shared.driver.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// Accepts connections until shutdown, then waits (a few seconds at most) for the open
/// ones to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let Ok((tcp, _)) = accepted else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = {
                let shared = shared.clone();
                hyper::service::service_fn(move |req| crate::api::handle(shared.clone(), req))
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
