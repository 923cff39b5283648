//! kbg provider whose machines are Node objects in a simulated (kwok-style) cluster.
//!
//! A machine of pool `beta` named `beta-0` is the Node `beta-0`, created through the
//! Kubernetes API with:
//!
//! - the annotation `kwok.x-k8s.io/node: fake`, so a kwok-style simulated kubelet (kbg's
//!   own `kbg-sim`, or kwok on a real cluster) manages it and brings it to Ready;
//! - `spec.providerID: kbg-sim://<pool>/<machine>`, the link kbg follows from machine
//!   to node;
//! - the pool's labels (including `kbg.io/pool`) and taints;
//! - `status.capacity`/`allocatable` and `status.nodeInfo.kubeletVersion` = the pool's
//!   version, which the simulated kubelet keeps reporting.
//!
//! Nothing here assumes kbg's simulator: it is plain Node objects through any API server.
//! Deleting the Node deprovisions the machine.
//!
//! Settings (the pool's `sim:` block in `kbg.yaml`):
//!
//! ```yaml
//! sim:
//!   capacity: { cpu: "4", memory: 16Gi, pods: 110 }   # default as shown
//!   boot_seconds: 10          # sim-seconds from creation to Ready (simulator default when absent)
//!   fail_provision: [beta-1]  # fault: these machines fail to provision
//!   never_ready: [beta-2]     # fault: these machines are made but never become Ready
//! ```
//!
//! The fault knobs exist for tests of kbg's failure handling (deploy-pool's report of
//! machines that never joined, `--cleanup-on-failure`, `--retry-failed`).
//!
//! **Run-command** (the control-plane path) works on the simulated cluster's masters:
//! the machine is the master's node (by [`Machine::node_name`], else its name), and the
//! script is read for the commands that upgrade a master ([`script`] lists them:
//! `kubeadm upgrade apply|node`, static-pod manifest image rewrites, kubelet packages and
//! restarts, etcd snapshots), which move the master's static pods and kubelet through
//! `kbg-sim`'s `POST /sim/v1/control-plane/<node>/upgrade` and kubeadm's
//! `kube-system/kubeadm-config` ConfigMap. This part needs `kbg-sim`: it is the one
//! place the provider speaks the simulator's own API. A master whose upgrade the
//! simulator refuses (`sim.kbg.io/fail-upgrade`) makes the script exit 1 with the
//! simulator's message, as kubeadm exits 1 when the restarted static pods do not come up.

pub mod script;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, NodeSpec, NodeStatus, NodeSystemInfo, Taint as KTaint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kbg_provider::{
    CommandOutput, DeprovisionReport, ErrorKind, Machine, MachineState, PoolSpec, Provider,
    ProviderError, ProvisionReport, RemoteCommand, Result,
};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;

/// The provider's name in `kbg.yaml`.
pub const NAME: &str = "sim";
/// The providerID scheme of simulated machines: `kbg-sim://<pool>/<machine>`.
pub const PROVIDER_ID_SCHEME: &str = "kbg-sim://";
/// The annotation that hands a node to a kwok-style simulated kubelet.
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Annotation: sim-seconds from creation to Ready (understood by `kbg-sim`).
pub const BOOT_SECONDS_ANNOTATION: &str = "sim.kbg.io/boot-seconds";
/// Annotation: the node never becomes Ready (a fault, understood by `kbg-sim`).
pub const NEVER_READY_ANNOTATION: &str = "sim.kbg.io/never-ready";

/// How long [`Provider::deprovision`] waits for a deleted Node to be gone (wall time).
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// The providerID of machine `machine` of pool `pool`.
pub fn provider_id(pool: &str, machine: &str) -> String {
    format!("{PROVIDER_ID_SCHEME}{pool}/{machine}")
}

/// The pool and machine a simulated providerID names, if it is one.
pub fn parse_provider_id(id: &str) -> Option<(&str, &str)> {
    id.strip_prefix(PROVIDER_ID_SCHEME)?.split_once('/')
}

/// A node's capacity.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    cpu: Option<serde_json::Value>,
    memory: Option<serde_json::Value>,
    pods: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    capacity: Option<RawCapacity>,
    boot_seconds: Option<serde_json::Value>,
    #[serde(default)]
    fail_provision: Vec<String>,
    #[serde(default)]
    never_ready: Vec<String>,
}

/// The `sim:` settings of a pool, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSettings {
    /// `cpu` quantity.
    pub cpu: String,
    /// `memory` quantity.
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Sim-seconds from creation to Ready, if set.
    pub boot_seconds: Option<u64>,
    /// Machines that fail to provision (a fault).
    pub fail_provision: Vec<String>,
    /// Machines that never become Ready (a fault).
    pub never_ready: Vec<String>,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            boot_seconds: None,
            fail_provision: Vec::new(),
            never_ready: Vec::new(),
        }
    }
}

/// Whether `s` looks like a Kubernetes quantity: a decimal number with an optional
/// suffix (`m`, `k`, `M`, `G`, `T`, `P`, `E`, `Ki` … `Ei`, or an exponent `e3`).
fn is_quantity(s: &str) -> bool {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let num_ok = !num.is_empty()
        && num.matches('.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    num_ok && suffix_ok
}

impl SimSettings {
    /// Parse and validate `pool`'s `sim:` block (`Null` = all defaults).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming `pools.<pool>.sim.<field>` and the fix.
    pub fn from_pool(pool: &PoolSpec) -> Result<SimSettings> {
        let base = format!("pools.{}.sim", pool.name);
        let bad = |field: &str, msg: String| {
            ProviderError::invalid_config(NAME, format!("{base}.{field}"), msg)
        };
        let raw: RawSettings = match &pool.settings {
            serde_json::Value::Null => RawSettings::default(),
            v => serde_json::from_value(v.clone()).map_err(|e| {
                ProviderError::invalid_config(
                    NAME,
                    base.clone(),
                    format!(
                        "{e}; known fields: capacity, boot_seconds, fail_provision, never_ready"
                    ),
                )
            })?,
        };
        let mut s = SimSettings::default();
        if let Some(c) = raw.capacity {
            let quantity = |field: &str, v: serde_json::Value| -> Result<String> {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(bad(
                            field,
                            format!("{other} is not a quantity such as 4, 500m or 16Gi"),
                        ));
                    }
                };
                if is_quantity(&text) {
                    Ok(text)
                } else {
                    Err(bad(
                        field,
                        format!("{text:?} is not a quantity such as 4, 500m or 16Gi"),
                    ))
                }
            };
            if let Some(v) = c.cpu {
                s.cpu = quantity("capacity.cpu", v)?;
            }
            if let Some(v) = c.memory {
                s.memory = quantity("capacity.memory", v)?;
            }
            if let Some(v) = c.pods {
                s.pods = v
                    .as_u64()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        bad(
                            "capacity.pods",
                            format!("{v} is not a pod count from 1 to 10000"),
                        )
                    })? as u32;
            }
        }
        if let Some(v) = raw.boot_seconds {
            s.boot_seconds = Some(v.as_u64().ok_or_else(|| {
                bad(
                    "boot_seconds",
                    format!("{v} is not a whole number of seconds"),
                )
            })?);
        }
        s.fail_provision = raw.fail_provision;
        s.never_ready = raw.never_ready;
        Ok(s)
    }
}

/// Machines as Node objects through the Kubernetes API.
#[derive(Clone)]
pub struct SimProvider {
    client: kube::Client,
    nodes: Api<Node>,
    settings: SimSettings,
}

impl std::fmt::Debug for SimProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProvider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn kube_error(what: &str, e: kube::Error) -> ProviderError {
    let kind = match &e {
        kube::Error::Api(s) => match s.code {
            401 | 403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::Throttled,
            500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Failed,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorKind::Transient,
        _ => ErrorKind::Failed,
    };
    let msg = match &e {
        kube::Error::Api(s) => format!(
            "{what}: the API server answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => format!("{what}: {other}"),
    };
    ProviderError::new(NAME, kind, msg).with_source(e)
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Node object for machine `name` of `pool`, with `settings`.
pub fn node_object(settings: &SimSettings, pool: &PoolSpec, name: &str) -> Node {
    let mut annotations = BTreeMap::from([(KWOK_ANNOTATION.to_string(), "fake".to_string())]);
    if let Some(b) = settings.boot_seconds {
        annotations.insert(BOOT_SECONDS_ANNOTATION.into(), b.to_string());
    }
    if settings.never_ready.iter().any(|n| n == name) {
        annotations.insert(NEVER_READY_ANNOTATION.into(), "true".into());
    }
    let mut labels = pool.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.to_string());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("node.kubernetes.io/instance-type".into(), "kbg-sim".into());
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(settings.cpu.clone())),
        ("memory".to_string(), Quantity(settings.memory.clone())),
        ("pods".to_string(), Quantity(settings.pods.to_string())),
    ]);
    let taints: Vec<KTaint> = pool
        .taints
        .iter()
        .map(|t| KTaint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: t.effect.to_string(),
            time_added: None,
        })
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id(&pool.name, name)),
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: String::new(),
                container_runtime_version: "kbg-sim://1".into(),
                kernel_version: "6.1.0-kbg-sim".into(),
                kube_proxy_version: pool.version.clone(),
                kubelet_version: pool.version.clone(),
                machine_id: name.to_string(),
                operating_system: "linux".into(),
                os_image: "kbg simulated node".into(),
                swap: None,
                system_uuid: name.to_string(),
            }),
            ..Default::default()
        }),
    }
}

/// The machine `node` is, if it is one of `pool`'s simulated machines.
pub fn machine_of(pool: &str, node: &Node) -> Option<Machine> {
    let id = node.spec.as_ref()?.provider_id.as_deref()?;
    let (p, m) = parse_provider_id(id)?;
    if p != pool {
        return None;
    }
    let state = if node.metadata.deletion_timestamp.is_some() {
        MachineState::Stopping
    } else if is_ready(node) {
        MachineState::Running
    } else {
        MachineState::Pending
    };
    Some(Machine {
        name: m.to_string(),
        pool: pool.to_string(),
        provider_id: Some(id.to_string()),
        node_name: node.metadata.name.clone(),
        state,
        address: None,
        details: BTreeMap::new(),
    })
}

impl SimProvider {
    /// A provider for `pool`, creating nodes through `client`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a bad `sim:` block; nothing is contacted.
    pub fn from_pool(client: kube::Client, pool: &PoolSpec) -> Result<SimProvider> {
        Ok(SimProvider {
            nodes: Api::all(client.clone()),
            client,
            settings: SimSettings::from_pool(pool)?,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &SimSettings {
        &self.settings
    }

    /// The Node object for machine `name` of `pool`.
    pub fn node_for(&self, pool: &PoolSpec, name: &str) -> Node {
        node_object(&self.settings, pool, name)
    }

    async fn provision_one(&self, pool: &PoolSpec, name: &str) -> Result<Machine> {
        if self.settings.fail_provision.iter().any(|n| n == name) {
            return Err(ProviderError::new(
                NAME,
                ErrorKind::Failed,
                format!("fault injected by pools.{}.sim.fail_provision", pool.name),
            )
            .with_machine(name));
        }
        let node = self.node_for(pool, name);
        let existing = match self.nodes.create(&PostParams::default(), &node).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => self
                .nodes
                .get(name)
                .await
                .map_err(|e| kube_error("reading the existing node", e).with_machine(name))?,
            Err(e) => return Err(kube_error("creating the node", e).with_machine(name)),
        };
        machine_of(&pool.name, &existing).ok_or_else(|| {
            ProviderError::new(
                NAME,
                ErrorKind::Failed,
                format!(
                    "a node named {name} already exists and is not machine {name} of pool {} (its providerID is {:?}); rename the pool or remove that node",
                    pool.name,
                    existing.spec.as_ref().and_then(|s| s.provider_id.as_deref()).unwrap_or("")
                ),
            )
            .with_machine(name)
        })
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn kind(&self) -> &str {
        NAME
    }

    async fn provision(&self, pool: &PoolSpec, names: &[String]) -> Result<ProvisionReport> {
        let mut report = ProvisionReport::default();
        for name in names {
            match self.provision_one(pool, name).await {
                Ok(m) => report.machines.push(m),
                Err(e) => report.failed.push(e),
            }
        }
        Ok(report)
    }

    async fn list(&self, pool: &PoolSpec) -> Result<Vec<Machine>> {
        let nodes = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error("listing nodes", e))?;
        let mut machines: Vec<Machine> = nodes
            .items
            .iter()
            .filter_map(|n| machine_of(&pool.name, n))
            .collect();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    async fn deprovision(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
    ) -> Result<DeprovisionReport> {
        let mut report = DeprovisionReport::default();
        for m in machines {
            if m.pool != pool.name {
                report.failed.push(
                    ProviderError::new(
                        NAME,
                        ErrorKind::Failed,
                        format!("belongs to pool {}, not {}", m.pool, pool.name),
                    )
                    .with_machine(&m.name),
                );
                continue;
            }
            let node_name = m.node_name.clone().unwrap_or_else(|| m.name.clone());
            let node = match self.nodes.get_opt(&node_name).await {
                Ok(n) => n,
                Err(e) => {
                    report
                        .failed
                        .push(kube_error("reading the node", e).with_machine(&m.name));
                    continue;
                }
            };
            let Some(node) = node else {
                report.removed.push(m.name.clone());
                continue;
            };
            if machine_of(&pool.name, &node).is_none_or(|found| found.name != m.name) {
                // The name now belongs to something else: the machine itself is gone.
                report.removed.push(m.name.clone());
                continue;
            }
            let uid = node.metadata.uid.clone().unwrap_or_default();
            match self
                .nodes
                .delete(&node_name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    report.removed.push(m.name.clone());
                    continue;
                }
                Err(e) => {
                    report
                        .failed
                        .push(kube_error("deleting the node", e).with_machine(&m.name));
                    continue;
                }
            }
            let gone = tokio::time::timeout(
                DELETE_WAIT,
                await_condition(self.nodes.clone(), &node_name, conditions::is_deleted(&uid)),
            )
            .await;
            match gone {
                Ok(Ok(_)) => report.removed.push(m.name.clone()),
                Ok(Err(e)) => report.failed.push(
                    ProviderError::new(
                        NAME,
                        ErrorKind::Transient,
                        format!("waiting for the node to be gone: {e}"),
                    )
                    .with_machine(&m.name),
                ),
                Err(_) => report.failed.push(
                    ProviderError::new(
                        NAME,
                        ErrorKind::Timeout,
                        format!(
                            "the node was deleted but is still present after {}s (a finalizer?)",
                            DELETE_WAIT.as_secs()
                        ),
                    )
                    .with_machine(&m.name),
                ),
            }
        }
        Ok(report)
    }

    async fn run_command(
        &self,
        _pool: &PoolSpec,
        machine: &Machine,
        command: &RemoteCommand,
    ) -> Result<CommandOutput> {
        let node = machine.node_name.as_deref().unwrap_or(&machine.name);
        let limit = Duration::from_secs(command.timeout_secs.max(1));
        match tokio::time::timeout(limit, self.run_script(node, &command.script)).await {
            Ok(r) => r.map_err(|e| e.with_machine(&machine.name)),
            Err(_) => Err(ProviderError::new(
                NAME,
                ErrorKind::Timeout,
                format!("the command did not finish in {}s", limit.as_secs()),
            )
            .with_machine(&machine.name)),
        }
    }
}

/// A script's run so far: what it printed, and how it ended when it stopped early.
#[derive(Default)]
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    fn say(&mut self, line: impl AsRef<str>) {
        self.stdout.push_str(line.as_ref());
        self.stdout.push('\n');
    }

    fn done(self) -> CommandOutput {
        CommandOutput {
            exit_code: 0,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }

    fn failed(mut self, message: impl AsRef<str>) -> CommandOutput {
        self.stderr.push_str(message.as_ref());
        self.stderr.push('\n');
        CommandOutput {
            exit_code: 1,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

/// `(major, minor, patch)` of `v1.34.2`, `1.34.2-rc.1`.
fn version_key(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim_start_matches('v').split(['-', '+', '_']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().unwrap_or(Some(0))?))
}

/// The `kubernetesVersion:` of a kubeadm `ClusterConfiguration` document.
fn cluster_version_of(doc: &str) -> Option<&str> {
    doc.lines()
        .find_map(|l| l.trim().strip_prefix("kubernetesVersion:"))
        .map(|v| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The kubeadm ConfigMap `kubeadm upgrade` reads and writes.
const KUBEADM_CONFIG: &str = "kubeadm-config";

impl SimProvider {
    /// Move `components` of master `node` to `version` through the simulator. `Ok(Err)`:
    /// the simulator refused (the script fails with its words).
    async fn upgrade(
        &self,
        node: &str,
        version: &str,
        components: &[&str],
    ) -> Result<std::result::Result<(), String>> {
        let body = serde_json::json!({"version": version, "components": components});
        let req = http::Request::post(format!("/sim/v1/control-plane/{node}/upgrade"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&body).expect("JSON serialises"))
            .map_err(|e| ProviderError::new(NAME, ErrorKind::Failed, e.to_string()))?;
        match self.client.request::<serde_json::Value>(req).await {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 404 | 500) => {
                Ok(Err(if s.code == 404 {
                    format!("{node} is not a control-plane node of the simulated cluster")
                } else {
                    s.message.clone()
                }))
            }
            Err(e) => Err(kube_error("asking the simulator to upgrade the master", e)),
        }
    }

    /// `kubeadm-config`'s ClusterConfiguration text, if the cluster has one.
    async fn cluster_configuration(&self) -> Result<Option<(Api<ConfigMap>, String)>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-system");
        let cm = api
            .get_opt(KUBEADM_CONFIG)
            .await
            .map_err(|e| kube_error("reading kube-system/kubeadm-config", e))?;
        Ok(cm.and_then(|c| {
            c.data
                .and_then(|mut d| d.remove("ClusterConfiguration"))
                .map(|doc| (api, doc))
        }))
    }

    /// Run `script` on master `node`, as far as the simulator can (see [`script`]).
    async fn run_script(&self, node: &str, script: &str) -> Result<CommandOutput> {
        use script::Action;
        const STATIC: [&str; 4] = script::STATIC_PODS;
        let mut run = Run::default();
        let mut kubeadm: Option<String> = None;
        let mut kubelet: Option<String> = None;
        let mut images: Vec<(String, String)> = Vec::new();
        let mut actions = script::actions(script).into_iter().peekable();
        while let Some(action) = actions.next() {
            match action {
                Action::SetImage(component, version) => {
                    images.push((component, version));
                    // The kubelet sees the rewritten manifests together.
                    if matches!(actions.peek(), Some(Action::SetImage(..))) {
                        continue;
                    }
                    let mut by_version: BTreeMap<String, Vec<&str>> = BTreeMap::new();
                    for (c, v) in &images {
                        by_version.entry(v.clone()).or_default().push(c.as_str());
                    }
                    for (v, components) in by_version {
                        if let Err(why) = self.upgrade(node, &v, &components).await? {
                            return Ok(run.failed(format!(
                                "the kubelet did not bring the rewritten static pods ({}) up at {v}: {why}",
                                components.join(", ")
                            )));
                        }
                        run.say(format!("static pods {} now run {v}", components.join(", ")));
                    }
                    images.clear();
                }
                Action::KubeadmApply(version) => {
                    let Some(want) = version_key(&version) else {
                        return Ok(run.failed(format!(
                            "[upgrade/version] FATAL: couldn't parse version {version:?}"
                        )));
                    };
                    if let Some(have) = kubeadm.as_deref().and_then(version_key)
                        && want > have
                    {
                        return Ok(run.failed(format!(
                            "[upgrade/version] FATAL: the --version argument is invalid: Specified version to upgrade to \"{version}\" is higher than the kubeadm version \"v{}\". Upgrade kubeadm first using the tool you used to install kubeadm",
                            kubeadm.as_deref().unwrap_or_default()
                        )));
                    }
                    if let Err(why) = self.upgrade(node, &version, &STATIC).await? {
                        return Ok(run.failed(format!(
                            "[upgrade/apply] FATAL: couldn't upgrade control plane. kubeadm has tried to recover everything into the earlier state. Errors faced: {why}"
                        )));
                    }
                    if let Some((api, doc)) = self.cluster_configuration().await? {
                        let doc: String = doc
                            .lines()
                            .map(|l| {
                                if l.trim_start().starts_with("kubernetesVersion:") {
                                    format!("kubernetesVersion: {version}")
                                } else {
                                    l.to_string()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                            + "\n";
                        let patch = serde_json::json!({"data": {"ClusterConfiguration": doc}});
                        api.patch(
                            KUBEADM_CONFIG,
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await
                        .map_err(|e| kube_error("writing kube-system/kubeadm-config", e))?;
                    }
                    run.say(format!(
                        "[upgrade/successful] SUCCESS! Your cluster was upgraded to \"{version}\". Enjoy!"
                    ));
                }
                Action::KubeadmNode => {
                    let Some((_, doc)) = self.cluster_configuration().await? else {
                        return Ok(run.failed(
                            "[upgrade] FATAL: unable to fetch the kubeadm-config ConfigMap: configmaps \"kubeadm-config\" not found",
                        ));
                    };
                    let Some(version) = cluster_version_of(&doc).map(str::to_string) else {
                        return Ok(run.failed(
                            "[upgrade] FATAL: the kubeadm-config ConfigMap has no kubernetesVersion",
                        ));
                    };
                    if let Err(why) = self.upgrade(node, &version, &STATIC).await? {
                        return Ok(run.failed(format!(
                            "[upgrade/node] FATAL: couldn't upgrade the control plane instance of this node: {why}"
                        )));
                    }
                    run.say(format!(
                        "[upgrade] The control plane instance for this node was successfully upgraded to {version}!"
                    ));
                }
                Action::Install(package, version) => {
                    match package.as_str() {
                        "kubeadm" => kubeadm = Some(version.clone()),
                        "kubelet" => kubelet = Some(format!("v{version}")),
                        _ => {}
                    }
                    run.say(format!("installed {package} {version}"));
                }
                Action::KubeletUnit(version) => {
                    run.say(format!("kubelet unit set to {version}"));
                    kubelet = Some(version);
                }
                Action::RestartKubelet => {
                    if let Some(v) = kubelet.take() {
                        if let Err(why) = self.upgrade(node, &v, &["kubelet"]).await? {
                            return Ok(run.failed(format!("kubelet.service failed: {why}")));
                        }
                        run.say(format!("kubelet {v} running"));
                    } else {
                        run.say("kubelet restarted");
                    }
                }
                Action::EtcdSnapshot(path) => run.say(format!("Snapshot saved at {path}")),
            }
        }
        Ok(run.done())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::{JoinConfig, Taint, TaintEffect};

    fn pool(settings: serde_json::Value) -> PoolSpec {
        PoolSpec {
            name: "beta".into(),
            version: "v1.31.2".into(),
            labels: BTreeMap::from([("kbg.io/pool".to_string(), "beta".to_string())]),
            taints: vec![Taint {
                key: "dedicated".into(),
                value: Some("web".into()),
                effect: TaintEffect::NoSchedule,
            }],
            settings,
            template: None,
            join: JoinConfig::default(),
        }
    }

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("beta", "beta-3");
        assert_eq!(id, "kbg-sim://beta/beta-3");
        assert_eq!(parse_provider_id(&id), Some(("beta", "beta-3")));
        assert_eq!(parse_provider_id("aws:///us-east-1a/i-1"), None);
    }

    #[test]
    fn settings_default_and_validate() {
        assert_eq!(
            SimSettings::from_pool(&pool(serde_json::Value::Null)).unwrap(),
            SimSettings::default()
        );
        let s = SimSettings::from_pool(&pool(serde_json::json!({
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": 50},
            "boot_seconds": 5,
            "fail_provision": ["beta-1"],
            "never_ready": ["beta-2"],
        })))
        .unwrap();
        assert_eq!(
            (s.cpu.as_str(), s.memory.as_str(), s.pods),
            ("8", "32Gi", 50)
        );
        assert_eq!(s.boot_seconds, Some(5));
        for (settings, field) in [
            (
                serde_json::json!({"capacity": {"cpu": "lots"}}),
                "pools.beta.sim.capacity.cpu",
            ),
            (
                serde_json::json!({"capacity": {"memory": "16GB"}}),
                "pools.beta.sim.capacity.memory",
            ),
            (
                serde_json::json!({"capacity": {"pods": 0}}),
                "pools.beta.sim.capacity.pods",
            ),
            (
                serde_json::json!({"boot_seconds": "ten"}),
                "pools.beta.sim.boot_seconds",
            ),
            (serde_json::json!({"boot": 1}), "pools.beta.sim"),
        ] {
            let e = SimSettings::from_pool(&pool(settings.clone())).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::InvalidConfig {
                    field: field.into()
                },
                "{settings}: {e}"
            );
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn quantities() {
        for (q, ok) in [
            ("4", true),
            ("500m", true),
            ("16Gi", true),
            ("1.5", true),
            ("1e3", true),
            ("128974848", true),
            ("16GB", false),
            ("", false),
            ("Gi", false),
            (".5", false),
            ("1.2.3", false),
        ] {
            assert_eq!(is_quantity(q), ok, "{q}");
        }
    }

    #[test]
    fn nodes_carry_what_the_simulated_kubelet_needs() {
        let p = pool(serde_json::json!({"boot_seconds": 3, "never_ready": ["beta-1"]}));
        let node = node_object(&SimSettings::from_pool(&p).unwrap(), &p, "beta-1");
        let ann = node.metadata.annotations.unwrap();
        assert_eq!(ann[KWOK_ANNOTATION], "fake");
        assert_eq!(ann[BOOT_SECONDS_ANNOTATION], "3");
        assert_eq!(ann[NEVER_READY_ANNOTATION], "true");
        assert_eq!(node.metadata.labels.unwrap()["kbg.io/pool"], "beta");
        let spec = node.spec.unwrap();
        assert_eq!(spec.provider_id.as_deref(), Some("kbg-sim://beta/beta-1"));
        assert_eq!(spec.taints.unwrap()[0].effect, "NoSchedule");
        let status = node.status.unwrap();
        assert_eq!(status.node_info.unwrap().kubelet_version, "v1.31.2");
        assert_eq!(status.allocatable.unwrap()["pods"].0, "110");
    }
}
