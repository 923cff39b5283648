//! End to end with a simulated cluster: hosts bootstrapped over real SSH register their
//! nodes (through the test double's `kubeadm join`, as the kubelet would) with the pool's
//! version, labels, taints and the machine's provider ID; the nodes become Ready; after
//! kbg's part of teardown (node deleted) deprovisioning frees the hosts and no node comes
//! back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kbg_provider::{Ledger, MemoryLedger, Provider as _};
use kbg_sim::{SimCluster, SimConfig};
use kube::api::{Api, DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use serde_json::json;
use support::Lab;

async fn client(cluster: &SimCluster) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client")
}

fn is_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn bootstrapped_hosts_register_ready_nodes_and_teardown_frees_them() {
    let cluster = SimCluster::start(SimConfig {
        speed: 60.0,
        ..SimConfig::default()
    })
    .await
    .expect("the simulated cluster starts");
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();
    let lab = Lab::start(&["host-a", "host-b", "host-c"], Some(&kubeconfig));
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let pool = lab.pool("beta", "v1.31.2", json!({}));
    let provider = lab.provider(&pool, ledger.clone()).await;

    let names = vec!["beta-0".to_string(), "beta-1".to_string()];
    let report = provider.provision(&pool, &names).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let nodes: Api<Node> = Api::all(client(&cluster).await);
    for machine in &report.machines {
        let name = machine.node_name.clone().unwrap();
        tokio::time::timeout(
            Duration::from_secs(120),
            await_condition(nodes.clone(), &name, is_ready),
        )
        .await
        .unwrap_or_else(|_| panic!("node {name} never became Ready"))
        .unwrap();
        let node = nodes.get(&name).await.unwrap();
        // The machine maps to its node by provider ID.
        assert!(machine.matches_node(
            node.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
            &name
        ));
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["kbg.io/pool"], "beta");
        assert_eq!(labels["tier"], "web");
        let taints = node
            .spec
            .as_ref()
            .unwrap()
            .taints
            .clone()
            .unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == "dedicated"
                && t.value.as_deref() == Some("web")
                && t.effect == "NoSchedule"),
            "{taints:?}"
        );
        let info = node.status.as_ref().unwrap().node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, "v1.31.2");
    }
    let workers = nodes
        .list(&ListParams::default().labels("kbg.io/pool=beta"))
        .await
        .unwrap();
    assert_eq!(workers.items.len(), 2);

    // Teardown: kbg deletes the nodes, then the provider resets and frees the hosts.
    for m in &report.machines {
        nodes
            .delete(m.node_name.as_deref().unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    let gone = provider.deprovision(&pool, &report.machines).await.unwrap();
    assert_eq!(gone.removed, names, "{:?}", gone.failed);
    assert!(provider.list(&pool).await.unwrap().is_empty());
    for h in &lab.hosts[..2] {
        assert!(!h.kubelet_active(), "{}", h.name);
        assert!(h.calls().contains(&"kubeadm reset -f".to_string()));
    }
    let left = nodes
        .list(&ListParams::default().labels("kbg.io/pool=beta"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
    cluster.shutdown().await;
}
