//! The example plugin's machines joining a simulated cluster: its `boot_command` gets each
//! machine's cloud-init on stdin and registers the Node that machine's kubelet would
//! (`tests/support/register-node.py`), so provisioning ends in Ready nodes that match
//! their machines by provider ID.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kbg_provider::{JoinConfig, PoolSpec, Provider, Secret, Taint, TaintEffect};
use kbg_provider_exec::ExecProvider;
use kbg_sim::{SimCluster, SimConfig};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use serde_json::json;

const TOKEN: &str = "abcdef.0123456789abcdef";

fn is_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn provisioned_machines_become_ready_nodes() {
    let cluster = SimCluster::start(SimConfig {
        speed: 60.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.default_retry = false;
    let nodes: Api<Node> = Api::all(kube::Client::try_from(config).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (file, text) in [
        ("ca.pem", cluster.ca_pem().unwrap()),
        ("sim-token", cluster.token()),
        ("join-token", TOKEN),
    ] {
        std::fs::write(d.join(file), text).unwrap();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let boot = format!(
        "{} {} {} {} {}",
        root.join("tests/support/register-node.py").display(),
        cluster.server_url(),
        d.join("sim-token").display(),
        d.join("ca.pem").display(),
        d.join("join-token").display()
    );
    let spec = PoolSpec {
        name: "beta".into(),
        version: "v1.31.2".into(),
        labels: BTreeMap::from([("kbg.io/pool".to_string(), "beta".to_string())]),
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("web".into()),
            effect: TaintEffect::NoSchedule,
        }],
        settings: json!({
            "program": root.join("../../examples/exec-plugin.sh"),
            "config": {"state_dir": d.join("state"), "boot_command": boot},
        }),
        template: None,
        join: JoinConfig {
            api_server_endpoint: cluster.addr().to_string(),
            token: Some(Secret::new(TOKEN)),
            ca_cert_hash: Some(Secret::new("sha256:00ff")),
        },
    };
    let p = ExecProvider::from_pool(&spec).unwrap();
    let names: Vec<String> = (0..3).map(|i| format!("beta-{i}")).collect();
    let report = p.provision(&spec, &names).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.machines.len(), 3);
    for m in &report.machines {
        let node = tokio::time::timeout(
            Duration::from_secs(120),
            await_condition(nodes.clone(), &m.name, is_ready),
        )
        .await
        .unwrap_or_else(|_| panic!("node {} never became Ready", m.name))
        .unwrap()
        .unwrap();
        let spec = node.spec.as_ref().unwrap();
        assert!(m.matches_node(spec.provider_id.as_deref(), &m.name));
        assert_eq!(
            spec.provider_id.as_deref(),
            Some(format!("example:///beta/{}", m.name).as_str())
        );
        assert_eq!(
            node.metadata.labels.as_ref().unwrap()["kbg.io/pool"],
            "beta"
        );
        assert_eq!(spec.taints.as_ref().unwrap()[0].key, "dedicated");
        assert_eq!(
            node.status.unwrap().node_info.unwrap().kubelet_version,
            "v1.31.2"
        );
    }
    cluster.shutdown().await;
}
