//! kbg's state ConfigMap, the provider ledger over it, and the pool Leases, through the
//! library against the simulated API server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use k8s_openapi::api::coordination::v1::Lease;
use kbg::clock::Clock;
use kbg::lock::{self, Holder, LockError};
use kbg::state::{StateLedger, StateStore};
use kbg_provider::Ledger;
use kube::api::{Api, DeleteParams};

fn holder(pid: u32, command: &str) -> Holder {
    Holder {
        user: "tester".into(),
        host: Holder::current("x").host,
        pid,
        command: command.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing() {
    let h = Harness::start("", "").await;
    let client = h.client().await;
    let store = StateStore::new(client, "kube-system", "kbg-state", Clock::real());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.update("counter", |n: Option<u64>| (Some(n.unwrap_or(0) + 1), ()))
                .await
                .unwrap();
            s.put(&format!("key-{i}"), &i).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get::<u64>("counter").await.unwrap(), Some(16));
    let all = store.read_all().await.unwrap();
    assert_eq!(all.len(), 17, "{all:?}");
    // A change that changes nothing writes nothing.
    let writes = h
        .sim
        .audit()
        .iter()
        .filter(|e| e.resource == "configmaps" && e.verb != "get")
        .count();
    store.put("key-3", &3u64).await.unwrap();
    let after = h
        .sim
        .audit()
        .iter()
        .filter(|e| e.resource == "configmaps" && e.verb != "get")
        .count();
    assert_eq!(writes, after);
    store.remove("key-3").await.unwrap();
    assert_eq!(store.get::<u64>("key-3").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_compare_and_swap_per_key() {
    let h = Harness::start("", "").await;
    let client = h.client().await;
    let store = StateStore::new(client, "kube-system", "kbg-state", Clock::real());
    let a = StateLedger::new(store.clone());
    let b = StateLedger::new(store.clone());
    let key = "juju/k8s/workers-b";
    assert_eq!(a.load(key).await.unwrap(), None);
    // Two writers that both read "nothing": exactly one wins.
    let (ra, rb) = tokio::join!(
        a.store(key, serde_json::json!({"unit": "a"}), None),
        b.store(key, serde_json::json!({"unit": "b"}), None)
    );
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    let loser = ra.as_ref().err().or(rb.as_ref().err()).unwrap();
    assert!(
        loser.is_retryable() && loser.to_string().contains("conflict"),
        "{loser}"
    );
    let entry = a.load(key).await.unwrap().unwrap();
    // Writes to other keys of the same ConfigMap do not disturb this key's version.
    store
        .put("migrate.alpha.beta", &serde_json::json!({"x": 1}))
        .await
        .unwrap();
    let v2 = a
        .store(key, serde_json::json!({"unit": "c"}), Some(&entry.version))
        .await
        .unwrap();
    assert_ne!(v2, entry.version);
    assert!(
        b.store(key, serde_json::json!({}), Some(&entry.version))
            .await
            .is_err()
    );
    assert_eq!(
        b.load(key).await.unwrap().unwrap().value,
        serde_json::json!({"unit": "c"})
    );
    assert!(
        store
            .read_all()
            .await
            .unwrap()
            .contains_key("ledger.juju_2fk8s_2fworkers-b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_exclude_take_over_and_notice_a_loss() {
    let h = Harness::start("", "").await;
    let client = h.client().await;
    let dur = Duration::from_secs(15);
    let clock = Clock::real();
    // pid 1 exists on every Linux host: this "other kbg" is alive.
    let first = lock::acquire(
        client.clone(),
        "kube-system",
        &["beta", "alpha"],
        holder(1, "kbg migrate alpha beta"),
        dur,
        clock,
    )
    .await
    .unwrap();
    let refused = lock::acquire(
        client.clone(),
        "kube-system",
        &["alpha"],
        Holder::current("kbg teardown alpha"),
        dur,
        clock,
    )
    .await
    .unwrap_err();
    match &refused {
        LockError::Held {
            pool,
            holder,
            expires_in,
            ..
        } => {
            assert_eq!(pool, "alpha");
            assert!(
                holder.ends_with("pid 1: kbg migrate alpha beta"),
                "{holder}"
            );
            assert!(*expires_in <= 15);
        }
        other => panic!("{other}"),
    }
    assert!(refused.to_string().contains("nothing was changed"));
    first.release(clock).await;
    let second = lock::acquire(
        client.clone(),
        "kube-system",
        &["alpha"],
        Holder::current("kbg teardown alpha"),
        dur,
        clock,
    )
    .await
    .unwrap();

    // Someone deletes the Lease under it: the holder notices within a renewal period.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .delete("kbg-pool-alpha", &DeleteParams::default())
        .await
        .unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(30), second.lost())
        .await
        .expect("loss noticed");
    assert!(
        lost.to_string().contains("lost the lock on pool alpha"),
        "{lost}"
    );
    second.release(clock).await;

    // A holder on this host whose process is gone is taken over at once.
    let dead = holder(u32::MAX - 7, "kbg migrate alpha beta");
    let held = lock::acquire(client.clone(), "kube-system", &["gamma"], dead, dur, clock)
        .await
        .unwrap();
    std::mem::forget(Arc::new(held)); // never released: as if SIGKILLed
    let taken = lock::acquire(
        client.clone(),
        "kube-system",
        &["gamma"],
        Holder::current("kbg deploy-pool gamma"),
        dur,
        clock,
    )
    .await
    .unwrap();
    taken.release(clock).await;
}
