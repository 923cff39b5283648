//! Issue 8, item 7: every wait has a deadline and a message naming what it waited for.
//!
//! Each wait of kbg's that can hang is driven into hanging here, and must end with exit 1
//! and a message naming the thing, within its deadline:
//!
//! | wait | deadline | test |
//! | --- | --- | --- |
//! | an API request (any) | `--request-timeout`, per attempt, × the retry layer's attempts | [`an_api_server_that_stops_answering`] |
//! | a provider call (exec plugin) | `exec.timeout_secs`, one attempt | [`a_provider_that_never_answers`] |
//! | deploy-pool: the new nodes Ready | `--timeout` | [`a_node_that_never_becomes_ready`] |
//! | migrate: one node's drain (a PDB refusing) | `--drain-timeout` | [`a_pdb_that_never_allows`] |
//! | migrate: the moved workloads Ready | `--ready-timeout` | [`workloads_that_never_become_ready`] |
//! | migrate: the whole command | `--timeout` | [`a_migration_past_its_timeout`] |
//! | teardown: the deleted nodes gone | `--timeout` | [`a_node_that_never_goes_away`] |
//! | the Lease renewal (while any command runs) | 15 s of failed renewals, each within `--request-timeout` | [`an_api_server_that_stops_answering_mid_migration`] |
//!
//! Elsewhere: taking a Lease never waits (a held Lease is exit 1 naming its holder at
//! once, `reliability_concurrency.rs`); a master's upgrade waits `master_timeout`
//! (`e2e_control_plane.rs`, a kubelet that does not come back); the soaks are sleeps of
//! their own length and cannot hang; flushing Events at exit waits 5 s at most; the AWS provider's waiters by `aws.wait_timeout_secs`, the Juju
//! provider's commands by `juju.command_timeout_secs`, the metal provider's SSH by
//! `metal.connect_timeout_seconds` (each provider's own tests).

mod common;
mod rel;

use std::time::{Duration, Instant};

use common::Harness;

/// The API server stops answering (connections stay open, nothing comes back): each
/// command ends with exit 1 naming the API server and the request timeout, instead of
/// waiting forever (kube's client has no read timeout by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_stops_answering() {
    let h = Harness::start("", common::ALPHA_BETA).await;
    let proxy = rel::Proxy::start(h.sim.addr()).await;
    let kubeconfig = h.path().join("kubeconfig-proxy");
    std::fs::write(&kubeconfig, proxy.kubeconfig(&h.sim)).unwrap();
    // Through the proxy, while it passes: fine.
    let run = h
        .command(&["status"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KBG_REQUEST_TIMEOUT", "1s")
        .output()
        .await
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    proxy.go_silent();
    let started = Instant::now();
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        h.command(&["status"])
            .env("KUBECONFIG", &kubeconfig)
            .env("KBG_REQUEST_TIMEOUT", "1s")
            .output(),
    )
    .await
    .expect("kbg status against a silent API server ends")
    .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the API server did not answer within 1s (--request-timeout)"),
        "{stderr}"
    );
    eprintln!(
        "silent API server: `kbg status` ended with exit 1 after {:.1}s wall (request timeout 1s, {} attempts): {}",
        took.as_secs_f64(),
        kbg::retry::MAX_RETRIES + 1,
        stderr.trim()
    );
}

/// A migration well under way when the API server stops answering: the drain, the Lease
/// renewal and the state writes all stop getting answers; kbg ends with exit 1 naming
/// that, within the request timeout × attempts of what is left to do, and a rerun once the
/// server is back finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_stops_answering_mid_migration() {
    let h = Harness::start(rel::MIGRATION, common::ALPHA_BETA).await;
    rel::open_beta(&h).await;
    let proxy = rel::Proxy::start(h.sim.addr()).await;
    let kubeconfig = h.path().join("kubeconfig-proxy");
    std::fs::write(&kubeconfig, proxy.kubeconfig(&h.sim)).unwrap();
    let child = h
        .command(&["migrate", "alpha", "beta"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KBG_REQUEST_TIMEOUT", "1s")
        .spawn()
        .unwrap();
    common::wait_for("a first eviction", 120, || async {
        (rel::evictions(&h) >= 1).then_some(())
    })
    .await;
    proxy.go_silent();
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("kbg migrate against a silent API server ends")
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    eprintln!(
        "silent API server mid-migration: exit 1 after {:.1}s wall: {}",
        took.as_secs_f64(),
        stderr.trim()
    );
    assert!(stderr.contains("did not answer within 1s"), "{stderr}");
    // Straight to the server again: the rerun finishes.
    h.kbg(&["migrate", "alpha", "beta"]).await.expect_code(0);
    rel::assert_migrated(&h, "alpha", "beta").await;
}

/// A provider that never answers: the exec provider's plugin sleeps on every request.
/// Each command ends with exit 1 naming the plugin, the operation and its deadline
/// (`exec.timeout_secs`), after one attempt: the deadline the user gave the provider is
/// the deadline, kbg does not multiply it by retrying. The plugin and what it started are
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers() {
    let h = Harness::start("", "").await;
    let calls = h.path().join("calls");
    let plugin = h.path().join("sleepy.sh");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho \"$$\" >> {}\nsleep 3600 &\nwait\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    h.write_config(&format!(
        "pools:\n  gamma:\n    provider: exec\n    version: v1.33.1\n    count: 2\n    exec:\n      program: {}\n      timeout_secs: 2\n      bootstrap: none\n",
        plugin.display()
    ));
    for (args, op) in [
        (&["deploy-pool", "gamma"][..], "provision"),
        (&["teardown", "gamma"], "list"),
    ] {
        let _ = std::fs::remove_file(&calls);
        let started = Instant::now();
        let run = h.kbg(args).await;
        let took = started.elapsed();
        run.expect_code(1);
        let said = run.error_lines().join("\n");
        assert!(
            said.contains(&format!(
                "plugin `{}` did not answer `{op}` within 2 s and was killed",
                plugin.display()
            )),
            "{said}"
        );
        let pids: Vec<i32> = std::fs::read_to_string(&calls)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(
            pids.len(),
            1,
            "kbg {args:?} asked the plugin {} times",
            pids.len()
        );
        for pid in &pids {
            common::wait_for("the plugin killed", 30, || async {
                let alive = rustix::process::Pid::from_raw(*pid)
                    .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
                (!alive).then_some(())
            })
            .await;
        }
        eprintln!(
            "provider that never answers: kbg {} exit 1 after {:.1}s wall, 1 request of 2 s: {said}",
            args.join(" "),
            took.as_secs_f64()
        );
    }
}

/// Run `args` with `kbg`, print what it said and how long it took (wall and the cluster
/// time it stood for), and return its error lines, after asserting exit 1.
async fn ends_with_exit_1(h: &Harness, what: &str, args: &[&str]) -> String {
    let started = Instant::now();
    let run = h.kbg(args).await;
    let took = started.elapsed();
    run.expect_code(1);
    let said = run.error_lines().join("\n");
    eprintln!(
        "{what}: kbg {} exit 1 after {:.1}s wall (~{:.0}s cluster time at speed {}): {said}",
        args.join(" "),
        took.as_secs_f64(),
        took.as_secs_f64() * common::SPEED,
        common::SPEED
    );
    said
}

/// A node that never becomes Ready: deploy-pool waits its `--timeout` for it, then ends
/// with exit 1 naming the machine, that it never became Ready, and the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_becomes_ready() {
    let h = Harness::start(
        "",
        "pools:\n  gamma:\n    provider: sim\n    version: v1.33.1\n    count: 2\n    sim:\n      boot_seconds: 5\n      never_ready: [gamma-1]\n",
    )
    .await;
    let said = ends_with_exit_1(
        &h,
        "node never Ready",
        &["deploy-pool", "gamma", "--timeout", "2m"],
    )
    .await;
    assert!(said.contains("gamma-1"), "{said}");
    assert!(!said.contains("gamma-0"), "{said}");
    assert!(
        said.contains("gamma-1: node gamma-1 registered but was not Ready within --timeout 2m0s"),
        "{said}"
    );
}

/// A PDB that never allows: once the migration is under way, web's PDB is raised to
/// `minAvailable: 9` (all of its replicas), so every eviction of a web pod is refused
/// from then on. The drain gives each node `--drain-timeout`, then kbg ends with exit 1
/// naming the node, the pods left, the PDB refusing them and the deadline; nothing is
/// evicted past the PDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_that_never_allows() {
    let h = Harness::start(rel::MIGRATION, common::ALPHA_BETA).await;
    let said = migrate_behind_a_frozen_pdb(&h, "--drain-timeout", "3m").await;
    assert!(said.contains("node alpha-0 timed out"), "{said}");
    assert!(said.contains("--drain-timeout 3m0s"), "{said}");
    assert!(said.contains("default/web"), "{said}");
    assert!(said.contains("PodDisruptionBudget default/web"), "{said}");
    assert_eq!(h.sim.stats().pdb_violations, 0);
    rel::assert_cordons_owned(&h, "PDB that never allows").await;
}

/// The whole migration past its `--timeout` (behind the same PDB, with the node's own
/// deadline far off): exit 1 naming the timeout, the migration, where the pools stand
/// and how to go on; the state records it as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_past_its_timeout() {
    let h = Harness::start(rel::MIGRATION, common::ALPHA_BETA).await;
    let said = migrate_behind_a_frozen_pdb(&h, "--timeout", "2m").await;
    assert!(
        said.contains(
            "--timeout 2m0s passed: migrate alpha -> beta stopped; alpha's nodes stay cordoned"
        ),
        "{said}"
    );
    assert_eq!(h.sim.stats().pdb_violations, 0);
    rel::assert_cordons_owned(&h, "migration past its timeout").await;
}

/// Start `migrate alpha beta FLAG VALUE`; once it has evicted a first pod, raise web's PDB
/// to `minAvailable: 9` (all its replicas: every eviction of a web pod is refused from
/// then on); return the error lines of the exit 1 it ends with, printing them with the
/// wall time it took from the PDB change.
async fn migrate_behind_a_frozen_pdb(h: &Harness, flag: &str, value: &str) -> String {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{Api, Patch, PatchParams};
    rel::open_beta(h).await;
    let child = h
        .command(&["migrate", "alpha", "beta", flag, value])
        .spawn()
        .unwrap();
    common::wait_for("a first eviction", 120, || async {
        (rel::evictions(h) >= 1).then_some(())
    })
    .await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(h.client().await, "default");
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"maxUnavailable": null, "minAvailable": 9}})),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("kbg migrate behind a PDB that never allows ends")
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    let said = said.join("\n");
    eprintln!(
        "PDB that never allows: kbg migrate alpha beta {flag} {value} exit 1 after {:.1}s wall from the PDB change: {said}",
        took.as_secs_f64()
    );
    said
}

/// Workloads that never become Ready again: once the migration is under way, somebody
/// cordons the target pool, so the pods kbg moves stay Pending. kbg waits
/// `--ready-timeout` for them after the batch, then ends with exit 1 naming the
/// workloads and the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_that_never_become_ready() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};
    // No PDBs: nothing but the Ready wait holds the migration back.
    let scenario = rel::MIGRATION
        .replace("    pdb: {max_unavailable: 1}\n", "")
        .replace("    pdb: {min_available: 2}\n", "");
    let h = Harness::start(&scenario, common::ALPHA_BETA).await;
    rel::open_beta(&h).await;
    let child = h
        .command(&["migrate", "alpha", "beta", "--ready-timeout", "2m"])
        .spawn()
        .unwrap();
    common::wait_for("a first eviction", 120, || async {
        (rel::evictions(&h) >= 1).then_some(())
    })
    .await;
    let nodes: Api<Node> = Api::all(h.client().await);
    for n in ["beta-0", "beta-1", "beta-2"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
            )
            .await
            .unwrap();
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("kbg migrate waiting on workloads that never become Ready ends")
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    let said = said.join("\n");
    eprintln!(
        "workloads never Ready: kbg migrate alpha beta --ready-timeout 2m exit 1 after {:.1}s wall from the target's cordon: {said}",
        took.as_secs_f64()
    );
    assert!(
        said.contains("not back at their desired Ready replicas after 2m0s (--ready-timeout"),
        "{said}"
    );
    assert!(
        said.contains("default/web") || said.contains("default/db"),
        "{said}"
    );
}

/// A node that never goes away: teardown deletes the pool's nodes, but one carries a
/// finalizer nobody removes. teardown waits its `--timeout` for them to be gone, then
/// ends with exit 1 naming the wait, the node still there and the deadline; the machine
/// is not deprovisioned under a node that still exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_goes_away() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};
    let h = Harness::start(
        "",
        "pools:\n  gamma:\n    provider: sim\n    version: v1.33.1\n    count: 2\n    sim:\n      boot_seconds: 5\n",
    )
    .await;
    h.kbg(&["deploy-pool", "gamma"]).await.expect_code(0);
    let nodes: Api<Node> = Api::all(h.client().await);
    nodes
        .patch(
            "gamma-0",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["example.com/hold"]}})),
        )
        .await
        .unwrap();
    let said = ends_with_exit_1(
        &h,
        "node never gone",
        &["teardown", "gamma", "--timeout", "2m"],
    )
    .await;
    assert!(
        said.contains("timed out after 2m0s (cluster time) waiting for the deleted nodes of pool gamma to be gone: gamma-0 still there (finalizers: example.com/hold)"),
        "{said}"
    );
    // Its machine is not deprovisioned under it (the sim provider's machine is the node).
    assert_eq!(
        rel::sim_machines(&h, "gamma").await,
        [("gamma-0".to_string(), "kbg-sim://gamma/gamma-0".to_string())]
    );
}
