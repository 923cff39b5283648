//! Issue 8, item 5: hostile input. Whatever a user types or a cluster or plugin answers,
//! kbg refuses it with one line naming the field, or takes it; it never panics.
//!
//! Property tests (proptest, in CI) on what kbg parses beyond the config parser, the
//! selectors, the durations and the exec protocol (each property-tested in its own
//! module): Kubernetes versions and the skew rules over them, quantities in pod specs,
//! PDB rules, batch sizes, kbg's cordon notes and Leases as other tools may have left
//! them. Then a sample through the binary: generated bad `kbg.yaml` files and flags each
//! give exit 2, one line per problem naming the field, and not one request to the
//! cluster; hostile exec plugins give exit 1 and one line naming the plugin.

mod common;
mod rel;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbg::plan::{BatchSize, plan_batches};
use kbg::skew::{self, Component};
use kbg::version::KubeVersion;
use proptest::prelude::*;

/// Version-like text: anything, or `vMAJOR.MINOR[.PATCH][suffix]` with numbers up to
/// 25 digits (past u64).
fn version_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,30}",
        "v?1\\.[0-9]{1,25}(\\.[0-9]{1,25})?([-+][0-9A-Za-z.-]{0,12})?",
        "v?[0-9]{1,3}\\.[0-9]{1,3}(\\.[0-9]{1,3})?",
    ]
}

/// Versions at the edges of the integers: `v1.N` for N around 2^63 and 2^64.
fn edge_version() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        0u64,
        1,
        33,
        99_999,
        (1 << 62) + 7,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        i64::MAX as u64 + 40,
        u64::MAX - 1,
        u64::MAX,
    ])
    .prop_map(|n| format!("v1.{n}"))
}

fn int_or_string() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        any::<i32>().prop_map(IntOrString::Int),
        ".{0,8}".prop_map(IntOrString::String),
        "-?[0-9]{1,12}(\\.[0-9]{0,4})?%?".prop_map(IntOrString::String),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A version parses, and its display parses back to it; or one line says why.
    #[test]
    fn versions_parse_or_say_why_in_one_line(text in version_text()) {
        match KubeVersion::parse(&text) {
            Ok(v) => prop_assert_eq!(KubeVersion::parse(&v.to_string()).unwrap(), v),
            Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
        }
    }

    /// Every skew rule answers for any two versions that parse, without overflowing or
    /// running away.
    #[test]
    fn skew_rules_answer_for_any_versions(
        a in prop_oneof![version_text(), edge_version()],
        b in prop_oneof![version_text(), edge_version()],
    ) {
        // Versions that parse, and (the fields being public) versions built by hand
        // past what parsing takes.
        let by_hand = |t: &str| {
            let minor = t.strip_prefix("v1.")?.parse().ok()?;
            Some(KubeVersion { major: 1, minor, patch: None, suffix: String::new() })
        };
        let (Some(a), Some(b)) = (
            KubeVersion::parse(&a).ok().or_else(|| by_hand(&a)),
            KubeVersion::parse(&b).ok().or_else(|| by_hand(&b)),
        ) else {
            return Ok(());
        };
        let _ = a.minors_ahead_of(&b);
        let _ = a.next_minor();
        let _ = skew::oldest_kubelet_minor(&a);
        let _ = skew::check_kubelet(&a, std::slice::from_ref(&b));
        let _ = skew::check_kube_proxy(&a, std::slice::from_ref(&b), &a);
        let _ = skew::check_kubectl(&a, &b);
        let _ = skew::check_control_plane_component(Component::KubeScheduler, &a, std::slice::from_ref(&b));
        let _ = skew::check_apiservers(&[a.clone(), b.clone()]);
        if skew::check_control_plane_upgrade(&a, &b).is_ok() {
            prop_assert!(skew::control_plane_hops(&a, &b).len() <= 1);
        }
        if b > a && b.minor - a.minor <= 100 {
            prop_assert_eq!(skew::control_plane_hops(&a, &b).len() as u64, (b.minor - a.minor).max(1));
        }
    }

    /// A pod's resource quantity parses or is refused; never a panic or an overflow.
    #[test]
    fn quantities_parse_or_are_refused(text in prop_oneof![
        ".{0,24}",
        "[+-]?[0-9]{0,40}(\\.[0-9]{0,40})?([eE][+-]?[0-9]{1,6}|[numkMGTPE]|[KMGTPE]i)?",
    ]) {
        let _ = kbg::preflight::parse_quantity_milli(&text);
    }

    /// Any batch size either parses into batches holding every node once, in order, or
    /// is refused naming `--batch-size`.
    #[test]
    fn batch_sizes_plan_every_node_once(text in prop_oneof![".{0,8}", "[0-9]{1,22}%?"], n in 0usize..300) {
        match text.parse::<BatchSize>() {
            Ok(size) => {
                let nodes: Vec<String> = (0..n).map(|i| format!("n-{i}")).collect();
                let batches = plan_batches(&nodes, size);
                prop_assert_eq!(batches.concat(), nodes);
                prop_assert!(batches.iter().all(|b| !b.is_empty()));
            }
            Err(e) => prop_assert!(e.to_string().starts_with("--batch-size: ")),
        }
    }

    /// Whatever rule and status a PDB carries (other tools write them), preflight's
    /// judgement of it answers.
    #[test]
    fn any_pdb_is_judged(
        min in proptest::option::of(int_or_string()),
        max in proptest::option::of(int_or_string()),
        status in proptest::option::of((any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>())),
    ) {
        let pdb = PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            status: status.map(|(current, desired, expected, allowed)| PodDisruptionBudgetStatus {
                current_healthy: current,
                desired_healthy: desired,
                expected_pods: expected,
                disruptions_allowed: allowed,
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(why) = kbg::preflight::pdb_never_allows(&pdb) {
            prop_assert!(!why.contains('\n'));
        }
    }

    /// A cordon note someone else edited is read or ignored, never trusted half-way.
    #[test]
    fn cordon_notes_are_read_or_ignored(text in prop_oneof![
        ".{0,60}",
        Just(r#"{"operation":"migrate.alpha.beta","was_unschedulable":true,"at":"2026-01-01T00:00:00Z"}"#.to_string()),
        "\\{\"operation\":\"[a-z.]{0,12}\",\"was_unschedulable\":(true|false|1),\"at\":\"[0-9TZ:.-]{0,25}\"\\}",
    ]) {
        let mut node = Node::default();
        node.metadata.annotations = Some(BTreeMap::from([(kbg::cordon::CORDON_ANNOTATION.to_string(), text)]));
        let _ = kbg::cordon::note_of(&node);
    }

    /// A Lease from any tool, at any time: kbg decides to take it or names its holder.
    #[test]
    fn any_lease_is_decided(
        holder in proptest::option::of(".{0,20}"),
        host in proptest::option::of("[a-z]{0,6}"),
        pid in proptest::option::of(any::<u32>()),
        renewed_secs_ago in proptest::option::of(-400_000_000_000i64..400_000_000_000),
        duration in any::<i32>(),
    ) {
        let now = jiff::Timestamp::now();
        let view = kbg::lock::LeaseView {
            holder,
            host,
            pid,
            renewed: renewed_secs_ago.and_then(|s| now.checked_sub(jiff::SignedDuration::from_secs(s)).ok()),
            duration_secs: duration.into(),
        };
        let me = kbg::lock::Holder {
            user: "u".into(),
            host: "h".into(),
            pid: 1,
            command: "kbg migrate a b".into(),
        };
        if let kbg::lock::Decision::Held { expires_in, renewed_ago } = kbg::lock::decide(&view, &me, now, |_| true) {
            prop_assert!(expires_in >= 0 && renewed_ago >= 0);
        }
    }
}
