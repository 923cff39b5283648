//! Issue 8, items 2 and 3: the API server and the providers fail, kbg still finishes and
//! loses nothing.
//!
//! - API faults at issue 8's rates (10 % 500, 5 % 429 with Retry-After, 5 % dropped
//!   connections), seeded: reads and writes go through kbg's one retry layer
//!   (`src/retry.rs`), evictions through the drain engine's one layer (`drain/evict.rs`),
//!   and no other layer retries underneath (kube's own is off): every eviction request
//!   in the audit log is one kbg's drain engine counted sending, and each pod's requests
//!   are one answer plus one per fault injected on them plus one per PDB refusal.

mod common;
mod rel;

use common::Harness;
use k8s_openapi::api::core::v1::Node;
use kbg_sim::Faults;
use kube::api::{Api, ListParams};

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
    replicas: 6
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 3
    pdb: {min_available: 2}
  - kind: DaemonSet
    name: agent
"#;

async fn pool_nodes(client: &kube::Client, pool: &str) -> Vec<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default().labels(&format!("kbg.io/pool={pool}")))
        .await
        .unwrap()
        .items
}

/// The drain engine's preflight reads (pods per node, PDBs, DaemonSets) each go through
/// the one retry layer: a third of the lists failing does not fail preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reads_survive_failing_lists() {
    let seed = rel::seed("preflight_reads_survive_failing_lists", 3);
    let h = Harness::start(SCENARIO, "").await;
    let client = h.client().await;
    let source = pool_nodes(&client, "alpha").await;
    let target = pool_nodes(&client, "beta").await;
    h.sim.set_faults(Faults {
        error_500: 0.20,
        error_429: 0.05,
        drop: 0.05,
        verbs: vec!["list".into()],
        seed,
        ..Faults::default()
    });
    let before = h.sim.audit().len();
    let opts = kbg::drain::DrainOptions {
        clock: kbg::clock::Clock::with_speed(h.speed).unwrap(),
        ..Default::default()
    };
    let report = kbg::preflight::preflight(&client, &source, &target, &opts).await;
    h.sim.set_faults(Faults::default());
    let audit = h.sim.audit();
    let faults = audit[before..].iter().filter(|e| e.fault.is_some()).count();
    let report = report.unwrap_or_else(|e| panic!("seed {seed}: preflight failed: {e}"));
    assert_eq!(report.source_nodes.len(), 3);
    assert!(faults > 0, "seed {seed}: no fault was injected");
    eprintln!(
        "preflight: {} lists, {faults} of them faulted, all retried",
        audit.len() - before
    );
}

/// What the audit log says about one pod's eviction requests.
#[derive(Debug, Default)]
struct PodEvictions {
    requests: usize,
    faults: usize,
    pdb_refusals: usize,
    evicted: usize,
    gone: usize,
}

/// The eviction requests in `audit`, per pod (`namespace/name`), from the audit log.
fn eviction_books(
    audit: &[kbg_sim::AuditEntry],
    context: &str,
) -> std::collections::BTreeMap<String, PodEvictions> {
    let mut pods: std::collections::BTreeMap<String, PodEvictions> = Default::default();
    for e in audit.iter().filter(|e| e.subresource == "eviction") {
        let p = pods
            .entry(format!("{}/{}", e.namespace, e.name))
            .or_default();
        p.requests += 1;
        match (e.fault.is_some(), e.code) {
            (true, _) => p.faults += 1,
            (false, 201) => p.evicted += 1,
            (false, 429) => p.pdb_refusals += 1,
            (false, 404 | 409) => p.gone += 1,
            (false, code) => panic!("{context}: eviction of {} answered {code}", e.name),
        }
    }
    pods
}

/// One retry layer: each pod's eviction requests are one final answer (201, or gone)
/// plus one per fault injected on them plus one per PDB refusal; every request the API
/// server saw is one the drain engine counted sending (`report`: migrate's `-o json`).
fn assert_one_layer(
    pods: &std::collections::BTreeMap<String, PodEvictions>,
    report: &serde_json::Value,
    context: &str,
) {
    for (pod, p) in pods {
        assert_eq!(p.evicted + p.gone, 1, "{context}: {pod}: {p:?}");
        assert_eq!(
            p.requests,
            1 + p.faults + p.pdb_refusals,
            "{context}: {pod}: requests not explained by faults and PDB refusals: {p:?}"
        );
    }
    let sum = |f: fn(&PodEvictions) -> usize| pods.values().map(f).sum::<usize>() as u64;
    assert_eq!(
        report["eviction_requests"].as_u64(),
        Some(sum(|p| p.requests)),
        "{context}: the API server saw eviction requests the drain did not send: {report}"
    );
    assert_eq!(
        report["pdb_retries"].as_u64(),
        Some(sum(|p| p.pdb_refusals)),
        "{context}"
    );
    assert_eq!(
        report["pods_evicted"].as_u64(),
        Some(sum(|p| p.evicted)),
        "{context}"
    );
}

/// deploy-pool, migrate and teardown through issue 8's API faults, for three seeds: each
/// finishes, the end state is an uninterrupted run's, and the eviction requests prove the
/// one retry layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_commands_finish_through_api_faults_with_one_retry_layer() {
    let base = rel::seed("the_three_commands_finish_through_api_faults", 808);
    for seed in [base, base + 1, base + 2] {
        let h = Harness::start(rel::REPLACE, common::ALPHA_BETA).await;
        h.sim.set_faults(Faults {
            error_500: 0.10,
            error_429: 0.05,
            drop: 0.05,
            seed,
            ..Faults::default()
        });
        let mut report = serde_json::Value::Null;
        for args in [
            &["deploy-pool", "beta"][..],
            &["migrate", "alpha", "beta", "-o", "json"],
            &["teardown", "alpha"],
        ] {
            let run = h.kbg(args).await;
            assert_eq!(
                run.code,
                Some(0),
                "seed {seed}: kbg {args:?}\n{}",
                run.stderr
            );
            if args[0] == "migrate" {
                report = run.json();
            }
        }
        h.sim.set_faults(Faults::default());
        let context = format!("seed {seed}");
        rel::assert_replaced(&h, &context).await;

        let requests = h.kbg_requests();
        let fault = |kind: &str| {
            requests
                .iter()
                .filter(|e| e.fault.as_deref() == Some(kind))
                .count()
        };
        let pods = eviction_books(&requests, &context);
        assert_eq!(pods.len(), 9, "{context}: {pods:?}");
        assert_one_layer(&pods, &report, &context);
        let sum = |f: fn(&PodEvictions) -> usize| pods.values().map(f).sum::<usize>();
        eprintln!(
            "{context}: {} kbg requests, faults injected: {} × 500, {} × 429, {} dropped; evictions: {} requests for 9 pods = 9 answers + {} faults + {} PDB refusals (most for one pod: {}); the drain counted {} sent",
            requests.len(),
            fault("500"),
            fault("429"),
            fault("drop"),
            sum(|p| p.requests),
            sum(|p| p.faults),
            sum(|p| p.pdb_refusals),
            pods.values().map(|p| p.requests).max().unwrap_or(0),
            report["eviction_requests"]
        );
        h.sim.shutdown().await;
    }
}

/// Faults on evictions while PDBs also refuse, through the drain engine itself. First kbg
/// cannot read PDBs (every list and watch of them fails) and the disruption controller is
/// stopped, so the PDB made just before the drain stays unobserved and the API server
/// answers its pods' evictions 429 with Retry-After — a PDB's refusal, which only the
/// drain engine retries; then, a minute of cluster time later, PDBs are read again and a
/// fifth of the evictions fail (500, 429 without a PDB's cause, dropped). The requests per
/// pod are still one answer plus the faults plus the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_refusals_and_faults_on_evictions_are_retried_by_one_layer() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{Patch, PatchParams, PostParams};
    let seed = rel::seed("pdb_refusals_and_faults_on_evictions", 4);
    let scenario = rel::MIGRATION.replace(
        "    startup_seconds: 20\n    pdb: {max_unavailable: 1}\n",
        "    startup_seconds: 20\n",
    );
    let h = Harness::start(&scenario, "").await;
    rel::open_beta(&h).await;
    let client = h.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let alpha = ["alpha-0", "alpha-1", "alpha-2"].map(String::from);
    for n in &alpha {
        let cordon = Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}}));
        nodes
            .patch(n, &PatchParams::default(), &cordon)
            .await
            .unwrap();
    }
    h.sim.set_faults(Faults {
        error_500: 1.0,
        verbs: vec!["list".into(), "watch".into()],
        resources: vec!["poddisruptionbudgets".into()],
        disruption_controller_stopped: true,
        seed,
        ..Faults::default()
    });
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let web = serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    });
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(web).unwrap(),
    )
    .await
    .unwrap();
    let before = h.sim.audit().len();
    let opts = kbg::drain::DrainOptions {
        clock: kbg::clock::Clock::with_speed(h.speed).unwrap(),
        node_timeout: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let drain = kbg::drain::drain_nodes(&client, &alpha, &opts, &kbg::drain::NoopObserver);
    let later = async {
        tokio::time::sleep(std::time::Duration::from_secs_f64(60.0 / h.speed)).await;
        h.sim.set_faults(Faults {
            error_500: 0.10,
            error_429: 0.05,
            drop: 0.05,
            resources: vec!["pods/eviction".into()],
            seed,
            ..Faults::default()
        });
    };
    let (result, ()) = tokio::join!(drain, later);
    h.sim.set_faults(Faults::default());
    let context = format!("seed {seed}");
    let report = result.unwrap_or_else(|e| panic!("{context}: {e}"));
    let report = serde_json::to_value(&report).unwrap();
    let audit = h.sim.audit();
    let pods = eviction_books(&audit[before..], &context);
    assert_eq!(pods.len(), 12, "{context}: {pods:?}");
    assert_one_layer(&pods, &report, &context);
    let sum = |f: fn(&PodEvictions) -> usize| pods.values().map(f).sum::<usize>();
    assert!(sum(|p| p.pdb_refusals) > 0, "{context}: no PDB refused");
    assert!(sum(|p| p.faults) > 0, "{context}: no fault met");
    assert_eq!(h.sim.stats().pdb_violations, 0, "{context}");
    eprintln!(
        "{context}: {} eviction requests for {} pods = {} answers + {} faults + {} PDB refusals (most for one pod: {}); the drain counted {} sent",
        sum(|p| p.requests),
        pods.len(),
        pods.len(),
        sum(|p| p.faults),
        sum(|p| p.pdb_refusals),
        pods.values().map(|p| p.requests).max().unwrap_or(0),
        report["eviction_requests"]
    );
}

/// Names in a deploy-pool report list (`failed`, `never_joined`: objects with `name`;
/// `replaced`, `cleaned_up`: names), sorted.
fn names(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|f| f["name"].as_str().or(f.as_str()).unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Where a provider's machines are counted: at the provider itself.
enum Machines {
    /// The sim provider: nodes whose provider ID is `kbg-sim://<pool>/…`.
    Sim,
    /// The exec provider's example plugin: its records on disk.
    Exec(std::path::PathBuf),
}

impl Machines {
    async fn of(&self, h: &Harness, pool: &str) -> Vec<String> {
        match self {
            Machines::Sim => rel::sim_machines(h, pool)
                .await
                .into_iter()
                .map(|m| m.0)
                .collect(),
            Machines::Exec(dir) => rel::exec_machines(dir, pool),
        }
    }
}

/// A third of pool `pool`'s six machines fail: `failed` cannot be made, `lost` is made and
/// never joins. deploy-pool names exactly those two; `--cleanup-on-failure` removes them
/// at the provider; a rerun makes replacements under fresh names; `--retry-failed`
/// replaces them in one run; teardown leaves no machine at the provider.
async fn a_third_fail(h: &Harness, machines: &Machines, pool: &str, failed: &str, lost: &str) {
    let name = |i: usize| format!("{pool}-{i}");
    let all: Vec<String> = (0..6).map(name).collect();
    let deploy = ["deploy-pool", pool, "--timeout", "1m", "-o", "json"];

    // 1. Exactly which: the one the provider could not make, the one that never joined.
    let run = h.kbg(&deploy).await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(names(&report["failed"]), [failed], "{report}");
    assert_eq!(names(&report["never_joined"]), [lost], "{report}");
    assert_eq!(report["nodes_ready"], 4, "{report}");
    let made: Vec<String> = all.iter().filter(|m| *m != failed).cloned().collect();
    assert_eq!(machines.of(h, pool).await, made, "made: all but {failed}");
    let said = run.error_lines().join("\n");
    assert!(said.contains(failed) && said.contains(lost), "{said}");

    // 2. --cleanup-on-failure removes them (the failed one was never made).
    let mut cleanup = deploy.to_vec();
    cleanup.push("--cleanup-on-failure");
    let run = h.kbg(&cleanup).await;
    run.expect_code(1);
    assert_eq!(names(&run.json()["cleaned_up"]), [failed, lost]);
    let kept: Vec<String> = made.iter().filter(|m| *m != lost).cloned().collect();
    assert_eq!(machines.of(h, pool).await, kept, "cleaned up");

    // 3. A rerun replaces them under fresh names; nothing doubled.
    h.kbg(&deploy).await.expect_code(0);
    let mut now = kept.clone();
    now.extend([name(6), name(7)]);
    now.sort();
    assert_eq!(machines.of(h, pool).await, now);
    assert_eq!(rel::pool_node_names(h, pool).await, now);
    eprintln!(
        "{pool}: 6 machines, {failed} failed and {lost} never joined: reported exactly; cleaned up to {}; replaced by {} and {}: {} machines at the provider",
        kept.len(),
        name(6),
        name(7),
        now.len()
    );

    // 4. Teardown: none left at the provider.
    h.kbg(&["teardown", pool]).await.expect_code(0);
    assert!(machines.of(h, pool).await.is_empty(), "machines leaked");
    assert!(rel::pool_node_names(h, pool).await.is_empty(), "nodes left");
}

/// `--retry-failed 1`: the same third replaced in one run.
async fn a_third_replaced_in_one_run(
    h: &Harness,
    machines: &Machines,
    pool: &str,
    failed: &str,
    lost: &str,
) {
    let run = h
        .kbg(&[
            "deploy-pool",
            pool,
            "--timeout",
            "1m",
            "--retry-failed",
            "1",
            "-o",
            "json",
        ])
        .await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(names(&report["replaced"]), [failed, lost], "{report}");
    assert_eq!(report["nodes_ready"], 6, "{report}");
    let mut now: Vec<String> = (0..8)
        .map(|i| format!("{pool}-{i}"))
        .filter(|m| m != failed && m != lost)
        .collect();
    now.sort();
    assert_eq!(
        machines.of(h, pool).await,
        now,
        "the lost machine was deprovisioned"
    );
    h.kbg(&["teardown", pool]).await.expect_code(0);
    assert!(machines.of(h, pool).await.is_empty(), "machines leaked");
    assert!(rel::pool_node_names(h, pool).await.is_empty(), "nodes left");
    eprintln!(
        "{pool}: --retry-failed 1 replaced {failed} and {lost} in one run; teardown left none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_of_the_machines_fail_with_the_sim_provider() {
    let yaml = "pools:\n  beta:\n    provider: sim\n    version: v1.33.1\n    count: 6\n    sim:\n      fail_provision: [beta-1]\n      never_ready: [beta-4]\n";
    let h = Harness::start("", yaml).await;
    a_third_fail(&h, &Machines::Sim, "beta", "beta-1", "beta-4").await;
    let h = Harness::start("", yaml).await;
    a_third_replaced_in_one_run(&h, &Machines::Sim, "beta", "beta-1", "beta-4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_of_the_machines_fail_with_the_exec_provider() {
    // gamma-1's boot hook fails (no machine is recorded); gamma-4 boots but its kubelet
    // never registers.
    let hook = r#"case "$KBG_MACHINE" in gamma-1) echo "no capacity in rack 3" >&2; exit 1;; gamma-4) exit 0;; esac"#;
    for one_run in [false, true] {
        let h = Harness::start("", "").await;
        let dir = h.path().join("machines");
        h.write_config(&rel::exec_pool_yaml(&h, "gamma", 6, &dir, hook));
        let machines = Machines::Exec(dir);
        if one_run {
            a_third_replaced_in_one_run(&h, &machines, "gamma", "gamma-1", "gamma-4").await;
        } else {
            a_third_fail(&h, &machines, "gamma", "gamma-1", "gamma-4").await;
        }
    }
}
