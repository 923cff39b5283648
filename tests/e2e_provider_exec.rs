//! The exec provider end to end: `kbg deploy-pool` → `migrate` → `teardown` through the
//! real binary, with the example plugin (`examples/exec-plugin.sh`) making the machines
//! and the simulated cluster as Kubernetes.
//!
//! The plugin hands each new machine's cloud-init to its `boot_command`; here that is the
//! kubelet double (`tests/support/kubelet-double.py`), which registers the Node the
//! kubelet configured by that cloud-init would (name, labels, taints, version), so nodes
//! join exactly as the bootstrap kbg rendered says. The plugin's records (one JSON file
//! per machine under `state_dir/<pool>/`) are the machines at the provider.

mod common;
mod support;

use std::path::{Path, PathBuf};

use common::{Harness, watch_pdbs};
use serde_json::Value;

fn plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-plugin.sh")
}

/// A `kbg.yaml` with exec pools `pools` (name, version, count, extra YAML lines), whose
/// machines boot through the kubelet double, failing `fail` (a machine name) if given.
fn kbg_yaml(h: &Harness, pools: &[(&str, &str, usize, &str)], fail: Option<&str>) -> String {
    let cluster = support::cluster_json(h);
    let mut boot = format!(
        "python3 {} --cluster {}",
        support::kubelet_double().display(),
        cluster.display()
    );
    if let Some(m) = fail {
        boot = format!(
            "if [ \"$KBG_MACHINE\" = {m} ]; then echo 'no capacity in rack 3' >&2; exit 1; fi; {boot}"
        );
    }
    let mut out = format!("{}pools:\n", support::JOIN);
    for (name, version, count, extra) in pools {
        out.push_str(&format!(
            "  {name}:\n    provider: exec\n    version: {version}\n    count: {count}\n{extra}    exec:\n      program: {}\n      config:\n        state_dir: {}\n        boot_command: {}\n",
            plugin().display(),
            h.path().join("machines").display(),
            serde_json::to_string(&boot).unwrap(),
        ));
    }
    out
}

/// The machines the plugin has records of for `pool`.
fn records(h: &Harness, pool: &str) -> Vec<String> {
    let dir = h.path().join("machines").join(pool);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                .map(|n| n.trim_end_matches(".json").to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const BETA_LABELS: &str = "    labels: {tier: web}\n    taints: [\"dedicated=web:NoSchedule\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_migrate_teardown_with_the_example_plugin() {
    support::need_python();
    let h = Harness::start(support::SCENARIO, "").await;
    h.write_config(&kbg_yaml(
        &h,
        &[
            ("alpha", "v1.32.4", 2, ""),
            ("beta", "v1.33.1", 2, BETA_LABELS),
        ],
        None,
    ));
    let client = h.client().await;

    let run = h.kbg(&["deploy-pool", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["nodes_ready"], 2, "{}", run.stdout);
    support::workloads_ready_on(&client, "alpha").await;
    let run = h.kbg(&["deploy-pool", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["nodes_ready"], 2, "{report}");
    for m in report["machines"].as_array().unwrap() {
        // Machine ↔ node: the plugin's node_name, as the cloud-init named the node.
        assert_eq!(m["node"], m["name"], "{m}");
        assert_eq!(
            m["provider_id"],
            format!("example:///beta/{}", m["name"].as_str().unwrap())
        );
    }
    for n in support::pool_nodes(&client, "beta").await {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["tier"], "web");
        let taints = n.spec.as_ref().unwrap().taints.clone().unwrap_or_default();
        assert!(taints.iter().any(|t| t.key == "dedicated"), "{taints:?}");
        let info = n.status.unwrap().node_info.unwrap();
        assert_eq!(info.kubelet_version, "v1.33.1");
    }
    assert_eq!(records(&h, "alpha"), ["alpha-0", "alpha-1"]);
    assert_eq!(records(&h, "beta"), ["beta-0", "beta-1"]);

    let margins = watch_pdbs(client.clone());
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let migrated = run.json();
    assert_eq!(
        migrated["pods_evicted"],
        support::PODS_TO_MOVE,
        "{migrated}"
    );
    assert_eq!(migrated["handed_over"], Value::Array(vec![]));

    let run = h.kbg(&["teardown", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    let torn = run.json();
    assert_eq!(
        torn["machines_deprovisioned"],
        serde_json::json!(["alpha-0", "alpha-1"])
    );
    let margins = support::assert_moved(&h, &client, "alpha", "beta", &margins).await;
    assert!(records(&h, "alpha").is_empty(), "the plugin forgot alpha");
    assert_eq!(records(&h, "beta"), ["beta-0", "beta-1"]);
    println!(
        "figures: exec: {} kbg requests, {} evictions allowed, {} refused, plugin records alpha {} beta {}, PDB margins {margins:?}",
        h.kbg_requests().len(),
        h.sim.stats().evictions_allowed,
        h.sim.stats().evictions_refused,
        records(&h, "alpha").len(),
        records(&h, "beta").len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_fails_half_way_is_named_and_nothing_is_leaked() {
    support::need_python();
    // No workloads: the pool is torn down after the failure.
    let h = Harness::start("", "").await;
    h.write_config(&kbg_yaml(
        &h,
        &[("gamma", "v1.33.1", 3, BETA_LABELS)],
        Some("gamma-1"),
    ));
    let client = h.client().await;

    let run = h
        .kbg(&["deploy-pool", "gamma", "--cleanup-on-failure", "-o", "json"])
        .await;
    run.expect_code(1);
    let report = run.json();
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], "gamma-1");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("exec: machine gamma-1: ") && reason.contains("no capacity in rack 3"),
        "one line naming the machine and the plugin's words: {reason}"
    );
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("gamma-1"), "{errors:?}");
    assert_eq!(report["nodes_ready"], 2);
    // The failed machine exists nowhere: not at the plugin, not as a node.
    assert_eq!(records(&h, "gamma"), ["gamma-0", "gamma-2"]);
    let nodes: Vec<String> = support::pool_nodes(&client, "gamma")
        .await
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(nodes, ["gamma-0", "gamma-2"]);

    // The machines that did come up belong to the pool: teardown takes them.
    let run = h.kbg(&["teardown", "gamma", "-o", "json"]).await;
    run.expect_code(0);
    assert!(records(&h, "gamma").is_empty());
    assert!(support::pool_nodes(&client, "gamma").await.is_empty());
}
