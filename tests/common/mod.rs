//! The end-to-end harness: a simulated cluster started by the test, kbg's real binary
//! pointed at it through a kubeconfig in a temp dir, and the evidence (the sim's audit
//! log and counters).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use kbg_sim::{AuditEntry, Scenario, SimCluster, SimConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A kbg.yaml with pools alpha (v1.32, three machines) and beta (v1.33, three), both
/// simulated.
pub const ALPHA_BETA: &str = r#"
pools:
  alpha:
    provider: sim
    version: v1.32.4
    count: 3
  beta:
    provider: sim
    version: v1.33.1
    count: 3
"#;

/// Cluster seconds per wall second in these tests: minutes of cluster time in seconds,
/// with room for a loaded 2-core machine.
pub const SPEED: f64 = 30.0;

/// A running simulated cluster, a temp dir with its kubeconfig and a `kbg.yaml`.
pub struct Harness {
    /// The cluster.
    pub sim: SimCluster,
    /// Holds the kubeconfig and kbg.yaml.
    pub dir: tempfile::TempDir,
    /// The kubeconfig file.
    pub kubeconfig: PathBuf,
    /// The kbg.yaml file.
    pub config: PathBuf,
    /// The speed the cluster and kbg run at.
    pub speed: f64,
}

/// What one kbg run gave.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    fn of(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The lines kbg printed as errors (`error: …`).
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }
}

/// The kbg binary under test.
pub fn kbg_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kbg")
}

impl Harness {
    /// Start a cluster from `scenario` (YAML; empty: the default) at [`SPEED`], and write
    /// `kbg_yaml` next to its kubeconfig.
    pub async fn start(scenario: &str, kbg_yaml: &str) -> Harness {
        Harness::start_at(scenario, kbg_yaml, SPEED).await
    }

    /// As [`Harness::start`], at `speed`.
    pub async fn start_at(scenario: &str, kbg_yaml: &str, speed: f64) -> Harness {
        let scenario = if scenario.trim().is_empty() {
            Scenario::default()
        } else {
            Scenario::from_yaml(scenario).expect("the test's scenario parses")
        };
        let sim = SimCluster::start(SimConfig {
            scenario,
            speed,
            ..SimConfig::default()
        })
        .await
        .expect("the simulated cluster starts");
        let dir = tempfile::tempdir().expect("a temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        let config = dir.path().join("kbg.yaml");
        std::fs::write(&config, kbg_yaml).expect("kbg.yaml written");
        Harness {
            sim,
            dir,
            kubeconfig,
            config,
            speed,
        }
    }

    /// A `kbg` command pointed at the cluster and the config, at the cluster's speed.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(kbg_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "tester")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KBG_CONFIG", &self.config)
            .env("KBG_CLOCK_SPEED", self.speed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Run kbg to the end (at most `limit` wall seconds, generous).
    pub async fn kbg(&self, args: &[&str]) -> Run {
        self.kbg_within(args, 300).await
    }

    /// Run kbg to the end within `secs` wall seconds.
    pub async fn kbg_within(&self, args: &[&str], secs: u64) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(secs), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kbg {args:?} did not finish within {secs}s"))
            .expect("kbg runs");
        Run::of(out)
    }

    /// A kube-rs client for checking the cluster.
    pub async fn client(&self) -> kube::Client {
        let kc = Kubeconfig::from_yaml(&self.sim.kubeconfig_yaml()).expect("kubeconfig parses");
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
        config.default_retry = false;
        kube::Client::try_from(config).expect("client")
    }

    /// Every request kbg sent.
    pub fn kbg_requests(&self) -> Vec<AuditEntry> {
        self.sim
            .audit()
            .into_iter()
            .filter(|e| e.user_agent.starts_with("kbg/"))
            .collect()
    }

    /// Every request kbg sent that changes something.
    pub fn kbg_writes(&self) -> Vec<AuditEntry> {
        self.kbg_requests()
            .into_iter()
            .filter(|e| is_write(&e.verb))
            .collect()
    }

    /// Replace kbg.yaml.
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("kbg.yaml written");
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether an audit verb changes something.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection" | "post" | "put"
    )
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `secs` wall seconds.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Watches every PDB from now on and keeps, per PDB (`namespace/name`), the lowest
/// `currentHealthy - desiredHealthy` seen once it was first satisfied (the definition of
/// the simulator's books).
pub fn watch_pdbs(
    client: kube::Client,
) -> std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, i32>>> {
    use futures::StreamExt;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::runtime::{WatchStreamExt, watcher};
    let margins = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        i32,
    >::new()));
    let m = margins.clone();
    tokio::spawn(async move {
        let api: kube::Api<PodDisruptionBudget> = kube::Api::all(client);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(pdb)) = stream.next().await {
            let Some(s) = pdb.status else { continue };
            let key = format!(
                "{}/{}",
                pdb.metadata.namespace.unwrap_or_default(),
                pdb.metadata.name.unwrap_or_default()
            );
            let margin = s.current_healthy - s.desired_healthy;
            let mut all = m.lock().unwrap();
            match all.get_mut(&key) {
                Some(low) => *low = (*low).min(margin),
                None if margin >= 0 => {
                    all.insert(key, margin);
                }
                None => {}
            }
        }
    });
    margins
}
