//! Events have two faces: `v1` Events and `events.k8s.io/v1` Events are the same objects
//! in the API server, stored once (as v1 here) and converted on the way in and out, as
//! kube-apiserver's `pkg/apis/events/v1` conversion does. So an Event a client records
//! through events.k8s.io (kube-rs's `Recorder`) shows in `kubectl get events` and
//! `kubectl describe node`, and the other way round.

use serde_json::{Map, Value, json};

/// (events.k8s.io/v1 field, v1 field) pairs that differ only in name.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(v: &Value, from_new: bool, api_version: &str) -> Value {
    let Some(m) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, val) in m {
        let renamed = RENAMED.iter().find_map(|(new, old)| {
            if from_new {
                (k == new).then_some(*old)
            } else {
                (k == old).then_some(*new)
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), val.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event as the v1 Event it is stored as.
pub(crate) fn to_core(v: &Value) -> Value {
    rename(v, true, "v1")
}

/// A stored v1 Event as events.k8s.io/v1 shows it.
pub(crate) fn to_events_v1(v: &Value) -> Value {
    rename(v, false, "events.k8s.io/v1")
}

/// An events.k8s.io/v1 field selector field, as the stored v1 field.
pub(crate) fn core_field(field: &str) -> String {
    for (new, old) in RENAMED {
        if field == new {
            return old.to_string();
        }
        if let Some(rest) = field.strip_prefix(new).and_then(|r| r.strip_prefix('.')) {
            return format!("{old}.{rest}");
        }
    }
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Node", "name": "n1"}, "note": "cordoned", "reason": "Cordon",
            "reportingController": "kbg", "reportingInstance": "kbg-1", "type": "Normal",
            "eventTime": "2024-01-01T00:00:00.000000Z", "action": "Cordon"});
        let core = to_core(&new);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "n1");
        assert_eq!(core["message"], "cordoned");
        assert_eq!(core["reportingComponent"], "kbg");
        assert_eq!(to_events_v1(&core), new);
        assert_eq!(core_field("regarding.name"), "involvedObject.name");
        assert_eq!(core_field("reportingController"), "reportingComponent");
        assert_eq!(core_field("reason"), "reason");
    }
}
