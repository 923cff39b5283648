//! The three commands, end to end with the real binary against a simulated cluster:
//! deploy-pool beta → migrate alpha beta → teardown alpha; and rollback.

mod common;

use std::collections::BTreeMap;

use common::{Harness, watch_pdbs};
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
    startup_seconds: 5
    pdb: {max_unavailable: 1}
  - kind: Deployment
    name: api
    replicas: 3
    startup_seconds: 8
    pdb: {min_available: 2}
  - kind: StatefulSet
    name: db
    replicas: 3
    pdb: {min_available: 2}
  - kind: DaemonSet
    name: agent
manifests:
  # A static pod's mirror on a worker: the API cannot remove it; kbg must leave it.
  - apiVersion: v1
    kind: Pod
    metadata:
      name: node-exporter-alpha-1
      namespace: kube-system
      annotations: {kubernetes.io/config.mirror: "9f2c6d"}
    spec:
      nodeName: alpha-1
      containers: [{name: exporter, image: quay.io/prometheus/node-exporter:v1.8.2}]
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

fn owner_kind(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .map(|o| o.kind.as_str())
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_migrate_teardown_moves_every_workload() {
    let h = Harness::start(SCENARIO, KBG_YAML).await;
    let client = h.client().await;
    let margins = watch_pdbs(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let before = pods.list(&ListParams::default()).await.unwrap().items;
    let uid_of = |list: &[Pod], name: &str| {
        list.iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| p.metadata.uid.clone())
    };
    let daemon_pods: BTreeMap<String, String> = before
        .iter()
        .filter(|p| owner_kind(p) == Some("DaemonSet") && node_of(p).starts_with("alpha-"))
        .map(|p| {
            (
                p.metadata.name.clone().unwrap(),
                p.metadata.uid.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        daemon_pods.len(),
        6,
        "agent and kube-proxy on each alpha node"
    );

    // deploy-pool
    let run = h.kbg(&["deploy-pool", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["nodes_ready"], 3, "{report}");
    let beta = nodes
        .list(&ListParams::default().labels("kbg.io/pool=beta"))
        .await
        .unwrap();
    assert_eq!(beta.items.len(), 3);
    for n in &beta.items {
        assert_eq!(
            n.status
                .as_ref()
                .unwrap()
                .node_info
                .as_ref()
                .unwrap()
                .kubelet_version,
            "v1.33.1"
        );
    }
    // A rerun changes nothing: the same three machines.
    h.kbg(&["deploy-pool", "beta"]).await.expect_code(0);
    assert_eq!(
        nodes
            .list(&ListParams::default().labels("kbg.io/pool=beta"))
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    // migrate
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["pods_evicted"], 12, "{report}");
    assert_eq!(report["nodes_drained"].as_array().unwrap().len(), 3);

    let after = pods.list(&ListParams::default()).await.unwrap().items;
    for p in &after {
        if matches!(owner_kind(p), Some("ReplicaSet" | "StatefulSet")) {
            assert!(
                node_of(p).starts_with("beta-"),
                "{} still on {}",
                p.metadata.name.as_deref().unwrap(),
                node_of(p)
            );
        }
    }
    for (name, uid) in &daemon_pods {
        assert_eq!(
            uid_of(&after, name).as_ref(),
            Some(uid),
            "DaemonSet pod {name} was touched"
        );
    }
    assert_eq!(
        uid_of(&after, "node-exporter-alpha-1"),
        uid_of(&before, "node-exporter-alpha-1"),
        "the mirror pod was touched"
    );
    for n in nodes
        .list(&ListParams::default().labels("kbg.io/pool=alpha"))
        .await
        .unwrap()
        .items
    {
        assert_eq!(n.spec.unwrap().unschedulable, Some(true));
        assert!(
            n.metadata
                .annotations
                .unwrap()
                .contains_key("kbg.io/cordoned")
        );
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    for (name, replicas) in [("web", 6), ("api", 3)] {
        let d = deps.get(name).await.unwrap();
        assert_eq!(d.status.unwrap().ready_replicas, Some(replicas), "{name}");
    }
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        sts.get("db").await.unwrap().status.unwrap().ready_replicas,
        Some(3)
    );
    for e in h.kbg_requests() {
        if e.subresource == "eviction" {
            assert!(
                !e.name.starts_with("agent-") && e.namespace != "kube-system",
                "evicted a DaemonSet, mirror or system pod: {e:?}"
            );
        }
        assert!(
            !(e.resource == "pods" && e.verb == "delete"),
            "kbg deleted a pod instead of evicting it: {e:?}"
        );
    }

    // teardown
    let run = h.kbg(&["teardown", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["nodes_deleted"].as_array().unwrap().len(), 3);
    assert_eq!(
        report["machines_deprovisioned"].as_array().unwrap().len(),
        3,
        "{report}"
    );
    let alpha = nodes
        .list(&ListParams::default().labels("kbg.io/pool=alpha"))
        .await
        .unwrap();
    assert!(alpha.items.is_empty());
    assert!(
        nodes.get_opt("control-plane-0").await.unwrap().is_some(),
        "the control plane stays"
    );

    // Events on the nodes kbg cordoned, drained and deleted.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let mut seen = std::collections::BTreeSet::new();
    for e in events.list(&ListParams::default()).await.unwrap().items {
        let on = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        if on == "alpha-0" && e.reporting_controller.as_deref() == Some("kbg") {
            seen.insert(e.reason.unwrap_or_default());
        }
    }
    for reason in ["Cordoned", "Draining", "Drained", "Deleting"] {
        assert!(
            seen.contains(reason),
            "no {reason} Event on alpha-0: {seen:?}"
        );
    }

    // The safety evidence: the simulator's books and our own watch.
    let stats = h.sim.stats();
    assert_eq!(stats.pdb_violations, 0, "{:?}", stats.pdbs);
    assert!(
        stats
            .pdbs
            .iter()
            .all(|p| p.min_margin_seen.unwrap_or(0) >= 0)
    );
    let margins = margins.lock().unwrap().clone();
    assert_eq!(margins.len(), 3, "{margins:?}");
    for (pdb, low) in &margins {
        assert!(
            *low >= 0,
            "PDB {pdb} went {low} below its desired healthy count"
        );
    }
    println!(
        "figures: {} evictions allowed, {} refused, {} kbg requests, PDB margins {margins:?}",
        stats.evictions_allowed,
        stats.evictions_refused,
        h.kbg_requests().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_uncordons_only_what_kbg_cordoned_and_can_drain_back() {
    let h = Harness::start(SCENARIO, KBG_YAML).await;
    let client = h.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    // A person cordoned alpha-2 before anything.
    nodes
        .patch(
            "alpha-2",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    h.kbg(&["deploy-pool", "beta"]).await.expect_code(0);
    h.kbg(&["migrate", "alpha", "beta"]).await.expect_code(0);

    let run = h.kbg(&["rollback", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(
        report["uncordoned"],
        serde_json::json!(["alpha-0", "alpha-1"]),
        "{report}"
    );
    assert_eq!(report["left_cordoned"], serde_json::json!(["alpha-2"]));
    for (name, cordoned) in [("alpha-0", false), ("alpha-1", false), ("alpha-2", true)] {
        let n = nodes.get(name).await.unwrap();
        assert_eq!(
            n.spec.unwrap().unschedulable.unwrap_or(false),
            cordoned,
            "{name}"
        );
        assert!(
            !n.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("kbg.io/cordoned"),
            "{name} keeps kbg's note"
        );
    }
    // A second rollback finds nothing of kbg's: it changes nothing.
    let run = h.kbg(&["rollback", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["uncordoned"], serde_json::json!([]));

    // Migrate again, then roll back and drain beta back onto alpha: refused while the
    // person's cordon keeps alpha-2 unschedulable (preflight wants every target node
    // schedulable), done once they lift it.
    h.kbg(&["migrate", "alpha", "beta"]).await.expect_code(0);
    let run = h.kbg(&["rollback", "alpha", "beta", "--drain-back"]).await;
    run.expect_code(1);
    assert!(run.stderr.contains("node alpha-2"), "{}", run.stderr);
    nodes
        .patch(
            "alpha-2",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();
    let run = h
        .kbg(&["rollback", "alpha", "beta", "--drain-back", "-o", "json"])
        .await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(
        report["drain_back"]["nodes_drained"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{report}"
    );
    for n in nodes
        .list(&ListParams::default().labels("kbg.io/pool=beta"))
        .await
        .unwrap()
        .items
    {
        assert_eq!(
            n.spec.unwrap().unschedulable,
            Some(true),
            "beta is cordoned"
        );
    }
    let pods: Api<Pod> = Api::all(client.clone());
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        if matches!(owner_kind(&p), Some("ReplicaSet" | "StatefulSet")) {
            let n = node_of(&p);
            assert!(n.starts_with("alpha-"), "{:?} on {n}", p.metadata.name);
        }
    }
    assert_eq!(h.sim.stats().pdb_violations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_secrets_never_reach_output_logs_events_or_state() {
    const TOKEN: &str = "zzzzzz.canarycanarycana";
    const HASH: &str = "sha256:cafecafecafecafecafecafecafecafecafecafecafecafecafecafecafecafe";
    let config =
        format!("cluster:\n  join:\n    endpoint: 10.0.0.10:6443\n    token: {TOKEN}\n{KBG_YAML}");
    let h = Harness::start(SCENARIO, &config).await;
    let mut seen = String::new();
    for args in [
        &["-vvv", "deploy-pool", "beta", "-o", "json"][..],
        &[
            "-vvv",
            "migrate",
            "alpha",
            "beta",
            "--dry-run",
            "-o",
            "yaml",
        ],
        &["-vv", "migrate", "alpha", "beta", "-o", "json"],
        &["-vvv", "status", "-o", "json"],
        &["-v", "teardown", "alpha"],
    ] {
        let out = h
            .command(args)
            .env("KBG_JOIN_CA_CERT_HASH", HASH)
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    let client = h.client().await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    seen.push_str(
        &serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap(),
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::all(client.clone());
    seen.push_str(
        &serde_json::to_string(&cms.list(&ListParams::default()).await.unwrap().items).unwrap(),
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::all(client.clone());
    seen.push_str(
        &serde_json::to_string(&leases.list(&ListParams::default()).await.unwrap().items).unwrap(),
    );
    let nodes: Api<Node> = Api::all(client);
    seen.push_str(
        &serde_json::to_string(&nodes.list(&ListParams::default()).await.unwrap().items).unwrap(),
    );
    assert!(seen.contains("kbg-state"), "the state was read");
    for secret in ["canarycanarycana", "cafecafecafe"] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
}
