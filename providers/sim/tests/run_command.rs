//! Run-command on simulated masters: kubeadm (apply, then node), static-pod manifests,
//! kubelet packages and restarts, and an injected failure that leaves the master as it
//! was.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kbg_provider::{JoinConfig, Machine, MachineState, PoolSpec, Provider, RemoteCommand};
use kbg_provider_sim::SimProvider;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn cluster() -> (kbg_sim::SimCluster, kube::Client) {
    let sim = kbg_sim::SimCluster::start(kbg_sim::SimConfig {
        speed: 30.0,
        scenario: kbg_sim::Scenario::from_yaml(
            "version: v1.33.1\ncontrol_plane: {count: 2}\nkube_proxy: false\n",
        )
        .unwrap(),
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

fn spec() -> PoolSpec {
    PoolSpec {
        name: "control-plane".into(),
        version: "v1.34.0".into(),
        labels: BTreeMap::new(),
        taints: vec![],
        settings: serde_json::Value::Null,
        template: None,
        join: JoinConfig::default(),
    }
}

fn master(name: &str) -> Machine {
    Machine {
        name: name.into(),
        pool: "control-plane".into(),
        provider_id: None,
        node_name: Some(name.into()),
        state: MachineState::Running,
        address: None,
        details: BTreeMap::new(),
    }
}

fn cmd(script: &str) -> RemoteCommand {
    RemoteCommand {
        script: script.into(),
        timeout_secs: 60,
    }
}

/// The image tags of `node`'s static pods, once they are Running at `want` (or as they
/// are after a while).
async fn tags(pods: &Api<Pod>, node: &str, want: &str) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut out = BTreeMap::new();
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            if let Some(p) = pods.get_opt(&format!("{c}-{node}")).await.unwrap() {
                let image = p.spec.unwrap().containers[0].image.clone().unwrap();
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let tag = image.rsplit_once(':').unwrap().1.to_string();
                out.insert(c.to_string(), if ready { tag } else { "not-ready".into() });
            }
        }
        if out.values().all(|t| t == want) || tokio::time::Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kubelet(nodes: &Api<Node>, name: &str) -> String {
    nodes
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap()
        .node_info
        .unwrap()
        .kubelet_version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_scripts_upgrade_simulated_masters() {
    let (sim, client) = cluster().await;
    let p = SimProvider::from_pool(client.clone(), &spec()).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let nodes: Api<Node> = Api::all(client.clone());
    let all = |v: &str| {
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]
        .iter()
        .map(|c| (c.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>()
    };

    // kubeadm refuses a version newer than itself: nothing moves.
    let out = p
        .run_command(
            &spec(),
            &master("control-plane-0"),
            &cmd("apt-get install -y \"kubeadm=1.33.9-*\"\nkubeadm upgrade apply v1.34.0 --yes\n"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 1, "{out:?}");
    assert!(
        out.stderr.contains("higher than the kubeadm version"),
        "{out:?}"
    );

    let out = p
        .run_command(
            &spec(),
            &master("control-plane-0"),
            &cmd("set -eu\napt-get install -y \"kubeadm=1.34.0-*\"\nkubeadm upgrade apply v1.34.0 --yes\n"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(out.stdout.contains("SUCCESS"), "{out:?}");
    assert_eq!(
        tags(&pods, "control-plane-0", "v1.34.0").await,
        all("v1.34.0")
    );
    assert_eq!(kubelet(&nodes, "control-plane-0").await, "v1.33.1");
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let doc = cm.get("kubeadm-config").await.unwrap().data.unwrap()["ClusterConfiguration"].clone();
    assert!(doc.contains("kubernetesVersion: v1.34.0"), "{doc}");

    // The second master follows the cluster's configuration.
    let out = p
        .run_command(
            &spec(),
            &master("control-plane-1"),
            &cmd("kubeadm upgrade node\n"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(
        tags(&pods, "control-plane-1", "v1.34.0").await,
        all("v1.34.0")
    );

    // The kubelet: installed, then running after the restart.
    let out = p
        .run_command(
            &spec(),
            &master("control-plane-1"),
            &cmd("apt-get install -y \"kubelet=1.34.0-*\" \"kubectl=1.34.0-*\"\nsystemctl daemon-reload\nsystemctl restart kubelet\n"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(kubelet(&nodes, "control-plane-1").await, "v1.34.0");

    // A worker, or an unknown node, is not a master.
    let out = p
        .run_command(&spec(), &master("nope"), &cmd("kubeadm upgrade node\n"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(out.stderr.contains("not a control-plane node"), "{out:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_rewrites_move_static_pods_and_failures_leave_the_master_as_it_was() {
    let (sim, client) = cluster().await;
    let p = SimProvider::from_pool(client.clone(), &spec()).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let nodes: Api<Node> = Api::all(client.clone());
    let script = |v: &str| {
        let mut s =
            String::from("set -eu\ncp -a /etc/kubernetes/manifests/. /var/lib/kbg/backup/\n");
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            s.push_str(&format!(
                "sed -i -E \"s#^([[:space:]]*image:[[:space:]]*[^[:space:]]*/{c}):[^[:space:]]+#\\1:{v}#\" /etc/kubernetes/manifests/{c}.yaml\n"
            ));
        }
        s
    };
    nodes
        .patch(
            "control-plane-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"sim.kbg.io/fail-upgrade": "true"}}})),
        )
        .await
        .unwrap();
    let out = p
        .run_command(
            &spec(),
            &master("control-plane-1"),
            &cmd(&script("v1.34.0")),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 1, "{out:?}");
    assert!(out.stderr.contains("fail-upgrade"), "{out:?}");
    let before = tags(&pods, "control-plane-1", "v1.33.1").await;
    assert!(before.values().all(|t| t == "v1.33.1"), "{before:?}");

    let out = p
        .run_command(
            &spec(),
            &master("control-plane-0"),
            &cmd(&script("v1.34.0")),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let after = tags(&pods, "control-plane-0", "v1.34.0").await;
    assert!(after.values().all(|t| t == "v1.34.0"), "{after:?}");
    // CoreOS kubelet-wrapper: the version in the unit, effective on restart.
    let out = p
        .run_command(
            &spec(),
            &master("control-plane-0"),
            &cmd("sed -i -E \"s#KUBELET_IMAGE_TAG=[^\\\"]*#KUBELET_IMAGE_TAG=v1.34.0_coreos.0#\" /etc/systemd/system/kubelet.service\n"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        kubelet(&nodes, "control-plane-0").await,
        "v1.33.1",
        "not restarted yet"
    );
    let out = p
        .run_command(
            &spec(),
            &master("control-plane-0"),
            &cmd("sed -i -E \"s#KUBELET_IMAGE_TAG=[^\\\"]*#KUBELET_IMAGE_TAG=v1.34.0_coreos.0#\" /etc/systemd/system/kubelet.service\nsystemctl restart kubelet\n"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(kubelet(&nodes, "control-plane-0").await, "v1.34.0");
    sim.shutdown().await;
}
