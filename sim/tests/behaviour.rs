//! The cluster's behaviour through kube-rs over HTTPS: eviction exactly as the API server
//! answers it, graceful deletion, StatefulSet, Deployment and DaemonSet controllers, PDB
//! status numbers, node deletion and node lifecycle, the PDB books, the audit log,
//! faults, and the control plane.

mod common;

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::{Value, json};

/// At speed 1 a replacement pod takes 5 s of wall time to be Ready: the window in which
/// the PDB refuses.
const WEB: &str = "
pools:
  - name: alpha
    count: 3
workloads:
  - kind: Deployment
    name: web
    replicas: 3
    startup_seconds: 5
    pdb: {max_unavailable: 1}
";

/// expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed
type PdbNumbers = (i32, i32, i32, i32);

fn pdb_status(p: &PodDisruptionBudget) -> PdbNumbers {
    let s = p.status.as_ref().unwrap();
    (
        s.expected_pods,
        s.desired_healthy,
        s.current_healthy,
        s.disruptions_allowed,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_answers_like_the_api_server() {
    let (cluster, client) = common::start(WEB, 1.0).await;
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    assert_eq!(pdb_status(&pdbs.get("web").await.unwrap()), (3, 2, 3, 1));
    let pods = common::pods(&client, "default", "app=web").await;
    let names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    // 201, and the body of the API server
    let (code, headers, body) = common::raw(
        &client,
        "POST",
        &format!("/api/v1/namespaces/default/pods/{}/eviction", names[0]),
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": names[0], "namespace": "default"}}),
    )
    .await;
    assert_eq!(code, 201);
    assert!(headers.get("retry-after").is_none());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201})
    );
    let p = Api::<Pod>::default_namespaced(client.clone())
        .get(&names[0])
        .await
        .unwrap();
    assert!(
        p.metadata.deletion_timestamp.is_some(),
        "evicted pods terminate gracefully"
    );
    let dt = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap();
    assert_eq!(dt.reason.as_deref(), Some("EvictionByEvictionAPI"));
    let s = pdbs.get("web").await.unwrap();
    assert_eq!(s.status.as_ref().unwrap().disruptions_allowed, 0);
    assert!(
        s.status.as_ref().unwrap().disrupted_pods.is_none(),
        "the pod is terminating: no longer listed"
    );
    // 429: the cause, no Retry-After (kubectl 1.20's policy/v1beta1 body is accepted)
    let (code, headers, body) = common::raw(
        &client,
        "POST",
        &format!("/api/v1/namespaces/default/pods/{}/eviction", names[1]),
        json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": names[1], "namespace": "default"}}),
    )
    .await;
    assert_eq!(code, 429);
    assert!(headers.get("retry-after").is_none());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Cannot evict pod as it would violate the pod's disruption budget.",
               "reason":"TooManyRequests",
               "details":{"causes":[{"reason":"DisruptionBudget","message":"The disruption budget web needs 2 healthy pods and has 2 currently"}]},
               "code":429})
    );
    // once the replacement is Ready, the budget allows one again
    common::wait_for("replacement ready", 60, || {
        let client = client.clone();
        async move {
            let ready = common::pods(&client, "default", "app=web")
                .await
                .iter()
                .filter(|p| common::running_ready(p))
                .count();
            (ready == 3).then_some(())
        }
    })
    .await;
    assert_eq!(pdb_status(&pdbs.get("web").await.unwrap()), (3, 2, 3, 1));
    Api::<Pod>::default_namespaced(client.clone())
        .evict(&names[1], &EvictParams::default())
        .await
        .unwrap();
    // 500: two PDBs select the pod
    let extra: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web2"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})).unwrap();
    pdbs.create(&PostParams::default(), &extra).await.unwrap();
    let (code, _, body) = common::raw(
        &client,
        "POST",
        &format!("/api/v1/namespaces/default/pods/{}/eviction", names[2]),
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": names[2]}}),
    )
    .await;
    assert_eq!(code, 500);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["reason"], "InternalError");
    assert_eq!(
        s["message"],
        "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    pdbs.delete("web2", &DeleteParams::default()).await.unwrap();
    // a PDB whose spec the disruption controller has not observed yet: 429 + Retry-After: 10
    cluster.set_faults(kbg_sim::Faults {
        disruption_controller_stopped: true,
        ..Default::default()
    });
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxUnavailable": 2}})),
    )
    .await
    .unwrap();
    let (code, headers, body) = common::raw(
        &client,
        "POST",
        &format!("/api/v1/namespaces/default/pods/{}/eviction", names[2]),
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": names[2]}}),
    )
    .await;
    assert_eq!(code, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "10");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        s["details"]["causes"][0]["message"],
        "The disruption budget web is still being processed by the server."
    );
    assert_eq!(s["details"]["retryAfterSeconds"], 10);
    cluster.set_faults(kbg_sim::Faults::default());
    common::wait_for("PDB observed", 30, || {
        let pdbs = pdbs.clone();
        async move {
            let p = pdbs.get("web").await.unwrap();
            (p.status.unwrap().observed_generation == p.metadata.generation).then_some(())
        }
    })
    .await;
    // a pod that is Pending is deleted without looking at PDBs
    let pending: Pod = serde_json::from_value(
        json!({"metadata": {"name": "pending", "labels": {"app": "web"}},
        "spec": {"nodeSelector": {"nowhere": "x"}, "containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let pods_api = Api::<Pod>::default_namespaced(client.clone());
    pods_api
        .create(&PostParams::default(), &pending)
        .await
        .unwrap();
    pods_api
        .evict("pending", &EvictParams::default())
        .await
        .unwrap();
    assert!(pods_api.get_opt("pending").await.unwrap().is_none());
    // evicting a pod that does not exist
    let kube::Error::Api(s) = pods_api
        .evict("ghost", &EvictParams::default())
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "pods \"ghost\" not found")
    );
    let stats = cluster.stats();
    assert_eq!(stats.pdb_violations, 0);
    assert_eq!(stats.evictions_refused, 2);
    assert_eq!(stats.evictions_errors, 1);
    assert!(stats.evictions_allowed >= 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_delete_is_visible_then_gone() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 1\nworkloads:\n  - kind: Pod\n    name: slow\n    termination_seconds: 60\n",
        20.0,
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let before = pods.get("slow").await.unwrap();
    let rv = before.metadata.resource_version.clone().unwrap();
    let uid = before.metadata.uid.clone().unwrap();
    let deleted = pods.delete("slow", &DeleteParams::default()).await.unwrap();
    let p = deleted.left().expect("the pod, terminating");
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    let still = pods.get("slow").await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_some(),
        "visible while terminating"
    );
    // the watch sees MODIFIED (deletionTimestamp) then DELETED
    let mut w = Box::pin(
        pods.watch(&WatchParams::default().fields("metadata.name=slow"), &rv)
            .await
            .unwrap(),
    );
    let mut seen = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(p) => {
                seen.push(("MODIFIED", p.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Deleted(p) => {
                assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
                seen.push(("DELETED", true));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(seen.last(), Some(&("DELETED", true)));
    assert!(seen.contains(&("MODIFIED", true)));
    assert!(pods.get_opt("slow").await.unwrap().is_none(), "404 after");
    // a pod on no node goes at once; grace 0 forces
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "nowhere"},
        "spec": {"nodeSelector": {"no": "such"}, "containers": [{"name": "c", "image": "i"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    assert!(
        pods.delete("nowhere", &DeleteParams::default())
            .await
            .unwrap()
            .is_left()
    );
    assert!(pods.get_opt("nowhere").await.unwrap().is_none());
    assert_eq!(cluster.stats().pods_deleted, 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pod_comes_back_with_its_name_and_a_new_uid() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 2\nworkloads:\n  - kind: StatefulSet\n    name: db\n    replicas: 3\n",
        30.0,
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut names: Vec<String> = common::pods(&client, "default", "app=db")
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    let old = pods.get("db-1").await.unwrap();
    assert_eq!(
        old.metadata.labels.as_ref().unwrap()["statefulset.kubernetes.io/pod-name"],
        "db-1"
    );
    pods.evict("db-1", &EvictParams::default()).await.unwrap();
    let old_uid = old.metadata.uid.unwrap();
    let new = common::wait_for("db-1 back", 60, || {
        let pods = pods.clone();
        let old_uid = old_uid.clone();
        async move {
            pods.get_opt("db-1")
                .await
                .unwrap()
                .filter(|p| p.metadata.uid.as_deref() != Some(&old_uid) && common::running_ready(p))
        }
    })
    .await;
    assert_eq!(new.spec.unwrap().hostname.as_deref(), Some("db-1"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_move_after_cordon_and_evict() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 2\nworkloads:\n  - kind: Deployment\n    name: web\n    replicas: 4\n    pdb: {max_unavailable: 1}\n",
        30.0,
    )
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    // a new pool, created as the sim provider does: kwok nodes that boot
    for i in 0..2 {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": format!("beta-{i}"), "labels": {"kbg.io/pool": "beta"},
                "annotations": {"kwok.x-k8s.io/node": "fake", "sim.kbg.io/boot-seconds": "15"}},
            "status": {"capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}, "nodeInfo": {"kubeletVersion": "v1.33.1"}}
        }))
        .unwrap();
        let created = nodes.create(&PostParams::default(), &n).await.unwrap();
        let ready = created
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False", "booting");
    }
    common::wait_for("beta Ready", 60, || {
        let nodes = nodes.clone();
        async move {
            let l = nodes
                .list(&ListParams::default().labels("kbg.io/pool=beta"))
                .await
                .unwrap();
            l.items
                .iter()
                .all(|n| {
                    n.status
                        .as_ref()
                        .unwrap()
                        .conditions
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
                .then_some(())
        }
    })
    .await;
    let beta = nodes.get("beta-0").await.unwrap();
    assert_eq!(
        beta.status.as_ref().unwrap().capacity.as_ref().unwrap()["cpu"].0,
        "8",
        "kept what it was created with"
    );
    assert!(
        beta.spec.as_ref().unwrap().taints.is_none(),
        "the not-ready taint is gone"
    );
    // cordon alpha, then evict every web pod on it, retrying on 429 like kubectl drain
    for n in ["alpha-0", "alpha-1"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    common::wait_for("all web pods evicted", 120, || {
        let pods = pods.clone();
        let client = client.clone();
        async move {
            let mut left = 0;
            for p in common::pods(&client, "default", "app=web").await {
                let node = p
                    .spec
                    .as_ref()
                    .unwrap()
                    .node_name
                    .clone()
                    .unwrap_or_default();
                if node.starts_with("alpha") {
                    left += 1;
                    if p.metadata.deletion_timestamp.is_none() {
                        let _ = pods
                            .evict(p.metadata.name.as_deref().unwrap(), &EvictParams::default())
                            .await;
                    }
                }
            }
            (left == 0).then_some(())
        }
    })
    .await;
    common::wait_for("web Running on beta", 60, || {
        let client = client.clone();
        async move {
            let ps = common::pods(&client, "default", "app=web").await;
            (ps.len() == 4
                && ps.iter().all(|p| {
                    common::running_ready(p)
                        && p.spec
                            .as_ref()
                            .unwrap()
                            .node_name
                            .as_deref()
                            .unwrap()
                            .starts_with("beta")
                }))
            .then_some(())
        }
    })
    .await;
    let stats = cluster.stats();
    assert_eq!(stats.pdb_violations, 0);
    assert!(stats.evictions_allowed >= 4);
    let web = stats.pdbs.iter().find(|p| p.name == "web").unwrap();
    assert!(web.min_margin_seen.unwrap() >= 0, "{web:?}");
    let d = Api::<Deployment>::default_namespaced(client.clone())
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(4));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_pod_lands_on_a_new_node_and_stays_when_cordoned() {
    let (cluster, client) = common::start("pools:\n  - name: alpha\n    count: 1\n", 30.0).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "fresh", "annotations": {"kwok.x-k8s.io/node": "fake", "sim.kbg.io/boot-seconds": "3"}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let on_fresh = |client: kube::Client| async move {
        common::pods(&client, "kube-system", "k8s-app=kube-proxy")
            .await
            .into_iter()
            .find(|p| {
                p.spec.as_ref().unwrap().node_name.as_deref() == Some("fresh")
                    && common::running_ready(p)
            })
    };
    let pod = common::wait_for("kube-proxy on fresh", 60, || on_fresh(client.clone())).await;
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("DaemonSet", "kube-proxy")
    );
    nodes
        .patch(
            "fresh",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let same = on_fresh(client.clone()).await.expect("still there");
    assert_eq!(same.metadata.uid, pod.metadata.uid);
    // the node goes: so do its pods
    nodes
        .delete("fresh", &DeleteParams::default())
        .await
        .unwrap();
    assert!(on_fresh(client.clone()).await.is_none());
    let ps = common::pods(&client, "kube-system", "k8s-app=kube-proxy").await;
    assert!(
        ps.iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some("fresh"))
    );
    cluster.shutdown().await;
}

/// PDB status as the disruption controller computes it, on a table of cases: one
/// namespace per case, so selectors do not overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_status_numbers_on_a_table_of_cases() {
    // (namespace, workloads yaml, pdb spec, expected (expected, desired, current, allowed))
    let mut cases: Vec<(&str, &str, Value, PdbNumbers)> = vec![
        (
            "max-int",
            "kind: Deployment\n    replicas: 3",
            json!({"maxUnavailable": 1}),
            (3, 2, 3, 1),
        ),
        (
            "max-pct",
            "kind: Deployment\n    replicas: 3",
            json!({"maxUnavailable": "50%"}),
            (3, 1, 3, 2),
        ),
        (
            "max-zero",
            "kind: Deployment\n    replicas: 3",
            json!({"maxUnavailable": 0}),
            (3, 3, 3, 0),
        ),
        (
            "min-int",
            "kind: Deployment\n    replicas: 3",
            json!({"minAvailable": 2}),
            (3, 2, 3, 1),
        ),
        (
            "min-all",
            "kind: Deployment\n    replicas: 3",
            json!({"minAvailable": 3}),
            (3, 3, 3, 0),
        ),
        (
            "min-pct",
            "kind: Deployment\n    replicas: 3",
            json!({"minAvailable": "50%"}),
            (3, 2, 3, 1),
        ),
        (
            "min-more",
            "kind: Deployment\n    replicas: 2",
            json!({"minAvailable": 5}),
            (2, 5, 2, 0),
        ),
        (
            "sts",
            "kind: StatefulSet\n    replicas: 3",
            json!({"maxUnavailable": 1}),
            (3, 2, 3, 1),
        ),
        (
            "bare",
            "kind: Pod\n    replicas: 3",
            json!({"maxUnavailable": 1}),
            (0, 0, 3, 0),
        ),
        (
            "bare-min",
            "kind: Pod\n    replicas: 3",
            json!({"minAvailable": 1}),
            (3, 1, 3, 2),
        ),
        (
            "daemon",
            "kind: DaemonSet",
            json!({"maxUnavailable": 1}),
            (0, 0, 2, 0),
        ),
        (
            "all-pods",
            "kind: Deployment\n    replicas: 2",
            json!({"minAvailable": 1, "selector": {}}),
            (2, 1, 2, 1),
        ),
        (
            "no-selector",
            "kind: Deployment\n    replicas: 2",
            json!({"minAvailable": 1, "selector": null}),
            (0, 1, 0, 0),
        ),
    ];
    let mut yaml = String::from(
        "pools:\n  - name: alpha\n    count: 2\n    capacity: {pods: \"200\"}\nkube_proxy: false\nworkloads:\n",
    );
    for (ns, w, _, _) in &cases {
        if w.is_empty() {
            continue;
        }
        yaml.push_str(&format!("  - name: app\n    namespace: {ns}\n    {w}\n"));
    }
    let (cluster, client) = common::start(&yaml, 30.0).await;
    // pods that never become Ready (created now: a scenario starts settled)
    let unready: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "app"}}, "template": {
            "metadata": {"labels": {"app": "app"}, "annotations": {"sim.kbg.io/startup-seconds": "100000"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "unready"}})).unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "unready")
        .create(&PostParams::default(), &unready)
        .await
        .unwrap();
    common::wait_for("unready pods bound", 30, || {
        let client = client.clone();
        async move {
            let ps = common::pods(&client, "unready", "app=app").await;
            (ps.len() == 3
                && ps
                    .iter()
                    .all(|p| p.spec.as_ref().unwrap().node_name.is_some()))
            .then_some(())
        }
    })
    .await;
    cases.push(("unready", "", json!({"maxUnavailable": 1}), (3, 2, 0, 0)));
    for (ns, _, spec, _) in &cases {
        let mut spec = spec.clone();
        if spec.get("selector").is_none() {
            spec["selector"] = json!({"matchLabels": {"app": "app"}});
        } else if spec["selector"].is_null() {
            spec.as_object_mut().unwrap().remove("selector");
        }
        let pdb: PodDisruptionBudget =
            serde_json::from_value(json!({"metadata": {"name": "budget"}, "spec": spec})).unwrap();
        Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &pdb)
            .await
            .unwrap();
    }
    for (ns, _, _, want) in &cases {
        let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
        let got = common::wait_for("PDB observed", 30, || {
            let api = api.clone();
            async move {
                let p = api.get("budget").await.unwrap();
                let s = p.status.as_ref()?;
                (s.observed_generation == p.metadata.generation).then_some(p)
            }
        })
        .await;
        assert_eq!(pdb_status(&got), *want, "case {ns}");
        let cond = got
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "DisruptionAllowed")
            .unwrap()
            .clone();
        let want_reason = if *ns == "daemon" {
            "SyncFailed"
        } else if want.3 > 0 {
            "SufficientPods"
        } else {
            "InsufficientPods"
        };
        assert_eq!(cond.reason, want_reason, "case {ns}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_count_pods_taken_behind_a_pdb() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 2\nkube_proxy: false\nworkloads:\n  - kind: Deployment\n    name: web\n    replicas: 2\n    pdb: {min_available: 2}\n",
        30.0,
    )
    .await;
    let ps = common::pods(&client, "default", "app=web").await;
    let nodes: Vec<String> = ps
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    assert_ne!(nodes[0], nodes[1], "the scheduler spreads them");
    // eviction refuses; a direct delete does not, and is a violation
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    assert!(
        pods.evict(
            ps[0].metadata.name.as_deref().unwrap(),
            &EvictParams::default()
        )
        .await
        .is_err()
    );
    assert_eq!(cluster.stats().pdb_violations, 0);
    pods.delete(
        ps[0].metadata.name.as_deref().unwrap(),
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    let s = cluster.stats();
    assert_eq!(s.pdb_violations, 1);
    assert_eq!(s.pdbs[0].min_margin_seen, Some(-1));
    common::wait_for("recovered", 60, || {
        let client = client.clone();
        async move {
            (common::pods(&client, "default", "app=web")
                .await
                .iter()
                .filter(|p| common::running_ready(p))
                .count()
                == 2)
                .then_some(())
        }
    })
    .await;
    // deleting a node with a pod of the PDB: another violation, and its pods are gone
    let ps = common::pods(&client, "default", "app=web").await;
    let victim = ps
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    Api::<Node>::all(client.clone())
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let s = cluster.stats();
    assert_eq!(s.pdb_violations, 2, "{s:?}");
    let left = common::pods(&client, "default", "app=web").await;
    assert!(
        left.iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some(victim.as_str()))
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kubelet_makes_its_node_not_ready() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 1\nworkloads:\n  - kind: Pod\n    name: p\n",
        60.0,
    )
    .await;
    let (code, _, body) = common::raw(
        &client,
        "POST",
        "/sim/v1/nodes/alpha-0/stop-kubelet",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let nodes: Api<Node> = Api::all(client.clone());
    let node = common::wait_for("alpha-0 Unknown", 60, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("alpha-0").await.unwrap();
            let ready = n
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == "Unknown").then_some(n)
        }
    })
    .await;
    let taints: Vec<(String, String)> = node
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect();
    assert!(
        taints.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into())),
        "{taints:?}"
    );
    let p = Api::<Pod>::default_namespaced(client.clone())
        .get("p")
        .await
        .unwrap();
    assert!(!common::running_ready(&p), "its pods are not Ready");
    assert!(cluster.start_kubelet("alpha-0"));
    common::wait_for("pod Ready again", 60, || {
        let client = client.clone();
        async move {
            Api::<Pod>::default_namespaced(client)
                .get("p")
                .await
                .ok()
                .filter(common::running_ready)
        }
    })
    .await;
    assert!(!cluster.stop_kubelet("no-such-node"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_pods_within_surge() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 3\nkube_proxy: false\nworkloads:\n  - kind: Deployment\n    name: web\n    replicas: 4\n",
        30.0,
    )
    .await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}})),
    )
    .await
    .unwrap();
    // count live pods on a watch while the rollout runs: never more than 4 + 25% surge
    let mut w = Box::pin(
        pods.watch(&WatchParams::default().labels("app=web"), &rv)
            .await
            .unwrap(),
    );
    let mut live: std::collections::BTreeMap<String, bool> =
        common::pods(&client, "default", "app=web")
            .await
            .into_iter()
            .map(|p| (p.metadata.name.unwrap(), true))
            .collect();
    let mut max_live = 0;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                live.insert(
                    p.metadata.name.clone().unwrap(),
                    p.metadata.deletion_timestamp.is_none(),
                );
            }
            WatchEvent::Deleted(p) => {
                live.remove(p.metadata.name.as_deref().unwrap());
            }
            _ => {}
        }
        max_live = max_live.max(live.values().filter(|x| **x).count());
        let d = deps.get("web").await.unwrap();
        let s = d.status.unwrap();
        if s.updated_replicas == Some(4) && s.ready_replicas == Some(4) && s.replicas == Some(4) {
            break;
        }
    }
    assert!(max_live <= 5, "maxSurge 25% of 4 is 1: saw {max_live}");
    let ps = common::pods(&client, "default", "app=web").await;
    assert!(
        ps.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2"))
    );
    let d = deps.get("web").await.unwrap();
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let cluster = kbg_sim::SimCluster::start(kbg_sim::SimConfig {
        speed: 60.0,
        audit_log: Some(audit_path.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = common::client(&cluster).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.list(&ListParams::default()).await.unwrap();
    // 500 on configmaps only
    cluster.set_faults(kbg_sim::Faults {
        error_500: 1.0,
        resources: vec!["configmaps".into()],
        ..Default::default()
    });
    let kube::Error::Api(s) = cms.list(&ListParams::default()).await.unwrap_err() else {
        panic!()
    };
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    // 429 with Retry-After, set over HTTP
    let (code, _, body) = common::raw(
        &client,
        "PUT",
        "/sim/v1/faults",
        json!({"error_429": 1.0, "retry_after_seconds": 3}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, headers, _) = common::raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        Value::Null,
    )
    .await;
    assert_eq!(
        (code, headers.get("retry-after").unwrap().to_str().unwrap()),
        (429, "3")
    );
    // dropped connections
    cluster.set_faults(kbg_sim::Faults {
        drop: 1.0,
        verbs: vec!["get".into()],
        ..Default::default()
    });
    assert!(cms.get("x").await.is_err());
    cluster.set_faults(kbg_sim::Faults::default());
    let (code, _, stats) = common::raw(&client, "GET", "/sim/v1/stats", Value::Null).await;
    assert_eq!(code, 200);
    let stats: kbg_sim::SimStats = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats.requests_by_code.get(&500), Some(&1));
    cluster.shutdown().await;
    let lines: Vec<kbg_sim::AuditEntry> = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = &lines[0];
    assert_eq!(
        (
            first.verb.as_str(),
            first.resource.as_str(),
            first.namespace.as_str(),
            first.code
        ),
        ("list", "configmaps", "default", 200)
    );
    assert!(first.time.ends_with('Z'));
    assert!(
        lines
            .iter()
            .any(|e| e.code == 500 && e.fault.as_deref() == Some("500"))
    );
    assert!(
        lines
            .iter()
            .any(|e| e.fault.as_deref() == Some("drop") && e.verb == "get")
    );
    assert!(
        lines.iter().all(|e| !e.path.starts_with("/sim/")),
        "sim endpoints are not audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_static_pods_and_in_place_upgrade() {
    let (cluster, client) =
        common::start("version: v1.30.2\ncontrol_plane: {count: 2}\n", 60.0).await;
    let ks: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let api = ks.get("kube-apiserver-control-plane-1").await.unwrap();
    assert_eq!(
        api.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.30.2")
    );
    assert!(
        api.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("kubernetes.io/config.mirror")
    );
    assert!(common::running_ready(&api));
    for c in ["etcd", "kube-controller-manager", "kube-scheduler"] {
        assert!(
            ks.get_opt(&format!("{c}-control-plane-0"))
                .await
                .unwrap()
                .is_some(),
            "{c}"
        );
    }
    let node = Api::<Node>::all(client.clone())
        .get("control-plane-0")
        .await
        .unwrap();
    assert!(
        node.metadata
            .labels
            .unwrap()
            .contains_key("node-role.kubernetes.io/control-plane")
    );
    assert_eq!(node.spec.unwrap().taints.unwrap()[0].effect, "NoSchedule");
    // a deleted mirror pod comes back, with a new uid
    ks.delete("kube-scheduler-control-plane-0", &DeleteParams::default())
        .await
        .unwrap();
    let old = api.metadata.uid.clone();
    common::wait_for("mirror pod back", 30, || {
        let ks = ks.clone();
        async move {
            ks.get_opt("kube-scheduler-control-plane-0")
                .await
                .unwrap()
                .filter(common::running_ready)
        }
    })
    .await;
    // upgrade one master: its pods move, /version waits for the other
    let (code, _, body) = common::raw(
        &client,
        "POST",
        "/sim/v1/control-plane/control-plane-0/upgrade",
        json!({"version": "v1.31.0"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let new = common::wait_for("new apiserver", 30, || {
        let ks = ks.clone();
        async move {
            ks.get_opt("kube-apiserver-control-plane-0")
                .await
                .unwrap()
                .filter(|p| {
                    common::running_ready(p)
                        && p.spec.as_ref().unwrap().containers[0].image.as_deref()
                            == Some("registry.k8s.io/kube-apiserver:v1.31.0")
                })
        }
    })
    .await;
    assert_ne!(new.metadata.uid, old);
    assert_eq!(
        client.apiserver_version().await.unwrap().git_version,
        "v1.30.2"
    );
    cluster
        .upgrade_control_plane_node("control-plane-1", "v1.31.0")
        .unwrap();
    common::wait_for("version follows", 30, || {
        let client = client.clone();
        async move { (client.apiserver_version().await.unwrap().git_version == "v1.31.0").then_some(()) }
    })
    .await;
    let n = Api::<Node>::all(client.clone())
        .get("control-plane-1")
        .await
        .unwrap();
    assert_eq!(
        n.status.unwrap().node_info.unwrap().kubelet_version,
        "v1.31.0"
    );
    assert!(
        cluster
            .upgrade_control_plane_node("nope", "v1.31.0")
            .is_err()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_propagates_to_dependents_per_policy() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 2\nkube_proxy: false\nworkloads:\n  - {kind: Deployment, name: orphan, replicas: 2}\n  - {kind: Deployment, name: fore, replicas: 2}\n  - {kind: Deployment, name: back, replicas: 2}\n",
        30.0,
    )
    .await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::default_namespaced(client.clone());
    // Orphan: the ReplicaSet and pods stay, without their owner reference
    deps.delete("orphan", &DeleteParams::orphan())
        .await
        .unwrap();
    assert!(deps.get_opt("orphan").await.unwrap().is_none());
    let rs = rss
        .list(&ListParams::default().labels("app=orphan"))
        .await
        .unwrap()
        .items;
    assert_eq!(rs.len(), 1);
    assert!(rs[0].metadata.owner_references.is_none(), "orphaned");
    assert_eq!(
        common::pods(&client, "default", "app=orphan").await.len(),
        2
    );
    // Foreground: the Deployment waits, with a finalizer, until its dependents are gone
    let d = deps
        .delete("fore", &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .expect("still there");
    assert!(
        d.metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    common::wait_for("foreground done", 60, || {
        let deps = deps.clone();
        async move { deps.get_opt("fore").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(
        common::pods(&client, "default", "app=fore")
            .await
            .is_empty(),
        "the owner went last"
    );
    // Background (the default): the Deployment goes at once, its dependents after
    deps.delete("back", &DeleteParams::default()).await.unwrap();
    assert!(deps.get_opt("back").await.unwrap().is_none());
    common::wait_for("background done", 60, || {
        let rss = rss.clone();
        let client = client.clone();
        async move {
            (rss.list(&ListParams::default().labels("app=back"))
                .await
                .unwrap()
                .items
                .is_empty()
                && common::pods(&client, "default", "app=back")
                    .await
                    .is_empty())
            .then_some(())
        }
    })
    .await;
    // the orphans are still there
    assert_eq!(
        common::pods(&client, "default", "app=orphan").await.len(),
        2
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_pods_and_deleting_collections() {
    let (cluster, client) = common::start(
        "pools:\n  - name: alpha\n    count: 1\nkube_proxy: false\n",
        30.0,
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "manual", "labels": {"batch": "x"}},
        "spec": {"schedulerName": "my-scheduler", "containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        pods.get("manual")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none(),
        "not the default scheduler's pod"
    );
    let (code, _, body) = common::raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods/manual/binding",
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "manual"}, "target": {"kind": "Node", "name": "alpha-0"}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    common::wait_for("bound pod runs", 30, || {
        let pods = pods.clone();
        async move { pods.get("manual").await.ok().filter(common::running_ready) }
    })
    .await;
    let (code, _, _) = common::raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods/manual/binding",
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "manual"}, "target": {"kind": "Node", "name": "alpha-0"}}),
    )
    .await;
    assert_eq!(code, 409, "already bound");
    let (code, _, log) = common::raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/manual/log",
        Value::Null,
    )
    .await;
    assert_eq!(
        (code, log.as_str()),
        (200, ""),
        "simulated containers log nothing"
    );
    for i in 0..3 {
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": format!("b{i}"), "labels": {"batch": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let gone = pods
        .delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &ListParams::default().labels("batch=x"),
        )
        .await
        .unwrap();
    assert_eq!(gone.left().unwrap().items.len(), 4);
    assert!(
        common::pods(&client, "default", "batch=x").await.is_empty(),
        "grace 0: gone at once"
    );
    assert_eq!(cluster.stats().pods_deleted, 4);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_honours_selectors_affinity_taints_and_capacity() {
    let (cluster, client) = common::start(
        "
kube_proxy: false
pools:
  - {name: small, count: 2, capacity: {cpu: '1', memory: 1Gi, pods: '3'}, labels: {disk: hdd}}
  - {name: big, count: 1, capacity: {cpu: '8', memory: 8Gi}, labels: {disk: ssd}}
  - {name: gpu, count: 1, taints: [{key: gpu, value: 'yes', effect: NoSchedule}]}
",
        30.0,
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mk = |name: &str, spec: Value| -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "i", "resources": spec.get("req").cloned().unwrap_or(json!({}))}]);
        spec.as_object_mut().unwrap().remove("req");
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let cases = [
        ("selected", json!({"nodeSelector": {"disk": "ssd"}})),
        (
            "affine",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}}),
        ),
        (
            "tolerant",
            json!({"nodeSelector": {"kbg.io/pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}),
        ),
        (
            "intolerant",
            json!({"nodeSelector": {"kbg.io/pool": "gpu"}}),
        ),
        ("huge", json!({"req": {"requests": {"cpu": "16"}}})),
    ];
    for (name, spec) in &cases {
        pods.create(&PostParams::default(), &mk(name, spec.clone()))
            .await
            .unwrap();
    }
    let node_of = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get(name).await.unwrap().spec.unwrap().node_name }
    };
    common::wait_for("scheduled", 30, || {
        let pods = pods.clone();
        async move {
            let l = pods.list(&ListParams::default()).await.unwrap();
            l.items
                .iter()
                .filter(|p| p.spec.as_ref().unwrap().node_name.is_some())
                .count()
                .eq(&3)
                .then_some(())
        }
    })
    .await;
    assert_eq!(node_of("selected").await.as_deref(), Some("big-0"));
    assert!(node_of("affine").await.unwrap().starts_with("small-"));
    assert_eq!(node_of("tolerant").await.as_deref(), Some("gpu-0"));
    for name in ["intolerant", "huge"] {
        let p = common::wait_for("unschedulable condition", 30, || {
            let pods = pods.clone();
            async move {
                let p = pods.get(name).await.unwrap();
                let c = p
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "PodScheduled")?
                    .clone();
                (c.reason.as_deref() == Some("Unschedulable")).then_some(c)
            }
        })
        .await;
        let msg = p.message.unwrap();
        assert!(msg.starts_with("0/5 nodes are available:"), "{msg}");
        if name == "huge" {
            assert!(msg.contains("Insufficient cpu"), "{msg}");
        } else {
            assert!(msg.contains("untolerated taint {gpu: yes}"), "{msg}");
        }
    }
    // pods capacity: 3 per small node, the rest wait
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "fill"}, "spec": {"replicas": 8,
        "selector": {"matchLabels": {"app": "fill"}}, "template": {"metadata": {"labels": {"app": "fill"}},
        "spec": {"nodeSelector": {"disk": "hdd"}, "containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    common::wait_for("5 placed (6 slots, one taken by affine)", 30, || {
        let client = client.clone();
        async move {
            let ps = common::pods(&client, "default", "app=fill").await;
            (ps.iter()
                .filter(|p| p.spec.as_ref().unwrap().node_name.is_some())
                .count()
                == 5)
                .then_some(())
        }
    })
    .await;
    // the "affine" pod holds one of the six slots
    let placed = common::pods(&client, "default", "app=fill").await;
    assert_eq!(placed.len(), 8);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_pods_and_the_unhealthy_pod_eviction_policy() {
    let (cluster, client) = common::start(
        "kube_proxy: false\npools:\n  - {name: alpha, count: 2}\nworkloads:\n  - {kind: Deployment, name: web, replicas: 4, startup_seconds: 100000, pdb: {max_unavailable: 1}}\n",
        30.0,
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    let names: Vec<String> = common::pods(&client, "default", "app=web")
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    let unready = |name: String| {
        let pods = pods.clone();
        async move {
            pods.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(
                    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                ),
            )
            .await
            .unwrap();
        }
    };
    // one pod unready: current 3 >= desired 3 > 0, so it is evicted without spending budget
    unready(names[0].clone()).await;
    assert_eq!(pdb_status(&pdbs.get("web").await.unwrap()), (4, 3, 3, 0));
    pods.evict(&names[0], &EvictParams::default())
        .await
        .unwrap();
    // two unready: current 2 < desired 3; IfHealthyBudget refuses, AlwaysAllow does not
    unready(names[1].clone()).await;
    unready(names[2].clone()).await;
    let kube::Error::Api(s) = pods
        .evict(&names[1], &EvictParams::default())
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(s.code, 429);
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})),
    )
    .await
    .unwrap();
    common::wait_for("PDB observed", 30, || {
        let pdbs = pdbs.clone();
        async move {
            let p = pdbs.get("web").await.unwrap();
            (p.status.unwrap().observed_generation == p.metadata.generation).then_some(())
        }
    })
    .await;
    pods.evict(&names[1], &EvictParams::default())
        .await
        .unwrap();
    // a Ready pod still needs budget
    let kube::Error::Api(s) = pods
        .evict(&names[3], &EvictParams::default())
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(s.code, 429);
    assert_eq!(cluster.stats().pdb_violations, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_nodes_and_full_grace_pods() {
    let (cluster, client) = common::start(
        "kube_proxy: false\npools:\n  - {name: alpha, count: 1}\nworkloads:\n  - {kind: Pod, name: slow, full_grace: true, grace_period_seconds: 40}\n",
        20.0,
    )
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, ann) in [
        (
            "stuck",
            json!({"kwok.x-k8s.io/node": "fake", "sim.kbg.io/never-ready": "true", "sim.kbg.io/boot-seconds": "1"}),
        ),
        (
            "faulty-0",
            json!({"kwok.x-k8s.io/node": "fake", "sim.kbg.io/boot-seconds": "1"}),
        ),
        (
            "fine",
            json!({"kwok.x-k8s.io/node": "fake", "sim.kbg.io/boot-seconds": "1"}),
        ),
    ] {
        if name == "faulty-0" {
            cluster.set_faults(kbg_sim::Faults {
                never_ready_nodes: vec!["faulty-*".into()],
                ..Default::default()
            });
        }
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": ann}}))
                .unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    common::wait_for("fine Ready", 30, || {
        let nodes = nodes.clone();
        async move { nodes.get("fine").await.ok().filter(ready) }
    })
    .await;
    // 1 sim-second of boot is long past for the others too
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ready(&nodes.get("stuck").await.unwrap()));
    assert!(!ready(&nodes.get("faulty-0").await.unwrap()));
    // full grace: 40 sim-seconds = 2 s of wall time, measured in sim time
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let t0 = cluster.now();
    pods.delete("slow", &DeleteParams::default()).await.unwrap();
    common::wait_for("slow gone", 60, || {
        let pods = pods.clone();
        async move { pods.get_opt("slow").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let took = cluster.now().duration_since(t0).as_secs_f64();
    assert!(
        took >= 40.0,
        "took {took} sim-seconds: the whole grace period"
    );
    cluster.shutdown().await;
}
