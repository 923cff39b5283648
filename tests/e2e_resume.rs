//! Interrupted and concurrent runs: SIGKILL during migrate then rerun, Ctrl-C, two
//! migrates at once, and a Lease abandoned by a kbg on another host.

mod common;

use std::time::Duration;

use common::{Harness, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};

/// A migration that takes a while: slow start-ups behind tight PDBs.
const SCENARIO: &str = r#"
version: v1.33.1
pools:
  - name: alpha
    count: 3
    version: v1.32.4
  - name: beta
    count: 3
workloads:
  - kind: Deployment
    name: web
    replicas: 9
    startup_seconds: 20
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 3
    startup_seconds: 15
    pdb: {min_available: 2}
  - kind: DaemonSet
    name: agent
"#;

/// beta exists from the start (the scenario's pool): only the migration is under test.
const KBG_YAML: &str = common::ALPHA_BETA;

const SPEED: f64 = 20.0;

/// Start the cluster with every workload on alpha: beta's nodes start cordoned, and are
/// opened once the workloads settled.
async fn start() -> Harness {
    let scenario = SCENARIO.replace(
        "  - name: beta\n    count: 3\n",
        "  - name: beta\n    count: 3\n    cordoned: true\n",
    );
    let h = Harness::start_at(&scenario, KBG_YAML, SPEED).await;
    let client = h.client().await;
    let nodes: Api<Node> = Api::all(client);
    for n in ["beta-0", "beta-1", "beta-2"] {
        nodes
            .patch(
                n,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": null}})),
            )
            .await
            .unwrap();
    }
    h
}

async fn evictions(h: &Harness) -> usize {
    h.kbg_requests()
        .iter()
        .filter(|e| e.subresource == "eviction" && e.code == 201)
        .count()
}

/// The end state every run of migrate alpha beta must reach.
async fn assert_migrated(h: &Harness) {
    let client = h.client().await;
    let pods: Api<Pod> = Api::all(client.clone());
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let owner = p
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.kind.clone());
        if matches!(owner.as_deref(), Some("ReplicaSet" | "StatefulSet")) {
            let node = p.spec.unwrap().node_name.unwrap_or_default();
            assert!(node.starts_with("beta-"), "{:?} on {node}", p.metadata.name);
            assert!(
                p.status
                    .unwrap()
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
                "{:?} not Ready",
                p.metadata.name
            );
        }
    }
    let nodes: Api<Node> = Api::all(client);
    for n in nodes
        .list(&ListParams::default().labels("kbg.io/pool=alpha"))
        .await
        .unwrap()
        .items
    {
        assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
        let note = n.metadata.annotations.unwrap_or_default();
        assert!(
            note.get("kbg.io/cordoned")
                .is_some_and(|v| v.contains("migrate.alpha.beta")),
            "{:?} is cordoned without kbg's record of why",
            n.metadata.name
        );
    }
    let stats = h.sim.stats();
    assert_eq!(stats.pdb_violations, 0, "{:?}", stats.pdbs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_migrate_then_rerun_finishes_the_same() {
    let h = start().await;
    // Kill at two points: early (after the first evictions) and late (mid second node).
    for after in [2, 8] {
        let mut child = h.command(&["migrate", "alpha", "beta"]).spawn().unwrap();
        wait_for(&format!("{after} evictions"), 120, || async {
            (evictions(&h).await >= after).then_some(())
        })
        .await;
        child.start_kill().unwrap(); // SIGKILL
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), None, "killed by a signal");
        println!("killed after {} evictions", evictions(&h).await);
    }
    // Rerun at once: the dead holder's Lease is taken over (same host, process gone).
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_migrated(&h).await;
    // Each of the 12 pods was evicted exactly once over the three runs: a rerun never
    // evicts a pod that already moved.
    assert_eq!(h.sim.stats().evictions_allowed, 12);
    // And once more: nothing left to do.
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["pods_evicted"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrates_at_once_the_second_refuses_naming_the_holder() {
    let h = start().await;
    let client = h.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let first = h.command(&["migrate", "alpha", "beta"]).spawn().unwrap();
    let pid = first.id().unwrap();
    wait_for("the first migrate to hold pool alpha", 60, || async {
        leases
            .get_opt("kbg-pool-alpha")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| h.contains(&format!("pid {pid}")))
    })
    .await;
    let second = h.command(&["migrate", "alpha", "beta"]).spawn().unwrap();
    let second_pid = second.id().unwrap();
    let out = second.wait_with_output().await.unwrap();
    let errors = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("pool alpha is in use by tester@")
            && errors.contains(&format!("pid {pid}: kbg migrate alpha beta")),
        "{errors}"
    );
    assert!(errors.contains("nothing was changed"), "{errors}");
    // The second read, and wrote nothing at all.
    let second_ua = format!("(pid {second_pid})");
    assert!(
        h.kbg_requests()
            .iter()
            .any(|e| e.user_agent.contains(&second_ua))
    );
    let second_writes: Vec<_> = h
        .kbg_writes()
        .into_iter()
        .filter(|e| e.user_agent.contains(&second_ua))
        .collect();
    assert!(second_writes.is_empty(), "{second_writes:?}");
    let out = first.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_migrated(&h).await;
    // The Lease is free again.
    let lease = leases.get("kbg-pool-alpha").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_elsewhere_refuses_until_it_expires() {
    let h = start().await;
    let client = h.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = |renewed: jiff::Timestamp| -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "kbg-pool-beta",
                "namespace": "kube-system",
                "annotations": {
                    "kbg.io/holder-host": "bastion",
                    "kbg.io/holder-pid": "4242",
                    "kbg.io/holder-command": "kbg deploy-pool beta"
                }
            },
            "spec": {
                "holderIdentity": "alice@bastion pid 4242: kbg deploy-pool beta",
                "leaseDurationSeconds": 15,
                "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            }
        }))
        .unwrap()
    };
    leases
        .create(&PostParams::default(), &lease(jiff::Timestamp::now()))
        .await
        .unwrap();
    let run = h.kbg(&["migrate", "alpha", "beta"]).await;
    run.expect_code(1);
    let errors = run.error_lines().join("\n");
    assert!(
        errors.contains("alice@bastion pid 4242: kbg deploy-pool beta"),
        "{errors}"
    );
    assert!(errors.contains("expires in"), "{errors}");
    assert!(
        h.kbg_writes().iter().all(|e| e.resource == "leases"),
        "{:?}",
        h.kbg_writes()
    );

    // The holder vanished a minute ago: the Lease has expired and is taken over.
    let mut stale = leases.get("kbg-pool-beta").await.unwrap();
    stale.spec = lease(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60)).spec;
    leases
        .replace("kbg-pool-beta", &PostParams::default(), &stale)
        .await
        .unwrap();
    let run = h.kbg(&["migrate", "alpha", "beta"]).await;
    run.expect_code(0);
    assert_migrated(&h).await;
    let taken = leases.get("kbg-pool-beta").await.unwrap().spec.unwrap();
    assert_eq!(taken.lease_transitions, Some(1), "taken over once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_and_a_rerun_continues() {
    let h = start().await;
    let child = h.command(&["migrate", "alpha", "beta"]).spawn().unwrap();
    let pid = child.id().unwrap() as i32;
    wait_for("a first eviction", 120, || async {
        (evictions(&h).await >= 1).then_some(())
    })
    .await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kbg stops after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted by Ctrl-C"), "{stderr}");
    let client = h.client().await;
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    for pool in ["alpha", "beta"] {
        let l = leases.get(&format!("kbg-pool-{pool}")).await.unwrap();
        assert_eq!(
            l.spec.unwrap().holder_identity,
            None,
            "{pool}'s Lease released"
        );
    }
    h.kbg(&["migrate", "alpha", "beta"]).await.expect_code(0);
    assert_migrated(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_a_migration_that_a_rerun_finishes_and_the_final_soak_resumes() {
    let h = start().await;
    let client = h.client().await;
    let state: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "kube-system");
    let phase = || async {
        let cm = state.get_opt("kbg-state").await.ok()??;
        let raw = cm.data?.get("migrate.alpha.beta")?.clone();
        let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
        v["phase"].as_str().map(String::from)
    };

    // 1. The overall deadline passes mid-drain: exit 1, the reason recorded.
    let run = h
        .kbg(&["migrate", "alpha", "beta", "--timeout", "20s"])
        .await;
    run.expect_code(1);
    let errors = run.error_lines().join("\n");
    assert!(
        errors.contains("--timeout 20s passed") && errors.contains("run the same command again"),
        "{errors}"
    );
    assert_eq!(phase().await.as_deref(), Some("failed"));
    let status = h.kbg(&["status", "-o", "json"]).await;
    status.expect_code(0);
    let ops = status.json()["operations"].clone();
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["key"] == "migrate.alpha.beta" && o["phase"] == "failed"),
        "{ops}"
    );

    // 2. Rerun with a final soak; kill it during the soak.
    let mut child = h
        .command(&["migrate", "alpha", "beta", "--final-soak", "2m"])
        .spawn()
        .unwrap();
    wait_for("the final soak", 120, || async {
        (phase().await.as_deref() == Some("final-soak")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // 20 cluster seconds of soak pass
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // 3. The rerun waits only what is left of the soak.
    let run = h
        .kbg(&[
            "migrate",
            "alpha",
            "beta",
            "--final-soak",
            "2m",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(0);
    let report = run.json();
    let left = report["final_soak_seconds"].as_f64().unwrap();
    assert!(left < 110.0, "the soak started over: {report}");
    assert_eq!(phase().await.as_deref(), Some("done"));
    assert_migrated(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_deploy_pool_and_teardown_then_rerun() {
    let config = format!(
        "{}  gamma:\n    provider: sim\n    version: v1.33.1\n    count: 4\n    sim: {{boot_seconds: 30}}\n",
        common::ALPHA_BETA
    );
    let h = Harness::start_at("", &config, SPEED).await;
    let client = h.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let created = |h: &Harness| {
        h.kbg_requests()
            .iter()
            .filter(|e| e.resource == "nodes" && e.verb == "create" && e.code == 201)
            .count()
    };
    // deploy-pool: killed once the first machine exists, while it waits for Ready.
    let mut child = h.command(&["deploy-pool", "gamma"]).spawn().unwrap();
    wait_for("a first machine", 60, || async {
        (created(&h) >= 1).then_some(())
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    h.kbg(&["deploy-pool", "gamma"]).await.expect_code(0);
    let gamma = nodes
        .list(&ListParams::default().labels("kbg.io/pool=gamma"))
        .await
        .unwrap();
    let mut names: Vec<String> = gamma
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["gamma-0", "gamma-1", "gamma-2", "gamma-3"],
        "none doubled, none lost"
    );
    assert_eq!(created(&h), 4, "each machine created once");

    // teardown: killed after the first node is deleted.
    let deleted = |h: &Harness| {
        h.kbg_requests()
            .iter()
            .filter(|e| e.resource == "nodes" && e.verb == "delete")
            .count()
    };
    let mut child = h.command(&["teardown", "gamma"]).spawn().unwrap();
    wait_for("a first node deleted", 60, || async {
        (deleted(&h) >= 1).then_some(())
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let run = h.kbg(&["teardown", "gamma", "-o", "json"]).await;
    run.expect_code(0);
    assert!(
        nodes
            .list(&ListParams::default().labels("kbg.io/pool=gamma"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(nodes.get_opt("control-plane-0").await.unwrap().is_some());
}
