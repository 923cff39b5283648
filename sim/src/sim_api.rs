//! `/sim/v1/…`: the simulator's own endpoints (not Kubernetes APIs, not in discovery),
//! behind the same bearer token:
//!
//! | request | what |
//! | --- | --- |
//! | `GET /sim/v1/stats` | [`crate::SimStats`] |
//! | `GET /sim/v1/faults`, `PUT /sim/v1/faults` | [`crate::Faults`] |
//! | `GET /sim/v1/audit` | every [`crate::AuditEntry`] so far |
//! | `GET /sim/v1/time` | `{"now": RFC 3339, "speed": f64}` |
//! | `POST /sim/v1/nodes/{name}/stop-kubelet` | the node's simulated kubelet stops (NotReady after the grace period) |
//! | `POST /sim/v1/nodes/{name}/start-kubelet` | and starts again |
//! | `POST /sim/v1/control-plane/{node}/upgrade` `{"version": "v1.34.0", "components": [...]}` | upgrades a master in place: the static pods and kubelet named in `components` (default: all of `etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `kubelet`); 500 when the node's `sim.kbg.io/fail-upgrade` annotation says so |

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use crate::controllers::controlplane::UPGRADABLE;
use crate::server::Shared;
use crate::status::ApiError;

fn reply(code: u16, v: &Value) -> crate::api_reply::Reply {
    crate::api_reply::Reply::json(code, v)
}

pub(crate) fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    segs: &[String],
    body: &[u8],
) -> crate::api_reply::Reply {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let r: Result<Value, ApiError> = match (method.clone(), s.as_slice()) {
        (Method::GET, ["stats"]) => {
            Ok(serde_json::to_value(crate::stats_of(shared)).unwrap_or_default())
        }
        (Method::GET, ["faults"]) => {
            Ok(serde_json::to_value(&shared.dice.lock().faults).unwrap_or_default())
        }
        (Method::PUT, ["faults"]) => match serde_json::from_slice::<crate::Faults>(body) {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    crate::apply_faults(shared, f.clone());
                    Ok(serde_json::to_value(&f).unwrap_or_default())
                }
                Err(e) => Err(ApiError::bad_request(e)),
            },
            Err(e) => Err(ApiError::bad_request(format!("faults: {e}"))),
        },
        (Method::GET, ["audit"]) => {
            Ok(serde_json::to_value(&shared.audit.lock().entries).unwrap_or_default())
        }
        (Method::GET, ["time"]) => Ok(json!({
            "now": crate::clock::rfc3339_micro(shared.clock.now()),
            "speed": shared.clock.speed(),
        })),
        (Method::POST, ["nodes", name, action @ ("stop-kubelet" | "start-kubelet")]) => {
            let ok = shared.write(|st| {
                if *action == "stop-kubelet" {
                    st.stop_kubelet(name)
                } else {
                    st.start_kubelet(name)
                }
            });
            if ok {
                Ok(
                    json!({"node": name, "kubelet": if *action == "stop-kubelet" { "stopped" } else { "running" }}),
                )
            } else {
                Err(ApiError::not_found("nodes", "", name))
            }
        }
        (Method::POST, ["control-plane", node, "upgrade"]) => {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let components: Option<Vec<&str>> = match v.get("components") {
                None | Some(Value::Null) => Some(UPGRADABLE.to_vec()),
                Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
                Some(_) => None,
            };
            match (v.get("version").and_then(Value::as_str), components) {
                (Some(ver), Some(components)) if crate::version::parse(ver).is_some() => shared
                    .write(|st| st.upgrade_master(node, ver, &components))
                    .map(|()| json!({"node": node, "version": ver, "components": components})),
                _ => Err(ApiError::bad_request(
                    "body: {\"version\": \"v1.X.Y\", \"components\": [\"kube-apiserver\", …]} expected (components optional: all)",
                )),
            }
        }
        _ => Err(ApiError::new(404, "NotFound", "no such /sim/v1 endpoint")),
    };
    match r {
        Ok(v) => reply(200, &v),
        Err(e) => e.into(),
    }
}
