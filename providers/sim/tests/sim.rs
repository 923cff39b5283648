//! The sim provider against a simulated API server: idempotent by machine name, machines
//! become Ready under the simulated kubelet, faults, and deprovisioning.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kbg_provider::{ErrorKind, JoinConfig, MachineState, PoolSpec, Provider};
use kbg_provider_sim::SimProvider;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn cluster() -> (kbg_sim::SimCluster, kube::Client) {
    let sim = kbg_sim::SimCluster::start(kbg_sim::SimConfig {
        speed: 30.0,
        ..Default::default()
    })
    .await
    .unwrap();
    let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    (sim, client)
}

fn pool(settings: serde_json::Value) -> PoolSpec {
    PoolSpec {
        name: "beta".into(),
        version: "v1.32.3".into(),
        labels: BTreeMap::from([("kbg.io/pool".to_string(), "beta".to_string())]),
        taints: vec![],
        settings,
        template: None,
        join: JoinConfig::default(),
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_are_nodes_made_once_and_removed() {
    let (sim, client) = cluster().await;
    let spec = pool(
        serde_json::json!({"boot_seconds": 3, "fail_provision": ["beta-2"], "never_ready": ["beta-1"]}),
    );
    let p = SimProvider::from_pool(client.clone(), &spec).unwrap();
    let want = names(&["beta-0", "beta-1", "beta-2"]);
    let first = p.provision(&spec, &want).await.unwrap();
    assert_eq!(first.machines.len(), 2);
    assert_eq!(first.failed.len(), 1);
    assert_eq!(first.failed[0].machine.as_deref(), Some("beta-2"));
    assert_eq!(first.failed[0].kind, ErrorKind::Failed);
    // Again: the same machines, nothing created twice.
    let again = p.provision(&spec, &want).await.unwrap();
    assert_eq!(again.machines.len(), 2);
    let creates = sim
        .audit()
        .iter()
        .filter(|e| e.resource == "nodes" && e.verb == "create" && e.code == 201)
        .count();
    assert_eq!(creates, 2);

    // The simulated kubelet brings beta-0 up; beta-1 never (fault), at its version.
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let machines = p.list(&spec).await.unwrap();
        let states: Vec<(String, MachineState)> =
            machines.iter().map(|m| (m.name.clone(), m.state)).collect();
        if states
            == [
                ("beta-0".to_string(), MachineState::Running),
                ("beta-1".to_string(), MachineState::Pending),
            ]
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b0 = nodes.get("beta-0").await.unwrap();
    assert_eq!(
        b0.status.unwrap().node_info.unwrap().kubelet_version,
        "v1.32.3"
    );

    // A node of the same name that is not this pool's machine is refused, not adopted.
    let other = Node {
        metadata: ObjectMeta {
            name: Some("beta-7".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &other).await.unwrap();
    let r = p.provision(&spec, &names(&["beta-7"])).await.unwrap();
    assert!(r.machines.is_empty());
    assert!(
        r.failed[0].to_string().contains("already exists"),
        "{}",
        r.failed[0]
    );

    // Deprovision: gone, and gone again is still a success.
    let machines = p.list(&spec).await.unwrap();
    let d = p.deprovision(&spec, &machines).await.unwrap();
    assert_eq!(d.removed, names(&["beta-0", "beta-1"]));
    assert!(d.failed.is_empty());
    assert!(p.list(&spec).await.unwrap().is_empty());
    let d = p.deprovision(&spec, &machines).await.unwrap();
    assert_eq!(d.removed.len(), 2);
    assert!(
        nodes.get_opt("beta-7").await.unwrap().is_some(),
        "not ours, not touched"
    );

    // Run-command is for masters (tests/run_command.rs): on a worker, kubeadm fails.
    let out = p
        .run_command(
            &spec,
            &machines[0],
            &kbg_provider::RemoteCommand {
                script: "kubeadm upgrade node".into(),
                timeout_secs: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 1, "{out:?}");
    assert!(out.stderr.contains("not a control-plane node"), "{out:?}");
    sim.shutdown().await;
}
