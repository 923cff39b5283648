//! The `metal:` block of a pool in `kbg.yaml`, checked field by field before anything is
//! touched.
//!
//! ```yaml
//! pools:
//!   beta:
//!     provider: metal
//!     version: v1.31.2
//!     metal:
//!       inventory: metal-inventory.yaml      # required: the hosts kbg may take
//!       known_hosts: ~/.ssh/known_hosts      # default; host keys are checked against it
//!       insecure_accept_host_keys: false     # accept hosts missing from known_hosts
//!       bootstrap: my-bootstrap.sh.j2        # default: templates/metal-bootstrap.sh.j2
//!       selector: {disk: ssd}                # labels a host must carry to be taken
//!       connect_timeout_seconds: 30
//!       bootstrap_timeout_seconds: 1800
//!       reset_timeout_seconds: 600
//!       parallelism: 10
//! ```
//!
//! Relative paths are resolved against a base directory (the directory of `kbg.yaml` when
//! kbg passes it, else the current directory); `~/` is the user's home.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kbg_provider::ProviderError;
use serde::de::DeserializeOwned;

use crate::PROVIDER;

/// Default for `connect_timeout_seconds`: TCP connect, SSH handshake and authentication.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 30;
/// Default for `bootstrap_timeout_seconds`: package downloads on a slow mirror plus
/// `kubeadm join`'s own waits (its TLS bootstrap gives up after 4 minutes).
pub const DEFAULT_BOOTSTRAP_TIMEOUT_SECS: u64 = 1800;
/// Default for `reset_timeout_seconds`: `kubeadm reset -f` and stopping the kubelet.
pub const DEFAULT_RESET_TIMEOUT_SECS: u64 = 600;
/// Default for `parallelism`: hosts bootstrapped or reset at the same time.
pub const DEFAULT_PARALLELISM: usize = 10;

/// The `metal:` settings of one pool, resolved (absolute paths, durations).
#[derive(Clone, Debug, PartialEq)]
pub struct MetalSettings {
    /// The inventory file (absolute).
    pub inventory: PathBuf,
    /// The `known_hosts` file host keys are checked against (absolute).
    pub known_hosts: PathBuf,
    /// Accept a host whose key is not in `known_hosts` at all. A key that *contradicts*
    /// `known_hosts` is refused regardless.
    pub insecure_accept_host_keys: bool,
    /// A bootstrap template of the user's (absolute), instead of the built-in
    /// `metal-bootstrap.sh.j2`.
    pub bootstrap: Option<PathBuf>,
    /// Labels a host must carry to be taken for this pool.
    pub selector: BTreeMap<String, String>,
    /// Limit on TCP connect + SSH handshake + authentication.
    pub connect_timeout: Duration,
    /// Limit on one host's bootstrap script.
    pub bootstrap_timeout: Duration,
    /// Limit on one host's reset (`kubeadm reset -f`, stop the kubelet).
    pub reset_timeout: Duration,
    /// Hosts bootstrapped or reset at the same time (≥ 1).
    pub parallelism: usize,
}

const FIELDS: &[&str] = &[
    "inventory",
    "known_hosts",
    "insecure_accept_host_keys",
    "bootstrap",
    "selector",
    "connect_timeout_seconds",
    "bootstrap_timeout_seconds",
    "reset_timeout_seconds",
    "parallelism",
];

impl MetalSettings {
    /// Parse the `metal:` block of pool `pool` (`value`), resolving relative paths
    /// against `base`.
    ///
    /// # Errors
    /// [`kbg_provider::ErrorKind::InvalidConfig`] naming `pools.<pool>.metal.<field>` for
    /// every bad field (all of them in one line).
    pub fn parse(
        pool: &str,
        value: &serde_json::Value,
        base: &Path,
    ) -> Result<Self, ProviderError> {
        let prefix = format!("pools.{pool}.metal");
        let mut problems = Problems::default();
        let empty = serde_json::Map::new();
        let object = match value {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => &empty,
            _ => {
                problems.push(&prefix, "must be a mapping with at least `inventory:`");
                return Err(problems.into_error().expect("one problem"));
            }
        };
        for key in object.keys() {
            if !FIELDS.contains(&key.as_str()) {
                problems.push(
                    format!("{prefix}.{key}"),
                    format!(
                        "unknown setting; the metal provider knows {}",
                        FIELDS.join(", ")
                    ),
                );
            }
        }
        let field = |name: &str| (format!("{prefix}.{name}"), object.get(name));

        let (f, v) = field("inventory");
        let inventory = match get::<String>(&mut problems, &f, v) {
            Some(s) if !s.trim().is_empty() => Some(resolve(base, &s)),
            Some(_) | None => {
                problems.push(
                    &f,
                    "is required: the path of the inventory file listing the hosts",
                );
                None
            }
        };
        let (f, v) = field("insecure_accept_host_keys");
        let insecure_accept_host_keys = get::<bool>(&mut problems, &f, v).unwrap_or(false);
        let (f, v) = field("known_hosts");
        let known_hosts = match get::<String>(&mut problems, &f, v) {
            Some(s) if s.trim().is_empty() => {
                problems.push(
                    &f,
                    "is empty; give a path or leave it out for ~/.ssh/known_hosts",
                );
                None
            }
            Some(s) => Some(resolve(base, &s)),
            None => Some(resolve(base, "~/.ssh/known_hosts")),
        };
        let (f, v) = field("bootstrap");
        let bootstrap = get::<String>(&mut problems, &f, v).map(|s| resolve(base, &s));
        let (f, v) = field("selector");
        let selector = get::<BTreeMap<String, String>>(&mut problems, &f, v).unwrap_or_default();
        let mut seconds = |name: &str, default: u64| {
            let (f, v) = field(name);
            match get::<u64>(&mut problems, &f, v) {
                Some(0) => {
                    problems.push(&f, "must be at least 1 (seconds)");
                    Duration::from_secs(default)
                }
                Some(n) => Duration::from_secs(n),
                None => Duration::from_secs(default),
            }
        };
        let connect_timeout = seconds("connect_timeout_seconds", DEFAULT_CONNECT_TIMEOUT_SECS);
        let bootstrap_timeout =
            seconds("bootstrap_timeout_seconds", DEFAULT_BOOTSTRAP_TIMEOUT_SECS);
        let reset_timeout = seconds("reset_timeout_seconds", DEFAULT_RESET_TIMEOUT_SECS);
        let (f, v) = field("parallelism");
        let parallelism = match get::<usize>(&mut problems, &f, v) {
            Some(0) => {
                problems.push(&f, "must be at least 1");
                DEFAULT_PARALLELISM
            }
            Some(n) => n,
            None => DEFAULT_PARALLELISM,
        };

        if let Some(err) = problems.into_error() {
            return Err(err);
        }
        Ok(MetalSettings {
            inventory: inventory.expect("checked above"),
            known_hosts: known_hosts.expect("checked above"),
            insecure_accept_host_keys,
            bootstrap,
            selector,
            connect_timeout,
            bootstrap_timeout,
            reset_timeout,
            parallelism,
        })
    }
}

/// Deserialize one field, recording a problem naming it if it has the wrong shape.
fn get<T: DeserializeOwned>(
    problems: &mut Problems,
    field: &str,
    value: Option<&serde_json::Value>,
) -> Option<T> {
    match value {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(field, format!("{e}"));
                None
            }
        },
    }
}

/// `path` made absolute: `~/…` under `$HOME`, relative paths under `base`.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = path.trim();
    if (path == "~" || path.starts_with("~/"))
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(path.trim_start_matches('~').trim_start_matches('/'));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Every bad field found, reported as one line.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<(String, String)>,
}

impl Problems {
    /// Record that `field` is wrong, and `message` says how to fix it.
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push((field.into(), message.into()));
    }

    /// One [`kbg_provider::ErrorKind::InvalidConfig`] naming the first field, its message
    /// followed by every other problem (`…; also <field>: <message>`), or `None`.
    pub(crate) fn into_error(self) -> Option<ProviderError> {
        let mut list = self.list.into_iter();
        let (field, first) = list.next()?;
        let mut message = first;
        for (f, m) in list {
            message.push_str(&format!("; also {f}: {m}"));
        }
        Some(ProviderError::invalid_config(PROVIDER, field, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::ErrorKind;
    use serde_json::json;

    #[test]
    fn defaults_and_relative_paths() {
        let s = MetalSettings::parse(
            "beta",
            &json!({"inventory": "inv.yaml", "known_hosts": "/etc/ssh/ssh_known_hosts"}),
            Path::new("/srv/kbg"),
        )
        .unwrap();
        assert_eq!(s.inventory, PathBuf::from("/srv/kbg/inv.yaml"));
        assert_eq!(s.known_hosts, PathBuf::from("/etc/ssh/ssh_known_hosts"));
        assert!(!s.insecure_accept_host_keys);
        assert_eq!(s.bootstrap, None);
        assert_eq!(s.connect_timeout, Duration::from_secs(30));
        assert_eq!(s.bootstrap_timeout, Duration::from_secs(1800));
        assert_eq!(s.reset_timeout, Duration::from_secs(600));
        assert_eq!(s.parallelism, 10);
    }

    #[test]
    fn known_hosts_defaults_to_the_users_file() {
        let s =
            MetalSettings::parse("beta", &json!({"inventory": "/i.yaml"}), Path::new("/")).unwrap();
        let home = std::env::var("HOME").unwrap();
        assert_eq!(s.known_hosts, Path::new(&home).join(".ssh/known_hosts"));
    }

    #[test]
    fn every_bad_field_is_named_in_one_line() {
        let err = MetalSettings::parse(
            "beta",
            &json!({
                "inventroy": "x",
                "insecure_accept_host_keys": "yes",
                "parallelism": 0,
                "connect_timeout_seconds": -3,
                "selector": ["a"],
            }),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            matches!(&err.kind, ErrorKind::InvalidConfig { field } if field == "pools.beta.metal.inventroy"),
            "{err:?}"
        );
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        for field in [
            "pools.beta.metal.inventroy: unknown setting",
            "pools.beta.metal.inventory: is required",
            "pools.beta.metal.insecure_accept_host_keys: invalid type: string \"yes\", expected a boolean",
            "pools.beta.metal.parallelism: must be at least 1",
            "pools.beta.metal.connect_timeout_seconds: invalid value: integer `-3`",
            "pools.beta.metal.selector: invalid type: sequence, expected a map",
        ] {
            assert!(line.contains(field), "missing {field:?} in {line}");
        }
    }

    #[test]
    fn a_missing_block_asks_for_the_inventory() {
        let err =
            MetalSettings::parse("beta", &serde_json::Value::Null, Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metal: pools.beta.metal.inventory: is required: the path of the inventory file listing the hosts"
        );
        let err = MetalSettings::parse("beta", &json!("inv.yaml"), Path::new("/")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metal: pools.beta.metal: must be a mapping")
        );
    }
}
