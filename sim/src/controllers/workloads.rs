//! Workload controllers: Deployment → ReplicaSet → Pods (rolling update with maxSurge /
//! maxUnavailable, or Recreate), DaemonSet (one pod per eligible node, tolerating
//! `unschedulable`, pinned by node affinity as the real controller does) and StatefulSet
//! (ordinal names, `OrderedReady` one at a time, or `Parallel`). Names follow the real
//! controllers: `<deployment>-<template hash>`, `<replicaset>-<5 random>`,
//! `<daemonset>-<5 random>`, `<statefulset>-<ordinal>`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::{IntOrPercent, int_or_percent, scaled};
use crate::clock::rfc3339;
use crate::controllers::scheduler::{Constraints, Toleration, taints_tolerated};
use crate::object::{
    Key, Obj, Phase, annotation, get, get_i64, get_str, obj_mut, set, set_condition,
};
use crate::ops::{DeleteOpts, safe_encode};
use crate::resources::Res;
use crate::state::State;

/// Pods a ReplicaSet creates per sync (the real controller's slow-start batches cap at
/// 500 too).
const BURST: usize = 500;

/// FNV-32a over the template's JSON, as `controller.ComputeHash` hashes the template
/// (with the collision count), encoded like `rand.SafeEncodeString`.
pub(crate) fn template_hash(template: &Value, collision: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let s = serde_json::to_string(template).unwrap_or_default();
    for b in s.bytes().chain(if collision > 0 {
        collision.to_string().into_bytes()
    } else {
        vec![]
    }) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    safe_encode(&h.to_string())
}

fn owner_ref(o: &Obj, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": kind, "name": o.name(), "uid": &*o.meta.uid,
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// A pod from a template.
fn pod_from_template(template: &Value, owner: Value, labels: &[(&str, &str)]) -> Value {
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("creationTimestamp");
        m.remove("name");
        m.remove("namespace");
    }
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    let l = obj_mut(&mut pod, &["metadata", "labels"]);
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    set(&mut pod, &["metadata", "ownerReferences"], json!([owner]));
    pod
}

fn is_active(p: &Obj) -> bool {
    !p.terminating() && !matches!(p.pod().phase, Phase::Succeeded | Phase::Failed)
}

/// `controller.ActivePods` order: the first is the best to delete.
fn deletion_order(a: &Arc<Obj>, b: &Arc<Obj>) -> Ordering {
    let (pa, pb) = (a.pod(), b.pod());
    let rank = |p: Phase| match p {
        Phase::Pending => 0,
        Phase::Unknown => 1,
        _ => 2,
    };
    pa.node
        .is_some()
        .cmp(&pb.node.is_some())
        .then(rank(pa.phase).cmp(&rank(pb.phase)))
        .then(pa.ready.cmp(&pb.ready))
        .then(b.meta.creation.cmp(&a.meta.creation))
}

impl State {
    fn create_pod(&mut self, ns: &str, pod: Value) -> bool {
        match self.create(Res::Pod, ns, pod, false) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(ns, error = %e.body["message"], "controller could not create a pod");
                false
            }
        }
    }

    fn delete_pod(&mut self, p: &Obj) {
        let _ = self.delete(Res::Pod, &p.meta.key, &DeleteOpts::default());
    }

    /// Syncs dirty ReplicaSets.
    pub(crate) fn run_replicasets(&mut self, _budget: usize) {
        let keys = std::mem::take(&mut self.dirty.replicasets);
        for k in keys {
            self.sync_replicaset(&k);
        }
    }

    fn sync_replicaset(&mut self, key: &Key) {
        let Some(rs) = self.get(Res::ReplicaSet, key).cloned() else {
            return;
        };
        let v = rs.value();
        let replicas = get_i64(&v, &["spec", "replicas"]).unwrap_or(1).max(0) as usize;
        let pods = self.owned_pods(&rs.meta.uid);
        let mut active: Vec<Arc<Obj>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
        if !rs.terminating() {
            if active.len() < replicas {
                let n = (replicas - active.len()).min(BURST);
                let template = get(&v, &["spec", "template"]).cloned().unwrap_or(json!({}));
                for _ in 0..n {
                    let mut pod = pod_from_template(&template, owner_ref(&rs, "ReplicaSet"), &[]);
                    set(
                        &mut pod,
                        &["metadata", "generateName"],
                        json!(format!("{}-", rs.name())),
                    );
                    if !self.create_pod(rs.ns(), pod) {
                        break;
                    }
                }
                if replicas - active.len() > n {
                    self.dirty.replicasets.insert(key.clone());
                }
            } else if active.len() > replicas {
                active.sort_by(deletion_order);
                let extra: Vec<Arc<Obj>> = active.drain(..active.len() - replicas).collect();
                for p in extra {
                    self.delete_pod(&p);
                }
            }
        }
        let pods = self.owned_pods(&rs.meta.uid);
        let active: Vec<&Arc<Obj>> = pods.iter().filter(|p| is_active(p)).collect();
        let ready = active.iter().filter(|p| p.pod().ready).count();
        let generation = rs.meta.generation;
        self.modify(Res::ReplicaSet, key, |v| {
            let s = obj_mut(v, &["status"]);
            s.insert("replicas".into(), json!(active.len()));
            s.insert("fullyLabeledReplicas".into(), json!(active.len()));
            s.insert("readyReplicas".into(), json!(ready));
            s.insert("availableReplicas".into(), json!(ready));
            s.insert("observedGeneration".into(), json!(generation));
            for f in ["readyReplicas", "availableReplicas", "fullyLabeledReplicas"] {
                if s.get(f) == Some(&json!(0)) {
                    s.remove(f);
                }
            }
        });
    }

    /// Syncs dirty Deployments.
    pub(crate) fn run_deployments(&mut self) {
        let keys = std::mem::take(&mut self.dirty.deployments);
        for k in keys {
            self.sync_deployment(&k);
        }
    }

    fn sync_deployment(&mut self, key: &Key) {
        let Some(d) = self.get(Res::Deployment, key).cloned() else {
            return;
        };
        if d.terminating() {
            return;
        }
        let v = d.value();
        let replicas = get_i64(&v, &["spec", "replicas"]).unwrap_or(1).max(0);
        let template = get(&v, &["spec", "template"]).cloned().unwrap_or(json!({}));
        let recreate = get_str(&v, &["spec", "strategy", "type"]) == Some("Recreate");
        let paused = get(&v, &["spec", "paused"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ru = get(&v, &["spec", "strategy", "rollingUpdate"]);
        let surge_v = ru
            .and_then(|r| r.get("maxSurge"))
            .and_then(int_or_percent)
            .unwrap_or(IntOrPercent::Percent(25));
        let unav_v = ru
            .and_then(|r| r.get("maxUnavailable"))
            .and_then(int_or_percent)
            .unwrap_or(IntOrPercent::Percent(25));
        let mut max_surge = scaled(surge_v, replicas, true);
        let mut max_unavailable = scaled(unav_v, replicas, false);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        if recreate {
            max_surge = 0;
        }
        let collision = get_i64(&v, &["status", "collisionCount"]).unwrap_or(0);
        let hash = template_hash(&template, collision);
        let rss: Vec<Arc<Obj>> = self
            .owned(&d.meta.uid)
            .into_iter()
            .filter(|(r, _)| *r == Res::ReplicaSet)
            .filter_map(|(_, k)| self.get(Res::ReplicaSet, &k).cloned())
            .filter(|rs| rs.meta.controller().is_some_and(|c| c.uid == d.meta.uid))
            .collect();
        let info = |rs: &Obj| {
            let v = rs.value();
            (
                get_i64(&v, &["spec", "replicas"]).unwrap_or(0),
                get_i64(&v, &["status", "availableReplicas"]).unwrap_or(0),
                get_i64(&v, &["status", "readyReplicas"]).unwrap_or(0),
                get_i64(&v, &["status", "replicas"]).unwrap_or(0),
                annotation(&v, "deployment.kubernetes.io/revision")
                    .and_then(|r| r.parse::<i64>().ok())
                    .unwrap_or(0),
            )
        };
        let mut new_rs = rss
            .iter()
            .find(|rs| {
                rs.meta
                    .labels
                    .iter()
                    .any(|(k, v)| &**k == "pod-template-hash" && **v == *hash)
            })
            .cloned();
        let mut olds: Vec<Arc<Obj>> = rss
            .iter()
            .filter(|rs| new_rs.as_ref().is_none_or(|n| n.meta.uid != rs.meta.uid))
            .cloned()
            .collect();
        olds.sort_by_key(|rs| rs.meta.creation);
        let max_revision = rss.iter().map(|rs| info(rs).4).max().unwrap_or(0);
        let all_replicas: i64 = rss.iter().map(|rs| info(rs).0).sum();
        if new_rs.is_none() && !paused {
            let initial = if recreate {
                let old_pods: usize = olds
                    .iter()
                    .map(|o| self.owned_pods(&o.meta.uid).len())
                    .sum();
                if all_replicas > 0 || old_pods > 0 {
                    0
                } else {
                    replicas
                }
            } else if olds.is_empty() {
                replicas
            } else {
                (replicas + max_surge - all_replicas).clamp(0, replicas)
            };
            let mut tmpl = template.clone();
            obj_mut(&mut tmpl, &["metadata", "labels"])
                .insert("pod-template-hash".into(), json!(hash));
            let mut selector = get(&v, &["spec", "selector"]).cloned().unwrap_or(json!({}));
            obj_mut(&mut selector, &["matchLabels"])
                .insert("pod-template-hash".into(), json!(hash));
            let mut labels = get(&template, &["metadata", "labels"])
                .cloned()
                .unwrap_or(json!({}));
            obj_mut(&mut labels, &[]).insert("pod-template-hash".into(), json!(hash));
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("{}-{hash}", d.name()),
                    "labels": labels,
                    "annotations": {
                        "deployment.kubernetes.io/revision": (max_revision + 1).to_string(),
                        "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/max-replicas": (replicas + max_surge).to_string(),
                    },
                    "ownerReferences": [owner_ref(&d, "Deployment")],
                },
                "spec": {"replicas": initial, "selector": selector, "template": tmpl},
            });
            match self.create(Res::ReplicaSet, d.ns(), rs, false) {
                Ok(o) => new_rs = Some(o),
                Err(e) if e.code == 409 => {
                    // a ReplicaSet of that name with another template: count a collision
                    self.modify(Res::Deployment, key, |v| {
                        set(v, &["status", "collisionCount"], json!(collision + 1));
                    });
                    self.dirty.deployments.insert(key.clone());
                    return;
                }
                Err(_) => return,
            }
        }
        let Some(new_rs) = new_rs else { return };
        let (new_replicas, new_available, _, _, new_revision) = info(&new_rs);
        let scale = |st: &mut State, rs: &Obj, n: i64| {
            st.modify(Res::ReplicaSet, &rs.meta.key, |v| {
                set(v, &["spec", "replicas"], json!(n));
                let a = obj_mut(v, &["metadata", "annotations"]);
                a.insert(
                    "deployment.kubernetes.io/desired-replicas".into(),
                    json!(replicas.to_string()),
                );
                a.insert(
                    "deployment.kubernetes.io/max-replicas".into(),
                    json!((replicas + max_surge).to_string()),
                );
            });
        };
        if !paused {
            if recreate {
                for o in &olds {
                    if info(o).0 > 0 {
                        scale(self, o, 0);
                    }
                }
                let old_pods: usize = olds
                    .iter()
                    .map(|o| self.owned_pods(&o.meta.uid).len())
                    .sum();
                if old_pods == 0 && new_replicas != replicas {
                    scale(self, &new_rs, replicas);
                }
            } else {
                // scale up the new ReplicaSet within maxSurge
                let all: i64 = new_replicas + olds.iter().map(|o| info(o).0).sum::<i64>();
                let mut new_target = new_replicas;
                if new_replicas < replicas {
                    let room = replicas + max_surge - all;
                    if room > 0 {
                        new_target = new_replicas + room.min(replicas - new_replicas);
                    }
                } else if new_replicas > replicas {
                    new_target = replicas;
                }
                if new_target != new_replicas {
                    scale(self, &new_rs, new_target);
                }
                // scale down old ReplicaSets within maxUnavailable
                let min_available = replicas - max_unavailable;
                let all_now: i64 = new_target + olds.iter().map(|o| info(o).0).sum::<i64>();
                let new_unavailable = (new_target - new_available).max(0);
                let mut budget = all_now - min_available - new_unavailable;
                // first the unhealthy replicas of old ReplicaSets
                for o in &olds {
                    if budget <= 0 {
                        break;
                    }
                    let (r, avail, ..) = info(o);
                    let unhealthy = (r - avail).max(0).min(budget);
                    if unhealthy > 0 {
                        scale(self, o, r - unhealthy);
                        budget -= unhealthy;
                    }
                }
                let available: i64 = new_available + olds.iter().map(|o| info(o).1).sum::<i64>();
                let mut down = (available - min_available).min(all_now - replicas).max(0);
                for o in &olds {
                    if down <= 0 {
                        break;
                    }
                    let r = self
                        .get(Res::ReplicaSet, &o.meta.key)
                        .map(|x| info(x).0)
                        .unwrap_or(0);
                    let n = r.min(down);
                    if n > 0 {
                        scale(self, o, r - n);
                        down -= n;
                    }
                }
            }
            // history limit: old ReplicaSets with nothing left
            let limit = get_i64(&v, &["spec", "revisionHistoryLimit"])
                .unwrap_or(10)
                .max(0) as usize;
            let empty: Vec<&Arc<Obj>> = olds
                .iter()
                .filter(|o| info(o).0 == 0 && self.owned_pods(&o.meta.uid).is_empty())
                .collect();
            if empty.len() > limit {
                for o in &empty[..empty.len() - limit] {
                    let _ = self.delete(Res::ReplicaSet, &o.meta.key, &DeleteOpts::default());
                }
            }
        }
        // status
        let rss: Vec<Arc<Obj>> = self
            .owned(&d.meta.uid)
            .into_iter()
            .filter(|(r, _)| *r == Res::ReplicaSet)
            .filter_map(|(_, k)| self.get(Res::ReplicaSet, &k).cloned())
            .collect();
        let mut total = 0;
        let mut ready = 0;
        let mut available = 0;
        let mut updated = 0;
        for rs in &rss {
            let (_, a, r, n, _) = info(rs);
            total += n;
            ready += r;
            available += a;
            if rs.meta.uid == new_rs.meta.uid {
                updated = n;
            }
        }
        let complete = updated == replicas && total == replicas && available >= replicas;
        let generation = d.meta.generation;
        let now = rfc3339(self.now());
        let new_name = new_rs.name().to_string();
        self.modify(Res::Deployment, key, |v| {
            obj_mut(v, &["metadata", "annotations"]).insert(
                "deployment.kubernetes.io/revision".into(),
                json!(new_revision.to_string()),
            );
            let s = obj_mut(v, &["status"]);
            s.insert("observedGeneration".into(), json!(generation));
            for (k, n) in [
                ("replicas", total),
                ("updatedReplicas", updated),
                ("readyReplicas", ready),
                ("availableReplicas", available),
                ("unavailableReplicas", (replicas - available).max(0)),
            ] {
                if n > 0 {
                    s.insert(k.into(), json!(n));
                } else {
                    s.remove(k);
                }
            }
            let min_ok = available >= replicas - max_unavailable;
            set_condition(
                v,
                &["status", "conditions"],
                "Available",
                if min_ok { "True" } else { "False" },
                if min_ok {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                if min_ok {
                    "Deployment has minimum availability."
                } else {
                    "Deployment does not have minimum availability."
                },
                &now,
                true,
            );
            let (reason, msg) = if complete {
                (
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                )
            } else {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                )
            };
            set_condition(
                v,
                &["status", "conditions"],
                "Progressing",
                "True",
                reason,
                &msg,
                &now,
                true,
            );
            // Deployment conditions carry lastUpdateTime, not heartbeat/probe times
            if let Some(a) = v["status"]["conditions"].as_array_mut() {
                for c in a.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(t) = c.remove("lastHeartbeatTime") {
                        c.insert("lastUpdateTime".into(), t);
                    }
                }
            }
        });
    }

    /// Syncs dirty DaemonSets (all of them when nodes changed).
    pub(crate) fn run_daemonsets(&mut self, _budget: usize) {
        let mut keys = std::mem::take(&mut self.dirty.daemonsets);
        if std::mem::take(&mut self.dirty.all_daemonsets) {
            keys.extend(self.table(Res::DaemonSet).objs.keys().cloned());
        }
        for k in keys {
            self.sync_daemonset(&k);
        }
    }

    fn sync_daemonset(&mut self, key: &Key) {
        let Some(ds) = self.get(Res::DaemonSet, key).cloned() else {
            return;
        };
        if ds.terminating() {
            return;
        }
        let v = ds.value();
        let mut template = get(&v, &["spec", "template"]).cloned().unwrap_or(json!({}));
        // the tolerations the DaemonSet controller adds to its pods
        {
            let spec = obj_mut(&mut template, &["spec"]);
            let tol = spec.entry("tolerations").or_insert_with(|| json!([]));
            if let Some(a) = tol.as_array_mut() {
                let host_network = false;
                let mut add = vec![
                    ("node.kubernetes.io/not-ready", "NoExecute"),
                    ("node.kubernetes.io/unreachable", "NoExecute"),
                    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                    ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ];
                if host_network {
                    add.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
                }
                for (k, e) in add {
                    if !a.iter().any(|t| {
                        t.get("key").and_then(Value::as_str) == Some(k)
                            && t.get("effect").and_then(Value::as_str) == Some(e)
                    }) {
                        a.push(json!({"key": k, "operator": "Exists", "effect": e}));
                    }
                }
            }
        }
        let hash = template_hash(get(&v, &["spec", "template"]).unwrap_or(&Value::Null), 0);
        let generation = ds.meta.generation;
        let spec = template.get("spec").cloned().unwrap_or(json!({}));
        let c = Constraints::of(&spec, 0, 0);
        let tols = Toleration::list(spec.get("tolerations"));
        let nodes: Vec<Arc<Obj>> = self.table(Res::Node).objs.values().cloned().collect();
        let mut by_node: HashMap<String, Vec<Arc<Obj>>> = HashMap::new();
        let pods = self.owned_pods(&ds.meta.uid);
        for p in &pods {
            let target = p.pod().node.as_deref().map(str::to_string).or_else(|| {
                let pv = p.value();
                Constraints::of(pv.get("spec").unwrap_or(&Value::Null), 0, 0)
                    .pinned()
                    .map(str::to_string)
            });
            if let Some(t) = target {
                by_node.entry(t).or_default().push(p.clone());
            }
        }
        let rolling = get_str(&v, &["spec", "updateStrategy", "type"]) != Some("OnDelete");
        let max_unavailable = get(
            &v,
            &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"],
        )
        .and_then(int_or_percent)
        .map(|m| scaled(m, nodes.len() as i64, true).max(1))
        .unwrap_or(1);
        let (mut desired, mut current, mut misscheduled, mut ready_n, mut updated) =
            (0, 0, 0, 0, 0);
        let mut unavailable_now = 0;
        let mut outdated: Vec<Arc<Obj>> = Vec::new();
        let mut to_create: Vec<String> = Vec::new();
        let mut to_delete: Vec<Arc<Obj>> = Vec::new();
        for node in &nodes {
            let should_run = c.admits(node).is_ok();
            // a running pod stays unless a NoExecute taint or the selector says otherwise
            let may_continue = should_run || {
                let ext = node.node();
                let no_exec: Vec<_> = ext
                    .taints
                    .iter()
                    .filter(|t| &*t.effect == "NoExecute")
                    .cloned()
                    .collect();
                taints_tolerated(&no_exec, &tols).is_ok()
                    && matches!(
                        c.admits(node),
                        Err(crate::controllers::scheduler::Reject::Taint(_))
                    )
            };
            let mut here: Vec<Arc<Obj>> = by_node
                .remove(node.name())
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !p.terminating())
                .collect();
            let failed: Vec<Arc<Obj>> = here
                .iter()
                .filter(|p| p.pod().phase == Phase::Failed)
                .cloned()
                .collect();
            here.retain(|p| p.pod().phase != Phase::Failed);
            to_delete.extend(failed);
            if should_run {
                desired += 1;
            }
            if here.is_empty() {
                if should_run {
                    to_create.push(node.name().to_string());
                }
                continue;
            }
            if !may_continue {
                misscheduled += here.len();
                to_delete.extend(here);
                continue;
            }
            if !should_run {
                misscheduled += 1;
            } else {
                current += 1;
            }
            here.sort_by_key(|p| p.meta.creation);
            let keep = here.remove(0);
            to_delete.extend(here);
            if keep.pod().ready {
                ready_n += 1;
            } else {
                unavailable_now += 1;
            }
            if keep.label("controller-revision-hash") == Some(&hash[..]) {
                updated += 1;
            } else {
                outdated.push(keep);
            }
        }
        // pods pinned to nodes that no longer exist
        for (_, ps) in by_node {
            to_delete.extend(ps.into_iter().filter(|p| !p.terminating()));
        }
        for p in &to_delete {
            self.delete_pod(p);
        }
        let owner = owner_ref(&ds, "DaemonSet");
        for node in to_create {
            let mut pod = pod_from_template(
                &template,
                owner.clone(),
                &[
                    ("controller-revision-hash", &hash),
                    ("pod-template-generation", &generation.to_string()),
                ],
            );
            set(
                &mut pod,
                &["metadata", "generateName"],
                json!(format!("{}-", ds.name())),
            );
            set(
                &mut pod,
                &[
                    "spec",
                    "affinity",
                    "nodeAffinity",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                ],
                json!({"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node]}]}]}),
            );
            self.create_pod(ds.ns(), pod);
        }
        if rolling {
            let mut room = (max_unavailable - unavailable_now).max(0) as usize;
            outdated.sort_by_key(|p| (p.pod().ready, p.meta.creation));
            for p in outdated {
                if room == 0 {
                    break;
                }
                if p.pod().ready {
                    room -= 1;
                }
                self.delete_pod(&p);
            }
        }
        self.modify(Res::DaemonSet, key, |v| {
            let s = obj_mut(v, &["status"]);
            s.insert("desiredNumberScheduled".into(), json!(desired));
            s.insert("currentNumberScheduled".into(), json!(current));
            s.insert("numberMisscheduled".into(), json!(misscheduled));
            s.insert("numberReady".into(), json!(ready_n));
            s.insert("observedGeneration".into(), json!(generation));
            for (k, n) in [
                ("numberAvailable", ready_n),
                ("updatedNumberScheduled", updated),
                (
                    "numberUnavailable",
                    (desired as i64 - ready_n as i64).max(0) as usize,
                ),
            ] {
                if n > 0 {
                    s.insert(k.into(), json!(n));
                } else {
                    s.remove(k);
                }
            }
        });
    }

    /// Syncs dirty StatefulSets.
    pub(crate) fn run_statefulsets(&mut self) {
        let keys = std::mem::take(&mut self.dirty.statefulsets);
        for k in keys {
            self.sync_statefulset(&k);
        }
    }

    fn sync_statefulset(&mut self, key: &Key) {
        let Some(sts) = self.get(Res::StatefulSet, key).cloned() else {
            return;
        };
        if sts.terminating() {
            return;
        }
        let v = sts.value();
        let replicas = get_i64(&v, &["spec", "replicas"]).unwrap_or(1).max(0);
        let parallel = get_str(&v, &["spec", "podManagementPolicy"]) == Some("Parallel");
        let template = get(&v, &["spec", "template"]).cloned().unwrap_or(json!({}));
        let revision = format!("{}-{}", sts.name(), template_hash(&template, 0));
        let service = get_str(&v, &["spec", "serviceName"])
            .unwrap_or("")
            .to_string();
        let partition = get_i64(
            &v,
            &["spec", "updateStrategy", "rollingUpdate", "partition"],
        )
        .unwrap_or(0);
        let rolling = get_str(&v, &["spec", "updateStrategy", "type"]) != Some("OnDelete");
        let prefix = format!("{}-", sts.name());
        let mut by_ord: BTreeMap<i64, Arc<Obj>> = BTreeMap::new();
        for p in self.owned_pods(&sts.meta.uid) {
            if let Some(i) = p
                .name()
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<i64>().ok())
            {
                by_ord.insert(i, p);
            }
        }
        let healthy =
            |p: &Obj| !p.terminating() && p.pod().phase == Phase::Running && p.pod().ready;
        let owner = owner_ref(&sts, "StatefulSet");
        let make = |st: &mut State, i: i64| {
            let name = format!("{prefix}{i}");
            let mut pod = pod_from_template(
                &template,
                owner.clone(),
                &[
                    ("controller-revision-hash", &revision),
                    ("statefulset.kubernetes.io/pod-name", &name),
                    ("apps.kubernetes.io/pod-index", &i.to_string()),
                ],
            );
            set(&mut pod, &["metadata", "name"], json!(name));
            set(&mut pod, &["spec", "hostname"], json!(name));
            if !service.is_empty() {
                set(&mut pod, &["spec", "subdomain"], json!(service));
            }
            st.create_pod(sts.ns(), pod);
        };
        // a pod that failed is replaced
        for p in by_ord.values() {
            if !p.terminating() && matches!(p.pod().phase, Phase::Failed | Phase::Succeeded) {
                self.delete_pod(p);
            }
        }
        let mut blocked = false;
        for i in 0..replicas {
            match by_ord.get(&i) {
                None => {
                    // a name still held by a terminating pod is recreated when it is gone
                    if self
                        .get_nn(Res::Pod, sts.ns(), &format!("{prefix}{i}"))
                        .is_none()
                    {
                        make(self, i);
                    }
                    if !parallel {
                        blocked = true;
                        break;
                    }
                }
                Some(p) if !healthy(p) && !parallel => {
                    blocked = true;
                    break;
                }
                _ => {}
            }
        }
        if !blocked {
            // scale down from the highest ordinal
            let extra: Vec<Arc<Obj>> = by_ord
                .range(replicas..)
                .rev()
                .map(|(_, p)| p.clone())
                .collect();
            let all_healthy = by_ord.range(..replicas).all(|(_, p)| healthy(p));
            let mut deleted = false;
            for p in extra {
                if p.terminating() {
                    if !parallel {
                        deleted = true;
                        break;
                    }
                    continue;
                }
                if parallel || all_healthy {
                    self.delete_pod(&p);
                    deleted = true;
                    if !parallel {
                        break;
                    }
                }
            }
            // rolling update: highest ordinal first, one at a time
            if !deleted
                && rolling
                && all_healthy
                && let Some(p) = by_ord
                    .range(partition.max(0)..replicas)
                    .rev()
                    .map(|(_, p)| p)
                    .find(|p| p.label("controller-revision-hash") != Some(&revision[..]))
            {
                self.delete_pod(p);
            }
        }
        let pods: Vec<Arc<Obj>> = self.owned_pods(&sts.meta.uid);
        let count = pods.iter().filter(|p| !p.terminating()).count();
        let ready = pods.iter().filter(|p| healthy(p)).count();
        let updated = pods
            .iter()
            .filter(|p| {
                !p.terminating() && p.label("controller-revision-hash") == Some(&revision[..])
            })
            .count();
        let generation = sts.meta.generation;
        self.modify(Res::StatefulSet, key, |v| {
            let s = obj_mut(v, &["status"]);
            s.insert("observedGeneration".into(), json!(generation));
            s.insert("replicas".into(), json!(count));
            s.insert("availableReplicas".into(), json!(ready));
            s.insert("updateRevision".into(), json!(revision));
            s.insert("collisionCount".into(), json!(0));
            if updated == count {
                s.insert("currentRevision".into(), json!(revision));
            }
            for (k, n) in [
                ("readyReplicas", ready),
                ("currentReplicas", updated),
                ("updatedReplicas", updated),
            ] {
                if n > 0 {
                    s.insert(k.into(), json!(n));
                } else {
                    s.remove(k);
                }
            }
        });
    }
}

use crate::selector::LabelGet;
