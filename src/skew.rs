//! The upstream version skew policy, as pure functions.
//!
//! Source: the Kubernetes "Version Skew Policy"
//! (<https://kubernetes.io/releases/version-skew-policy/>). Its rules, as kbg applies them:
//!
//! | component | rule |
//! | --- | --- |
//! | kube-apiserver | in an HA control plane, the newest and oldest instances within one minor |
//! | kube-controller-manager, kube-scheduler, cloud-controller-manager | not newer than the oldest kube-apiserver; at most one minor older |
//! | kubelet | not newer than the oldest kube-apiserver; at most three minors older (two when the API server is older than 1.28, before KEP-3935) |
//! | kube-proxy | as kubelet, and within three minors of the kubelet beside it |
//! | kubectl | within one minor of kube-apiserver, older or newer |
//! | control-plane upgrade | one minor at a time; never down across a minor |
//!
//! Every check compares minor versions only (patch and suffix do not count), except that
//! "not newer than" also looks at the patch within the same minor: a v1.31.5 kubelet
//! against a v1.31.2 API server is newer and refused.

// A violation carries both versions for the message; checks run a handful of times per
// command, so the size of the error does not matter.
#![allow(clippy::result_large_err)]

use std::fmt;

use serde::Serialize;

use crate::version::KubeVersion;

/// A Kubernetes component the policy speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// kube-apiserver.
    KubeApiserver,
    /// kube-controller-manager.
    KubeControllerManager,
    /// kube-scheduler.
    KubeScheduler,
    /// cloud-controller-manager.
    CloudControllerManager,
    /// kubelet.
    Kubelet,
    /// kube-proxy.
    KubeProxy,
    /// kubectl.
    Kubectl,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::CloudControllerManager => "cloud-controller-manager",
            Component::Kubelet => "kubelet",
            Component::KubeProxy => "kube-proxy",
            Component::Kubectl => "kubectl",
        })
    }
}

/// A version pairing the policy does not allow. Displays as one line naming both
/// versions and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error(
    "{component} {version} {problem} {against_component} {against}: {rule} (upstream version skew policy)"
)]
pub struct SkewViolation {
    /// The component whose version breaks the rule.
    pub component: Component,
    /// Its version.
    pub version: KubeVersion,
    /// What is wrong, relative to the other version: "is newer than", "is 4 minors older than".
    pub problem: String,
    /// The component it is compared with.
    pub against_component: Component,
    /// That component's version.
    pub against: KubeVersion,
    /// The rule, in the policy's words.
    pub rule: &'static str,
}

/// How many minors a kubelet (or kube-proxy) may lag behind an API server of `apiserver`'s
/// version: 3 from 1.28 on, 2 before.
pub fn max_kubelet_lag(apiserver: &KubeVersion) -> i64 {
    if apiserver.minor_key() >= (1, 28) {
        3
    } else {
        2
    }
}

/// The oldest minor a kubelet may have against `apiserver`.
pub fn oldest_kubelet_minor(apiserver: &KubeVersion) -> KubeVersion {
    let lag = max_kubelet_lag(apiserver) as u64;
    KubeVersion {
        major: apiserver.major,
        minor: apiserver.minor.saturating_sub(lag),
        patch: None,
        suffix: String::new(),
    }
}

fn violation(
    component: Component,
    version: &KubeVersion,
    problem: String,
    against_component: Component,
    against: &KubeVersion,
    rule: &'static str,
) -> SkewViolation {
    SkewViolation {
        component,
        version: version.clone(),
        problem,
        against_component,
        against: against.clone(),
        rule,
    }
}

fn older_phrase(minors: i64) -> String {
    if minors == 1 {
        "is 1 minor older than".to_string()
    } else {
        format!("is {minors} minors older than")
    }
}

/// Not newer than `against` (patch counts within the same minor), and at most `max_lag`
/// minors older.
fn not_newer_and_lag(
    component: Component,
    v: &KubeVersion,
    against_component: Component,
    against: &KubeVersion,
    max_lag: i64,
    newer_rule: &'static str,
    lag_rule: &'static str,
) -> Result<(), SkewViolation> {
    if v > against {
        return Err(violation(
            component,
            v,
            "is newer than".into(),
            against_component,
            against,
            newer_rule,
        ));
    }
    let behind = against.minors_ahead_of(v);
    if behind > max_lag {
        return Err(violation(
            component,
            v,
            older_phrase(behind),
            against_component,
            against,
            lag_rule,
        ));
    }
    Ok(())
}

/// The oldest of `apiservers`: what every other component is compared with in an HA
/// control plane that is half-way through an upgrade.
///
/// # Panics
/// If `apiservers` is empty.
pub fn oldest(apiservers: &[KubeVersion]) -> &KubeVersion {
    apiservers
        .iter()
        .min()
        .expect("at least one kube-apiserver")
}

/// kube-apiserver instances of one cluster: newest and oldest within one minor.
///
/// # Errors
/// The violation, naming the newest and the oldest.
pub fn check_apiservers(apiservers: &[KubeVersion]) -> Result<(), SkewViolation> {
    let (Some(old), Some(new)) = (apiservers.iter().min(), apiservers.iter().max()) else {
        return Ok(());
    };
    if new.minors_ahead_of(old) > 1 {
        return Err(violation(
            Component::KubeApiserver,
            new,
            format!("is {} minors newer than", new.minors_ahead_of(old)),
            Component::KubeApiserver,
            old,
            "kube-apiserver instances must be within one minor version of each other",
        ));
    }
    Ok(())
}

/// kube-controller-manager, kube-scheduler or cloud-controller-manager against the
/// oldest API server: not newer, at most one minor older.
///
/// # Errors
/// The violation.
pub fn check_control_plane_component(
    component: Component,
    version: &KubeVersion,
    apiservers: &[KubeVersion],
) -> Result<(), SkewViolation> {
    not_newer_and_lag(
        component,
        version,
        Component::KubeApiserver,
        oldest(apiservers),
        1,
        "it must not be newer than the kube-apiserver instances it talks to",
        "it may be at most one minor version older than kube-apiserver",
    )
}

/// A kubelet against the oldest API server: not newer, at most three minors older (two
/// for API servers before 1.28).
///
/// # Errors
/// The violation.
pub fn check_kubelet(
    kubelet: &KubeVersion,
    apiservers: &[KubeVersion],
) -> Result<(), SkewViolation> {
    let api = oldest(apiservers);
    not_newer_and_lag(
        Component::Kubelet,
        kubelet,
        Component::KubeApiserver,
        api,
        max_kubelet_lag(api),
        "a kubelet must not be newer than kube-apiserver",
        if max_kubelet_lag(api) == 3 {
            "a kubelet may be at most three minor versions older than kube-apiserver"
        } else {
            "a kubelet may be at most two minor versions older than a kube-apiserver before 1.28"
        },
    )
}

/// kube-proxy against the oldest API server (as a kubelet) and against the kubelet on its
/// node (within three minors either way).
///
/// # Errors
/// The violation.
pub fn check_kube_proxy(
    proxy: &KubeVersion,
    apiservers: &[KubeVersion],
    kubelet: &KubeVersion,
) -> Result<(), SkewViolation> {
    let api = oldest(apiservers);
    not_newer_and_lag(
        Component::KubeProxy,
        proxy,
        Component::KubeApiserver,
        api,
        max_kubelet_lag(api),
        "kube-proxy must not be newer than kube-apiserver",
        if max_kubelet_lag(api) == 3 {
            "kube-proxy may be at most three minor versions older than kube-apiserver"
        } else {
            "kube-proxy may be at most two minor versions older than a kube-apiserver before 1.28"
        },
    )?;
    let d = proxy.minors_ahead_of(kubelet);
    if d.abs() > 3 {
        let problem = if d > 0 {
            format!("is {d} minors newer than")
        } else {
            older_phrase(-d)
        };
        return Err(violation(
            Component::KubeProxy,
            proxy,
            problem,
            Component::Kubelet,
            kubelet,
            "kube-proxy must be within three minor versions of the kubelet on its node",
        ));
    }
    Ok(())
}

/// kubectl against kube-apiserver: within one minor, older or newer.
///
/// # Errors
/// The violation.
pub fn check_kubectl(kubectl: &KubeVersion, apiserver: &KubeVersion) -> Result<(), SkewViolation> {
    let d = kubectl.minors_ahead_of(apiserver);
    if d.abs() > 1 {
        let problem = if d > 0 {
            format!("is {d} minors newer than")
        } else {
            older_phrase(-d)
        };
        return Err(violation(
            Component::Kubectl,
            kubectl,
            problem,
            Component::KubeApiserver,
            apiserver,
            "kubectl is supported within one minor version of kube-apiserver",
        ));
    }
    Ok(())
}

/// A control-plane upgrade from `from` to `to`: at most one minor up; never down across a
/// minor (a patch downgrade within the minor is allowed, as kubeadm allows it).
///
/// # Errors
/// The violation.
pub fn check_control_plane_upgrade(
    from: &KubeVersion,
    to: &KubeVersion,
) -> Result<(), SkewViolation> {
    let d = to.minors_ahead_of(from);
    if d > 1 {
        return Err(violation(
            Component::KubeApiserver,
            to,
            format!("is {d} minors newer than"),
            Component::KubeApiserver,
            from,
            "the control plane is upgraded one minor version at a time",
        ));
    }
    if d < 0 {
        return Err(violation(
            Component::KubeApiserver,
            to,
            older_phrase(-d),
            Component::KubeApiserver,
            from,
            "the control plane is never downgraded across a minor version",
        ));
    }
    Ok(())
}

/// The minor versions a control plane at `from` passes through to reach `to`, one minor
/// at a time, ending with `to` itself (empty when `to` is not newer).
pub fn control_plane_hops(from: &KubeVersion, to: &KubeVersion) -> Vec<KubeVersion> {
    if to <= from {
        return Vec::new();
    }
    let mut hops: Vec<KubeVersion> = (from.minor + 1..to.minor)
        .map(|minor| KubeVersion {
            major: from.major,
            minor,
            patch: None,
            suffix: String::new(),
        })
        .collect();
    hops.push(to.clone());
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    // Each case: (component version, API server version, allowed?, what the policy says).
    #[test]
    fn kubelet_against_api_server() {
        for (kubelet, api, ok, why) in [
            ("v1.31.2", "v1.31.2", true, "same version"),
            ("v1.31.1", "v1.31.2", true, "older patch"),
            (
                "v1.31.3",
                "v1.31.2",
                false,
                "newer patch of the same minor is newer",
            ),
            ("v1.32.0", "v1.31.9", false, "a kubelet must not be newer"),
            ("v1.28.0", "v1.31.0", true, "three older from 1.28 on"),
            ("v1.27.9", "v1.31.0", false, "four older"),
            (
                "v1.25.0",
                "v1.28.0",
                true,
                "1.28 API server: three older allowed (KEP-3935)",
            ),
            (
                "v1.24.0",
                "v1.27.0",
                false,
                "1.27 API server: only two older",
            ),
            ("v1.25.0", "v1.27.0", true, "1.27 API server: two older"),
            ("v1.31.2-eks-abc", "v1.31.2", true, "suffix does not count"),
        ] {
            let r = check_kubelet(&v(kubelet), &[v(api)]);
            assert_eq!(
                r.is_ok(),
                ok,
                "kubelet {kubelet} vs api {api}: {why}: {r:?}"
            );
        }
    }

    #[test]
    fn kubelets_are_compared_with_the_oldest_api_server() {
        // Half-way through a control-plane upgrade: 1.31 and 1.32 API servers.
        let apis = [v("v1.32.0"), v("v1.31.4")];
        assert!(check_kubelet(&v("v1.31.4"), &apis).is_ok());
        assert!(
            check_kubelet(&v("v1.32.0"), &apis).is_err(),
            "newer than the oldest API server"
        );
    }

    #[test]
    fn api_servers_within_one_minor() {
        assert!(check_apiservers(&[v("v1.31.0"), v("v1.32.1"), v("v1.32.0")]).is_ok());
        let e = check_apiservers(&[v("v1.30.0"), v("v1.32.1")]).unwrap_err();
        assert_eq!(e.version, v("v1.32.1"));
        assert_eq!(e.against, v("v1.30.0"));
        assert!(check_apiservers(&[]).is_ok());
    }

    #[test]
    fn controller_manager_scheduler_ccm() {
        for c in [
            Component::KubeControllerManager,
            Component::KubeScheduler,
            Component::CloudControllerManager,
        ] {
            for (ver, apis, ok) in [
                ("v1.31.0", vec!["v1.31.0"], true),
                ("v1.30.5", vec!["v1.31.0"], true),
                ("v1.29.5", vec!["v1.31.0"], false),
                ("v1.32.0", vec!["v1.31.0"], false),
                // Against the oldest of an HA control plane.
                ("v1.32.0", vec!["v1.32.0", "v1.31.0"], false),
                ("v1.31.0", vec!["v1.32.0", "v1.31.0"], true),
            ] {
                let apis: Vec<_> = apis.iter().map(|s| v(s)).collect();
                assert_eq!(
                    check_control_plane_component(c, &v(ver), &apis).is_ok(),
                    ok,
                    "{c} {ver} vs {apis:?}"
                );
            }
        }
    }

    #[test]
    fn kube_proxy() {
        let apis = [v("v1.31.0")];
        assert!(check_kube_proxy(&v("v1.28.0"), &apis, &v("v1.28.0")).is_ok());
        assert!(
            check_kube_proxy(&v("v1.27.0"), &apis, &v("v1.28.0")).is_err(),
            "four older than the API server"
        );
        assert!(
            check_kube_proxy(&v("v1.32.0"), &apis, &v("v1.31.0")).is_err(),
            "newer than the API server"
        );
        // Within three minors of its kubelet either way.
        assert!(check_kube_proxy(&v("v1.31.0"), &apis, &v("v1.28.0")).is_ok());
        let e = check_kube_proxy(&v("v1.31.0"), &[v("v1.31.0")], &v("v1.27.0")).unwrap_err();
        assert_eq!(e.against_component, Component::Kubelet);
    }

    #[test]
    fn kube_proxy_follows_the_1_28_change_too() {
        // (kube-proxy, API server, allowed?)
        for (proxy, api, ok) in [
            ("v1.28.0", "v1.31.0", true),
            ("v1.27.9", "v1.31.0", false),
            ("v1.25.0", "v1.27.3", true),
            ("v1.24.9", "v1.27.3", false),
            ("v1.31.1", "v1.31.0", false),
            ("v1.31.0", "v1.31.0", true),
        ] {
            let r = check_kube_proxy(&v(proxy), &[v(api)], &v(proxy));
            assert_eq!(r.is_ok(), ok, "kube-proxy {proxy} vs {api}: {r:?}");
        }
        let e = check_kube_proxy(&v("v1.24.9"), &[v("v1.27.3")], &v("v1.24.9")).unwrap_err();
        assert!(
            e.rule.contains("two minor versions") && e.rule.contains("1.28"),
            "{e}"
        );
        let e = check_kube_proxy(&v("v1.27.9"), &[v("v1.31.0")], &v("v1.27.9")).unwrap_err();
        assert!(e.rule.contains("three minor versions"), "{e}");
    }

    #[test]
    fn the_1_28_change_counts_from_the_oldest_api_server() {
        // An HA control plane half-way from 1.27 to 1.28: the 1.27 API server still
        // allows only two minors.
        assert!(check_kubelet(&v("v1.25.0"), &[v("v1.28.0")]).is_ok());
        assert!(check_kubelet(&v("v1.25.0"), &[v("v1.28.0"), v("v1.27.5")]).is_ok());
        assert!(check_kubelet(&v("v1.24.0"), &[v("v1.28.0")]).is_err());
        assert!(check_kubelet(&v("v1.24.9"), &[v("v1.28.0"), v("v1.27.5")]).is_err());
        assert_eq!(max_kubelet_lag(&v("v1.28.0")), 3);
        assert_eq!(max_kubelet_lag(&v("v1.27.9")), 2);
    }

    #[test]
    fn control_plane_components_newer_by_a_patch_are_newer() {
        for c in [Component::KubeControllerManager, Component::KubeScheduler] {
            assert!(check_control_plane_component(c, &v("v1.31.1"), &[v("v1.31.0")]).is_err());
            assert!(check_control_plane_component(c, &v("v1.31.0"), &[v("v1.31.1")]).is_ok());
            assert!(
                check_control_plane_component(c, &v("v1.31.0-eks-1"), &[v("v1.31.0")]).is_ok(),
                "suffixes do not count"
            );
        }
    }

    #[test]
    fn kubectl_within_one_minor_either_way() {
        for (kubectl, api, ok) in [
            ("v1.31.0", "v1.31.0", true),
            ("v1.32.0", "v1.31.0", true),
            ("v1.30.0", "v1.31.0", true),
            ("v1.33.0", "v1.31.0", false),
            ("v1.29.0", "v1.31.0", false),
        ] {
            assert_eq!(
                check_kubectl(&v(kubectl), &v(api)).is_ok(),
                ok,
                "{kubectl} vs {api}"
            );
        }
    }

    #[test]
    fn control_plane_upgrades_one_minor_at_a_time() {
        for (from, to, ok) in [
            ("v1.30.4", "v1.30.9", true),
            ("v1.30.4", "v1.31.0", true),
            ("v1.30.4", "v1.32.0", false),
            ("v1.30.4", "v1.30.1", true),
            ("v1.30.4", "v1.29.9", false),
        ] {
            assert_eq!(
                check_control_plane_upgrade(&v(from), &v(to)).is_ok(),
                ok,
                "{from} -> {to}"
            );
        }
        let hops: Vec<String> = control_plane_hops(&v("v1.29.3"), &v("v1.32.1"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(hops, ["v1.30", "v1.31", "v1.32.1"]);
        assert!(control_plane_hops(&v("v1.32.1"), &v("v1.32.1")).is_empty());
    }

    #[test]
    fn violations_read_as_one_line_with_both_versions_and_the_rule() {
        let e = check_kubelet(&v("v1.32.0"), &[v("v1.31.4")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kubelet v1.32.0 is newer than kube-apiserver v1.31.4: a kubelet must not be newer than kube-apiserver (upstream version skew policy)"
        );
        let e = check_kubelet(&v("v1.26.0"), &[v("v1.31.0")]).unwrap_err();
        assert!(e.to_string().contains("is 5 minors older than"), "{e}");
    }

    #[test]
    fn oldest_kubelet_follows_the_1_28_change() {
        assert_eq!(oldest_kubelet_minor(&v("v1.31.2")).to_string(), "v1.28");
        assert_eq!(oldest_kubelet_minor(&v("v1.27.2")).to_string(), "v1.25");
    }
}
