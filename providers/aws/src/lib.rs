//! kbg's AWS EC2 provider: a pool's machines are EC2 instances, launched from an AMI or a
//! launch template through `aws-sdk-ec2`.
//!
//! ## How a pool maps to EC2
//!
//! Every instance is tagged at launch (`TagSpecifications`, so no instance ever exists
//! untagged) with `kbg.io/pool: <pool>`, `kbg.io/machine: <machine>`,
//! `kubernetes.io/cluster/<cluster_name>: owned` (the AWS cloud provider's ownership
//! tag), `Name: <machine>` and the user's `tags`; its volumes get the same tags. A pool's
//! machines are found again by those tags alone, so kbg keeps no instance IDs of its
//! own, and two pools (or two clusters with a pool of the same name) never mix.
//!
//! - **Provision** looks for a live instance carrying each machine's tag first, and
//!   launches only the missing machines, one `RunInstances` each (one instance per
//!   call) with a client token derived from cluster, pool and machine (see [`plan`] for
//!   why tokens carry a generation). The first missing machine is launched alone: if it
//!   fails for a reason every launch would share (an unknown AMI, a missing
//!   permission), provisioning stops there with one error and nothing launched. Subnets
//!   are used round robin by machine index; instance types are tried in order on
//!   `InsufficientInstanceCapacity`. It returns when each instance is `running`
//!   (the SDK's `InstanceRunning` waiter, bounded by `wait_timeout_secs`).
//! - **List** is `DescribeInstances` filtered by the pool and cluster tags, through the
//!   SDK's paginator, without terminated instances.
//! - **Deprovision** terminates only instances that carry the pool's tags, and waits
//!   with the `InstanceTerminated` waiter; an instance already gone is a success.
//! - **Run-command** would need SSM `SendCommand` and is not supported yet.
//!
//! The node a machine's kubelet registers carries `spec.providerID`
//! `aws:///<availability-zone>/<instance-id>`, the form the AWS cloud provider writes: kbg's
//! built-in user data reads both from the instance metadata service (IMDSv2) at boot and
//! passes them to the kubelet (`--provider-id`), so nodes map to instances without a
//! cloud-controller-manager; the node is named after the machine.
//!
//! ## Secrets
//!
//! User data is rendered per machine from the pool's template (by default kbg's
//! cloud-init kubeadm-join template) and carries the join token. It travels as a
//! [`Secret`] until the one call that sends it, is never logged or put into an error,
//! and is hidden from the SDK's own TRACE log of request bodies ([`redact`]).
//!
//! ## Credentials and retries
//!
//! Credentials and region come from `aws-config`'s default chain (environment, profile,
//! SSO, IMDS), with `region`, `profile` and `endpoint_url` from the settings on top.
//! Throttling (`RequestLimitExceeded`) and passing faults are retried by the SDK's
//! standard retry mode, set explicitly ([`MAX_ATTEMPTS`]); this crate adds no retry
//! layer of its own, and marks the errors the SDK retried so that kbg's retry layer does
//! not retry them again (`ProviderError::already_retried`). Each attempt is bounded ([`ATTEMPT_TIMEOUT`]); a call whose attempts
//! all ran out of time is [`ErrorKind::Timeout`], which kbg does not retry again.

pub mod error;
pub mod plan;
pub mod redact;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, Instance, InstanceStateName, InstanceType,
    LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use base64::Engine as _;
use futures::StreamExt as _;
use kbg_provider::{
    CommandOutput, DeprovisionReport, ErrorKind, Machine, MachineState, PoolSpec, Provider,
    ProviderError, ProvisionReport, RemoteCommand, Result, Secret,
};
use tracing::{debug, warn};

use crate::error::{CallError, fails_every_launch, sdk_error, waiter_error};
use crate::plan::{LaunchPlan, Outcome, client_token, subnet_for};
pub use crate::redact::HideRequestBody;
pub use crate::settings::Settings;
use crate::settings::field_path;
use crate::settings::{ImageSource, InstanceProfile, TemplateRef, UserData};

/// The provider's name, as written in `kbg.yaml` and at the start of its errors.
pub const PROVIDER: &str = "aws";

/// The tag naming the pool an instance belongs to (the same key as the node label
/// [`kbg_provider::POOL_LABEL`]).
pub const POOL_TAG: &str = kbg_provider::POOL_LABEL;

/// The tag naming the machine an instance is (`beta-0`): the idempotency key.
pub const MACHINE_TAG: &str = "kbg.io/machine";

/// The AWS cloud provider's cluster ownership tag key for `cluster`:
/// `kubernetes.io/cluster/<cluster>`, with the value `owned`.
pub fn cluster_tag(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

/// How many attempts the SDK makes per call in its standard retry mode (exponential
/// backoff with jitter, retrying throttling and 5xx). The SDK's default is 3; EC2
/// throttles per account and a pool launch is a burst, so kbg allows 5.
pub const MAX_ATTEMPTS: u32 = 5;

/// How long one attempt of an EC2 call may take before the SDK gives it up (and its
/// retry mode may try again): 60 s, as kube-apiserver's own request timeout. The SDK
/// sets no such limit by default, so an endpoint that accepts the connection and then
/// never answers (a wedged proxy, a VPC endpoint black-holing packets) held kbg forever.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The SDK's own default connect timeout (3.1 s), kept when [`ATTEMPT_TIMEOUT`] is set.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The timeouts every EC2 call of [`AwsProvider::from_pool`] runs under.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// How many machines are launched (or waited for) at once, after the first. EC2 rate
/// limits mutating calls per account with a token bucket; a few in flight keep a large
/// pool's launch well inside it.
pub const LAUNCH_CONCURRENCY: usize = 4;

/// How many machines are terminated (or waited for) at once.
pub const TERMINATE_CONCURRENCY: usize = 8;

/// Instance states that still hold a machine (everything but `shutting-down` and
/// `terminated`): a machine in one of them is not launched again.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Instance states a listing shows: all but `terminated`.
const LISTED_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

/// One running instance of a pool, with what a kubelet (or a test's stand-in for one)
/// needs to register its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInstance {
    /// kbg's machine name (the `kbg.io/machine` tag).
    pub machine: String,
    /// `i-…`.
    pub instance_id: String,
    /// `us-east-1a`.
    pub availability_zone: String,
    /// `ip-10-0-1-5.ec2.internal`, when EC2 gave it one.
    pub private_dns_name: Option<String>,
    /// The primary private IPv4 address, when it has one.
    pub private_ip: Option<String>,
}

impl PoolInstance {
    /// The node's `spec.providerID`: `aws:///<availability-zone>/<instance-id>`.
    pub fn provider_id(&self) -> String {
        provider_id(&self.availability_zone, &self.instance_id)
    }
}

/// `aws:///<az>/<instance-id>`, as the AWS cloud provider writes `spec.providerID`.
pub fn provider_id(availability_zone: &str, instance_id: &str) -> String {
    format!("aws:///{availability_zone}/{instance_id}")
}

/// The instance ID in an AWS provider ID (`aws:///us-east-1a/i-0abc` → `i-0abc`; also
/// the older `aws://us-east-1a/i-0abc` form).
pub fn instance_id_from_provider_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    let id = rest.rsplit('/').next()?;
    id.starts_with("i-").then_some(id)
}

/// A pool's machines as EC2 instances. Built per pool with [`AwsProvider::from_pool`].
#[derive(Clone, Debug)]
pub struct AwsProvider {
    client: Client,
    pool: String,
    settings: Settings,
}

impl AwsProvider {
    /// The provider for `pool`, from its `aws:` settings, with credentials and region
    /// from `aws-config`'s default chain (environment, `profile`, SSO, IMDS) and the
    /// SDK's standard retry mode ([`MAX_ATTEMPTS`] attempts).
    ///
    /// Makes no EC2 call: settings are checked and the user-data template is rendered
    /// once (and dropped) so bad input is reported before anything is touched.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming `pools.<pool>.aws.<field>` and the fix, also
    /// when no region can be found.
    pub async fn from_pool(pool: &PoolSpec) -> Result<AwsProvider> {
        let settings = Settings::from_pool(pool)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(timeout_config());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk_config = loader.load().await;
        Self::build(pool, settings, &sdk_config)
    }

    /// The provider for `pool` with an SDK configuration made by the caller: for tests
    /// (an emulator's endpoint, fixed credentials, retries off) and for callers that
    /// load the configuration once for many pools. The settings' `region` and
    /// `endpoint_url` still apply on top of `sdk_config`; `profile` is ignored (the
    /// configuration is already loaded).
    ///
    /// # Errors
    /// As [`AwsProvider::from_pool`].
    pub fn from_pool_with_config(pool: &PoolSpec, sdk_config: &SdkConfig) -> Result<AwsProvider> {
        let settings = Settings::from_pool(pool)?;
        Self::build(pool, settings, sdk_config)
    }

    fn build(pool: &PoolSpec, settings: Settings, sdk_config: &SdkConfig) -> Result<AwsProvider> {
        let mut config =
            aws_sdk_ec2::config::Builder::from(sdk_config).interceptor(HideRequestBody);
        if let Some(region) = &settings.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url);
        }
        let config = config.build();
        if config.region().is_none() {
            return Err(ProviderError::invalid_config(
                PROVIDER,
                field_path(&pool.name, "region"),
                "is required: set it, or AWS_REGION, or a region in the AWS profile",
            ));
        }
        Ok(AwsProvider {
            client: Client::from_conf(config),
            pool: pool.name.clone(),
            settings,
        })
    }

    /// The checked settings this provider was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The pool's running instances, with the AZ, ID and private DNS name a kubelet
    /// registers with: what a stand-in for kubelets needs in tests.
    ///
    /// # Errors
    /// When EC2 cannot be asked.
    pub async fn running_instances(&self) -> Result<Vec<PoolInstance>> {
        let instances = self
            .describe_pool(&["running"])
            .await
            .map_err(|e| e.error)?;
        Ok(instances
            .iter()
            .filter_map(|i| {
                Some(PoolInstance {
                    machine: tag(i, MACHINE_TAG)?.to_string(),
                    instance_id: i.instance_id()?.to_string(),
                    availability_zone: i.placement()?.availability_zone()?.to_string(),
                    private_dns_name: non_empty(i.private_dns_name()),
                    private_ip: non_empty(i.private_ip_address()),
                })
            })
            .collect())
    }

    fn check_pool(&self, pool: &PoolSpec) -> Result<()> {
        if pool.name == self.pool {
            Ok(())
        } else {
            Err(ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!(
                    "this provider was built for pool {} and was asked about pool {}; build one per pool",
                    self.pool, pool.name
                ),
            ))
        }
    }

    /// The filters that pick this pool's instances in `states`.
    fn pool_filters(&self, states: &[&str]) -> Vec<Filter> {
        vec![
            Filter::builder()
                .name(format!("tag:{POOL_TAG}"))
                .values(&self.pool)
                .build(),
            Filter::builder()
                .name(format!("tag:{}", cluster_tag(&self.settings.cluster_name)))
                .values("owned")
                .build(),
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(states.iter().map(ToString::to_string).collect()))
                .build(),
        ]
    }

    /// Every instance of this pool (by its pool and cluster tags) in one of `states`,
    /// through the SDK's paginator.
    async fn describe_pool(&self, states: &[&str]) -> Result<Vec<Instance>, CallError> {
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(self.pool_filters(states)))
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(reservation) = pages.next().await {
            let reservation =
                reservation.map_err(|e| sdk_error(e, "DescribeInstances", &self.pool))?;
            out.extend(reservation.instances().iter().cloned());
        }
        Ok(out)
    }

    /// The node name the machine's kubelet registers: kbg's built-in template sets
    /// `nodeRegistration.name` to the machine name (and `--provider-id`
    /// `aws:///<az>/<instance-id>` from instance metadata, the machine's
    /// [`Machine::provider_id`]); other bootstraps (a user's template, EKS's) keep the
    /// kubelet's default, the instance's private DNS name.
    fn node_name(&self, machine: &str, instance: &Instance) -> Option<String> {
        match self.settings.user_data {
            UserData::Builtin(_) => Some(machine.to_string()),
            UserData::File { .. } => non_empty(instance.private_dns_name()),
        }
    }

    fn to_machine(&self, instance: &Instance) -> Machine {
        let id = instance.instance_id().unwrap_or_default();
        let name = tag(instance, MACHINE_TAG).unwrap_or(id).to_string();
        let az = instance.placement().and_then(|p| p.availability_zone());
        let state_name = instance.state().and_then(|s| s.name());
        let state = match state_name {
            Some(InstanceStateName::Pending) => MachineState::Pending,
            Some(InstanceStateName::Running) => MachineState::Running,
            Some(InstanceStateName::ShuttingDown) => MachineState::Stopping,
            Some(InstanceStateName::Terminated) => MachineState::Gone,
            // Stopped or stopping outside kbg, or a state this SDK does not know: not
            // a machine kbg can use; `details` says which.
            _ => MachineState::Failed,
        };
        let mut details = BTreeMap::new();
        details.insert("instance-id".to_string(), id.to_string());
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                details.insert(k.to_string(), v.to_string());
            }
        };
        put("state", state_name.map(InstanceStateName::as_str));
        put("zone", az);
        put(
            "instance-type",
            instance.instance_type().map(InstanceType::as_str),
        );
        put("subnet", instance.subnet_id());
        put("image", instance.image_id());
        put("private-dns", instance.private_dns_name());
        put(
            "state-reason",
            instance.state_reason().and_then(|r| r.message()),
        );
        Machine {
            node_name: self.node_name(&name, instance),
            name,
            pool: self.pool.clone(),
            provider_id: az.filter(|_| !id.is_empty()).map(|az| provider_id(az, id)),
            state,
            address: non_empty(instance.private_ip_address()),
            details,
        }
    }

    /// The tags every instance and volume of `machine` is launched with.
    fn tags(&self, machine: &str) -> Vec<Tag> {
        let mut tags = vec![
            (POOL_TAG.to_string(), self.pool.clone()),
            (MACHINE_TAG.to_string(), machine.to_string()),
            (
                cluster_tag(&self.settings.cluster_name),
                "owned".to_string(),
            ),
            ("Name".to_string(), machine.to_string()),
        ];
        tags.extend(
            self.settings
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        tags.into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    /// One RunInstances call for `machine`. Returns the instance EC2 answered with.
    async fn run_instance(
        &self,
        machine: &str,
        subnet: Option<&str>,
        instance_type: Option<&str>,
        token: &str,
        user_data_b64: &Secret,
    ) -> Result<Instance, CallError> {
        let tags = self.tags(machine);
        let spec = |kind| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let s = &self.settings;
        let mut req = self
            .client
            .run_instances()
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume))
            .user_data(user_data_b64.expose());
        req = match &s.image {
            ImageSource::Ami(ami) => req.image_id(ami),
            ImageSource::LaunchTemplate { template, version } => {
                let lt = LaunchTemplateSpecification::builder().version(version);
                let lt = match template {
                    TemplateRef::Id(id) => lt.launch_template_id(id),
                    TemplateRef::Name(name) => lt.launch_template_name(name),
                };
                req.launch_template(lt.build())
            }
        };
        if let Some(t) = instance_type {
            req = req.instance_type(InstanceType::from(t));
        }
        if let Some(subnet) = subnet {
            req = req.subnet_id(subnet);
        }
        if !s.security_groups.is_empty() {
            req = req.set_security_group_ids(Some(s.security_groups.clone()));
        }
        if let Some(key) = &s.key_name {
            req = req.key_name(key);
        }
        if let Some(profile) = &s.iam_instance_profile {
            let p = IamInstanceProfileSpecification::builder();
            req = req.iam_instance_profile(match profile {
                InstanceProfile::Arn(arn) => p.arn(arn).build(),
                InstanceProfile::Name(name) => p.name(name).build(),
            });
        }
        let out = req
            .send()
            .await
            .map_err(|e| sdk_error(e, "RunInstances", &self.pool))?;
        out.instances().first().cloned().ok_or_else(|| CallError {
            error: ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!(
                    "RunInstances for pool {} answered without an instance",
                    self.pool
                ),
            ),
            code: None,
        })
    }

    /// Launch `machine` (instance-type fallback, token generations) and wait until it
    /// runs.
    async fn launch(&self, pool: &PoolSpec, machine: &str) -> Result<Machine, CallError> {
        let user_data = self
            .settings
            .render_user_data(pool, machine)
            .map_err(|error| CallError { error, code: None })?;
        let user_data_b64 =
            Secret::new(base64::engine::general_purpose::STANDARD.encode(user_data.expose()));
        drop(user_data);
        let subnet = subnet_for(&self.settings.subnets, &self.pool, machine);
        let mut plan = LaunchPlan::new(&self.settings.instance_types);
        let mut attempt = plan.current();
        loop {
            let token = client_token(
                &self.settings.cluster_name,
                &self.pool,
                machine,
                attempt.instance_type,
                attempt.generation,
            );
            let result = self
                .run_instance(
                    machine,
                    subnet,
                    attempt.instance_type,
                    &token,
                    &user_data_b64,
                )
                .await;
            let outcome = plan::outcome_of_launch(match &result {
                Ok(instance) => Ok(instance
                    .state()
                    .and_then(|s| s.name())
                    .map(InstanceStateName::as_str)),
                Err(e) => Err(e.code.as_deref()),
            });
            debug!(
                pool = %self.pool,
                machine,
                instance_type = attempt.instance_type.unwrap_or("(launch template's)"),
                generation = attempt.generation,
                ?outcome,
                "RunInstances"
            );
            let last_error = match (outcome, result) {
                (Outcome::Launched, Ok(instance)) => {
                    let id = instance.instance_id().unwrap_or_default().to_string();
                    return self.wait_running(machine, &id).await;
                }
                (Outcome::Failed, Err(e)) => return Err(e.with_machine(machine)),
                (_, Err(e)) => Some(e),
                (_, Ok(_)) => None,
            };
            match plan.next(outcome) {
                Some(next) => attempt = next,
                None => {
                    let tried = plan.tried_types().join(", ");
                    return Err(match (outcome, last_error) {
                        (Outcome::NoCapacity, Some(mut e)) => {
                            e.error.message = format!(
                                "{} (tried {tried} in {})",
                                e.error.message,
                                subnet.unwrap_or("the default subnet")
                            );
                            e.with_machine(machine)
                        }
                        (_, last) => CallError {
                            error: ProviderError::new(
                                PROVIDER,
                                ErrorKind::Failed,
                                format!(
                                    "RunInstances for pool {}: every client token kbg derives for this machine is bound to an earlier instance or other parameters ({} generations tried); rename the machine",
                                    self.pool,
                                    plan::MAX_TOKEN_GENERATIONS
                                ),
                            )
                            .with_machine(machine),
                            code: last.and_then(|l| l.code),
                        },
                    });
                }
            }
        }
    }

    /// Wait until instance `id` of `machine` runs; the machine as it is then.
    async fn wait_running(&self, machine: &str, id: &str) -> Result<Machine, CallError> {
        let waited = self
            .client
            .wait_until_instance_running()
            .instance_ids(id)
            .wait(self.settings.wait_timeout)
            .await
            .map_err(|e| {
                waiter_error(e, &format!("instance {id} to run"), &self.pool).with_machine(machine)
            })?;
        let out = waited.into_result().map_err(|e| CallError {
            error: ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!(
                    "DescribeInstances for pool {} failed while waiting",
                    self.pool
                ),
            )
            .with_source(e)
            .with_machine(machine),
            code: None,
        })?;
        let instance = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .ok_or_else(|| CallError {
                error: ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!("instance {id} is running but DescribeInstances did not return it"),
                )
                .with_machine(machine),
                code: None,
            })?;
        Ok(self.to_machine(instance))
    }

    /// Terminate `ids` (the instances of `machine`) and wait until they are gone.
    async fn terminate(&self, machine: &str, ids: Vec<String>) -> Result<(), ProviderError> {
        debug!(pool = %self.pool, machine, instance_ids = ?ids, "terminating");
        match self
            .client
            .terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => {
                return sdk_error(e, "TerminateInstances", &self.pool).ok_if_gone(machine);
            }
        }
        match self
            .client
            .wait_until_instance_terminated()
            .set_instance_ids(Some(ids.clone()))
            .wait(self.settings.wait_timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => waiter_error(
                e,
                &format!("instance {} to terminate", ids.join(", ")),
                &self.pool,
            )
            .ok_if_gone(machine),
        }
    }

    /// Whether instance `id`, which does not carry this pool's tags, is gone; `Err` says
    /// who it belongs to when it is not.
    async fn foreign_instance_gone(&self, machine: &str, id: &str) -> Result<(), ProviderError> {
        match self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(out) => {
                let live = out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .find(|i| {
                        !matches!(
                            i.state().and_then(|s| s.name()),
                            Some(InstanceStateName::Terminated)
                        )
                    });
                match live {
                    None => Ok(()),
                    Some(i) => Err(ProviderError::new(
                        PROVIDER,
                        ErrorKind::Failed,
                        format!(
                            "instance {id} does not carry the tags of pool {} in cluster {} ({POOL_TAG}: {}); not terminating it",
                            self.pool,
                            self.settings.cluster_name,
                            tag(i, POOL_TAG).unwrap_or("none"),
                        ),
                    )
                    .with_machine(machine)),
                }
            }
            Err(e) => sdk_error(e, "DescribeInstances", &self.pool).ok_if_gone(machine),
        }
    }
}

impl CallError {
    fn with_machine(mut self, machine: &str) -> CallError {
        self.error = self.error.with_machine(machine);
        self
    }

    /// `Ok` when EC2 says the instance does not exist (it is gone, which is what the
    /// caller wanted), else the error about `machine`.
    fn ok_if_gone(self, machine: &str) -> Result<(), ProviderError> {
        if self.code.as_deref() == Some("InvalidInstanceID.NotFound") {
            Ok(())
        } else {
            Err(self.error.with_machine(machine))
        }
    }
}

fn tag<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

/// What provisioning does for one machine.
enum Step {
    /// Launch it.
    Launch(String),
    /// It exists and is pending: wait for it.
    Wait(String, String),
}

#[async_trait]
impl Provider for AwsProvider {
    fn kind(&self) -> &str {
        PROVIDER
    }

    async fn provision(&self, pool: &PoolSpec, names: &[String]) -> Result<ProvisionReport> {
        self.check_pool(pool)?;
        let live = self
            .describe_pool(&LIVE_STATES)
            .await
            .map_err(|e| e.error)?;
        let mut by_machine: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for i in &live {
            if let Some(m) = tag(i, MACHINE_TAG) {
                by_machine.entry(m).or_default().push(i);
            }
        }

        let mut report = ProvisionReport::default();
        let mut steps = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let Some(found) = by_machine.get(name.as_str()) else {
                steps.push(Step::Launch(name.clone()));
                continue;
            };
            if found.len() > 1 {
                warn!(
                    pool = %self.pool,
                    machine = %name,
                    instances = found.len(),
                    "several live instances carry this machine's tag; using one, listing all"
                );
            }
            let state = |i: &&Instance| i.state().and_then(|s| s.name()).cloned();
            if let Some(i) = found
                .iter()
                .find(|i| state(i) == Some(InstanceStateName::Running))
            {
                debug!(pool = %self.pool, machine = %name, "already running");
                report.machines.push(self.to_machine(i));
            } else if let Some(i) = found
                .iter()
                .find(|i| state(i) == Some(InstanceStateName::Pending))
            {
                let id = i.instance_id().unwrap_or_default().to_string();
                steps.push(Step::Wait(name.clone(), id));
            } else {
                let i = found[0];
                report.failed.push(
                    ProviderError::new(
                        PROVIDER,
                        ErrorKind::Failed,
                        format!(
                            "instance {} exists but is {}; start it (aws ec2 start-instances) or terminate it, then run again",
                            i.instance_id().unwrap_or_default(),
                            state(&i).as_ref().map_or("in an unknown state", InstanceStateName::as_str),
                        ),
                    )
                    .with_machine(name),
                );
            }
        }

        // The first launch goes alone: a wrong setting or a missing permission fails
        // it, and then every other launch would fail the same way.
        let first = steps
            .iter()
            .position(|s| matches!(s, Step::Launch(_)))
            .map(|i| steps.remove(i));
        if let Some(Step::Launch(name)) = first {
            match self.launch(pool, &name).await {
                Ok(m) => report.machines.push(m),
                Err(e) if fails_every_launch(&e.error, e.code.as_deref()) => return Err(e.error),
                Err(e) => report.failed.push(e.error),
            }
        }

        let results: Vec<Result<Machine, CallError>> = futures::stream::iter(steps)
            .map(|step| async move {
                match step {
                    Step::Launch(name) => self.launch(pool, &name).await,
                    Step::Wait(name, id) => self.wait_running(&name, &id).await,
                }
            })
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(m) => report.machines.push(m),
                Err(e) => report.failed.push(e.error),
            }
        }
        let order: BTreeMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        report
            .machines
            .sort_by_key(|m| order.get(m.name.as_str()).copied().unwrap_or(usize::MAX));
        Ok(report)
    }

    async fn list(&self, pool: &PoolSpec) -> Result<Vec<Machine>> {
        self.check_pool(pool)?;
        let instances = self
            .describe_pool(&LISTED_STATES)
            .await
            .map_err(|e| e.error)?;
        let mut machines: Vec<Machine> = instances.iter().map(|i| self.to_machine(i)).collect();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    async fn deprovision(
        &self,
        pool: &PoolSpec,
        machines: &[Machine],
    ) -> Result<DeprovisionReport> {
        self.check_pool(pool)?;
        let live = self
            .describe_pool(&LISTED_STATES)
            .await
            .map_err(|e| e.error)?;
        let mut report = DeprovisionReport::default();
        let mut seen = BTreeSet::new();
        let mut work = Vec::new();
        for m in machines {
            if !seen.insert(m.name.as_str()) {
                continue;
            }
            let named_id = m
                .provider_id
                .as_deref()
                .and_then(instance_id_from_provider_id)
                .or_else(|| m.details.get("instance-id").map(String::as_str));
            let mut ids: Vec<String> = live
                .iter()
                .filter(|i| {
                    tag(i, MACHINE_TAG) == Some(m.name.as_str())
                        || (named_id.is_some() && i.instance_id() == named_id)
                })
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect();
            ids.sort();
            ids.dedup();
            // An instance the machine names but the pool's tags do not cover is either
            // gone or someone else's: it is never terminated from here.
            let foreign = named_id.filter(|id| !ids.iter().any(|i| i == id));
            work.push((m.name.clone(), ids, foreign.map(str::to_owned)));
        }

        let results: Vec<(String, Result<(), ProviderError>)> = futures::stream::iter(work)
            .map(|(name, ids, foreign)| async move {
                let mut result = Ok(());
                if !ids.is_empty() {
                    result = self.terminate(&name, ids).await;
                }
                if result.is_ok()
                    && let Some(id) = foreign
                {
                    result = self.foreign_instance_gone(&name, &id).await;
                }
                (name, result)
            })
            .buffer_unordered(TERMINATE_CONCURRENCY)
            .collect()
            .await;
        for (name, r) in results {
            match r {
                Ok(()) => report.removed.push(name),
                Err(e) => report.failed.push(e),
            }
        }
        report.removed.sort();
        Ok(report)
    }

    async fn run_command(
        &self,
        _pool: &PoolSpec,
        machine: &Machine,
        _command: &RemoteCommand,
    ) -> Result<CommandOutput> {
        Err(ProviderError::unsupported(
            PROVIDER,
            "running commands on EC2 instances needs SSM SendCommand, which kbg does not support yet; upgrade control-plane machines with a provider that reaches them over SSH (metal), or run kubeadm upgrade on them yourself",
        )
        .with_machine(&machine.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("eu-west-1b", "i-0123456789abcdef0");
        assert_eq!(id, "aws:///eu-west-1b/i-0123456789abcdef0");
        assert_eq!(
            instance_id_from_provider_id(&id),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            instance_id_from_provider_id("aws://eu-west-1b/i-1"),
            Some("i-1")
        );
        assert_eq!(instance_id_from_provider_id("gce://p/z/i-1"), None);
        assert_eq!(instance_id_from_provider_id("aws:///eu-west-1b/"), None);
    }

    /// Pool beta in eu-west-1, at `endpoint` when given.
    fn beta(endpoint: Option<&str>) -> PoolSpec {
        let mut settings = serde_json::json!({
            "cluster_name": "prod",
            "region": "eu-west-1",
            "ami": "ami-0abc",
            "instance_type": "m6i.large",
        });
        if let Some(url) = endpoint {
            settings["endpoint_url"] = url.into();
        }
        PoolSpec {
            name: "beta".into(),
            version: "v1.31.2".into(),
            labels: BTreeMap::new(),
            taints: vec![],
            settings,
            template: None,
            join: kbg_provider::JoinConfig::default(),
        }
    }

    #[tokio::test]
    async fn from_pool_sets_retries_explicitly_and_hides_request_bodies() {
        let pool = beta(Some("http://127.0.0.1:9"));
        let aws = AwsProvider::from_pool(&pool).await.unwrap();
        let config = aws.client.config();
        let retry = config.retry_config().unwrap();
        assert_eq!(
            retry.mode(),
            aws_sdk_ec2::config::retry::RetryMode::Standard
        );
        assert_eq!(retry.max_attempts(), MAX_ATTEMPTS);
        let timeouts = config.timeout_config().unwrap();
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert!(
            config
                .interceptors()
                .any(|i| aws_sdk_ec2::config::Intercept::name(&i) == "kbg::HideRequestBody")
        );
    }

    #[test]
    fn cluster_tags_follow_the_cloud_provider() {
        assert_eq!(cluster_tag("prod"), "kubernetes.io/cluster/prod");
    }

    /// An EC2 endpoint that accepts connections and never answers: the call ends when
    /// its attempt's time is up, as a whole-call [`ErrorKind::Timeout`] (not a transient
    /// fault for kbg to retry on top of the SDK's own attempts).
    #[tokio::test]
    async fn an_endpoint_that_never_answers_is_a_timeout() {
        use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "kbg-tests",
            )))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(Duration::from_secs(1))
                    .build(),
            )
            .build();
        let pool = beta(None);
        let aws = AwsProvider::from_pool_with_config(&pool, &sdk).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(60), aws.list(&pool))
            .await
            .expect("the call ends")
            .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Timeout), "{err:?}");
        assert!(err.machine.is_none(), "{err}");
        hold.abort();
    }
}
