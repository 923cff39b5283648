//! What the providers' end-to-end tests share: one cluster of workloads to move, the
//! kubelet double (`kubelet-double.py`) that registers a node from kbg's cloud-init the
//! way the machine's kubelet would, and the checks every blue/green ends with.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

use crate::common::{Harness, Run, wait_for};

/// The cluster every provider test starts with: a control plane and no workers, and
/// workloads that wait (Pending) for the first pool to come up. Every workload tolerates
/// the `dedicated=web:NoSchedule` taint the target pools register with, and has a PDB.
pub const SCENARIO: &str = r#"
version: v1.33.1
workloads:
  - kind: Deployment
    name: web
    replicas: 4
    requests: {cpu: 100m, memory: 64Mi}
    startup_seconds: 4
    tolerations: [{key: dedicated, operator: Equal, value: web, effect: NoSchedule}]
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 2
    startup_seconds: 3
    tolerations: [{key: dedicated, operator: Equal, value: web, effect: NoSchedule}]
    pdb: {min_available: 1}
  - kind: DaemonSet
    name: agent
"#;

/// Pods that move in a blue/green of [`SCENARIO`]: web's 4 and db's 2.
pub const PODS_TO_MOVE: u64 = 6;

/// The join settings every provider test's `kbg.yaml` carries (the token is a canary).
pub const JOIN: &str = "cluster:\n  join:\n    endpoint: 10.0.0.10:6443\n    token: kbgjoi.n0tar3alt0ken000\n    ca_cert_hash: sha256:0000000000000000000000000000000000000000000000000000000000000000\n";

/// The kubelet double.
pub fn kubelet_double() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kubelet-double.py")
}

/// Panics, naming `scripts/test-setup`, unless `python3` is on PATH (the doubles and the
/// example exec plugin are Python).
pub fn need_python() {
    assert!(
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("python3").is_file())),
        "python3 is needed by the test doubles; run scripts/test-setup"
    );
}

/// Write `cluster.json` (server, token, CA file) for the doubles that talk to the
/// simulated cluster as a machine would, and return its path.
pub fn cluster_json(h: &Harness) -> PathBuf {
    let ca = h.path().join("ca.pem");
    std::fs::write(
        &ca,
        h.sim.ca_pem().expect("the simulated cluster serves TLS"),
    )
    .unwrap();
    let path = h.path().join("cluster.json");
    let doc = serde_json::json!({
        "server": h.sim.server_url(),
        "token": h.sim.token(),
        "ca_file": ca,
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

/// Run kbg with extra environment, like [`Harness::kbg`].
pub async fn kbg_env(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = h.command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), c.output())
        .await
        .unwrap_or_else(|_| panic!("kbg {args:?} did not finish within 300 s"))
        .expect("kbg runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The nodes labelled `kbg.io/pool=<pool>`.
pub async fn pool_nodes(client: &kube::Client, pool: &str) -> Vec<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default().labels(&format!("kbg.io/pool={pool}")))
        .await
        .unwrap()
        .items
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn owner_kind(p: &Pod) -> Option<String> {
    p.metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .map(|o| o.kind.clone())
}

/// The node each replicated (ReplicaSet, StatefulSet) pod runs on.
pub async fn workload_nodes(client: &kube::Client) -> BTreeMap<String, String> {
    let pods: Api<Pod> = Api::all(client.clone());
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| matches!(owner_kind(p).as_deref(), Some("ReplicaSet" | "StatefulSet")))
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), node_of(p)))
        .collect()
}

/// Wait until web and db are fully Ready, every pod on a node of `pool`.
pub async fn workloads_ready_on(client: &kube::Client, pool: &str) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = pool_nodes(client, pool)
        .await
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    wait_for(&format!("web and db Ready on pool {pool}"), 180, || async {
        let web = deps.get("web").await.ok()?.status?.ready_replicas? == 4;
        let db = sts.get("db").await.ok()?.status?.ready_replicas? == 2;
        let placed = workload_nodes(client).await;
        let on_pool =
            placed.len() == PODS_TO_MOVE as usize && placed.values().all(|n| names.contains(n));
        (web && db && on_pool).then_some(())
    })
    .await;
}

/// The checks every blue/green ends with: every workload Ready on `to`'s nodes, no node
/// of `from` left, no PDB violated (the simulator's books, and the test's own watch).
/// Returns the PDB margins seen.
pub async fn assert_moved(
    h: &Harness,
    client: &kube::Client,
    from: &str,
    to: &str,
    margins: &Arc<Mutex<BTreeMap<String, i32>>>,
) -> BTreeMap<String, i32> {
    workloads_ready_on(client, to).await;
    assert!(
        pool_nodes(client, from).await.is_empty(),
        "pool {from}'s nodes are deleted"
    );
    let stats = h.sim.stats();
    assert_eq!(stats.pdb_violations, 0, "{:?}", stats.pdbs);
    assert_eq!(stats.pods_deleted, 0, "pods are evicted, never deleted");
    let margins = margins.lock().unwrap().clone();
    assert_eq!(margins.len(), 2, "{margins:?}");
    for (pdb, low) in &margins {
        assert!(
            *low >= 0,
            "PDB {pdb} went {low} below its desired healthy count"
        );
    }
    margins
}
