//! The EC2 provider against moto's EC2 server: real HTTP, the real SDK, one server per
//! test.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use kbg_provider::bootstrap::{self, BootstrapContext, BuiltinTemplate};
use kbg_provider::{ErrorKind, Machine, MachineState, Provider, RemoteCommand};
use kbg_provider_aws::plan::client_token;
use kbg_provider_aws::{AwsProvider, MACHINE_TAG, POOL_TAG, cluster_tag};
use serde_json::json;

use support::{CLUSTER, Moto, fixture, live_instances, names, pool, state, tags};

fn provider(moto: &Moto, spec: &kbg_provider::PoolSpec) -> AwsProvider {
    AwsProvider::from_pool_with_config(spec, &moto.sdk_config()).expect("valid settings")
}

fn ids(machines: &[Machine]) -> BTreeSet<String> {
    machines
        .iter()
        .map(|m| m.details["instance-id"].clone())
        .collect()
}

#[tokio::test]
async fn provisions_three_tagged_running_machines_spread_over_the_subnets() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let aws = provider(&moto, &beta);

    let report = aws.provision(&beta, &names("beta", 3)).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report
            .machines
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["beta-0", "beta-1", "beta-2"]
    );

    let live = live_instances(&ec2).await;
    assert_eq!(live.len(), 3, "one instance per machine");
    for (i, m) in report.machines.iter().enumerate() {
        assert_eq!(m.state, MachineState::Running);
        assert_eq!(m.pool, "beta");
        // Round robin over the two subnets, so over both AZs.
        let zone = &fx.zones[i % 2];
        let id = &m.details["instance-id"];
        assert_eq!(
            m.provider_id.as_deref(),
            Some(format!("aws:///{zone}/{id}").as_str())
        );
        assert_eq!(m.details["subnet"], fx.subnets[i % 2]);
        assert_eq!(m.details["instance-type"], "t3.medium");
        // kbg's built-in template registers the node under the machine name.
        assert_eq!(m.node_name.as_deref(), Some(m.name.as_str()));
        assert!(m.address.as_deref().is_some_and(|a| a.starts_with("10.0.")));

        let instance = live
            .iter()
            .find(|x| x.instance_id() == Some(id.as_str()))
            .unwrap();
        assert_eq!(instance.image_id(), Some(fx.ami.as_str()));
        assert_eq!(
            instance
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id())
                .collect::<Vec<_>>(),
            [fx.security_group.as_str()]
        );
        let t = tags(instance);
        assert_eq!(t[POOL_TAG], "beta");
        assert_eq!(t[MACHINE_TAG], m.name);
        assert_eq!(t[&cluster_tag(CLUSTER)], "owned");
        assert_eq!(t["Name"], m.name);
        assert_eq!(t["team"], "platform");
        // The launch carried the token derived from cluster, pool, machine and type.
        assert_eq!(
            instance.client_token(),
            Some(client_token(CLUSTER, "beta", &m.name, Some("t3.medium"), 0).as_str())
        );
    }

    // Volumes are tagged at launch too, so nothing kbg makes is untagged.
    let volumes = ec2
        .describe_volumes()
        .filters(support::tag_filter(POOL_TAG, "beta"))
        .send()
        .await
        .unwrap();
    assert_eq!(volumes.volumes().len(), 3);
}

#[tokio::test]
async fn a_rerun_after_a_crash_launches_only_what_is_missing() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));

    // The first run got two machines out before the process died.
    let first = provider(&moto, &beta)
        .provision(&beta, &names("beta", 2))
        .await
        .unwrap();
    assert_eq!(first.machines.len(), 2);
    assert_eq!(live_instances(&ec2).await.len(), 2);

    // A new process (a new provider) runs the whole request again.
    let rerun = provider(&moto, &beta)
        .provision(&beta, &names("beta", 3))
        .await
        .unwrap();
    assert!(rerun.failed.is_empty(), "{:?}", rerun.failed);
    assert_eq!(rerun.machines.len(), 3);
    assert_eq!(
        live_instances(&ec2).await.len(),
        3,
        "only beta-2 was launched"
    );
    assert!(
        ids(&first.machines).is_subset(&ids(&rerun.machines)),
        "beta-0 and beta-1 are the same instances as before"
    );

    // And once more: nothing new at all.
    let again = provider(&moto, &beta)
        .provision(&beta, &names("beta", 3))
        .await
        .unwrap();
    assert_eq!(ids(&again.machines), ids(&rerun.machines));
    assert_eq!(live_instances(&ec2).await.len(), 3);
}

/// Launch one instance behind the provider's back, tagged with `tags`.
async fn launch_tagged(ec2: &aws_sdk_ec2::Client, ami: &str, tags: &[(&str, &str)]) -> String {
    let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
    }
    let mut req = ec2.run_instances().image_id(ami).min_count(1).max_count(1);
    if !tags.is_empty() {
        req = req.tag_specifications(spec.build());
    }
    req.send().await.unwrap().instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn list_finds_the_pools_instances_by_tag_and_nothing_else() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let made = provider(&moto, &beta)
        .provision(&beta, &names("beta", 3))
        .await
        .unwrap();

    // Instances that must not be listed: one untagged, one with the pool tag of
    // another cluster, and one of the pool that is terminated.
    launch_tagged(&ec2, &fx.ami, &[]).await;
    let cluster = cluster_tag(CLUSTER);
    launch_tagged(
        &ec2,
        &fx.ami,
        &[
            (POOL_TAG, "beta"),
            (MACHINE_TAG, "beta-0"),
            ("kubernetes.io/cluster/other", "owned"),
        ],
    )
    .await;
    let dead = launch_tagged(
        &ec2,
        &fx.ami,
        &[
            (POOL_TAG, "beta"),
            (MACHINE_TAG, "beta-9"),
            (&cluster, "owned"),
        ],
    )
    .await;
    ec2.terminate_instances()
        .instance_ids(&dead)
        .send()
        .await
        .unwrap();

    let listed = provider(&moto, &beta).list(&beta).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["beta-0", "beta-1", "beta-2"]
    );
    assert_eq!(
        listed, made.machines,
        "list reports what provision reported"
    );

    // The other cluster's beta-0 does not count as ours either: a rerun launches
    // nothing.
    let rerun = provider(&moto, &beta)
        .provision(&beta, &names("beta", 3))
        .await
        .unwrap();
    assert_eq!(ids(&rerun.machines), ids(&made.machines));

    // What a kubelet stand-in needs: running instances with AZ, ID and private DNS.
    let running = provider(&moto, &beta).running_instances().await.unwrap();
    assert_eq!(running.len(), 3);
    for r in &running {
        let m = listed.iter().find(|m| m.name == r.machine).unwrap();
        assert_eq!(Some(r.provider_id()), m.provider_id);
        assert!(r.private_dns_name.is_some(), "{r:?}");
    }
}

#[tokio::test]
async fn two_pools_never_mix() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let alpha = pool("alpha", &fx, json!({}));
    let beta = pool("beta", &fx, json!({}));
    let aws_alpha = provider(&moto, &alpha);
    let aws_beta = provider(&moto, &beta);

    let a = aws_alpha
        .provision(&alpha, &names("alpha", 2))
        .await
        .unwrap();
    let b = aws_beta.provision(&beta, &names("beta", 3)).await.unwrap();
    assert_eq!(live_instances(&ec2).await.len(), 5);
    assert!(ids(&a.machines).is_disjoint(&ids(&b.machines)));
    assert_eq!(aws_alpha.list(&alpha).await.unwrap(), a.machines);
    assert_eq!(aws_beta.list(&beta).await.unwrap(), b.machines);

    // beta's provider, handed alpha's machines, terminates none of them.
    let wrong = aws_beta.deprovision(&beta, &a.machines).await.unwrap();
    assert!(wrong.removed.is_empty(), "{:?}", wrong.removed);
    assert_eq!(wrong.failed.len(), 2);
    for e in &wrong.failed {
        assert!(e.to_string().contains("not terminating it"), "{e}");
    }
    assert_eq!(live_instances(&ec2).await.len(), 5);

    // A provider built for one pool refuses to act on another.
    let err = aws_beta.list(&alpha).await.unwrap_err();
    assert!(err.to_string().contains("built for pool beta"), "{err}");

    // Tearing alpha down leaves beta whole.
    let gone = aws_alpha.deprovision(&alpha, &a.machines).await.unwrap();
    assert_eq!(gone.removed, ["alpha-0", "alpha-1"]);
    assert!(aws_alpha.list(&alpha).await.unwrap().is_empty());
    assert_eq!(aws_beta.list(&beta).await.unwrap(), b.machines);
}

#[tokio::test]
async fn user_data_is_the_rendered_template_with_the_pools_version_labels_and_taints() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let report = provider(&moto, &beta)
        .provision(&beta, &names("beta", 2))
        .await
        .unwrap();

    for m in &report.machines {
        let attr = ec2
            .describe_instance_attribute()
            .instance_id(&m.details["instance-id"])
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let b64 = attr.user_data().and_then(|u| u.value()).expect("user data");
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64"),
        )
        .unwrap();
        let expected = bootstrap::render_builtin(
            BuiltinTemplate::CloudInitKubeadm,
            &BootstrapContext::new(&beta, &m.name).on_cloud("aws"),
        )
        .unwrap();
        assert_eq!(text, expected.expose());
        // The kubelet registers the machine's provider ID, read from instance metadata at
        // boot, under the machine's name: what the provider says the node will be.
        assert!(text.contains("provider-id: \"@PROVIDER_ID@\""));
        assert!(text.contains("sed -i \"s|@PROVIDER_ID@|aws:///$az/$id|\""));
        assert_eq!(m.node_name.as_deref(), Some(m.name.as_str()));
        assert_eq!(
            m.provider_id.as_deref(),
            Some(format!("aws:///{}/{}", m.details["zone"], m.details["instance-id"]).as_str())
        );
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains("kubelet=1.31.2-*"), "the pool's version");
        assert!(text.contains("node-labels: \"kbg.io/pool=beta,tier=web\""));
        assert!(text.contains("register-with-taints: \"dedicated=web:NoSchedule\""));
        assert!(
            text.contains(&format!("name: \"{}\"", m.name)),
            "per machine"
        );
        assert!(
            text.contains(support::CANARY_TOKEN),
            "the join token is delivered"
        );
    }
}

#[tokio::test]
async fn deprovision_leaves_nothing_running_and_already_gone_is_success() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let aws = provider(&moto, &beta);
    let made = aws.provision(&beta, &names("beta", 3)).await.unwrap();

    let report = aws.deprovision(&beta, &made.machines).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.removed, ["beta-0", "beta-1", "beta-2"]);
    assert!(live_instances(&ec2).await.is_empty());
    for i in support::all_instances(&ec2).await {
        assert_eq!(state(&i), aws_sdk_ec2::types::InstanceStateName::Terminated);
    }
    assert!(aws.list(&beta).await.unwrap().is_empty());

    // Again, after a crash: the same machines are already gone, which is success; so
    // is a machine whose instance EC2 has never heard of.
    let mut unknown = made.machines[0].clone();
    unknown.name = "beta-7".into();
    unknown.provider_id = Some("aws:///eu-west-1a/i-0123456789abcdef0".into());
    unknown.details.clear();
    let mut again_for = made.machines.clone();
    again_for.push(unknown);
    let again = aws.deprovision(&beta, &again_for).await.unwrap();
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(again.removed, ["beta-0", "beta-1", "beta-2", "beta-7"]);
}

#[tokio::test]
async fn a_bad_ami_gives_one_clear_line_and_leaves_no_instance() {
    let moto = Moto::start_with(&[("MOTO_ENABLE_AMI_VALIDATION", "true")]);
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({"ami": "ami-0123456789abcdef0"}));

    let err = provider(&moto, &beta)
        .provision(&beta, &names("beta", 3))
        .await
        .expect_err("an unknown AMI fails the whole request");
    let line = err.to_string();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.starts_with(
            "aws: machine beta-0: RunInstances for pool beta failed: InvalidAMIID.NotFound: "
        ),
        "{line}"
    );
    assert!(
        line.contains("ami-0123456789abcdef0"),
        "AWS's own message: {line}"
    );
    assert!(line.ends_with("(check pools.beta.aws.ami)"), "{line}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the SDK error stays as the source"
    );
    assert!(support::all_instances(&ec2).await.is_empty());

    // The registered AMI works on the same server, so the check is real.
    let good = pool("beta", &fx, json!({}));
    let ok = provider(&moto, &good)
        .provision(&good, &names("beta", 1))
        .await
        .unwrap();
    assert_eq!(ok.machines.len(), 1);
}

#[tokio::test]
async fn missing_subnets_and_groups_name_their_setting() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let cases = [
        (
            json!({"subnets": ["subnet-0123456789abcdef0"]}),
            "InvalidSubnetID.NotFound",
            "pools.beta.aws.subnets",
        ),
        (
            json!({"security_groups": ["sg-0123456789abcdef0"]}),
            "InvalidGroup.NotFound",
            "pools.beta.aws.security_groups",
        ),
    ];
    for (extra, code, field) in cases {
        let beta = pool("beta", &fx, extra);
        let err = provider(&moto, &beta)
            .provision(&beta, &names("beta", 2))
            .await
            .unwrap_err();
        let line = err.to_string();
        assert_eq!(err.kind, ErrorKind::NotFound, "{line}");
        assert!(line.contains(code), "{line}");
        assert!(line.contains(field), "{line}");
    }
    assert!(live_instances(&ec2).await.is_empty());
}

#[tokio::test]
async fn a_launch_template_by_name_is_used_at_its_latest_version() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let data = |itype: &str| {
        aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
            .image_id(&fx.ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::from(itype))
            .build()
    };
    ec2.create_launch_template()
        .launch_template_name("kbg-workers")
        .launch_template_data(data("m5.large"))
        .send()
        .await
        .unwrap();
    ec2.create_launch_template_version()
        .launch_template_name("kbg-workers")
        .launch_template_data(data("m6i.large"))
        .send()
        .await
        .unwrap();

    let beta = pool(
        "beta",
        &fx,
        json!({"ami": null, "instance_type": null, "launch_template": {"name": "kbg-workers"}}),
    );
    let report = provider(&moto, &beta)
        .provision(&beta, &names("beta", 2))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for m in &report.machines {
        assert_eq!(m.details["image"], fx.ami);
        assert_eq!(
            m.details["instance-type"], "m6i.large",
            "$Latest is version 2"
        );
    }
    let live = live_instances(&ec2).await;
    assert_eq!(live.len(), 2);
    assert!(
        live.iter()
            .all(|i| tags(i)[MACHINE_TAG].starts_with("beta-"))
    );
}

#[tokio::test]
async fn a_stopped_machine_is_reported_not_doubled() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let aws = provider(&moto, &beta);
    let made = aws.provision(&beta, &names("beta", 2)).await.unwrap();
    let stopped = made.machines[1].details["instance-id"].clone();
    ec2.stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap();

    let rerun = aws.provision(&beta, &names("beta", 2)).await.unwrap();
    assert_eq!(rerun.machines.len(), 1);
    assert_eq!(rerun.failed.len(), 1);
    let line = rerun.failed[0].to_string();
    assert!(
        line.starts_with("aws: machine beta-1: instance ") && line.contains("is stopped"),
        "{line}"
    );
    assert_eq!(live_instances(&ec2).await.len(), 2, "nothing launched");

    let listed: BTreeMap<String, MachineState> = aws
        .list(&beta)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.state))
        .collect();
    assert_eq!(listed["beta-1"], MachineState::Failed);
    assert_eq!(listed["beta-0"], MachineState::Running);

    // Deprovision removes a stopped machine too.
    let gone = aws.deprovision(&beta, &made.machines).await.unwrap();
    assert_eq!(gone.removed.len(), 2, "{:?}", gone.failed);
    assert!(live_instances(&ec2).await.is_empty());
}

#[tokio::test]
async fn run_command_is_unsupported_with_a_way_out() {
    let moto = Moto::start();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let aws = provider(&moto, &beta);
    let made = aws.provision(&beta, &names("beta", 1)).await.unwrap();
    let err = aws
        .run_command(
            &beta,
            &made.machines[0],
            &RemoteCommand {
                script: "kubeadm upgrade node".into(),
                timeout_secs: 60,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(err.to_string().contains("SSM SendCommand"), "{err}");
}

#[test]
fn a_missing_region_is_bad_input() {
    let fx = support::Fixture {
        ami: "ami-1".into(),
        subnets: vec![],
        zones: vec![],
        security_group: "sg-1".into(),
    };
    let beta = pool("beta", &fx, json!({}));
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let err = AwsProvider::from_pool_with_config(&beta, &config).unwrap_err();
    assert_eq!(
        err.to_string(),
        "aws: pools.beta.aws.region: is required: set it, or AWS_REGION, or a region in the AWS profile"
    );
    // A region in the settings is enough.
    let with_region = pool("beta", &fx, json!({"region": "eu-west-1"}));
    assert!(AwsProvider::from_pool_with_config(&with_region, &config).is_ok());
}
