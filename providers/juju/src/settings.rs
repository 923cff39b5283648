//! The `juju:` block of a pool in `kbg.yaml`, parsed and checked before the CLI runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kbg_provider::{PoolSpec, ProviderError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::PROVIDER;

/// The charm a pool deploys when `charm` is not set: Charmed Kubernetes' worker.
pub const DEFAULT_CHARM: &str = "kubernetes-worker";

/// Defaults for the waits, in wall-clock seconds (Juju is real time, whatever kbg's
/// cluster clock says).
pub mod defaults {
    /// Until every new unit's machine is up and its agent idle: 30 minutes, room for a
    /// cloud to boot a machine and the charm to install its snaps.
    pub const WAIT_TIMEOUT_SECS: u64 = 1800;
    /// Until removed units are gone from `juju status`: 15 minutes.
    pub const REMOVE_TIMEOUT_SECS: u64 = 900;
    /// For a charm action (`pause`, `resume`, `upgrade`) to finish: 30 minutes, as long as
    /// the charm's own drain may take.
    pub const ACTION_TIMEOUT_SECS: u64 = 1800;
    /// For one `juju` CLI call that is not a wait (deploy, status, …): 10 minutes.
    pub const COMMAND_TIMEOUT_SECS: u64 = 600;
    /// Between two `juju status` calls while waiting: 10 s.
    pub const POLL_INTERVAL_SECS: f64 = 10.0;
}

/// A pool's `juju:` settings.
///
/// ```yaml
/// juju:
///   juju: /snap/bin/juju                  # the CLI; default `juju` on PATH
///   data_dir: ~/.local/share/juju         # JUJU_DATA for every call (another controller)
///   model: k8s                            # -m; default the CLI's current model
///   application: beta                     # default the pool's name
///   charm: kubernetes-worker              # default
///   channel: 1.31/stable                  # default <pool minor>/stable
///   constraints: "cores=4 mem=16G"
///   base: ubuntu@22.04                    # or series: jammy (either works on 2.9 and 3.x)
///   config: {ingress: false}              # more charm options
///   relations:                            # endpoint: <application>:<endpoint>
///     kube-control: kubernetes-control-plane:kube-control
///     certificates: easyrsa:client
///   use_charm_pause: false                # hand-over by the charm's `pause` action
///   provider_id: "aws:///{availability-zone}/{instance-id}"
/// ```
#[derive(Clone, PartialEq)]
pub struct JujuSettings {
    /// The `juju` executable.
    pub juju: PathBuf,
    /// `JUJU_DATA` for every call, when the pool lives in another client configuration.
    pub data_dir: Option<PathBuf>,
    /// The model (`-m`); `None` is the CLI's current model.
    pub model: Option<String>,
    /// The application that is the pool.
    pub application: String,
    /// The charm deployed.
    pub charm: String,
    /// The charm channel (`--channel`).
    pub channel: String,
    /// Machine constraints (`--constraints`).
    pub constraints: Option<String>,
    /// The base (`ubuntu@22.04`); given to Juju 2.9 as the matching series.
    pub base: Option<String>,
    /// The series (`jammy`); given to Juju 3 as the matching base.
    pub series: Option<String>,
    /// Charm options, after the pool's labels, taints and kubelet channel were added for
    /// a charm kbg knows (see [`crate::charm_options`]). Values are strings, numbers or
    /// booleans; they may be secret and go to Juju in a file, never on the command line.
    pub config: BTreeMap<String, Value>,
    /// Relations to add after deploying: this application's endpoint → the other side.
    pub relations: BTreeMap<String, String>,
    /// Whether the hand-over uses the charm's `pause` action instead of kbg's drain.
    pub use_charm_pause: bool,
    /// How to spell a unit's node `spec.providerID` from its machine, if at all:
    /// placeholders `{instance-id}`, `{availability-zone}`, `{hostname}`, `{unit}`,
    /// `{machine}`.
    pub provider_id: Option<String>,
    /// Whether a unit that fails to come up stays for inspection (otherwise kbg removes
    /// it, so nothing leaks).
    pub keep_failed_units: bool,
    /// See [`defaults::WAIT_TIMEOUT_SECS`].
    pub wait_timeout_secs: u64,
    /// See [`defaults::REMOVE_TIMEOUT_SECS`].
    pub remove_timeout_secs: u64,
    /// See [`defaults::ACTION_TIMEOUT_SECS`].
    pub action_timeout_secs: u64,
    /// See [`defaults::COMMAND_TIMEOUT_SECS`].
    pub command_timeout_secs: u64,
    /// See [`defaults::POLL_INTERVAL_SECS`].
    pub poll_interval_secs: f64,
}

impl std::fmt::Debug for JujuSettings {
    /// Charm option values may be secret (registry credentials, say): only their names
    /// are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JujuSettings")
            .field("juju", &self.juju)
            .field("data_dir", &self.data_dir)
            .field("model", &self.model)
            .field("application", &self.application)
            .field("charm", &self.charm)
            .field("channel", &self.channel)
            .field("constraints", &self.constraints)
            .field("base", &self.base)
            .field("series", &self.series)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field("relations", &self.relations)
            .field("use_charm_pause", &self.use_charm_pause)
            .field("provider_id", &self.provider_id)
            .field("keep_failed_units", &self.keep_failed_units)
            .finish_non_exhaustive()
    }
}

const KNOWN: [&str; 19] = [
    "juju",
    "data_dir",
    "model",
    "application",
    "charm",
    "channel",
    "constraints",
    "base",
    "series",
    "config",
    "relations",
    "use_charm_pause",
    "provider_id",
    "keep_failed_units",
    "wait_timeout_secs",
    "remove_timeout_secs",
    "action_timeout_secs",
    "command_timeout_secs",
    "poll_interval_secs",
];

const PLACEHOLDERS: [&str; 5] = [
    "instance-id",
    "availability-zone",
    "hostname",
    "unit",
    "machine",
];

impl JujuSettings {
    /// Parse pool `pool`'s `juju:` block ([`PoolSpec::settings`]; `null` means all
    /// defaults).
    ///
    /// # Errors
    /// [`kbg_provider::ErrorKind::InvalidConfig`] naming `pools.<pool>.juju.<field>` and
    /// the fix, for the first bad field found.
    pub fn parse(pool: &PoolSpec) -> Result<Self, ProviderError> {
        let base_path = format!("pools.{}.juju", pool.name);
        let empty = Map::new();
        let obj = match &pool.settings {
            Value::Object(obj) => obj,
            Value::Null => &empty,
            _ => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    base_path,
                    "must be a mapping of Juju settings",
                ));
            }
        };
        if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ProviderError::invalid_config(
                PROVIDER,
                format!("{base_path}.{unknown}"),
                format!(
                    "unknown setting; the juju provider knows {}; charm options go under \
                     `config:`",
                    KNOWN.join(", ")
                ),
            ));
        }
        let f = |name: &str| format!("{base_path}.{name}");
        let bad = |name: &str, msg: String| ProviderError::invalid_config(PROVIDER, f(name), msg);

        let juju: String = get(obj, "juju", &f("juju"))?.unwrap_or_else(|| "juju".into());
        if juju.trim().is_empty() {
            return Err(bad("juju", "is empty: give the juju CLI's path".into()));
        }
        let application: String =
            get(obj, "application", &f("application"))?.unwrap_or_else(|| pool.name.clone());
        if !is_application_name(&application) {
            let (field, what) = if obj.contains_key("application") {
                ("application", "this")
            } else {
                ("application", "the pool's name")
            };
            return Err(bad(
                field,
                format!(
                    "`{application}` ({what}) is not a valid Juju application name: use \
                     lowercase letters, digits and `-`, starting with a letter, with a letter \
                     in every part after a `-` (e.g. `workers-b`); set \
                     pools.{}.juju.application to one",
                    pool.name
                ),
            ));
        }
        let charm: String =
            get(obj, "charm", &f("charm"))?.unwrap_or_else(|| DEFAULT_CHARM.to_string());
        let channel: String = match get::<String>(obj, "channel", &f("channel"))? {
            Some(c) => c,
            None => match minor_of(&pool.version) {
                Some(minor) => format!("{minor}/stable"),
                None => {
                    return Err(bad(
                        "channel",
                        format!(
                            "cannot derive a channel from version `{}`; set it, e.g. \
                             `1.31/stable`",
                            pool.version
                        ),
                    ));
                }
            },
        };
        let base: Option<String> = get(obj, "base", &f("base"))?;
        let series: Option<String> = get(obj, "series", &f("series"))?;
        match (&base, &series) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "series",
                    "give either base (ubuntu@22.04) or series (jammy), not both".into(),
                ));
            }
            (Some(b), None) if crate::syntax::series_of_base(b).is_none() => {
                return Err(bad(
                    "base",
                    format!("`{b}` is not an Ubuntu base kbg knows, like ubuntu@22.04"),
                ));
            }
            (None, Some(s)) if crate::syntax::base_of_series(s).is_none() => {
                return Err(bad(
                    "series",
                    format!("`{s}` is not an Ubuntu series kbg knows, like jammy"),
                ));
            }
            _ => {}
        }
        let user_config: BTreeMap<String, Value> =
            get(obj, "config", &f("config"))?.unwrap_or_default();
        for (key, value) in &user_config {
            if !(value.is_string() || value.is_number() || value.is_boolean()) {
                return Err(bad(
                    &format!("config.{key}"),
                    "charm options are strings, numbers or booleans".into(),
                ));
            }
        }
        let mut config = crate::charm_options(&charm, pool);
        config.extend(user_config);
        let relations: BTreeMap<String, String> =
            get(obj, "relations", &f("relations"))?.unwrap_or_default();
        for (endpoint, other) in &relations {
            let ok_other = other
                .split_once(':')
                .is_none_or(|(app, ep)| is_application_name(app) && !ep.is_empty())
                && (other.contains(':') || is_application_name(other));
            if endpoint.is_empty() || !ok_other {
                return Err(bad(
                    &format!("relations.{endpoint}"),
                    format!("`{other}` is not `<application>` or `<application>:<endpoint>`"),
                ));
            }
        }
        let provider_id: Option<String> = get(obj, "provider_id", &f("provider_id"))?;
        if let Some(t) = &provider_id
            && let Some(unknown) = placeholders(t).find(|p| !PLACEHOLDERS.contains(p))
        {
            return Err(bad(
                "provider_id",
                format!(
                    "unknown placeholder {{{unknown}}}; known: {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ),
            ));
        }
        let secs = |name: &str, default: u64| -> Result<u64, ProviderError> {
            let v: u64 = get(obj, name, &f(name))?.unwrap_or(default);
            if v == 0 || v > 86_400 {
                return Err(bad(name, "must be between 1 and 86400 seconds".into()));
            }
            Ok(v)
        };
        let poll_interval_secs: f64 = get(obj, "poll_interval_secs", &f("poll_interval_secs"))?
            .unwrap_or(defaults::POLL_INTERVAL_SECS);
        if !(0.01..=600.0).contains(&poll_interval_secs) {
            return Err(bad(
                "poll_interval_secs",
                "must be between 0.01 and 600 seconds".into(),
            ));
        }
        Ok(JujuSettings {
            juju: PathBuf::from(juju),
            data_dir: get::<String>(obj, "data_dir", &f("data_dir"))?.map(PathBuf::from),
            model: get(obj, "model", &f("model"))?,
            application,
            charm,
            channel,
            constraints: get(obj, "constraints", &f("constraints"))?,
            base,
            series,
            config,
            relations,
            use_charm_pause: get(obj, "use_charm_pause", &f("use_charm_pause"))?.unwrap_or(false),
            provider_id,
            keep_failed_units: get(obj, "keep_failed_units", &f("keep_failed_units"))?
                .unwrap_or(false),
            wait_timeout_secs: secs("wait_timeout_secs", defaults::WAIT_TIMEOUT_SECS)?,
            remove_timeout_secs: secs("remove_timeout_secs", defaults::REMOVE_TIMEOUT_SECS)?,
            action_timeout_secs: secs("action_timeout_secs", defaults::ACTION_TIMEOUT_SECS)?,
            command_timeout_secs: secs("command_timeout_secs", defaults::COMMAND_TIMEOUT_SECS)?,
            poll_interval_secs,
        })
    }
}

/// `{name}` placeholders in `template`.
pub(crate) fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// `1.31` from `v1.31.2` (or `1.31.2-eks-1`).
pub(crate) fn minor_of(version: &str) -> Option<String> {
    let v = version.trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?;
    let minor = parts.next()?;
    (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok())
        .then(|| format!("{major}.{minor}"))
}

/// Juju's rule for application names: lowercase letters, digits and hyphens, starting
/// with a letter, and every part after a hyphen containing a letter (`pool-2` is not
/// valid, `pool-b2` is).
pub fn is_application_name(name: &str) -> bool {
    let mut parts = name.split('-');
    let first = parts.next().unwrap_or("");
    let ok_chars = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    ok_chars(first)
        && first.as_bytes()[0].is_ascii_lowercase()
        && parts.all(|p| ok_chars(p) && p.bytes().any(|b| b.is_ascii_lowercase()))
}

fn get<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<T>, ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ProviderError::invalid_config(PROVIDER, path, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::{ErrorKind, JoinConfig, Taint, TaintEffect};
    use serde_json::json;

    pub(crate) fn pool(settings: Value) -> PoolSpec {
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
            join: JoinConfig::default(),
        }
    }

    #[test]
    fn defaults_follow_the_pool() {
        let s = JujuSettings::parse(&pool(Value::Null)).unwrap();
        assert_eq!(s.juju, PathBuf::from("juju"));
        assert_eq!(s.application, "beta");
        assert_eq!(s.charm, "kubernetes-worker");
        assert_eq!(s.channel, "1.31/stable");
        assert_eq!(
            s.config,
            BTreeMap::from([
                ("channel".to_string(), json!("1.31/stable")),
                (
                    "kubelet-extra-args".to_string(),
                    json!("register-with-taints=dedicated=web:NoSchedule")
                ),
                ("labels".to_string(), json!("kbg.io/pool=beta tier=web")),
            ])
        );
        assert!(!s.use_charm_pause);
        assert_eq!(s.wait_timeout_secs, defaults::WAIT_TIMEOUT_SECS);
    }

    #[test]
    fn user_options_win_over_derived_ones() {
        let s = JujuSettings::parse(&pool(
            json!({"config": {"channel": "1.31/edge", "ingress": false}, "base": "ubuntu@22.04",
                   "relations": {"kube-control": "kubernetes-control-plane:kube-control",
                                 "certificates": "easyrsa"}}),
        ))
        .unwrap();
        assert_eq!(s.config["channel"], json!("1.31/edge"));
        assert_eq!(s.config["ingress"], json!(false));
        assert_eq!(s.base.as_deref(), Some("ubuntu@22.04"));
        assert_eq!(s.relations.len(), 2);
    }

    #[test]
    fn application_names_follow_juju() {
        for ok in ["beta", "workers-b", "pool-b2", "a1"] {
            assert!(is_application_name(ok), "{ok}");
        }
        for bad in [
            "", "Beta", "1beta", "pool-2", "pool--b", "pool-", "po_ol", "-b",
        ] {
            assert!(!is_application_name(bad), "{bad}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut numbered = pool(Value::Null);
        numbered.name = "pool-2".into();
        let err = JujuSettings::parse(&numbered).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::InvalidConfig {
                field: "pools.pool-2.juju.application".into()
            }
        );
        assert!(
            err.to_string()
                .contains("set pools.pool-2.juju.application"),
            "{err}"
        );

        for (block, field, says) in [
            (json!([]), "pools.beta.juju", "mapping"),
            (
                json!({"modle": "k8s"}),
                "pools.beta.juju.modle",
                "unknown setting",
            ),
            (json!({"juju": ""}), "pools.beta.juju.juju", "empty"),
            (json!({"model": 3}), "pools.beta.juju.model", "invalid type"),
            (
                json!({"base": "ubuntu@22.04", "series": "jammy"}),
                "pools.beta.juju.series",
                "not both",
            ),
            (
                json!({"base": "centos@7"}),
                "pools.beta.juju.base",
                "centos@7",
            ),
            (
                json!({"series": "warty"}),
                "pools.beta.juju.series",
                "warty",
            ),
            (
                json!({"config": {"labels": ["a"]}}),
                "pools.beta.juju.config.labels",
                "strings, numbers or booleans",
            ),
            (
                json!({"relations": {"cni": "Calico:cni"}}),
                "pools.beta.juju.relations.cni",
                "Calico:cni",
            ),
            (
                json!({"provider_id": "aws:///{zone}/{instance-id}"}),
                "pools.beta.juju.provider_id",
                "{zone}",
            ),
            (
                json!({"wait_timeout_secs": 0}),
                "pools.beta.juju.wait_timeout_secs",
                "between",
            ),
            (
                json!({"poll_interval_secs": 0}),
                "pools.beta.juju.poll_interval_secs",
                "between",
            ),
            (
                json!({"use_charm_pause": "yes"}),
                "pools.beta.juju.use_charm_pause",
                "invalid type",
            ),
        ] {
            let err = JujuSettings::parse(&pool(block.clone())).unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::InvalidConfig {
                    field: field.into()
                },
                "{block}"
            );
            assert!(err.to_string().contains(says), "{block}: {err}");
        }
    }

    #[test]
    fn debug_shows_option_names_not_values() {
        let s = JujuSettings::parse(&pool(
            json!({"config": {"docker-logins": "[{\"password\": \"hunter2\"}]"}}),
        ))
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            shown.contains("docker-logins") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn channels_come_from_the_minor_version() {
        assert_eq!(minor_of("v1.31.2").as_deref(), Some("1.31"));
        assert_eq!(minor_of("1.29.0-eks-1").as_deref(), Some("1.29"));
        assert_eq!(minor_of("v1").as_deref(), None);
        let mut odd = pool(Value::Null);
        odd.version = "latest".into();
        let err = JujuSettings::parse(&odd).unwrap_err();
        assert!(err.to_string().contains("pools.beta.juju.channel"), "{err}");
    }
}
