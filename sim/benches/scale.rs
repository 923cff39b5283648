//! Scale benchmark of the simulated cluster: loads 5,000 nodes and 150,000 pods (the
//! upstream scalability limits), then measures the latency of listing one node's pods by
//! `spec.nodeName`, of a full pod list, and the fan-out of watch events to 50 watchers.
//! Prints figures; asserts nothing.
//!
//! `cargo bench -p kbg-sim` (sizes: `KBG_BENCH_NODES`, `KBG_BENCH_PODS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kbg_sim::{Budget, Pool, Scenario, SimCluster, SimConfig, Workload, WorkloadKind};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set (VmHWM) of this process, MiB.
fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn client(cluster: &SimCluster) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.default_retry = false;
    config.read_timeout = Some(Duration::from_secs(600));
    kube::Client::try_from(config).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes = env("KBG_BENCH_NODES", 5_000);
    let pods = env("KBG_BENCH_PODS", 150_000);
    let deployments = 300.min(pods.max(1));
    let replicas = (pods / deployments) as i64;
    let namespaces = 30;
    println!(
        "kbg-sim scale benchmark: {nodes} nodes, {} pods in {deployments} deployments with a PDB each",
        replicas as usize * deployments
    );

    let scenario = Scenario {
        kube_proxy: false,
        pools: vec![Pool {
            name: "pool".into(),
            count: nodes,
            ..Pool::default()
        }],
        workloads: (0..deployments)
            .map(|i| Workload {
                kind: WorkloadKind::Deployment,
                name: format!("app-{i}"),
                namespace: format!("ns-{}", i % namespaces),
                replicas,
                requests: kbg_sim::Requests {
                    cpu: Some("10m".into()),
                    memory: Some("16Mi".into()),
                },
                pdb: Some(Budget {
                    max_unavailable: Some(serde_json::json!("10%")),
                    ..Budget::default()
                }),
                ..Workload::default()
            })
            .collect(),
        ..Scenario::default()
    };
    let t0 = Instant::now();
    let cluster = SimCluster::start(SimConfig {
        scenario,
        speed: 1000.0,
        ..SimConfig::default()
    })
    .await
    .expect("cluster starts");
    let load = t0.elapsed();
    let stats = cluster.stats();
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| load (start → settled: {} nodes Ready, {} pods Running) | {:.1} s |",
        stats.nodes,
        stats.pods,
        load.as_secs_f64()
    );
    println!("| peak RSS after load | {:.0} MiB |", peak_rss_mib());

    let client = client(&cluster).await;
    // one node's pods, by spec.nodeName (the pods_by_node index)
    let mut lat = Vec::new();
    let mut count = 0;
    for i in 0..200 {
        let node = format!("pool-{}", (i * 7919) % nodes);
        let req = http::Request::get(format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"))
            .body(vec![])
            .unwrap();
        let t = Instant::now();
        let body = client.request_text(req).await.unwrap();
        lat.push(t.elapsed());
        count += body.matches("\"kind\":\"Pod\"").count();
    }
    let server: Vec<u64> = cluster
        .audit()
        .iter()
        .filter(|e| e.query.contains("spec.nodeName"))
        .map(|e| e.latency_us)
        .collect();
    let server_p50 = {
        let mut s = server.clone();
        s.sort();
        s[s.len() / 2]
    };
    println!(
        "| one node's pods by spec.nodeName ({} pods on average), client p50 / p99 | {} / {} |",
        count / 200,
        ms(percentile(&mut lat, 0.5)),
        ms(percentile(&mut lat, 0.99))
    );
    println!(
        "| same, server side p50 (audit latency) | {:.3} ms |",
        server_p50 as f64 / 1000.0
    );

    // a full pod list
    let mut lat = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let req = http::Request::get("/api/v1/pods").body(vec![]).unwrap();
        let t = Instant::now();
        let body = client.request_text(req).await.unwrap();
        lat.push(t.elapsed());
        size = body.len();
    }
    let mut server: Vec<u64> = cluster
        .audit()
        .iter()
        .filter(|e| e.path == "/api/v1/pods" && e.query.is_empty())
        .map(|e| e.latency_us)
        .collect();
    server.sort();
    println!(
        "| full pod list ({:.0} MiB of JSON), median of 3: client (TLS, read) / server (body built) | {} / {:.1} ms |",
        size as f64 / (1 << 20) as f64,
        ms(percentile(&mut lat, 0.5)),
        server[server.len() / 2] as f64 / 1000.0
    );
    // the same in pages of 500, as clients page
    let t = Instant::now();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let q = if cont.is_empty() {
            String::new()
        } else {
            format!("&continue={cont}")
        };
        let req = http::Request::get(format!("/api/v1/pods?limit=500{q}"))
            .body(vec![])
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
        pages += 1;
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    let mut server: Vec<u64> = cluster
        .audit()
        .iter()
        .filter(|e| e.path == "/api/v1/pods" && e.query.starts_with("limit=500"))
        .map(|e| e.latency_us)
        .collect();
    server.sort();
    println!(
        "| full pod list in pages of 500 ({pages} pages, each parsed by the client) / server p50 per page | {} / {:.2} ms |",
        ms(t.elapsed()),
        server[server.len() / 2] as f64 / 1000.0
    );

    // watch fan-out: 50 watchers, 2,000 events
    let watchers = 50;
    let events = 2_000;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "fanout"}})).unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "fanout");
    let rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let cms = cms.clone();
        let rv = rv.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Box::pin(
                cms.watch(&WatchParams::default().timeout(290), &rv)
                    .await
                    .unwrap(),
            );
            let mut n = 0;
            while n < events {
                match w.try_next().await.unwrap() {
                    Some(WatchEvent::Added(_)) => n += 1,
                    Some(WatchEvent::Error(e)) => panic!("{e:?}"),
                    Some(_) => {}
                    None => panic!("watch ended"),
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8 {
        let cms = cms.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..events).step_by(8) {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}}))
                .unwrap();
                cms.create(&PostParams::default(), &cm).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let written = t.elapsed();
    let mut last = t;
    for task in tasks {
        last = last.max(task.await.unwrap());
    }
    let all = last - t;
    println!(
        "| watch fan-out: {events} creates (8 writers) | {} ({:.0} writes/s) |",
        ms(written),
        events as f64 / written.as_secs_f64()
    );
    println!(
        "| watch fan-out: all {watchers} watchers got all {events} events | {} after the first write, {} after the last ({:.0} events/s delivered) |",
        ms(all),
        ms(all.saturating_sub(written)),
        (watchers * events) as f64 / all.as_secs_f64()
    );

    // watch fan-out of pod events: 50 watchers on one Deployment's pods while it doubles
    let pods_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "ns-0");
    let rv = pods_api
        .list(
            &kube::api::ListParams::default()
                .labels("app=app-0")
                .limit(1),
        )
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let target = (replicas * 2) as usize;
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = pods_api.clone();
        let rv = rv.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Box::pin(
                api.watch(
                    &WatchParams::default().labels("app=app-0").timeout(290),
                    &rv,
                )
                .await
                .unwrap(),
            );
            let mut running = std::collections::HashSet::new();
            let mut events = 0usize;
            while running.len() < target / 2 {
                match w.try_next().await.unwrap() {
                    Some(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                        events += 1;
                        let ready = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                        if ready {
                            running.insert(p.metadata.name.unwrap());
                        }
                    }
                    Some(WatchEvent::Error(e)) => panic!("{e:?}"),
                    Some(_) => {}
                    None => panic!("watch ended"),
                }
            }
            (Instant::now(), events)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deps: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "ns-0");
    let t = Instant::now();
    deps.patch(
        "app-0",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": target}})),
    )
    .await
    .unwrap();
    let mut last = t;
    let mut events = 0;
    for task in tasks {
        let (at, n) = task.await.unwrap();
        last = last.max(at);
        events += n;
    }
    println!(
        "| watch fan-out of pods: a Deployment scaled {replicas} → {target}, all {watchers} watchers saw every new pod started | {} ({events} events delivered) |",
        ms(last - t)
    );
    println!("| peak RSS at the end | {:.0} MiB |", peak_rss_mib());
    cluster.shutdown().await;
}
