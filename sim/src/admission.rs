//! What the API server does to an object before storing it: defaulting (the values the
//! real API server and its admission plugins fill in: pod tolerations of
//! `DefaultTolerationSeconds`, restart policy, grace period, deployment strategy, …) and
//! validation (a subset of the real rules: names, required fields, selectors that match
//! their template, PDB exclusivity, immutable fields), with `Invalid` statuses shaped like
//! the real ones.

use serde_json::{Value, json};

use crate::object::{get, get_str, labels_of, obj_mut, set};
use crate::quantity;
use crate::resources::Res;
use crate::selector::{Selector, validate_key, validate_value};
use crate::status::{ApiError, FieldError};

/// `DefaultTolerationSeconds` admission: 300 s for not-ready and unreachable.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Fills in what the API server defaults on create (and, for templates, on update).
pub(crate) fn default_object(res: Res, v: &mut Value) {
    match res {
        Res::Pod => {
            default_pod_spec(obj_mut(v, &["spec"]));
            add_default_tolerations(v);
            let qos = qos_class(v);
            let status = obj_mut(v, &["status"]);
            status.entry("phase").or_insert_with(|| json!("Pending"));
            status.insert("qosClass".into(), json!(qos));
        }
        Res::Namespace => {
            let name = get_str(v, &["metadata", "name"]).unwrap_or("").to_string();
            obj_mut(v, &["metadata", "labels"])
                .insert("kubernetes.io/metadata.name".into(), json!(name));
            obj_mut(v, &["spec"])
                .entry("finalizers")
                .or_insert_with(|| json!(["kubernetes"]));
            obj_mut(v, &["status"])
                .entry("phase")
                .or_insert_with(|| json!("Active"));
        }
        Res::Deployment => {
            let spec = obj_mut(v, &["spec"]);
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            default_rolling_update(
                spec,
                "strategy",
                &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))],
            );
            default_template(v);
        }
        Res::ReplicaSet => {
            obj_mut(v, &["spec"]).entry("replicas").or_insert(json!(1));
            default_template(v);
        }
        Res::DaemonSet => {
            let spec = obj_mut(v, &["spec"]);
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            default_rolling_update(
                spec,
                "updateStrategy",
                &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
            );
            default_template(v);
        }
        Res::StatefulSet => {
            let spec = obj_mut(v, &["spec"]);
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("podManagementPolicy")
                .or_insert(json!("OrderedReady"));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            default_rolling_update(spec, "updateStrategy", &[("partition", json!(0))]);
            spec.entry("persistentVolumeClaimRetentionPolicy")
                .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
            default_template(v);
        }
        _ => {}
    }
}

/// `spec.<field>`: type `RollingUpdate` unless set, and the rollingUpdate defaults.
fn default_rolling_update(
    spec: &mut serde_json::Map<String, Value>,
    field: &str,
    defaults: &[(&str, Value)],
) {
    let Some(st) = spec
        .entry(field)
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    let rolling = st.entry("type").or_insert(json!("RollingUpdate")) == "RollingUpdate";
    if rolling
        && let Some(ru) = st
            .entry("rollingUpdate")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    {
        for (k, val) in defaults {
            ru.entry(*k).or_insert(val.clone());
        }
    }
}

fn default_template(v: &mut Value) {
    if let Some(spec) = v
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.as_object_mut())
    {
        let pod_spec = spec.entry("spec").or_insert_with(|| json!({}));
        if let Some(ps) = pod_spec.as_object_mut() {
            default_pod_spec(ps);
        }
        if let Some(m) = spec.get_mut("metadata").and_then(Value::as_object_mut) {
            m.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
}

fn default_pod_spec(spec: &mut serde_json::Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert_with(|| json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                    i.ends_with(":latest") || !i.rsplit('/').next().unwrap_or("").contains(':')
                });
                c.entry("imagePullPolicy").or_insert(json!(if latest {
                    "Always"
                } else {
                    "IfNotPresent"
                }));
                c.entry("resources").or_insert_with(|| json!({}));
            }
        }
    }
}

fn add_default_tolerations(v: &mut Value) {
    let spec = obj_mut(v, &["spec"]);
    let tol = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(tol) = tol.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tol.iter().any(|t| {
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || (k.is_empty() && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            tol.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

/// The pod's QoS class (`BestEffort`, `Burstable`, `Guaranteed`).
fn qos_class(v: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in get(v, &["spec", "containers"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let req = get(c, &["resources", "requests"]).and_then(Value::as_object);
        let lim = get(c, &["resources", "limits"]).and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r)).and_then(quantity::value_milli);
            let q = req
                .and_then(|q| q.get(r))
                .and_then(quantity::value_milli)
                .or(l);
            if l.is_none() || l != q {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// DNS-1123 label: a subdomain without dots, at most 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// Validates an object about to be stored.
///
/// # Errors
/// 422 Invalid with the field errors.
pub(crate) fn validate(res: Res, v: &Value) -> Result<(), ApiError> {
    let d = res.def();
    let name = get_str(v, &["metadata", "name"]).unwrap_or("");
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let ok = match res {
            Res::Namespace => is_dns_label(name),
            _ => is_dns_subdomain(name),
        };
        if !ok {
            let what = if res == Res::Namespace {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            } else {
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            };
            errs.push(FieldError::invalid("metadata.name", name, what));
        }
    }
    for (k, val) in labels_of(v) {
        if let Err(e) = validate_key(&k) {
            errs.push(FieldError::invalid("metadata.labels", &k, &e));
        }
        if let Err(e) = validate_value(val.as_str().unwrap_or("")) {
            errs.push(FieldError::invalid(
                "metadata.labels",
                val.as_str().unwrap_or(""),
                &e,
            ));
        }
    }
    match res {
        Res::Pod => validate_pod_spec(v.get("spec"), "spec", &mut errs),
        Res::Deployment | Res::ReplicaSet | Res::DaemonSet | Res::StatefulSet => {
            validate_workload(v, &mut errs)
        }
        Res::Pdb => {
            let spec = v.get("spec");
            let min = spec.and_then(|s| s.get("minAvailable"));
            let max = spec.and_then(|s| s.get("maxUnavailable"));
            if min.is_some_and(|m| !m.is_null()) && max.is_some_and(|m| !m.is_null()) {
                errs.push(FieldError::invalid(
                    "spec",
                    &spec.map(Value::to_string).unwrap_or_default(),
                    "minAvailable and maxUnavailable cannot be both set",
                ));
            }
            for (f, val) in [("minAvailable", min), ("maxUnavailable", max)] {
                if let Some(val) = val
                    && !val.is_null()
                    && int_or_percent(val).is_none()
                {
                    errs.push(FieldError::invalid(
                        &format!("spec.{f}"),
                        &val.to_string(),
                        "must be an integer or percentage (e.g '5%')",
                    ));
                }
            }
            if let Some(sel) = spec.and_then(|s| s.get("selector"))
                && let Err(e) = Selector::from_label_selector(sel)
            {
                errs.push(FieldError::invalid("spec.selector", &sel.to_string(), &e));
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(d.kind, d.group, name, &errs))
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required(&format!("{path}.containers"), "")),
        Some(cs) if cs.is_empty() => {
            errs.push(FieldError::required(&format!("{path}.containers"), ""))
        }
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    errs.push(FieldError::required(
                        &format!("{path}.containers[{i}].name"),
                        "",
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    errs.push(FieldError::required(
                        &format!("{path}.containers[{i}].image"),
                        "",
                    ));
                }
            }
        }
    }
}

fn validate_workload(v: &Value, errs: &mut Vec<FieldError>) {
    let sel = get(v, &["spec", "selector"]);
    let tmpl_labels = get(v, &["spec", "template", "metadata", "labels"])
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match sel.map(Selector::from_label_selector) {
        None | Some(Ok(None)) => errs.push(FieldError::required("spec.selector", "")),
        Some(Err(e)) => errs.push(FieldError::invalid(
            "spec.selector",
            &sel.map(Value::to_string).unwrap_or_default(),
            &e,
        )),
        Some(Ok(Some(s))) => {
            if s.is_everything() {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    &sel.map(Value::to_string).unwrap_or_default(),
                    "empty selector is invalid for deployment",
                ));
            } else if !s.matches(&tmpl_labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &Value::Object(tmpl_labels.clone()).to_string(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    validate_pod_spec(
        get(v, &["spec", "template", "spec"]),
        "spec.template.spec",
        errs,
    );
}

/// Checks the fields an update may not change.
///
/// # Errors
/// 422 Invalid naming the field.
pub(crate) fn validate_update(res: Res, old: &Value, new: &Value) -> Result<(), ApiError> {
    let d = res.def();
    let name = get_str(old, &["metadata", "name"]).unwrap_or("");
    let mut errs = Vec::new();
    match res {
        Res::Deployment | Res::DaemonSet | Res::StatefulSet
            if get(old, &["spec", "selector"]) != get(new, &["spec", "selector"]) =>
        {
            errs.push(FieldError::invalid(
                "spec.selector",
                &get(new, &["spec", "selector"])
                    .map(Value::to_string)
                    .unwrap_or_default(),
                "field is immutable",
            ));
        }
        Res::Pod => {
            // Only a few pod spec fields may change (core/validation ValidatePodUpdate).
            let strip = |v: &Value| -> Value {
                let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = s.as_object_mut() {
                    for f in [
                        "activeDeadlineSeconds",
                        "terminationGracePeriodSeconds",
                        "tolerations",
                        "schedulingGates",
                    ] {
                        m.remove(f);
                    }
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                                c.remove("image");
                            }
                        }
                    }
                }
                s
            };
            if strip(old) != strip(new) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(d.kind, d.group, name, &errs))
    }
}

/// An IntOrString: `Ok(Int(n))` or `Ok(Percent(p))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntOrPercent {
    /// An absolute number.
    Int(i64),
    /// A percentage.
    Percent(i64),
}

/// Reads an IntOrString field.
pub(crate) fn int_or_percent(v: &Value) -> Option<IntOrPercent> {
    match v {
        Value::Number(n) => n.as_i64().map(IntOrPercent::Int),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.parse().ok().map(IntOrPercent::Percent),
            None => s.parse().ok().map(IntOrPercent::Int),
        },
        _ => None,
    }
}

/// `intstr.GetScaledValueFromIntOrPercent`: percentages of `total`, rounded up or down.
pub(crate) fn scaled(v: IntOrPercent, total: i64, round_up: bool) -> i64 {
    match v {
        IntOrPercent::Int(n) => n,
        IntOrPercent::Percent(p) => {
            let x = p * total;
            if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            }
        }
    }
}

/// Sets the fields every new object gets.
pub(crate) fn stamp_new(res: Res, v: &mut Value, now: &str, uid: &str) {
    let m = obj_mut(v, &["metadata"]);
    m.insert("uid".into(), json!(uid));
    m.insert("creationTimestamp".into(), json!(now));
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("managedFields");
    if res.def().generation {
        m.insert("generation".into(), json!(1));
    }
    if res == Res::Pdb {
        set(
            v,
            &["status"],
            json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
        );
    } else if matches!(
        res,
        Res::Deployment | Res::ReplicaSet | Res::DaemonSet | Res::StatefulSet
    ) {
        let status = match res {
            Res::DaemonSet => {
                json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
            }
            Res::StatefulSet => json!({"replicas": 0, "availableReplicas": 0}),
            _ => json!({}),
        };
        set(v, &["status"], status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_the_api_servers_defaults() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}]}});
        default_object(Res::Pod, &mut p);
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "Burstable");
        let tol = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tol.len(), 2);
        assert_eq!(tol[1]["tolerationSeconds"], 300);
    }

    #[test]
    fn validation_matches_real_messages() {
        let e = validate(Res::Pod, &json!({"metadata": {"name": "p"}, "spec": {}})).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.body["message"],
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        let e = validate(
            Res::Deployment,
            &json!({"metadata": {"name": "d"}, "spec": {
                "selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        )
        .unwrap_err();
        assert!(
            e.body["message"]
                .as_str()
                .unwrap()
                .contains("`selector` does not match template `labels`")
        );
        let e = validate(
            Res::Pdb,
            &json!({"metadata": {"name": "b"}, "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
        )
        .unwrap_err();
        assert!(
            e.body["message"]
                .as_str()
                .unwrap()
                .contains("cannot be both set")
        );
        assert!(validate(Res::Namespace, &json!({"metadata": {"name": "Bad_Name"}})).is_err());
    }

    #[test]
    fn int_or_percent_scaling() {
        assert_eq!(scaled(int_or_percent(&json!("25%")).unwrap(), 3, true), 1);
        assert_eq!(scaled(int_or_percent(&json!("25%")).unwrap(), 3, false), 0);
        assert_eq!(scaled(int_or_percent(&json!(2)).unwrap(), 3, true), 2);
        assert_eq!(int_or_percent(&json!("x%")), None);
    }
}
