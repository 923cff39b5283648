//! The example scenario starts settled and kube-rs reads it over HTTPS.

mod common;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_scenario_starts_settled() {
    let yaml = include_str!("../../examples/sim-scenario.yaml");
    let (cluster, client) = common::start(yaml, 60.0).await;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 4);
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        pods.items.iter().all(common::running_ready),
        "every pod Running"
    );
    // 6 web + 3 db + 2 cache + debug + 3 node-exporter (not on the tainted master)
    // + 4 kube-proxy + 4 static pods
    assert_eq!(pods.items.len(), 23);
    let stats = cluster.stats();
    assert_eq!(stats.pdbs.len(), 2);
    assert!(
        stats.pdbs.iter().all(|p| p.min_margin_seen == Some(1)),
        "{stats:?}"
    );
    assert_eq!(
        client.apiserver_version().await.unwrap().git_version,
        "v1.31.4"
    );
    cluster.shutdown().await;
}
