//! Strategic merge patch for the fields clients use (k8s.io/apimachinery
//! `strategicpatch`): maps merge, `null` deletes, lists of named things (containers,
//! conditions, env, volumes, …) merge by their key, `finalizers` merges as a set, other
//! lists are replaced. Directives: `$patch: replace|delete|merge`, `$retainKeys`,
//! `$deleteFromPrimitiveList/…`, `$setElementOrder/…` (accepted, order not enforced).
//!
//! The patch metadata (which list merges by which key) comes from the Go types' struct
//! tags; here it is keyed by field name alone, which is unambiguous for the resources
//! this server stores.

use serde_json::{Map, Value};

/// The merge key of a list field, or `None` when the list is replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets.
fn primitive_merge(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Applies a strategic merge patch to `orig`.
///
/// # Errors
/// A message when the patch is not a JSON object.
pub(crate) fn strategic_merge(orig: &mut Value, patch: &Value) -> Result<(), String> {
    let Some(p) = patch.as_object() else {
        return Err("strategic merge patch must be a JSON object".into());
    };
    if !orig.is_object() {
        *orig = Value::Object(Map::new());
    }
    merge_map(orig.as_object_mut().expect("object"), p);
    Ok(())
}

fn directive(p: &Map<String, Value>) -> Option<&str> {
    p.get("$patch").and_then(Value::as_str)
}

fn merge_map(orig: &mut Map<String, Value>, patch: &Map<String, Value>) {
    if directive(patch) == Some("replace") {
        *orig = clean_map(patch);
        return;
    }
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (orig.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match pv {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                if directive(pm) == Some("delete") {
                    orig.remove(k);
                    continue;
                }
                match orig.get_mut(k) {
                    Some(Value::Object(om)) if directive(pm) != Some("replace") => {
                        merge_map(om, pm)
                    }
                    _ => {
                        orig.insert(k.clone(), Value::Object(clean_map(pm)));
                    }
                }
            }
            Value::Array(items) => {
                let existing = orig.get_mut(k);
                match (merge_key(k), existing) {
                    (Some(key), Some(Value::Array(ol))) => merge_list(ol, items, key),
                    (None, Some(Value::Array(ol))) if primitive_merge(k) => {
                        for x in items {
                            if !ol.contains(x) {
                                ol.push(x.clone());
                            }
                        }
                    }
                    _ => {
                        let list = items
                            .iter()
                            .filter(|x| x.as_object().is_none_or(|m| directive(m).is_none()))
                            .map(clean)
                            .collect();
                        orig.insert(k.clone(), Value::Array(list));
                    }
                }
            }
            other => {
                orig.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn merge_list(orig: &mut Vec<Value>, patch: &[Value], key: &str) {
    if patch
        .iter()
        .any(|x| x.as_object().and_then(directive) == Some("replace"))
    {
        *orig = patch
            .iter()
            .filter(|x| x.as_object().and_then(directive) != Some("replace"))
            .map(clean)
            .collect();
        return;
    }
    for item in patch {
        let Some(pm) = item.as_object() else {
            orig.push(item.clone());
            continue;
        };
        let kv = pm.get(key);
        if directive(pm) == Some("delete") {
            orig.retain(|o| o.get(key) != kv);
            continue;
        }
        match kv.and_then(|kv| {
            orig.iter_mut()
                .find(|o| o.get(key) == Some(kv))
                .and_then(Value::as_object_mut)
        }) {
            Some(om) => merge_map(om, pm),
            None => orig.push(Value::Object(clean_map(pm))),
        }
    }
}

fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(mut o: Value, p: Value) -> Value {
        strategic_merge(&mut o, &p).unwrap();
        o
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let o = json!({"spec": {"unschedulable": true, "podCIDR": "x"}});
        assert_eq!(
            smp(o.clone(), json!({"spec": {"unschedulable": null}})),
            json!({"spec": {"podCIDR": "x"}})
        );
        assert_eq!(
            smp(
                o,
                json!({"spec": {"unschedulable": false}, "metadata": {"labels": {"a": "b"}}})
            ),
            json!({"spec": {"unschedulable": false, "podCIDR": "x"}, "metadata": {"labels": {"a": "b"}}})
        );
    }

    #[test]
    fn named_lists_merge_by_key() {
        let o = json!({"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}],
                       "tolerations": [{"key": "k"}]});
        let r = smp(
            o,
            json!({"containers": [{"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}],
                   "tolerations": [{"key": "j"}]}),
        );
        assert_eq!(
            r,
            json!({"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"},
                                  {"name": "c", "image": "z"}],
                   "tolerations": [{"key": "j"}]})
        );
        let r = smp(
            r,
            json!({"containers": [{"name": "a", "$patch": "delete"}]}),
        );
        assert_eq!(r["containers"].as_array().unwrap().len(), 2);
        let r = smp(
            r,
            json!({"containers": [{"$patch": "replace"}, {"name": "only"}]}),
        );
        assert_eq!(r["containers"], json!([{"name": "only"}]));
    }

    #[test]
    fn directives() {
        let o = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}}});
        let r = smp(
            o,
            json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"],
                   "labels": {"$patch": "replace", "z": "3"}}}),
        );
        assert_eq!(
            r,
            json!({"metadata": {"finalizers": ["b"], "labels": {"z": "3"}}})
        );
        let r = smp(r, json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert_eq!(r, json!({"metadata": {"finalizers": ["b"]}}));
        assert!(strategic_merge(&mut json!({}), &json!([1])).is_err());
    }
}
