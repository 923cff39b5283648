//! The exec provider against real programs: the example plugin (`examples/exec-plugin.sh`)
//! for the whole protocol, and small hostile scripts for every way a plugin can misbehave.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kbg_provider::{
    ErrorKind, JoinConfig, MachineState, PoolSpec, Provider, RemoteCommand, Secret, Taint,
    TaintEffect,
};
use kbg_provider_exec::{ExecError, ExecProvider};
use serde_json::{Value, json};

const TOKEN: &str = "abcdef.0123456789abcdef";

fn example_plugin() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/exec-plugin.sh");
    assert!(path.exists(), "{} is missing", path.display());
    assert!(
        which("python3").is_some(),
        "the example plugin needs python3 on PATH; run scripts/test-setup"
    );
    path.canonicalize().unwrap()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

fn pool(settings: Value) -> PoolSpec {
    PoolSpec {
        name: "beta".into(),
        version: "v1.31.2".into(),
        labels: BTreeMap::from([
            ("kbg.io/pool".to_string(), "beta".to_string()),
            ("tier".to_string(), "web".to_string()),
        ]),
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("web".into()),
            effect: TaintEffect::NoSchedule,
        }],
        settings,
        template: None,
        join: JoinConfig {
            api_server_endpoint: "10.0.0.10:6443".into(),
            token: Some(Secret::new(TOKEN)),
            ca_cert_hash: Some(Secret::new("sha256:00ff")),
        },
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A wrapper that records the plugin's argv and environment, then runs the example plugin.
fn spying_plugin(dir: &Path) -> PathBuf {
    script(
        dir,
        "spy.sh",
        &format!(
            "printf '%s\\n' \"$0\" \"$@\" > {d}/argv-$$\nenv > {d}/env-$$\nexec {p} \"$@\"",
            d = dir.display(),
            p = example_plugin().display()
        ),
    )
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn example_settings(dir: &Path, program: &Path, boot: &str) -> Value {
    json!({
        "program": program,
        "args": ["--verbose"],
        "config": {"state_dir": dir.join("state"), "boot_command": boot},
    })
}

#[tokio::test]
async fn the_example_plugin_provisions_lists_runs_and_deprovisions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The boot hook stands in for a machine booting from its user-data.
    let boot = format!(
        "cat > {d}/boot-$KBG_MACHINE; echo $KBG_MACHINE >> {d}/boots.log",
        d = d.display()
    );
    let spec = pool(example_settings(d, &spying_plugin(d), &boot));
    let p = ExecProvider::from_pool(&spec).unwrap();

    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let got: Vec<_> = report
        .machines
        .iter()
        .map(|m| (m.name.as_str(), m.state, m.provider_id.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "beta-0",
                MachineState::Running,
                Some("example:///beta/beta-0")
            ),
            (
                "beta-1",
                MachineState::Running,
                Some("example:///beta/beta-1")
            ),
        ]
    );

    // Each machine got its own cloud-init with the pool's version, labels, taints and the
    // join token: through stdin, the only way secrets travel.
    let user_data = fs::read_to_string(d.join("boot-beta-1")).unwrap();
    assert!(user_data.starts_with("#cloud-config"), "{user_data}");
    for want in [
        "name: \"beta-1\"",
        "kubelet=1.31.2-*",
        "node-labels: \"kbg.io/pool=beta,tier=web\"",
        "register-with-taints: \"dedicated=web:NoSchedule\"",
        TOKEN,
    ] {
        assert!(user_data.contains(want), "{want} not in {user_data}");
    }

    // Idempotent by name: a rerun (after a crash, say) makes nothing new.
    let again = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!(again.machines, report.machines);
    assert_eq!(
        fs::read_to_string(d.join("boots.log")).unwrap(),
        "beta-0\nbeta-1\n"
    );

    let listed = p.list(&spec).await.unwrap();
    assert_eq!(listed, report.machines);

    let out = p
        .run_command(
            &spec,
            &listed[0],
            &RemoteCommand {
                script: "echo hi; echo oops >&2; exit 3".into(),
                timeout_secs: 30,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "hi\n", "oops\n")
    );

    let gone = p.deprovision(&spec, &listed).await.unwrap();
    assert!(gone.failed.is_empty(), "{:?}", gone.failed);
    assert_eq!(gone.removed, names(&["beta-0", "beta-1"]));
    assert!(p.list(&spec).await.unwrap().is_empty());
    // Already gone is a success.
    let again = p.deprovision(&spec, &listed).await.unwrap();
    assert_eq!(again.removed, names(&["beta-0", "beta-1"]));

    // The secret never reached the plugin's argv or environment; its argv is what the
    // settings say and nothing more.
    let mut spied = 0;
    for entry in fs::read_dir(d).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with("argv-") || file.starts_with("env-") {
            spied += 1;
            let text = fs::read_to_string(&path).unwrap();
            assert!(!text.contains(TOKEN), "token in {file}");
            assert!(!text.contains("sha256:00ff"), "CA hash in {file}");
            if file.starts_with("argv-") {
                assert_eq!(text.lines().skip(1).collect::<Vec<_>>(), ["--verbose"]);
            }
        }
    }
    assert_eq!(spied, 2 * 7, "one argv and one env per request");
}

#[tokio::test]
async fn a_machine_that_fails_to_boot_is_reported_by_name_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let boot = "cat >/dev/null; if [ \"$KBG_MACHINE\" = beta-1 ]; then \
                echo 'no capacity in rack 3' >&2; exit 1; fi";
    let spec = pool(example_settings(d, &example_plugin(), boot));
    let p = ExecProvider::from_pool(&spec).unwrap();

    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2"]))
        .await
        .unwrap();
    let made: Vec<_> = report.machines.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(made, ["beta-0", "beta-2"]);
    assert_eq!(report.failed.len(), 1);
    let err = &report.failed[0];
    assert_eq!(err.machine.as_deref(), Some("beta-1"));
    assert!(!err.is_retryable());
    let line = err.to_string();
    assert!(
        line.starts_with("exec: machine beta-1: plugin `")
            && line.ends_with("hook exited with 1: no capacity in rack 3"),
        "{line}"
    );
    // Nothing leaked: the provider knows only the machines that exist.
    let listed: Vec<_> = p
        .list(&spec)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(listed, ["beta-0", "beta-2"]);
}

#[tokio::test]
async fn a_pool_template_replaces_the_built_in_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let template = d.join("mine.j2");
    fs::write(&template, "machine={{ machine }} version={{ semver }}\n").unwrap();
    let boot = format!("cat > {}/boot-$KBG_MACHINE", d.display());
    let mut spec = pool(example_settings(d, &example_plugin(), &boot));
    spec.template = Some(template.display().to_string());
    let p = ExecProvider::from_pool(&spec).unwrap();
    p.provision(&spec, &names(&["beta-0"])).await.unwrap();
    assert_eq!(
        fs::read_to_string(d.join("boot-beta-0")).unwrap(),
        "machine=beta-0 version=1.31.2\n"
    );

    // A template that cannot render is bad input, found before any plugin runs.
    fs::write(&template, "{{ no_such_variable }}").unwrap();
    let err = ExecProvider::from_pool(&spec).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::InvalidConfig {
            field: "pools.beta.template".into()
        }
    );
    spec.template = Some(d.join("missing.j2").display().to_string());
    let err = ExecProvider::from_pool(&spec).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[tokio::test]
async fn run_on_an_unknown_machine_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pool(example_settings(dir.path(), &example_plugin(), "true"));
    let p = ExecProvider::from_pool(&spec).unwrap();
    let ghost = kbg_provider::Machine {
        name: "beta-9".into(),
        pool: "beta".into(),
        provider_id: None,
        node_name: None,
        state: MachineState::Running,
        address: None,
        details: BTreeMap::new(),
    };
    let err = p
        .run_command(
            &spec,
            &ghost,
            &RemoteCommand {
                script: "true".into(),
                timeout_secs: 5,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.machine.as_deref(), Some("beta-9"));
}

/// A provider whose plugin is the shell `body`.
fn hostile(dir: &Path, body: &str, timeout_secs: u64) -> (PoolSpec, ExecProvider) {
    let program = script(dir, "plugin.sh", body);
    let spec = pool(json!({"program": program, "timeout_secs": timeout_secs, "bootstrap": "none"}));
    let p = ExecProvider::from_pool(&spec).unwrap();
    (spec, p)
}

#[tokio::test]
async fn output_that_is_not_a_response_is_a_typed_error_naming_the_program() {
    let dir = tempfile::tempdir().unwrap();
    for (body, says) in [
        ("cat >/dev/null; echo hello", "not JSON"),
        ("cat >/dev/null; echo '[1,2]'", "not a JSON object"),
        (
            "cat >/dev/null; echo '{\"machines\": []}'",
            "no \"protocol\" field",
        ),
        (
            "cat >/dev/null; echo '{\"protocol\": 2, \"machines\": []}'",
            "it speaks protocol 2, kbg speaks protocol 1",
        ),
        (
            "cat >/dev/null; echo '{\"protocol\": 1, \"machines\": [{\"name\": \"beta-0\"}]}'",
            "machines[0]: missing field `state`",
        ),
        ("cat >/dev/null", "not JSON"),
    ] {
        let (spec, p) = hostile(dir.path(), body, 30);
        let err = p.list(&spec).await.unwrap_err();
        let line = err.to_string();
        assert_eq!(err.kind, ErrorKind::Failed, "{body}");
        assert!(
            line.contains("plugin.sh") && line.contains(says),
            "{body}: {line}"
        );
        assert!(!line.contains('\n'), "one line: {line}");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<ExecError>())
            .expect("an ExecError source");
        assert!(
            matches!(source, ExecError::BadResponse { .. }),
            "{source:?}"
        );
    }
}

#[tokio::test]
async fn a_non_zero_exit_reports_its_last_words_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, p) = hostile(
        dir.path(),
        &format!("cat >/dev/null; echo starting >&2; echo 'boom: bad token {TOKEN}' >&2; exit 3"),
        30,
    );
    let err = p.provision(&spec, &names(&["beta-0"])).await.unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("exit status: 3") && line.ends_with("boom: bad token ***"),
        "{line}"
    );
    assert!(!line.contains(TOKEN));
    let Some(ExecError::Exit { stderr, .. }) =
        std::error::Error::source(&err).and_then(|s| s.downcast_ref::<ExecError>())
    else {
        panic!("{err:?}")
    };
    assert!(
        stderr.contains("starting") && !stderr.contains(TOKEN),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_plugin_error_object_keeps_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, p) = hostile(
        dir.path(),
        "cat >/dev/null; echo '{\"protocol\": 1, \"error\": {\"message\": \"MAAS API unreachable\", \"kind\": \"transient\"}}'; exit 1",
        30,
    );
    let err = p.list(&spec).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().ends_with("MAAS API unreachable"), "{err}");

    let (spec, p) = hostile(
        dir.path(),
        "cat >/dev/null; echo '{\"protocol\": 1, \"error\": {\"message\": \"set zone\", \"kind\": \"invalid_config\"}}'",
        30,
    );
    let err = p.list(&spec).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::InvalidConfig {
            field: "pools.beta.exec.config".into()
        }
    );
}

#[tokio::test]
async fn machines_a_plugin_forgets_are_failures_and_strangers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, p) = hostile(
        dir.path(),
        "cat >/dev/null; echo '{\"protocol\": 1, \"machines\": [{\"name\": \"beta-0\", \"state\": \"pending\"}, {\"name\": \"zeta\", \"state\": \"running\"}]}'",
        30,
    );
    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!(report.machines.len(), 1);
    assert_eq!(report.machines[0].name, "beta-0");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].machine.as_deref(), Some("beta-1"));
    assert!(report.failed[0].to_string().contains("did not report"));
}

#[tokio::test]
async fn a_plugin_past_its_deadline_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let (spec, p) = hostile(
        dir.path(),
        &format!(
            "echo working >&2; sleep 300 & echo $! > {}; wait",
            pidfile.display()
        ),
        // Long enough for a loaded machine to start the plugin and its child.
        8,
    );
    let err = p.list(&spec).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.is_retryable());
    let line = err.to_string();
    assert!(
        line.contains("did not answer `list` within 8 s")
            && line.ends_with("it last said: working"),
        "{line}"
    );
    // The `sleep` it started went with it (the whole process group is killed).
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc.exists() && !is_zombie(&proc) {
        assert!(Instant::now() < deadline, "child {pid} outlived its plugin");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_zombie(proc: &Path) -> bool {
    fs::read_to_string(proc.join("stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[tokio::test]
async fn a_flood_on_stdout_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, p) = hostile(dir.path(), "head -c 20000000 /dev/zero", 60);
    let err = p.list(&spec).await.unwrap_err();
    assert!(err.to_string().contains("more than 16 MiB"), "{err}");
}

#[tokio::test]
async fn a_plugin_that_ignores_its_request_still_counts() {
    // It never reads stdin; kbg's write may hit a closed pipe, which is not the error.
    let dir = tempfile::tempdir().unwrap();
    let (spec, p) = hostile(dir.path(), "echo '{\"protocol\": 1, \"machines\": []}'", 30);
    let many: Vec<String> = (0..2000).map(|i| format!("beta-{i}")).collect();
    let report = p.provision(&spec, &many).await.unwrap();
    assert_eq!(report.failed.len(), many.len());
    assert!(p.list(&spec).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_program_is_a_config_error() {
    let spec = pool(json!({"program": "/nonexistent/kbg-plugin"}));
    let p = ExecProvider::from_pool(&spec).unwrap();
    let err = p.list(&spec).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::InvalidConfig {
            field: "pools.beta.exec.program".into()
        }
    );
    assert!(err.to_string().contains("/nonexistent/kbg-plugin"), "{err}");
}
