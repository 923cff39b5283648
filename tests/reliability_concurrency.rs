//! Issue 8, item 4: two kbg processes on the same pools — exactly one proceeds, the other
//! exits 1 naming the holder and changes nothing; a Lease abandoned by a killed process
//! is taken over once it expires, and not before.

mod common;
mod rel;

use std::time::Duration;

use common::{Harness, Run, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};

/// The two runs of one race, with the pid of each.
async fn race(h: &Harness, args: &[&str]) -> [(u32, Run); 2] {
    let a = h.command(args).spawn().unwrap();
    let b = h.command(args).spawn().unwrap();
    let (pa, pb) = (a.id().unwrap(), b.id().unwrap());
    let (ra, rb) = tokio::join!(a.wait_with_output(), b.wait_with_output());
    let run = |o: std::process::Output| Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    [(pa, run(ra.unwrap())), (pb, run(rb.unwrap()))]
}

/// Two of each command started at the same instant, on two clusters: in every race
/// exactly one proceeds (exit 0), the other exits 1 naming the holder (user, host, pid,
/// command) and saying nothing was changed, having written nothing but its attempt at a
/// Lease; the winner's job is done as if it had run alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_at_once_exactly_one_proceeds() {
    let mut races = 0;
    for round in 0..2 {
        let h = Harness::start(rel::REPLACE, common::ALPHA_BETA).await;
        for args in [
            &["deploy-pool", "beta"][..],
            &["migrate", "alpha", "beta"],
            &["teardown", "alpha"],
        ] {
            let [(pa, a), (pb, b)] = race(&h, args).await;
            let (winner, (loser_pid, loser)) = match (a.code, b.code) {
                (Some(0), Some(1)) => (pa, (pb, b)),
                (Some(1), Some(0)) => (pb, (pa, a)),
                _ => panic!(
                    "round {round}: kbg {args:?} twice: exits {:?} and {:?}\n{}\n{}",
                    a.code, b.code, a.stderr, b.stderr
                ),
            };
            let said = loser.error_lines().join("\n");
            assert!(
                said.contains("is in use by tester@")
                    && said.contains(&format!("pid {winner}: kbg {}", args.join(" ")))
                    && said.contains("nothing was changed"),
                "round {round}: kbg {args:?}: {said}"
            );
            let ua = format!("(pid {loser_pid})");
            // At most a write of a Lease that lost the race (409); nothing else.
            let wrote: Vec<_> = h
                .kbg_writes()
                .into_iter()
                .filter(|e| e.user_agent.contains(&ua))
                .collect();
            assert!(
                wrote
                    .iter()
                    .all(|e| e.resource == "leases" && e.code == 409),
                "round {round}: the refused kbg {args:?} wrote {wrote:?}"
            );
            races += 1;
            eprintln!(
                "round {round}: two `kbg {}` at once: pid {winner} proceeded, pid {loser_pid} exited 1{}: {said}",
                args.join(" "),
                if wrote.is_empty() {
                    ""
                } else {
                    " (its own Lease write lost with 409)"
                }
            );
        }
        rel::assert_replaced(&h, &format!("round {round}")).await;
    }
    eprintln!("{races} races: exactly one proceeded in each");
}

/// A kbg killed while holding pool alpha's Lease, on a host that is not this one (the
/// laptop that lost its VPN: its process cannot be checked from here). Every run until
/// the Lease expires refuses, naming the dead holder and when the Lease expires; the
/// first run after it expires takes the Lease over and finishes the migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lease_is_taken_over_once_it_expires_and_not_before() {
    const DURATION: i64 = 4;
    let config = format!(
        "cluster:\n  lease_duration: {DURATION}s\n{}",
        common::ALPHA_BETA
    );
    let h = Harness::start(rel::MIGRATION, &config).await;
    rel::open_beta(&h).await;
    let leases: Api<Lease> = Api::namespaced(h.client().await, "kube-system");
    let mut child = h.command(&["migrate", "alpha", "beta"]).spawn().unwrap();
    let pid = child.id().unwrap();
    wait_for(
        "the first migrate to hold pool alpha and evict",
        120,
        || async {
            let held = leases
                .get_opt("kbg-pool-alpha")
                .await
                .ok()??
                .spec?
                .holder_identity?
                .contains(&format!("pid {pid}"));
            (held && rel::evictions(&h) >= 1).then_some(())
        },
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // It ran elsewhere: this host cannot tell whether it is alive.
    for pool in ["alpha", "beta"] {
        let elsewhere =
            serde_json::json!({"metadata": {"annotations": {"kbg.io/holder-host": "laptop"}}});
        leases
            .patch(
                &format!("kbg-pool-{pool}"),
                &PatchParams::default(),
                &Patch::Merge(elsewhere),
            )
            .await
            .unwrap();
    }
    let renewed = leases
        .get("kbg-pool-alpha")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap()
        .0;
    let since = |t: jiff::Timestamp| t.duration_since(renewed).as_secs_f64();

    let mut refused = Vec::new();
    loop {
        let started = jiff::Timestamp::now();
        let run = h.kbg(&["migrate", "alpha", "beta"]).await;
        match run.code {
            Some(1) => {
                let said = run.error_lines().join("\n");
                assert!(
                    said.contains(&format!("pid {pid}: kbg migrate alpha beta"))
                        && said.contains("expires in"),
                    "{said}"
                );
                // Refused only while the Lease is valid (kbg looked after `started`).
                assert!(
                    since(started) < DURATION as f64,
                    "refused {:.2}s after the last renewal, past the Lease's {DURATION}s: {said}",
                    since(started)
                );
                refused.push(since(started));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(0) => break,
            _ => panic!("{}", run.stderr),
        }
        assert!(refused.len() < 200, "never taken over");
    }
    assert!(
        !refused.is_empty(),
        "the first rerun came after the Lease expired"
    );
    rel::assert_migrated(&h, "alpha", "beta").await;
    let spec = leases.get("kbg-pool-alpha").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity, None, "released");
    // When kbg took it over: the new holder's acquireTime, kbg's own clock.
    let took = since(spec.acquire_time.clone().unwrap().0);
    assert!(
        took > DURATION as f64,
        "taken over {took:.3}s after the last renewal, before the Lease's {DURATION}s"
    );
    assert!(
        took < (DURATION + 1) as f64,
        "taken over only {took:.3}s after the last renewal"
    );
    eprintln!(
        "abandoned Lease ({DURATION}s, holder on another host, SIGKILLed): {} reruns refused between {:.2}s and {:.2}s after its last renewal, the next one at {took:.2}s took it over and finished; {} transitions",
        refused.len(),
        refused.first().unwrap(),
        refused.last().unwrap(),
        spec.lease_transitions.unwrap_or(0)
    );
}
