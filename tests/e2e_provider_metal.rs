//! The bare-metal provider end to end: `kbg deploy-pool` → `migrate` → `teardown` through
//! the real binary, against real OpenSSH servers on 127.0.0.1 (the metal provider's own
//! lab, `providers/metal/tests/support/mod.rs`, one `sshd` per host) and the simulated
//! cluster.
//!
//! Each host's `kubeadm`, `systemctl`, `apt-get`… are the metal tests' documented double
//! (`fake-host-tool.sh`): `kubeadm join` registers the Node from the join configuration
//! kbg's bootstrap wrote, as the kubelet would, and `kubeadm reset` stops its kubelet. The
//! machines at the provider are the hosts the ledger in kbg's state gives to a pool.

mod common;
mod support;

#[path = "../providers/metal/tests/support/mod.rs"]
#[allow(missing_docs, unused)]
mod metal_lab;

use std::collections::BTreeMap;

use common::{Harness, watch_pdbs};
use kbg::clock::Clock;
use kbg::state::{StateLedger, StateStore};
use kbg_provider::Ledger;
use metal_lab::Lab;
use serde_json::json;

/// `kbg.yaml` with metal pools `pools` (name, version, count, extra lines) over `lab`.
fn kbg_yaml(lab: &Lab, pools: &[(&str, &str, usize, &str)]) -> String {
    let inventory = lab.inventory(|_| String::new());
    let mut out = format!("{}pools:\n", support::JOIN);
    for (name, version, count, extra) in pools {
        out.push_str(&format!(
            "  {name}:\n    provider: metal\n    version: {version}\n    count: {count}\n{extra}    metal:\n      inventory: {}\n      known_hosts: {}\n      connect_timeout_seconds: 60\n      bootstrap_timeout_seconds: 120\n      reset_timeout_seconds: 120\n",
            inventory.display(),
            lab.known_hosts.display()
        ));
    }
    out
}

/// Host → (pool, machine, state) as the provider's record in kbg's state says.
async fn held(client: &kube::Client) -> BTreeMap<String, (String, String, String)> {
    let ledger = StateLedger::new(StateStore::new(
        client.clone(),
        "kube-system",
        "kbg-state",
        Clock::real(),
    ));
    let Some(entry) = ledger.load("metal-hosts").await.unwrap() else {
        return BTreeMap::new();
    };
    entry.value["hosts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(host, a)| {
            let s = |k: &str| a[k].as_str().unwrap().to_string();
            (host.clone(), (s("pool"), s("machine"), s("state")))
        })
        .collect()
}

fn of_pool(held: &BTreeMap<String, (String, String, String)>, pool: &str) -> Vec<String> {
    held.iter()
        .filter(|(_, (p, _, _))| p == pool)
        .map(|(h, _)| h.clone())
        .collect()
}

const BETA_LABELS: &str = "    labels: {tier: web}\n    taints: [\"dedicated=web:NoSchedule\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_migrate_teardown_over_ssh() {
    let h = Harness::start(support::SCENARIO, "").await;
    let lab = Lab::start(
        &["host-a", "host-b", "host-c", "host-d"],
        Some(&h.kubeconfig),
    );
    h.write_config(&kbg_yaml(
        &lab,
        &[
            ("alpha", "v1.32.4", 2, ""),
            ("beta", "v1.33.1", 2, BETA_LABELS),
        ],
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
    let by_host = held(&client).await;
    assert_eq!(of_pool(&by_host, "alpha"), ["host-a", "host-b"]);
    assert_eq!(of_pool(&by_host, "beta"), ["host-c", "host-d"]);
    for m in report["machines"].as_array().unwrap() {
        // The node is the machine; its provider ID names the host it runs on.
        assert_eq!(m["node"], m["name"]);
        let host = by_host
            .iter()
            .find(|(_, (_, machine, _))| m["name"] == machine.as_str())
            .map(|(h, _)| h.clone())
            .unwrap();
        assert_eq!(m["provider_id"], format!("metal://{host}"));
    }
    for n in support::pool_nodes(&client, "beta").await {
        let info = n.status.as_ref().unwrap().node_info.clone().unwrap();
        assert_eq!(info.kubelet_version, "v1.33.1");
        let taints = n.spec.as_ref().unwrap().taints.clone().unwrap_or_default();
        assert!(taints.iter().any(|t| t.key == "dedicated"), "{taints:?}");
    }

    let margins = watch_pdbs(client.clone());
    let run = h.kbg(&["migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["pods_evicted"], support::PODS_TO_MOVE);

    let run = h.kbg(&["teardown", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(
        run.json()["machines_deprovisioned"],
        json!(["alpha-0", "alpha-1"])
    );
    let margins = support::assert_moved(&h, &client, "alpha", "beta", &margins).await;
    let by_host = held(&client).await;
    assert!(of_pool(&by_host, "alpha").is_empty(), "{by_host:?}");
    assert_eq!(of_pool(&by_host, "beta"), ["host-c", "host-d"]);
    for name in ["host-a", "host-b"] {
        let host = lab.host(name);
        assert!(!host.kubelet_active(), "{name}'s kubelet is stopped");
        assert!(
            host.calls().contains(&"kubeadm reset -f".to_string()),
            "{name}: {:?}",
            host.calls()
        );
    }
    for name in ["host-c", "host-d"] {
        assert!(lab.host(name).kubelet_active(), "{name} serves beta");
    }
    println!(
        "figures: metal: {} kbg requests, {} evictions allowed, hosts held alpha {} beta {}, PDB margins {margins:?}",
        h.kbg_requests().len(),
        h.sim.stats().evictions_allowed,
        of_pool(&by_host, "alpha").len(),
        of_pool(&by_host, "beta").len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_bootstrap_fails_half_way_is_reset_and_freed() {
    let h = Harness::start("", "").await;
    let lab = Lab::start(&["host-a", "host-b", "host-c"], Some(&h.kubeconfig));
    // The package install fails on host-b: the bootstrap started, so the host may hold
    // half an install and is reset before it is freed.
    lab.host("host-b").fail(
        "apt-get",
        "E: Version '1.33.1-*' for 'kubelet' was not found",
        false,
    );
    h.write_config(&kbg_yaml(&lab, &[("gamma", "v1.33.1", 3, BETA_LABELS)]));
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
        reason.starts_with("metal: machine gamma-1: host host-b")
            && reason.contains("for 'kubelet' was not found"),
        "one line with the machine, the host and what the host said: {reason}"
    );
    assert_eq!(report["cleaned_up"], json!(["gamma-1"]));
    // The host the join failed on was reset and handed back; the others serve the pool.
    let by_host = held(&client).await;
    assert_eq!(
        of_pool(&by_host, "gamma"),
        ["host-a", "host-c"],
        "{by_host:?}"
    );
    let b = lab.host("host-b");
    assert!(!b.kubelet_active());
    assert!(
        b.calls().contains(&"kubeadm reset -f".to_string()),
        "{:?}",
        b.calls()
    );

    let run = h.kbg(&["teardown", "gamma", "-o", "json"]).await;
    run.expect_code(0);
    assert!(held(&client).await.is_empty(), "every host is free again");
    assert!(support::pool_nodes(&client, "gamma").await.is_empty());
    for host in &lab.hosts {
        assert!(!host.kubelet_active(), "{}", host.name);
    }
}
