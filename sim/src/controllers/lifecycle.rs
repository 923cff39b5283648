//! Node lifecycle (a stopped kubelet makes its node NotReady/Unknown, tainted unreachable,
//! its pods not Ready and, after their toleration, evicted), the garbage collector (owner
//! references, background and foreground deletion) and the namespace controller.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::{add_secs, rfc3339};
use crate::controllers::TimerKind;
use crate::controllers::kubelet::{add_taint, mark_node_ready};
use crate::object::{Key, Taint, set_condition};
use crate::ops::DeleteOpts;
use crate::resources::Res;
use crate::state::State;

impl State {
    /// Stops a node's simulated kubelet: after the node-monitor grace period the node
    /// becomes Unknown (NotReady).
    ///
    /// # Errors
    /// `false` when there is no such simulated node.
    pub(crate) fn stop_kubelet(&mut self, node: &str) -> bool {
        let Some(k) = self.kubelets.get_mut(node) else {
            return false;
        };
        if !k.running {
            return true;
        }
        k.running = false;
        k.epoch += 1;
        let epoch = k.epoch;
        let at = add_secs(self.now(), self.defaults.node_monitor_grace_seconds);
        self.add_timer(
            at,
            TimerKind::NodeLost {
                node: node.into(),
                epoch,
            },
        );
        true
    }

    /// Starts a node's simulated kubelet again: Ready at once, its pods resumed.
    pub(crate) fn start_kubelet(&mut self, node: &str) -> bool {
        let Some(k) = self.kubelets.get_mut(node) else {
            return false;
        };
        if k.running {
            return true;
        }
        k.running = true;
        k.epoch += 1;
        let now = rfc3339(self.now());
        let key = Key::new("", node);
        let was_ready = self
            .get(Res::Node, &key)
            .is_some_and(|n| n.node().ready == crate::object::CondStatus::True);
        self.modify(Res::Node, &key, |v| mark_node_ready(v, &now));
        if was_ready {
            self.kubelet_sync_node(node);
        }
        true
    }

    /// The grace period of a stopped kubelet is over: the node is lost.
    pub(crate) fn node_lost(&mut self, node: &str, epoch: u64) {
        if self
            .kubelets
            .get(node)
            .is_none_or(|k| k.running || k.epoch != epoch)
        {
            return;
        }
        let now = rfc3339(self.now());
        let key = Key::new("", node);
        self.modify(Res::Node, &key, |v| {
            for ty in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
                set_condition(
                    v,
                    &["status", "conditions"],
                    ty,
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                    &now,
                    true,
                );
            }
            add_taint(v, "node.kubernetes.io/unreachable", "NoSchedule", None);
            add_taint(v, "node.kubernetes.io/unreachable", "NoExecute", Some(&now));
        });
        let unreachable = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            value: "".into(),
            effect: "NoExecute".into(),
        };
        for p in self.pods_on(node) {
            // MarkPodsNotReady
            self.modify(Res::Pod, &p.meta.key, |v| {
                set_condition(
                    v,
                    &["status", "conditions"],
                    "Ready",
                    "False",
                    "",
                    "",
                    &now,
                    false,
                );
            });
            if p.terminating() {
                continue;
            }
            // taint-based eviction (NoExecuteTaintManager)
            let v = p.value();
            let tols = crate::controllers::scheduler::Toleration::list(
                v.get("spec").and_then(|s| s.get("tolerations")),
            );
            let tolerating: Vec<Option<i64>> = v
                .get("spec")
                .and_then(|s| s.get("tolerations"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .zip(tols.iter())
                .filter(|(_, t)| t.tolerates(&unreachable))
                .map(|(raw, _)| raw.get("tolerationSeconds").and_then(Value::as_i64))
                .collect();
            let delay = if tolerating.is_empty() {
                Some(0)
            } else if tolerating.iter().any(Option::is_none) {
                None
            } else {
                tolerating.iter().flatten().min().copied()
            };
            if let Some(secs) = delay {
                let at = add_secs(self.now(), secs.max(0) as f64);
                self.add_timer(
                    at,
                    TimerKind::TaintEvict {
                        key: p.meta.key.clone(),
                        uid: p.meta.uid.clone(),
                    },
                );
            }
        }
    }

    /// Taint-based eviction of a pod on a lost node.
    pub(crate) fn taint_evict(&mut self, key: &Key, uid: &str) {
        let Some(p) = self.get(Res::Pod, key).cloned() else {
            return;
        };
        if &*p.meta.uid != uid || p.terminating() {
            return;
        }
        let lost = p
            .pod()
            .node
            .as_deref()
            .is_some_and(|n| self.kubelets.get(n).is_some_and(|k| !k.running));
        if !lost {
            return;
        }
        let now = rfc3339(self.now());
        self.modify(Res::Pod, key, |v| {
            set_condition(
                v,
                &["status", "conditions"],
                "DisruptionTarget",
                "True",
                "DeletionByTaintManager",
                "Taint manager: deleting due to NoExecute taint",
                &now,
                false,
            );
        });
        let _ = self.delete(Res::Pod, key, &DeleteOpts::default());
    }

    /// The garbage collector: dependents of deleted owners.
    pub(crate) fn run_gc(&mut self) {
        let uids = std::mem::take(&mut self.dirty.gc);
        for uid in uids {
            let foreground = self.dirty.foreground.contains_key(&uid);
            if !foreground && self.uids.contains_key(&uid) {
                continue;
            }
            for (res, key) in self.owned(&uid) {
                let Some(dep) = self.get(res, &key).cloned() else {
                    continue;
                };
                let other_owner_alive = dep
                    .meta
                    .owners
                    .iter()
                    .any(|o| o.uid != uid && self.uids.contains_key(&o.uid));
                if other_owner_alive {
                    let u = uid.clone();
                    self.modify(res, &key, |v| {
                        if let Some(refs) = v["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(&*u));
                        }
                    });
                } else {
                    // under a foreground deletion, dependents go in the foreground too,
                    // so the owner waits for the whole tree
                    let opts = DeleteOpts {
                        propagation: foreground.then_some(crate::ops::Propagation::Foreground),
                        ..DeleteOpts::default()
                    };
                    let _ = self.delete(res, &key, &opts);
                }
            }
            if foreground {
                self.dirty.foreground_check.insert(uid);
            }
        }
        let checks = std::mem::take(&mut self.dirty.foreground_check);
        for uid in checks {
            if self.by_owner.get(&uid).is_some_and(|s| !s.is_empty()) {
                continue;
            }
            if let Some((res, key)) = self.dirty.foreground.remove(&uid) {
                self.modify(res, &key, |v| {
                    if let Some(f) = v["metadata"]["finalizers"].as_array_mut() {
                        f.retain(|x| x != "foregroundDeletion");
                        if f.is_empty() {
                            crate::object::remove(v, &["metadata", "finalizers"]);
                        }
                    }
                });
            }
        }
    }

    /// The namespace controller: a terminating namespace's content is deleted, then the
    /// namespace.
    pub(crate) fn run_namespaces(&mut self) {
        let keys = std::mem::take(&mut self.dirty.namespaces);
        for key in keys {
            let Some(ns) = self.get(Res::Namespace, &key).cloned() else {
                continue;
            };
            if !ns.terminating() {
                continue;
            }
            let mut left = 0;
            for res in Res::all().filter(|r| r.def().namespaced) {
                let objs: Vec<Arc<crate::object::Obj>> =
                    self.objects(res, Some(&key.name)).cloned().collect();
                for o in objs {
                    left += 1;
                    if !o.terminating() {
                        let _ = self.delete(res, &o.meta.key, &DeleteOpts::default());
                    }
                }
            }
            // when content remains, its removal marks the namespace dirty again
            if left == 0 {
                self.purge(Res::Namespace, &key);
            }
        }
    }
}
