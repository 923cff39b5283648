//! The `exec:` block of a pool in `kbg.yaml`, parsed and checked before anything runs.

use std::path::PathBuf;

use kbg_provider::ProviderError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::PROVIDER;

/// How long a plugin may take to answer one request when `timeout_secs` is not set:
/// 10 minutes of wall-clock time, room for a cloud API to create a few machines.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// The longest `timeout_secs` accepted: one day.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Which bootstrap kbg renders for each new machine and hands the plugin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bootstrap {
    /// `cloud-init`: the built-in cloud-init user-data (installs the pool's kubelet and
    /// kubeadm, runs `kubeadm join`). The default.
    #[default]
    CloudInit,
    /// `kubelet-unit`: the built-in kubelet systemd unit (CoreOS kubelet-wrapper style).
    KubeletUnit,
    /// `none`: no bootstrap; the plugin boots machines its own way.
    None,
}

/// A pool's `exec:` settings.
///
/// ```yaml
/// exec:
///   program: /usr/local/bin/kbg-maas      # required: the plugin
///   args: ["--profile", "prod"]           # optional, never secrets (argv is visible in ps)
///   timeout_secs: 600                     # per request, wall-clock seconds
///   bootstrap: cloud-init                 # cloud-init | kubelet-unit | none
///   config: {zone: rack-3}                # free-form, handed to the plugin as pool.config
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExecSettings {
    /// The plugin executable: a path, or a name looked up on `PATH`.
    pub program: PathBuf,
    /// Extra arguments, before nothing else: kbg adds none of its own.
    pub args: Vec<String>,
    /// How long one request may take, in wall-clock seconds, before kbg kills the plugin
    /// (and its process group). `run` requests get the command's own timeout plus
    /// [`crate::RUN_GRACE_SECS`] instead.
    pub timeout_secs: u64,
    /// Which bootstrap each provisioned machine gets (overridden by the pool's
    /// `template:`).
    pub bootstrap: Bootstrap,
    /// The plugin's own settings, passed through as `pool.config` (an object).
    pub config: Value,
}

const KNOWN: [&str; 5] = ["program", "args", "timeout_secs", "bootstrap", "config"];

impl ExecSettings {
    /// Parse the `exec:` block of pool `pool`.
    ///
    /// # Errors
    /// [`kbg_provider::ErrorKind::InvalidConfig`] naming `pools.<pool>.exec.<field>` and
    /// the fix, for the first bad field found.
    pub fn parse(pool: &str, block: &Value) -> Result<Self, ProviderError> {
        let base = format!("pools.{pool}.exec");
        let obj = match block {
            Value::Object(obj) => obj,
            Value::Null => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    base,
                    "is missing: an exec pool needs at least `program: <path of the plugin>`",
                ));
            }
            _ => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    base,
                    "must be a mapping with at least `program: <path of the plugin>`",
                ));
            }
        };
        if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ProviderError::invalid_config(
                PROVIDER,
                format!("{base}.{unknown}"),
                format!(
                    "unknown setting; the exec provider knows {}; put the plugin's own \
                     settings under `config:`",
                    KNOWN.join(", ")
                ),
            ));
        }
        let field = |name: &str| format!("{base}.{name}");

        let program: String = match get(obj, "program", &field("program"))? {
            Some(p) => p,
            None => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    field("program"),
                    "is required: the path of the plugin executable",
                ));
            }
        };
        if program.trim().is_empty() {
            return Err(ProviderError::invalid_config(
                PROVIDER,
                field("program"),
                "is empty: give the path of the plugin executable",
            ));
        }
        let args: Vec<String> = get(obj, "args", &field("args"))?.unwrap_or_default();
        let timeout_secs: u64 =
            get(obj, "timeout_secs", &field("timeout_secs"))?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(ProviderError::invalid_config(
                PROVIDER,
                field("timeout_secs"),
                format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds"),
            ));
        }
        let bootstrap = match get::<String>(obj, "bootstrap", &field("bootstrap"))?.as_deref() {
            None | Some("cloud-init") => Bootstrap::CloudInit,
            Some("kubelet-unit") => Bootstrap::KubeletUnit,
            Some("none") => Bootstrap::None,
            Some(other) => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    field("bootstrap"),
                    format!("`{other}` is not one of cloud-init, kubelet-unit, none"),
                ));
            }
        };
        let config = match obj.get("config") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(ProviderError::invalid_config(
                    PROVIDER,
                    field("config"),
                    "must be a mapping (the plugin's own settings)",
                ));
            }
        };
        Ok(ExecSettings {
            program: PathBuf::from(program),
            args,
            timeout_secs,
            bootstrap,
            config,
        })
    }
}

/// `obj[key]` as a `T`, `None` when absent or null; a wrong type names `path`.
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
    use kbg_provider::ErrorKind;
    use serde_json::json;

    fn field_of(err: &ProviderError) -> &str {
        match &err.kind {
            ErrorKind::InvalidConfig { field } => field,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let s = ExecSettings::parse("beta", &json!({"program": "./plugin"})).unwrap();
        assert_eq!(s.program, PathBuf::from("./plugin"));
        assert!(s.args.is_empty());
        assert_eq!(s.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(s.bootstrap, Bootstrap::CloudInit);
        assert_eq!(s.config, json!({}));
    }

    #[test]
    fn every_setting_is_read() {
        let s = ExecSettings::parse(
            "beta",
            &json!({"program": "/p", "args": ["-v"], "timeout_secs": 30,
                    "bootstrap": "none", "config": {"zone": "a"}}),
        )
        .unwrap();
        assert_eq!(s.args, ["-v"]);
        assert_eq!(s.timeout_secs, 30);
        assert_eq!(s.bootstrap, Bootstrap::None);
        assert_eq!(s.config, json!({"zone": "a"}));
    }

    #[test]
    fn bad_fields_are_named() {
        for (block, field, says) in [
            (json!(null), "pools.beta.exec", "program"),
            (json!("x"), "pools.beta.exec", "mapping"),
            (json!({}), "pools.beta.exec.program", "required"),
            (json!({"program": " "}), "pools.beta.exec.program", "empty"),
            (
                json!({"program": 3}),
                "pools.beta.exec.program",
                "invalid type",
            ),
            (
                json!({"program": "p", "args": "-v"}),
                "pools.beta.exec.args",
                "invalid type",
            ),
            (
                json!({"program": "p", "timeout_secs": 0}),
                "pools.beta.exec.timeout_secs",
                "between",
            ),
            (
                json!({"program": "p", "timeout_secs": -5}),
                "pools.beta.exec.timeout_secs",
                "invalid value",
            ),
            (
                json!({"program": "p", "bootstrap": "ignition"}),
                "pools.beta.exec.bootstrap",
                "ignition",
            ),
            (
                json!({"program": "p", "config": [1]}),
                "pools.beta.exec.config",
                "mapping",
            ),
            (
                json!({"program": "p", "zone": "a"}),
                "pools.beta.exec.zone",
                "config:",
            ),
        ] {
            let err = ExecSettings::parse("beta", &block).unwrap_err();
            assert_eq!(field_of(&err), field, "{block}");
            assert!(err.to_string().contains(says), "{block}: {err}");
        }
    }
}
