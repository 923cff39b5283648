//! The three commands against an API server that fails: 10 % of requests answered 500,
//! 5 % 429 with Retry-After, 5 % connections dropped (issue 8's rates), at a seeded
//! random. They still finish, with no PDB violated and nothing doubled.

mod common;

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

const KBG_YAML: &str = common::ALPHA_BETA;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_commands_finish_through_api_faults() {
    for seed in [7, 2026] {
        let h = Harness::start(SCENARIO, KBG_YAML).await;
        h.sim.set_faults(Faults {
            error_500: 0.10,
            error_429: 0.05,
            drop: 0.05,
            seed,
            ..Faults::default()
        });
        for args in [
            &["deploy-pool", "beta"][..],
            &["migrate", "alpha", "beta"],
            &["teardown", "alpha"],
        ] {
            let run = h.kbg(args).await;
            assert_eq!(
                run.code,
                Some(0),
                "seed {seed}: kbg {args:?}\n{}",
                run.stderr
            );
        }
        h.sim.set_faults(Faults::default());
        let faults = h
            .kbg_requests()
            .iter()
            .filter(|e| e.fault.is_some())
            .count();
        assert!(faults > 10, "seed {seed}: only {faults} faults hit kbg");
        let client = h.client().await;
        let nodes: Api<Node> = Api::all(client);
        let beta = nodes
            .list(&ListParams::default().labels("kbg.io/pool=beta"))
            .await
            .unwrap();
        assert_eq!(beta.items.len(), 3, "seed {seed}: no machine doubled");
        let alpha = nodes
            .list(&ListParams::default().labels("kbg.io/pool=alpha"))
            .await
            .unwrap();
        assert!(alpha.items.is_empty());
        let stats = h.sim.stats();
        assert_eq!(stats.pdb_violations, 0, "seed {seed}");
        println!(
            "seed {seed}: {} kbg requests, {faults} faults injected into them",
            h.kbg_requests().len()
        );
    }
}
