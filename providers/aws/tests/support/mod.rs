//! Test harness: a real moto EC2 server on 127.0.0.1, a VPC with two subnets in two AZs,
//! a security group and a registered AMI in it, and pools pointed at it.
//!
//! One server per test (started in about a second), so tests run in parallel and never
//! see each other's instances. The server is found through `KBG_TEST_MOTO`, then
//! `PATH`; when it is missing the test fails with a message naming `scripts/test-setup`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};
use kbg_provider::{JoinConfig, PoolSpec, Secret, Taint, TaintEffect};

/// The region every test uses; not us-east-1, so a region that does not reach the SDK
/// would show.
pub const REGION: &str = "eu-west-1";
/// The `cluster_name` of every test pool.
pub const CLUSTER: &str = "kbg-test";
/// The join token in every test pool: a canary that must never show in a log line.
pub const CANARY_TOKEN: &str = "canary.kbgcanary0secret";
/// The CA hash in every test pool: also secret.
pub const CANARY_CA_HASH: &str =
    "sha256:c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KBG_TEST_MOTO") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("moto_server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "moto_server (moto's EC2 emulator) was not found: set KBG_TEST_MOTO to its path, or run \
         scripts/test-setup, which installs moto[server] from PyPI"
    );
}

/// A running moto server; killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// A fresh server with moto's default AMIs turned off.
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// A fresh server with extra environment (`MOTO_ENABLE_AMI_VALIDATION=true`, …).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let bin = moto_binary();
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port on 127.0.0.1")
                .port();
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); set KBG_TEST_MOTO or run scripts/test-setup",
                    bin.display()
                )
            });
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            // Generous: a loaded 2-core machine can take several seconds to import moto.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if let Ok(Some(status)) = moto.child.try_wait() {
                    last_error = format!("moto_server exited with {status} (port {port} taken?)");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return moto;
                }
                if Instant::now() > deadline {
                    panic!("moto_server did not listen on port {port} within 90 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("could not start moto_server: {last_error}");
    }

    /// An SDK configuration for this server: fixed credentials and region, no retries
    /// (a retry would hide what a test looks at), nothing from the environment.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "kbg-tests",
            )))
            .retry_config(RetryConfig::disabled())
            .build()
    }

    /// A plain EC2 client for this server, for setting up and checking.
    pub fn client(&self) -> Client {
        Client::new(&self.sdk_config())
    }
}

/// What the tests launch into.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// A registered AMI.
    pub ami: String,
    /// Two subnets, in `eu-west-1a` and `eu-west-1b`.
    pub subnets: Vec<String>,
    /// Their AZs, in the same order.
    pub zones: Vec<String>,
    /// A security group in the VPC.
    pub security_group: String,
}

/// A VPC with two subnets in two AZs, a security group and an AMI. Waits (bounded) for
/// the server's first answer, which is slow while moto loads its EC2 backend.
pub async fn fixture(client: &Client) -> Fixture {
    let deadline = Instant::now() + Duration::from_secs(90);
    let vpc = loop {
        match client.create_vpc().cidr_block("10.0.0.0/16").send().await {
            Ok(out) => break out.vpc.unwrap().vpc_id.unwrap(),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("moto does not answer CreateVpc: {e:?}"),
        }
    };
    let zones = vec![format!("{REGION}a"), format!("{REGION}b")];
    let mut subnets = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        let out = client
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{}.0/24", i + 1))
            .availability_zone(zone)
            .send()
            .await
            .expect("CreateSubnet");
        subnets.push(out.subnet.unwrap().subnet_id.unwrap());
    }
    let security_group = client
        .create_security_group()
        .group_name("kbg-nodes")
        .description("kbg test nodes")
        .vpc_id(&vpc)
        .send()
        .await
        .expect("CreateSecurityGroup")
        .group_id
        .unwrap();
    let ami = client
        .register_image()
        .name("kbg-test-node-v1.31.2")
        .description("kbg test image")
        .send()
        .await
        .expect("RegisterImage")
        .image_id
        .unwrap();
    Fixture {
        ami,
        subnets,
        zones,
        security_group,
    }
}

/// A pool of version v1.31.2 with a label and a taint, launching from `fx`, with
/// `extra` settings merged over the defaults (a `null` value removes a default).
pub fn pool(name: &str, fx: &Fixture, extra: serde_json::Value) -> PoolSpec {
    let mut settings = serde_json::json!({
        "cluster_name": CLUSTER,
        "ami": fx.ami,
        "instance_type": "t3.medium",
        "subnets": fx.subnets,
        "security_groups": [fx.security_group],
        "tags": {"team": "platform"},
        "wait_timeout_secs": 120,
    });
    for (k, v) in extra.as_object().expect("extra settings are a map") {
        if v.is_null() {
            settings.as_object_mut().unwrap().remove(k);
        } else {
            settings[k] = v.clone();
        }
    }
    PoolSpec {
        name: name.into(),
        version: "v1.31.2".into(),
        labels: BTreeMap::from([
            ("kbg.io/pool".to_string(), name.to_string()),
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
            token: Some(Secret::new(CANARY_TOKEN)),
            ca_cert_hash: Some(Secret::new(CANARY_CA_HASH)),
        },
    }
}

/// `<pool>-0` … `<pool>-<n-1>`.
pub fn names(pool: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| kbg_provider::machine_name(pool, i))
        .collect()
}

/// Every instance moto knows, in any state, with no filter at all.
pub async fn all_instances(client: &Client) -> Vec<Instance> {
    let mut pages = client.describe_instances().into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(r) = pages.next().await {
        out.extend(r.expect("DescribeInstances").instances().iter().cloned());
    }
    out
}

/// The instances not terminated.
pub async fn live_instances(client: &Client) -> Vec<Instance> {
    all_instances(client)
        .await
        .into_iter()
        .filter(|i| state(i) != InstanceStateName::Terminated)
        .collect()
}

/// An instance's state.
pub fn state(i: &Instance) -> InstanceStateName {
    i.state().and_then(|s| s.name()).cloned().expect("a state")
}

/// An instance's tags as a map.
pub fn tags(i: &Instance) -> BTreeMap<String, String> {
    i.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A filter on a tag.
pub fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}
