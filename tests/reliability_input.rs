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

/// A `kbg.yaml` every field of which is fine.
const GOOD: &str = "cluster:
  state_namespace: kube-system
  lease_duration: 15s
migration:
  batch_size: 1
  drain_timeout: 1h
pools:
  alpha:
    provider: sim
    version: v1.32.4
    count: 3
  beta:
    provider: sim
    version: v1.33.1
    count: 3
    labels: {tier: web}
    taints: [\"dedicated=web:NoSchedule\"]
";

/// One bad value: the field it goes in (the line of [`GOOD`] it replaces, or a line added
/// at the top level), and the field path the error must name.
fn bad_config() -> impl Strategy<Value = (String, String)> {
    let replace = |line: &'static str, field: &'static str, bad: BoxedStrategy<String>| {
        bad.prop_map(move |v| {
            let (key, _) = line.split_once(": ").unwrap();
            (
                GOOD.replacen(line, &format!("{key}: {v}"), 1),
                field.to_string(),
            )
        })
    };
    prop_oneof![
        replace(
            "    version: v1.33.1",
            "pools.beta.version",
            prop_oneof![
                "[a-z]{1,6}",
                "v2\\.[0-9]{1,2}",
                "v1\\.[1-9][0-9]{4,12}",
                "v1\\.0[0-9]",
                "v1\\.33\\.x"
            ]
            .boxed()
        ),
        replace(
            "    count: 3\n    labels",
            "pools.beta.count",
            prop_oneof!["-[1-9][0-9]{0,3}", "[a-z]{2,6}", Just("0".to_string())]
                .prop_map(|v| format!("{v}\n    labels"))
                .boxed()
        ),
        replace(
            "    provider: sim\n    version: v1.33.1",
            "pools.beta.provider",
            "[a-z]{3,8}"
                .prop_filter("a provider kbg has", |p| ![
                    "sim", "aws", "juju", "metal", "exec"
                ]
                .contains(&p.as_str()))
                .prop_map(|v| format!("{v}\n    version: v1.33.1"))
                .boxed()
        ),
        replace(
            "    labels: {tier: web}",
            "pools.beta.labels",
            prop_oneof![
                "\\{\"-[a-z]{1,5}\": web\\}",
                "\\{tier: \"[a-z]{1,4} [a-z]{1,4}\"\\}",
                "\\{\"A/B/c\": x\\}"
            ]
            .boxed()
        ),
        replace(
            "    taints: [\"dedicated=web:NoSchedule\"]",
            "pools.beta.taints",
            prop_oneof![
                "\\[\"dedicated=web:[A-Z][a-z]{2,8}\"\\]",
                "\\[\"=web:NoSchedule\"\\]",
                "\"[a-z]{1,5}\""
            ]
            .boxed()
        ),
        replace(
            "  batch_size: 1",
            "migration.batch_size",
            prop_oneof![Just("0".to_string()), "1[0-9][1-9]%", "[a-z]{1,4}%"].boxed()
        ),
        replace(
            "  drain_timeout: 1h",
            "migration.drain_timeout",
            prop_oneof!["[1-9][0-9]{0,3}", "-[1-9]s", "[a-z]{3,8}"].boxed()
        ),
        replace(
            "  lease_duration: 15s",
            "cluster.lease_duration",
            prop_oneof![Just("1s".to_string()), "[a-z]{2,6}", "[1-9]"].boxed()
        ),
        replace(
            "  state_namespace: kube-system",
            "cluster.state_namespace",
            "[A-Z][a-z_]{2,8}".boxed()
        ),
        "[a-z]{3,8}"
            .prop_filter("not a field", |k| !["cluster", "migration", "pools"]
                .contains(&k.as_str()))
            .prop_map(|k| (format!("{k}: 1\n{GOOD}"), k)),
    ]
}

/// A proptest runner whose draws `seed` decides, to sample values from a strategy.
fn seeded_runner(seed: u64) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// A sample of generated bad `kbg.yaml` files through the binary: exit 2, one `error:`
/// line naming the field, no panic, and not one request to the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_files_through_the_binary() {
    use proptest::strategy::ValueTree;
    let seed = rel::seed("bad_config_files_through_the_binary", 5);
    let mut runner = seeded_runner(seed);
    let h = common::Harness::start("", GOOD).await;
    h.kbg(&["status"]).await.expect_code(0);
    let strategy = bad_config();
    let mut fields = std::collections::BTreeSet::new();
    for i in 0..40 {
        let (text, field) = strategy.new_tree(&mut runner).unwrap().current();
        h.write_config(&text);
        let before = h.sim.audit().len();
        let run = h.kbg(&["status"]).await;
        let context = format!("seed {seed} sample {i}: {field}\n{text}");
        assert!(
            !run.stderr.contains("panicked"),
            "{context}\n{}",
            run.stderr
        );
        assert_eq!(run.code, Some(2), "{context}\n{}", run.stderr);
        let errors = run.error_lines();
        assert_eq!(errors.len(), 1, "{context}\n{}", run.stderr);
        assert!(errors[0].contains(&field), "{context}\n{}", run.stderr);
        assert_eq!(h.sim.audit().len(), before, "{context}: requests sent");
        fields.insert(field);
    }
    eprintln!(
        "40 generated bad kbg.yaml files (seed {seed}), {} fields: each exit 2, one line naming the field, no request sent",
        fields.len()
    );
}

/// Bad values for a flag or its environment variable.
fn bad_flags() -> impl Strategy<Value = (Vec<String>, Vec<(String, String)>, String)> {
    let flag = |name: &'static str, bad: BoxedStrategy<String>| {
        bad.prop_map(move |v| {
            let args = ["migrate", "alpha", "beta", "--dry-run", name, &v]
                .map(String::from)
                .to_vec();
            (args, Vec::new(), name.to_string())
        })
    };
    let duration = || prop_oneof!["[1-9][0-9]{0,3}", "-[1-9]s", "[a-z]{2,6}", "[1-9]d"].boxed();
    prop_oneof![
        flag("--timeout", duration()),
        flag("--drain-timeout", duration()),
        flag("--batch-soak", duration()),
        flag("--request-timeout", duration()),
        flag(
            "--batch-size",
            prop_oneof![
                Just("0".to_string()),
                "1[0-9][1-9]%",
                "[a-z]{1,4}",
                "-[1-9]"
            ]
            .boxed()
        ),
        flag(
            "--pod-selector",
            prop_oneof![
                "[a-z]{1,4} in [a-z]{1,4}",
                "[a-z]{1,4}=[a-z]{1,3} [a-z]{1,3}",
                "-[a-z]{1,4}=x",
                "[a-z]{1,3},"
            ]
            .boxed()
        ),
        flag("--grace-period", "-[2-9][0-9]{0,2}".boxed()),
        flag(
            "--max-concurrent-evictions",
            prop_oneof![Just("0".to_string()), "[a-z]{1,4}", "-[1-9]"].boxed()
        ),
        flag(
            "--clock-speed",
            prop_oneof![
                Just("0".to_string()),
                Just("-1".to_string()),
                Just("NaN".to_string()),
                "[a-z]{2,4}"
            ]
            .boxed()
        ),
        "[1-9][0-9]{0,2}".prop_map(|v| (
            ["migrate", "alpha", "beta", "--dry-run"]
                .map(String::from)
                .to_vec(),
            vec![("KBG_BATCH_SOAK".to_string(), v)],
            "--batch-soak".to_string()
        )),
        "[a-z0-9]{1,10}".prop_map(|v| (
            ["deploy-pool", "beta"].map(String::from).to_vec(),
            vec![("KBG_JOIN_TOKEN".to_string(), v)],
            "KBG_JOIN_TOKEN".to_string()
        )),
    ]
}

/// A sample of generated bad flags and environment variables through the binary: exit 2,
/// one `error:` line naming the flag, no panic, not one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_through_the_binary() {
    use proptest::strategy::ValueTree;
    let seed = rel::seed("bad_flags_through_the_binary", 6);
    let mut runner = seeded_runner(seed);
    let h = common::Harness::start(rel::REPLACE, GOOD).await;
    let strategy = bad_flags();
    let mut flags = std::collections::BTreeSet::new();
    for i in 0..40 {
        let (args, env, flag) = strategy.new_tree(&mut runner).unwrap().current();
        let before = h.sim.audit().len();
        let mut cmd = h.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let context = format!("seed {seed} sample {i}: {args:?} {env:?}");
        assert!(!stderr.contains("panicked"), "{context}\n{stderr}");
        assert_eq!(out.status.code(), Some(2), "{context}\n{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{context}\n{stderr}");
        assert!(errors[0].contains(&flag), "{context}\n{stderr}");
        assert_eq!(h.sim.audit().len(), before, "{context}: requests sent");
        flags.insert(flag);
    }
    eprintln!(
        "40 generated bad flags and variables (seed {seed}), {} flags: each exit 2, one line naming it, no request sent",
        flags.len()
    );
}

/// Hostile exec plugins through the binary: whatever a plugin prints or however it
/// dies, deploy-pool ends with exit 1 and one line naming the plugin, no panic, and the
/// join token (which the plugin got on stdin and echoes) shown as `***`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_exec_plugins_through_the_binary() {
    let h = common::Harness::start("", "").await;
    let machines = h.path().join("machines");
    let good = rel::exec_pool_yaml(&h, "gamma", 2, &machines, "");
    let token = rel::EXEC_JOIN_TOKEN;
    let cases: &[(&str, &str, &str)] = &[
        (
            "garbage",
            "cat >/dev/null; echo 'this is not JSON {'",
            "not JSON",
        ),
        (
            "wrong-protocol",
            r#"cat >/dev/null; echo '{"protocol": 99, "machines": []}'"#,
            "protocol 99",
        ),
        (
            "dies-talking",
            "cat; echo 'it broke' >&2; exit 3",
            "exit status: 3",
        ),
        (
            "binary",
            r#"cat >/dev/null; printf '\377\376\000{"protocol":1'"#,
            "bad response",
        ),
        (
            "duplicates",
            r#"cat >/dev/null; echo '{"protocol":1,"machines":[{"name":"gamma-0","state":"running"},{"name":"gamma-0","state":"running"}]}'"#,
            "gamma-0",
        ),
        (
            "echoes-secrets",
            r#"exec python3 -c 'import json, sys; print(json.dumps({"protocol": 1, "error": {"message": "no room for " + sys.stdin.read()}}))'"#,
            "no room for",
        ),
    ];
    for (name, body, says) in cases {
        let program = h.path().join(format!("{name}.sh"));
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let examples =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-plugin.sh");
        h.write_config(&good.replace(
            &examples.display().to_string(),
            &program.display().to_string(),
        ));
        let run = h.kbg(&["-vvv", "deploy-pool", "gamma"]).await;
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains("panicked"), "{name}: {all}");
        assert_eq!(run.code, Some(1), "{name}: {all}");
        let errors = run.error_lines();
        assert_eq!(errors.len(), 1, "{name}: {}", run.stderr);
        assert!(
            errors[0].contains(&program.display().to_string()) && errors[0].contains(says),
            "{name}: {}",
            errors[0]
        );
        assert!(
            !all.contains(&token[7..]),
            "{name}: the join token leaked:\n{all}"
        );
        eprintln!("hostile plugin {name}: exit 1: {}", errors[0]);
    }
}
