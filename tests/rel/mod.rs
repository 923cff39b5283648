//! What the reliability tests (`tests/reliability_*.rs`) share beyond the end-to-end
//! harness (`tests/common`): seeds that are printed and replayable, and the invariants
//! every interrupted or faulted run must end in.
#![allow(dead_code)]

/// The seed of a test: `KBG_TEST_SEED` when set (to replay a failure), else `default`.
/// Printed, so a failing run's output names the seed that replays it.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("KBG_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default);
    eprintln!("{test}: seed {seed} (KBG_TEST_SEED={seed} replays it)");
    seed
}

/// A TCP proxy in front of the API server that can go silent: from [`Proxy::go_silent`]
/// on, it forwards nothing either way and answers nothing, yet keeps every connection
/// open and accepts new ones — an API server behind a VPN that stopped passing packets,
/// or one wedged under load. TLS passes through untouched.
pub struct Proxy {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    silent: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Listen on 127.0.0.1 and forward every connection to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (silent, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, rx.clone()), pump(sr, cw, rx));
                });
            }
        });
        Proxy { addr, silent }
    }

    /// From now on nothing passes, and nothing is closed.
    pub fn go_silent(&self) {
        self.silent.send_replace(true);
    }

    /// A kubeconfig for `sim` that goes through this proxy.
    pub fn kubeconfig(&self, sim: &kbg_sim::SimCluster) -> String {
        sim.kubeconfig_yaml().replace(
            &format!("127.0.0.1:{}", sim.addr().port()),
            &self.addr.to_string(),
        )
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if *silent.borrow() {
            // Hold both ends open and say nothing, for as long as the test runs.
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if *silent.borrow() {
                        continue;
                    }
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = silent.changed() => {}
        }
    }
}

/// A migration that takes a while: slow start-ups behind tight PDBs; pool beta starts
/// cordoned so every workload lands on alpha ([`open_beta`] opens it).
pub const MIGRATION: &str = r#"
version: v1.33.1
pools:
  - name: alpha
    count: 3
    version: v1.32.4
  - name: beta
    count: 3
    cordoned: true
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

/// Uncordon the scenario's beta nodes (they start cordoned so that every workload lands
/// on alpha first).
pub async fn open_beta(h: &super::common::Harness) {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};
    let nodes: Api<Node> = Api::all(h.client().await);
    for n in ["beta-0", "beta-1", "beta-2"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"unschedulable": null}})),
            )
            .await
            .unwrap();
    }
}

/// Evictions the API server accepted from kbg so far.
pub fn evictions(h: &super::common::Harness) -> usize {
    h.kbg_requests()
        .iter()
        .filter(|e| e.subresource == "eviction" && e.code == 201)
        .count()
}

/// Every node cordoned carries kbg's note saying which operation cordoned it (no cordon
/// nobody owns). Returns how many cordoned nodes there are.
pub async fn assert_cordons_owned(h: &super::common::Harness, context: &str) -> usize {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams};
    let nodes: Api<Node> = Api::all(h.client().await);
    let mut cordoned = 0;
    for n in nodes.list(&ListParams::default()).await.unwrap().items {
        if n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true) {
            continue;
        }
        cordoned += 1;
        let note = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kbg.io/cordoned"));
        assert!(
            note.is_some(),
            "{context}: node {:?} is cordoned without kbg's record of why",
            n.metadata.name
        );
    }
    cordoned
}

/// The end state of `migrate FROM TO`: every Deployment and StatefulSet at its desired
/// Ready replicas with every pod on TO, FROM's nodes cordoned with kbg's note of the
/// migration, and no PDB ever violated (the simulated cluster's books, over the whole
/// history).
pub async fn assert_migrated(h: &super::common::Harness, from: &str, to: &str) {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, ListParams};
    let client = h.client().await;
    let lp = ListParams::default();
    for d in Api::<Deployment>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items
    {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        assert_eq!(ready, want, "deployment {:?}", d.metadata.name);
    }
    for s in Api::<StatefulSet>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items
    {
        let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = s
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        assert_eq!(ready, want, "statefulset {:?}", s.metadata.name);
    }
    for p in Api::<Pod>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items
    {
        let owner = p
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.kind.clone());
        if matches!(owner.as_deref(), Some("ReplicaSet" | "StatefulSet")) {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            assert!(
                node.starts_with(&format!("{to}-")),
                "{:?} on {node}",
                p.metadata.name
            );
        }
    }
    let nodes: Api<Node> = Api::all(client);
    let source = nodes
        .list(&ListParams::default().labels(&format!("kbg.io/pool={from}")))
        .await
        .unwrap();
    for n in source.items {
        assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
        let note = n.metadata.annotations.unwrap_or_default();
        assert!(
            note.get("kbg.io/cordoned")
                .is_some_and(|v| v.contains(&format!("migrate.{from}.{to}"))),
            "{:?} is cordoned without kbg's record of why",
            n.metadata.name
        );
    }
    let stats = h.sim.stats();
    assert_eq!(stats.pdb_violations, 0, "{:?}", stats.pdbs);
}

/// A small seeded generator (splitmix64): the same seed gives the same points on every
/// machine, with no dependency for it.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
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

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

/// When a run is killed.
#[derive(Debug, Clone, Copy)]
pub enum KillAt {
    /// Once the API server has served this many requests since the run started (the
    /// simulated cluster's request counter, read every 2 ms).
    Requests(u64),
    /// This long (wall time) after the run started.
    Wall(std::time::Duration),
}

impl std::fmt::Display for KillAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillAt::Requests(n) => write!(f, "at request {n}"),
            KillAt::Wall(d) => write!(f, "after {} ms", d.as_millis()),
        }
    }
}

/// How a run that was to be killed went.
#[derive(Debug)]
pub enum Killed {
    /// Killed with SIGKILL after this many requests and this long.
    Yes {
        requests: u64,
        wall: std::time::Duration,
    },
    /// It ended on its own before the kill point, with this exit code.
    EndedFirst(Option<i32>),
}

/// Run `cmd` and SIGKILL it at `at`, unless it ends first.
pub async fn run_and_kill(
    h: &super::common::Harness,
    mut cmd: tokio::process::Command,
    at: KillAt,
) -> Killed {
    let base = h.sim.stats().requests;
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("kbg starts");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Killed::EndedFirst(status.code());
        }
        let due = match at {
            KillAt::Requests(n) => h.sim.stats().requests - base >= n,
            KillAt::Wall(t) => started.elapsed() >= t,
        };
        if due {
            child.start_kill().unwrap();
            let status = child.wait().await.unwrap();
            if status.code().is_some() {
                // It exited just before the signal reached it.
                return Killed::EndedFirst(status.code());
            }
            return Killed::Yes {
                requests: h.sim.stats().requests - base,
                wall: started.elapsed(),
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// No Lease of kbg's is held.
pub async fn assert_leases_free(h: &super::common::Harness) {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, ListParams};
    let leases: Api<Lease> = Api::namespaced(h.client().await, "kube-system");
    for l in leases.list(&ListParams::default()).await.unwrap().items {
        if l.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("kbg-pool-"))
        {
            assert_eq!(
                l.spec.and_then(|s| s.holder_identity),
                None,
                "{:?} still held",
                l.metadata.name
            );
        }
    }
}

/// The nodes whose provider ID names a machine of `pool` made by the sim provider
/// (`kbg-sim://<pool>/<machine>`), as (node, provider ID), sorted.
pub async fn sim_machines(h: &super::common::Harness, pool: &str) -> Vec<(String, String)> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams};
    let prefix = format!("kbg-sim://{pool}/");
    let nodes: Api<Node> = Api::all(h.client().await);
    let mut out: Vec<(String, String)> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| {
            let id = n.spec?.provider_id?;
            id.starts_with(&prefix)
                .then(|| (n.metadata.name.unwrap_or_default(), id))
        })
        .collect();
    out.sort();
    out
}

/// The join token the exec-provider tests give kbg (a kubeadm bootstrap token's shape).
pub const EXEC_JOIN_TOKEN: &str = "kbgjtk.execpluginjoin12";

/// A pool `name` of `count` machines made by the exec provider's example plugin
/// (`examples/exec-plugin.sh`), whose machines are JSON records under `machines_dir`; its
/// boot hook (`providers/exec/tests/support/register-node.py`) registers each machine's
/// node in `h`'s cluster, as a booting machine's kubelet would, after checking that the
/// bootstrap carries the join token `token`. `extra_boot` runs first in the hook (`sh
/// -c`), with the plugin's `KBG_MACHINE` in its environment: a non-zero exit fails the
/// machine. Returns the pool's block for `pools:` in `kbg.yaml`.
pub fn exec_pool(
    h: &super::common::Harness,
    name: &str,
    count: usize,
    machines_dir: &std::path::Path,
    extra_boot: &str,
    token: &str,
) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = h.path();
    for (file, text) in [
        ("ca.pem", h.sim.ca_pem().unwrap()),
        ("sim-token", h.sim.token()),
        ("join-token", token),
    ] {
        std::fs::write(d.join(file), text).unwrap();
    }
    let register = format!(
        "{} {} {} {} {}",
        root.join("providers/exec/tests/support/register-node.py")
            .display(),
        h.sim.server_url(),
        d.join("sim-token").display(),
        d.join("ca.pem").display(),
        d.join("join-token").display()
    );
    let boot = if extra_boot.is_empty() {
        register
    } else {
        format!("{extra_boot} && {register}")
    };
    let boot = serde_json::to_string(&boot).unwrap();
    format!(
        "  {name}:\n    provider: exec\n    version: v1.33.1\n    count: {count}\n    exec:\n      program: {}\n      config:\n        state_dir: {}\n        boot_command: {boot}\n",
        root.join("examples/exec-plugin.sh").display(),
        machines_dir.display(),
    )
}

/// A whole `kbg.yaml` with `cluster.join` (token [`EXEC_JOIN_TOKEN`]) and the one pool of
/// [`exec_pool`].
pub fn exec_pool_yaml(
    h: &super::common::Harness,
    name: &str,
    count: usize,
    machines_dir: &std::path::Path,
    extra_boot: &str,
) -> String {
    format!(
        "cluster:\n  join:\n    endpoint: {}\n    token: {EXEC_JOIN_TOKEN}\npools:\n{}",
        h.sim.addr(),
        exec_pool(h, name, count, machines_dir, extra_boot, EXEC_JOIN_TOKEN)
    )
}

/// The machines the example plugin holds for `pool` under `machines_dir`: its records
/// on disk, by name, sorted.
pub fn exec_machines(machines_dir: &std::path::Path, pool: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(machines_dir.join(pool)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let machine = name.strip_suffix(".json")?;
            (!machine.starts_with('.')).then(|| machine.to_string())
        })
        .collect();
    out.sort();
    out
}

/// The nodes of pool `pool` (label `kbg.io/pool`), by name, sorted.
pub async fn pool_node_names(h: &super::common::Harness, pool: &str) -> Vec<String> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams};
    let nodes: Api<Node> = Api::all(h.client().await);
    let mut out: Vec<String> = nodes
        .list(&ListParams::default().labels(&format!("kbg.io/pool={pool}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    out.sort();
    out
}

/// Pool alpha (three nodes) with workloads behind PDBs — 6 web replicas (maxUnavailable
/// 1), 3 db replicas (minAvailable 2), a DaemonSet — for `deploy-pool beta`, `migrate
/// alpha beta`, `teardown alpha` (with [`super::common::ALPHA_BETA`]): 9 pods to evict.
pub const REPLACE: &str = r#"
version: v1.33.1
pools:
  - name: alpha
    count: 3
    version: v1.32.4
workloads:
  - kind: Deployment
    name: web
    replicas: 6
    startup_seconds: 10
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 3
    startup_seconds: 10
    pdb: {min_available: 2}
  - kind: DaemonSet
    name: agent
"#;

/// The end state of deploy-pool beta, migrate alpha beta, teardown alpha over
/// [`REPLACE`]: beta's three machines, made once each; alpha's gone; every workload at
/// its desired Ready replicas on beta, no PDB ever violated, each of the 9 pods evicted
/// once; no cordon left; no Lease held.
pub async fn assert_replaced(h: &super::common::Harness, context: &str) {
    let beta: Vec<String> = sim_machines(h, "beta")
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(beta, ["beta-0", "beta-1", "beta-2"], "{context}");
    assert!(sim_machines(h, "alpha").await.is_empty(), "{context}");
    assert_migrated(h, "alpha", "beta").await;
    assert_eq!(
        assert_cordons_owned(h, context).await,
        0,
        "{context}: cordons left"
    );
    assert_leases_free(h).await;
    assert_eq!(
        h.sim.stats().evictions_allowed,
        9,
        "{context}: a pod evicted twice, or one not at all"
    );
    let made = h
        .kbg_requests()
        .iter()
        .filter(|e| e.resource == "nodes" && e.verb == "create" && e.code == 201)
        .count();
    assert_eq!(made, 3, "{context}: a machine made twice");
}
