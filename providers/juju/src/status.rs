//! `juju status --format=json`, read tolerantly, and what it says about a pool's units.
//!
//! The shape (Juju 2.9 and 3.x alike, checked against real 3.6 output): `applications`
//! → `units` → `{workload-status, juju-status, machine, public-address}`, and
//! `machines` → `{juju-status, machine-status, hostname, dns-name, instance-id,
//! hardware, containers}`. Any entry Juju could not compute is `{"status-error": "…"}`;
//! every field here is optional so such entries, and fields a newer Juju adds, parse.

use std::collections::BTreeMap;

use kbg_provider::MachineState;
use serde::Deserialize;
use serde_json::Value;

/// The whole status document.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Status {
    #[serde(default)]
    pub machines: BTreeMap<String, MachineStatus>,
    #[serde(default)]
    pub applications: BTreeMap<String, AppStatus>,
}

/// `{current, message, life}` as Juju prints each status.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Info {
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub life: Option<String>,
}

impl Info {
    fn is(&self, value: &str) -> bool {
        self.current.as_deref() == Some(value)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct MachineStatus {
    #[serde(default, rename = "juju-status")]
    pub juju_status: Info,
    #[serde(default, rename = "machine-status")]
    pub machine_status: Info,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default, rename = "dns-name")]
    pub dns_name: Option<String>,
    #[serde(default, rename = "instance-id")]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub hardware: Option<String>,
    #[serde(default)]
    pub containers: BTreeMap<String, MachineStatus>,
    #[serde(default, rename = "status-error")]
    pub status_error: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AppStatus {
    #[serde(default)]
    pub life: Option<String>,
    #[serde(default)]
    pub units: BTreeMap<String, UnitStatus>,
    /// Endpoint → related applications: names (2.9) or `{related-application, …}` (3.x).
    #[serde(default)]
    pub relations: BTreeMap<String, Vec<Value>>,
    #[serde(default, rename = "status-error")]
    pub status_error: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct UnitStatus {
    #[serde(default, rename = "workload-status")]
    pub workload_status: Info,
    #[serde(default, rename = "juju-status")]
    pub juju_status: Info,
    #[serde(default)]
    pub machine: Option<String>,
    #[serde(default, rename = "public-address")]
    pub public_address: Option<String>,
    #[serde(default)]
    pub life: Option<String>,
    #[serde(default, rename = "status-error")]
    pub status_error: Option<String>,
}

impl AppStatus {
    /// Whether the application is being removed.
    pub fn is_dying(&self) -> bool {
        matches!(self.life.as_deref(), Some("dying" | "dead"))
    }

    /// The applications related on `endpoint`.
    pub fn related_on(&self, endpoint: &str) -> Vec<String> {
        self.relations
            .get(endpoint)
            .into_iter()
            .flatten()
            .filter_map(|v| match v {
                Value::String(app) => Some(app.clone()),
                Value::Object(o) => o
                    .get("related-application")
                    .and_then(Value::as_str)
                    .map(ToString::to_string),
                _ => None,
            })
            .collect()
    }
}

impl Status {
    /// The machine (or container: `0/lxd/3`) a unit runs on.
    pub fn machine(&self, id: &str) -> Option<&MachineStatus> {
        let host = id.split('/').next().unwrap_or(id);
        let m = self.machines.get(host)?;
        if host == id {
            Some(m)
        } else {
            m.containers.get(id)
        }
    }
}

/// The number of unit `app/3`.
pub(crate) fn unit_number(unit: &str) -> Option<u32> {
    unit.rsplit_once('/').and_then(|(_, n)| n.parse().ok())
}

/// Where a unit stands, with Juju's words when it is in trouble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnitView {
    pub state: MachineState,
    /// Why it is `Failed` (or what it waits for), one line.
    pub reason: Option<String>,
}

/// A unit's state from its own status and its machine's.
///
/// - removed or being removed (`life` dying/dead, workload `terminated`) → `Stopping`;
/// - the machine failed to provision (`machine-status` `provisioning error`, machine
///   `juju-status` `error`), the unit's agent or hook failed (`juju-status`
///   `error`/`failed`/`lost`, workload `error`) → `Failed`;
/// - the machine `started` and the unit agent `idle` or `executing` past allocation →
///   `Running`;
/// - anything else (allocating, pending, status errors) → `Pending`.
pub(crate) fn unit_view(unit: &UnitStatus, machine: Option<&MachineStatus>) -> UnitView {
    let dying = |life: &Option<String>| matches!(life.as_deref(), Some("dying" | "dead"));
    if dying(&unit.life)
        || dying(&unit.juju_status.life)
        || dying(&unit.workload_status.life)
        || unit.workload_status.is("terminated")
    {
        return UnitView {
            state: MachineState::Stopping,
            reason: None,
        };
    }
    let say = |what: &str, info: &Info| {
        let current = info.current.as_deref().unwrap_or("?");
        Some(match info.message.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => format!("{what} {current}: {m}"),
            None => format!("{what} {current}"),
        })
    };
    if let Some(m) = machine
        && (m.machine_status.is("provisioning error") || m.juju_status.is("error"))
    {
        let info = if m.machine_status.is("provisioning error") {
            &m.machine_status
        } else {
            &m.juju_status
        };
        return UnitView {
            state: MachineState::Failed,
            reason: say("machine", info),
        };
    }

    if ["error", "failed", "lost"]
        .iter()
        .any(|s| unit.juju_status.is(s))
    {
        return UnitView {
            state: MachineState::Failed,
            reason: say("unit agent", &unit.juju_status),
        };
    }
    if unit.workload_status.is("error") {
        return UnitView {
            state: MachineState::Failed,
            reason: say("workload", &unit.workload_status),
        };
    }
    let machine_started = machine.is_some_and(|m| m.juju_status.is("started"));
    let agent_up = unit.juju_status.is("idle") || unit.juju_status.is("executing");
    if machine_started && agent_up {
        return UnitView {
            state: MachineState::Running,
            reason: None,
        };
    }
    let reason = unit
        .status_error
        .clone()
        .or_else(|| machine.and_then(|m| m.status_error.clone()))
        .or_else(|| say("unit agent", &unit.juju_status));
    UnitView {
        state: MachineState::Pending,
        reason,
    }
}

/// `availability-zone=us-east-1a` from a machine's `hardware` string.
pub(crate) fn availability_zone(machine: &MachineStatus) -> Option<String> {
    machine.hardware.as_deref().and_then(|h| {
        h.split_whitespace()
            .find_map(|kv| kv.strip_prefix("availability-zone="))
            .map(ToString::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A unit and its machine as Juju 3.6 prints them (shape from real output).
    fn doc(unit: Value, machine: Value) -> Status {
        serde_json::from_value(json!({
            "model": {"name": "k8s", "version": "3.6.4"},
            "machines": {"4": machine},
            "applications": {"beta": {
                "charm": "kubernetes-worker",
                "charm-channel": "1.31/stable",
                "relations": {
                    "kube-control": [{"related-application": "kubernetes-control-plane",
                                       "interface": "kube-control", "scope": "global"}],
                    "certificates": ["easyrsa"]
                },
                "units": {"beta/0": unit}
            }}
        }))
        .unwrap()
    }

    fn view(unit: Value, machine: Value) -> UnitView {
        let st = doc(unit, machine);
        let u = &st.applications["beta"].units["beta/0"];
        unit_view(u, st.machine(u.machine.as_deref().unwrap_or("")))
    }

    fn started() -> Value {
        json!({"juju-status": {"current": "started", "version": "3.6.4"},
               "hostname": "juju-663cb8-4", "dns-name": "10.103.56.99",
               "instance-id": "i-0abc", "machine-status": {"current": "running"},
               "hardware": "arch=amd64 cores=4 mem=16384M availability-zone=us-east-1a"})
    }

    #[test]
    fn unit_states_from_status() {
        let table = [
            (
                json!({"workload-status": {"current": "active", "message": "Kubernetes worker running."},
                       "juju-status": {"current": "idle"}, "machine": "4"}),
                started(),
                MachineState::Running,
                None,
            ),
            (
                json!({"workload-status": {"current": "maintenance"},
                       "juju-status": {"current": "executing", "message": "running install hook"},
                       "machine": "4"}),
                started(),
                MachineState::Running,
                None,
            ),
            (
                json!({"workload-status": {"current": "waiting", "message": "waiting for machine"},
                       "juju-status": {"current": "allocating"}, "machine": "4"}),
                json!({"juju-status": {"current": "pending"}, "machine-status": {"current": "allocating"}}),
                MachineState::Pending,
                Some("unit agent allocating"),
            ),
            (
                json!({"workload-status": {"current": "waiting"},
                       "juju-status": {"current": "allocating"}, "machine": "4"}),
                json!({"juju-status": {"current": "pending"},
                       "machine-status": {"current": "provisioning error",
                                          "message": "no matching instance types"}}),
                MachineState::Failed,
                Some("machine provisioning error: no matching instance types"),
            ),
            (
                json!({"workload-status": {"current": "error", "message": "hook failed: \"install\""},
                       "juju-status": {"current": "idle"}, "machine": "4"}),
                started(),
                MachineState::Failed,
                Some("workload error: hook failed: \"install\""),
            ),
            (
                json!({"workload-status": {"current": "active"},
                       "juju-status": {"current": "lost", "message": "agent is not communicating"},
                       "machine": "4"}),
                started(),
                MachineState::Failed,
                Some("unit agent lost: agent is not communicating"),
            ),
            (
                json!({"workload-status": {"current": "active"},
                       "juju-status": {"current": "executing", "life": "dying"}, "machine": "4"}),
                started(),
                MachineState::Stopping,
                None,
            ),
            (
                json!({"status-error": "cannot get unit status"}),
                started(),
                MachineState::Pending,
                Some("cannot get unit status"),
            ),
        ];
        for (unit, machine, state, reason) in table {
            let v = view(unit.clone(), machine);
            assert_eq!(v.state, state, "{unit}");
            if reason.is_some() {
                assert_eq!(v.reason.as_deref(), reason, "{unit}");
            }
        }
    }

    #[test]
    fn relations_read_in_both_shapes() {
        let st = doc(json!({}), started());
        let app = &st.applications["beta"];
        assert_eq!(app.related_on("kube-control"), ["kubernetes-control-plane"]);
        assert_eq!(app.related_on("certificates"), ["easyrsa"]);
        assert!(app.related_on("cni").is_empty());
    }

    #[test]
    fn containers_and_zones() {
        let st: Status = serde_json::from_value(json!({
            "machines": {"0": {"juju-status": {"current": "started"},
                               "containers": {"0/lxd/3": {"hostname": "juju-1-0-lxd-3"}}},
                         "bad": {"status-error": "boom"}},
            "applications": {}
        }))
        .unwrap();
        assert_eq!(
            st.machine("0/lxd/3").unwrap().hostname.as_deref(),
            Some("juju-1-0-lxd-3")
        );
        assert!(st.machine("0/lxd/9").is_none());
        assert_eq!(
            availability_zone(&serde_json::from_value(started()).unwrap()).as_deref(),
            Some("us-east-1a")
        );
        assert_eq!(unit_number("beta/12"), Some(12));
        assert_eq!(unit_number("beta"), None);
    }
}
