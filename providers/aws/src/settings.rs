//! The pool's `aws:` block in `kbg.yaml`, parsed and checked before anything is touched.
//!
//! Parsing is two steps. serde (with `deny_unknown_fields`, and `serde_path_to_error` so
//! a type error names its field) turns the block into `RawSettings`; then
//! `Settings::from_raw` checks what serde cannot (exactly one of `ami` and
//! `launch_template`, ID prefixes, reserved tags, the user-data template renders) and
//! resolves defaults. Every failure is one [`kbg_provider::ErrorKind::InvalidConfig`] line naming
//! `pools.<pool>.aws.<field>` and saying the fix. Nothing here talks to AWS.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use kbg_provider::bootstrap::{self, BootstrapContext, BuiltinTemplate};
use kbg_provider::{PoolSpec, ProviderError, Secret};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::PROVIDER;

/// How long [`crate::AwsProvider`] waits for an instance to reach `running` or
/// `terminated`, in seconds, unless `wait_timeout_secs` says otherwise: the EC2 API
/// model's own `InstanceRunning` waiter (and so `aws ec2 wait instance-running`) polls
/// 40 times at 15 s intervals, 600 s in all.
pub const DEFAULT_WAIT_TIMEOUT_SECS: u64 = 600;

/// The launch-template version used when `launch_template.version` is not set.
pub const DEFAULT_LAUNCH_TEMPLATE_VERSION: &str = "$Latest";

/// EC2 accepts at most 16 KB of user data, before base64 encoding (RunInstances API
/// reference, `UserData`).
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// EC2 allows 50 tags per resource; kbg sets 4 of them itself.
const MAX_USER_TAGS: usize = 50 - 4;

/// The `aws:` block as written, before any check beyond types.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettings {
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    cluster_name: Option<String>,
    ami: Option<String>,
    launch_template: Option<RawLaunchTemplate>,
    instance_type: Option<InstanceTypes>,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    security_groups: Vec<String>,
    key_name: Option<String>,
    iam_instance_profile: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    user_data: Option<String>,
    wait_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLaunchTemplate {
    id: Option<String>,
    name: Option<String>,
    version: Option<VersionValue>,
}

/// `launch_template.version` may be written as a number (`3`) or a string (`"$Latest"`).
#[derive(Debug)]
struct VersionValue(String);

impl<'de> Deserialize<'de> for VersionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = VersionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version number, $Latest or $Default")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VersionValue, E> {
                Ok(VersionValue(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<VersionValue, E> {
                Ok(VersionValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `instance_type: m6i.large` or `instance_type: [m6i.large, m5.large]`.
#[derive(Debug)]
struct InstanceTypes(Vec<String>);

impl<'de> Deserialize<'de> for InstanceTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InstanceTypes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an instance type or a list of instance types")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InstanceTypes, E> {
                Ok(InstanceTypes(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InstanceTypes, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<String>()? {
                    out.push(t);
                }
                Ok(InstanceTypes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the instances boot from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// `ami: ami-0abc…`: an AMI, with every other launch parameter from `kbg.yaml`.
    Ami(String),
    /// `launch_template:`: a launch template; `kbg.yaml` settings override its values.
    LaunchTemplate {
        /// The template, by ID or by name.
        template: TemplateRef,
        /// `$Latest`, `$Default` or a version number.
        version: String,
    },
}

/// A launch template, by ID (`lt-…`) or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateRef {
    /// `launch_template.id`.
    Id(String),
    /// `launch_template.name`.
    Name(String),
}

/// `iam_instance_profile`: an ARN when it starts with `arn:`, a name otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceProfile {
    /// An instance profile ARN.
    Arn(String),
    /// An instance profile name.
    Name(String),
}

/// Where the user data comes from.
#[derive(Clone, Debug)]
pub(crate) enum UserData {
    /// kbg's cloud-init kubeadm-join template.
    Builtin(BuiltinTemplate),
    /// A minijinja template read from `path` when the provider was built.
    File {
        /// The file it came from, for messages.
        path: String,
        /// Its text.
        source: String,
    },
}

/// The pool's `aws:` settings, checked, with defaults filled in.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `region`; `None`: aws-config's default chain decides.
    pub region: Option<String>,
    /// `profile`; `None`: aws-config's default chain decides.
    pub profile: Option<String>,
    /// `endpoint_url`, for emulators and VPC endpoints.
    pub endpoint_url: Option<String>,
    /// `cluster_name`: the `<name>` in the `kubernetes.io/cluster/<name>: owned` tag.
    pub cluster_name: String,
    /// `ami` or `launch_template`.
    pub image: ImageSource,
    /// `instance_type`, in the order they are tried on `InsufficientInstanceCapacity`.
    /// Empty only with a launch template (the template's type is used).
    pub instance_types: Vec<String>,
    /// `subnets`, spread over round robin by machine index.
    pub subnets: Vec<String>,
    /// `security_groups` (IDs).
    pub security_groups: Vec<String>,
    /// `key_name`.
    pub key_name: Option<String>,
    /// `iam_instance_profile`.
    pub iam_instance_profile: Option<InstanceProfile>,
    /// `tags`, added to kbg's own tags on every instance and volume.
    pub tags: BTreeMap<String, String>,
    /// How long to wait for `running` / `terminated`.
    pub wait_timeout: Duration,
    pub(crate) user_data: UserData,
}

/// The full path of `field` in `kbg.yaml`, for error messages.
pub(crate) fn field_path(pool: &str, field: &str) -> String {
    if field.is_empty() {
        format!("pools.{pool}.aws")
    } else {
        format!("pools.{pool}.aws.{field}")
    }
}

fn invalid(pool: &str, field: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::invalid_config(PROVIDER, field_path(pool, field), message)
}

impl Settings {
    /// Parse and check `pool.settings`, reading the user-data template if one is named.
    ///
    /// # Errors
    /// [`kbg_provider::ErrorKind::InvalidConfig`] naming the first bad field and the fix.
    pub fn from_pool(pool: &PoolSpec) -> Result<Settings, ProviderError> {
        if pool.settings.is_null() {
            return Err(invalid(
                &pool.name,
                "",
                "is missing; give the pool an aws: block with at least cluster_name and ami (or launch_template)",
            ));
        }
        if !pool.settings.is_object() {
            return Err(invalid(
                &pool.name,
                "",
                "is not a map; write settings as keys under aws: (cluster_name: …, ami: …, instance_type: …)",
            ));
        }
        let raw: RawSettings = serde_path_to_error::deserialize(&pool.settings).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            invalid(&pool.name, &field, e.into_inner().to_string())
        })?;
        let settings = Settings::from_raw(&pool.name, raw, pool.template.as_deref())?;
        // Render once now, so a template that does not render (or is too big) is bad
        // input reported before anything is launched. The result is dropped unseen.
        settings.render_user_data(pool, &crate::plan::machine_probe_name(&pool.name))?;
        Ok(settings)
    }

    /// Check `raw` for pool `pool`; `pool_template` is the pool's own `template:`.
    pub(crate) fn from_raw(
        pool: &str,
        raw: RawSettings,
        pool_template: Option<&str>,
    ) -> Result<Settings, ProviderError> {
        let non_empty = |field: &str, v: Option<String>| -> Result<Option<String>, ProviderError> {
            match v {
                Some(s) if s.trim().is_empty() => Err(invalid(
                    pool,
                    field,
                    "is empty; give a value or remove the line",
                )),
                other => Ok(other),
            }
        };
        let region = non_empty("region", raw.region)?;
        let profile = non_empty("profile", raw.profile)?;
        let endpoint_url = non_empty("endpoint_url", raw.endpoint_url)?;
        if let Some(url) = &endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                pool,
                "endpoint_url",
                format!("{url:?} is not a URL; write it as https://host[:port]"),
            ));
        }

        let cluster_name = match non_empty("cluster_name", raw.cluster_name)? {
            None => {
                return Err(invalid(
                    pool,
                    "cluster_name",
                    "is required: kbg tags every instance kubernetes.io/cluster/<cluster_name>: owned and finds a pool's instances by it; set it to your cluster's name",
                ));
            }
            Some(name) => name,
        };
        if cluster_name.len() > 100
            || !cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                pool,
                "cluster_name",
                format!(
                    "{cluster_name:?} is not a usable cluster name; use at most 100 letters, digits, '-', '_' or '.'"
                ),
            ));
        }

        let image = match (non_empty("ami", raw.ami)?, raw.launch_template) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    pool,
                    "",
                    "sets both ami and launch_template; keep one (the launch template can name the AMI itself)",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    pool,
                    "",
                    "sets neither ami nor launch_template; add ami: ami-… or launch_template: {id: lt-…}",
                ));
            }
            (Some(ami), None) => {
                if !ami.starts_with("ami-") {
                    return Err(invalid(
                        pool,
                        "ami",
                        format!(
                            "{ami:?} is not an AMI ID; write ami-… (find it with aws ec2 describe-images)"
                        ),
                    ));
                }
                ImageSource::Ami(ami)
            }
            (None, Some(lt)) => {
                let template = match (lt.id, lt.name) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            pool,
                            "launch_template",
                            "sets both id and name; keep one",
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(pool, "launch_template", "needs id (lt-…) or name"));
                    }
                    (Some(id), None) => {
                        if !id.starts_with("lt-") {
                            return Err(invalid(
                                pool,
                                "launch_template.id",
                                format!(
                                    "{id:?} is not a launch template ID; write lt-…, or use name:"
                                ),
                            ));
                        }
                        TemplateRef::Id(id)
                    }
                    (None, Some(name)) => {
                        if name.trim().is_empty() {
                            return Err(invalid(
                                pool,
                                "launch_template.name",
                                "is empty; give the template's name",
                            ));
                        }
                        TemplateRef::Name(name)
                    }
                };
                let version = match lt.version {
                    None => DEFAULT_LAUNCH_TEMPLATE_VERSION.to_string(),
                    Some(VersionValue(v)) => {
                        let ok = v == "$Latest"
                            || v == "$Default"
                            || (v.parse::<u64>().is_ok_and(|n| n > 0));
                        if !ok {
                            return Err(invalid(
                                pool,
                                "launch_template.version",
                                format!(
                                    "{v:?} is not a version; write $Latest, $Default or a version number"
                                ),
                            ));
                        }
                        v
                    }
                };
                ImageSource::LaunchTemplate { template, version }
            }
        };

        let instance_types = raw.instance_type.map(|t| t.0).unwrap_or_default();
        if instance_types.is_empty() && matches!(image, ImageSource::Ami(_)) {
            return Err(invalid(
                pool,
                "instance_type",
                "is required with ami; e.g. instance_type: m6i.large, or a list tried in order",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, t) in instance_types.iter().enumerate() {
            let field = format!("instance_type[{i}]");
            if !t.contains('.') || t.contains(char::is_whitespace) {
                return Err(invalid(
                    pool,
                    &field,
                    format!("{t:?} is not an instance type; write family.size, e.g. m6i.large"),
                ));
            }
            if !seen.insert(t) {
                return Err(invalid(
                    pool,
                    &field,
                    format!("{t} is listed twice; list each instance type once"),
                ));
            }
        }

        check_ids(pool, "subnets", &raw.subnets, "subnet-", "a subnet ID")?;
        check_ids(
            pool,
            "security_groups",
            &raw.security_groups,
            "sg-",
            "a security group ID",
        )?;
        let key_name = non_empty("key_name", raw.key_name)?;
        let iam_instance_profile = non_empty("iam_instance_profile", raw.iam_instance_profile)?
            .map(|p| {
                if p.starts_with("arn:") {
                    InstanceProfile::Arn(p)
                } else {
                    InstanceProfile::Name(p)
                }
            });

        if raw.tags.len() > MAX_USER_TAGS {
            return Err(invalid(
                pool,
                "tags",
                format!(
                    "has {} tags; EC2 allows 50 per instance and kbg sets 4, so keep at most {MAX_USER_TAGS}",
                    raw.tags.len()
                ),
            ));
        }
        for (k, v) in &raw.tags {
            let field = format!("tags.{k}");
            if is_reserved_tag(k) {
                return Err(invalid(
                    pool,
                    &field,
                    "is set by kbg (Name, kbg.io/*, kubernetes.io/cluster/*) or reserved by AWS (aws:*); remove it",
                ));
            }
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                return Err(invalid(
                    pool,
                    &field,
                    "is too long or empty; EC2 tag keys are 1-128 characters and values at most 256",
                ));
            }
        }

        let user_data = match (raw.user_data, pool_template) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    pool,
                    "user_data",
                    format!("and pools.{pool}.template both name a template; keep one"),
                ));
            }
            (Some(path), None) => read_template(pool, "user_data", &path)?,
            (None, Some(path)) => read_template(pool, "template", path)
                .map_err(|_| {
                    ProviderError::invalid_config(
                        PROVIDER,
                        format!("pools.{pool}.template"),
                        format!("cannot read {path:?}; check the path (relative paths start at the current directory)"),
                    )
                })?,
            (None, None) => UserData::Builtin(BuiltinTemplate::CloudInitKubeadm),
        };

        let wait_timeout = match raw.wait_timeout_secs {
            Some(0) => {
                return Err(invalid(
                    pool,
                    "wait_timeout_secs",
                    "is 0; give the seconds to wait for instances to start or stop (default 600)",
                ));
            }
            Some(s) => Duration::from_secs(s),
            None => Duration::from_secs(DEFAULT_WAIT_TIMEOUT_SECS),
        };

        Ok(Settings {
            region,
            profile,
            endpoint_url,
            cluster_name,
            image,
            instance_types,
            subnets: raw.subnets,
            security_groups: raw.security_groups,
            key_name,
            iam_instance_profile,
            tags: raw.tags,
            wait_timeout,
            user_data,
        })
    }

    /// The user data for `machine` of `pool`, rendered (not yet base64-encoded).
    ///
    /// # Errors
    /// [`kbg_provider::ErrorKind::InvalidConfig`] when the template does not render or the
    /// result is over EC2's 16 KB limit. The message never contains the rendered text.
    pub(crate) fn render_user_data(
        &self,
        pool: &PoolSpec,
        machine: &str,
    ) -> Result<Secret, ProviderError> {
        // `cloud: aws`: kbg's template registers the node with the provider ID
        // `aws:///<az>/<instance-id>` from instance metadata (see `AwsProvider`'s
        // `node_name`); a user's template may do the same.
        let ctx = BootstrapContext::new(pool, machine).on_cloud(PROVIDER);
        let (rendered, field) = match &self.user_data {
            UserData::Builtin(t) => (bootstrap::render_builtin(*t, &ctx)?, "user_data"),
            UserData::File { path, source } => {
                let field = if pool.template.is_some() {
                    "template"
                } else {
                    "user_data"
                };
                let r = bootstrap::render_str(path, source, &ctx).map_err(|e| {
                    let full = if field == "template" {
                        format!("pools.{}.template", pool.name)
                    } else {
                        field_path(&pool.name, field)
                    };
                    ProviderError::invalid_config(PROVIDER, full, e.message.replace('\n', " "))
                        .with_source(e)
                })?;
                (r, field)
            }
        };
        let len = rendered.expose().len();
        if len > MAX_USER_DATA_BYTES {
            return Err(invalid(
                &pool.name,
                field,
                format!(
                    "renders to {len} bytes for machine {machine}; EC2 accepts at most {MAX_USER_DATA_BYTES}: shorten the template"
                ),
            ));
        }
        Ok(rendered)
    }
}

fn check_ids(
    pool: &str,
    field: &str,
    ids: &[String],
    prefix: &str,
    what: &str,
) -> Result<(), ProviderError> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if !id.starts_with(prefix) {
            return Err(invalid(
                pool,
                &f,
                format!("{id:?} is not {what}; write {prefix}…"),
            ));
        }
        if !seen.insert(id) {
            return Err(invalid(
                pool,
                &f,
                format!("{id} is listed twice; list each once"),
            ));
        }
    }
    Ok(())
}

fn read_template(pool: &str, field: &str, path: &str) -> Result<UserData, ProviderError> {
    std::fs::read_to_string(path)
        .map(|source| UserData::File {
            path: path.to_string(),
            source,
        })
        .map_err(|e| {
            invalid(
                pool,
                field,
                format!("cannot read {path:?} ({e}); check the path (relative paths start at the current directory)"),
            )
        })
}

/// Tag keys the user may not set: kbg's own, and AWS's reserved prefix.
pub(crate) fn is_reserved_tag(key: &str) -> bool {
    key == "Name"
        || key.starts_with("kbg.io/")
        || key.starts_with("kubernetes.io/cluster/")
        || key.to_ascii_lowercase().starts_with("aws:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::{JoinConfig, PoolSpec};
    use serde_json::json;

    fn pool(settings: serde_json::Value) -> PoolSpec {
        PoolSpec {
            name: "beta".into(),
            version: "v1.31.2".into(),
            labels: BTreeMap::from([("kbg.io/pool".into(), "beta".into())]),
            taints: vec![],
            settings,
            template: None,
            join: JoinConfig {
                api_server_endpoint: "10.0.0.10:6443".into(),
                token: Some(Secret::new("abcdef.0123456789abcdef")),
                ca_cert_hash: Some(Secret::new("sha256:00ff")),
            },
        }
    }

    fn error_line(settings: serde_json::Value) -> String {
        Settings::from_pool(&pool(settings))
            .expect_err("settings should be refused")
            .to_string()
    }

    fn minimal() -> serde_json::Value {
        json!({"cluster_name": "prod", "ami": "ami-0abc", "instance_type": "m6i.large"})
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut v = minimal();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn minimal_settings_take_the_defaults() {
        let s = Settings::from_pool(&pool(minimal())).unwrap();
        assert_eq!(s.image, ImageSource::Ami("ami-0abc".into()));
        assert_eq!(s.instance_types, vec!["m6i.large".to_string()]);
        assert_eq!(s.wait_timeout, Duration::from_secs(600));
        assert!(s.subnets.is_empty());
        assert!(matches!(
            s.user_data,
            UserData::Builtin(BuiltinTemplate::CloudInitKubeadm)
        ));
    }

    #[test]
    fn full_settings_parse() {
        let s = Settings::from_pool(&pool(json!({
            "region": "eu-west-1",
            "profile": "ops",
            "endpoint_url": "http://127.0.0.1:5000",
            "cluster_name": "prod",
            "launch_template": {"name": "workers", "version": 7},
            "instance_type": ["m6i.large", "m5.large"],
            "subnets": ["subnet-a", "subnet-b"],
            "security_groups": ["sg-1"],
            "key_name": "ops-key",
            "iam_instance_profile": "arn:aws:iam::123456789012:instance-profile/node",
            "tags": {"team": "platform"},
            "wait_timeout_secs": 900
        })))
        .unwrap();
        assert_eq!(
            s.image,
            ImageSource::LaunchTemplate {
                template: TemplateRef::Name("workers".into()),
                version: "7".into()
            }
        );
        assert_eq!(s.instance_types, vec!["m6i.large", "m5.large"]);
        assert_eq!(
            s.iam_instance_profile,
            Some(InstanceProfile::Arn(
                "arn:aws:iam::123456789012:instance-profile/node".into()
            ))
        );
        assert_eq!(s.wait_timeout, Duration::from_secs(900));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn a_launch_template_defaults_to_latest_and_needs_no_instance_type() {
        let s = Settings::from_pool(&pool(
            json!({"cluster_name": "prod", "launch_template": {"id": "lt-0abc"}}),
        ))
        .unwrap();
        assert_eq!(
            s.image,
            ImageSource::LaunchTemplate {
                template: TemplateRef::Id("lt-0abc".into()),
                version: "$Latest".into()
            }
        );
        assert!(s.instance_types.is_empty());
    }

    #[test]
    fn bad_settings_give_one_line_naming_the_field_and_the_fix() {
        let cases = [
            ("missing block", serde_json::Value::Null),
            ("unknown field", with(json!({"amii": "ami-1"}))),
            ("wrong type", with(json!({"subnets": "subnet-a"}))),
            (
                "wrong element type",
                with(json!({"subnets": ["subnet-a", 3]})),
            ),
            (
                "unknown launch template field",
                json!({"cluster_name": "prod", "launch_template": {"id": "lt-1", "ver": 2}}),
            ),
            (
                "no cluster",
                json!({"ami": "ami-1", "instance_type": "m6i.large"}),
            ),
            ("bad cluster", with(json!({"cluster_name": "my cluster"}))),
            ("neither image", json!({"cluster_name": "prod"})),
            (
                "both images",
                with(json!({"launch_template": {"id": "lt-1"}})),
            ),
            ("bad ami", with(json!({"ami": "ubuntu-22.04"}))),
            (
                "no instance type",
                json!({"cluster_name": "prod", "ami": "ami-1"}),
            ),
            (
                "bad instance type",
                with(json!({"instance_type": ["m6i.large", "large"]})),
            ),
            (
                "instance type twice",
                with(json!({"instance_type": ["m5.large", "m5.large"]})),
            ),
            ("instance type number", with(json!({"instance_type": 5}))),
            ("bad subnet", with(json!({"subnets": ["subnet-a", "sn-b"]}))),
            (
                "subnet twice",
                with(json!({"subnets": ["subnet-a", "subnet-a"]})),
            ),
            ("bad group", with(json!({"security_groups": ["web"]}))),
            (
                "template id and name",
                json!({"cluster_name": "prod", "launch_template": {"id": "lt-1", "name": "w"}}),
            ),
            (
                "template neither",
                json!({"cluster_name": "prod", "launch_template": {"version": 1}}),
            ),
            (
                "bad template id",
                json!({"cluster_name": "prod", "launch_template": {"id": "workers"}}),
            ),
            (
                "bad template version",
                json!({"cluster_name": "prod", "launch_template": {"id": "lt-1", "version": "latest"}}),
            ),
            ("reserved tag", with(json!({"tags": {"kbg.io/pool": "x"}}))),
            ("name tag", with(json!({"tags": {"Name": "x"}}))),
            (
                "aws tag",
                with(json!({"tags": {"aws:cloudformation:stack-name": "x"}})),
            ),
            ("empty region", with(json!({"region": " "}))),
            (
                "bad endpoint",
                with(json!({"endpoint_url": "localhost:5000"})),
            ),
            ("zero wait", with(json!({"wait_timeout_secs": 0}))),
            ("negative wait", with(json!({"wait_timeout_secs": -5}))),
            (
                "missing user data file",
                with(json!({"user_data": "/nonexistent/kbg/user-data.j2"})),
            ),
            ("not a map", json!(["ami-1"])),
        ];
        let report = cases
            .into_iter()
            .map(|(what, settings)| format!("{what}:\n  {}", error_line(settings)))
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(report);
    }

    #[test]
    fn a_user_template_is_read_and_checked_when_the_provider_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.j2");
        std::fs::write(&good, "#!/bin/sh\necho {{ machine }} {{ version }}\n").unwrap();
        let s =
            Settings::from_pool(&pool(with(json!({"user_data": good.to_str().unwrap()})))).unwrap();
        let out = s.render_user_data(&pool(minimal()), "beta-4").unwrap();
        assert_eq!(out.expose(), "#!/bin/sh\necho beta-4 v1.31.2\n");

        let bad = dir.path().join("bad.j2");
        std::fs::write(&bad, "{{ no_such_variable }}").unwrap();
        let err = Settings::from_pool(&pool(with(json!({"user_data": bad.to_str().unwrap()}))))
            .unwrap_err();
        assert!(
            matches!(&err.kind, kbg_provider::ErrorKind::InvalidConfig { field } if field == "pools.beta.aws.user_data"),
            "{err}"
        );

        let big = dir.path().join("big.j2");
        std::fs::write(&big, "x".repeat(MAX_USER_DATA_BYTES + 1)).unwrap();
        let err = Settings::from_pool(&pool(with(json!({"user_data": big.to_str().unwrap()}))))
            .unwrap_err();
        assert!(err.to_string().contains("at most 16384"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../examples/aws.yaml");
        let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let pools = doc["pools"].as_object().unwrap();
        assert_eq!(pools.len(), 2);
        for (name, p) in pools {
            let mut spec = pool(p["aws"].clone());
            spec.name = name.clone();
            let s = Settings::from_pool(&spec).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.cluster_name, "prod");
        }
    }

    #[test]
    fn the_pools_own_template_is_used_when_aws_names_none() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.j2");
        std::fs::write(&t, "pool={{ pool }}\n").unwrap();
        let mut p = pool(minimal());
        p.template = Some(t.to_str().unwrap().to_string());
        let s = Settings::from_pool(&p).unwrap();
        assert_eq!(
            s.render_user_data(&p, "beta-0").unwrap().expose(),
            "pool=beta\n"
        );

        let mut both = pool(with(json!({"user_data": t.to_str().unwrap()})));
        both.template = Some(t.to_str().unwrap().to_string());
        let err = Settings::from_pool(&both).unwrap_err();
        assert!(err.to_string().contains("keep one"), "{err}");
    }
}
