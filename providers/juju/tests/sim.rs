//! The Juju provider with the `juju` test double registering its units as Nodes in a
//! simulated cluster, as the charm's kubelet would: machines map to nodes by hostname,
//! nodes carry the pool's labels, taints and kubelet version, the charm's `pause` cordons.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Double, names, pool, provider};
use k8s_openapi::api::core::v1::Node;
use kbg_provider::{MemoryLedger, Provider};
use kbg_sim::{SimCluster, SimConfig};
use kube::api::{Api, DeleteParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use serde_json::json;

async fn client(cluster: &SimCluster) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn is_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits (on a watch, generously bounded: the machine is shared) until `name` is Ready.
async fn ready(nodes: &Api<Node>, name: &str) -> Node {
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(nodes.clone(), name, is_ready),
    )
    .await
    .unwrap_or_else(|_| panic!("node {name} never became Ready"))
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn units_join_the_cluster_as_nodes_and_leave_with_their_application() {
    let cluster = SimCluster::start(SimConfig {
        speed: 60.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(client(&cluster).await);
    let double = Double::new(json!({}));
    let ca = double.dir.path().join("ca.pem");
    std::fs::write(&ca, cluster.ca_pem().unwrap()).unwrap();
    double.edit(|st| {
        st["model"] = json!("k8s");
        st["kubelet_version"] = json!("v1.31.2");
        st["kubernetes"] = json!({
            "server": cluster.server_url(), "token": cluster.token(), "ca_file": ca});
    });
    let spec = pool(double.settings(json!({"model": "k8s", "use_charm_pause": true})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));

    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for m in &report.machines {
        let host = m.node_name.as_deref().expect("a hostname");
        let node = ready(&nodes, host).await;
        let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
        assert!(m.matches_node(provider_id, host), "{m:?}");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["kbg.io/pool"], "beta");
        assert_eq!(labels["tier"], "web");
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == "dedicated"
                && t.value.as_deref() == Some("web")
                && t.effect == "NoSchedule"),
            "{taints:?}"
        );
        assert_eq!(
            node.status
                .as_ref()
                .unwrap()
                .node_info
                .as_ref()
                .unwrap()
                .kubelet_version,
            "v1.31.2"
        );
    }

    // The charm's own hand-over: `pause` cordons the node, `resume` uncordons it.
    let host0 = report.machines[0].node_name.clone().unwrap();
    let paused = p
        .pause(&spec, &report.machines[..1], true, false)
        .await
        .unwrap();
    assert_eq!(paused.done, ["beta-0"]);
    let cordoned = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    assert!(cordoned(&nodes.get(&host0).await.unwrap()));
    p.resume(&spec, &report.machines[..1]).await.unwrap();
    assert!(!cordoned(&nodes.get(&host0).await.unwrap()));

    // Teardown as kbg does it: delete the Node objects, then deprovision the machines —
    // every unit goes, so the application goes.
    for m in &report.machines {
        nodes
            .delete(m.node_name.as_deref().unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    let gone = p.deprovision(&spec, &report.machines).await.unwrap();
    assert_eq!(gone.removed, ["beta-0", "beta-1"]);
    assert!(
        double
            .changes()
            .contains(&"remove-application -m k8s beta --no-prompt".to_string())
    );
    assert!(p.list(&spec).await.unwrap().is_empty());
    cluster.shutdown().await;
}
