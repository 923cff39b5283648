//! Masters upgraded in place, end to end: `kbg plan` on three masters and two pools two
//! minors apart (snapshots), `kbg upgrade-control-plane` with each method (kubeadm and
//! manifests through the sim provider's run-command, charm through the juju test
//! double), a failing second master (exit 1, the cluster still serving, the state
//! recorded, a rerun finishing), a transient failure repeated after a pause, the
//! refusals that touch nothing (a skipped minor, a downgrade, kubelets left behind,
//! `--dry-run`), and `deploy-pool` refusing a pool newer than the oldest API server.
//!
//! What happened to the masters is read from the cluster itself: a watch on the
//! kube-apiserver mirror pods and the nodes, ordered by resourceVersion.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::Harness;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher};
use serde_json::{Value, json};

/// Three masters at v1.33.1; pool alpha two minors behind (v1.31.4), beta at v1.33.1.
const SCENARIO: &str = r#"
version: v1.33.1
control_plane: {count: 3}
kube_proxy: false
pools:
  - name: alpha
    count: 2
    version: v1.31.4
  - name: beta
    count: 2
    version: v1.33.1
"#;

fn kbg_yaml(method: &str) -> String {
    format!(
        r#"
control_plane:
  method: {method}
  provider: sim
  available_versions: [v1.33.1, v1.33.4, v1.34.0, v1.34.2, v1.35.1]
  master_timeout: 5m
  retry_pause: 10s
  retries: 1
pools:
  alpha:
    provider: sim
    version: v1.31.4
    count: 2
  beta:
    provider: sim
    version: v1.33.1
    count: 2
"#
    )
}

const MASTERS: [&str; 3] = ["control-plane-0", "control-plane-1", "control-plane-2"];

/// The image tags of a master's kube-apiserver, kube-controller-manager and
/// kube-scheduler, and its kubelet's version.
async fn master(client: &kube::Client, name: &str) -> (Vec<String>, String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let mut tags = Vec::new();
    for c in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let p = pods.get(&format!("{c}-{name}")).await.unwrap();
        let image = p.spec.unwrap().containers[0].image.clone().unwrap();
        tags.push(image.rsplit_once(':').unwrap().1.to_string());
    }
    let node = Api::<Node>::all(client.clone()).get(name).await.unwrap();
    (
        tags,
        node.status.unwrap().node_info.unwrap().kubelet_version,
    )
}

fn all(v: &str) -> (Vec<String>, String) {
    (vec![v.to_string(); 3], v.to_string())
}

/// kbg's record of the upgrade, from its state ConfigMap.
async fn record(client: &kube::Client) -> Value {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = cms.get("kbg-state").await.unwrap();
    serde_json::from_str(&cm.data.unwrap()["upgrade-control-plane"]).unwrap()
}

/// What the masters went through while a command ran, in the cluster's own order
/// (resourceVersion): `control-plane <node> <tag>` when a master's kube-apiserver pod
/// comes back with a new image, `kubelet <node> <version>` when its node reports a new
/// kubelet.
struct Changes {
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Changes {
    /// Start watching; returns once both watches have listed what is there.
    async fn watch(client: &kube::Client) -> Changes {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(2);
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        let nodes: Api<Node> = Api::all(client.clone());
        let (s1, t1) = (seen.clone(), tx.clone());
        let pod_task = tokio::spawn(async move {
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let stream = watcher(
                pods,
                watcher::Config::default().labels("component=kube-apiserver"),
            );
            futures::pin_mut!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                let (p, init) = match ev {
                    watcher::Event::Apply(p) => (p, false),
                    watcher::Event::InitApply(p) => (p, true),
                    watcher::Event::InitDone => {
                        let _ = t1.send(()).await;
                        continue;
                    }
                    _ => continue,
                };
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                let image = p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default();
                let tag = image
                    .rsplit_once(':')
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_default();
                if last
                    .insert(node.clone(), tag.clone())
                    .is_some_and(|t| t != tag)
                    && !init
                {
                    let rv = p.metadata.resource_version.unwrap().parse().unwrap();
                    s1.lock()
                        .unwrap()
                        .push((rv, format!("control-plane {node} {tag}")));
                }
            }
        });
        let (s2, t2) = (seen.clone(), tx);
        let node_task = tokio::spawn(async move {
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let stream = watcher(nodes, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                let (n, init) = match ev {
                    watcher::Event::Apply(n) => (n, false),
                    watcher::Event::InitApply(n) => (n, true),
                    watcher::Event::InitDone => {
                        let _ = t2.send(()).await;
                        continue;
                    }
                    _ => continue,
                };
                let name = n.metadata.name.clone().unwrap();
                let v = n
                    .status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.kubelet_version.clone())
                    .unwrap_or_default();
                if last.insert(name.clone(), v.clone()).is_some_and(|x| x != v) && !init {
                    let rv = n.metadata.resource_version.unwrap().parse().unwrap();
                    s2.lock().unwrap().push((rv, format!("kubelet {name} {v}")));
                }
            }
        });
        for _ in 0..2 {
            tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
                .await
                .expect("the watches list within a minute");
        }
        Changes {
            seen,
            tasks: vec![pod_task, node_task],
        }
    }

    /// Everything seen so far, in the cluster's order.
    fn so_far(&self) -> Vec<String> {
        let mut v = self.seen.lock().unwrap().clone();
        v.sort();
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// Wait (bounded) until `n` changes are seen, then stop and return them in order.
    async fn stop_after(self, n: usize) -> Vec<String> {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while self.seen.lock().unwrap().len() < n {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        for t in &self.tasks {
            t.abort();
        }
        self.so_far()
    }
}

/// The changes of a complete upgrade to `v`: every control plane, then every kubelet.
fn masters_then_kubelets(v: &str) -> Vec<String> {
    MASTERS
        .iter()
        .map(|m| format!("control-plane {m} {v}"))
        .chain(MASTERS.iter().map(|m| format!("kubelet {m} {v}")))
        .collect()
}

async fn annotate(client: &kube::Client, node: &str, value: Value) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sim.kbg.io/fail-upgrade": value}}})),
        )
        .await
        .unwrap();
}

/// After a complete upgrade to `v`: every master and kubelet at `v`, `/version` too, no
/// master left cordoned or carrying kbg's cordon note.
async fn assert_upgraded(client: &kube::Client, v: &str) {
    for m in MASTERS {
        assert_eq!(master(client, m).await, all(v), "{m}");
        let node = Api::<Node>::all(client.clone()).get(m).await.unwrap();
        assert_ne!(
            node.spec.unwrap().unschedulable,
            Some(true),
            "{m} uncordoned"
        );
        assert!(
            !node
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("kbg.io/cordoned"),
            "{m}: kbg's note removed"
        );
    }
    assert_eq!(client.apiserver_version().await.unwrap().git_version, v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_components_kubelets_and_hops() {
    let h = Harness::start(SCENARIO, &kbg_yaml("kubeadm")).await;
    // Two minors up: two hops, and alpha (v1.31) must be replaced before the second.
    let run = h.kbg(&["plan", "--to", "v1.35.1"]).await;
    run.expect_code(0);
    insta::assert_snapshot!("plan_to_v1_35_1", run.stdout);
    // Without --to: the next patch and the next minor, from kbg.yaml.
    let run = h.kbg(&["plan"]).await;
    run.expect_code(0);
    insta::assert_snapshot!("plan_offers", run.stdout);

    let plan = h.kbg(&["plan", "--to", "1.35.1", "-o", "json"]).await;
    plan.expect_code(0);
    let p = plan.json();
    assert_eq!(p["hops"], json!(["v1.34.2", "v1.35.1"]));
    let replace: Vec<&Value> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "replace-pool" && s["required"] == true)
        .collect();
    assert_eq!(replace.len(), 1, "{p}");
    assert_eq!(
        (&replace[0]["pool"], &replace[0]["to"], &replace[0]["hop"]),
        (&json!("alpha"), &json!("v1.34.2"), &json!(2))
    );
    let yaml = h.kbg(&["plan", "--to", "v1.34.0", "-o", "yaml"]).await;
    yaml.expect_code(0);
    assert!(
        yaml.stdout.contains("control_plane_version: v1.33.1"),
        "{}",
        yaml.stdout
    );

    // Down across a minor: refused, one line.
    let run = h.kbg(&["plan", "--to", "v1.32.9"]).await;
    run.expect_code(2);
    assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("never downgraded"), "{}", run.stderr);
    // A version that is not one: clap's usage error naming the accepted forms.
    let run = h.kbg(&["plan", "--to", "1.x"]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("accepted forms: v1.31.2, 1.31.2"),
        "{}",
        run.stderr
    );
    assert!(
        h.kbg_writes().is_empty(),
        "plan wrote: {:?}",
        h.kbg_writes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_upgrades_three_masters_then_their_kubelets() {
    let h = Harness::start(SCENARIO, &kbg_yaml("kubeadm")).await;
    let client = h.client().await;
    let changes = Changes::watch(&client).await;
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(0);
    assert_upgraded(&client, "v1.34.0").await;
    // Every control plane before any kubelet: a kubelet may not be newer than the
    // oldest API server.
    assert_eq!(
        changes.stop_after(6).await,
        masters_then_kubelets("v1.34.0"),
        "each master's control plane in turn, then the kubelets"
    );
    // kubeadm's apply recorded the version `upgrade node` followed.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let doc =
        cms.get("kubeadm-config").await.unwrap().data.unwrap()["ClusterConfiguration"].clone();
    assert!(doc.contains("kubernetesVersion: v1.34.0"), "{doc}");
    // The masters were cordoned for their kubelets (with kbg's note), then uncordoned.
    let patches = h
        .kbg_writes()
        .into_iter()
        .filter(|e| e.resource == "nodes" && e.verb == "patch")
        .count();
    assert_eq!(patches, 6, "a cordon and an uncordon per master");
    let rec = record(&client).await;
    assert_eq!(rec["state"], "upgrade-complete");
    assert_eq!(rec["phase"], "done");
    assert_eq!(
        (&rec["from_version"], &rec["to_version"]),
        (&json!("v1.33.1"), &json!("v1.34.0"))
    );
    assert!(
        rec["etcd_backup"]
            .as_str()
            .unwrap()
            .starts_with("control-plane-0:/var/lib/kbg/backups/etcd-snapshot-v1.33.1-"),
        "{rec}"
    );
    for m in rec["masters"].as_array().unwrap() {
        assert_eq!(
            (&m["status"], &m["attempts"]),
            (&json!("upgraded"), &json!(1)),
            "{m}"
        );
    }
    // kbg status shows each master's versions and the upgrade's state.
    let status = h.kbg(&["status", "-o", "json"]).await;
    status.expect_code(0);
    let s = status.json();
    assert_eq!(s["control_plane_upgrade"]["state"], "upgrade-complete");
    for m in s["masters"].as_array().unwrap() {
        assert_eq!(m["control_plane_version"], "v1.34.0", "{m}");
        assert_eq!(m["kubelet_version"], "v1.34.0", "{m}");
        assert_eq!(m["upgrade_status"], "upgraded", "{m}");
    }
    let table = h.kbg(&["status"]).await;
    assert!(
        table
            .stdout
            .contains("control-plane upgrade v1.33.1 → v1.34.0 (kubeadm): upgrade-complete"),
        "{}",
        table.stdout
    );
    // Again: nothing to do, nothing written.
    let before = h.kbg_writes().len();
    let again = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    again.expect_code(0);
    assert!(again.stderr.contains("nothing to do"), "{}", again.stderr);
    assert_eq!(h.kbg_writes().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_upgrade_three_masters() {
    let h = Harness::start(SCENARIO, &kbg_yaml("manifests")).await;
    let client = h.client().await;
    let dry = h
        .kbg(&["upgrade-control-plane", "v1.34.0", "--dry-run"])
        .await;
    dry.expect_code(0);
    assert!(
        dry.stdout
            .contains(r#"#\1:v1.34.0#" "/etc/kubernetes/manifests/kube-apiserver.yaml""#),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("KUBELET_IMAGE_TAG=v1.34.0"),
        "{}",
        dry.stdout
    );
    assert!(
        h.kbg_writes().is_empty(),
        "--dry-run wrote: {:?}",
        h.kbg_writes()
    );
    let changes = Changes::watch(&client).await;
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(0);
    assert_upgraded(&client, "v1.34.0").await;
    assert_eq!(
        changes.stop_after(6).await,
        masters_then_kubelets("v1.34.0")
    );
    assert_eq!(record(&client).await["state"], "upgrade-complete");
}

/// `tests/fake-juju/juju` of the Juju provider: a test double of the `juju` CLI.
fn fake_juju() -> PathBuf {
    assert!(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("python3").is_file()))
            .unwrap_or(false),
        "the juju test double needs python3 on PATH; run scripts/test-setup"
    );
    Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/juju/tests/fake-juju/juju")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charm_upgrades_three_masters_through_juju() {
    let juju = fake_juju();
    let h = Harness::start(SCENARIO, "").await;
    let client = h.client().await;
    // The double's model: the control-plane application with a unit on each master,
    // and etcd; its `upgrade` action upgrades a unit's simulated master.
    let data = h.path().join("juju");
    std::fs::create_dir_all(&data).unwrap();
    let ca = data.join("ca.pem");
    std::fs::write(&ca, h.sim.ca_pem().unwrap()).unwrap();
    let unit = |m: usize| json!({"machine": m.to_string(), "phase": 2, "life": "alive"});
    let app = |charm: &str, units: Value| {
        json!({"charm": charm, "channel": "1.33/stable", "constraints": null, "base": "ubuntu@22.04",
               "config": {"channel": "1.33/stable"}, "relations": {}, "units": units, "next_unit": 3})
    };
    let state = json!({
        "version": "3.6.4",
        "model": "k8s",
        "applications": {
            "kubernetes-control-plane": app("kubernetes-control-plane", json!({
                "kubernetes-control-plane/0": unit(0),
                "kubernetes-control-plane/1": unit(1),
                "kubernetes-control-plane/2": unit(2),
            })),
            "etcd": app("etcd", json!({"etcd/0": unit(3)})),
        },
        "machines": {
            "0": {"hostname": "control-plane-0", "instance-id": "m-0", "dns-name": "10.45.0.10"},
            "1": {"hostname": "control-plane-1", "instance-id": "m-1", "dns-name": "10.45.0.11"},
            "2": {"hostname": "control-plane-2", "instance-id": "m-2", "dns-name": "10.45.0.12"},
            "3": {"hostname": "etcd-0", "instance-id": "m-3", "dns-name": "10.45.0.13"},
        },
        "next_machine": 4,
        "snap_versions": {"1.34/stable": "v1.34.0"},
        "kubernetes": {"server": h.sim.server_url(), "token": h.sim.token(), "ca_file": ca},
    });
    std::fs::write(data.join("fake-juju.json"), state.to_string()).unwrap();
    h.write_config(&format!(
        "control_plane:\n  method: charm\n  juju:\n    juju: {}\n    data_dir: {}\n    model: k8s\n    poll_interval_secs: 0.01\n    action_timeout_secs: 60\npools:\n  alpha: {{provider: sim, version: v1.31.4, count: 2}}\n  beta: {{provider: sim, version: v1.33.1, count: 2}}\n",
        juju.display(),
        data.display()
    ));
    let changes = Changes::watch(&client).await;
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(0);
    assert_upgraded(&client, "v1.34.0").await;
    // The charm's action moves a master's snaps together: master after master.
    let seen = changes.stop_after(6).await;
    let per_master: Vec<String> = seen
        .iter()
        .map(|c| c.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        per_master,
        [0, 0, 1, 1, 2, 2].map(|i| MASTERS[i].to_string()),
        "{seen:?}"
    );
    // What kbg ran, in order: the etcd snapshot, the charm refreshed once to the
    // target's channel with manual upgrades, then each master's `upgrade` action.
    let calls: Vec<String> = std::fs::read_to_string(data.join("fake-juju-calls.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let a = a.as_str().unwrap();
                    if a.contains("kbg-juju-config-") {
                        "<file>"
                    } else {
                        a
                    }
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.starts_with("status") && l != "version")
        .collect();
    assert_eq!(
        calls,
        [
            "run -m k8s --format=json --wait=60s etcd/0 snapshot",
            "refresh -m k8s kubernetes-control-plane --channel 1.34/stable",
            "config -m k8s kubernetes-control-plane --file <file>",
            "run -m k8s --format=json --wait=60s kubernetes-control-plane/0 upgrade",
            "run -m k8s --format=json --wait=60s kubernetes-control-plane/1 upgrade",
            "run -m k8s --format=json --wait=60s kubernetes-control-plane/2 upgrade",
        ]
    );
    let model: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("fake-juju.json")).unwrap())
            .unwrap();
    assert_eq!(
        model["applications"]["kubernetes-control-plane"]["config"],
        json!({"channel": "1.34/stable", "require-manual-upgrade": true})
    );
    let rec = record(&client).await;
    assert_eq!(
        (&rec["state"], &rec["method"]),
        (&json!("upgrade-complete"), &json!("charm"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_second_master_stops_the_run_and_a_rerun_finishes() {
    let h = Harness::start(SCENARIO, &kbg_yaml("kubeadm")).await;
    let client = h.client().await;
    annotate(&client, "control-plane-1", json!("true")).await;
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(1);
    let err = run.error_lines().join("\n");
    assert!(err.contains("master control-plane-1 (2 of 3)"), "{err}");
    assert!(
        err.contains("recorded as upgrading-second-master-failed"),
        "{err}"
    );
    assert!(
        err.contains("the cluster is still serving (/readyz ok, /version v1.33.1)"),
        "{err}"
    );
    assert!(
        run.stderr.contains("repeating in 10s"),
        "one retry first: {}",
        run.stderr
    );
    // Still serving: /readyz answers, lists work, the first master runs v1.34.0.
    let readyz = client
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(readyz, "ok");
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 7);
    assert_eq!(
        master(&client, "control-plane-0").await,
        (vec!["v1.34.0".to_string(); 3], "v1.33.1".to_string())
    );
    assert_eq!(master(&client, "control-plane-1").await, all("v1.33.1"));
    assert_eq!(master(&client, "control-plane-2").await, all("v1.33.1"));
    let rec = record(&client).await;
    assert_eq!(rec["state"], "upgrading-second-master-failed");
    assert_eq!(rec["phase"], "failed");
    let hosts: Vec<(&Value, &Value)> = rec["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (&m["status"], &m["attempts"]))
        .collect();
    assert_eq!(
        hosts,
        [
            (&json!("upgraded-control-plane"), &json!(1)),
            (&json!("upgrading-control-plane-failed"), &json!(2)),
            (&json!("pending"), &json!(0)),
        ]
    );
    let status = h.kbg(&["status"]).await;
    assert!(
        status
            .stdout
            .contains("(kubeadm): upgrading-second-master-failed: master control-plane-1"),
        "{}",
        status.stdout
    );
    // Another version while this one is unfinished: refused, nothing touched.
    let writes = h.kbg_writes().len();
    let other = h.kbg(&["upgrade-control-plane", "v1.33.4"]).await;
    other.expect_code(2);
    assert!(other.stderr.contains("is unfinished"), "{}", other.stderr);
    assert_eq!(h.kbg_writes().len(), writes);

    // Fixed; the third master fails once (transient) and is repeated after the pause.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let first_uid = pods
        .get("kube-apiserver-control-plane-0")
        .await
        .unwrap()
        .metadata
        .uid;
    let changes = Changes::watch(&client).await;
    annotate(&client, "control-plane-1", Value::Null).await;
    annotate(&client, "control-plane-2", json!("1")).await;
    let rerun = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    rerun.expect_code(0);
    assert!(
        rerun.stderr.contains("master control-plane-2"),
        "{}",
        rerun.stderr
    );
    assert!(
        rerun.stderr.contains("repeating in 10s"),
        "{}",
        rerun.stderr
    );
    assert_upgraded(&client, "v1.34.0").await;
    // The rerun resumed at the second master: the first one's API server was not
    // restarted, its kubelet waited for the others.
    assert_eq!(
        changes.stop_after(5).await,
        masters_then_kubelets("v1.34.0")[1..]
    );
    assert_eq!(
        pods.get("kube-apiserver-control-plane-0")
            .await
            .unwrap()
            .metadata
            .uid,
        first_uid
    );
    let rec = record(&client).await;
    assert_eq!(rec["state"], "upgrade-complete");
    let attempts: Vec<&Value> = rec["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["attempts"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(3), &json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_touch_nothing() {
    let h = Harness::start(SCENARIO, &kbg_yaml("kubeadm")).await;
    let client = h.client().await;
    for (args, says) in [
        (
            vec!["upgrade-control-plane", "v1.35.1"],
            "the control plane is upgraded one minor version at a time (upstream version skew policy); upgrade to v1.34 first",
        ),
        (
            vec!["upgrade-control-plane", "1.32.9"],
            "never downgraded across a minor version",
        ),
        (vec!["upgrade-control-plane", "v1.x"], "accepted forms"),
    ] {
        let run = h.kbg(&args).await;
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(
            run.error_lines().len() == 1 || run.stderr.starts_with("error: invalid value"),
            "{args:?}: one line: {}",
            run.stderr
        );
    }
    // No control_plane: block.
    h.write_config("pools: {}\n");
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("control_plane.method: is required"),
        "{}",
        run.stderr
    );
    // A bad provider block is named under control_plane.
    h.write_config("control_plane:\n  method: kubeadm\n  provider: sim\n  sim: {boots: 1}\n");
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("control_plane.sim"), "{}", run.stderr);
    // A replacement script that does not render.
    std::fs::write(
        h.path().join("mine.sh.j2"),
        "kubeadm upgrade apply {{ verison }}\n",
    )
    .unwrap();
    h.write_config(
        "control_plane:\n  method: kubeadm\n  provider: sim\n  templates: {first_master: mine.sh.j2}\n",
    );
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("control_plane.templates.first_master: "),
        "{}",
        run.stderr
    );
    assert!(
        h.kbg_writes().is_empty(),
        "refusals wrote: {:?}",
        h.kbg_writes()
    );
    assert_eq!(
        client.apiserver_version().await.unwrap().git_version,
        "v1.33.1"
    );

    // Kubelets that would fall more than three minors behind: replace their pool first.
    let old = Harness::start(
        "version: v1.33.1\nkube_proxy: false\npools:\n  - {name: old, count: 1, version: v1.30.9}\n",
        "control_plane: {method: kubeadm, provider: sim}\npools:\n  old: {provider: sim, version: v1.30.9, count: 1}\n",
    )
    .await;
    let run = old.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("pool old: kubelet v1.30.9 is 4 minors older than kube-apiserver v1.34.0"),
        "{}",
        run.stderr
    );
    assert!(old.kbg_writes().is_empty());
    // A node that is not Ready: refused (exit 1), nothing touched.
    assert!(old.sim.stop_kubelet("old-0"));
    let client = old.client().await;
    common::wait_for("old-0 NotReady", 120, || {
        let nodes: Api<Node> = Api::all(client.clone());
        async move {
            let n = nodes.get("old-0").await.ok()?;
            let ready = n
                .status?
                .conditions?
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (!ready).then_some(())
        }
    })
    .await;
    let run = old.kbg(&["upgrade-control-plane", "v1.33.4"]).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("not every node is Ready (old-0)"),
        "{}",
        run.stderr
    );
    assert!(old.kbg_writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_pool_newer_than_the_oldest_api_server_is_refused() {
    let h = Harness::start(
        SCENARIO,
        "pools:\n  gamma:\n    provider: sim\n    version: v1.34.0\n    count: 1\n",
    )
    .await;
    // Half-way through an upgrade: one master runs v1.34.0, the others v1.33.1.
    h.sim
        .upgrade_master(
            "control-plane-0",
            "v1.34.0",
            &[
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ],
        )
        .unwrap();
    let client = h.client().await;
    common::wait_for("control-plane-0 at v1.34.0", 60, || {
        let client = client.clone();
        async move {
            let (tags, _) = master(&client, "control-plane-0").await;
            (tags == vec!["v1.34.0".to_string(); 3]).then_some(())
        }
    })
    .await;
    let run = h.kbg(&["deploy-pool", "gamma"]).await;
    run.expect_code(2);
    assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("pools.gamma.version: kubelet v1.34.0 is newer than kube-apiserver v1.33.1"),
        "{}",
        run.stderr
    );
    assert!(h.kbg_writes().is_empty(), "wrote: {:?}", h.kbg_writes());
    assert!(
        Api::<Node>::all(client.clone())
            .get_opt("gamma-0")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_that_does_not_come_back_stays_cordoned_and_a_rerun_finishes() {
    // A kubelet script that installs the package but never restarts the kubelet: the
    // node keeps reporting the old version until kbg gives up.
    let yaml = "control_plane:\n  method: kubeadm\n  provider: sim\n  master_timeout: 30s\n  templates: {kubelet: lazy.sh.j2}\n";
    let h = Harness::start("version: v1.33.1\nkube_proxy: false\n", yaml).await;
    std::fs::write(
        h.path().join("lazy.sh.j2"),
        "#!/bin/sh\napt-get install -y \"kubelet={{ semver }}-*\"\n",
    )
    .unwrap();
    let client = h.client().await;
    let run = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    run.expect_code(1);
    let err = run.error_lines().join("\n");
    assert!(
        err.contains("the kubelet of master control-plane-0 (left cordoned by kbg)"),
        "{err}"
    );
    assert!(err.contains("timed out after 30s (cluster time)"), "{err}");
    let rec = record(&client).await;
    assert_eq!(rec["state"], "upgrading-kubelets-failed");
    assert_eq!(rec["masters"][0]["status"], "upgrading-kubelet-failed");
    let node = Api::<Node>::all(client.clone())
        .get("control-plane-0")
        .await
        .unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true));
    let note = &node.metadata.annotations.unwrap()["kbg.io/cordoned"];
    assert!(
        note.contains("\"operation\":\"upgrade-control-plane\""),
        "{note}"
    );
    let status = h.kbg(&["status"]).await;
    assert!(
        status.stdout.contains("yes (kbg upgrade-control-plane)"),
        "{}",
        status.stdout
    );

    // The shipped script restarts the kubelet: the rerun finishes and uncordons.
    h.write_config("control_plane: {method: kubeadm, provider: sim}\n");
    let rerun = h.kbg(&["upgrade-control-plane", "v1.34.0"]).await;
    rerun.expect_code(0);
    assert_eq!(master(&client, "control-plane-0").await, all("v1.34.0"));
    let node = Api::<Node>::all(client.clone())
        .get("control-plane-0")
        .await
        .unwrap();
    assert_ne!(node.spec.unwrap().unschedulable, Some(true));
    assert_eq!(record(&client).await["state"], "upgrade-complete");
}
