//! Smoke test: a scenario settles and kube-rs lists it over HTTPS.
mod common;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 2\nworkloads:\n  - kind: Deployment\n    name: web\n    replicas: 3\n    pdb: {max_unavailable: 1}\n",
        60.0,
    )
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    let l = nodes.list(&ListParams::default()).await.unwrap();
    for n in &l.items {
        println!(
            "{} {:?}",
            n.metadata.name.as_deref().unwrap(),
            n.status
                .as_ref()
                .unwrap()
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .map(|c| (&c.type_, &c.status))
                .collect::<Vec<_>>()
        );
    }
    let pods: Api<Pod> = Api::all(client.clone());
    for p in pods.list(&ListParams::default()).await.unwrap() {
        println!(
            "{}/{} {:?} {:?}",
            p.metadata.namespace.unwrap(),
            p.metadata.name.unwrap(),
            p.spec.unwrap().node_name,
            p.status.unwrap().phase
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&cluster.stats()).unwrap()
    );
    cluster.shutdown().await;
}
