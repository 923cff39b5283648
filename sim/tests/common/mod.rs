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
