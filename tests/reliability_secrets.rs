//! Issue 8, item 6: secrets never leave the places they are meant for.
//!
//! Canaries: the join token and CA hash (given to kbg in its environment), the rendered
//! user-data (a pool `template:` carrying a canary line, rendered per machine and handed
//! to the exec provider's plugin), and — with the bare-metal provider over a real sshd —
//! the SSH private key. The three commands, status and a dry run are run at every
//! verbosity (`-v` … `-vvvv`, `RUST_LOG=trace`) and every output format, and a buggy
//! plugin that prints the user-data it was given and fails is run too. Then every log,
//! every output, every Event, every ConfigMap (kbg's state among them), every Lease and
//! every Node is grepped for each canary.

mod common;
mod rel;

use common::Harness;
use kube::api::{Api, ListParams};

/// The join token (a kubeadm bootstrap token's shape) and its secret half.
const TOKEN: &str = "kbgcnr.canarytokensecre";
const TOKEN_SECRET: &str = "canarytokensecre";
/// The CA hash.
const CA_HASH: &str = "sha256:5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";
/// A line only the rendered user-data holds.
const USER_DATA: &str = "uDcAnArY7f3a9c";

/// The user-data template: cloud-init that carries the join token and the canary line
/// (last, where a plugin's last words would be).
const TEMPLATE: &str = "#cloud-config\n# machine {{ machine }} of pool {{ pool }} joins {{ join.endpoint }} with {{ join.token }} ({{ join.ca_cert_hash }})\nruncmd:\n  - [kubeadm, join, --token, \"{{ join.token }}\"]\n# uDcAnArY7f3a9c-{{ machine }}\n";

/// A plugin with a bug: asked to provision, it prints the request and the user-data it
/// was given on stderr, then fails. It holds no machines.
const LEAKY_PLUGIN: &str = r#"#!/bin/sh
exec python3 -c '
import json, sys
req = json.load(sys.stdin)
if req["op"] == "list":
    print(json.dumps({"protocol": 1, "machines": []}))
    sys.exit(0)
if req["op"] == "deprovision":
    print(json.dumps({"protocol": 1, "removed": [m["name"] for m in req["machines"]]}))
    sys.exit(0)
sys.stderr.write("request: %s\n" % json.dumps(req))
for m in req.get("machines") or []:
    sys.stderr.write(m.get("bootstrap") or "")
sys.exit(1)
'
"#;

/// Everything kbg left where people and tools can read it: Events, ConfigMaps, Leases,
/// Nodes, as JSON.
async fn cluster_text(h: &Harness) -> String {
    let client = h.client().await;
    let lp = ListParams::default();
    let mut text = String::new();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    text.push_str(&serde_json::to_string(&events.list(&lp).await.unwrap().items).unwrap());
    let core_events: Api<k8s_openapi::api::core::v1::Event> = Api::all(client.clone());
    text.push_str(&serde_json::to_string(&core_events.list(&lp).await.unwrap().items).unwrap());
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::all(client.clone());
    text.push_str(&serde_json::to_string(&cms.list(&lp).await.unwrap().items).unwrap());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::all(client.clone());
    text.push_str(&serde_json::to_string(&leases.list(&lp).await.unwrap().items).unwrap());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    text.push_str(&serde_json::to_string(&nodes.list(&lp).await.unwrap().items).unwrap());
    text
}

/// Run kbg with `args` (the join secrets in its environment, `RUST_LOG` if given),
/// expecting exit `code`; its stdout and stderr.
async fn run(h: &Harness, args: &[&str], rust_log: Option<&str>, code: i32) -> String {
    let mut cmd = h.command(args);
    cmd.env("KBG_JOIN_TOKEN", TOKEN)
        .env("KBG_JOIN_CA_CERT_HASH", CA_HASH);
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let out = cmd.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "{args:?}\n{text}");
    text
}

/// Where each canary was found, if anywhere.
fn leaks(place: &str, text: &str, canaries: &[(&str, String)]) -> Vec<String> {
    canaries
        .iter()
        .filter(|(_, c)| text.contains(c.as_str()))
        .map(|(what, _)| {
            let at = text
                .find(canaries.iter().find(|(w, _)| w == what).unwrap().1.as_str())
                .unwrap();
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            let to = (at + 80).min(text.len());
            let to = (to..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            format!("{what} in {place}: …{}…", &text[from..to])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_output_events_state_or_leases() {
    let h = Harness::start(rel::REPLACE, "").await;
    std::fs::write(h.path().join("user-data.j2"), TEMPLATE).unwrap();
    let leaky = h.path().join("leaky-plugin.sh");
    std::fs::write(&leaky, LEAKY_PLUGIN).unwrap();
    std::fs::set_permissions(&leaky, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let machines = h.path().join("machines");
    let beta = rel::exec_pool(&h, "beta", 3, &machines, "", TOKEN).replace(
        "    count: 3\n",
        "    count: 3\n    template: user-data.j2\n",
    );
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-plugin.sh");
    let broken = rel::exec_pool(&h, "broken", 1, &machines, "", TOKEN)
        .replace(
            "    count: 1\n",
            "    count: 1\n    template: user-data.j2\n",
        )
        .replace(&example.display().to_string(), &leaky.display().to_string());
    h.write_config(&format!(
        "cluster:\n  join:\n    endpoint: {}\npools:\n  alpha:\n    provider: sim\n    version: v1.32.4\n    count: 3\n{beta}{broken}",
        h.sim.addr()
    ));

    let runs: &[(&[&str], Option<&str>, i32)] = &[
        (&["-vvvv", "deploy-pool", "beta", "-o", "json"], None, 0),
        (&["deploy-pool", "broken", "-o", "yaml"], Some("trace"), 1),
        (&["-vv", "deploy-pool", "broken"], None, 1),
        (
            &[
                "-vvv",
                "migrate",
                "alpha",
                "beta",
                "--dry-run",
                "-o",
                "yaml",
            ],
            None,
            0,
        ),
        (&["-v", "migrate", "alpha", "beta", "-o", "json"], None, 0),
        (&["status", "-o", "json"], Some("trace"), 0),
        (&["-vvvv", "status", "-o", "yaml"], None, 0),
        (&["-vvv", "teardown", "alpha", "-o", "json"], None, 0),
        (&["teardown", "broken"], Some("trace"), 0),
    ];
    let mut found = Vec::new();
    let canaries = [
        ("the join token", TOKEN_SECRET.to_string()),
        ("the CA hash", CA_HASH[7..].to_string()),
        ("the user-data", USER_DATA.to_string()),
    ];
    let mut logged = 0;
    for (args, rust_log, code) in runs {
        let text = run(&h, args, *rust_log, *code).await;
        if args.contains(&"broken") && args.contains(&"deploy-pool") {
            // The plugin did print the user-data: kbg showed it redacted.
            assert!(text.contains("***"), "{args:?}\n{text}");
        }
        logged += text.len();
        found.extend(leaks(
            &format!("kbg {args:?} (RUST_LOG={rust_log:?})"),
            &text,
            &canaries,
        ));
    }
    // The user-data did reach the machines (the plugin's boot hook got it on stdin).
    let cluster = cluster_text(&h).await;
    assert!(cluster.contains("kbg-state"), "the state was read");
    found.extend(leaks(
        "the cluster's Events, ConfigMaps, Leases and Nodes",
        &cluster,
        &canaries,
    ));
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
    eprintln!(
        "secrets: {} runs ({} KiB of logs and output at -v … -vvvv and RUST_LOG=trace, json and yaml) and {} KiB of Events, ConfigMaps, Leases and Nodes: no join token, CA hash or user-data",
        runs.len(),
        logged / 1024,
        cluster.len() / 1024
    );
}

#[path = "../providers/metal/tests/support/mod.rs"]
mod metal_lab;

/// The SSH private key: pool `metal` of two bare-metal hosts, each a real sshd on
/// loopback, bootstrapped by kbg over SSH with the key (the hosts' `kubeadm join` test
/// double registers the nodes), then torn down over SSH; every line of the key's body is
/// grepped for in kbg's logs (`RUST_LOG=trace` logs russh's own messages too) and
/// output, and in the cluster. The join token and CA hash reached the hosts (their join
/// configuration holds them) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_key_never_reaches_logs_output_events_state_or_leases() {
    let h = Harness::start("", "").await;
    let lab = metal_lab::Lab::start(&["host-a", "host-b"], Some(&h.kubeconfig));
    let inventory = lab.inventory(|_| String::new());
    h.write_config(&format!(
        "cluster:\n  join:\n    endpoint: {}\npools:\n  metal:\n    provider: metal\n    version: v1.33.1\n    count: 2\n    labels: {{tier: web}}\n    metal:\n      inventory: {}\n      known_hosts: {}\n      connect_timeout_seconds: 60\n      bootstrap_timeout_seconds: 120\n      reset_timeout_seconds: 120\n",
        h.sim.addr(),
        inventory.display(),
        lab.known_hosts.display()
    ));
    let key = std::fs::read_to_string(&lab.key).unwrap();
    let mut canaries: Vec<(&str, String)> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(|l| ("a line of the SSH private key", l.to_string()))
        .collect();
    assert!(!canaries.is_empty());
    canaries.push(("the join token", TOKEN_SECRET.to_string()));
    canaries.push(("the CA hash", CA_HASH[7..].to_string()));
    let runs: &[(&[&str], Option<&str>)] = &[
        (&["-vvvv", "deploy-pool", "metal", "-o", "json"], None),
        (&["status", "-o", "yaml"], Some("trace")),
        (&["teardown", "metal", "-o", "json"], Some("trace")),
    ];
    let mut found = Vec::new();
    let mut logged = 0;
    for (args, rust_log) in runs {
        let text = run(&h, args, *rust_log, 0).await;
        logged += text.len();
        found.extend(leaks(
            &format!("kbg {args:?} (RUST_LOG={rust_log:?})"),
            &text,
            &canaries,
        ));
    }
    // The hosts did get the join token, over SSH.
    let join = lab
        .host("host-a")
        .read_state("join.yaml")
        .unwrap_or_default();
    assert!(
        join.contains(TOKEN),
        "the bootstrap did not reach the host: {join}"
    );
    let cluster = cluster_text(&h).await;
    found.extend(leaks(
        "the cluster's Events, ConfigMaps, Leases and Nodes",
        &cluster,
        &canaries,
    ));
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
    eprintln!(
        "SSH key: deploy-pool and teardown of 2 bare-metal hosts over SSH, {} KiB of logs (-vvvv, RUST_LOG=trace) and output: no line of the private key, no join token, no CA hash; none in {} KiB of Events, ConfigMaps, Leases and Nodes",
        logged / 1024,
        cluster.len() / 1024
    );
}
