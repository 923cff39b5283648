//! The resources the simulated API server serves, and their discovery documents.

use serde_json::{Value, json};

/// A resource the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Res {
    /// v1 namespaces
    Namespace,
    /// v1 nodes
    Node,
    /// v1 pods
    Pod,
    /// v1 configmaps
    ConfigMap,
    /// v1 events
    Event,
    /// apps/v1 deployments
    Deployment,
    /// apps/v1 replicasets
    ReplicaSet,
    /// apps/v1 daemonsets
    DaemonSet,
    /// apps/v1 statefulsets
    StatefulSet,
    /// policy/v1 poddisruptionbudgets
    Pdb,
    /// coordination.k8s.io/v1 leases
    Lease,
    /// events.k8s.io/v1 events (stored apart from v1 events)
    EventV1,
}

/// How a resource is served.
#[derive(Debug)]
pub(crate) struct ResDef {
    /// The resource.
    pub res: Res,
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced?
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource (the main resource ignores status changes).
    pub has_status: bool,
    /// Has a `/scale` subresource.
    pub has_scale: bool,
    /// Bumps `metadata.generation` when the spec changes.
    pub generation: bool,
    /// In the `all` category.
    pub all: bool,
}

/// Every resource, indexed by `Res as usize`.
pub(crate) const ALL: [ResDef; 12] = [
    def(
        Res::Namespace,
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
        false,
        false,
    ),
    def(
        Res::Node,
        "",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        true,
        false,
        false,
        false,
    ),
    def(
        Res::Pod,
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        true,
        false,
        false,
        true,
    ),
    def(
        Res::ConfigMap,
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
        false,
        false,
    ),
    def(
        Res::Event,
        "",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
        false,
        false,
        false,
    ),
    def(
        Res::Deployment,
        "apps/v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
        true,
        true,
    ),
    def(
        Res::ReplicaSet,
        "apps/v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        true,
        true,
        true,
        true,
    ),
    def(
        Res::DaemonSet,
        "apps/v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        true,
        false,
        true,
        true,
    ),
    def(
        Res::StatefulSet,
        "apps/v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        true,
        true,
        true,
        true,
    ),
    def(
        Res::Pdb,
        "policy/v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        false,
        true,
        false,
    ),
    def(
        Res::Lease,
        "coordination.k8s.io/v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        false,
        false,
        false,
        false,
    ),
    def(
        Res::EventV1,
        "events.k8s.io/v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
        false,
        false,
        false,
    ),
];

#[allow(clippy::too_many_arguments)]
const fn def(
    res: Res,
    gv: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
    has_scale: bool,
    generation: bool,
    all: bool,
) -> ResDef {
    let (group, version) = match gv.as_bytes() {
        b"" => ("", "v1"),
        b"apps/v1" => ("apps", "v1"),
        b"policy/v1" => ("policy", "v1"),
        b"coordination.k8s.io/v1" => ("coordination.k8s.io", "v1"),
        _ => ("events.k8s.io", "v1"),
    };
    ResDef {
        res,
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        has_status,
        has_scale,
        generation,
        all,
    }
}

impl Res {
    /// The definition.
    pub(crate) fn def(self) -> &'static ResDef {
        &ALL[self as usize]
    }

    /// Where objects of this resource are stored: events.k8s.io/v1 Events are v1 Events.
    pub(crate) fn storage(self) -> Res {
        match self {
            Res::EventV1 => Res::Event,
            r => r,
        }
    }

    /// Every resource.
    pub(crate) fn all() -> impl Iterator<Item = Res> {
        ALL.iter().map(|d| d.res)
    }
}

impl ResDef {
    /// `apiVersion` of objects (`v1`, `apps/v1`).
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Kind of lists (`PodList`).
    pub(crate) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Finds a resource by group, version and plural.
    pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResDef> {
        ALL.iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The group-versions served, in discovery order.
pub(crate) const GROUPS: [(&str, &str); 4] = [
    ("apps", "v1"),
    ("policy", "v1"),
    ("coordination.k8s.io", "v1"),
    ("events.k8s.io", "v1"),
];

/// `GET /api`.
pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `GET /apis`.
pub(crate) fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|(g, v)| api_group(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub(crate) fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`: the APIResourceList, with
/// subresources (`pods/eviction` as kubectl drain requires: kind Eviction, group policy).
pub(crate) fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for d in ALL
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": VERBS,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if d.all {
            r["categories"] = json!(["all"]);
        }
        resources.push(r);
        if d.has_status {
            resources.push(json!({
                "name": format!("{}/status", d.plural), "singularName": "",
                "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if d.has_scale {
            resources.push(json!({
                "name": format!("{}/scale", d.plural), "singularName": "",
                "namespaced": d.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
        if d.res == Res::Pod {
            resources.push(json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"],
            }));
            resources.push(json!({
                "name": "pods/binding", "singularName": "", "namespaced": true,
                "kind": "Binding", "verbs": ["create"],
            }));
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"],
            }));
        }
        if d.res == Res::Namespace {
            resources.push(json!({
                "name": "namespaces/finalize", "singularName": "", "namespaced": false,
                "kind": "Namespace", "verbs": ["update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_res() {
        for (i, d) in ALL.iter().enumerate() {
            assert_eq!(d.res as usize, i, "{}", d.plural);
        }
        assert_eq!(Res::Pdb.def().api_version(), "policy/v1");
        assert_eq!(Res::Pod.def().list_kind(), "PodList");
    }

    #[test]
    fn core_discovery_advertises_eviction() {
        let l = api_resource_list("", "v1").unwrap();
        let ev = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(ev["kind"], "Eviction");
        assert_eq!(ev["group"], "policy");
        for (g, v) in GROUPS {
            assert!(api_resource_list(g, v).is_some());
        }
        assert!(api_resource_list("batch", "v1").is_none());
    }
}
