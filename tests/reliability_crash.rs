//! Issue 8, item 1: kbg killed anywhere loses nothing, and the same command run again
//! finishes the job.

mod common;
mod rel;

use common::{Harness, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

/// `pods_evicted` of the migration's record in kbg's state, if there is one.
async fn recorded_evictions(h: &Harness, key: &str) -> Option<u64> {
    let state: Api<ConfigMap> = Api::namespaced(h.client().await, "kube-system");
    let cm = state.get_opt("kbg-state").await.ok()??;
    let raw = cm.data?.get(key)?.clone();
    let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
    v["pods_evicted"].as_u64()
}

/// A run killed in the middle of a batch keeps the count of what it evicted: the record
/// follows the evictions as they happen (not only after each batch), so the summary of
/// the rerun counts every pod over both runs — all but the evictions of the last moment
/// before the kill, which the test measures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_midway_keeps_its_count_of_evictions() {
    let h = Harness::start(rel::MIGRATION, common::ALPHA_BETA).await;
    rel::open_beta(&h).await;
    let key = "migrate.alpha.beta";
    // One batch holds every node: before the fix, nothing was counted until it ended.
    let mut child = h
        .command(&["migrate", "alpha", "beta", "--batch-size", "100%"])
        .spawn()
        .unwrap();
    let seen = wait_for(
        "the record to count 4 evictions of the running batch",
        120,
        || async {
            let recorded = recorded_evictions(&h, key).await?;
            let sent = rel::evictions(&h);
            (recorded >= 4 && recorded as usize == sent && sent < 12).then_some(recorded)
        },
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let at_kill = rel::evictions(&h) as u64;
    let recorded = recorded_evictions(&h, key).await.unwrap();
    assert!(recorded >= seen);
    let run = h
        .kbg(&[
            "migrate",
            "alpha",
            "beta",
            "--batch-size",
            "100%",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(0);
    rel::assert_migrated(&h, "alpha", "beta").await;
    let evicted = h.sim.stats().evictions_allowed;
    let total = run.json()["total_pods_evicted"].as_u64().unwrap();
    let lost = at_kill - recorded;
    eprintln!(
        "killed mid-batch after {at_kill} evictions, {recorded} recorded; the rerun's summary counts {total} of the {evicted} evictions ({lost} lost in the last moment before the kill)"
    );
    assert_eq!(total + lost, evicted);
}

/// The record of the migration, if there is one.
async fn record(h: &Harness, key: &str) -> Option<serde_json::Value> {
    let state: Api<ConfigMap> = Api::namespaced(h.client().await, "kube-system");
    let cm = state.get_opt("kbg-state").await.ok()??;
    let raw = cm.data?.get(key)?.clone();
    serde_json::from_str(&raw).ok()
}

/// Killed while it waits for the moved workloads to be Ready again after the last batch,
/// the rerun still waits for them: when it says done, every workload is back at its
/// desired Ready replicas, as after an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_waiting_for_ready_the_rerun_still_waits() {
    // Replacements take a minute (two wall seconds) to be Ready.
    let scenario = rel::MIGRATION.replace("startup_seconds: 20", "startup_seconds: 60");
    let h = Harness::start(&scenario, common::ALPHA_BETA).await;
    rel::open_beta(&h).await;
    let key = "migrate.alpha.beta";
    let mut child = h
        .command(&["migrate", "alpha", "beta", "--batch-size", "100%"])
        .spawn()
        .unwrap();
    wait_for("every source node drained", 120, || async {
        let r = record(&h, key).await?;
        (r["drained"].as_array()?.len() == 3 && r["phase"] != "done").then_some(())
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let run = h
        .kbg(&["migrate", "alpha", "beta", "--batch-size", "100%"])
        .await;
    run.expect_code(0);
    // At once, no waiting: the rerun said done.
    rel::assert_migrated(&h, "alpha", "beta").await;
}
