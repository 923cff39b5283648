//! Issue 8, item 7: every wait has a deadline and a message naming what it waited for.
//!
//! Each wait of kbg's that can hang is driven into hanging here, and must end with exit 1
//! and a message naming the thing, within its deadline:
//!
//! | wait | deadline | test |
//! | --- | --- | --- |
//! | an API request (any) | `--request-timeout`, per attempt, × the retry layer's attempts | [`an_api_server_that_stops_answering`] |

mod common;
mod rel;

use std::time::{Duration, Instant};

use common::Harness;

/// The API server stops answering (connections stay open, nothing comes back): each
/// command ends with exit 1 naming the API server and the request timeout, instead of
/// waiting forever (kube's client has no read timeout by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_stops_answering() {
    let h = Harness::start("", common::ALPHA_BETA).await;
    let proxy = rel::Proxy::start(h.sim.addr()).await;
    let kubeconfig = h.path().join("kubeconfig-proxy");
    std::fs::write(&kubeconfig, proxy.kubeconfig(&h.sim)).unwrap();
    // Through the proxy, while it passes: fine.
    let run = h
        .command(&["status"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KBG_REQUEST_TIMEOUT", "1s")
        .output()
        .await
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    proxy.go_silent();
    let started = Instant::now();
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        h.command(&["status"])
            .env("KUBECONFIG", &kubeconfig)
            .env("KBG_REQUEST_TIMEOUT", "1s")
            .output(),
    )
    .await
    .expect("kbg status against a silent API server ends")
    .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the API server did not answer within 1s (--request-timeout)"),
        "{stderr}"
    );
    eprintln!(
        "silent API server: `kbg status` ended with exit 1 after {:.1}s wall (request timeout 1s, {} attempts): {}",
        took.as_secs_f64(),
        kbg::retry::MAX_RETRIES + 1,
        stderr.trim()
    );
}

/// A migration well under way when the API server stops answering: the drain, the Lease
/// renewal and the state writes all stop getting answers; kbg ends with exit 1 naming
/// that, within the request timeout × attempts of what is left to do, and a rerun once the
/// server is back finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_stops_answering_mid_migration() {
    let h = Harness::start(rel::MIGRATION, common::ALPHA_BETA).await;
    rel::open_beta(&h).await;
    let proxy = rel::Proxy::start(h.sim.addr()).await;
    let kubeconfig = h.path().join("kubeconfig-proxy");
    std::fs::write(&kubeconfig, proxy.kubeconfig(&h.sim)).unwrap();
    let child = h
        .command(&["migrate", "alpha", "beta"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KBG_REQUEST_TIMEOUT", "1s")
        .spawn()
        .unwrap();
    common::wait_for("a first eviction", 120, || async {
        (rel::evictions(&h) >= 1).then_some(())
    })
    .await;
    proxy.go_silent();
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("kbg migrate against a silent API server ends")
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    eprintln!(
        "silent API server mid-migration: exit 1 after {:.1}s wall: {}",
        took.as_secs_f64(),
        stderr.trim()
    );
    assert!(stderr.contains("did not answer within 1s"), "{stderr}");
    // Straight to the server again: the rerun finishes.
    h.kbg(&["migrate", "alpha", "beta"]).await.expect_code(0);
    rel::assert_migrated(&h, "alpha", "beta").await;
}
