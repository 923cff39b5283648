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
