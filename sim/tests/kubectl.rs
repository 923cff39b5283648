//! Compatibility with a client no one here wrote: Debian's kubectl 1.20
//! (`KBG_TEST_KUBECTL`, else `kubectl` on PATH; `scripts/test-setup` installs it).
//! `get nodes`, `create -f`, `cordon`, `uncordon`, `drain` (succeeding, and blocked by a
//! PDB until the PDB allows it), and `kbg-sim` serving in the foreground.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The kubectl to test against.
fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("KBG_TEST_KUBECTL")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("kubectl");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "kubectl not found: set KBG_TEST_KUBECTL to Debian's kubectl 1.20 (scripts/test-setup installs it and prints the variable)"
    );
}

/// A kubectl bound to one cluster, with its own HOME (discovery cache).
struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(cluster: &kbg_sim::SimCluster) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        cluster
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Kubectl {
            bin: kubectl_path(),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// `kubectl get nodes`: NAME STATUS ROLES AGE VERSION, row of `node`.
fn node_row(out: &str, node: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("{node} in:\n{out}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

const SCENARIO: &str = "
version: v1.33.1
pools:
  - name: alpha
    count: 2
    version: v1.32.4
  - name: beta
    count: 2
  - name: gamma
    count: 1
    cordoned: true
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_shows_status_roles_and_versions() {
    let (cluster, _client) = common::start(SCENARIO, 10.0).await;
    let k = Kubectl::new(&cluster);
    let (_, version, _) = k.run(&["version", "--client"]).await;
    println!(
        "testing against {}: {}",
        k.bin.display(),
        version.lines().next().unwrap_or("")
    );
    let out = k.ok(&["get", "nodes"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(
        node_row(&out, "control-plane-0")[1..3],
        ["Ready", "control-plane"]
    );
    assert_eq!(node_row(&out, "control-plane-0")[4], "v1.33.1");
    assert_eq!(node_row(&out, "alpha-0")[1..3], ["Ready", "<none>"]);
    assert_eq!(node_row(&out, "alpha-0")[4], "v1.32.4");
    assert_eq!(node_row(&out, "gamma-0")[1], "Ready,SchedulingDisabled");
    let wide = k.ok(&["get", "nodes", "-o", "wide"]).await;
    assert!(
        wide.lines().next().unwrap().contains("INTERNAL-IP"),
        "{wide}"
    );
    let (_, server, _) = k.run(&["version"]).await;
    assert!(server.contains("v1.33.1"), "{server}");
    cluster.shutdown().await;
}

const WEB: &str = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        resources:
          requests: {cpu: 100m, memory: 64Mi}
        volumeMounts:
        - {name: cache, mountPath: /cache}
      volumes:
      - name: cache
        emptyDir: {}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app: web}
";

/// Waits until the web pods are all Running and Ready, none on `avoid`; returns their
/// nodes.
async fn web_settled(client: &kube::Client, avoid: &[&str]) -> Vec<String> {
    common::wait_for("web pods Running", 90, || {
        let client = client.clone();
        let avoid: Vec<String> = avoid.iter().map(|s| s.to_string()).collect();
        async move {
            let ps = common::pods(&client, "default", "app=web").await;
            let nodes: Vec<String> = ps
                .iter()
                .filter_map(|p| p.spec.as_ref().unwrap().node_name.clone())
                .collect();
            (ps.len() == 4
                && ps.iter().all(common::running_ready)
                && nodes.iter().all(|n| !avoid.contains(n)))
            .then_some(nodes)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_cordon_uncordon_and_drain() {
    let (cluster, client) = common::start(SCENARIO, 10.0).await;
    let k = Kubectl::new(&cluster);
    let f = k.file("web.yaml", WEB);
    let out = k.ok(&["create", "-f", &f]).await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(
        out.contains("poddisruptionbudget.policy/web created"),
        "{out}"
    );
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes = web_settled(&client, &[]).await;
    let out = k.ok(&["get", "pods", "-o", "wide"]).await;
    assert_eq!(
        out.lines().filter(|l| l.contains("Running")).count(),
        4,
        "{out}"
    );
    // cordon / uncordon
    let out = k.ok(&["cordon", "beta-0"]).await;
    assert!(out.contains("node/beta-0 cordoned"), "{out}");
    assert_eq!(
        node_row(&k.ok(&["get", "nodes"]).await, "beta-0")[1],
        "Ready,SchedulingDisabled"
    );
    let out = k.ok(&["uncordon", "beta-0"]).await;
    assert!(out.contains("node/beta-0 uncordoned"), "{out}");
    assert_eq!(
        node_row(&k.ok(&["get", "nodes"]).await, "beta-0")[1],
        "Ready"
    );
    // drain the node with the most web pods
    let target = nodes
        .iter()
        .max_by_key(|n| nodes.iter().filter(|m| m == n).count())
        .unwrap()
        .clone();
    // `kubectl get -w` watches in Table form while the drain runs
    let mut watch = k
        .command(&["get", "pods", "-l", "app=web", "-w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = k
        .ok(&[
            "drain",
            &target,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ])
        .await;
    assert!(
        out.contains(&format!("node/{target} evicted"))
            || out.contains(&format!("node/{target} drained")),
        "{out}"
    );
    web_settled(&client, &[&target]).await;
    assert_eq!(
        node_row(&k.ok(&["get", "nodes"]).await, &target)[1],
        "Ready,SchedulingDisabled"
    );
    watch.start_kill().unwrap();
    let watched =
        String::from_utf8_lossy(&watch.wait_with_output().await.unwrap().stdout).into_owned();
    assert!(watched.contains("Terminating"), "{watched}");
    assert!(
        watched
            .lines()
            .any(|l| l.contains("Running") && l.split_whitespace().nth(1) == Some("1/1")),
        "{watched}"
    );
    let stats = cluster.stats();
    assert_eq!(stats.pdb_violations, 0, "{stats:?}");
    assert!(stats.evictions_allowed >= 1);
    let ua: Vec<String> = cluster.audit().into_iter().map(|e| e.user_agent).collect();
    assert!(
        ua.iter().any(|u| u.starts_with("kubectl/")),
        "kubectl's requests are audited"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_blocked_by_a_pdb_retries_until_it_allows() {
    let (cluster, client) = common::start(SCENARIO, 10.0).await;
    let k = Kubectl::new(&cluster);
    let f = k.file(
        "web.yaml",
        &WEB.replace("maxUnavailable: 1", "maxUnavailable: 0"),
    );
    k.ok(&["create", "-f", &f]).await;
    let nodes = web_settled(&client, &[]).await;
    let target = nodes[0].clone();
    let mut drain = k
        .command(&[
            "drain",
            &target,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=180s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // kubectl keeps retrying (every 5 s) while the PDB refuses
    common::wait_for("two refused evictions", 60, || {
        let n = cluster.stats().evictions_refused;
        async move { (n >= 2).then_some(()) }
    })
    .await;
    assert!(drain.try_wait().unwrap().is_none(), "drain still running");
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxUnavailable": 1}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(150), drain.wait_with_output())
        .await
        .expect("drain ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{stderr}"
    );
    web_settled(&client, &[&target]).await;
    let stats = cluster.stats();
    assert_eq!(stats.pdb_violations, 0);
    assert!(stats.evictions_refused >= 2);
    cluster.shutdown().await;
}

/// `kbg-sim` (what `kbg sim serve` runs) in the foreground: kubeconfig written once
/// serving, `export KUBECONFIG=…` printed, clean stop on SIGTERM, port freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_in_the_foreground() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.yaml");
    std::fs::write(&scenario, "pools:\n  - name: alpha\n    count: 1\n").unwrap();
    let kc = dir.path().join("kc");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbg-sim"))
        .arg("--scenario")
        .arg(&scenario)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["--speed", "30"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    let mut export = String::new();
    while let Some(l) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if l.starts_with("kbg-sim: serving ") {
            url = l.split_whitespace().nth(2).unwrap().to_string();
        }
        if let Some(p) = l.strip_prefix("export KUBECONFIG=") {
            export = p.to_string();
            break;
        }
    }
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(Path::new(&export), std::path::absolute(&kc).unwrap());
    let kubectl = kubectl_path();
    let out = tokio::process::Command::new(&kubectl)
        .args(["get", "nodes"])
        .env("KUBECONFIG", &kc)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("alpha-0"));
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port freed");
}
