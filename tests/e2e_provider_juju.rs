//! The Juju provider end to end: `kbg deploy-pool` → `migrate` → `teardown` through the
//! real binary, against the `juju` test double (`providers/juju/tests/fake-juju/juju`, a
//! Python script documented as a double, not Juju) and the simulated cluster.
//!
//! The double keeps its model in a file, registers each unit as a Node when it becomes
//! active, as the worker charm's kubelet would, and runs the charm's `pause` action as the
//! charm does: `kubectl drain` through the Eviction API. The source pool asks for the
//! charm's own hand-over (`use_charm_pause: true`), so the workloads are moved by the
//! double's evictions and kbg only confirms; the double's model is the machines at the
//! provider.

mod common;
mod support;

use std::path::{Path, PathBuf};

use common::{Harness, watch_pdbs};
use serde_json::{Value, json};

fn double() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/juju/tests/fake-juju/juju")
}

/// Point the double at the simulated cluster (units register as nodes there) with
/// `extra` knobs, in `<harness>/juju`, and return that directory.
fn model(h: &Harness, extra: Value) -> PathBuf {
    let dir = h.path().join("juju");
    std::fs::create_dir_all(&dir).unwrap();
    let cluster: Value =
        serde_json::from_str(&std::fs::read_to_string(support::cluster_json(h)).unwrap()).unwrap();
    let mut state = json!({
        "model": "k8s",
        "kubernetes": cluster,
        "eviction_retry_seconds": 0.2,
    });
    for (k, v) in extra.as_object().unwrap() {
        state[k] = v.clone();
    }
    std::fs::write(dir.join("fake-juju.json"), state.to_string()).unwrap();
    dir
}

fn state(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("fake-juju.json")).unwrap()).unwrap()
}

/// The units of application `app` in the double's model.
fn units(dir: &Path, app: &str) -> Vec<String> {
    let st = state(dir);
    let mut u: Vec<String> = st["applications"][app]["units"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    u.sort();
    u
}

/// Every command line the double was given, without `status` and `version`.
fn changes(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("fake-juju-calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let a = a.as_str().unwrap();
                    if a.contains("kbg-juju-config-") {
                        "<file>"
                    } else {
                        a
                    }
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.starts_with("status") && l != "version")
        .collect()
}

fn pool(name: &str, version: &str, count: usize, dir: &Path, extra: &str) -> String {
    format!(
        "  {name}:\n    provider: juju\n    version: {version}\n    count: {count}\n{extra}    juju:\n      juju: {}\n      data_dir: {}\n      model: k8s\n      poll_interval_secs: 0.05\n      wait_timeout_secs: 120\n      remove_timeout_secs: 120\n      action_timeout_secs: 300\n",
        double().display(),
        dir.display()
    )
}

/// Pools alpha (handed over with the charm's `pause`) and beta (tainted) of two units
/// each, deployed, alpha's workloads Ready on it; the double's model gets `extra`.
async fn two_pools_alpha_paused_by_the_charm(h: &Harness, extra: Value) -> (PathBuf, kube::Client) {
    let dir = model(h, extra);
    h.write_config(&format!(
        "pools:\n{}{}",
        pool("alpha", "v1.32.4", 2, &dir, "") + "      use_charm_pause: true\n",
        pool(
            "beta",
            "v1.33.1",
            2,
            &dir,
            "    taints: [\"dedicated=web:NoSchedule\"]\n"
        ),
    ));
    let client = h.client().await;
    h.kbg(&["deploy-pool", "alpha"]).await.expect_code(0);
    support::workloads_ready_on(&client, "alpha").await;
    h.kbg(&["deploy-pool", "beta"]).await.expect_code(0);
    (dir, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_migrate_teardown_handing_over_with_the_charms_pause() {
    support::need_python();
    let h = Harness::start(support::SCENARIO, "").await;
    let dir = model(&h, json!({}));
    h.write_config(&format!(
        "pools:\n{}{}",
        // The charm's own hand-over, when alpha is the source.
        pool("alpha", "v1.32.4", 2, &dir, "") + "      use_charm_pause: true\n",
        pool(
            "beta",
            "v1.33.1",
            2,
            &dir,
            "    labels: {tier: web}\n    taints: [\"dedicated=web:NoSchedule\"]\n"
        ),
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
        // Machine ↔ node by the unit machine's hostname, which the charm's kubelet
        // registers.
        assert!(
            m["node"].as_str().unwrap().starts_with("juju-4f2a1c-"),
            "{m}"
        );
    }
    for n in support::pool_nodes(&client, "beta").await {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["tier"], "web");
        let taints = n.spec.as_ref().unwrap().taints.clone().unwrap_or_default();
        assert!(taints.iter().any(|t| t.key == "dedicated"), "{taints:?}");
    }
    assert_eq!(units(&dir, "alpha"), ["alpha/0", "alpha/1"]);
    assert_eq!(units(&dir, "beta"), ["beta/0", "beta/1"]);

    let margins = watch_pdbs(client.clone());
    let before = h.sim.stats().evictions_allowed;
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let migrated = run.json();
    let alpha_nodes: Vec<Value> = migrated["source_nodes"].as_array().unwrap().clone();
    assert_eq!(migrated["handed_over"], Value::Array(alpha_nodes.clone()));
    // The charm's drain moved every pod; kbg's own drain found nothing left.
    assert_eq!(migrated["pods_evicted"], 0, "{migrated}");
    assert_eq!(
        h.sim.stats().evictions_allowed - before,
        support::PODS_TO_MOVE
    );
    let kbg_evictions = h
        .kbg_requests()
        .iter()
        .filter(|e| e.subresource == "eviction")
        .count();
    assert_eq!(kbg_evictions, 0, "the evictions were the charm's");
    let charm_evictions = h
        .sim
        .audit()
        .iter()
        .filter(|e| e.subresource == "eviction" && e.user_agent.starts_with("fake-juju/"))
        .count();
    assert!(charm_evictions >= support::PODS_TO_MOVE as usize);
    let pause: Vec<String> = changes(&dir)
        .into_iter()
        .filter(|l| l.contains(" pause "))
        .collect();
    assert_eq!(
        pause,
        [
            "run -m k8s --format=json --wait=300s alpha/0 pause delete-local-data=false force=false",
            "run -m k8s --format=json --wait=300s alpha/1 pause delete-local-data=false force=false"
        ],
        "one batch (one node) at a time; kbg's --delete-emptydir-data and --force reach the charm"
    );

    let run = h.kbg(&["teardown", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    let torn = run.json();
    assert_eq!(
        torn["machines_deprovisioned"],
        json!(["alpha-0", "alpha-1"]),
        "{torn}"
    );
    let margins = support::assert_moved(&h, &client, "alpha", "beta", &margins).await;
    assert!(
        state(&dir)["applications"].get("alpha").is_none(),
        "the alpha application is gone from the model"
    );
    assert!(changes(&dir).contains(&"remove-application -m k8s alpha --no-prompt".to_string()));
    assert_eq!(units(&dir, "beta"), ["beta/0", "beta/1"]);
    println!(
        "figures: juju: {} kbg requests, {charm_evictions} charm eviction requests ({} allowed in all), kbg evictions {kbg_evictions}, model units alpha {} beta {}, {} juju commands, PDB margins {margins:?}",
        h.kbg_requests().len(),
        h.sim.stats().evictions_allowed,
        units(&dir, "alpha").len(),
        units(&dir, "beta").len(),
        changes(&dir).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_fails_to_provision_is_named_removed_and_nothing_is_leaked() {
    support::need_python();
    let h = Harness::start("", "").await;
    let dir = model(&h, json!({"faults": {"provisioning": ["gamma/1"]}}));
    h.write_config(&format!(
        "pools:\n{}",
        pool("gamma", "v1.33.1", 3, &dir, "")
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
        reason.starts_with("juju: machine gamma-1: ")
            && reason.contains("no matching instance types"),
        "one line with the machine and Juju's words: {reason}"
    );
    assert_eq!(report["nodes_ready"], 2);
    assert!(
        changes(&dir).contains(&"remove-unit -m k8s gamma/1 --no-prompt".to_string()),
        "{:?}",
        changes(&dir)
    );
    // The failed unit is gone from the model once Juju is done removing it.
    let run = h.kbg(&["teardown", "gamma", "-o", "json"]).await;
    run.expect_code(0);
    assert!(units(&dir, "gamma").is_empty());
    assert!(state(&dir)["applications"].get("gamma").is_none());
    assert!(
        state(&dir)["machines"].as_object().unwrap().is_empty(),
        "no machine left in the model: {}",
        state(&dir)["machines"]
    );
    assert!(support::pool_nodes(&client, "gamma").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_charm_drain_stops_the_migration_with_its_words_and_a_rerun_finishes() {
    support::need_python();
    let h = Harness::start(support::SCENARIO, "").await;
    let (dir, client) =
        two_pools_alpha_paused_by_the_charm(&h, json!({"faults": {"actions": ["alpha/0"]}})).await;
    let margins = watch_pdbs(client.clone());

    let run = h.kbg(&["migrate", "alpha", "beta"]).await;
    run.expect_code(1);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("alpha-0") && errors[0].contains("kubectl drain failed"),
        "the machine and the charm's words: {errors:?}"
    );
    for n in support::pool_nodes(&client, "alpha").await {
        assert_eq!(
            n.spec.unwrap().unschedulable,
            Some(true),
            "alpha stays cordoned"
        );
    }
    // The operator fixes what made the charm fail and runs the same command again.
    let mut st = state(&dir);
    st["faults"] = json!({});
    std::fs::write(dir.join("fake-juju.json"), st.to_string()).unwrap();
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(
        run.json()["handed_over"].as_array().unwrap().len(),
        2,
        "{}",
        run.stdout
    );
    h.kbg(&["teardown", "alpha"]).await.expect_code(0);
    support::assert_moved(&h, &client, "alpha", "beta", &margins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_juju_block_on_the_source_is_exit_2_before_anything_is_written() {
    let h = Harness::start("", "").await;
    let dir = model(&h, json!({}));
    h.write_config(&format!(
        "pools:\n{}{}",
        pool("alpha", "v1.32.4", 2, &dir, "") + "      use_charm_pause: sometimes\n",
        pool("beta", "v1.33.1", 2, &dir, ""),
    ));
    let run = h.kbg(&["migrate", "alpha", "beta"]).await;
    run.expect_code(2);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("pools.alpha.juju.use_charm_pause"),
        "{errors:?}"
    );
    assert!(h.kbg_writes().is_empty(), "{:?}", h.kbg_writes());
    assert!(
        changes(&dir).is_empty(),
        "juju was not run: {:?}",
        changes(&dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_charm_handed_over_pool_resumes_its_units() {
    support::need_python();
    let h = Harness::start(support::SCENARIO, "").await;
    let (dir, client) = two_pools_alpha_paused_by_the_charm(&h, json!({})).await;
    let run = h
        .kbg(&["migrate", "alpha", "beta", "--dry-run", "-o", "json"])
        .await;
    run.expect_code(0);
    assert_eq!(run.json()["handed_over_by"], "juju", "{}", run.stdout);
    let run = h.kbg(&["migrate", "alpha", "beta", "--dry-run"]).await;
    assert!(
        run.stdout
            .contains("handed over by the juju provider's own drain"),
        "{}",
        run.stdout
    );
    assert!(
        !changes(&dir).iter().any(|l| l.contains(" pause ")),
        "a dry run asks the charm for nothing"
    );
    h.kbg(&["migrate", "alpha", "beta"]).await.expect_code(0);
    let paused = |dir: &Path| -> Vec<String> {
        let st = state(dir);
        let mut p: Vec<String> = st["applications"]["alpha"]["units"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, u)| u["paused"] == json!(true))
            .map(|(k, _)| k.clone())
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        paused(&dir),
        ["alpha/0", "alpha/1"],
        "the charm paused both"
    );

    let run = h.kbg(&["rollback", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(
        report["uncordoned"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(report["handed_back"], report["uncordoned"], "{report}");
    assert!(
        paused(&dir).is_empty(),
        "the charm's resume ran on both units"
    );
    let resumes: Vec<String> = changes(&dir)
        .into_iter()
        .filter(|l| l.contains(" resume"))
        .collect();
    assert_eq!(resumes.len(), 1, "one resume for the pool: {resumes:?}");
    assert!(
        resumes[0].contains("alpha/0") && resumes[0].contains("alpha/1"),
        "{resumes:?}"
    );
    for n in support::pool_nodes(&client, "alpha").await {
        assert_ne!(
            n.spec.unwrap().unschedulable,
            Some(true),
            "alpha is schedulable"
        );
    }
    // A second rollback has nothing left to undo and asks the charm for nothing.
    h.kbg(&["rollback", "alpha", "beta"]).await.expect_code(0);
    assert_eq!(
        changes(&dir)
            .iter()
            .filter(|l| l.contains(" resume"))
            .count(),
        1
    );
}
