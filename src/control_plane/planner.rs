//! The upgrade plan, as a pure function of the [`Facts`], the target and the versions
//! known to be available.
//!
//! Like `kubeadm upgrade plan`, the plan shows each control-plane component on each
//! master (current version from its static pod, target), the kubelets of each pool, and
//! whether the skew policy holds at the target. Unlike it, kbg also lays out the steps:
//!
//! 1. The control plane moves **one minor at a time** ([`skew::control_plane_hops`]):
//!    v1.32.4 → v1.34.1 is two hops, v1.33 (the newest v1.33 patch among the available
//!    versions, else "v1.33") then v1.34.1.
//! 2. Before each hop, every worker pool whose oldest kubelet would fall out of the skew
//!    policy against the hop's API servers is replaced blue/green (`kbg deploy-pool`,
//!    `migrate`, `teardown`), to the control plane's version before the hop: a kubelet
//!    may not be newer than the oldest API server, so that is the newest it can be.
//! 3. Within a hop, masters one by one (`kubeadm upgrade apply` on the first,
//!    `kubeadm upgrade node` on the others), then the masters' kubelets — only once every
//!    API server runs the hop's version, since a kubelet may not be newer than the
//!    oldest API server.
//! 4. After the last hop, pools older than the target may be replaced to run it
//!    (optional: they stay within the policy).

// A refusal carries both versions for the message; plans are made once per command, so
// the size of the error does not matter (as in `skew`).
#![allow(clippy::result_large_err)]

use serde::Serialize;

use super::facts::{Facts, MasterFacts, VERSIONED_COMPONENTS};
use crate::skew::{self, SkewViolation};
use crate::version::KubeVersion;

/// What the next upgrade could be when no target is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// `patch` (the newest patch of the current minor) or `minor` (the newest patch of
    /// the next minor).
    pub kind: &'static str,
    /// The version.
    pub version: KubeVersion,
}

/// One control-plane component on one master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentRow {
    /// `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `etcd`, or
    /// `API server (/version)`.
    pub component: String,
    /// The master, or `-` for `/version`.
    pub node: String,
    /// What it runs (its image tag).
    pub current: String,
    /// What it will run, when kbg moves it.
    pub target: Option<String>,
    /// Whether going there holds the skew policy in one step; `None` when there is no
    /// target or the component is not kbg's to move (etcd follows kubeadm).
    pub skew_ok: Option<bool>,
    /// Why not, or how: `2 hops: v1.33, then v1.34.1`.
    pub note: Option<String>,
}

/// The kubelets of one pool (or of the masters, pool `control-plane`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeletRow {
    /// The pool; `control-plane` for the masters, `-` for workers in no pool.
    pub pool: String,
    /// How many nodes.
    pub nodes: usize,
    /// The kubelet versions they report.
    pub current: Vec<KubeVersion>,
    /// The version they move to: the target for masters (upgraded in place); for a
    /// pool, the version of its last required replacement, if any.
    pub target: Option<KubeVersion>,
    /// Whether the current kubelets hold the skew policy against the target's API
    /// servers (`None` without a target).
    pub skew_ok: Option<bool>,
    /// What must happen, in a few words.
    pub note: Option<String>,
}

/// One thing kbg (or the operator) does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Replace a worker pool blue/green with one of version `to`.
    ReplacePool {
        /// The pool.
        pool: String,
        /// The kubelet versions it runs.
        from: Vec<KubeVersion>,
        /// The version of the replacement pool.
        to: KubeVersion,
        /// Whether the skew policy requires it before the hop (else it is optional).
        required: bool,
        /// Why.
        reason: String,
    },
    /// Upgrade one master's control plane in place.
    UpgradeMaster {
        /// The master.
        node: String,
        /// What its control plane runs now (its oldest static pod).
        from: Option<KubeVersion>,
        /// The hop's version.
        to: KubeVersion,
        /// Whether it is the hop's first master (`kubeadm upgrade apply`; the others
        /// get `kubeadm upgrade node`).
        first: bool,
        /// Already there: nothing to do.
        done: bool,
    },
    /// Upgrade the masters' kubelets in place, one by one (cordon, upgrade, restart,
    /// uncordon).
    UpgradeKubelets {
        /// The masters whose kubelet is older than the hop.
        nodes: Vec<String>,
        /// The hop's version.
        to: KubeVersion,
    },
}

/// A numbered step of a hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1, 2, 3 … across the whole plan.
    pub number: usize,
    /// The hop it belongs to (1-based); 0 for what follows the last hop.
    pub hop: usize,
    /// What it does.
    #[serde(flatten)]
    pub action: Action,
}

/// The plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// What `/version` answers.
    pub api_server_version: KubeVersion,
    /// The oldest kube-apiserver: where the control plane stands.
    pub control_plane_version: KubeVersion,
    /// The version asked for.
    pub target: Option<KubeVersion>,
    /// The hops, one minor each, ending with the target.
    pub hops: Vec<KubeVersion>,
    /// Without a target: the upgrades on offer.
    pub offers: Vec<Offer>,
    /// The control-plane components.
    pub components: Vec<ComponentRow>,
    /// The kubelets, masters first.
    pub kubelets: Vec<KubeletRow>,
    /// The ordered steps.
    pub steps: Vec<Step>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
}

/// The masters in the order kbg upgrades them: those whose control plane already runs
/// `target` first (a resumed upgrade's first master is among them), then by name.
pub fn master_order<'a>(masters: &'a [MasterFacts], target: &KubeVersion) -> Vec<&'a MasterFacts> {
    let mut out: Vec<&MasterFacts> = masters.iter().collect();
    out.sort_by_key(|m| (!m.control_plane_at(target), m.node.clone()));
    out
}

/// The newest of `available` in `minor`'s minor, else `minor` itself (`v1.33`).
fn resolve_hop(minor: &KubeVersion, available: &[KubeVersion]) -> KubeVersion {
    available
        .iter()
        .filter(|v| v.minor_key() == minor.minor_key())
        .max()
        .cloned()
        .unwrap_or_else(|| minor.clone())
}

/// What the control plane can be offered from `current`: the newest available patch of
/// its minor and the newest of the next minor.
pub fn offers(current: &KubeVersion, available: &[KubeVersion]) -> Vec<Offer> {
    let mut out = Vec::new();
    if let Some(v) = available
        .iter()
        .filter(|v| v.minor_key() == current.minor_key() && *v > current)
        .max()
    {
        out.push(Offer {
            kind: "patch",
            version: v.clone(),
        });
    }
    let next = current.next_minor();
    if let Some(v) = available
        .iter()
        .filter(|v| v.minor_key() == next.minor_key())
        .max()
    {
        out.push(Offer {
            kind: "minor",
            version: v.clone(),
        });
    }
    out
}

/// The hops from `current` to `target`: one minor each, the intermediate ones resolved
/// to the newest available patch. A patch change (either way) is one hop; the same
/// version is none.
pub fn hops(
    current: &KubeVersion,
    target: &KubeVersion,
    available: &[KubeVersion],
) -> Vec<KubeVersion> {
    if target.minor_key() == current.minor_key() {
        return if target == current {
            Vec::new()
        } else {
            vec![target.clone()]
        };
    }
    skew::control_plane_hops(current, target)
        .into_iter()
        .map(|h| {
            if &h == target {
                h
            } else {
                resolve_hop(&h, available)
            }
        })
        .collect()
}

fn describe_hops(hops: &[KubeVersion]) -> String {
    let names: Vec<String> = hops.iter().map(ToString::to_string).collect();
    match names.as_slice() {
        [] => "nothing to do".into(),
        [one] => format!("1 hop: {one}"),
        [rest @ .., last] => format!("{} hops: {}, then {last}", names.len(), rest.join(", ")),
    }
}

/// The plan for `facts`, towards `target` (none: show what is and what is on offer),
/// with `available` the versions known to exist (sorted or not).
///
/// # Errors
/// The skew violation when `target` goes down across a minor (kbg never does that).
pub fn plan(
    facts: &Facts,
    target: Option<&KubeVersion>,
    available: &[KubeVersion],
) -> Result<Plan, SkewViolation> {
    let current = facts.oldest_apiserver();
    if let Some(t) = target
        && t.minors_ahead_of(&current) < 0
    {
        skew::check_control_plane_upgrade(&current, t)?;
    }
    let hops = target.map_or_else(Vec::new, |t| hops(&current, t, available));
    let mut notes = Vec::new();
    let offers = if target.is_none() {
        let o = offers(&current, available);
        if available.is_empty() {
            notes.push(
                "kbg knows no available versions: list them in kbg.yaml under control_plane.available_versions, or ask for one with --to VERSION".into(),
            );
        } else if o.is_empty() {
            notes.push(format!(
                "no newer version of {} or {} among control_plane.available_versions",
                current.minor_only(),
                current.next_minor()
            ));
        }
        o
    } else {
        Vec::new()
    };
    if facts.masters.is_empty() {
        notes.push("no control-plane node is visible (a managed control plane?): kbg cannot upgrade it in place; the kubelets are held against /version".into());
    }
    if let Err(v) = skew::check_apiservers(&facts.apiservers()) {
        notes.push(format!(
            "the API servers already break the skew policy: {v}"
        ));
    }

    // Components, per master.
    let mut components = vec![ComponentRow {
        component: "API server (/version)".into(),
        node: "-".into(),
        current: facts.api_server.to_string(),
        target: target.map(ToString::to_string),
        skew_ok: None,
        note: None,
    }];
    for m in &facts.masters {
        for c in VERSIONED_COMPONENTS.iter().chain(["etcd"].iter()) {
            let Some(p) = m.static_pods.get(*c) else {
                continue;
            };
            let movable = *c != "etcd";
            let (skew_ok, note) = match (target, &p.version, movable) {
                (Some(t), Some(v), true) => match skew::check_control_plane_upgrade(v, t) {
                    Ok(()) => (Some(true), None),
                    Err(_) if t > v => (Some(false), Some(describe_hops(&hops))),
                    Err(e) => (Some(false), Some(e.to_string())),
                },
                _ => (None, None),
            };
            components.push(ComponentRow {
                component: (*c).to_string(),
                node: m.node.clone(),
                current: p.tag.clone(),
                target: target.filter(|_| movable).map(ToString::to_string),
                skew_ok,
                note,
            });
        }
    }

    // Steps.
    let mut steps: Vec<Step> = Vec::new();
    let push = |hop: usize, action: Action, steps: &mut Vec<Step>| {
        let number = steps.len() + 1;
        steps.push(Step {
            number,
            hop,
            action,
        });
    };
    // Pool versions as they will be: replacements change them.
    let mut pools: Vec<(String, Vec<KubeVersion>)> = facts
        .pools
        .iter()
        .filter(|p| !p.kubelets.is_empty())
        .map(|p| (p.name.clone(), p.kubelets.clone()))
        .collect();
    let mut replaced_to: std::collections::BTreeMap<String, KubeVersion> = Default::default();
    let mut cp = current.clone();
    let final_target = target.cloned();
    for (i, hop) in hops.iter().enumerate() {
        let hop_no = i + 1;
        for (name, versions) in &mut pools {
            let Some(oldest) = versions.first().cloned() else {
                continue;
            };
            if let Err(v) = skew::check_kubelet(&oldest, std::slice::from_ref(hop))
                && oldest < *hop
            {
                push(
                    hop_no,
                    Action::ReplacePool {
                        pool: name.clone(),
                        from: versions.clone(),
                        to: cp.clone(),
                        required: true,
                        reason: format!("before the control plane moves to {hop}: {v}"),
                    },
                    &mut steps,
                );
                replaced_to.insert(name.clone(), cp.clone());
                *versions = vec![cp.clone()];
            }
        }
        let order = master_order(&facts.masters, hop);
        let mut any_done = order.iter().any(|m| m.control_plane_at(hop));
        for m in order {
            let done = m.control_plane_at(hop);
            let first = !any_done && !done;
            if first {
                any_done = true;
            }
            push(
                hop_no,
                Action::UpgradeMaster {
                    node: m.node.clone(),
                    from: if hop_no == 1 {
                        m.control_plane_version().or_else(|| m.kubelet.clone())
                    } else {
                        Some(cp.clone())
                    },
                    to: hop.clone(),
                    first,
                    done,
                },
                &mut steps,
            );
        }
        let behind: Vec<String> = facts
            .masters
            .iter()
            .filter(|m| hop_no > 1 || m.kubelet.as_ref() != Some(hop))
            .map(|m| m.node.clone())
            .collect();
        if !behind.is_empty() {
            push(
                hop_no,
                Action::UpgradeKubelets {
                    nodes: behind,
                    to: hop.clone(),
                },
                &mut steps,
            );
        }
        cp = hop.clone();
    }
    if let Some(t) = &final_target {
        for (name, versions) in &pools {
            if name == "-" {
                continue;
            }
            if let Some(oldest) = versions.first()
                && oldest.minor_key() < t.minor_key()
            {
                push(
                    0,
                    Action::ReplacePool {
                        pool: name.clone(),
                        from: versions.clone(),
                        to: t.clone(),
                        required: false,
                        reason: format!(
                            "optional: its kubelets stay within the skew policy; replace it to run {t}"
                        ),
                    },
                    &mut steps,
                );
            }
        }
    }

    // Kubelets: the masters, then each pool.
    let against: Vec<KubeVersion> = match &final_target {
        Some(t) => vec![t.clone()],
        None => facts.apiservers(),
    };
    let mut kubelets = Vec::new();
    let mut master_versions: Vec<KubeVersion> = facts
        .masters
        .iter()
        .filter_map(|m| m.kubelet.clone())
        .collect();
    master_versions.sort();
    master_versions.dedup();
    if !facts.masters.is_empty() {
        let now_ok = master_versions
            .iter()
            .all(|k| skew::check_kubelet(k, &facts.apiservers()).is_ok());
        kubelets.push(KubeletRow {
            pool: "control-plane".into(),
            nodes: facts.masters.len(),
            current: master_versions,
            target: final_target.clone(),
            skew_ok: Some(final_target.is_some() || now_ok),
            note: final_target
                .as_ref()
                .map(|_| "upgraded in place after the masters".into()),
        });
    }
    for p in &facts.pools {
        let (skew_ok, note) = match p.oldest() {
            None => (None, Some("no kubelet version reported".to_string())),
            Some(oldest) => {
                let newest = p.newest().unwrap_or(oldest);
                let bad = skew::check_kubelet(oldest, &against)
                    .and_then(|()| skew::check_kubelet(newest, &against))
                    .err();
                match (&bad, replaced_to.get(&p.name)) {
                    (Some(_), Some(to)) => (
                        Some(false),
                        Some(format!(
                            "replace with {to} before the control plane moves on"
                        )),
                    ),
                    (Some(v), None) => (Some(false), Some(v.to_string())),
                    (None, _) => (Some(true), None),
                }
            }
        };
        kubelets.push(KubeletRow {
            pool: p.name.clone(),
            nodes: p.nodes.len(),
            current: p.kubelets.clone(),
            target: replaced_to.get(&p.name).cloned(),
            skew_ok,
            note,
        });
    }
    for p in &facts.pools {
        if let Some(newest) = p.newest()
            && newest > &current
        {
            notes.push(format!(
                "pool {} runs kubelet {newest}, newer than the oldest kube-apiserver {current}: the skew policy is already broken",
                p.name
            ));
        }
    }
    let not_ready = facts.not_ready();
    if !not_ready.is_empty() {
        notes.push(format!(
            "not Ready: {}; kbg upgrade-control-plane refuses until every node is Ready",
            not_ready.join(", ")
        ));
    }

    Ok(Plan {
        api_server_version: facts.api_server.clone(),
        control_plane_version: current,
        target: final_target,
        hops,
        offers,
        components,
        kubelets,
        steps,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control_plane::facts::tests::{master_pods, node};

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    /// Three masters at `cp` (the first at `first` if given), pools alpha and beta.
    fn facts(cp: &str, first: Option<&str>, alpha: &str, beta: &str) -> Facts {
        let nodes = vec![
            node("cp-0", true, None, first.unwrap_or(cp)),
            node("cp-1", true, None, cp),
            node("cp-2", true, None, cp),
            node("alpha-0", false, Some("alpha"), alpha),
            node("alpha-1", false, Some("alpha"), alpha),
            node("beta-0", false, Some("beta"), beta),
        ];
        let mut pods = master_pods("cp-0", first.unwrap_or(cp));
        pods.extend(master_pods("cp-1", cp));
        pods.extend(master_pods("cp-2", cp));
        Facts::from_objects(v(cp), &nodes, &pods, &Config::default())
    }

    fn summary(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| match &s.action {
                Action::ReplacePool {
                    pool, to, required, ..
                } => format!(
                    "{}: replace {pool} -> {to}{}",
                    s.hop,
                    if *required { "" } else { " (optional)" }
                ),
                Action::UpgradeMaster {
                    node,
                    to,
                    first,
                    done,
                    ..
                } => format!(
                    "{}: {node} -> {to}{}{}",
                    s.hop,
                    if *first { " (apply)" } else { "" },
                    if *done { " (done)" } else { "" }
                ),
                Action::UpgradeKubelets { nodes, to } => {
                    format!("{}: kubelets {} -> {to}", s.hop, nodes.join(","))
                }
            })
            .collect()
    }

    #[test]
    fn one_minor_masters_then_their_kubelets() {
        let f = facts("v1.33.1", None, "v1.32.4", "v1.33.1");
        let p = plan(&f, Some(&v("v1.34.0")), &[]).unwrap();
        assert_eq!(p.hops, [v("v1.34.0")]);
        assert_eq!(
            summary(&p),
            [
                "1: cp-0 -> v1.34.0 (apply)",
                "1: cp-1 -> v1.34.0",
                "1: cp-2 -> v1.34.0",
                "1: kubelets cp-0,cp-1,cp-2 -> v1.34.0",
                "0: replace alpha -> v1.34.0 (optional)",
                "0: replace beta -> v1.34.0 (optional)",
            ]
        );
        assert!(
            p.kubelets.iter().all(|k| k.skew_ok == Some(true)),
            "{:?}",
            p.kubelets
        );
        let api = &p.components[1];
        assert_eq!(
            (
                api.component.as_str(),
                api.node.as_str(),
                api.current.as_str()
            ),
            ("kube-apiserver", "cp-0", "v1.33.1")
        );
        assert_eq!(api.skew_ok, Some(true));
    }

    #[test]
    fn a_pool_that_would_fall_out_of_skew_is_replaced_before_the_hop() {
        // Control plane v1.32, alpha two minors behind (v1.30), beta at v1.32; to v1.34:
        // two hops. At v1.34 alpha (v1.30) would be four minors behind: replace it before.
        let f = facts("v1.32.4", None, "v1.30.2", "v1.32.4");
        let available = [v("v1.33.2"), v("v1.33.7"), v("v1.34.1")];
        let p = plan(&f, Some(&v("v1.34.1")), &available).unwrap();
        assert_eq!(p.hops, [v("v1.33.7"), v("v1.34.1")]);
        assert_eq!(
            summary(&p),
            [
                "1: cp-0 -> v1.33.7 (apply)",
                "1: cp-1 -> v1.33.7",
                "1: cp-2 -> v1.33.7",
                "1: kubelets cp-0,cp-1,cp-2 -> v1.33.7",
                "2: replace alpha -> v1.33.7",
                "2: cp-0 -> v1.34.1 (apply)",
                "2: cp-1 -> v1.34.1",
                "2: cp-2 -> v1.34.1",
                "2: kubelets cp-0,cp-1,cp-2 -> v1.34.1",
                "0: replace alpha -> v1.34.1 (optional)",
                "0: replace beta -> v1.34.1 (optional)",
            ]
        );
        let alpha = p.kubelets.iter().find(|k| k.pool == "alpha").unwrap();
        assert_eq!(alpha.skew_ok, Some(false));
        assert_eq!(alpha.target, Some(v("v1.33.7")));
        let api = &p.components[1];
        assert_eq!(api.skew_ok, Some(false));
        assert_eq!(api.note.as_deref(), Some("2 hops: v1.33.7, then v1.34.1"));
    }

    #[test]
    fn before_1_28_kubelets_may_lag_two_minors_only() {
        // v1.26 -> v1.27: a v1.24 pool would be three behind a v1.27 API server (two
        // allowed before 1.28); at v1.28 three are allowed.
        let f = facts("v1.26.3", None, "v1.24.9", "v1.25.0");
        let p = plan(&f, Some(&v("v1.27.1")), &[]).unwrap();
        assert_eq!(summary(&p)[0], "1: replace alpha -> v1.26.3");
        assert!(!summary(&p).iter().any(|s| s.starts_with("1: replace beta")));
        let f = facts("v1.27.3", None, "v1.25.9", "v1.27.3");
        let p = plan(&f, Some(&v("v1.28.0")), &[]).unwrap();
        assert!(
            !summary(&p).iter().any(|s| s.starts_with("1: replace")),
            "{:?}",
            summary(&p)
        );
    }

    #[test]
    fn a_resumed_upgrade_keeps_its_first_master_and_skips_what_is_done() {
        let f = facts("v1.33.1", Some("v1.34.0"), "v1.33.1", "v1.33.1");
        // cp-0 runs v1.34.0 already: it is first, done; the others get `upgrade node`.
        let p = plan(&f, Some(&v("v1.34.0")), &[]).unwrap();
        assert_eq!(
            summary(&p)[..3],
            [
                "1: cp-0 -> v1.34.0 (done)",
                "1: cp-1 -> v1.34.0",
                "1: cp-2 -> v1.34.0",
            ]
        );
        assert_eq!(
            p.control_plane_version,
            v("v1.33.1"),
            "the oldest API server"
        );
    }

    #[test]
    fn offers_the_next_patch_and_minor() {
        let f = facts("v1.33.1", None, "v1.33.1", "v1.33.1");
        let available = [
            v("v1.32.9"),
            v("v1.33.1"),
            v("v1.33.4"),
            v("v1.33.3"),
            v("v1.34.0"),
            v("v1.34.2"),
            v("v1.35.0"),
        ];
        let p = plan(&f, None, &available).unwrap();
        assert_eq!(
            p.offers,
            [
                Offer {
                    kind: "patch",
                    version: v("v1.33.4")
                },
                Offer {
                    kind: "minor",
                    version: v("v1.34.2")
                }
            ]
        );
        assert!(p.steps.is_empty());
        let p = plan(&f, None, &[]).unwrap();
        assert!(p.offers.is_empty());
        assert!(
            p.notes[0].contains("control_plane.available_versions"),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn patches_and_no_ops() {
        let f = facts("v1.33.1", None, "v1.33.1", "v1.33.1");
        let p = plan(&f, Some(&v("v1.33.4")), &[]).unwrap();
        assert_eq!(p.hops, [v("v1.33.4")]);
        assert_eq!(summary(&p).len(), 4, "{:?}", summary(&p));
        let p = plan(&f, Some(&v("v1.33.1")), &[]).unwrap();
        assert!(p.hops.is_empty() && p.steps.is_empty());
        // A patch downgrade within the minor is one hop; across a minor it is refused.
        assert_eq!(
            plan(&f, Some(&v("v1.33.0")), &[]).unwrap().hops,
            [v("v1.33.0")]
        );
        let e = plan(&f, Some(&v("v1.32.9")), &[]).unwrap_err();
        assert!(e.to_string().contains("never downgraded"), "{e}");
    }

    #[test]
    fn kubelets_newer_than_the_control_plane_are_named() {
        let f = facts("v1.33.1", None, "v1.34.0", "v1.33.1");
        let p = plan(&f, None, &[]).unwrap();
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("pool alpha runs kubelet v1.34.0")),
            "{:?}",
            p.notes
        );
        let alpha = p.kubelets.iter().find(|k| k.pool == "alpha").unwrap();
        assert_eq!(alpha.skew_ok, Some(false));
    }
}
