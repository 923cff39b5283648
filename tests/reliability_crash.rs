//! Issue 8, item 1: kbg killed anywhere loses nothing, and the same command run again
//! finishes the job.

//!
//! [`crash_anywhere`]: 20 seeded points across deploy-pool, migrate and teardown, each a
//! SIGKILL by wall time or by the API server's request count, each on a fresh cluster
//! where the three commands replace pool alpha by pool beta. The killed command is run
//! again; the cycle must end as an uninterrupted one does (a reference cycle, measured
//! first): every workload at its desired Ready replicas on beta, no PDB ever violated (the
//! simulated cluster's books over the whole history), each pod evicted once, every
//! machine made once and none left over (counted at the provider: the sim provider's
//! machines are nodes with `kbg-sim://` provider IDs), no node cordoned without kbg's note
//! of why (checked right after each kill too), no Lease held. `KBG_TEST_SEED` replays the
//! points.

mod common;
mod rel;

use std::time::{Duration, Instant};

use common::{Harness, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rel::{KillAt, Killed, Rng};

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

/// The cycle's commands, in order.
const COMMANDS: [&[&str]; 3] = [
    &["deploy-pool", "beta"],
    &["migrate", "alpha", "beta"],
    &["teardown", "alpha"],
];

/// What a command of an uninterrupted cycle took.
#[derive(Debug, Clone, Copy)]
struct Measured {
    requests: u64,
    wall: Duration,
}

/// The uninterrupted cycle: what each command took, and what it ends with.
#[derive(Debug, Clone)]
struct Reference {
    commands: [Measured; 3],
    machines: Vec<(String, String)>,
    evictions: u64,
}

/// One kill: which command, where (as a share of what that command takes in the
/// reference cycle), by requests or by wall time.
#[derive(Debug, Clone, Copy)]
struct Point {
    command: usize,
    by_requests: bool,
    share: f64,
}

impl Point {
    fn at(&self, r: &Reference) -> KillAt {
        let m = r.commands[self.command];
        if self.by_requests {
            KillAt::Requests(((m.requests as f64 * self.share) as u64).max(1))
        } else {
            KillAt::Wall(m.wall.mul_f64(self.share))
        }
    }
}

/// The 20 points of `seed`: commands in turn, each by requests or by time at random, at
/// a random share of the command's run.
fn points(seed: u64) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    (0..20)
        .map(|k| Point {
            command: k % 3,
            by_requests: rng.next_u64().is_multiple_of(2),
            share: rng.range(1, 1000) as f64 / 1000.0,
        })
        .collect()
}

/// The invariants that hold at any moment, even right after a kill: no cordon without
/// kbg's note, no machine beyond the pool's three names, no PDB violated.
async fn assert_nothing_lost_yet(h: &Harness, context: &str) {
    rel::assert_cordons_owned(h, context).await;
    let beta = rel::sim_machines(h, "beta").await;
    assert!(
        beta.iter()
            .all(|(n, _)| ["beta-0", "beta-1", "beta-2"].contains(&n.as_str())),
        "{context}: machines beyond the pool's names: {beta:?}"
    );
    assert_eq!(h.sim.stats().pdb_violations, 0, "{context}");
}

/// Run the cycle, killing `point` (if any) once and running that command again. Returns
/// what each command took (the first run of a killed one), and a line saying what
/// happened.
async fn cycle(kill: Option<(Point, KillAt)>, context: &str) -> (Harness, [Measured; 3], String) {
    let h = Harness::start(rel::REPLACE, common::ALPHA_BETA).await;
    let mut measured = [Measured {
        requests: 0,
        wall: Duration::ZERO,
    }; 3];
    let mut note = String::from("uninterrupted");
    for (i, args) in COMMANDS.iter().enumerate() {
        let base = h.sim.stats().requests;
        let started = Instant::now();
        match kill {
            Some((p, at)) if p.command == i => {
                let killed = rel::run_and_kill(&h, h.command(args), at).await;
                note = match killed {
                    Killed::Yes { requests, wall } => {
                        assert_nothing_lost_yet(&h, &format!("{context}: right after the kill"))
                            .await;
                        format!(
                            "kbg {} killed {at} ({requests} requests, {} ms)",
                            args.join(" "),
                            wall.as_millis()
                        )
                    }
                    Killed::EndedFirst(code) => {
                        assert_eq!(code, Some(0), "{context}: kbg {args:?} failed on its own");
                        format!(
                            "kbg {} ended on its own before the kill point ({at})",
                            args.join(" ")
                        )
                    }
                };
                let run = h.kbg(args).await;
                assert_eq!(
                    run.code,
                    Some(0),
                    "{context}: the rerun of kbg {args:?} failed\n{}",
                    run.stderr
                );
            }
            _ => {
                let run = h.kbg(args).await;
                assert_eq!(
                    run.code,
                    Some(0),
                    "{context}: kbg {args:?} failed\n{}",
                    run.stderr
                );
            }
        }
        measured[i] = Measured {
            requests: h.sim.stats().requests - base,
            wall: started.elapsed(),
        };
        assert_nothing_lost_yet(&h, &format!("{context}: after kbg {}", args.join(" "))).await;
    }
    (h, measured, note)
}

static REFERENCE: tokio::sync::OnceCell<Reference> = tokio::sync::OnceCell::const_new();

/// The reference cycle, measured once per test binary.
async fn reference() -> &'static Reference {
    REFERENCE
        .get_or_init(|| async {
            let (h, commands, _) = cycle(None, "reference cycle").await;
            let r = Reference {
                commands,
                machines: rel::sim_machines(&h, "beta").await,
                evictions: h.sim.stats().evictions_allowed,
            };
            for (args, m) in COMMANDS.iter().zip(&r.commands) {
                eprintln!(
                    "reference: kbg {}: {} requests, {} ms",
                    args.join(" "),
                    m.requests,
                    m.wall.as_millis()
                );
            }
            h.sim.shutdown().await;
            r
        })
        .await
}

/// The end state of every cycle is the reference's.
async fn assert_like_reference(h: &Harness, r: &Reference, context: &str) {
    assert_eq!(rel::sim_machines(h, "beta").await, r.machines, "{context}");
    assert_eq!(h.sim.stats().evictions_allowed, r.evictions, "{context}");
    rel::assert_replaced(h, context).await;
}

/// Kill at every point of `command` among the seeded 20.
async fn crash_anywhere(command: usize) {
    let seed = rel::seed(
        &format!("crash_anywhere({})", COMMANDS[command][0]),
        20_260_801,
    );
    let r = reference().await;
    for (k, p) in points(seed).into_iter().enumerate() {
        if p.command != command {
            continue;
        }
        let at = p.at(r);
        let context = format!("seed {seed} point {k}");
        let (h, _, note) = cycle(Some((p, at)), &context).await;
        assert_like_reference(&h, r, &context).await;
        eprintln!(
            "{context}: {note}; rerun finished; end state as uninterrupted ({} machines, {} evictions, 0 PDB violations)",
            r.machines.len(),
            r.evictions
        );
        h.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_anywhere_in_deploy_pool() {
    crash_anywhere(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_anywhere_in_migrate() {
    crash_anywhere(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_anywhere_in_teardown() {
    crash_anywhere(2).await;
}

/// The exec provider's example plugin, whose machines are records on disk: deploy-pool
/// and teardown of pool gamma killed at seeded points (by requests and by time), and run
/// again. After every run the records on disk are the pool's machines, never more than
/// its three names; after the reruns, three records and three Ready nodes, then none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_anywhere_with_the_exec_provider() {
    let seed = rel::seed("crash_anywhere_with_the_exec_provider", 20_260_802);
    let names = ["gamma-0", "gamma-1", "gamma-2"];
    let deploy: &[&str] = &["deploy-pool", "gamma"];
    let teardown: &[&str] = &["teardown", "gamma"];

    // The reference: what each command takes uninterrupted.
    let h = Harness::start("", "").await;
    let machines = h.path().join("machines");
    h.write_config(&rel::exec_pool_yaml(&h, "gamma", 3, &machines, ""));
    let mut reference = Vec::new();
    for args in [deploy, teardown] {
        let base = h.sim.stats().requests;
        let started = Instant::now();
        h.kbg(args).await.expect_code(0);
        reference.push(Measured {
            requests: h.sim.stats().requests - base,
            wall: started.elapsed(),
        });
        eprintln!(
            "exec reference: kbg {}: {} requests, {} ms",
            args.join(" "),
            reference.last().unwrap().requests,
            started.elapsed().as_millis()
        );
    }
    assert!(rel::exec_machines(&machines, "gamma").is_empty());
    h.sim.shutdown().await;

    let mut rng = Rng::new(seed);
    for k in 0..4 {
        let command = k % 2;
        let p = Point {
            command,
            by_requests: k < 2,
            share: rng.range(1, 1000) as f64 / 1000.0,
        };
        let m = reference[command];
        let at = if p.by_requests {
            KillAt::Requests(((m.requests as f64 * p.share) as u64).max(1))
        } else {
            KillAt::Wall(m.wall.mul_f64(p.share))
        };
        let context = format!("seed {seed} exec point {k}");
        let h = Harness::start("", "").await;
        let machines = h.path().join("machines");
        h.write_config(&rel::exec_pool_yaml(&h, "gamma", 3, &machines, ""));
        let mut note = String::new();
        for (i, args) in [deploy, teardown].into_iter().enumerate() {
            if i == command {
                let killed = rel::run_and_kill(&h, h.command(args), at).await;
                let records = rel::exec_machines(&machines, "gamma");
                assert!(
                    records.iter().all(|r| names.contains(&r.as_str())),
                    "{context}: machines beyond the pool's names: {records:?}"
                );
                rel::assert_cordons_owned(&h, &context).await;
                note = match killed {
                    Killed::Yes { requests, wall } => format!(
                        "kbg {} killed {at} ({requests} requests, {} ms) with {} machine records on disk",
                        args.join(" "),
                        wall.as_millis(),
                        records.len()
                    ),
                    Killed::EndedFirst(code) => {
                        assert_eq!(code, Some(0), "{context}");
                        format!(
                            "kbg {} ended on its own before the kill point ({at})",
                            args.join(" ")
                        )
                    }
                };
            }
            let run = h.kbg(args).await;
            assert_eq!(run.code, Some(0), "{context}: kbg {args:?}\n{}", run.stderr);
            if i == 0 {
                assert_eq!(rel::exec_machines(&machines, "gamma"), names, "{context}");
                assert_eq!(rel::pool_node_names(&h, "gamma").await, names, "{context}");
            }
        }
        assert!(
            rel::exec_machines(&machines, "gamma").is_empty(),
            "{context}: machines leaked"
        );
        assert!(
            rel::pool_node_names(&h, "gamma").await.is_empty(),
            "{context}"
        );
        rel::assert_leases_free(&h).await;
        eprintln!(
            "{context}: {note}; rerun finished; 3 machines made, all deprovisioned, none leaked"
        );
        h.sim.shutdown().await;
    }
}
