//! Stored objects: the JSON bytes served to clients, plus a summary of the fields the
//! server and the controllers read often (labels, owners, a pod's node and readiness, a
//! node's taints and capacity), so that neither lists nor controllers parse JSON.
//!
//! Objects are immutable once stored (`Arc<Obj>`): a write builds a new `Obj` from a
//! `serde_json::Value`. Watch events share the same `Arc`, and the serialized bytes are
//! shared by every list, get and watch that returns the object.

use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::clock::parse_time;
use crate::quantity;
use crate::resources::Res;
use crate::selector::LabelGet;

/// An object's key in its resource: namespace ("" when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    /// Namespace, "" for cluster-scoped objects.
    pub ns: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl Key {
    /// A key.
    pub(crate) fn new(ns: &str, name: &str) -> Key {
        Key {
            ns: ns.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ns.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.ns, self.name)
        }
    }
}

/// Labels, sorted by key.
pub(crate) type Labels = Box<[(Box<str>, Box<str>)]>;

/// An owner reference.
#[derive(Debug, Clone)]
pub(crate) struct OwnerRef {
    /// Kind of the owner.
    pub kind: Box<str>,
    /// Name of the owner.
    pub name: Box<str>,
    /// UID of the owner.
    pub uid: Arc<str>,
    /// `controller: true`.
    pub controller: bool,
}

/// The metadata every object has.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// The key (namespace and name).
    pub key: Key,
    /// `metadata.uid`.
    pub uid: Arc<str>,
    /// `metadata.resourceVersion`.
    pub rv: u64,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `metadata.generation` (0 when absent).
    pub generation: i64,
    /// `metadata.creationTimestamp`.
    pub creation: Option<Timestamp>,
    /// `metadata.deletionTimestamp`.
    pub deletion: Option<Timestamp>,
    /// `metadata.finalizers` is not empty.
    pub has_finalizers: bool,
    /// `metadata.ownerReferences`.
    pub owners: Box<[OwnerRef]>,
}

impl Meta {
    /// The controller owner reference, if any.
    pub(crate) fn controller(&self) -> Option<&OwnerRef> {
        self.owners.iter().find(|o| o.controller)
    }
}

/// A condition status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CondStatus {
    /// `True`
    True,
    /// `False`
    False,
    /// `Unknown`
    Unknown,
    /// no such condition
    Missing,
}

/// A pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Pending
    Pending,
    /// Running
    Running,
    /// Succeeded
    Succeeded,
    /// Failed
    Failed,
    /// Unknown
    Unknown,
}

impl Phase {
    fn parse(s: &str) -> Phase {
        match s {
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            "Unknown" => Phase::Unknown,
            _ => Phase::Pending,
        }
    }

    /// The phase as written in objects.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
}

/// A taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taint {
    /// Key.
    pub key: Box<str>,
    /// Value.
    pub value: Box<str>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: Box<str>,
}

/// What the server keeps at hand about a pod.
#[derive(Debug, Clone)]
pub(crate) struct PodExt {
    /// `spec.nodeName`.
    pub node: Option<Arc<str>>,
    /// `status.phase`.
    pub phase: Phase,
    /// The Ready condition is True.
    pub ready: bool,
    /// Sum of the containers' cpu requests (millicores; init containers counted as the
    /// scheduler does: the max of the largest init container and the sum).
    pub cpu: i64,
    /// Same for memory, in bytes.
    pub mem: i64,
    /// A mirror pod (annotation `kubernetes.io/config.mirror`).
    pub mirror: bool,
    /// `spec.schedulerName` is the default scheduler.
    pub default_scheduler: bool,
    /// `spec.terminationGracePeriodSeconds`.
    pub grace: i64,
    /// `status.podIP` is set (the kubelet started it).
    pub started: bool,
    /// `metadata.deletionGracePeriodSeconds`.
    pub deletion_grace: Option<i64>,
    /// Annotation `sim.kbg.io/startup-seconds`.
    pub startup: Option<f64>,
    /// Annotation `sim.kbg.io/termination-seconds`.
    pub termination: Option<f64>,
    /// Annotation `sim.kbg.io/full-grace: "true"`.
    pub full_grace: bool,
}

/// What the server keeps at hand about a node.
#[derive(Debug, Clone)]
pub(crate) struct NodeExt {
    /// The Ready condition.
    pub ready: CondStatus,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Annotation `kwok.x-k8s.io/node: fake`: the simulated kubelet manages it.
    pub kwok: bool,
    /// `spec.taints`.
    pub taints: Box<[Taint]>,
    /// Allocatable cpu, millicores.
    pub cpu: i64,
    /// Allocatable memory, bytes.
    pub mem: i64,
    /// Allocatable pods.
    pub pods: i64,
}

/// Kind-specific summary.
#[derive(Debug, Clone)]
pub(crate) enum Ext {
    /// Nothing kept.
    None,
    /// A pod.
    Pod(PodExt),
    /// A node.
    Node(NodeExt),
}

/// A stored object.
#[derive(Debug)]
pub(crate) struct Obj {
    /// The JSON served to clients.
    pub bytes: Bytes,
    /// Metadata summary.
    pub meta: Meta,
    /// Kind-specific summary.
    pub ext: Ext,
}

impl Obj {
    /// Builds a stored object from its JSON.
    pub(crate) fn new(res: Res, v: &Value) -> Obj {
        let bytes = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
        let meta = meta_of(v);
        let ext = match res {
            Res::Pod => Ext::Pod(pod_ext(v)),
            Res::Node => Ext::Node(node_ext(v)),
            _ => Ext::None,
        };
        Obj { bytes, meta, ext }
    }

    /// The object as JSON (parsed from the stored bytes).
    pub(crate) fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// The pod summary (panics on other kinds: a bug).
    pub(crate) fn pod(&self) -> &PodExt {
        match &self.ext {
            Ext::Pod(p) => p,
            _ => unreachable!("not a pod"),
        }
    }

    /// The node summary (panics on other kinds: a bug).
    pub(crate) fn node(&self) -> &NodeExt {
        match &self.ext {
            Ext::Node(n) => n,
            _ => unreachable!("not a node"),
        }
    }

    /// Name.
    pub(crate) fn name(&self) -> &str {
        &self.meta.key.name
    }

    /// Namespace.
    pub(crate) fn ns(&self) -> &str {
        &self.meta.key.ns
    }

    /// Whether it is terminating (`deletionTimestamp` set).
    pub(crate) fn terminating(&self) -> bool {
        self.meta.deletion.is_some()
    }

    /// The value of a field for field selectors, or `None` when the field is not one
    /// the API server supports for this resource.
    pub(crate) fn field(&self, res: Res, field: &str) -> Option<String> {
        match field {
            "metadata.name" => return Some(self.name().to_string()),
            "metadata.namespace" => return Some(self.ns().to_string()),
            _ => {}
        }
        match (res, &self.ext) {
            (Res::Pod, Ext::Pod(p)) => match field {
                "spec.nodeName" => Some(p.node.as_deref().unwrap_or_default().to_string()),
                "status.phase" => Some(p.phase.as_str().to_string()),
                "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "status.podIP"
                | "status.nominatedNodeName" => Some(self.str_field(field)),
                "spec.hostNetwork" => {
                    let v = self.value();
                    Some(
                        get(&v, &["spec", "hostNetwork"])
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                            .to_string(),
                    )
                }
                _ => None,
            },
            (Res::Node, Ext::Node(n)) => match field {
                "spec.unschedulable" => Some(n.unschedulable.to_string()),
                _ => None,
            },
            (Res::Namespace, _) => match field {
                "status.phase" => Some(self.str_field(field)),
                _ => None,
            },
            (Res::ReplicaSet, _) => match field {
                "status.replicas" => {
                    let v = self.value();
                    Some(
                        get(&v, &["status", "replicas"])
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            .to_string(),
                    )
                }
                _ => None,
            },
            (Res::Event | Res::EventV1, _) => match field {
                "involvedObject.kind"
                | "involvedObject.namespace"
                | "involvedObject.name"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "regarding.kind"
                | "regarding.namespace"
                | "regarding.name"
                | "regarding.uid"
                | "reason"
                | "reportingComponent"
                | "reportingController"
                | "type" => Some(self.str_field(field)),
                "source" => {
                    let v = self.value();
                    Some(
                        get(&v, &["source", "component"])
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    )
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn str_field(&self, dotted: &str) -> String {
        let v = self.value();
        let path: Vec<&str> = dotted.split('.').collect();
        match get(&v, &path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

impl LabelGet for Obj {
    fn label(&self, key: &str) -> Option<&str> {
        self.meta.labels.label(key)
    }
}

/// Whether the API server supports field selector `field` on `res` (the fields
/// [`Obj::field`] answers).
pub(crate) fn field_supported(res: Res, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match res {
        Res::Pod => matches!(
            field,
            "spec.nodeName"
                | "status.phase"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "status.podIP"
                | "status.nominatedNodeName"
                | "spec.hostNetwork"
        ),
        Res::Node => field == "spec.unschedulable",
        Res::Namespace => field == "status.phase",
        Res::ReplicaSet => field == "status.replicas",
        Res::Event | Res::EventV1 => matches!(
            field,
            "involvedObject.kind"
                | "involvedObject.namespace"
                | "involvedObject.name"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "regarding.kind"
                | "regarding.namespace"
                | "regarding.name"
                | "regarding.uid"
                | "reason"
                | "reportingComponent"
                | "reportingController"
                | "type"
                | "source"
        ),
        _ => false,
    }
}

/// `v[path[0]][path[1]]…`.
pub(crate) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    Some(cur)
}

/// A string at `path`.
pub(crate) fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// An integer at `path`.
pub(crate) fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

/// A mutable object at `path`, created (as empty objects) where missing or not an object.
pub(crate) fn obj_mut<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for p in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("object")
}

/// Sets `path` to `val`, creating objects on the way.
pub(crate) fn set(v: &mut Value, path: &[&str], val: Value) {
    let (last, parent) = path.split_last().expect("non-empty path");
    obj_mut(v, parent).insert(last.to_string(), val);
}

/// Removes the field at `path`.
pub(crate) fn remove(v: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parent) = path.split_last()?;
    let mut cur = v;
    for p in parent {
        cur = cur.get_mut(*p)?;
    }
    cur.as_object_mut()?.remove(*last)
}

/// An annotation of a JSON object.
pub(crate) fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, &["metadata", "annotations", key]).and_then(Value::as_str)
}

/// The labels map of a JSON object.
pub(crate) fn labels_of(v: &Value) -> Map<String, Value> {
    get(v, &["metadata", "labels"])
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The status of condition `type` in `conds` (a `conditions` array).
pub(crate) fn condition(v: &Value, path: &[&str], ty: &str) -> CondStatus {
    let Some(conds) = get(v, path).and_then(Value::as_array) else {
        return CondStatus::Missing;
    };
    for c in conds {
        if c.get("type").and_then(Value::as_str) == Some(ty) {
            return match c.get("status").and_then(Value::as_str) {
                Some("True") => CondStatus::True,
                Some("False") => CondStatus::False,
                _ => CondStatus::Unknown,
            };
        }
    }
    CondStatus::Missing
}

/// Sets (or adds) condition `ty` in the array at `path`. `lastTransitionTime` changes only
/// when the status does. Returns whether anything changed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn set_condition(
    v: &mut Value,
    path: &[&str],
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    heartbeat: bool,
) -> bool {
    let (last, parent) = path.split_last().expect("non-empty path");
    let parent = obj_mut(v, parent);
    let arr = parent
        .entry(last.to_string())
        .or_insert_with(|| Value::Array(vec![]));
    if !arr.is_array() {
        *arr = Value::Array(vec![]);
    }
    let arr = arr.as_array_mut().expect("array");
    let mut c = serde_json::json!({"type": ty, "status": status, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = Value::String(reason.into());
    }
    if !message.is_empty() {
        c["message"] = Value::String(message.into());
    }
    if heartbeat {
        c["lastHeartbeatTime"] = Value::String(now.into());
    } else {
        c["lastProbeTime"] = Value::Null;
    }
    if let Some(old) = arr
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
    {
        let same = old.get("status").and_then(Value::as_str) == Some(status)
            && old.get("reason").and_then(Value::as_str).unwrap_or("") == reason
            && old.get("message").and_then(Value::as_str).unwrap_or("") == message;
        if same {
            return false;
        }
        if old.get("status").and_then(Value::as_str) == Some(status)
            && let Some(t) = old.get("lastTransitionTime")
        {
            c["lastTransitionTime"] = t.clone();
        }
        *old = c;
    } else {
        arr.push(c);
    }
    true
}

fn meta_of(v: &Value) -> Meta {
    let m = v.get("metadata");
    let s = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let mut labels: Vec<(Box<str>, Box<str>)> = m
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let owners = m
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|o| OwnerRef {
                    kind: o.get("kind").and_then(Value::as_str).unwrap_or("").into(),
                    name: o.get("name").and_then(Value::as_str).unwrap_or("").into(),
                    uid: o.get("uid").and_then(Value::as_str).unwrap_or("").into(),
                    controller: o
                        .get("controller")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    Meta {
        key: Key::new(s("namespace"), s("name")),
        uid: s("uid").into(),
        rv: s("resourceVersion").parse().unwrap_or(0),
        labels: labels.into_boxed_slice(),
        generation: m
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0),
        creation: parse_time(s("creationTimestamp")),
        deletion: parse_time(s("deletionTimestamp")),
        has_finalizers: m
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty()),
        owners,
    }
}

/// The scheduler's view of a pod's requests: sum over containers, and at least the
/// largest init container (k8s.io/component-helpers `resource.PodRequests`).
pub(crate) fn pod_requests(v: &Value) -> (i64, i64) {
    fn sum(list: Option<&Value>, f: &dyn Fn(&Value) -> (i64, i64)) -> ((i64, i64), (i64, i64)) {
        let mut total = (0, 0);
        let mut max = (0, 0);
        for c in list.and_then(Value::as_array).into_iter().flatten() {
            let (a, b) = f(c);
            total = (total.0 + a, total.1 + b);
            max = (max.0.max(a), max.1.max(b));
        }
        (total, max)
    }
    let one = |c: &Value| {
        let r = get(c, &["resources", "requests"]);
        let cpu = r
            .and_then(|r| r.get("cpu"))
            .and_then(quantity::value_milli)
            .unwrap_or(0);
        let mem = r
            .and_then(|r| r.get("memory"))
            .and_then(quantity::value_milli)
            .unwrap_or(0);
        (
            cpu.clamp(0, i64::MAX as i128) as i64,
            ((mem + 999) / 1000).clamp(0, i64::MAX as i128) as i64,
        )
    };
    let (total, _) = sum(get(v, &["spec", "containers"]), &one);
    let (_, init_max) = sum(get(v, &["spec", "initContainers"]), &one);
    (total.0.max(init_max.0), total.1.max(init_max.1))
}

fn pod_ext(v: &Value) -> PodExt {
    let (cpu, mem) = pod_requests(v);
    PodExt {
        node: get_str(v, &["spec", "nodeName"])
            .filter(|n| !n.is_empty())
            .map(Into::into),
        phase: Phase::parse(get_str(v, &["status", "phase"]).unwrap_or("Pending")),
        ready: condition(v, &["status", "conditions"], "Ready") == CondStatus::True,
        cpu,
        mem,
        mirror: annotation(v, "kubernetes.io/config.mirror").is_some(),
        default_scheduler: get_str(v, &["spec", "schedulerName"])
            .is_none_or(|s| s.is_empty() || s == "default-scheduler"),
        grace: get_i64(v, &["spec", "terminationGracePeriodSeconds"]).unwrap_or(30),
        started: get_str(v, &["status", "podIP"]).is_some_and(|s| !s.is_empty()),
        deletion_grace: get_i64(v, &["metadata", "deletionGracePeriodSeconds"]),
        startup: annotation(v, crate::STARTUP_ANNOTATION).and_then(|s| s.parse().ok()),
        termination: annotation(v, crate::TERMINATION_ANNOTATION).and_then(|s| s.parse().ok()),
        full_grace: annotation(v, crate::FULL_GRACE_ANNOTATION) == Some("true"),
    }
}

fn node_ext(v: &Value) -> NodeExt {
    let alloc = get(v, &["status", "allocatable"]);
    let q = |k: &str| alloc.and_then(|a| a.get(k)).and_then(quantity::value_milli);
    let taints = get(v, &["spec", "taints"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| Taint {
                    key: t.get("key").and_then(Value::as_str).unwrap_or("").into(),
                    value: t.get("value").and_then(Value::as_str).unwrap_or("").into(),
                    effect: t.get("effect").and_then(Value::as_str).unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default();
    NodeExt {
        ready: condition(v, &["status", "conditions"], "Ready"),
        unschedulable: get(v, &["spec", "unschedulable"])
            .and_then(Value::as_bool)
            .unwrap_or(false),
        kwok: annotation(v, crate::KWOK_ANNOTATION) == Some("fake"),
        taints,
        cpu: q("cpu").unwrap_or(0).clamp(0, i64::MAX as i128) as i64,
        mem: q("memory")
            .map(|m| (m + 999) / 1000)
            .unwrap_or(0)
            .clamp(0, i64::MAX as i128) as i64,
        pods: q("pods")
            .map(|m| m / 1000)
            .unwrap_or(0)
            .clamp(0, i64::MAX as i128) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summarises_pods() {
        let v = json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "resourceVersion": "7",
                "labels": {"b": "2", "a": "1"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "o", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1"}}}],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let o = Obj::new(Res::Pod, &v);
        assert_eq!(o.meta.rv, 7);
        assert_eq!(o.label("a"), Some("1"));
        assert_eq!(o.meta.controller().unwrap().name.as_ref(), "rs");
        let p = o.pod();
        assert_eq!(p.node.as_deref(), Some("n1"));
        assert!(p.ready);
        assert_eq!((p.cpu, p.mem), (2000, 64 << 20));
        assert_eq!(o.field(Res::Pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            o.field(Res::Pod, "status.phase").as_deref(),
            Some("Running")
        );
        assert_eq!(o.field(Res::Pod, "spec.bogus"), None);
        assert_eq!(o.value(), v);
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut v = json!({});
        assert!(set_condition(
            &mut v,
            &["status", "conditions"],
            "Ready",
            "False",
            "A",
            "",
            "t1",
            true
        ));
        assert!(set_condition(
            &mut v,
            &["status", "conditions"],
            "Ready",
            "True",
            "B",
            "",
            "t2",
            true
        ));
        assert!(!set_condition(
            &mut v,
            &["status", "conditions"],
            "Ready",
            "True",
            "B",
            "",
            "t3",
            true
        ));
        assert_eq!(v["status"]["conditions"][0]["lastTransitionTime"], "t2");
        assert_eq!(
            condition(&v, &["status", "conditions"], "Ready"),
            CondStatus::True
        );
    }
}
