//! Issue 8, items 2 and 3: the API server and the providers fail, kbg still finishes and
//! loses nothing.
//!
//! - API faults at issue 8's rates (10 % 500, 5 % 429 with Retry-After, 5 % dropped
//!   connections), seeded: reads and writes go through kbg's one retry layer
//!   (`src/retry.rs`), evictions through the drain engine's one layer (`drain/evict.rs`),
//!   and no other layer retries underneath (kube's own is off).

mod common;
mod rel;

use common::Harness;
use k8s_openapi::api::core::v1::Node;
use kbg_sim::Faults;
use kube::api::{Api, ListParams};

const SCENARIO: &str = r#"
version: v1.33.1
pools:
  - name: alpha
    count: 3
    version: v1.32.4
  - name: beta
    count: 3
workloads:
  - kind: Deployment
    name: web
    replicas: 6
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 3
    pdb: {min_available: 2}
  - kind: DaemonSet
    name: agent
"#;

async fn pool_nodes(client: &kube::Client, pool: &str) -> Vec<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default().labels(&format!("kbg.io/pool={pool}")))
        .await
        .unwrap()
        .items
}

/// The drain engine's preflight reads (pods per node, PDBs, DaemonSets) each go through
/// the one retry layer: a third of the lists failing does not fail preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reads_survive_failing_lists() {
    let seed = rel::seed("preflight_reads_survive_failing_lists", 3);
    let h = Harness::start(SCENARIO, "").await;
    let client = h.client().await;
    let source = pool_nodes(&client, "alpha").await;
    let target = pool_nodes(&client, "beta").await;
    h.sim.set_faults(Faults {
        error_500: 0.20,
        error_429: 0.05,
        drop: 0.05,
        verbs: vec!["list".into()],
        seed,
        ..Faults::default()
    });
    let before = h.sim.audit().len();
    let opts = kbg::drain::DrainOptions {
        clock: kbg::clock::Clock::with_speed(h.speed).unwrap(),
        ..Default::default()
    };
    let report = kbg::preflight::preflight(&client, &source, &target, &opts).await;
    h.sim.set_faults(Faults::default());
    let audit = h.sim.audit();
    let faults = audit[before..].iter().filter(|e| e.fault.is_some()).count();
    let report = report.unwrap_or_else(|e| panic!("seed {seed}: preflight failed: {e}"));
    assert_eq!(report.source_nodes.len(), 3);
    assert!(faults > 0, "seed {seed}: no fault was injected");
    eprintln!(
        "preflight: {} lists, {faults} of them faulted, all retried",
        audit.len() - before
    );
}
