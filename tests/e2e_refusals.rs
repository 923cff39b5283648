//! What kbg refuses, and that a refusal touches nothing: blockers (unreplicated and
//! emptyDir pods) with and without their flags, teardown with pods left or a
//! control-plane node, `--dry-run`, and bad input (exit 2, one line, no write).

mod common;

use common::Harness;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

const SCENARIO: &str = r#"
version: v1.33.1
pools:
  - name: alpha
    count: 2
    version: v1.32.4
  - name: beta
    count: 2
workloads:
  - kind: Deployment
    name: web
    replicas: 4
    node_selector: {kbg.io/pool: alpha}
    pdb: {max_unavailable: 1}
  - kind: Pod
    name: lonely
    node_selector: {kbg.io/pool: alpha}
  - kind: Deployment
    name: scratch
    replicas: 1
    empty_dir: true
    node_selector: {kbg.io/pool: alpha}
"#;

const KBG_YAML: &str = r#"
pools:
  alpha:
    provider: sim
    version: v1.32.4
    count: 2
  beta:
    provider: sim
    version: v1.33.1
    count: 2
  masters:
    provider: sim
    selector: node-role.kubernetes.io/control-plane
"#;

/// The node selectors pin the starting pods to alpha; they must move anyway, so lift
/// them by pointing them at no pool in particular: the scenario's Deployments select
/// `kbg.io/pool=alpha` only to land there first. Here the pods stay pinned, so migrate
/// would find no room: the tests that migrate use a scenario without pins.
const MOVABLE: &str = r#"
version: v1.33.1
pools:
  - name: alpha
    count: 2
    version: v1.32.4
  - name: beta
    count: 2
    cordoned: true
workloads:
  - kind: Deployment
    name: web
    replicas: 4
    pdb: {max_unavailable: 1}
  - kind: Pod
    name: lonely
  - kind: Deployment
    name: scratch
    replicas: 1
    empty_dir: true
"#;

async fn uncordon(client: &kube::Client, node: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreplicated_and_emptydir_pods_block_without_their_flags() {
    // beta starts cordoned so every pod lands on alpha; then it is opened for the move.
    let h = Harness::start(MOVABLE, KBG_YAML).await;
    let client = h.client().await;
    uncordon(&client, "beta-0").await;
    uncordon(&client, "beta-1").await;

    // Without flags: both blockers named, one line each, nothing written.
    let run = h.kbg(&["migrate", "alpha", "beta"]).await;
    run.expect_code(1);
    let errors = run.error_lines().join("\n");
    assert!(errors.contains("pod default/lonely"), "{errors}");
    assert!(errors.contains("--force"), "{errors}");
    assert!(
        errors.contains("emptyDir") && errors.contains("--delete-emptydir-data"),
        "{errors}"
    );
    assert!(h.kbg_writes().is_empty(), "{:?}", h.kbg_writes());

    // --force alone: the emptyDir pod still blocks.
    let run = h.kbg(&["migrate", "alpha", "beta", "--force"]).await;
    run.expect_code(1);
    let errors = run.error_lines().join("\n");
    assert!(!errors.contains("pod default/lonely"), "{errors}");
    assert!(errors.contains("--delete-emptydir-data"), "{errors}");
    // --delete-emptydir-data alone: the bare pod still blocks.
    let run = h
        .kbg(&["migrate", "alpha", "beta", "--delete-emptydir-data"])
        .await;
    run.expect_code(1);
    assert!(run.error_lines().join("\n").contains("pod default/lonely"));
    assert!(h.kbg_writes().is_empty(), "refusals write nothing");

    // Both flags: everything moves (the bare pod is gone for good, as kubectl's --force).
    let run = h
        .kbg(&[
            "migrate",
            "alpha",
            "beta",
            "--force",
            "--delete-emptydir-data",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(0);
    let pods: Api<Pod> = Api::all(client.clone());
    let left: Vec<String> = pods
        .list(&ListParams::default().labels("app"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| n.starts_with("alpha-"))
        })
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert!(left.is_empty(), "still on alpha: {left:?}");
    assert!(
        pods.get_opt("lonely").await.unwrap().is_none(),
        "the unreplicated pod was evicted"
    );
    assert!(
        h.kbg_requests()
            .iter()
            .any(|e| e.subresource == "eviction" && e.name == "lonely")
    );
    assert_eq!(h.sim.stats().pdb_violations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let h = Harness::start(MOVABLE, KBG_YAML).await;
    let client = h.client().await;
    uncordon(&client, "beta-0").await;
    uncordon(&client, "beta-1").await;
    let run = h
        .kbg(&[
            "migrate",
            "alpha",
            "beta",
            "--dry-run",
            "--force",
            "--delete-emptydir-data",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(0);
    let plan = run.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["batches"],
        serde_json::json!([["alpha-0"], ["alpha-1"]])
    );
    assert_eq!(plan["pods_to_evict"], 6, "{plan}");
    assert_eq!(plan["blockers"], serde_json::json!([]));
    // Without flags it prints the blockers and exits 1, still touching nothing.
    let run = h
        .kbg(&[
            "migrate",
            "alpha",
            "beta",
            "--dry-run",
            "--batch-size",
            "100%",
        ])
        .await;
    run.expect_code(1);
    assert!(
        run.stdout.contains("batch 1: alpha-0, alpha-1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("BLOCKED"), "{}", run.stdout);
    // Without any kbg.yaml, pools are the nodes labelled kbg.io/pool=<name>.
    let out = h
        .command(&[
            "migrate",
            "alpha",
            "beta",
            "--dry-run",
            "--force",
            "--delete-emptydir-data",
            "-o",
            "json",
        ])
        .env_remove("KBG_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["batches"],
        serde_json::json!([["alpha-0"], ["alpha-1"]])
    );
    assert!(!h.kbg_requests().is_empty(), "it did read");
    assert!(
        h.kbg_writes().is_empty(),
        "a dry run wrote: {:?}",
        h.kbg_writes()
    );
    let nodes: Api<Node> = Api::all(client);
    for n in ["alpha-0", "alpha-1"] {
        assert_ne!(
            nodes.get(n).await.unwrap().spec.unwrap().unschedulable,
            Some(true)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_refuses_with_pods_left_and_never_touches_the_control_plane() {
    let h = Harness::start(SCENARIO, KBG_YAML).await;
    let client = h.client().await;
    let nodes: Api<Node> = Api::all(client.clone());

    let run = h.kbg(&["teardown", "alpha"]).await;
    run.expect_code(1);
    let errors = run.error_lines().join("\n");
    assert!(
        errors.contains("still runs") && errors.contains("default/lonely"),
        "{errors}"
    );
    assert!(errors.contains("nothing was changed"), "{errors}");
    assert!(h.kbg_writes().is_empty(), "{:?}", h.kbg_writes());

    for flags in [
        &["teardown", "masters"][..],
        &["teardown", "masters", "--force"],
    ] {
        let run = h.kbg(flags).await;
        run.expect_code(1);
        let errors = run.error_lines().join("\n");
        assert!(errors.contains("control-plane"), "{errors}");
    }
    assert!(h.kbg_writes().is_empty(), "{:?}", h.kbg_writes());
    let cp = nodes.get("control-plane-0").await.unwrap();
    assert_ne!(cp.spec.unwrap().unschedulable, Some(true));

    // --force deletes a pool with pods on it, and still no control-plane node.
    let run = h.kbg(&["teardown", "alpha", "--force", "-o", "json"]).await;
    run.expect_code(0);
    assert!(!run.json()["pods_left"].as_array().unwrap().is_empty());
    assert!(nodes.get_opt("alpha-0").await.unwrap().is_none());
    assert!(nodes.get_opt("control-plane-0").await.unwrap().is_some());
    for e in h.kbg_writes() {
        assert!(
            !e.name.starts_with("control-plane"),
            "touched the control plane: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_exit_2_one_line_and_no_write() {
    let h = Harness::start(SCENARIO, KBG_YAML).await;
    let bad_version = KBG_YAML.replace("version: v1.33.1", "version: v1.3x");
    let too_new = KBG_YAML.replace("version: v1.33.1", "version: v1.34.0");
    let bad_provider = KBG_YAML.replace(
        "count: 2\n  masters",
        "count: 2\n    sim: {capacity: {cpu: lots}}\n  masters",
    );
    let cases: Vec<(Option<&str>, Vec<&str>, &str)> = vec![
        (
            Some(&bad_version),
            vec!["deploy-pool", "beta"],
            "pools.beta.version",
        ),
        (Some(&bad_version), vec!["status"], "pools.beta.version"),
        (
            Some(KBG_YAML),
            vec!["deploy-pool", "gamma"],
            "pool \"gamma\" is not defined",
        ),
        (
            Some(KBG_YAML),
            vec!["migrate", "alpha", "gamma"],
            "pool \"gamma\" is not defined",
        ),
        (
            Some(KBG_YAML),
            vec!["teardown", "gamma"],
            "pool \"gamma\" is not defined",
        ),
        (
            Some(KBG_YAML),
            vec!["migrate", "alpha", "alpha"],
            "both \"alpha\"",
        ),
        (
            Some(KBG_YAML),
            vec!["migrate", "Alpha", "beta"],
            "pool name \"Alpha\"",
        ),
        (
            Some(&too_new),
            vec!["deploy-pool", "beta"],
            "is newer than kube-apiserver v1.33.1",
        ),
        (
            Some(&bad_provider),
            vec!["deploy-pool", "beta"],
            "pools.beta.sim.capacity.cpu",
        ),
        (Some("pools: [\n"), vec!["status"], "is not valid YAML"),
        (
            Some(KBG_YAML),
            vec!["deploy-pool", "masters"],
            "pools.masters.selector",
        ),
        (
            Some(KBG_YAML),
            vec!["migrate", "alpha", "beta", "--pod-selector", "a in b"],
            "--pod-selector",
        ),
        (
            Some(KBG_YAML),
            vec!["migrate", "alpha", "beta", "--batch-size", "0"],
            "--batch-size",
        ),
        (
            Some(KBG_YAML),
            vec!["--clock-speed", "0", "status"],
            "--clock-speed",
        ),
    ];
    for (config, args, says) in cases {
        if let Some(c) = config {
            h.write_config(c);
        }
        let run = h.kbg(&args).await;
        run.expect_code(2);
        let errors = run.error_lines();
        let clap_error = run.stderr.starts_with("error: invalid value");
        assert!(
            errors.len() == 1 || clap_error,
            "{args:?}: one line, got:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(
            h.kbg_writes().is_empty(),
            "{args:?} wrote: {:?}",
            h.kbg_writes()
        );
    }
    // A file with several problems names each, one line each.
    h.write_config("pools:\n  beta:\n    provider: gce\n    version: x\n    count: 0\n");
    let run = h.kbg(&["deploy-pool", "beta"]).await;
    run.expect_code(2);
    assert_eq!(run.error_lines().len(), 3, "{}", run.stderr);
    assert!(h.kbg_requests().iter().all(|e| !common::is_write(&e.verb)));
}
