//! The RBAC manifest kbg prints (`kbg rbac`, from `templates/rbac.yaml.j2`) against what
//! kbg really does: a whole blue/green through the real binary (deploy-pool, migrate
//! --dry-run, migrate, rollback, migrate again, status, teardown) with the simulated
//! cluster's audit log, then
//! - every request kbg made (verb, API group, resource, subresource, namespace, name) is
//!   allowed by the manifest's rules, evaluated as Kubernetes' RBAC authorizer does
//!   (ClusterRole everywhere, Role in its namespace, `resourceNames`, `*`), or is a
//!   non-resource URL every authenticated user may read (the default `system:discovery`
//!   and `system:public-info-viewer` ClusterRoles);
//! - every permission the manifest grants was used, except the deliberate extras listed
//!   here with their reason.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Harness;
use kbg_sim::AuditEntry;
use serde_json::Value;

const SCENARIO: &str = r#"
version: v1.33.1
namespaces: [kbg-system]
pools:
  - name: alpha
    count: 2
    version: v1.32.4
workloads:
  - kind: Deployment
    name: web
    replicas: 4
    startup_seconds: 4
    pdb: {max_unavailable: 1}
  - kind: StatefulSet
    name: db
    replicas: 2
    pdb: {min_available: 1}
  - kind: DaemonSet
    name: agent
manifests:
  # A ReplicaSet no Deployment owns: kbg waits on it itself after moving its pod.
  - apiVersion: apps/v1
    kind: ReplicaSet
    metadata: {name: solo, namespace: default}
    spec:
      replicas: 1
      selector: {matchLabels: {app: solo}}
      template:
        metadata: {labels: {app: solo}}
        spec:
          containers: [{name: solo, image: registry.k8s.io/pause:3.10}]
"#;

const KBG_YAML: &str = r#"
cluster:
  state_namespace: kbg-system
pools:
  alpha:
    provider: sim
    version: v1.32.4
    count: 2
  beta:
    provider: sim
    version: v1.33.1
    count: 2
    sim: {boot_seconds: 4}
"#;

/// Permissions the manifest grants that a run may not use, and why they stay.
const DELIBERATE_EXTRAS: &[(&str, &str, &str, &str)] = &[
    // (group, resource, verb, reason)
    (
        "apps",
        "deployments",
        "watch",
        "waiting for moved workloads lists first and watches only when they are not Ready yet: timing decides",
    ),
    ("apps", "statefulsets", "watch", "as for deployments"),
    ("apps", "replicasets", "watch", "as for deployments"),
    (
        "events.k8s.io",
        "events",
        "patch",
        "kube-runtime's Recorder patches an Event it published when the same one repeats (an Event series)",
    ),
];
/// One rule of a Role or ClusterRole, where it applies.
#[derive(Debug)]
struct Rule {
    /// `None`: everywhere (ClusterRole through a ClusterRoleBinding); else that namespace.
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules bound to the ServiceAccount `sa` in `ns`, from the manifest's documents.
fn bound_rules(docs: &[Value], sa: &str, ns: &str) -> Vec<Rule> {
    let subject = |b: &Value| {
        b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns)
    };
    let mut rules = Vec::new();
    for binding in docs.iter().filter(|d| {
        matches!(
            d["kind"].as_str(),
            Some("ClusterRoleBinding" | "RoleBinding")
        )
    }) {
        if !subject(binding) {
            continue;
        }
        let where_ = binding["metadata"]["namespace"].as_str().map(String::from);
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == binding["roleRef"]["kind"]
                    && d["metadata"]["name"] == binding["roleRef"]["name"]
                    && (d["kind"] == "ClusterRole"
                        || d["metadata"]["namespace"] == binding["metadata"]["namespace"])
            })
            .unwrap_or_else(|| panic!("{binding} names a role the manifest does not have"));
        for r in role["rules"].as_array().into_iter().flatten() {
            rules.push(Rule {
                namespace: where_.clone(),
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                names: strings(&r["resourceNames"]),
            });
        }
    }
    rules
}

fn has(list: &[String], x: &str) -> bool {
    list.iter().any(|i| i == x || i == "*")
}

/// The rule that allows `e`, as the RBAC authorizer decides.
fn allowing<'r>(rules: &'r [Rule], e: &AuditEntry) -> Option<&'r Rule> {
    let resource = if e.subresource.is_empty() {
        e.resource.clone()
    } else {
        format!("{}/{}", e.resource, e.subresource)
    };
    rules.iter().find(|r| {
        r.namespace.as_deref().is_none_or(|ns| ns == e.namespace)
            && has(&r.groups, &e.api_group)
            && has(&r.resources, &resource)
            && has(&r.verbs, &e.verb)
            && (r.names.is_empty() || r.names.contains(&e.name))
    })
}

/// Non-resource URLs the default ClusterRoles `system:discovery` and
/// `system:public-info-viewer` let every authenticated user GET.
fn public_url(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    [
        "/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi",
    ]
    .iter()
    .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kbg_makes_is_allowed_by_its_rbac_manifest_and_nothing_more_is_granted() {
    let h = Harness::start(SCENARIO, KBG_YAML).await;

    // A name Kubernetes would refuse: exit 2, one line naming the flag.
    let bad = h.kbg(&["rbac", "--namespace", "Ops"]).await;
    bad.expect_code(2);
    assert_eq!(bad.error_lines().len(), 1, "{}", bad.stderr);
    assert!(
        bad.error_lines()[0].starts_with("error: --namespace: "),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.is_empty());

    let rbac = [
        "rbac",
        "--namespace",
        "ops",
        "--service-account",
        "kbg-runner",
    ];
    let run = h.kbg(&[&rbac[..], &["-o", "json"]].concat()).await;
    run.expect_code(0);
    let list = run.json();
    assert_eq!(list["kind"], "List");
    let docs = list["items"].as_array().unwrap().clone();
    // The YAML form is the same manifest.
    let yaml = h.kbg(&rbac).await;
    yaml.expect_code(0);
    let from_yaml: Vec<Value> = serde_saphyr::from_multiple(&yaml.stdout).unwrap();
    assert_eq!(from_yaml, docs);
    let rules = bound_rules(&docs, "kbg-runner", "ops");
    assert!(
        rules
            .iter()
            .any(|r| r.namespace.as_deref() == Some("kbg-system")),
        "the state Role is in the state namespace: {rules:?}"
    );

    for args in [
        &["deploy-pool", "beta"][..],
        &["migrate", "alpha", "beta", "--dry-run"],
        &["migrate", "alpha", "beta"],
        &["rollback", "alpha", "beta"],
        &["migrate", "alpha", "beta"],
        &["status", "-o", "json"],
        &["teardown", "alpha"],
    ] {
        h.kbg(args).await.expect_code(0);
    }
    assert_eq!(h.sim.stats().pdb_violations, 0);

    let requests = h.kbg_requests();
    let mut denied = Vec::new();
    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for e in &requests {
        let what = if e.resource.is_empty() {
            format!("{} {}", e.verb, e.path)
        } else if e.subresource.is_empty() {
            format!("{} {}/{}", e.verb, e.api_group, e.resource)
        } else {
            format!(
                "{} {}/{}/{}",
                e.verb, e.api_group, e.resource, e.subresource
            )
        };
        *by_kind.entry(what).or_default() += 1;
        if e.resource.is_empty() {
            if !(e.verb == "get" && public_url(&e.path)) {
                denied.push(format!("{} {}", e.verb, e.path));
            }
            continue;
        }
        let resource = if e.subresource.is_empty() {
            e.resource.clone()
        } else {
            format!("{}/{}", e.resource, e.subresource)
        };
        if allowing(&rules, e).is_none() {
            denied.push(format!(
                "{} {}/{} in {:?} ({})",
                e.verb, e.api_group, resource, e.namespace, e.path
            ));
        }
        used.insert((e.api_group.clone(), resource, e.verb.clone()));
    }
    assert!(
        denied.is_empty(),
        "kbg made requests its RBAC manifest does not allow:\n{}",
        denied.join("\n")
    );

    let mut unused = Vec::new();
    for r in &rules {
        for g in &r.groups {
            for res in &r.resources {
                for v in &r.verbs {
                    let key = (g.clone(), res.clone(), v.clone());
                    let extra = DELIBERATE_EXTRAS.iter().any(|(eg, er, ev, _)| {
                        (*eg, *er, *ev) == (g.as_str(), res.as_str(), v.as_str())
                    });
                    if !used.contains(&key) && !extra {
                        unused.push(format!("{v} {g}/{res}"));
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "the manifest grants what kbg never used in a whole blue/green (use it, drop it, or list it in DELIBERATE_EXTRAS with why):\n{}",
        unused.join("\n")
    );
    println!(
        "figures: {} kbg requests, {} kinds, all allowed; {} permissions used; extras {:?}\n{by_kind:#?}",
        requests.len(),
        by_kind.len(),
        used.len(),
        DELIBERATE_EXTRAS
            .iter()
            .map(|e| (e.0, e.1, e.2))
            .collect::<Vec<_>>()
    );
}
