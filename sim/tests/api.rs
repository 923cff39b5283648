//! The API server through kube-rs over HTTPS: every verb on every resource, optimistic
//! concurrency, patches, selectors and paging, watches (resume, 410, bookmarks, initial
//! events), subresources, discovery, output formats, and error statuses.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Every resource, with a minimal valid object of it.
fn resources() -> Vec<(ApiResource, bool, Value)> {
    let tmpl = |app: &str| {
        json!({"metadata": {"labels": {"app": app}},
               "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
    };
    let sel = |app: &str| json!({"matchLabels": {"app": app}});
    vec![
        (ar("", "v1", "Namespace", "namespaces"), false, json!({})),
        (ar("", "v1", "Node", "nodes"), false, json!({})),
        (
            ar("", "v1", "Pod", "pods"),
            true,
            json!({"spec": tmpl("x")["spec"]}),
        ),
        (
            ar("", "v1", "ConfigMap", "configmaps"),
            true,
            json!({"data": {"k": "v"}}),
        ),
        (
            ar("", "v1", "Event", "events"),
            true,
            json!({"involvedObject": {"kind": "Node", "name": "n"}, "reason": "Test", "message": "m", "type": "Normal"}),
        ),
        (
            ar("apps", "v1", "Deployment", "deployments"),
            true,
            json!({"spec": {"replicas": 0, "selector": sel("d"), "template": tmpl("d")}}),
        ),
        (
            ar("apps", "v1", "ReplicaSet", "replicasets"),
            true,
            json!({"spec": {"replicas": 0, "selector": sel("r"), "template": tmpl("r")}}),
        ),
        (
            ar("apps", "v1", "DaemonSet", "daemonsets"),
            true,
            json!({"spec": {"selector": sel("ds"), "template": {
                "metadata": {"labels": {"app": "ds"}},
                "spec": {"nodeSelector": {"nowhere": "true"}, "containers": [{"name": "c", "image": "i"}]}}}}),
        ),
        (
            ar("apps", "v1", "StatefulSet", "statefulsets"),
            true,
            json!({"spec": {"replicas": 0, "serviceName": "s", "selector": sel("s"), "template": tmpl("s")}}),
        ),
        (
            ar(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            true,
            json!({"spec": {"maxUnavailable": 1, "selector": sel("p")}}),
        ),
        (
            ar("coordination.k8s.io", "v1", "Lease", "leases"),
            true,
            json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
        ),
        (
            ar("events.k8s.io", "v1", "Event", "events"),
            true,
            json!({"eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "t", "reportingInstance": "t",
                   "action": "Test", "reason": "Test", "regarding": {"kind": "Node", "name": "n"}, "type": "Normal"}),
        ),
    ]
}

fn object(r: &ApiResource, name: &str, labels: Value, rest: &Value) -> DynamicObject {
    let mut v = rest.clone();
    v["apiVersion"] = json!(r.api_version);
    v["kind"] = json!(r.kind);
    v["metadata"] = json!({"name": name, "labels": labels});
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_on_every_resource() {
    let (cluster, client) = common::start("", 60.0).await;
    for (r, namespaced, body) in resources() {
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "default", &r)
        } else {
            Api::all_with(client.clone(), &r)
        };
        let what = r.plural.clone();
        let rv = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        // create, get, list
        let created = api
            .create(
                &PostParams::default(),
                &object(&r, "t1", json!({"t": "1"}), &body),
            )
            .await
            .unwrap_or_else(|e| panic!("create {what}: {e}"));
        assert!(created.metadata.uid.is_some(), "{what}");
        let got = api.get("t1").await.unwrap();
        assert_eq!(got.metadata.uid, created.metadata.uid, "{what}");
        let listed = api
            .list(&ListParams::default().labels("t=1"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1, "{what}");
        // update with the current resourceVersion (controllers write workloads' status
        // too: on a 409, read again and retry, as every client does), then patch
        let mut attempts = 0;
        let updated = loop {
            let mut upd = api.get("t1").await.unwrap();
            upd.metadata
                .labels
                .get_or_insert_default()
                .insert("u".into(), "1".into());
            match api.replace("t1", &PostParams::default(), &upd).await {
                Ok(u) => break u,
                Err(kube::Error::Api(s)) if s.code == 409 && attempts < 20 => attempts += 1,
                Err(e) => panic!("update {what}: {e}"),
            }
        };
        assert_ne!(
            updated.metadata.resource_version, got.metadata.resource_version,
            "{what}"
        );
        let patched = api
            .patch(
                "t1",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"p": "1"}}})),
            )
            .await
            .unwrap();
        assert_eq!(
            patched.metadata.labels.as_ref().unwrap()["p"],
            "1",
            "{what}"
        );
        // watch from before the create sees it all, in order
        let mut w = api
            .watch(&WatchParams::default().labels("t=1"), &rv)
            .await
            .unwrap()
            .boxed();
        let mut kinds = vec![];
        while kinds.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(20), w.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                WatchEvent::Added(_) => kinds.push("ADDED"),
                WatchEvent::Modified(_) => kinds.push("MODIFIED"),
                WatchEvent::Deleted(_) => kinds.push("DELETED"),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("{what}: {e:?}"),
            }
        }
        assert_eq!(kinds, ["ADDED", "MODIFIED", "MODIFIED"], "{what}");
        // delete
        api.delete("t1", &DeleteParams::default()).await.unwrap();
        if r.plural == "namespaces" {
            // a namespace terminates first, then goes
            common::wait_for("namespace t1 gone", 30, || {
                let api = api.clone();
                async move { api.get_opt("t1").await.unwrap().is_none().then_some(()) }
            })
            .await;
        } else {
            assert!(
                api.get_opt("t1").await.unwrap().is_none(),
                "{what} still there"
            );
        }
        // deletecollection
        for n in ["c1", "c2"] {
            api.create(
                &PostParams::default(),
                &object(&r, n, json!({"coll": "yes"}), &body),
            )
            .await
            .unwrap();
        }
        api.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("coll=yes"),
        )
        .await
        .unwrap();
        common::wait_for("collection deleted", 30, || {
            let api = api.clone();
            async move {
                api.list(&ListParams::default().labels("coll=yes"))
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                    .then_some(())
            }
        })
        .await;
    }
    let stats = cluster.stats();
    for verb in [
        "create",
        "get",
        "list",
        "update",
        "patch",
        "watch",
        "delete",
        "deletecollection",
    ] {
        assert!(
            stats.requests_by_verb.get(verb).copied().unwrap_or(0) >= 12,
            "{verb}: {stats:?}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_conflicts_and_errors_are_statuses() {
    let (cluster, client) = common::start("", 60.0).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    let first = cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut second = first.clone();
    second.data = Some([("a".to_string(), "2".to_string())].into());
    cms.replace("c", &PostParams::default(), &second)
        .await
        .unwrap();
    // the first version is stale now
    let mut stale = first.clone();
    stale.data = Some([("a".to_string(), "3".to_string())].into());
    let e = cms
        .replace("c", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else {
        panic!("{e}")
    };
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );
    // AlreadyExists
    let kube::Error::Api(s) = cms.create(&PostParams::default(), &cm).await.unwrap_err() else {
        panic!()
    };
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "configmaps \"c\" already exists");
    // NotFound
    let kube::Error::Api(s) = cms.get("nope").await.unwrap_err() else {
        panic!()
    };
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"nope\" not found");
    // Invalid
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let bad: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
            .unwrap();
    let kube::Error::Api(s) = pods.create(&PostParams::default(), &bad).await.unwrap_err() else {
        panic!()
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "Pod \"p\" is invalid: spec.containers: Required value"
    );
    // a namespace that does not exist
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let kube::Error::Api(s) = other.create(&PostParams::default(), &cm).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_strategic_merge_json_and_merge() {
    let (cluster, client) = common::start("pools:\n  - name: alpha\n    count: 1\n", 60.0).await;
    let nodes: Api<Node> = Api::all(client.clone());
    // kubectl cordon / uncordon: strategic merge patch, null deletes the field
    let n = nodes
        .patch(
            "alpha-0",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    let n = nodes
        .patch(
            "alpha-0",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, None);
    let raw = client
        .request_text(
            http::Request::get("/api/v1/nodes/alpha-0")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        !raw.contains("unschedulable"),
        "the field is gone, not false"
    );
    // containers merge by name
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}})),
        )
        .await
        .unwrap();
    let cs = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        cs.iter()
            .map(|c| (c.name.as_str(), c.image.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        [("a", "a:1"), ("b", "b:2")]
    );
    assert_eq!(
        d.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );
    // JSON patch, with a failing test op
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
            {"op": "replace", "path": "/spec/replicas", "value": 2}]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let e = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
            {"op": "test", "path": "/spec/replicas", "value": 5}]))
                .unwrap(),
            ),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(s.code, 422);
    // a patch carrying a stale resourceVersion conflicts
    let e = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(s.code, 409);
    // status changes through the main resource are ignored; through /status they stick
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 99}})),
        )
        .await
        .unwrap();
    assert_ne!(d.status.and_then(|s| s.observed_generation), Some(99));
    let d = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"collisionCount": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().collision_count, Some(7));
    // scale subresource
    let s = deps.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(2));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_selectors_and_paging() {
    let (cluster, client) = common::start("", 60.0).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        let tier = if i % 2 == 0 { "web" } else { "db" };
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("c{i}"), "labels": {"tier": tier, "i": i.to_string()}}}))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let count = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=web").await, 4);
    assert_eq!(count("tier in (web,db),i notin (0,1)").await, 5);
    assert_eq!(count("tier!=web").await, 3);
    assert_eq!(count("!tier").await, 0);
    assert_eq!(count("i>4").await, 2);
    let l = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(names(l), ["c3"]);
    let l = cms
        .list(&ListParams::default().fields("metadata.name!=c3,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 6);
    // pages of 3
    let mut seen = vec![];
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        let cont = page.metadata.continue_.clone();
        seen.extend(names(page));
        match cont {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    // metadata only
    let m = cms
        .list_metadata(&ListParams::default().labels("tier=db"))
        .await
        .unwrap();
    assert_eq!(m.items.len(), 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_expire_and_bookmark() {
    let cluster = kbg_sim::SimCluster::start(kbg_sim::SimConfig {
        speed: 60.0,
        watch_history: 16,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = common::client(&cluster).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let start_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mk = |i: usize| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap()
    };
    cms.create(&PostParams::default(), &mk(0)).await.unwrap();
    let mid = cms
        .create(&PostParams::default(), &mk(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.create(&PostParams::default(), &mk(2)).await.unwrap();
    // resume from the middle: only what came after
    let mut w = cms
        .watch(&WatchParams::default(), &mid)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("c2")),
        e => panic!("{e:?}"),
    }
    // live events arrive too
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(20), w.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Deleted(c) => assert_eq!(c.metadata.name.as_deref(), Some("c0")),
        e => panic!("{e:?}"),
    }
    // push the start out of the history: 410 Gone (Expired)
    for i in 3..30 {
        cms.create(&PostParams::default(), &mk(i)).await.unwrap();
    }
    let mut w = cms
        .watch(&WatchParams::default(), &start_rv)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(
                s.message.starts_with("too old resource version"),
                "{}",
                s.message
            );
        }
        e => panic!("{e:?}"),
    }
    // initial events as a stream, ended by the initial-events-end bookmark
    let wp = WatchParams::streaming_lists();
    let mut w = cms.watch(&wp, "0").await.unwrap().boxed();
    let mut added = 0;
    loop {
        match w.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(added, 29, "30 created, one deleted");
    // kube-runtime's watcher (list + watch) works against it
    let stream = kube::runtime::watcher(cms.clone(), kube::runtime::watcher::Config::default());
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
    let first = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.metadata.name.unwrap().starts_with('c'));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_version_tables_and_bad_input() {
    let (cluster, client) = common::start(
        "version: v1.31.4\npools:\n  - name: alpha\n    count: 2\n",
        60.0,
    )
    .await;
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(
        (v.git_version.as_str(), v.minor.as_str()),
        ("v1.31.4", "31")
    );
    let d = kube::Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = d.groups().map(|g| g.name().to_string()).collect();
    for g in ["", "apps", "policy", "coordination.k8s.io", "events.k8s.io"] {
        assert!(groups.iter().any(|x| x == g), "{g} in {groups:?}");
    }
    let core = client
        .request_text(http::Request::get("/api/v1").body(vec![]).unwrap())
        .await
        .unwrap();
    let core: Value = serde_json::from_str(&core).unwrap();
    let ev = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .unwrap();
    assert_eq!(
        (
            ev["kind"].as_str(),
            ev["group"].as_str(),
            ev["version"].as_str()
        ),
        (Some("Eviction"), Some("policy"), Some("v1"))
    );
    // the Table format kubectl asks for
    let req = http::Request::get("/api/v1/nodes?limit=500")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(vec![])
        .unwrap();
    let t: Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&cols[..5], ["Name", "Status", "Roles", "Age", "Version"]);
    let cp = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "control-plane-0")
        .unwrap();
    assert_eq!(
        (
            cp["cells"][1].as_str(),
            cp["cells"][2].as_str(),
            cp["cells"][4].as_str()
        ),
        (Some("Ready"), Some("control-plane"), Some("v1.31.4"))
    );
    assert_eq!(cp["object"]["kind"], "PartialObjectMetadata");
    // bad input: the real statuses, and the server keeps serving
    let status = |r: kube::Result<String>| match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("{other:?}"),
    };
    let (code, reason, msg) = status(
        client
            .request_text(
                http::Request::post("/api/v1/namespaces/default/configmaps")
                    .header("Content-Type", "application/json")
                    .body(b"{\"kind\": \"ConfigMap\", ".to_vec())
                    .unwrap(),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(msg.contains("json parse error"), "{msg}");
    let (code, reason, msg) = status(
        client
            .request_text(http::Request::get("/api/v1/foos").body(vec![]).unwrap())
            .await,
    );
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (
            404,
            "NotFound",
            "the server could not find the requested resource"
        )
    );
    let (code, reason, msg) = status(
        client
            .request_text(
                http::Request::get("/api/v1/pods?labelSelector=app%3D%3D%3Dx")
                    .body(vec![])
                    .unwrap(),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        msg,
        "unable to parse requirement: found '=', expected: identifier"
    );
    let (code, _, msg) = status(
        client
            .request_text(
                http::Request::get("/api/v1/pods?fieldSelector=spec.bogus%3Dx")
                    .body(vec![])
                    .unwrap(),
            )
            .await,
    );
    assert_eq!(code, 400);
    assert!(
        msg.ends_with("field label not supported: spec.bogus"),
        "{msg}"
    );
    let (code, reason, msg) = status(
        client
            .request_text(
                http::Request::post("/api/v1/namespaces/default/configmaps")
                    .header("Content-Type", "application/json")
                    .body(b"{\"kind\": \"Pod\", \"apiVersion\": \"v1\", \"metadata\": {\"name\": \"x\"}}".to_vec())
                    .unwrap(),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(msg.contains("cannot be handled as a ConfigMap"), "{msg}");
    // still serving
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    // without the token: 401
    let mut kc = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).unwrap();
    kc.auth_infos[0].auth_info.as_mut().unwrap().token = None;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let anon = kube::Client::try_from(cfg).unwrap();
    let e = Api::<Node>::all(anon.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"));
    // health and version stay public
    assert_eq!(
        anon.request_text(http::Request::get("/readyz").body(vec![]).unwrap())
            .await
            .unwrap(),
        "ok"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_one_resource_seen_two_ways() {
    let (cluster, client) = common::start("pools:\n  - name: alpha\n    count: 1\n", 60.0).await;
    // what kube-rs's Recorder writes: an events.k8s.io/v1 Event
    let new = ar("events.k8s.io", "v1", "Event", "events");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &new);
    let ev: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "alpha-0.cordon"},
        "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "kbg", "reportingInstance": "kbg-1",
        "action": "Cordon", "reason": "Cordoned", "note": "kbg cordoned the node", "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": "alpha-0"}}))
    .unwrap();
    api.create(&PostParams::default(), &ev).await.unwrap();
    api.patch("alpha-0.cordon", &PatchParams::default(), &Patch::Merge(json!({"note": "again", "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"}})))
        .await
        .unwrap();
    // kubectl get events / describe node read v1 Events
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client.clone());
    let l = core
        .list(&ListParams::default().fields("involvedObject.kind=Node,involvedObject.name=alpha-0"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let e = &l.items[0];
    assert_eq!(e.message.as_deref(), Some("again"));
    assert_eq!(e.reporting_component.as_deref(), Some("kbg"));
    assert_eq!(e.series.as_ref().unwrap().count, Some(2));
    // and back: a filter on events.k8s.io's field names
    let l = api
        .list(&ListParams::default().fields("regarding.name=alpha-0"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].data["note"], "again");
    assert_eq!(
        l.items[0].types.as_ref().unwrap().api_version,
        "events.k8s.io/v1"
    );
    cluster.shutdown().await;
}
