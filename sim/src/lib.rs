//! A simulated Kubernetes cluster served over HTTPS on 127.0.0.1, for kbg's demo, tests
//! and benchmarks — in the spirit of kwok and envtest.
//!
//! [`SimCluster::start`] serves the Kubernetes API (discovery, `/version`, health, the
//! resources kbg and kubectl use: namespaces, nodes, pods with eviction and binding,
//! deployments, replicasets, daemonsets, statefulsets, poddisruptionbudgets, leases,
//! configmaps, events) with a CA generated at start and one bearer token, and runs the
//! behaviour a node-pool replacement depends on: kubelets, scheduler, workload
//! controllers, the disruption controller, garbage collection, node lifecycle and a
//! control plane of static pods. Every delay runs on one simulated clock with a speed
//! factor, so minutes of cluster time pass in seconds.
//!
//! The wire facts it follows (checked against real kubectl) are in
//! `../shared/SIM-API.md`; the scenario format in `sim/SCENARIO.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = kbg_sim::SimCluster::start(kbg_sim::SimConfig {
//!     speed: 60.0,
//!     ..Default::default()
//! })
//! .await?;
//! cluster.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! println!("{}", cluster.server_url());
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
mod api;
mod api_reply;
mod clock;
mod controllers;
mod events;
mod eviction;
mod faults;
mod object;
mod ops;
mod patch;
mod quantity;
mod query;
mod resources;
mod scenario;
mod selector;
mod server;
mod sim_api;
mod state;
mod stats;
mod status;
mod table;
mod tls;
mod version;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use faults::Faults;
pub use scenario::{
    Budget, Capacity, ControlPlane, DEFAULT_VERSION, Defaults, Pool, Requests, Scenario, TaintSpec,
    Workload, WorkloadKind,
};
pub use stats::{AuditEntry, PdbStats, SimStats};

use crate::resources::Res;
use crate::server::Shared;
use crate::state::State;

/// Node annotation: the simulated kubelet manages this node (kwok's annotation).
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Node annotation: sim-seconds from creation to Ready (default from the scenario, else 10).
pub const BOOT_ANNOTATION: &str = "sim.kbg.io/boot-seconds";
/// Node annotation `"true"`: the node never becomes Ready (fault).
pub const NEVER_READY_ANNOTATION: &str = "sim.kbg.io/never-ready";
/// Pod annotation: sim-seconds from bound to Running and Ready.
pub const STARTUP_ANNOTATION: &str = "sim.kbg.io/startup-seconds";
/// Pod annotation: sim-seconds from deleted to gone, capped by the grace period
/// (default 1).
pub const TERMINATION_ANNOTATION: &str = "sim.kbg.io/termination-seconds";
/// Pod annotation `"true"`: the pod always uses its whole grace period (fault).
pub const FULL_GRACE_ANNOTATION: &str = "sim.kbg.io/full-grace";

/// Errors of the simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read or written, or the port could not be bound.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("TLS: {0}")]
    Tls(String),
    /// The scenario is invalid (the message names the field).
    #[error("scenario: {0}")]
    Scenario(String),
    /// The configuration is invalid (the message names the field).
    #[error("{0}")]
    Config(String),
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The starting cluster. `Scenario::default()`: one control-plane node, no workers.
    pub scenario: Scenario,
    /// Simulated seconds per wall second (60 = one simulated minute per second).
    pub speed: f64,
    /// Port on 127.0.0.1; 0 = any free port.
    pub port: u16,
    /// Plain HTTP instead of HTTPS, for debugging.
    pub insecure_http: bool,
    /// An audit log file (JSON lines), in addition to the in-memory log.
    pub audit_log: Option<PathBuf>,
    /// Faults in force from the start (replacing the scenario's when not default).
    pub faults: Faults,
    /// Events kept per resource for watches to resume from; older resourceVersions get
    /// 410 Gone.
    pub watch_history: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            scenario: Scenario::default(),
            speed: 1.0,
            port: 0,
            insecure_http: false,
            audit_log: None,
            faults: Faults::default(),
            watch_history: 100_000,
        }
    }
}

/// A running simulated cluster. Dropping it stops it too (without waiting); prefer
/// [`SimCluster::shutdown`].
pub struct SimCluster {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// `(Res, namespaced default)` of a manifest's apiVersion and kind.
fn res_of(api_version: &str, kind: &str) -> Option<Res> {
    Res::all().find(|r| {
        let d = r.def();
        d.kind == kind && d.api_version() == api_version
    })
}

/// Loads a scenario into an empty state and lets it settle.
fn load(st: &mut State, s: &Scenario) -> Result<(), SimError> {
    let fail = |what: String, e: status::ApiError| {
        SimError::Scenario(format!(
            "{what}: {}",
            e.body["message"].as_str().unwrap_or("rejected")
        ))
    };
    let mut namespaces: Vec<String> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    namespaces.extend(s.namespaces.iter().cloned());
    namespaces.extend(s.workloads.iter().map(|w| w.namespace.clone()));
    for m in &s.manifests {
        if m["kind"] == "Namespace"
            && let Some(n) = m["metadata"]["name"].as_str()
        {
            namespaces.retain(|x| x != n);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for ns in namespaces {
        if seen.insert(ns.clone()) {
            st.create(Res::Namespace, "", json!({"metadata": {"name": ns}}), false)
                .map_err(|e| fail(format!("namespace {ns}"), e))?;
        }
    }
    let masters = s.control_plane.node_names();
    for name in &masters {
        st.add_control_plane_node(name, &s.version)
            .map_err(|e| fail(format!("control-plane node {name}"), e))?;
    }
    if !masters.is_empty() {
        st.kubeadm_config()
            .map_err(|e| fail("kubeadm-config".into(), e))?;
    }
    if s.kube_proxy {
        st.kube_proxy().map_err(|e| fail("kube-proxy".into(), e))?;
    }
    for p in &s.pools {
        for i in 0..p.count {
            let name = format!("{}-{i}", p.name);
            let mut labels: serde_json::Map<String, Value> = p
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            labels.insert("kbg.io/pool".into(), json!(p.name));
            let mut annotations = json!({KWOK_ANNOTATION: "fake"});
            if let Some(b) = p.boot_seconds {
                annotations[BOOT_ANNOTATION] = json!(b.to_string());
            }
            let never = i >= p.count - p.never_ready;
            if never {
                annotations[NEVER_READY_ANNOTATION] = json!("true");
            }
            let mut capacity = serde_json::Map::new();
            for (k, v) in [
                ("cpu", &p.capacity.cpu),
                ("memory", &p.capacity.memory),
                ("pods", &p.capacity.pods),
            ] {
                if let Some(v) = v {
                    capacity.insert(k.into(), json!(v));
                }
            }
            let mut node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {"providerID": format!("kbg-sim://{}/{name}", p.name)},
                "status": {"nodeInfo": {"kubeletVersion": p.version.clone().unwrap_or_else(|| s.version.clone())}},
            });
            if !capacity.is_empty() {
                node["status"]["capacity"] = Value::Object(capacity);
            }
            if !p.taints.is_empty() {
                node["spec"]["taints"] = serde_json::to_value(&p.taints).unwrap_or_default();
            }
            if p.cordoned {
                node["spec"]["unschedulable"] = json!(true);
            }
            st.create(Res::Node, "", node, false)
                .map_err(|e| fail(format!("node {name}"), e))?;
        }
    }
    let objects = s
        .workload_objects()
        .into_iter()
        .chain(s.manifests.iter().cloned());
    for (i, o) in objects.enumerate() {
        let api = o["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = o["kind"].as_str().unwrap_or("").to_string();
        let Some(res) = res_of(&api, &kind) else {
            return Err(SimError::Scenario(format!(
                "object {i} ({api} {kind}): not a resource the simulated cluster serves"
            )));
        };
        let ns = if res.def().namespaced {
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        let (res, o) = if res == Res::EventV1 {
            (Res::Event, events::to_core(&o))
        } else {
            (res, o)
        };
        st.create(res, &ns, o, false)
            .map_err(|e| fail(format!("{kind} {ns}/{name}"), e))?;
    }
    // settle: the starting cluster is up
    st.settling = true;
    while st.tick(usize::MAX) {}
    st.settling = false;
    // the books start with the settled cluster, not with its build-up
    let keys: Vec<_> = st.table(Res::Pdb).objs.keys().cloned().collect();
    for m in st.disruption.by_ns.values_mut() {
        for e in m.values_mut() {
            e.books = Default::default();
        }
    }
    st.disruption.sync_dirty.extend(keys);
    st.end_tx();
    Ok(())
}

/// The stats of a cluster.
pub(crate) fn stats_of(shared: &Shared) -> SimStats {
    let (counters, pdbs, pods, nodes, rv) = shared.read(|st| {
        (
            st.counters.clone(),
            st.pdb_books(),
            st.table(Res::Pod).objs.len() as u64,
            st.table(Res::Node).objs.len() as u64,
            st.rv,
        )
    });
    let audit = shared.audit.lock();
    SimStats {
        requests: audit.total,
        requests_by_verb: audit.by_verb.clone(),
        requests_by_code: audit.by_code.clone(),
        pdb_violations: counters.pdb_violations,
        evictions_allowed: counters.evictions_allowed,
        evictions_refused: counters.evictions_refused,
        evictions_errors: counters.evictions_errors,
        pods_deleted: counters.pods_deleted,
        pods_removed: counters.pods_removed,
        pods,
        nodes,
        resource_version: rv,
        sim_time: clock::rfc3339_micro(shared.clock.now()),
        pdbs: pdbs
            .into_iter()
            .map(|(namespace, name, b, deleted)| PdbStats {
                namespace,
                name,
                desired_healthy: b.desired_healthy,
                current_healthy: b.current_healthy,
                min_margin_seen: b.min_margin,
                violations: b.violations,
                deleted,
            })
            .collect(),
    }
}

/// Puts faults in force.
pub(crate) fn apply_faults(shared: &Shared, f: Faults) {
    *shared.dice.lock() = faults::Dice::new(f.clone());
    shared.write(|st| {
        let was_stopped = st.faults.disruption_controller_stopped;
        st.faults = f;
        if was_stopped && !st.faults.disruption_controller_stopped {
            // the controller catches up with every PDB
            let keys: Vec<_> = st.table(Res::Pdb).objs.keys().cloned().collect();
            for k in keys {
                st.dirty.pdbs_async.insert(k.clone());
                st.disruption.sync_dirty.insert(k);
            }
        }
    });
}

impl SimCluster {
    /// Starts a cluster: loads the scenario (settled: nodes Ready, pods Running), binds
    /// 127.0.0.1:`port`, serves.
    ///
    /// # Errors
    /// [`SimError::Config`] for a bad speed or faults, [`SimError::Scenario`] for a
    /// scenario the API server rejects, [`SimError::Io`] when the port or the audit log
    /// cannot be opened, [`SimError::Tls`].
    pub async fn start(config: SimConfig) -> Result<SimCluster, SimError> {
        if !(config.speed.is_finite() && config.speed > 0.0) {
            return Err(SimError::Config(format!(
                "speed: {} is not a number greater than 0",
                config.speed
            )));
        }
        config.scenario.validate()?;
        let faults = if config.faults != Faults::default() {
            config.faults.clone()
        } else {
            config.scenario.faults.clone()
        };
        faults.validate().map_err(SimError::Config)?;
        let audit_file = match &config.audit_log {
            Some(p) => Some(std::fs::File::create(p).map_err(|e| SimError::Io {
                what: format!("opening audit log {}", p.display()),
                source: e,
            })?),
            None => None,
        };
        let tls = if config.insecure_http {
            None
        } else {
            Some(tls::generate()?)
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|e| SimError::Io {
                what: format!("binding 127.0.0.1:{}", config.port),
                source: e,
            })?;
        let addr = listener.local_addr().map_err(|e| SimError::Io {
            what: "reading the bound address".into(),
            source: e,
        })?;
        let clock = clock::SimClock::new(config.speed);
        let mut st = State::new(
            clock,
            config.scenario.defaults.clone(),
            faults.clone(),
            config.scenario.version.clone(),
            config.watch_history,
        );
        load(&mut st, &config.scenario)?;
        let published_rv = st.published_rv.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            clock,
            token: random_token(),
            driver: tokio::sync::Notify::new(),
            shutdown: tokio::sync::watch::channel(false).0,
            audit: Mutex::new(stats::Audit::new(audit_file)),
            dice: Mutex::new(faults::Dice::new(faults)),
            server_address: addr.to_string(),
            published_rv,
        });
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let tasks = vec![
            tokio::spawn(server::driver(shared.clone())),
            tokio::spawn(server::serve(listener, acceptor, shared.clone())),
        ];
        Ok(SimCluster {
            shared,
            addr,
            ca_pem: tls.map(|t| t.ca_pem),
            tasks,
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (`http://` with `insecure_http`).
    pub fn server_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate (PEM), `None` with `insecure_http`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig: cluster `kbg-sim` (server and CA data), user `kbg-sim` (the bearer
    /// token), context `kbg-sim` (namespace default), current.
    pub fn kubeconfig_yaml(&self) -> String {
        use base64::Engine;
        let ca = match &self.ca_pem {
            Some(pem) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kbg-sim\n  cluster:\n    server: {}\n{ca}users:\n- name: kbg-sim\n  user:\n    token: {}\ncontexts:\n- name: kbg-sim\n  context:\n    cluster: kbg-sim\n    user: kbg-sim\n    namespace: default\ncurrent-context: kbg-sim\npreferences: {{}}\n",
            self.server_url(),
            self.shared.token
        )
    }

    /// Writes [`SimCluster::kubeconfig_yaml`] to `path` (mode 0600: it holds the token).
    ///
    /// # Errors
    /// The I/O error.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        f.write_all(self.kubeconfig_yaml().as_bytes())
    }

    /// The simulated clock now.
    pub fn now(&self) -> jiff::Timestamp {
        self.shared.clock.now()
    }

    /// Simulated seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.shared.clock.speed()
    }

    /// Counters: requests, evictions, PDB books.
    pub fn stats(&self) -> SimStats {
        stats_of(&self.shared)
    }

    /// Every request so far.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.shared.audit.lock().entries.clone()
    }

    /// Puts faults in force (replacing the current ones).
    pub fn set_faults(&self, faults: Faults) {
        apply_faults(&self.shared, faults);
    }

    /// Stops a node's simulated kubelet: after the node-monitor grace period the node is
    /// NotReady (Unknown), tainted unreachable, its pods not Ready, then evicted after
    /// their tolerations. Returns `false` when no simulated node has that name.
    pub fn stop_kubelet(&self, node: &str) -> bool {
        self.shared.write(|st| st.stop_kubelet(node))
    }

    /// Starts a node's simulated kubelet again (Ready at once). Returns `false` when no
    /// simulated node has that name.
    pub fn start_kubelet(&self, node: &str) -> bool {
        self.shared.write(|st| st.start_kubelet(node))
    }

    /// Upgrades a control-plane node in place: its static pods (kube-apiserver, …) move to
    /// `version` (the kubelet replaces the mirror pods) and its kubelet reports `version`.
    /// `/version` follows once every kube-apiserver runs it.
    ///
    /// # Errors
    /// [`SimError::Config`] when `node` is not a control-plane node or `version` is not a
    /// Kubernetes version.
    pub fn upgrade_control_plane_node(&self, node: &str, version: &str) -> Result<(), SimError> {
        if version::parse(version).is_none() {
            return Err(SimError::Config(format!(
                "version: {version:?} is not a Kubernetes version"
            )));
        }
        self.shared
            .write(|st| st.upgrade_control_plane_node(node, version))
            .map_err(|_| SimError::Config(format!("{node}: not a control-plane node")))
    }

    /// Upgrades part of a control-plane node in place: the static pods of `components`
    /// (`etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`) move to
    /// `version`, and with `kubelet` among them the node's kubelet reports it. A node
    /// annotated `sim.kbg.io/fail-upgrade` refuses control-plane upgrades (see
    /// `sim/SCENARIO.md`).
    ///
    /// # Errors
    /// [`SimError::Config`] naming the problem: not a control-plane node, not a version,
    /// an unknown component, or the injected failure.
    pub fn upgrade_master(
        &self,
        node: &str,
        version: &str,
        components: &[&str],
    ) -> Result<(), SimError> {
        if version::parse(version).is_none() {
            return Err(SimError::Config(format!(
                "version: {version:?} is not a Kubernetes version"
            )));
        }
        self.shared
            .write(|st| st.upgrade_master(node, version, components))
            .map_err(|e| {
                SimError::Config(format!(
                    "{node}: {}",
                    e.body["message"].as_str().unwrap_or("refused")
                ))
            })
    }

    /// Stops serving: closes watches and connections, stops the controllers, frees the
    /// port.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// `kbg sim serve`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Scenario file (YAML; see sim/SCENARIO.md), or a file of Kubernetes manifests.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Where to write the kubeconfig once serving.
    #[arg(long, value_name = "PATH", default_value = "kbg-sim.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// Simulated seconds per wall second (60: a simulated minute per second).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub speed: f64,
    /// Also write the audit log (JSON lines) to this file.
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (debugging).
    #[arg(long)]
    pub insecure_http: bool,
}

/// Runs a simulated cluster in the foreground: starts it, writes the kubeconfig once it
/// is serving, prints the server URL and `export KUBECONFIG=…`, and stops cleanly on
/// SIGINT or SIGTERM.
///
/// # Errors
/// Those of [`SimCluster::start`], and [`SimError::Io`] for the kubeconfig or signals.
pub async fn serve(args: ServeArgs) -> Result<(), SimError> {
    let scenario = match &args.scenario {
        Some(p) => Scenario::from_file(p)?,
        None => Scenario::default(),
    };
    let version = scenario.version.clone();
    let cluster = SimCluster::start(SimConfig {
        scenario,
        speed: args.speed,
        port: args.port,
        insecure_http: args.insecure_http,
        audit_log: args.audit_log.clone(),
        ..SimConfig::default()
    })
    .await?;
    cluster
        .write_kubeconfig(&args.kubeconfig)
        .map_err(|e| SimError::Io {
            what: format!("writing kubeconfig {}", args.kubeconfig.display()),
            source: e,
        })?;
    let path = std::path::absolute(&args.kubeconfig).unwrap_or(args.kubeconfig.clone());
    println!(
        "kbg-sim: serving {} (Kubernetes {version}, {} simulated seconds per second)",
        cluster.server_url(),
        args.speed
    );
    println!("export KUBECONFIG={}", path.display());
    let sig = |what: &str, e: std::io::Error| SimError::Io {
        what: format!("listening for {what}"),
        source: e,
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| sig("SIGTERM", e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| sig("SIGINT", e))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| sig("Ctrl-C", e))?;
    println!("kbg-sim: stopping");
    cluster.shutdown().await;
    Ok(())
}
