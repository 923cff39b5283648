//! deploy-pool's failures: machines that fail to provision or never join are reported by
//! name; `--cleanup-on-failure` deprovisions them; `--retry-failed` replaces them with
//! fresh machines; nothing leaks and nothing is doubled.

mod common;

use common::Harness;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams};

const KBG_YAML: &str = r#"
pools:
  beta:
    provider: sim
    version: v1.33.1
    count: 3
    labels: {tier: web}
    taints: ["dedicated=web:NoSchedule"]
    sim:
      boot_seconds: 5
      fail_provision: [beta-2]
      never_ready: [beta-1]
  gamma:
    provider: sim
    version: v1.32.0
    count: 3
    sim:
      fail_provision: [gamma-0]
      never_ready: [gamma-2]
"#;

async fn pool_nodes(client: &kube::Client, pool: &str) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default().labels(&format!("kbg.io/pool={pool}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    names.sort();
    names
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f["name"]
                .as_str()
                .unwrap_or_else(|| f.as_str().unwrap())
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_machines_are_reported_cleaned_up_and_replaced() {
    let h = Harness::start("", KBG_YAML).await;
    let client = h.client().await;

    // 1. Report exactly which machines did not make it; leave them as they are.
    let run = h
        .kbg(&["deploy-pool", "beta", "--timeout", "1m", "-o", "json"])
        .await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(names(&report["failed"]), ["beta-2"], "{report}");
    assert_eq!(names(&report["never_joined"]), ["beta-1"], "{report}");
    assert_eq!(report["nodes_ready"], 1);
    let errors = run.error_lines().join("\n");
    assert!(
        errors.contains("2 of 3 machines did not join: beta-2, beta-1"),
        "{errors}"
    );
    assert_eq!(pool_nodes(&client, "beta").await, ["beta-0", "beta-1"]);
    // The Ready node carries the pool's labels and taints.
    let nodes: Api<Node> = Api::all(client.clone());
    let b0 = nodes.get("beta-0").await.unwrap();
    assert_eq!(b0.metadata.labels.unwrap()["tier"], "web");
    assert_eq!(b0.spec.unwrap().taints.unwrap()[0].key, "dedicated");

    // 2. A rerun asks for the same names: nothing doubles.
    h.kbg(&["deploy-pool", "beta", "--timeout", "30s"])
        .await
        .expect_code(1);
    assert_eq!(pool_nodes(&client, "beta").await, ["beta-0", "beta-1"]);

    // 3. --cleanup-on-failure deprovisions what did not join.
    let run = h
        .kbg(&[
            "deploy-pool",
            "beta",
            "--timeout",
            "30s",
            "--cleanup-on-failure",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(1);
    let mut cleaned = names(&run.json()["cleaned_up"]);
    cleaned.sort();
    assert_eq!(cleaned, ["beta-1", "beta-2"]);
    assert_eq!(pool_nodes(&client, "beta").await, ["beta-0"]);

    // 4. The next run makes replacements under fresh names, never reusing a failed one.
    let run = h.kbg(&["deploy-pool", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(
        pool_nodes(&client, "beta").await,
        ["beta-0", "beta-3", "beta-4"]
    );
    let state: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = state.get("kbg-state").await.unwrap();
    let record: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["pool.beta"]).unwrap();
    assert_eq!(
        record["machines"],
        serde_json::json!(["beta-0", "beta-3", "beta-4"])
    );
    assert_eq!(record["retired"], serde_json::json!(["beta-1", "beta-2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_replaces_machines_in_one_run() {
    let h = Harness::start("", KBG_YAML).await;
    let client = h.client().await;
    let run = h
        .kbg(&[
            "deploy-pool",
            "gamma",
            "--timeout",
            "1m",
            "--retry-failed",
            "2",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(0);
    let report = run.json();
    let mut replaced = names(&report["replaced"]);
    replaced.sort();
    assert_eq!(replaced, ["gamma-0", "gamma-2"], "{report}");
    assert_eq!(report["nodes_ready"], 3);
    assert_eq!(
        pool_nodes(&client, "gamma").await,
        ["gamma-1", "gamma-3", "gamma-4"]
    );

    // Teardown removes every machine; a rerun finds nothing to do.
    let run = h.kbg(&["teardown", "gamma", "-o", "json"]).await;
    run.expect_code(0);
    assert!(pool_nodes(&client, "gamma").await.is_empty());
    let run = h.kbg(&["teardown", "gamma", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["nodes_deleted"], serde_json::json!([]));
}
