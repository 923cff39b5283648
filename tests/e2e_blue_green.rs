//! The three commands, end to end with the real binary against a simulated cluster:
//! deploy-pool beta → migrate alpha beta → teardown alpha.

mod common;

use common::Harness;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
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
    requests: {cpu: 100m, memory: 64Mi}
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 3
    pdb: {min_available: 2}
  - kind: DaemonSet
    name: agent
"#;

const KBG_YAML: &str = r#"
pools:
  alpha:
    provider: sim
    version: v1.32.4
    count: 3
  beta:
    provider: sim
    version: v1.33.1
    count: 3
    sim: {boot_seconds: 5}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_migrate_teardown_moves_every_workload() {
    let h = Harness::start(SCENARIO, KBG_YAML).await;
    let client = h.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());

    let run = h.kbg(&["deploy-pool", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["nodes_ready"], 3, "{report}");
    let beta = nodes
        .list(&ListParams::default().labels("kbg.io/pool=beta"))
        .await
        .unwrap();
    assert_eq!(beta.items.len(), 3);

    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert!(report["pods_evicted"].as_u64().unwrap() >= 9, "{report}");

    // Every workload pod now runs on beta; DaemonSet pods stayed where they were.
    let all = pods.list(&ListParams::default()).await.unwrap();
    for p in &all.items {
        let owner = p
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.kind.as_str());
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        if matches!(owner, Some("ReplicaSet" | "StatefulSet")) {
            assert!(
                node.starts_with("beta-"),
                "{} on {node}",
                p.metadata.name.as_deref().unwrap()
            );
        }
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let web = deps.get("web").await.unwrap();
    assert_eq!(web.status.unwrap().ready_replicas, Some(6));
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        sts.get("db").await.unwrap().status.unwrap().ready_replicas,
        Some(3)
    );
    assert_eq!(h.sim.stats().pdb_violations, 0);
    for e in h.kbg_requests() {
        if e.subresource == "eviction" {
            assert!(
                !e.name.starts_with("agent-"),
                "a DaemonSet pod was evicted: {e:?}"
            );
            assert!(
                !e.namespace.starts_with("kube-system"),
                "a system pod was evicted: {e:?}"
            );
        }
    }

    let run = h.kbg(&["teardown", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["nodes_deleted"].as_array().unwrap().len(), 3);
    let alpha = nodes
        .list(&ListParams::default().labels("kbg.io/pool=alpha"))
        .await
        .unwrap();
    assert!(alpha.items.is_empty());
    assert_eq!(h.sim.stats().pdb_violations, 0);
}
