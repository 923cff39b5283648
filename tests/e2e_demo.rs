//! `kbg demo` and `kbg sim serve`, through the real binary.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{kbg_bin, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_replaces_the_pool_and_reports_it() {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(kbg_bin())
            .args(["demo", "--speed", "30", "-o", "json"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the demo ends")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["pdb_violations"], 0);
    assert_eq!(report["nodes_added"], 4);
    assert_eq!(report["nodes_removed"], 4);
    assert!(report["pods_evicted"].as_u64().unwrap() >= 18, "{report}");
    assert!(report["cluster_seconds"].as_f64().unwrap() > report["wall_seconds"].as_f64().unwrap());
    for w in report["workloads"].as_array().unwrap() {
        assert_eq!(w["ready"], w["desired"], "{w}");
        assert_eq!(
            w["pods_by_pool"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["beta"],
            "{w}"
        );
    }
    assert!(
        report["by_hand"][0]
            .as_str()
            .unwrap()
            .starts_with("kbg sim serve")
    );
    for step in [
        "step 1/3: kbg deploy-pool beta",
        "step 2/3: kbg migrate alpha beta",
        "step 3/3: kbg teardown alpha",
    ] {
        assert!(stderr.contains(step), "{stderr}");
    }
    println!(
        "demo: {} pods evicted, {:.0} cluster s in {:.1} wall s, {} kbg requests",
        report["pods_evicted"],
        report["cluster_seconds"].as_f64().unwrap(),
        report["wall_seconds"].as_f64().unwrap(),
        report["kbg_requests"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_runs_the_demo_cluster_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo/scenario.yaml");
    let serve = tokio::process::Command::new(kbg_bin())
        .args([
            "sim",
            "serve",
            "--scenario",
            scenario,
            "--speed",
            "30",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("the kubeconfig", 60, || async {
        kubeconfig.exists().then_some(())
    })
    .await;
    let status = tokio::process::Command::new(kbg_bin())
        .args([
            "status",
            "-o",
            "json",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo/kbg.yaml"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("KBG_CLOCK_SPEED", "30")
        .output()
        .await
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let alpha = report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alpha")
        .unwrap()
        .clone();
    assert_eq!(alpha["nodes"], 4, "{alpha}");
    assert_eq!(alpha["ready"], 4);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(serve.id().unwrap() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), serve.wait_with_output())
        .await
        .expect("serve stops on SIGTERM")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("export KUBECONFIG="));
}
