//! The migration benchmark's scenario generator and lower bound (`bench/src/`),
//! checked without starting a cluster: the counts the issue asks for, a mix with every
//! kind of workload and PDB, determinism, and the lower-bound arithmetic.

#[allow(dead_code)]
#[path = "../src/scenario.rs"]
mod scenario;

use kbg_sim::{Budget, Scenario, Workload, WorkloadKind};
use scenario::{counts, disruptions, generate, lower_bound};
use serde_json::json;

#[test]
fn the_sizes_of_the_issue_with_every_kind_of_workload() {
    for (nodes, pods) in [(10, 300), (100, 3_000), (1_000, 30_000)] {
        let s = generate(nodes, 7);
        let c = counts(&s);
        assert_eq!((c.nodes, c.pods), (nodes, pods), "{c:?}");
        assert_eq!(c.to_move, pods - 3 * nodes);
        for kind in [
            "Deployment, maxUnavailable int",
            "Deployment, maxUnavailable %",
            "Deployment, minAvailable int",
            "Deployment, minAvailable %",
            "Deployment, no PDB",
            "StatefulSet, maxUnavailable int",
            "DaemonSet",
            "bare Pod",
        ] {
            assert!(c.workloads.contains_key(kind), "{nodes}: no {kind}: {c:?}");
        }
        // Every PDB allows at least one disruption (else preflight refuses), every pod
        // has a start-up and a termination time, and the target pool starts cordoned.
        for w in &s.workloads {
            if w.pdb.is_some() {
                assert!(disruptions(w.replicas, w.pdb.as_ref()) >= 1, "{w:?}");
            }
            if matches!(w.kind, WorkloadKind::Deployment | WorkloadKind::StatefulSet) {
                assert!(w.startup_seconds.is_some() && w.termination_seconds.is_some());
            }
        }
        assert!(s.pools.iter().any(|p| p.name == "beta" && p.cordoned));
        // The scenario survives its YAML.
        let yaml = serde_saphyr::to_string(&s).unwrap();
        assert_eq!(Scenario::from_yaml(&yaml).unwrap(), s);
    }
    assert_eq!(generate(100, 7), generate(100, 7));
    assert_ne!(generate(100, 7), generate(100, 8));
}

#[test]
fn disruptions_follow_the_disruption_controller() {
    let max = |v| {
        Some(Budget {
            max_unavailable: Some(v),
            ..Default::default()
        })
    };
    let min = |v| {
        Some(Budget {
            min_available: Some(v),
            ..Default::default()
        })
    };
    assert_eq!(disruptions(10, max(json!(2)).as_ref()), 2);
    // Percentages of maxUnavailable round up; of minAvailable too (so D rounds down).
    assert_eq!(disruptions(10, max(json!("25%")).as_ref()), 3);
    assert_eq!(disruptions(10, min(json!("75%")).as_ref()), 2);
    assert_eq!(disruptions(10, min(json!(9)).as_ref()), 1);
    assert_eq!(disruptions(3, min(json!("80%")).as_ref()), 0);
    assert_eq!(disruptions(4, None), 4);
    assert_eq!(disruptions(4, max(json!(9)).as_ref()), 4);
}

#[test]
fn the_lower_bound_per_kind() {
    let w = |kind, name: &str, replicas, pdb: Option<Budget>, t: f64, s: f64| Workload {
        kind,
        name: name.into(),
        replicas,
        pdb,
        termination_seconds: Some(t),
        startup_seconds: Some(s),
        ..Default::default()
    };
    let one = || {
        Some(Budget {
            max_unavailable: Some(json!(1)),
            ..Default::default()
        })
    };
    let scenario = Scenario {
        workloads: vec![
            // 10 rounds; the replacement starts while the old pod terminates:
            // 9 × 8 + max(20, 8) = 92.
            w(WorkloadKind::Deployment, "web", 10, one(), 20.0, 8.0),
            // 5 rounds of terminate-then-start: 5 × (10 + 5) = 75.
            w(WorkloadKind::StatefulSet, "db", 5, one(), 10.0, 5.0),
            // No PDB: one round, 30 capped by the 30 s grace period... max(30, 2).
            w(WorkloadKind::Deployment, "batch", 50, None, 45.0, 2.0),
            // Not moved.
            w(WorkloadKind::DaemonSet, "agent", 1, None, 100.0, 100.0),
        ],
        ..Default::default()
    };
    let (bound, terms) = lower_bound(&scenario);
    assert_eq!(bound, 92.0);
    let by_name = |n: &str| terms.iter().find(|t| t.workload.ends_with(n)).unwrap();
    assert_eq!(by_name("/web").bound_s, 92.0);
    assert_eq!(by_name("/web").issue_formula_s, 280.0);
    assert_eq!(by_name("/db").bound_s, 75.0);
    assert_eq!(by_name("/db").issue_formula_s, 75.0);
    assert_eq!(by_name("/batch").bound_s, 30.0);
    assert_eq!(by_name("/batch").rounds, 1);
    assert_eq!(terms.len(), 3);
}
