//! Scenarios: the starting cluster, as YAML (see `sim/SCENARIO.md`).
//!
//! A scenario names the control plane (nodes and version), worker pools (count, kubelet
//! version, labels, taints, capacity, boot delay), namespaces, workloads (deployments,
//! statefulsets, daemonsets, bare pods, emptyDir pods, PDBs, with start-up and
//! termination times), raw Kubernetes manifests, default delays and faults. A file of
//! raw manifests alone (one or more YAML documents with `apiVersion` and `kind`) is a
//! scenario too. The cluster a scenario describes is settled when
//! [`crate::SimCluster::start`] returns: nodes Ready, pods scheduled and Running.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Faults, SimError};

/// The default control-plane version.
pub const DEFAULT_VERSION: &str = "v1.33.1";

/// A starting cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Control-plane version (`v1.33.1`): `/version`, static pods, and the default
    /// kubelet version.
    pub version: String,
    /// Control-plane nodes.
    pub control_plane: ControlPlane,
    /// Run kube-proxy (a DaemonSet in kube-system on every node).
    pub kube_proxy: bool,
    /// Delays and capacities used where nothing more specific is given.
    pub defaults: Defaults,
    /// Worker pools.
    pub pools: Vec<Pool>,
    /// Namespaces to create (besides default, kube-system, kube-public, kube-node-lease
    /// and those the workloads name).
    pub namespaces: Vec<String>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Raw Kubernetes objects, created in order after the workloads.
    pub manifests: Vec<Value>,
    /// Faults in force from the start.
    pub faults: Faults,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            version: DEFAULT_VERSION.into(),
            control_plane: ControlPlane::default(),
            kube_proxy: true,
            defaults: Defaults::default(),
            pools: vec![],
            namespaces: vec![],
            workloads: vec![],
            manifests: vec![],
            faults: Faults::default(),
        }
    }
}

/// Control-plane nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlane {
    /// How many (named `<prefix>-0` …), unless `names` is given.
    pub count: usize,
    /// Name prefix.
    pub name_prefix: String,
    /// Explicit names.
    pub names: Vec<String>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            count: 1,
            name_prefix: "control-plane".into(),
            names: vec![],
        }
    }
}

impl ControlPlane {
    /// The node names.
    pub fn node_names(&self) -> Vec<String> {
        if self.names.is_empty() {
            (0..self.count)
                .map(|i| format!("{}-{i}", self.name_prefix))
                .collect()
        } else {
            self.names.clone()
        }
    }
}

/// Delays (sim-seconds) and capacities used where nothing more specific is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    /// A simulated node created without `sim.kbg.io/boot-seconds`: creation → Ready.
    pub node_boot_seconds: f64,
    /// A pod without `sim.kbg.io/startup-seconds`: bound → Running and Ready.
    pub pod_startup_seconds: f64,
    /// A pod without `sim.kbg.io/termination-seconds`: deleted → gone (capped by its
    /// grace period).
    pub pod_termination_seconds: f64,
    /// A node whose kubelet stopped is marked Unknown after this long
    /// (kube-controller-manager's `--node-monitor-grace-period`, 40 s before 1.32).
    pub node_monitor_grace_seconds: f64,
    /// cpu capacity of a node created without one.
    pub node_cpu: String,
    /// memory capacity of a node created without one.
    pub node_memory: String,
    /// pod capacity of a node created without one.
    pub node_pods: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            node_boot_seconds: 10.0,
            pod_startup_seconds: 2.0,
            pod_termination_seconds: 1.0,
            node_monitor_grace_seconds: 40.0,
            node_cpu: crate::controllers::kubelet::DEFAULT_CPU.into(),
            node_memory: crate::controllers::kubelet::DEFAULT_MEMORY.into(),
            node_pods: crate::controllers::kubelet::DEFAULT_PODS.into(),
        }
    }
}

/// A taint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// Node capacity (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// cpu (`4`, `3500m`).
    pub cpu: Option<String>,
    /// memory (`16Gi`).
    pub memory: Option<String>,
    /// pods (`110`).
    pub pods: Option<String>,
}

/// A pool of worker nodes: `<name>-0` … `<name>-<count-1>`, labelled `kbg.io/pool=<name>`,
/// provider ID `kbg-sim://<name>/<node>`, annotated for the simulated kubelet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// Nodes.
    pub count: usize,
    /// Kubelet version (default: the control plane's).
    pub version: Option<String>,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<TaintSpec>,
    /// Capacity (default: `defaults`).
    pub capacity: Capacity,
    /// Boot delay of these nodes (annotation `sim.kbg.io/boot-seconds`). Nodes of the
    /// starting cluster are Ready when the cluster starts; the delay matters for nodes
    /// created later with the same annotation.
    pub boot_seconds: Option<f64>,
    /// How many of the pool's nodes (the last ones) never become Ready (fault).
    pub never_ready: usize,
    /// Nodes start cordoned.
    pub cordoned: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            name: String::new(),
            count: 1,
            version: None,
            labels: BTreeMap::new(),
            taints: vec![],
            capacity: Capacity::default(),
            boot_seconds: None,
            never_ready: 0,
            cordoned: false,
        }
    }
}

/// What a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WorkloadKind {
    /// apps/v1 Deployment
    #[default]
    Deployment,
    /// apps/v1 StatefulSet
    StatefulSet,
    /// apps/v1 DaemonSet
    DaemonSet,
    /// bare Pods (`replicas` of them, named `<name>-<i>`, or `<name>` when one)
    Pod,
    /// policy/v1 PodDisruptionBudget alone
    PodDisruptionBudget,
}

/// Resource requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Requests {
    /// cpu (`100m`).
    pub cpu: Option<String>,
    /// memory (`128Mi`).
    pub memory: Option<String>,
}

/// A PodDisruptionBudget: `min_available` or `max_unavailable` (integer or `"50%"`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// `minAvailable`.
    pub min_available: Option<Value>,
    /// `maxUnavailable`.
    pub max_unavailable: Option<Value>,
    /// `unhealthyPodEvictionPolicy` (`IfHealthyBudget`, `AlwaysAllow`).
    pub unhealthy_pod_eviction_policy: Option<String>,
}

/// A workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// What it is.
    pub kind: WorkloadKind,
    /// Name.
    pub name: String,
    /// Namespace (created if missing).
    pub namespace: String,
    /// Replicas (Deployment, StatefulSet, Pod).
    pub replicas: i64,
    /// Container image.
    pub image: String,
    /// Pod labels (default `app: <name>`); the selector of the workload and of its PDB.
    pub labels: BTreeMap<String, String>,
    /// Requests of the one container.
    pub requests: Requests,
    /// `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `tolerations` (Kubernetes objects).
    pub tolerations: Vec<Value>,
    /// Bound → Running and Ready (`sim.kbg.io/startup-seconds`).
    pub startup_seconds: Option<f64>,
    /// Deleted → gone (`sim.kbg.io/termination-seconds`).
    pub termination_seconds: Option<f64>,
    /// `terminationGracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// Always use the whole grace period (`sim.kbg.io/full-grace`).
    pub full_grace: bool,
    /// Mount an emptyDir volume.
    pub empty_dir: bool,
    /// A PDB over the workload's pods (named like the workload). For kind
    /// `PodDisruptionBudget`, the PDB itself.
    pub pdb: Option<Budget>,
    /// StatefulSet `podManagementPolicy`.
    pub pod_management_policy: Option<String>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            kind: WorkloadKind::Deployment,
            name: String::new(),
            namespace: "default".into(),
            replicas: 1,
            image: "registry.k8s.io/pause:3.10".into(),
            labels: BTreeMap::new(),
            requests: Requests::default(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            startup_seconds: None,
            termination_seconds: None,
            grace_period_seconds: None,
            full_grace: false,
            empty_dir: false,
            pdb: None,
            pod_management_policy: None,
        }
    }
}

impl Scenario {
    /// Reads a scenario, or a file of raw Kubernetes manifests (one or more documents
    /// with `apiVersion` and `kind`).
    ///
    /// # Errors
    /// [`SimError::Scenario`] naming what is wrong.
    pub fn from_yaml(yaml: &str) -> Result<Scenario, SimError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
            .map_err(|e| SimError::Scenario(format!("not YAML: {e}")))?;
        let raw = !docs.is_empty()
            && docs
                .iter()
                .all(|d| d.get("apiVersion").is_some() && d.get("kind").is_some());
        let s = if raw {
            let mut manifests = Vec::new();
            for d in docs {
                if d["kind"] == "List" {
                    manifests.extend(d["items"].as_array().cloned().unwrap_or_default());
                } else {
                    manifests.push(d);
                }
            }
            Scenario {
                manifests,
                ..Scenario::default()
            }
        } else {
            if docs.len() > 1 {
                return Err(SimError::Scenario(
                    "a scenario is one YAML document (or a file of Kubernetes manifests)".into(),
                ));
            }
            serde_saphyr::from_str(yaml).map_err(|e| SimError::Scenario(e.to_string()))?
        };
        s.validate()?;
        Ok(s)
    }

    /// Reads a scenario file.
    ///
    /// # Errors
    /// [`SimError::Io`] or [`SimError::Scenario`].
    pub fn from_file(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io {
            what: format!("reading scenario {}", path.display()),
            source: e,
        })?;
        Scenario::from_yaml(&text).map_err(|e| match e {
            SimError::Scenario(m) => SimError::Scenario(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks what serde cannot.
    ///
    /// # Errors
    /// [`SimError::Scenario`] naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Scenario(m));
        if crate::version::parse(&self.version).is_none() {
            return bad(format!(
                "version: {:?} is not a Kubernetes version like v1.33.1",
                self.version
            ));
        }
        if let Err(e) = self.faults.validate() {
            return bad(e);
        }
        let d = &self.defaults;
        if !crate::controllers::kubelet::valid_capacity(&d.node_cpu, &d.node_memory, &d.node_pods) {
            return bad(
                "defaults: node_cpu, node_memory and node_pods must be Kubernetes quantities"
                    .into(),
            );
        }
        for (i, p) in self.pools.iter().enumerate() {
            if !crate::admission::is_dns_label(&p.name) {
                return bad(format!(
                    "pools[{i}].name: {:?} must be a lowercase DNS label",
                    p.name
                ));
            }
            if let Some(v) = &p.version
                && crate::version::parse(v).is_none()
            {
                return bad(format!(
                    "pools[{i}].version: {v:?} is not a Kubernetes version like v1.33.1"
                ));
            }
            if p.never_ready > p.count {
                return bad(format!("pools[{i}].never_ready: more than count"));
            }
            let c = &p.capacity;
            if !crate::controllers::kubelet::valid_capacity(
                c.cpu.as_deref().unwrap_or("1"),
                c.memory.as_deref().unwrap_or("1"),
                c.pods.as_deref().unwrap_or("1"),
            ) {
                return bad(format!("pools[{i}].capacity: not Kubernetes quantities"));
            }
            for t in &p.taints {
                if !matches!(
                    t.effect.as_str(),
                    "NoSchedule" | "PreferNoSchedule" | "NoExecute"
                ) {
                    return bad(format!(
                        "pools[{i}].taints: effect {:?} is not NoSchedule, PreferNoSchedule or NoExecute",
                        t.effect
                    ));
                }
            }
        }
        for (i, w) in self.workloads.iter().enumerate() {
            if !crate::admission::is_dns_subdomain(&w.name) {
                return bad(format!(
                    "workloads[{i}].name: {:?} must be a lowercase DNS name",
                    w.name
                ));
            }
            if !crate::admission::is_dns_label(&w.namespace) {
                return bad(format!(
                    "workloads[{i}].namespace: {:?} must be a lowercase DNS label",
                    w.namespace
                ));
            }
            if w.kind == WorkloadKind::PodDisruptionBudget && w.pdb.is_none() {
                return bad(format!(
                    "workloads[{i}].pdb: a PodDisruptionBudget needs min_available or max_unavailable"
                ));
            }
        }
        for (i, m) in self.manifests.iter().enumerate() {
            if m.get("apiVersion").is_none() || m.get("kind").is_none() {
                return bad(format!("manifests[{i}]: needs apiVersion and kind"));
            }
        }
        Ok(())
    }

    /// The objects the workloads stand for, in creation order: (apiVersion, kind, object).
    pub(crate) fn workload_objects(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for w in &self.workloads {
            let mut labels = w.labels.clone();
            if labels.is_empty() {
                labels.insert("app".into(), w.name.clone());
            }
            let mut annotations = BTreeMap::new();
            if let Some(s) = w.startup_seconds {
                annotations.insert(crate::STARTUP_ANNOTATION, s.to_string());
            }
            if let Some(s) = w.termination_seconds {
                annotations.insert(crate::TERMINATION_ANNOTATION, s.to_string());
            }
            if w.full_grace {
                annotations.insert(crate::FULL_GRACE_ANNOTATION, "true".into());
            }
            let mut container = json!({"name": "main", "image": w.image});
            let mut req = serde_json::Map::new();
            if let Some(c) = &w.requests.cpu {
                req.insert("cpu".into(), json!(c));
            }
            if let Some(m) = &w.requests.memory {
                req.insert("memory".into(), json!(m));
            }
            if !req.is_empty() {
                container["resources"] = json!({"requests": req});
            }
            let mut spec = json!({"containers": [container]});
            if w.empty_dir {
                spec["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
                spec["containers"][0]["volumeMounts"] =
                    json!([{"name": "scratch", "mountPath": "/scratch"}]);
            }
            if !w.node_selector.is_empty() {
                spec["nodeSelector"] = json!(w.node_selector);
            }
            if !w.tolerations.is_empty() {
                spec["tolerations"] = json!(w.tolerations);
            }
            if let Some(g) = w.grace_period_seconds {
                spec["terminationGracePeriodSeconds"] = json!(g);
            }
            let mut meta = json!({"labels": labels});
            if !annotations.is_empty() {
                meta["annotations"] = json!(annotations);
            }
            let template = json!({"metadata": meta, "spec": spec});
            let selector = json!({"matchLabels": labels});
            let base = |api: &str, kind: &str| {
                json!({"apiVersion": api, "kind": kind,
                       "metadata": {"name": w.name, "namespace": w.namespace, "labels": labels}})
            };
            match w.kind {
                WorkloadKind::Deployment => {
                    let mut o = base("apps/v1", "Deployment");
                    o["spec"] =
                        json!({"replicas": w.replicas, "selector": selector, "template": template});
                    out.push(o);
                }
                WorkloadKind::StatefulSet => {
                    let mut o = base("apps/v1", "StatefulSet");
                    o["spec"] = json!({"replicas": w.replicas, "selector": selector, "template": template,
                                       "serviceName": w.name});
                    if let Some(p) = &w.pod_management_policy {
                        o["spec"]["podManagementPolicy"] = json!(p);
                    }
                    out.push(o);
                }
                WorkloadKind::DaemonSet => {
                    let mut o = base("apps/v1", "DaemonSet");
                    o["spec"] = json!({"selector": selector, "template": template});
                    out.push(o);
                }
                WorkloadKind::Pod => {
                    for i in 0..w.replicas.max(0) {
                        let name = if w.replicas == 1 {
                            w.name.clone()
                        } else {
                            format!("{}-{i}", w.name)
                        };
                        let mut o = json!({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "namespace": w.namespace, "labels": labels},
                            "spec": template["spec"]});
                        if !annotations.is_empty() {
                            o["metadata"]["annotations"] = json!(annotations);
                        }
                        out.push(o);
                    }
                }
                WorkloadKind::PodDisruptionBudget => {}
            }
            if let Some(b) = &w.pdb {
                let mut spec = json!({"selector": selector});
                if let Some(m) = &b.min_available {
                    spec["minAvailable"] = m.clone();
                }
                if let Some(m) = &b.max_unavailable {
                    spec["maxUnavailable"] = m.clone();
                }
                if let Some(p) = &b.unhealthy_pod_eviction_policy {
                    spec["unhealthyPodEvictionPolicy"] = json!(p);
                }
                out.push(
                    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": {"name": w.name, "namespace": w.namespace}, "spec": spec}),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scenarios_and_raw_manifests() {
        let s = Scenario::from_yaml(
            "version: v1.31.4\npools:\n  - name: alpha\n    count: 3\n    labels: {tier: web}\nworkloads:\n  - kind: Deployment\n    name: web\n    replicas: 4\n    pdb: {max_unavailable: 1}\n",
        )
        .unwrap();
        assert_eq!(s.version, "v1.31.4");
        assert_eq!(s.pools[0].count, 3);
        let objs = s.workload_objects();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["spec"]["maxUnavailable"], 1);
        let raw = Scenario::from_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: a}\n",
        )
        .unwrap();
        assert_eq!(raw.manifests.len(), 2);
    }

    #[test]
    fn rejects_bad_scenarios_naming_the_field() {
        let e = Scenario::from_yaml("pools:\n  - name: Bad\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pools[0].name"), "{e}");
        let e = Scenario::from_yaml("bogus: 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Scenario::from_yaml("version: banana\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_scenario_loads() {
        let s = Scenario::from_yaml(include_str!("../../examples/sim-scenario.yaml")).unwrap();
        assert_eq!(s.pools[0].count, 3);
        assert!(s.workloads.iter().any(|w| w.empty_dir));
    }
}
