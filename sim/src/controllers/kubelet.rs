//! The simulated kubelet (in the spirit of kwok): for every node annotated
//! `kwok.x-k8s.io/node: fake` it registers the node's status, makes it Ready after its
//! boot delay, starts the pods bound to it after their start-up delay, and finishes
//! deleted pods after their termination time (capped by the grace period). Nodes without
//! the annotation are left alone, as kwok does.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::{add_secs, rfc3339};
use crate::controllers::TimerKind;
use crate::object::{CondStatus, Key, Obj, annotation, get, get_str, obj_mut, set, set_condition};
use crate::quantity;
use crate::resources::Res;
use crate::state::{Kubelet, State};

/// Capacity a simulated node reports when it was created without one.
pub(crate) const DEFAULT_CPU: &str = "4";
/// Default memory capacity.
pub(crate) const DEFAULT_MEMORY: &str = "16Gi";
/// Default pod capacity (the kubelet's `--max-pods` default).
pub(crate) const DEFAULT_PODS: &str = "110";

/// A stable 64-hex-digit digest (for image and container IDs).
pub(crate) fn digest(s: &str) -> String {
    let mut out = String::with_capacity(64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..4u8 {
        for b in s.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

fn node_ip(index: u32) -> String {
    format!(
        "10.{}.{}.{}",
        64 + (index >> 16) % 64,
        (index >> 8) & 255,
        (index & 255).max(1)
    )
}

impl State {
    /// What a kubelet registering its node fills in (called on create for nodes with the
    /// kwok annotation): capacity and allocatable (kept if given), node info (the kubelet
    /// version defaults to the control plane's), addresses, the standard labels, the
    /// not-ready conditions and taint.
    pub(crate) fn kubelet_register(&mut self, v: &mut Value) {
        if annotation(v, crate::KWOK_ANNOTATION) != Some("fake") {
            return;
        }
        let name = get_str(v, &["metadata", "name"]).unwrap_or("").to_string();
        let labels = obj_mut(v, &["metadata", "labels"]);
        for (k, val) in [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", "amd64"),
        ] {
            labels.entry(k).or_insert(json!(val));
        }
        let d = &self.defaults;
        let cap_defaults = [
            ("cpu", d.node_cpu.clone()),
            ("memory", d.node_memory.clone()),
            ("pods", d.node_pods.clone()),
            ("ephemeral-storage", "100Gi".to_string()),
        ];
        let status = obj_mut(v, &["status"]);
        let cap = status
            .entry("capacity")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|c| {
                for (k, val) in &cap_defaults {
                    c.entry(*k).or_insert(json!(val));
                }
                c.clone()
            })
            .unwrap_or_default();
        if let Some(a) = status
            .entry("allocatable")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            for (k, val) in cap {
                a.entry(k).or_insert(val);
            }
        }
        let version = self.version.clone();
        if let Some(info) = status
            .entry("nodeInfo")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            let kubelet = info
                .get("kubeletVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(&version)
                .to_string();
            for (k, val) in [
                ("kubeletVersion", kubelet.clone()),
                ("kubeProxyVersion", kubelet),
                ("containerRuntimeVersion", "containerd://1.7.22".into()),
                ("osImage", "Ubuntu 22.04.5 LTS".into()),
                ("kernelVersion", "5.15.0-122-generic".into()),
                ("operatingSystem", "linux".into()),
                ("architecture", "amd64".into()),
                ("machineID", digest(&name)[..32].to_string()),
                ("systemUUID", uuid::Uuid::new_v4().to_string()),
                ("bootID", uuid::Uuid::new_v4().to_string()),
            ] {
                let empty = info
                    .get(k)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty);
                if empty {
                    info.insert(k.into(), json!(val));
                }
            }
        }
        self.next_ip += 1;
        let ip = node_ip(self.next_ip);
        let status = obj_mut(v, &["status"]);
        if status
            .get("addresses")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
        {
            status.insert(
                "addresses".into(),
                json!([{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]),
            );
        }
        status
            .entry("daemonEndpoints")
            .or_insert(json!({"kubeletEndpoint": {"Port": 10250}}));
        let now = rfc3339(self.now());
        if crate::object::condition(v, &["status", "conditions"], "Ready") == CondStatus::Missing {
            healthy_pressure_conditions(v, &now);
            set_condition(
                v,
                &["status", "conditions"],
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime status check may not have completed yet",
                &now,
                true,
            );
        }
        if crate::object::condition(v, &["status", "conditions"], "Ready") != CondStatus::True {
            add_taint(v, "node.kubernetes.io/not-ready", "NoSchedule", None);
        }
    }

    /// Whether the kubelet of `node` runs pods: the node is simulated, its kubelet runs
    /// and it is Ready.
    pub(crate) fn kubelet_active(&self, node: &str) -> bool {
        let Some(n) = self.get_nn(Res::Node, "", node) else {
            return false;
        };
        let ext = n.node();
        ext.kwok
            && ext.ready == CondStatus::True
            && self.kubelets.get(node).is_some_and(|k| k.running)
    }

    /// Node added or changed: kubelet bookkeeping and the boot timer.
    pub(crate) fn kubelet_node_changed(&mut self, old: Option<&Arc<Obj>>, new: Option<&Arc<Obj>>) {
        match (old, new) {
            (_, Some(n)) if n.node().kwok => {
                let name: Arc<str> = n.name().into();
                let fresh = !self.kubelets.contains_key(&name)
                    || old.is_none_or(|o| o.meta.uid != n.meta.uid);
                if fresh {
                    let v = n.value();
                    let ip = get(&v, &["status", "addresses"])
                        .and_then(Value::as_array)
                        .and_then(|a| {
                            a.iter().find(|x| {
                                x.get("type").and_then(Value::as_str) == Some("InternalIP")
                            })
                        })
                        .and_then(|x| x.get("address"))
                        .and_then(Value::as_str)
                        .unwrap_or("10.0.0.1")
                        .to_string();
                    self.kubelets.insert(
                        name.clone(),
                        Kubelet {
                            running: true,
                            epoch: 0,
                            ip: ip.into(),
                        },
                    );
                    let never = annotation(&v, crate::NEVER_READY_ANNOTATION) == Some("true")
                        || self.faults.node_never_ready(&name);
                    if n.node().ready != CondStatus::True && !never {
                        let secs = annotation(&v, crate::BOOT_ANNOTATION)
                            .and_then(|s| s.parse::<f64>().ok())
                            .unwrap_or(self.defaults.node_boot_seconds);
                        let at = add_secs(self.now(), secs);
                        self.add_timer(
                            at,
                            TimerKind::NodeReady {
                                node: name.clone(),
                                uid: n.meta.uid.clone(),
                            },
                        );
                    }
                    if self.static_pods.contains_key(&name) {
                        self.dirty.static_pods.insert(name.clone());
                    }
                }
                let became_ready = n.node().ready == CondStatus::True
                    && old.is_none_or(|o| o.node().ready != CondStatus::True);
                if became_ready {
                    self.kubelet_sync_node(&name);
                }
            }
            (Some(o), None) => {
                self.kubelets.remove(o.name());
            }
            _ => {}
        }
    }

    /// The boot delay of a node is over: Ready.
    pub(crate) fn kubelet_node_ready(&mut self, node: &str, uid: &str) {
        let key = Key::new("", node);
        let ok = self
            .get(Res::Node, &key)
            .is_some_and(|n| &*n.meta.uid == uid)
            && self.kubelets.get(node).is_some_and(|k| k.running);
        if !ok {
            return;
        }
        let now = rfc3339(self.now());
        self.modify(Res::Node, &key, |v| mark_node_ready(v, &now));
    }

    /// Starts what should run on a node that is (again) Ready with a running kubelet:
    /// pods not yet started, pods that lost readiness, and terminating pods to finish.
    pub(crate) fn kubelet_sync_node(&mut self, node: &str) {
        if !self.kubelet_active(node) {
            return;
        }
        for p in self.pods_on(node) {
            if p.terminating() {
                self.kubelet_pod_terminating(&p);
            } else if !p.pod().ready && p.pod().phase != crate::object::Phase::Succeeded {
                self.kubelet_schedule_start(&p);
            }
        }
        if self.static_pods.contains_key(node) {
            self.dirty.static_pods.insert(node.into());
        }
    }

    /// A pod was bound to a node: start it after its start-up delay.
    pub(crate) fn kubelet_pod_bound(&mut self, p: &Arc<Obj>) {
        if let Some(node) = p.pod().node.clone()
            && self.kubelet_active(&node)
        {
            self.kubelet_schedule_start(p);
        }
    }

    fn kubelet_schedule_start(&mut self, p: &Arc<Obj>) {
        let secs = p.pod().startup.unwrap_or(self.defaults.pod_startup_seconds);
        let at = add_secs(self.now(), secs);
        self.add_timer(
            at,
            TimerKind::PodStart {
                key: p.meta.key.clone(),
                uid: p.meta.uid.clone(),
            },
        );
    }

    /// A pod started terminating: finish it after its termination time, capped by the
    /// grace period (or after the whole grace period with `sim.kbg.io/full-grace`).
    pub(crate) fn kubelet_pod_terminating(&mut self, p: &Arc<Obj>) {
        let Some(node) = p.pod().node.clone() else {
            return;
        };
        let running = self.kubelets.get(&*node).is_some_and(|k| k.running)
            && self
                .get_nn(Res::Node, "", &node)
                .is_some_and(|n| n.node().kwok);
        if !running {
            return;
        }
        let grace = p.pod().deletion_grace.unwrap_or(p.pod().grace).max(0) as f64;
        let secs = if p.pod().full_grace || self.faults.full_grace {
            grace
        } else {
            p.pod()
                .termination
                .unwrap_or(self.defaults.pod_termination_seconds)
                .min(grace)
        };
        let at = add_secs(self.now(), secs);
        self.add_timer(
            at,
            TimerKind::PodGone {
                key: p.meta.key.clone(),
                uid: p.meta.uid.clone(),
            },
        );
    }

    /// The start-up delay is over: Running and Ready.
    pub(crate) fn kubelet_pod_start(&mut self, key: &Key, uid: &str) {
        let Some(p) = self.get(Res::Pod, key).cloned() else {
            return;
        };
        if &*p.meta.uid != uid || p.terminating() {
            return;
        }
        let Some(node) = p.pod().node.clone() else {
            return;
        };
        if !self.kubelet_active(&node) {
            return;
        }
        let host_ip = self
            .kubelets
            .get(&*node)
            .map(|k| k.ip.to_string())
            .unwrap_or_default();
        let pod_ip = if p.pod().started {
            None
        } else {
            self.next_ip += 1;
            let n = self.next_ip;
            Some(format!(
                "10.{}.{}.{}",
                128 + (n >> 16) % 64,
                (n >> 8) & 255,
                n & 255
            ))
        };
        let now = rfc3339(self.now());
        self.modify(Res::Pod, key, |v| {
            running_status(v, &host_ip, pod_ip.as_deref(), &now)
        });
    }

    /// The termination time is over: the pod is gone.
    pub(crate) fn kubelet_pod_gone(&mut self, key: &Key, uid: &str) {
        let Some(p) = self.get(Res::Pod, key).cloned() else {
            return;
        };
        if &*p.meta.uid != uid || !p.terminating() {
            return;
        }
        let running = p
            .pod()
            .node
            .as_deref()
            .is_some_and(|n| self.kubelets.get(n).is_some_and(|k| k.running));
        if !running {
            return;
        }
        self.pods_terminated.insert(key.clone());
        if p.meta.has_finalizers {
            self.modify(Res::Pod, key, |v| {
                set(v, &["metadata", "deletionGracePeriodSeconds"], json!(0));
                set(
                    v,
                    &["status", "phase"],
                    json!(if p.pod().phase == crate::object::Phase::Pending {
                        "Failed"
                    } else {
                        "Succeeded"
                    }),
                );
            });
        } else {
            self.purge(Res::Pod, key);
        }
    }
}

/// The kubelet's pressure conditions, all False (healthy).
fn healthy_pressure_conditions(v: &mut Value, now: &str) {
    for (ty, reason, msg) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        set_condition(
            v,
            &["status", "conditions"],
            ty,
            "False",
            reason,
            msg,
            now,
            true,
        );
    }
}

/// Sets a node Ready: conditions, and the not-ready/unreachable taints gone.
pub(crate) fn mark_node_ready(v: &mut Value, now: &str) {
    healthy_pressure_conditions(v, now);
    set_condition(
        v,
        &["status", "conditions"],
        "Ready",
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
        now,
        true,
    );
    remove_taints(v, |k, _| {
        k == "node.kubernetes.io/not-ready" || k == "node.kubernetes.io/unreachable"
    });
}

/// Adds a taint unless one with the same key and effect exists.
pub(crate) fn add_taint(v: &mut Value, key: &str, effect: &str, added: Option<&str>) {
    let spec = obj_mut(v, &["spec"]);
    let taints = spec.entry("taints").or_insert_with(|| json!([]));
    if let Some(a) = taints.as_array_mut() {
        let exists = a.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                && t.get("effect").and_then(Value::as_str) == Some(effect)
        });
        if !exists {
            let mut t = json!({"key": key, "effect": effect});
            if let Some(at) = added {
                t["timeAdded"] = json!(at);
            }
            a.push(t);
        }
    }
}

/// Removes the taints for which `f(key, effect)` holds.
pub(crate) fn remove_taints(v: &mut Value, f: impl Fn(&str, &str) -> bool) {
    let Some(a) = v
        .get_mut("spec")
        .and_then(|s| s.get_mut("taints"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    a.retain(|t| {
        !f(
            t.get("key").and_then(Value::as_str).unwrap_or(""),
            t.get("effect").and_then(Value::as_str).unwrap_or(""),
        )
    });
    if a.is_empty()
        && let Some(s) = v.get_mut("spec").and_then(Value::as_object_mut)
    {
        s.remove("taints");
    }
}

fn running_status(v: &mut Value, host_ip: &str, pod_ip: Option<&str>, now: &str) {
    let uid = get_str(v, &["metadata", "uid"]).unwrap_or("").to_string();
    let spec = v.get("spec").cloned().unwrap_or(Value::Null);
    let start_time = get_str(v, &["status", "startTime"])
        .unwrap_or(now)
        .to_string();
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let pod_ip = if host_network { Some(host_ip) } else { pod_ip };
    let status = obj_mut(v, &["status"]);
    status.insert("phase".into(), json!("Running"));
    status.insert("hostIP".into(), json!(host_ip));
    status.insert("hostIPs".into(), json!([{"ip": host_ip}]));
    if let Some(ip) = pod_ip {
        status.insert("podIP".into(), json!(ip));
        status.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    status.insert("startTime".into(), json!(start_time));
    let status_of = |c: &Value, init: bool| {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let repo = image.rsplit_once(':').map_or(image, |(r, _)| r);
        let state = if init {
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                   "containerID": format!("containerd://{}", digest(&format!("{uid}/{name}")))}})
        } else {
            json!({"running": {"startedAt": now}})
        };
        json!({
            "name": name,
            "image": image,
            "imageID": format!("{repo}@sha256:{}", digest(image)),
            "containerID": format!("containerd://{}", digest(&format!("{uid}/{name}"))),
            "ready": !init,
            "started": !init,
            "restartCount": 0,
            "state": state,
        })
    };
    let statuses: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| status_of(c, false))
        .collect();
    status.insert("containerStatuses".into(), json!(statuses));
    let inits: Vec<Value> = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| status_of(c, true))
        .collect();
    if !inits.is_empty() {
        status.insert("initContainerStatuses".into(), json!(inits));
    }
    for ty in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        set_condition(v, &["status", "conditions"], ty, "True", "", "", now, false);
    }
}

/// Reads a capacity quantity (for node defaults validation in scenarios).
pub(crate) fn valid_capacity(cpu: &str, memory: &str, pods: &str) -> bool {
    quantity::cpu_milli(cpu).is_some()
        && quantity::whole(memory).is_some()
        && quantity::whole(pods).is_some()
}
