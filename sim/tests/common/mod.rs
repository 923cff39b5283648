//! Shared test harness: a simulated cluster and a kube-rs client for it.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use kbg_sim::{Scenario, SimCluster, SimConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Starts a cluster at `speed` with `scenario` (YAML).
pub async fn start(scenario: &str, speed: f64) -> (SimCluster, kube::Client) {
    let scenario = if scenario.trim().is_empty() {
        Scenario::default()
    } else {
        Scenario::from_yaml(scenario).expect("scenario")
    };
    let cluster = SimCluster::start(SimConfig {
        scenario,
        speed,
        ..SimConfig::default()
    })
    .await
    .expect("cluster starts");
    let client = client(&cluster).await;
    (cluster, client)
}

/// A kube-rs client for the cluster, without kube's own retries (so 429s are seen).
pub async fn client(cluster: &SimCluster) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).expect("kubeconfig parses");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs` wall seconds
/// (generous: the machine is shared).
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw request: status, headers and body text.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let bytes = if body.is_null() {
        vec![]
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(bytes))
        .unwrap();
    let res = client.send(req).await.expect("request sent");
    let code = res.status().as_u16();
    let headers = res.headers().clone();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (code, headers, text)
}

/// The pods of a namespace matching a label selector.
pub async fn pods(
    client: &kube::Client,
    ns: &str,
    selector: &str,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), ns);
    api.list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// Whether a pod is Running and Ready and not terminating.
pub fn running_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
