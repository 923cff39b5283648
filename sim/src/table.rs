//! Server-side `Table` output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! with the columns of kube-apiserver's printers (`pkg/printers/internalversion`), so
//! `kubectl get nodes` prints STATUS / ROLES / AGE / VERSION as against a real cluster.
//! Also `PartialObjectMetadata` for metadata-only requests.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::clock::human_duration;
use crate::object::{Obj, get, get_i64, get_str};
use crate::resources::Res;

/// The `PartialObjectMetadata` of an object.
pub(crate) fn partial_metadata(v: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn col(name: &str, ty: &str, format: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn age(v: &Value, now: Timestamp) -> String {
    match get_str(v, &["metadata", "creationTimestamp"]).and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".into(),
    }
}

fn columns(res: Res) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match res {
        Res::Node => vec![
            name,
            col("Status", "string", "", 0, "The status of the node"),
            col("Roles", "string", "", 0, "The roles of the node"),
            age,
            col(
                "Version",
                "string",
                "",
                0,
                "Kubelet Version reported by the node.",
            ),
            col(
                "Internal-IP",
                "string",
                "",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            col(
                "External-IP",
                "string",
                "",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            col(
                "OS-Image",
                "string",
                "",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            col(
                "Kernel-Version",
                "string",
                "",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            col(
                "Container-Runtime",
                "string",
                "",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Res::Pod => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            col(
                "IP",
                "string",
                "",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            col(
                "Node",
                "string",
                "",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            col(
                "Nominated Node",
                "string",
                "",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            col(
                "Readiness Gates",
                "string",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Res::Deployment => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                0,
                "Number of the pod with ready state",
            ),
            col(
                "Up-to-date",
                "integer",
                "",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "integer",
                "",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            col(
                "Containers",
                "string",
                "",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                "",
                1,
                "Images referenced by each container in the template.",
            ),
            col("Selector", "string", "", 1, "Label selector for pods."),
        ],
        Res::ReplicaSet => vec![
            name,
            col(
                "Desired",
                "integer",
                "",
                0,
                "Replicas is the number of desired replicas.",
            ),
            col(
                "Current",
                "integer",
                "",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                "",
                0,
                "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition.",
            ),
            age,
        ],
        Res::DaemonSet => vec![
            name,
            col(
                "Desired",
                "integer",
                "",
                0,
                "The total number of nodes that should be running the daemon pod.",
            ),
            col(
                "Current",
                "integer",
                "",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            col(
                "Ready",
                "integer",
                "",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            col(
                "Up-to-date",
                "integer",
                "",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            col(
                "Available",
                "integer",
                "",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            col(
                "Node Selector",
                "string",
                "",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            age,
        ],
        Res::StatefulSet => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                0,
                "Number of the pod with ready state",
            ),
            age,
        ],
        Res::Pdb => vec![
            name,
            col(
                "Min Available",
                "string",
                "",
                0,
                "The minimum number of pods that must be available simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\".",
            ),
            col(
                "Max Unavailable",
                "string",
                "",
                0,
                "The maximum number of pods that may be unavailable simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\".",
            ),
            col(
                "Allowed Disruptions",
                "integer",
                "",
                0,
                "Calculated number of pods that may be disrupted at this time.",
            ),
            age,
        ],
        Res::Namespace => vec![
            name,
            col("Status", "string", "", 0, "The status of the namespace"),
            age,
        ],
        Res::ConfigMap => vec![
            name,
            col(
                "Data",
                "string",
                "",
                0,
                "Data contains the configuration data.",
            ),
            age,
        ],
        Res::Lease => vec![
            name,
            col(
                "Holder",
                "string",
                "",
                0,
                "HolderIdentity contains the identity of the holder of a current lease.",
            ),
            age,
        ],
        _ => vec![
            name,
            col(
                "Created At",
                "date",
                "",
                0,
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
    }
}

fn node_cells(v: &Value, now: Timestamp) -> Vec<Value> {
    let ready = get(v, &["status", "conditions"])
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let mut status = vec![ready.to_string()];
    if get(v, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = get(v, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, val)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!r.is_empty()).then(|| r.to_string())
                    } else if k == "kubernetes.io/role" {
                        val.as_str().filter(|s| !s.is_empty()).map(str::to_string)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let addr = |ty: &str| {
        get(v, &["status", "addresses"])
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == ty))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |k: &str| {
        get_str(v, &["status", "nodeInfo", k])
            .unwrap_or("<unknown>")
            .to_string()
    };
    vec![
        json!(get_str(v, &["metadata", "name"]).unwrap_or("")),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age(v, now)),
        json!(get_str(v, &["status", "nodeInfo", "kubeletVersion"]).unwrap_or("")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn pod_cells(v: &Value, now: Timestamp) -> Vec<Value> {
    let statuses = get(v, &["status", "containerStatuses"]).and_then(Value::as_array);
    let total = get(v, &["spec", "containers"])
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.map_or(0, |a| a.iter().filter(|c| c["ready"] == true).count());
    let restarts: i64 = statuses.map_or(0, |a| {
        a.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
    });
    let mut reason = get_str(v, &["status", "reason"])
        .or_else(|| get_str(v, &["status", "phase"]))
        .unwrap_or("Pending")
        .to_string();
    if reason == "Succeeded" {
        reason = "Completed".into();
    }
    for c in statuses.into_iter().flatten() {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            reason = r.into();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            reason = r.into();
        }
    }
    if reason == "Pending" && get_str(v, &["spec", "nodeName"]).is_some() && statuses.is_none() {
        reason = "ContainerCreating".into();
    }
    if get(v, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null()) {
        reason = if get_str(v, &["status", "reason"]) == Some("NodeLost") {
            "Unknown"
        } else {
            "Terminating"
        }
        .into();
    }
    vec![
        json!(get_str(v, &["metadata", "name"]).unwrap_or("")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(v, now)),
        json!(get_str(v, &["status", "podIP"]).unwrap_or("<none>")),
        json!(get_str(v, &["spec", "nodeName"]).unwrap_or("<none>")),
        json!(get_str(v, &["status", "nominatedNodeName"]).unwrap_or("<none>")),
        json!("<none>"),
    ]
}

fn template_columns(v: &Value) -> (String, String) {
    let cs = get(v, &["spec", "template", "spec", "containers"]).and_then(Value::as_array);
    let names: Vec<&str> = cs
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let images: Vec<&str> = cs
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str())
        .collect();
    (names.join(","), images.join(","))
}

fn selector_string(v: &Value) -> String {
    let mut parts: Vec<String> = get(v, &["spec", "selector", "matchLabels"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.join(",")
}

fn cells(res: Res, v: &Value, now: Timestamp) -> Vec<Value> {
    let name = json!(get_str(v, &["metadata", "name"]).unwrap_or(""));
    let n = |p: &[&str]| get_i64(v, p).unwrap_or(0);
    match res {
        Res::Node => node_cells(v, now),
        Res::Pod => pod_cells(v, now),
        Res::Deployment => {
            let (c, i) = template_columns(v);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(&["status", "readyReplicas"]),
                    get_i64(v, &["spec", "replicas"]).unwrap_or(1)
                )),
                json!(n(&["status", "updatedReplicas"])),
                json!(n(&["status", "availableReplicas"])),
                json!(age(v, now)),
                json!(c),
                json!(i),
                json!(selector_string(v)),
            ]
        }
        Res::ReplicaSet => vec![
            name,
            json!(n(&["spec", "replicas"])),
            json!(n(&["status", "replicas"])),
            json!(n(&["status", "readyReplicas"])),
            json!(age(v, now)),
        ],
        Res::DaemonSet => {
            let ns: Vec<String> = get(v, &["spec", "template", "spec", "nodeSelector"])
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(n(&["status", "desiredNumberScheduled"])),
                json!(n(&["status", "currentNumberScheduled"])),
                json!(n(&["status", "numberReady"])),
                json!(n(&["status", "updatedNumberScheduled"])),
                json!(n(&["status", "numberAvailable"])),
                json!(if ns.is_empty() {
                    "<none>".to_string()
                } else {
                    ns.join(",")
                }),
                json!(age(v, now)),
            ]
        }
        Res::StatefulSet => vec![
            name,
            json!(format!(
                "{}/{}",
                n(&["status", "readyReplicas"]),
                get_i64(v, &["spec", "replicas"]).unwrap_or(1)
            )),
            json!(age(v, now)),
        ],
        Res::Pdb => {
            let f = |k: &str| match get(v, &["spec", k]) {
                Some(Value::Number(x)) => x.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => "N/A".into(),
            };
            vec![
                name,
                json!(f("minAvailable")),
                json!(f("maxUnavailable")),
                json!(n(&["status", "disruptionsAllowed"])),
                json!(age(v, now)),
            ]
        }
        Res::Namespace => vec![
            name,
            json!(get_str(v, &["status", "phase"]).unwrap_or("Active")),
            json!(age(v, now)),
        ],
        Res::ConfigMap => {
            let data = v
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + v.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![name, json!(data), json!(age(v, now))]
        }
        Res::Lease => vec![
            name,
            json!(get_str(v, &["spec", "holderIdentity"]).unwrap_or("")),
            json!(age(v, now)),
        ],
        _ => vec![
            name,
            json!(get_str(v, &["metadata", "creationTimestamp"]).unwrap_or("")),
        ],
    }
}

/// A Table of objects. `include`: `None`, `Metadata` (default) or `Object`.
pub(crate) fn table(
    res: Res,
    objs: &[Arc<Obj>],
    now: Timestamp,
    rv: Option<u64>,
    cont: Option<String>,
    include: &str,
) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let v = o.value();
            let mut row = json!({"cells": cells(res, &v, now)});
            match include {
                "None" => {}
                "Object" => row["object"] = v,
                _ => row["object"] = partial_metadata(&v),
            }
            row
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rows_read_like_kubectl() {
        let now: Timestamp = "2024-01-01T01:00:00Z".parse().unwrap();
        let v = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-01-01T00:55:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "v1.31.0"}}
        });
        let c = node_cells(&v, now);
        assert_eq!(c[1], "Ready,SchedulingDisabled");
        assert_eq!(c[2], "control-plane");
        assert_eq!(c[3], "5m");
        assert_eq!(c[4], "v1.31.0");
        assert_eq!(columns(Res::Node).len(), c.len());
        assert_eq!(columns(Res::Pod).len(), pod_cells(&json!({}), now).len());
    }
}
