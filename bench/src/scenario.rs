//! The benchmark's clusters: a seeded generator of realistic workload mixes, and the PDB
//! lower bound of migrating them.
//!
//! Shared with `bench/tests/scenario.rs` (through `#[path]`), which checks the counts and
//! the arithmetic without starting a cluster.

use std::collections::BTreeMap;

use kbg_sim::{Budget, Pool, Requests, Scenario, Workload, WorkloadKind};
use serde::Serialize;
use serde_json::{Value, json};

/// The source (blue) pool's name.
pub const SOURCE: &str = "alpha";
/// The target (green) pool's name.
pub const TARGET: &str = "beta";
/// Kubelet version of the source pool (one minor behind the control plane).
pub const SOURCE_VERSION: &str = "v1.32.4";
/// Kubelet version of the target pool, and the control plane's.
pub const TARGET_VERSION: &str = "v1.33.1";
/// Pods per source node, DaemonSet pods included: 10 nodes / 300 pods, 100 / 3,000,
/// 1,000 / 30,000 (issue 7).
pub const PODS_PER_NODE: usize = 30;
/// DaemonSets of the scenario, kube-proxy included: each puts one pod on every node.
pub const DAEMONSETS_PER_NODE: usize = 3;

/// splitmix64: a small, seeded, well-mixed generator, so the same seed gives the same
/// cluster on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Start-up times (bound → Ready), simulated seconds: most pods start in seconds, JVMs
/// and caches in tens of seconds.
const STARTUP: &[f64] = &[2.0, 3.0, 5.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0];
/// Termination times (deleted → gone), simulated seconds: most pods exit at SIGTERM,
/// some drain connections for tens of seconds (capped by the 30 s grace period).
const TERMINATION: &[f64] = &[1.0, 1.0, 2.0, 3.0, 5.0, 5.0, 10.0, 15.0, 20.0, 30.0];

/// The scenario of a migration benchmark: `nodes` source nodes carrying
/// `nodes × PODS_PER_NODE` pods, `nodes` empty target nodes (cordoned while the cluster
/// settles, so every pod starts on the source pool; the benchmark uncordons them before
/// the migration), one control-plane node.
///
/// The mix, drawn with `seed` until the source pool's share of workload pods is filled:
/// Deployments with PDBs by `maxUnavailable` (an integer, or a percentage, some of them
/// large web tiers) and by `minAvailable` (an integer or a percentage), StatefulSets of
/// 3 or 5 with `maxUnavailable: 1`, Deployments without a PDB (some with emptyDir data),
/// a few bare pods (no controller: `--force`), and two DaemonSets besides kube-proxy.
/// Every workload has its own start-up and termination time.
pub fn generate(nodes: usize, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed ^ (nodes as u64).wrapping_mul(0x1000_0000_01B3));
    let namespaces = (nodes / 20).max(3);
    let ns = |i: usize| format!("team-{}", i % namespaces);
    let mut workloads = Vec::new();
    // DaemonSets (kube-proxy is the simulator's own).
    for name in ["node-exporter", "log-agent"] {
        workloads.push(Workload {
            kind: WorkloadKind::DaemonSet,
            name: name.into(),
            namespace: "monitoring".into(),
            requests: requests(&mut rng),
            ..Default::default()
        });
    }
    // Bare pods: one per ten nodes, at least one.
    let bare = (nodes / 10).max(1);
    workloads.push(Workload {
        kind: WorkloadKind::Pod,
        name: "debug".into(),
        namespace: "ops".into(),
        replicas: bare as i64,
        termination_seconds: Some(1.0),
        requests: requests(&mut rng),
        ..Default::default()
    });
    let mut left = (nodes * (PODS_PER_NODE - DAEMONSETS_PER_NODE)) as i64 - bare as i64;
    let big = ((nodes * PODS_PER_NODE) as i64 / 20).clamp(20, 300);
    let mut i = 0usize;
    while left > 0 {
        let roll = rng.range(0, 99);
        let (kind, replicas, pdb, prefix): (WorkloadKind, i64, Option<Budget>, &str) = match roll {
            // maxUnavailable as an integer.
            0..=19 => {
                let r = rng.range(2, 12);
                let d = if r >= 6 { rng.range(1, 2) } else { 1 };
                (
                    WorkloadKind::Deployment,
                    r,
                    Some(max_unavailable(json!(d))),
                    "api",
                )
            }
            // maxUnavailable as a percentage.
            20..=39 => {
                let r = rng.range(4, 40);
                let p = rng.pick(&["25%", "33%", "50%"]);
                (
                    WorkloadKind::Deployment,
                    r,
                    Some(max_unavailable(json!(p))),
                    "svc",
                )
            }
            // Large web tiers, maxUnavailable 10% or 25%.
            40..=43 => {
                let r = rng.range(big / 2, big);
                let p = rng.pick(&["10%", "25%"]);
                (
                    WorkloadKind::Deployment,
                    r,
                    Some(max_unavailable(json!(p))),
                    "web",
                )
            }
            // minAvailable as an integer: all but one, or half.
            44..=55 => {
                let r = rng.range(2, 10);
                let m = if rng.chance(0.5) { r - 1 } else { r / 2 };
                (
                    WorkloadKind::Deployment,
                    r,
                    Some(min_available(json!(m))),
                    "worker",
                )
            }
            // minAvailable as a percentage.
            56..=63 => {
                let r = rng.range(3, 20);
                let p = rng.pick(&["50%", "60%", "75%"]);
                (
                    WorkloadKind::Deployment,
                    r,
                    Some(min_available(json!(p))),
                    "queue",
                )
            }
            // Quorum StatefulSets.
            64..=69 => (
                WorkloadKind::StatefulSet,
                rng.pick(&[3, 3, 5]),
                Some(max_unavailable(json!(1))),
                "db",
            ),
            // No PDB.
            _ => (WorkloadKind::Deployment, rng.range(1, 6), None, "batch"),
        };
        let replicas = replicas.min(left);
        if pdb.is_some() && disruptions(replicas, pdb.as_ref()) == 0 {
            // Too few replicas left for this budget to allow anything: a PDB that can
            // never allow a disruption is a preflight refusal, not a benchmark.
            if replicas < 2 {
                workloads.push(Workload {
                    name: format!("batch-{i}"),
                    namespace: ns(i),
                    replicas,
                    ..timed(&mut rng)
                });
                left -= replicas;
                i += 1;
            }
            continue;
        }
        let empty_dir = pdb.is_none() && rng.chance(0.3);
        workloads.push(Workload {
            kind,
            name: format!("{prefix}-{i}"),
            namespace: ns(i),
            replicas,
            pdb,
            empty_dir,
            ..timed(&mut rng)
        });
        left -= replicas;
        i += 1;
    }
    Scenario {
        version: TARGET_VERSION.into(),
        pools: vec![
            Pool {
                name: SOURCE.into(),
                count: nodes,
                version: Some(SOURCE_VERSION.into()),
                ..Default::default()
            },
            Pool {
                name: TARGET.into(),
                count: nodes,
                version: Some(TARGET_VERSION.into()),
                cordoned: true,
                ..Default::default()
            },
        ],
        workloads,
        ..Default::default()
    }
}

fn requests(rng: &mut Rng) -> Requests {
    Requests {
        cpu: Some(format!("{}m", rng.pick(&[10, 20, 50, 100]))),
        memory: Some(format!("{}Mi", rng.pick(&[16, 32, 64, 128]))),
    }
}

/// A workload with drawn requests and start-up and termination times.
fn timed(rng: &mut Rng) -> Workload {
    Workload {
        requests: requests(rng),
        startup_seconds: Some(rng.pick(STARTUP)),
        termination_seconds: Some(rng.pick(TERMINATION)),
        ..Default::default()
    }
}

fn max_unavailable(v: Value) -> Budget {
    Budget {
        max_unavailable: Some(v),
        ..Default::default()
    }
}

fn min_available(v: Value) -> Budget {
    Budget {
        min_available: Some(v),
        ..Default::default()
    }
}

/// `n%` of `of`, rounded up (as the disruption controller scales percentages).
fn percent_up(s: &str, of: i64) -> Option<i64> {
    let p: i64 = s.strip_suffix('%')?.parse().ok()?;
    Some((p * of + 99) / 100)
}

/// D: how many of a workload's `replicas` Ready pods its PDB lets be disrupted at once
/// (the disruption controller's arithmetic, SIM-API.md): `maxUnavailable` resolved
/// against the replicas, percentages rounded up; `replicas − minAvailable`, a percentage
/// of the replicas rounded up. Without a PDB, every replica (`replicas`): nothing but
/// the batch holds them back, and the benchmark drains every source node at once.
pub fn disruptions(replicas: i64, pdb: Option<&Budget>) -> i64 {
    let Some(pdb) = pdb else {
        return replicas;
    };
    let value = |v: &Value| match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => percent_up(s, replicas),
        _ => None,
    };
    let d = if let Some(m) = pdb.max_unavailable.as_ref().and_then(value) {
        m
    } else if let Some(m) = pdb.min_available.as_ref().and_then(value) {
        replicas - m
    } else {
        0
    };
    d.clamp(0, replicas)
}

/// One workload's share of the lower bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadBound {
    /// `Deployment/<ns>/<name>` …
    pub workload: String,
    /// R: replicas, all on the source pool at the start.
    pub replicas: i64,
    /// D: disrupted at once ([`disruptions`]).
    pub disruptions: i64,
    /// ⌈R/D⌉: eviction rounds.
    pub rounds: i64,
    /// T: termination, simulated seconds (capped by the grace period).
    pub termination_s: f64,
    /// S: start-up, simulated seconds.
    pub startup_s: f64,
    /// This workload's bound (the derivation is in BENCHMARKS.md).
    pub bound_s: f64,
    /// The issue's first-order formula ⌈R/D⌉ × (T + S), for comparison.
    pub issue_formula_s: f64,
}

/// The lower bound of moving every pod of `scenario` off the source pool, with every
/// source node drained at once and the migration done when every evicted pod is gone and
/// every workload is Ready again; and the per-workload terms, largest first.
///
/// Per workload, with R replicas, D = [`disruptions`], r = ⌈R/D⌉ rounds, T its
/// termination (capped by the grace period) and S its start-up:
/// - Deployment (ReplicaSet): an evicted pod's replacement is created as soon as the pod
///   starts terminating, so the budget comes back S after each round:
///   `(r − 1) × S + max(T, S)`.
/// - StatefulSet (OrderedReady, D = 1): the replacement keeps the pod's name, so it is
///   created only once the old pod is gone: `r × (T + S)`.
/// - Bare pod: nothing replaces it: `T`.
/// - DaemonSet: not moved (skipped by kbg and by `kubectl drain --ignore-daemonsets`).
pub fn lower_bound(scenario: &Scenario) -> (f64, Vec<WorkloadBound>) {
    let grace_default = 30.0;
    let mut terms: Vec<WorkloadBound> = scenario
        .workloads
        .iter()
        .filter(|w| {
            matches!(
                w.kind,
                WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::Pod
            ) && w.replicas > 0
        })
        .map(|w| {
            let grace = w.grace_period_seconds.map_or(grace_default, |g| g as f64);
            let t = w
                .termination_seconds
                .unwrap_or(scenario.defaults.pod_termination_seconds)
                .min(grace);
            let s = w
                .startup_seconds
                .unwrap_or(scenario.defaults.pod_startup_seconds);
            let r = w.replicas;
            let (d, bound) = match w.kind {
                WorkloadKind::Pod => (r, t),
                WorkloadKind::StatefulSet => {
                    let d = disruptions(r, w.pdb.as_ref()).max(1);
                    let rounds = (r + d - 1) / d;
                    (d, rounds as f64 * (t + s))
                }
                _ => {
                    let d = disruptions(r, w.pdb.as_ref()).max(1);
                    let rounds = (r + d - 1) / d;
                    (d, (rounds - 1) as f64 * s + t.max(s))
                }
            };
            let rounds = (r + d - 1) / d;
            WorkloadBound {
                workload: format!("{:?}/{}/{}", w.kind, w.namespace, w.name),
                replicas: r,
                disruptions: d,
                rounds,
                termination_s: t,
                startup_s: s,
                bound_s: bound,
                issue_formula_s: rounds as f64 * (t + s),
            }
        })
        .collect();
    terms.sort_by(|a, b| b.bound_s.total_cmp(&a.bound_s));
    let bound = terms.first().map_or(0.0, |t| t.bound_s);
    (bound, terms)
}

/// Pod counts of a scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Source nodes.
    pub nodes: usize,
    /// Pods on the source pool, DaemonSet pods included.
    pub pods: usize,
    /// Pods that must move (not DaemonSet pods).
    pub to_move: usize,
    /// Workloads by kind and PDB kind (`Deployment maxUnavailable int` …).
    pub workloads: BTreeMap<String, usize>,
}

/// What `scenario` puts on the source pool.
pub fn counts(scenario: &Scenario) -> Counts {
    let nodes = scenario
        .pools
        .iter()
        .find(|p| p.name == SOURCE)
        .map_or(0, |p| p.count);
    let mut c = Counts {
        nodes,
        // kube-proxy, the simulator's own DaemonSet.
        pods: nodes,
        ..Default::default()
    };
    for w in &scenario.workloads {
        let pdb = match &w.pdb {
            None => "no PDB".to_string(),
            Some(b) => {
                let (name, v) = match (&b.max_unavailable, &b.min_available) {
                    (Some(v), _) => ("maxUnavailable", v),
                    (None, Some(v)) => ("minAvailable", v),
                    (None, None) => ("empty", &Value::Null),
                };
                let how = if v.is_string() { "%" } else { "int" };
                format!("{name} {how}")
            }
        };
        let key = match w.kind {
            WorkloadKind::DaemonSet => "DaemonSet".to_string(),
            WorkloadKind::Pod => "bare Pod".to_string(),
            kind => format!("{kind:?}, {pdb}"),
        };
        *c.workloads.entry(key).or_default() += 1;
        match w.kind {
            WorkloadKind::DaemonSet => c.pods += nodes,
            WorkloadKind::PodDisruptionBudget => {}
            _ => {
                c.pods += w.replicas as usize;
                c.to_move += w.replicas as usize;
            }
        }
    }
    c
}
