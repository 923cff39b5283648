//! The migration benchmark (issue 7): `kbg migrate` against the PDB lower bound and
//! against `kubectl drain` node by node, on fresh simulated clusters of 10, 100 and 1,000
//! source nodes (30 pods each).
//!
//! ```text
//! cargo build --release --no-default-features -p kbg --bin kbg     # the kbg under test
//! cargo run --release -p kbg-bench --bin migrate                   # every size
//! cargo run --release -p kbg-bench --bin migrate -- --quick        # 10 nodes, kbg only
//! cargo run --release -p kbg-bench --bin migrate -- --help
//! ```
//!
//! For every size it writes a scenario ([`scenario::generate`], seeded), and for every
//! run starts a fresh simulated cluster from it in its own process (`kbg sim serve`, the
//! same release binary), uncordons the target pool, and runs the tool as a child of a
//! small wrapper process (this binary again) whose rusage is that of the tool alone. It
//! reports the cluster time until the tool is done and every workload is Ready again,
//! the lower bound computed from the scenario, the PDB books of the simulated cluster,
//! the tool's API requests from the audit log (by User-Agent), and the tool's peak RSS
//! and CPU time. It prints one table and writes the same as JSON
//! (`target/bench/migrate.json` unless `--out`). Targets are reported, never asserted.

mod scenario;

use std::collections::BTreeMap;
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use scenario::{SOURCE, TARGET};

/// The environment variable that turns this binary into the rusage wrapper: its value is
/// the path of a [`WrapSpec`] (JSON).
const WRAP_ENV: &str = "KBG_BENCH_WRAP";
/// The User-Agent of the benchmark's own requests (set-up and checks), never counted.
const BENCH_AGENT: &str = "kbg-bench";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    about = "kbg migrate vs the PDB lower bound and kubectl drain"
)]
struct Opts {
    /// Source pool sizes (nodes; 30 pods each)
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 100, 1000])]
    sizes: Vec<usize>,
    /// 10 nodes, kbg only (unthrottled and at 5 requests/s), at --fast-speed: a minute or two
    #[arg(long)]
    quick: bool,
    /// Seed of the scenario generator
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Speed (simulated seconds per wall second) of every run at a size where kubectl runs:
    /// kubectl's waits are wall-clock, so 1 is the honest speed for the comparison
    #[arg(long, default_value_t = 1.0)]
    kubectl_speed: f64,
    /// Speed of the runs at sizes where kubectl does not run
    #[arg(long, default_value_t = 10.0)]
    fast_speed: f64,
    /// Largest size at which kubectl drain runs
    #[arg(long, default_value_t = 100)]
    kubectl_max_nodes: usize,
    /// kubectl drains only the first N source nodes (all are cordoned), and its duration
    /// for the whole pool is extrapolated (× nodes / N): node by node at speed 1, 100
    /// nodes take over an hour
    #[arg(long)]
    kubectl_nodes: Option<usize>,
    /// Skip kubectl drain
    #[arg(long)]
    no_kubectl: bool,
    /// Skip kbg under kubectl's client-side limit (5 requests/s, burst 10)
    #[arg(long)]
    no_throttled: bool,
    /// Only these runs (kbg, kbg-5qps, kubectl), comma-separated
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Extra arguments for every kbg migrate (experiments)
    #[arg(long = "kbg-arg", allow_hyphen_values = true)]
    kbg_args: Vec<String>,
    /// Run kbg under this command, split at spaces (profiling: "perf record -g -o FILE --",
    /// "heaptrack -o FILE"); its rusage then includes the profiler's
    #[arg(long, allow_hyphen_values = true)]
    kbg_prefix: Option<String>,
    /// Where the JSON goes [default: target/bench/migrate.json]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Add this invocation's rows to those already in the JSON (a run of the same size
    /// and tool replaces the old one), and print the table and targets of them all:
    /// sizes run with different settings end up in one table
    #[arg(long)]
    append: bool,
    /// Run nothing: print the table and targets of the JSON again (after `--append` runs)
    #[arg(long)]
    report_only: bool,
    /// Keep each run's directory (scenario, audit log, outputs) under target/bench/runs
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(WRAP_ENV) {
        return wrap(Path::new(&spec));
    }
    let mut opts = Opts::parse();
    if opts.quick {
        opts.sizes = vec![10];
        opts.no_kubectl = true;
    }
    if opts.report_only {
        opts.sizes.clear();
        opts.no_kubectl = true;
        opts.append = true;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The wrapper: runs commands one after the other and reports their rusage.

/// What the wrapper runs.
#[derive(Debug, Serialize, Deserialize)]
struct WrapSpec {
    /// Commands, run in order until one fails.
    commands: Vec<WrapCommand>,
    /// Where the [`WrapResult`] goes.
    result: PathBuf,
}

/// One command of a [`WrapSpec`].
#[derive(Debug, Serialize, Deserialize)]
struct WrapCommand {
    argv: Vec<String>,
    /// The whole environment (nothing is inherited).
    env: BTreeMap<String, String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// What the wrapper measured.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WrapResult {
    /// Exit codes of the commands run (-1: killed by a signal).
    codes: Vec<i32>,
    /// Wall seconds of each command.
    wall_s: Vec<f64>,
    /// The largest peak RSS of any command, KiB (`ru_maxrss` of RUSAGE_CHILDREN).
    max_rss_kib: i64,
    /// User + system CPU seconds of all the commands.
    cpu_s: f64,
}

fn wrap(spec: &Path) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let spec: WrapSpec = serde_json::from_slice(&std::fs::read(spec)?)?;
        let mut result = WrapResult::default();
        for c in &spec.commands {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&c.stdout)?;
            let err = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&c.stderr)?;
            let start = Instant::now();
            let status = std::process::Command::new(&c.argv[0])
                .args(&c.argv[1..])
                .env_clear()
                .envs(&c.env)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .status()?;
            result.wall_s.push(start.elapsed().as_secs_f64());
            result.codes.push(status.code().unwrap_or(-1));
            if !status.success() {
                break;
            }
        }
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        result.max_rss_kib = usage.max_rss();
        result.cpu_s = secs(usage.user_time()) + secs(usage.system_time());
        std::fs::write(&spec.result, serde_json::to_vec(&result)?)?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate bench wrapper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The runs.

/// The tools compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Tool {
    /// `kbg migrate alpha beta --batch-size 100%`.
    Kbg,
    /// The same under client-go's default client-side limit: 5 requests/s, burst 10.
    Kbg5qps,
    /// `kubectl cordon -l kbg.io/pool=alpha`, then `kubectl drain` node by node.
    Kubectl,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Kbg => "kbg",
            Tool::Kbg5qps => "kbg-5qps",
            Tool::Kubectl => "kubectl",
        }
    }

    /// The User-Agent prefix of the tool's requests.
    fn agent(self) -> &'static str {
        match self {
            Tool::Kbg | Tool::Kbg5qps => "kbg/",
            Tool::Kubectl => "kubectl/",
        }
    }
}

/// One run's figures: a row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    nodes: usize,
    pods: usize,
    pods_to_move: usize,
    tool: Tool,
    /// Simulated seconds per wall second.
    speed: f64,
    /// The tool's exit code (0: done).
    exit_code: i32,
    /// Cluster seconds from the tool's start until it exited and every Deployment and
    /// StatefulSet was Ready again.
    duration_s: f64,
    /// Cluster seconds until the tool exited.
    tool_exit_s: f64,
    /// The scenario's lower bound, cluster seconds.
    lower_bound_s: f64,
    /// duration / lower bound (of the part drained, when `extrapolated_s` is set; the
    /// table shows the extrapolated duration's).
    ratio: f64,
    /// PDB violations in the simulated cluster's books.
    pdb_violations: u64,
    /// The lowest currentHealthy − desiredHealthy any PDB went to.
    min_pdb_margin: Option<i64>,
    /// Evictions of the tool answered 201.
    evicted: u64,
    /// Evictions of the tool refused with 429.
    refused_429: u64,
    /// Pods not of a DaemonSet still on the source pool at the end (must be 0).
    left_on_source: usize,
    /// API requests the tool sent (audit log, its User-Agent).
    requests: u64,
    /// requests / evicted.
    requests_per_evicted: f64,
    /// The tool's requests by verb (`create` for evictions).
    requests_by_verb: BTreeMap<String, u64>,
    /// The tool's peak RSS, MiB (largest of its processes).
    peak_rss_mib: f64,
    /// The tool's CPU time (user + system), seconds, all its processes.
    cpu_s: f64,
    /// Wall seconds of the tool.
    wall_s: f64,
    /// The simulated cluster's CPU time over the run / wall time (1.0 = one core).
    sim_cpu_share: f64,
    /// The simulated cluster's peak RSS, MiB.
    sim_peak_rss_mib: f64,
    /// 1-minute load average when the run started.
    load_at_start: f64,
    /// Source nodes the tool drained (kubectl with `--kubectl-nodes`: fewer than `nodes`).
    nodes_drained: usize,
    /// `duration_s` × nodes / nodes_drained when the tool drained only part of the pool
    /// (node by node, the time grows with the number of nodes).
    extrapolated_s: Option<f64>,
    /// kbg's own counters (`-o json`): PDB refusals retried, waits on PDB watches.
    #[serde(skip_serializing_if = "Option::is_none")]
    kbg_report: Option<serde_json::Value>,
}

/// Where files go.
struct Dirs {
    /// `target/bench`.
    root: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The kbg under test: `KBG_BENCH_KBG`, else the `kbg` next to this binary (the same
/// profile's, built by `cargo build --release --no-default-features -p kbg --bin kbg`).
fn kbg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KBG_BENCH_KBG") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the benchmark's own path");
    exe.with_file_name("kbg")
}

/// kubectl: `KBG_TEST_KUBECTL`, else `kubectl` on PATH.
fn kubectl_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("KBG_TEST_KUBECTL")
        && !p.is_empty()
    {
        return Ok(PathBuf::from(p));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("kubectl");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "kubectl not found: set KBG_TEST_KUBECTL to Debian's kubectl 1.20 (scripts/test-setup installs it and prints the variable), or pass --no-kubectl"
    )
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3.
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Peak RSS of process `pid` so far, MiB (`VmHWM`).
fn proc_peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// A simulated cluster in its own process.
struct Sim {
    child: tokio::process::Child,
    pid: u32,
    client: kube::Client,
    kubeconfig: PathBuf,
    audit: PathBuf,
}

impl Sim {
    async fn start(dir: &Path, scenario: &Path, speed: f64) -> anyhow::Result<Sim> {
        let kubeconfig = dir.join("kubeconfig");
        let audit = dir.join("audit.jsonl");
        let mut child = tokio::process::Command::new(kbg_bin())
            .args(["sim", "serve", "--port", "0", "--speed"])
            .arg(speed.to_string())
            .arg("--scenario")
            .arg(scenario)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("sim.stderr"))?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().expect("a running child has a pid");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let serving = async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("export KUBECONFIG=") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        };
        let ok = tokio::time::timeout(Duration::from_secs(600), serving).await;
        if !matches!(ok, Ok(Ok(true))) {
            let err = std::fs::read_to_string(dir.join("sim.stderr")).unwrap_or_default();
            anyhow::bail!("the simulated cluster did not start: {err}");
        }
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        config.default_retry = false;
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(BENCH_AGENT),
        ));
        let client = kube::Client::try_from(config)?;
        Ok(Sim {
            child,
            pid,
            client,
            kubeconfig,
            audit,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let req = http::Request::get(path).body(Vec::new())?;
        Ok(serde_json::from_str(&self.client.request_text(req).await?)?)
    }

    /// The simulated clock, seconds since the epoch.
    async fn now(&self) -> anyhow::Result<f64> {
        let t = self.get("/sim/v1/time").await?;
        let ts: jiff::Timestamp = t["now"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("/sim/v1/time without now: {t}"))?
            .parse()?;
        Ok(ts.as_microsecond() as f64 / 1e6)
    }

    async fn stats(&self) -> anyhow::Result<kbg_sim::SimStats> {
        Ok(serde_json::from_value(self.get("/sim/v1/stats").await?)?)
    }

    /// Stop it (SIGTERM, then SIGKILL after 30 s).
    async fn stop(mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The nodes of `pool`, sorted by their index (`alpha-2` before `alpha-10`).
fn pool_nodes(pool: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{pool}-{i}")).collect()
}

/// Uncordon the target pool: it was cordoned so the starting pods all land on the source.
async fn uncordon_target(sim: &Sim, nodes: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(sim.client.clone());
    let patch = Patch::Merge(json!({"spec": {"unschedulable": null}}));
    futures::stream::iter(pool_nodes(TARGET, nodes))
        .map(|n| {
            let api = api.clone();
            let patch = patch.clone();
            async move { api.patch(&n, &PatchParams::default(), &patch).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Pods on the source pool that are not DaemonSet pods.
async fn left_on_source(sim: &Sim, nodes: usize) -> anyhow::Result<usize> {
    let api: Api<Pod> = Api::all(sim.client.clone());
    let counts: Vec<usize> = futures::stream::iter(pool_nodes(SOURCE, nodes))
        .map(|n| {
            let api = api.clone();
            async move {
                let lp = ListParams::default().fields(&format!("spec.nodeName={n}"));
                let pods = api.list(&lp).await?;
                Ok::<usize, kube::Error>(
                    pods.items
                        .iter()
                        .filter(|p| {
                            !p.metadata
                                .owner_references
                                .iter()
                                .flatten()
                                .any(|o| o.kind == "DaemonSet")
                        })
                        .count(),
                )
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(counts.into_iter().sum())
}

/// Every Deployment and StatefulSet has its desired Ready replicas, for its generation.
async fn workloads_ready(sim: &Sim) -> anyhow::Result<bool> {
    /// Ready for its generation: `status.readyReplicas >= spec.replicas` and
    /// `status.observedGeneration >= metadata.generation` (Deployments and StatefulSets
    /// spell those fields alike).
    macro_rules! ready {
        ($w:expr) => {{
            let s = $w.status.as_ref();
            s.and_then(|s| s.ready_replicas).unwrap_or(0)
                >= $w.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
                && s.and_then(|s| s.observed_generation) >= $w.metadata.generation
        }};
    }
    let lp = ListParams::default();
    let deployments = Api::<Deployment>::all(sim.client.clone()).list(&lp).await?;
    let sets = Api::<StatefulSet>::all(sim.client.clone())
        .list(&lp)
        .await?;
    Ok(deployments.items.iter().all(|d| ready!(d)) && sets.items.iter().all(|s| ready!(s)))
}

/// The tool's requests in the audit log from byte `offset` on.
#[derive(Debug, Default)]
struct Requests {
    total: u64,
    by_verb: BTreeMap<String, u64>,
    evicted: u64,
    refused: u64,
}

fn audit_requests(path: &Path, offset: u64, agent: &str) -> anyhow::Result<Requests> {
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut r = Requests::default();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let Ok(e) = serde_json::from_str::<kbg_sim::AuditEntry>(&line) else {
            continue;
        };
        if !e.user_agent.starts_with(agent) {
            continue;
        }
        r.total += 1;
        *r.by_verb.entry(e.verb.clone()).or_default() += 1;
        if e.subresource == "eviction" {
            match e.code {
                201 => r.evicted += 1,
                429 => r.refused += 1,
                _ => {}
            }
        }
    }
    Ok(r)
}

/// One run: a fresh cluster from `scenario_file`, the tool, the figures.
#[allow(clippy::too_many_arguments)]
async fn one_run(
    opts: &Opts,
    dir: &Path,
    scenario_file: &Path,
    counts: &scenario::Counts,
    bound: f64,
    tool: Tool,
    speed: f64,
) -> anyhow::Result<Row> {
    std::fs::create_dir_all(dir)?;
    let load = load_average();
    let sim = Sim::start(dir, scenario_file, speed).await?;
    uncordon_target(&sim, counts.nodes).await?;
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let base_env = |extra: &[(&str, String)]| -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", home.display().to_string()),
            ("USER", "bench".to_string()),
            ("KUBECONFIG", sim.kubeconfig.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let out = |name: &str| dir.join(name);
    let drained = match tool {
        Tool::Kubectl => opts.kubectl_nodes.unwrap_or(counts.nodes).min(counts.nodes),
        _ => counts.nodes,
    };
    let commands = match tool {
        Tool::Kbg | Tool::Kbg5qps => {
            let mut argv: Vec<String> = [
                kbg_bin().display().to_string(),
                "migrate".into(),
                SOURCE.into(),
                TARGET.into(),
                "--batch-size".into(),
                "100%".into(),
                "--force".into(),
                "--delete-emptydir-data".into(),
                "-o".into(),
                "json".into(),
            ]
            .into();
            if tool == Tool::Kbg5qps {
                argv.extend(["--kube-api-qps", "5", "--kube-api-burst", "10"].map(String::from));
            }
            argv.extend(opts.kbg_args.iter().cloned());
            if let Some(prefix) = &opts.kbg_prefix {
                argv.splice(0..0, prefix.split_whitespace().map(String::from));
            }
            vec![WrapCommand {
                argv,
                env: base_env(&[("KBG_CLOCK_SPEED", speed.to_string())]),
                stdout: out("kbg.stdout"),
                stderr: out("kbg.stderr"),
            }]
        }
        Tool::Kubectl => {
            let kubectl = kubectl_bin()?.display().to_string();
            let env = base_env(&[]);
            // Warm the discovery cache (untimed, and its requests are not counted).
            let warm = std::process::Command::new(&kubectl)
                .args(["api-resources", "-o", "name"])
                .env_clear()
                .envs(&env)
                .output()?;
            anyhow::ensure!(
                warm.status.success(),
                "kubectl api-resources: {}",
                String::from_utf8_lossy(&warm.stderr)
            );
            let mut c = vec![WrapCommand {
                argv: vec![
                    kubectl.clone(),
                    "cordon".into(),
                    "-l".into(),
                    format!("kbg.io/pool={SOURCE}"),
                ],
                env: env.clone(),
                stdout: out("kubectl.stdout"),
                stderr: out("kubectl.stderr"),
            }];
            for n in pool_nodes(SOURCE, drained) {
                c.push(WrapCommand {
                    argv: vec![
                        kubectl.clone(),
                        "drain".into(),
                        n,
                        "--ignore-daemonsets".into(),
                        "--delete-emptydir-data".into(),
                        "--force".into(),
                    ],
                    env: env.clone(),
                    stdout: out("kubectl.stdout"),
                    stderr: out("kubectl.stderr"),
                });
            }
            c
        }
    };
    let spec_path = dir.join("wrap.json");
    let result_path = dir.join("wrap-result.json");
    std::fs::write(
        &spec_path,
        serde_json::to_vec_pretty(&WrapSpec {
            commands,
            result: result_path.clone(),
        })?,
    )?;

    // The timed part.
    let offset = std::fs::metadata(&sim.audit)?.len();
    let sim_cpu0 = proc_cpu_s(sim.pid);
    let t0 = sim.now().await?;
    let wall0 = Instant::now();
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .env(WRAP_ENV, &spec_path)
        .stdin(Stdio::null())
        .status()
        .await?;
    let t_exit = sim.now().await?;
    let wall = wall0.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "the wrapper failed: {status}");
    let result: WrapResult = serde_json::from_slice(&std::fs::read(&result_path)?)?;
    let exit_code = result.codes.iter().copied().find(|c| *c != 0).unwrap_or(0);
    // Until every workload is Ready again (kbg waits for it itself; kubectl does not).
    let mut t_ready = t_exit;
    let ready_deadline = Instant::now() + Duration::from_secs(1800);
    while !workloads_ready(&sim).await? {
        if Instant::now() > ready_deadline {
            anyhow::bail!(
                "{} at {} nodes: workloads never Ready again",
                tool.name(),
                counts.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        t_ready = sim.now().await?;
    }
    let sim_cpu = proc_cpu_s(sim.pid) - sim_cpu0;
    let sim_rss = proc_peak_rss_mib(sim.pid);
    let stats = sim.stats().await?;
    let left = left_on_source(&sim, counts.nodes).await?;
    let requests = audit_requests(&sim.audit, offset, tool.agent())?;
    let kbg_report = match tool {
        Tool::Kubectl => None,
        _ => std::fs::read(out("kbg.stdout"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| {
                json!({
                    "pods_evicted": v["pods_evicted"],
                    "pdb_retries": v["pdb_retries"],
                    "pdb_waits": v["pdb_waits"],
                    "transient_retries": v["transient_retries"],
                    "cluster_seconds": v["cluster_seconds"],
                })
            }),
    };
    sim.stop().await;
    let duration = t_ready - t0;
    let row = Row {
        nodes: counts.nodes,
        pods: counts.pods,
        pods_to_move: counts.to_move,
        tool,
        speed,
        exit_code,
        duration_s: duration,
        tool_exit_s: t_exit - t0,
        lower_bound_s: bound,
        ratio: duration / bound,
        pdb_violations: stats.pdb_violations,
        min_pdb_margin: stats.pdbs.iter().filter_map(|p| p.min_margin_seen).min(),
        evicted: requests.evicted,
        refused_429: requests.refused,
        left_on_source: left,
        requests: requests.total,
        requests_per_evicted: requests.total as f64 / requests.evicted.max(1) as f64,
        requests_by_verb: requests.by_verb,
        peak_rss_mib: result.max_rss_kib as f64 / 1024.0,
        cpu_s: result.cpu_s,
        wall_s: wall,
        sim_cpu_share: sim_cpu / wall,
        sim_peak_rss_mib: sim_rss,
        load_at_start: load,
        nodes_drained: drained,
        extrapolated_s: (drained < counts.nodes)
            .then(|| duration * counts.nodes as f64 / drained.max(1) as f64),
        kbg_report,
    };
    if exit_code != 0 {
        let err = std::fs::read_to_string(out(&format!(
            "{}.stderr",
            if tool == Tool::Kubectl {
                "kubectl"
            } else {
                "kbg"
            }
        )))
        .unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        eprintln!(
            "  {} exited {exit_code}: {}",
            tool.name(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
        );
    }
    Ok(row)
}

/// A target and whether the figures meet it.
#[derive(Debug, Clone, Serialize)]
struct Target {
    target: String,
    measured: String,
    met: Option<bool>,
}

fn targets(rows: &[Row]) -> Vec<Target> {
    let find = |nodes: usize, tool: Tool| rows.iter().find(|r| r.nodes == nodes && r.tool == tool);
    let mut out = Vec::new();
    let safe = |r: &Row| r.pdb_violations == 0 && r.left_on_source == 0 && r.exit_code == 0;
    out.push(match find(1000, Tool::Kbg) {
        Some(r) => Target {
            target: "1,000 nodes / 30,000 pods within 1.2 x the lower bound, 0 PDB violations"
                .into(),
            measured: format!(
                "{:.2} x ({:.0} s / {:.0} s), {} violations",
                r.ratio, r.duration_s, r.lower_bound_s, r.pdb_violations
            ),
            met: Some(r.ratio <= 1.2 && safe(r)),
        },
        None => Target {
            target: "1,000 nodes within 1.2 x the lower bound".into(),
            measured: "not run".into(),
            met: None,
        },
    });
    out.push(match (find(100, Tool::Kbg), find(100, Tool::Kubectl)) {
        (Some(k), Some(c)) => Target {
            target: "100 nodes: >= 10 x faster than kubectl drain node by node, same safety".into(),
            measured: format!(
                "{:.1} x ({:.0} s vs {:.0} s{}); violations {} vs {}",
                c.extrapolated_s.unwrap_or(c.duration_s) / k.duration_s,
                k.duration_s,
                c.extrapolated_s.unwrap_or(c.duration_s),
                if c.extrapolated_s.is_some() {
                    format!(
                        ", extrapolated from {:.0} s for {} of {} nodes",
                        c.duration_s, c.nodes_drained, c.nodes
                    )
                } else {
                    String::new()
                },
                k.pdb_violations,
                c.pdb_violations
            ),
            met: Some(
                c.extrapolated_s.unwrap_or(c.duration_s) / k.duration_s >= 10.0
                    && safe(k)
                    && c.pdb_violations == 0,
            ),
        },
        _ => Target {
            target: "100 nodes: >= 10 x faster than kubectl drain".into(),
            measured: "not run".into(),
            met: None,
        },
    });
    let kbg: Vec<&Row> = rows.iter().filter(|r| r.tool != Tool::Kubectl).collect();
    let worst = kbg
        .iter()
        .map(|r| r.requests_per_evicted)
        .fold(f64::NAN, f64::max);
    out.push(Target {
        target: "<= 3 API requests per evicted pod (kbg, every run)".into(),
        measured: format!("at most {worst:.2}"),
        met: (!kbg.is_empty()).then_some(worst <= 3.0),
    });
    out.push(match find(1000, Tool::Kbg) {
        Some(r) => Target {
            target: "kbg peak RSS <= 150 MB at 1,000 nodes".into(),
            measured: format!("{:.0} MiB", r.peak_rss_mib),
            met: Some(r.peak_rss_mib * 1.048_576 <= 150.0),
        },
        None => Target {
            target: "kbg peak RSS <= 150 MB at 1,000 nodes".into(),
            measured: "not run".into(),
            met: None,
        },
    });
    out
}

fn table(rows: &[Row]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header([
        "nodes",
        "pods",
        "tool",
        "speed",
        "duration s",
        "bound s",
        "ratio",
        "PDB viol.",
        "evicted",
        "req/evicted",
        "peak RSS MiB",
        "CPU s",
        "wall s",
        "sim CPU",
        "load",
    ]);
    for r in rows {
        t.add_row([
            r.nodes.to_string(),
            r.pods.to_string(),
            if r.exit_code == 0 {
                r.tool.name().to_string()
            } else {
                format!("{} (exit {})", r.tool.name(), r.exit_code)
            },
            format!("{}", r.speed),
            match r.extrapolated_s {
                Some(e) => format!("{:.0} ({} nodes) ~ {e:.0}", r.duration_s, r.nodes_drained),
                None => format!("{:.0}", r.duration_s),
            },
            format!("{:.0}", r.lower_bound_s),
            format!(
                "{:.2}",
                r.extrapolated_s.unwrap_or(r.duration_s) / r.lower_bound_s
            ),
            r.pdb_violations.to_string(),
            r.evicted.to_string(),
            format!("{:.2}", r.requests_per_evicted),
            format!("{:.0}", r.peak_rss_mib),
            format!("{:.1}", r.cpu_s),
            format!("{:.0}", r.wall_s),
            format!("{:.0}%", r.sim_cpu_share * 100.0),
            format!("{:.1}", r.load_at_start),
        ]);
    }
    t.to_string()
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let dirs = Dirs {
        root: target_dir().join("bench"),
    };
    std::fs::create_dir_all(&dirs.root)?;
    let kubectl_version = if opts.no_kubectl {
        None
    } else {
        let k = kubectl_bin()?;
        let v = std::process::Command::new(&k)
            .args(["version", "--client", "--short"])
            .output()?;
        Some(format!(
            "{} ({})",
            String::from_utf8_lossy(&v.stdout).trim(),
            k.display()
        ))
    };
    let runs_root = dirs.root.join("runs");
    let mut rows = Vec::new();
    let mut bounds = BTreeMap::new();
    for &nodes in &opts.sizes {
        let scenario = scenario::generate(nodes, opts.seed);
        let counts = scenario::counts(&scenario);
        let (bound, terms) = scenario::lower_bound(&scenario);
        let size_dir = runs_root.join(format!("{nodes}"));
        std::fs::create_dir_all(&size_dir)?;
        let scenario_file = size_dir.join("scenario.yaml");
        std::fs::write(&scenario_file, serde_saphyr::to_string(&scenario)?)?;
        let kubectl_here = !opts.no_kubectl && nodes <= opts.kubectl_max_nodes;
        let speed = if kubectl_here {
            opts.kubectl_speed
        } else {
            opts.fast_speed
        };
        eprintln!(
            "== {nodes} nodes, {} pods ({} to move), lower bound {bound:.0} s ({}), speed {speed}",
            counts.pods, counts.to_move, terms[0].workload
        );
        bounds.insert(
            nodes.to_string(),
            json!({
                "lower_bound_s": bound,
                "issue_formula_max_s": terms.iter().map(|t| t.issue_formula_s).fold(0.0, f64::max),
                "counts": counts,
                "largest_terms": terms.iter().take(5).collect::<Vec<_>>(),
            }),
        );
        let mut tools = vec![Tool::Kbg];
        if !opts.no_throttled {
            tools.push(Tool::Kbg5qps);
        }
        if kubectl_here {
            tools.push(Tool::Kubectl);
        }
        tools.retain(|t| opts.only.is_empty() || opts.only.iter().any(|o| o == t.name()));
        for tool in tools {
            eprintln!("-- {} at {nodes} nodes", tool.name());
            let dir = size_dir.join(tool.name());
            let _ = std::fs::remove_dir_all(&dir);
            let row = one_run(&opts, &dir, &scenario_file, &counts, bound, tool, speed).await?;
            eprintln!(
                "   {:.0} s (bound {:.0} s, ratio {:.2}), {} violations, {} evicted, {:.2} req/evicted, {:.0} MiB, {:.1} s CPU, {:.0} s wall, sim CPU {:.0}%",
                row.duration_s,
                row.lower_bound_s,
                row.ratio,
                row.pdb_violations,
                row.evicted,
                row.requests_per_evicted,
                row.peak_rss_mib,
                row.cpu_s,
                row.wall_s,
                row.sim_cpu_share * 100.0
            );
            rows.push(row);
            if !opts.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| dirs.root.join("migrate.json"));
    let mut commands = if opts.report_only {
        Vec::new()
    } else {
        vec![std::env::args().collect::<Vec<_>>()]
    };
    let mut kubectl_version = json!(kubectl_version);
    if opts.append
        && let Ok(old) = std::fs::read(&out)
    {
        let old: serde_json::Value = serde_json::from_slice(&old)?;
        let old_rows: Vec<Row> = serde_json::from_value(old["rows"].clone())?;
        for r in old_rows {
            if !rows.iter().any(|n| n.nodes == r.nodes && n.tool == r.tool) {
                rows.push(r);
            }
        }
        rows.sort_by_key(|r| (r.nodes, r.tool));
        if kubectl_version.is_null() {
            kubectl_version = old["kubectl"].clone();
        }
        if let Some(m) = old["lower_bounds"].as_object() {
            for (k, v) in m {
                bounds.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let old_commands = match &old["commands"] {
            serde_json::Value::Array(c) => c.clone(),
            _ => vec![old["command"].clone()],
        };
        let mut all: Vec<Vec<String>> = old_commands
            .into_iter()
            .filter_map(|c| serde_json::from_value(c).ok())
            .collect();
        all.append(&mut commands);
        commands = all;
    }
    let targets = targets(&rows);
    let doc = json!({
        "commands": commands,
        "seed": opts.seed,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kubectl": kubectl_version,
        "rows": rows,
        "targets": targets,
        "lower_bounds": bounds,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)?;
    println!("{}", table(&rows));
    for t in &targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not run",
        };
        println!("{mark:>8}  {}: {}", t.target, t.measured);
    }
    println!("JSON: {}", out.display());
    Ok(())
}
