//! The AWS EC2 provider end to end: `kbg deploy-pool` → `migrate` → `teardown` through
//! the real binary with `provider: aws` and `endpoint_url` pointing at moto's EC2 server
//! (the AWS provider's own harness, `providers/aws/tests/support/mod.rs`), and the
//! simulated cluster as Kubernetes.
//!
//! Nothing boots in moto, so a small **joiner** plays the part of the instances:
//! - for each running instance of a pool (`AwsProvider::running_instances`), once, what
//!   the instance's first boot does: its user data (`DescribeInstanceAttribute`) goes to
//!   the kubelet double (`tests/support/kubelet-double.py`), which registers the Node the
//!   kubelet configured by it would: the name, labels and taints of the join
//!   configuration, the kubelet version it installs, and the provider ID the boot script
//!   reads from instance metadata (IMDSv2), here the instance's own AZ and ID as EC2
//!   reports them. Like a kubelet, it registers a node once: a node kbg deletes is not
//!   registered again;
//! - a node whose instance is no longer running is deleted, as the cloud-controller-
//!   manager's node lifecycle controller does;
//! - machines named in `never_boot` never register (an instance whose kubelet never came
//!   up).

mod common;
mod support;

#[path = "../providers/aws/tests/support/mod.rs"]
#[allow(missing_docs, unused)]
mod moto;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{InstanceAttributeName, InstanceStateName};
use base64::Engine as _;
use common::{Harness, Run, watch_pdbs};
use k8s_openapi::api::core::v1::Node;
use kbg_provider::PoolSpec;
use kbg_provider_aws::AwsProvider;
use kube::api::{Api, DeleteParams, ListParams};
use moto::{Fixture, Moto};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// What the kbg binary needs to reach moto: fixed credentials, no instance metadata.
const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The part of the join token that must never show in kbg's output.
const TOKEN_SECRET: &str = "n0tar3alt0ken000";

/// The `aws:` settings of every pool: moto's endpoint and the fixture's VPC.
fn settings(moto: &Moto, fx: &Fixture) -> serde_json::Value {
    json!({
        "cluster_name": moto::CLUSTER,
        "region": moto::REGION,
        "endpoint_url": moto.endpoint,
        "ami": fx.ami,
        "instance_type": "t3.medium",
        "subnets": fx.subnets,
        "security_groups": [fx.security_group],
        "wait_timeout_secs": 120,
    })
}

/// `kbg.yaml` with AWS pools `pools` (name, version, count, extra lines).
fn kbg_yaml(moto: &Moto, fx: &Fixture, pools: &[(&str, &str, usize, &str)]) -> String {
    let mut out = format!("{}pools:\n", support::JOIN);
    for (name, version, count, extra) in pools {
        out.push_str(&format!(
            "  {name}:\n    provider: aws\n    version: {version}\n    count: {count}\n{extra}    aws: {}\n",
            settings(moto, fx)
        ));
    }
    out
}

/// The joiner (see the module's doc); stops when dropped.
struct Joiner {
    task: tokio::task::JoinHandle<()>,
    /// Instance ID → node name, for every node it registered.
    registered: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Joiner {
    fn start(
        h: &Harness,
        moto: &Moto,
        fx: &Fixture,
        pools: &[&str],
        client: kube::Client,
        never_boot: &[&str],
    ) -> Joiner {
        let sdk = moto.sdk_config();
        let ec2 = moto.client();
        let providers: Vec<(PoolSpec, AwsProvider)> = pools
            .iter()
            .map(|p| {
                let spec = PoolSpec {
                    settings: settings(moto, fx),
                    ..moto::pool(p, fx, json!({}))
                };
                let aws = AwsProvider::from_pool_with_config(&spec, &sdk).unwrap();
                (spec, aws)
            })
            .collect();
        let cluster = support::cluster_json(h);
        let never: BTreeSet<String> = never_boot.iter().map(ToString::to_string).collect();
        let registered = Arc::new(Mutex::new(BTreeMap::new()));
        let reg = registered.clone();
        let task = tokio::spawn(async move {
            let nodes: Api<Node> = Api::all(client);
            loop {
                for (_, aws) in &providers {
                    let Ok(running) = aws.running_instances().await else {
                        continue;
                    };
                    for i in running {
                        if never.contains(&i.machine)
                            || reg.lock().unwrap().contains_key(&i.instance_id)
                        {
                            continue;
                        }
                        if let Some(node) = boot(&ec2, &cluster, &i).await {
                            reg.lock().unwrap().insert(i.instance_id.clone(), node);
                        }
                    }
                }
                // Node lifecycle: a node whose instance is gone goes too.
                let live: BTreeSet<String> = moto::all_instances(&ec2)
                    .await
                    .iter()
                    .filter(|i| {
                        matches!(
                            moto::state(i),
                            InstanceStateName::Running | InstanceStateName::Pending
                        )
                    })
                    .filter_map(|i| i.instance_id().map(str::to_string))
                    .collect();
                if let Ok(list) = nodes.list(&ListParams::default()).await {
                    for n in list.items {
                        let id = n
                            .spec
                            .as_ref()
                            .and_then(|s| s.provider_id.as_deref())
                            .and_then(kbg_provider_aws::instance_id_from_provider_id)
                            .map(str::to_string);
                        if id.is_some_and(|id| !live.contains(&id)) {
                            let _ = nodes
                                .delete(
                                    n.metadata.name.as_deref().unwrap(),
                                    &DeleteParams::default(),
                                )
                                .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Joiner { task, registered }
    }
}

/// The first boot of instance `i`: its user data to the kubelet double, with what
/// instance metadata would answer. The node name it registered, or `None` if it could
/// not (tried again on the next round).
async fn boot(
    ec2: &aws_sdk_ec2::Client,
    cluster: &Path,
    i: &kbg_provider_aws::PoolInstance,
) -> Option<String> {
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(&i.instance_id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .ok()?;
    let b64 = attr.user_data()?.value()?;
    let user_data = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let record = cluster.with_file_name(format!("booted-{}", i.instance_id));
    let mut child = tokio::process::Command::new("python3")
        .arg(support::kubelet_double())
        .args(["--cluster", cluster.to_str()?])
        .args(["--instance-id", &i.instance_id])
        .args(["--availability-zone", &i.availability_zone])
        .args(["--record", record.to_str()?])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the kubelet double");
    child.stdin.take()?.write_all(&user_data).await.ok()?;
    let out = child.wait_with_output().await.ok()?;
    assert!(
        out.status.success(),
        "the kubelet double could not register instance {}: {}",
        i.instance_id,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read_to_string(record).ok()?.trim().to_string())
}

/// Instance states of pool `pool` in moto, by machine (`kbg.io/machine`), every state.
async fn instances(ec2: &aws_sdk_ec2::Client, pool: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in moto::all_instances(ec2).await {
        let tags = moto::tags(&i);
        if tags.get("kbg.io/pool").map(String::as_str) != Some(pool) {
            continue;
        }
        out.entry(tags["kbg.io/machine"].clone())
            .or_default()
            .push(moto::state(&i).as_str().to_string());
    }
    out
}

fn all_in(states: &BTreeMap<String, Vec<String>>, state: &str) -> bool {
    states.values().flatten().all(|s| s == state)
}

const BETA_LABELS: &str = "    labels: {tier: web}\n    taints: [\"dedicated=web:NoSchedule\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_migrate_teardown_on_ec2() {
    support::need_python();
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = moto::fixture(&ec2).await;
    let h = Harness::start(support::SCENARIO, "").await;
    h.write_config(&kbg_yaml(
        &moto,
        &fx,
        &[
            ("alpha", "v1.32.4", 2, ""),
            ("beta", "v1.33.1", 2, BETA_LABELS),
        ],
    ));
    let client = h.client().await;
    let joiner = Joiner::start(&h, &moto, &fx, &["alpha", "beta"], client.clone(), &[]);
    let mut said = String::new();
    let mut kbg = async |args: &[&str]| -> Run {
        let run = support::kbg_env(&h, args, AWS_ENV).await;
        said.push_str(&run.stdout);
        said.push_str(&run.stderr);
        run
    };

    let run = kbg(&["-v", "deploy-pool", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["nodes_ready"], 2, "{}", run.stdout);
    support::workloads_ready_on(&client, "alpha").await;
    let run = kbg(&["-v", "deploy-pool", "beta", "-o", "json"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["nodes_ready"], 2, "{report}");
    let nodes: Api<Node> = Api::all(client.clone());
    for m in report["machines"].as_array().unwrap() {
        // The node is named after the machine and carries the provider ID the boot
        // script read from instance metadata, which is the machine's.
        let node = nodes.get(m["name"].as_str().unwrap()).await.unwrap();
        assert_eq!(m["node"], m["name"]);
        let pid = node.spec.as_ref().unwrap().provider_id.clone().unwrap();
        assert_eq!(m["provider_id"], pid.as_str(), "{m}");
        assert!(pid.starts_with("aws:///eu-west-1"), "{pid}");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["tier"], "web");
        assert_eq!(labels["kbg.io/pool"], "beta");
        let taints = node.spec.unwrap().taints.unwrap_or_default();
        assert!(taints.iter().any(|t| t.key == "dedicated"), "{taints:?}");
        let info = node.status.unwrap().node_info.unwrap();
        assert_eq!(info.kubelet_version, "v1.33.1");
    }
    // Spread over the two subnets' AZs, round robin.
    let zones: BTreeSet<String> = report["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["provider_id"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(3)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(zones.len(), 2, "{zones:?}");

    let margins = watch_pdbs(client.clone());
    let run = kbg(&["-v", "migrate", "alpha", "beta", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["pods_evicted"], support::PODS_TO_MOVE);
    let run = kbg(&["-v", "teardown", "alpha", "-o", "json"]).await;
    run.expect_code(0);
    assert_eq!(
        run.json()["machines_deprovisioned"],
        json!(["alpha-0", "alpha-1"])
    );
    let margins = support::assert_moved(&h, &client, "alpha", "beta", &margins).await;

    let alpha = instances(&ec2, "alpha").await;
    let beta = instances(&ec2, "beta").await;
    assert_eq!(alpha.len(), 2, "{alpha:?}");
    assert!(all_in(&alpha, "terminated"), "{alpha:?}");
    assert_eq!(beta.len(), 2, "{beta:?}");
    assert!(all_in(&beta, "running"), "{beta:?}");
    assert!(
        alpha.values().chain(beta.values()).all(|v| v.len() == 1),
        "one instance per machine, never two"
    );
    assert_eq!(joiner.registered.lock().unwrap().len(), 4);
    assert!(
        !said.contains(TOKEN_SECRET),
        "the join token reached kbg's output"
    );
    println!(
        "figures: aws: {} kbg requests, {} evictions allowed, moto instances alpha {alpha:?} beta {beta:?}, PDB margins {margins:?}",
        h.kbg_requests().len(),
        h.sim.stats().evictions_allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_joins_is_terminated_and_nothing_is_leaked() {
    support::need_python();
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = moto::fixture(&ec2).await;
    let h = Harness::start("", "").await;
    h.write_config(&kbg_yaml(
        &moto,
        &fx,
        &[("gamma", "v1.33.1", 3, BETA_LABELS)],
    ));
    let client = h.client().await;
    let _joiner = Joiner::start(&h, &moto, &fx, &["gamma"], client.clone(), &["gamma-1"]);

    let run = support::kbg_env(
        &h,
        &[
            "deploy-pool",
            "gamma",
            "--timeout",
            "2m",
            "--cleanup-on-failure",
            "-o",
            "json",
        ],
        AWS_ENV,
    )
    .await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(
        report["never_joined"],
        json!([{"name": "gamma-1", "reason": "no node registered within --timeout 2m0s"}]),
        "{report}"
    );
    assert_eq!(report["cleaned_up"], json!(["gamma-1"]));
    let gamma = instances(&ec2, "gamma").await;
    assert_eq!(gamma["gamma-1"], ["terminated"], "{gamma:?}");
    assert_eq!(gamma["gamma-0"], ["running"]);
    assert_eq!(gamma["gamma-2"], ["running"]);

    support::kbg_env(&h, &["teardown", "gamma"], AWS_ENV)
        .await
        .expect_code(0);
    let gamma = instances(&ec2, "gamma").await;
    assert!(all_in(&gamma, "terminated"), "{gamma:?}");
    assert_eq!(gamma.len(), 3, "{gamma:?}");
    assert!(support::pool_nodes(&client, "gamma").await.is_empty());
}
