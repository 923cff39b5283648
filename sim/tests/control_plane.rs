//! Masters upgraded in place, part by part: static pods without the kubelet, the kubelet
//! alone, one component, an injected failure that leaves the master as it was, and the
//! `kubeadm-config` ConfigMap `kubeadm upgrade node` reads.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
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

/// Waits until `pod` runs `want` and is Ready.
async fn runs(pods: &Api<Pod>, pod: &str, want: &str) {
    common::wait_for(&format!("{pod} on {want}"), 60, || {
        let pods = pods.clone();
        async move {
            pods.get_opt(pod)
                .await
                .unwrap()
                .filter(|p| common::running_ready(p) && image(p).ends_with(want))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_upgrade_part_by_part_and_fail_on_request() {
    let (cluster, client) = common::start(
        "version: v1.33.1\ncontrol_plane: {count: 2}\nkube_proxy: false\n",
        30.0,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let nodes: Api<Node> = Api::all(client.clone());

    // kubeadm's ClusterConfiguration is there, at the cluster's version.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cfg = cms.get("kubeadm-config").await.unwrap();
    assert!(
        cfg.data.unwrap()["ClusterConfiguration"].contains("kubernetesVersion: v1.33.1"),
        "kubeadm-config names the version"
    );

    // The static pods alone: the kubelet keeps its version.
    let (code, _, body) = common::raw(
        &client,
        "POST",
        "/sim/v1/control-plane/control-plane-0/upgrade",
        json!({"version": "v1.34.0", "components": ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    runs(&pods, "kube-apiserver-control-plane-0", ":v1.34.0").await;
    runs(&pods, "kube-scheduler-control-plane-0", ":v1.34.0").await;
    runs(&pods, "etcd-control-plane-0", ":3.5.21-0").await;
    assert_eq!(kubelet(&nodes, "control-plane-0").await, "v1.33.1");
    assert_eq!(
        client.apiserver_version().await.unwrap().git_version,
        "v1.33.1",
        "the other master still serves v1.33.1"
    );

    // The kubelet alone.
    cluster
        .upgrade_master("control-plane-0", "v1.34.0", &["kubelet"])
        .unwrap();
    assert_eq!(kubelet(&nodes, "control-plane-0").await, "v1.34.0");

    // One component.
    cluster
        .upgrade_master("control-plane-1", "v1.34.0", &["kube-apiserver"])
        .unwrap();
    runs(&pods, "kube-apiserver-control-plane-1", ":v1.34.0").await;
    let kcm = pods
        .get("kube-controller-manager-control-plane-1")
        .await
        .unwrap();
    assert!(image(&kcm).ends_with(":v1.33.1"), "{}", image(&kcm));
    common::wait_for("/version follows the API servers", 60, || {
        let client = client.clone();
        async move {
            (client.apiserver_version().await.unwrap().git_version == "v1.34.0").then_some(())
        }
    })
    .await;

    // Unknown components are refused.
    let (code, _, _) = common::raw(
        &client,
        "POST",
        "/sim/v1/control-plane/control-plane-1/upgrade",
        json!({"version": "v1.34.0", "components": ["kube-dns"]}),
    )
    .await;
    assert_eq!(code, 400);

    // An injected failure, twice, then success: the master keeps its version meanwhile.
    let pp = PatchParams::default();
    nodes
        .patch(
            "control-plane-1",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"sim.kbg.io/fail-upgrade": "2"}}})),
        )
        .await
        .unwrap();
    for left in ["1", ""] {
        let (code, _, body) = common::raw(
            &client,
            "POST",
            "/sim/v1/control-plane/control-plane-1/upgrade",
            json!({"version": "v1.34.0", "components": ["kube-scheduler"]}),
        )
        .await;
        assert_eq!(code, 500, "{body}");
        assert!(body.contains("sim.kbg.io/fail-upgrade"), "{body}");
        let n = nodes.get("control-plane-1").await.unwrap();
        let ann = n.metadata.annotations.unwrap_or_default();
        assert_eq!(
            ann.get("sim.kbg.io/fail-upgrade")
                .map(String::as_str)
                .unwrap_or(""),
            left,
            "the annotation counts down"
        );
    }
    let ks = pods.get("kube-scheduler-control-plane-1").await.unwrap();
    assert!(image(&ks).ends_with(":v1.33.1"));
    // A kubelet-only upgrade is not a control-plane upgrade: never refused.
    nodes
        .patch(
            "control-plane-1",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"annotations": {"sim.kbg.io/fail-upgrade": "true"}}}),
            ),
        )
        .await
        .unwrap();
    cluster
        .upgrade_master("control-plane-1", "v1.34.0", &["kubelet"])
        .unwrap();
    let e = cluster
        .upgrade_master("control-plane-1", "v1.34.0", &["kube-scheduler"])
        .unwrap_err();
    assert!(e.to_string().contains("fail-upgrade"), "{e}");
    nodes
        .patch(
            "control-plane-1",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"sim.kbg.io/fail-upgrade": null}}})),
        )
        .await
        .unwrap();
    cluster
        .upgrade_master("control-plane-1", "v1.34.0", &["kube-scheduler"])
        .unwrap();
    runs(&pods, "kube-scheduler-control-plane-1", ":v1.34.0").await;
    cluster.shutdown().await;
}
