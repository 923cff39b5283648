//! The inventory: the pre-provisioned hosts a pool may take.
//!
//! ```yaml
//! defaults:                    # optional; every host may override each of these
//!   port: 22
//!   user: root
//!   key: ~/.ssh/kbg_ed25519    # relative paths are relative to this file
//! hosts:
//!   - name: rack1-node1        # unique; the machine's provider ID is metal://rack1-node1
//!     address: 10.0.0.21       # IP address or DNS name
//!     labels: {rack: r1}       # matched against a pool's `selector`
//!   - name: rack1-node2
//!     address: 10.0.0.22
//!     user: kbg
//!     sudo: true               # default: true unless the user is root
//!     pool: beta               # reserved: only pool beta may take this host
//! ```
//!
//! The inventory says which hosts exist; which pool holds which host right now lives in
//! kbg's state in the cluster (the [`Ledger`](kbg_provider::Ledger)), never in this file.
//!
//! Everything is checked when the provider is built: names, addresses, ports, and each
//! private key (readable by its owner only, unencrypted, ed25519 or ECDSA — the SSH client
//! is built without RSA, RUSTSEC-2023-0071).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kbg_provider::ProviderError;
use russh::keys::{Algorithm, PrivateKey};
use serde::Deserialize;

use crate::settings::resolve;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    port: Option<u16>,
    user: Option<String>,
    key: Option<String>,
    sudo: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    address: String,
    port: Option<u16>,
    user: Option<String>,
    key: Option<String>,
    sudo: Option<bool>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    pool: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    defaults: RawDefaults,
    hosts: Vec<RawHost>,
}

/// A private key loaded from disk. Its `Debug` shows the path and the public key's
/// fingerprint, never the key.
#[derive(Clone)]
pub(crate) struct ClientKey {
    pub(crate) path: PathBuf,
    pub(crate) key: Arc<PrivateKey>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("path", &self.path)
            .field(
                "fingerprint",
                &crate::known_hosts::fingerprint(self.key.public_key()),
            )
            .finish()
    }
}

/// One host of the inventory.
#[derive(Clone, Debug)]
pub struct Host {
    /// Unique name; the machine's provider ID is `metal://<name>`.
    pub name: String,
    /// IP address or DNS name to connect to.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// Whether scripts run through `sudo -n` (the user is not root).
    pub sudo: bool,
    /// Labels a pool's `selector` is matched against.
    pub labels: BTreeMap<String, String>,
    /// The pool this host is reserved for, if any.
    pub pool: Option<String>,
    pub(crate) key: ClientKey,
}

impl Host {
    /// `user@address:port`, for messages.
    pub fn ssh_target(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }

    /// Whether pool `pool` with `selector` may take this host: it is reserved for that
    /// pool or for none, and carries every label of the selector.
    pub fn eligible_for(&self, pool: &str, selector: &BTreeMap<String, String>) -> bool {
        self.pool.as_deref().is_none_or(|p| p == pool)
            && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The parsed, checked inventory file.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its hosts, in file order.
    pub hosts: Vec<Host>,
}

impl Inventory {
    /// Read and check the inventory at `path`; `field` is the setting that named it
    /// (`pools.beta.metal.inventory`), for errors.
    ///
    /// # Errors
    /// [`kbg_provider::ErrorKind::InvalidConfig`] naming `field`, the file, and every bad
    /// host field (`hosts[2] (rack1-node3).key: …`) in one line.
    pub fn load(path: &Path, field: &str) -> Result<Self, ProviderError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ProviderError::invalid_config(
                crate::PROVIDER,
                field,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Self::parse(path, &text, field)
    }

    /// Check inventory `text`, read from `path`.
    ///
    /// # Errors
    /// As [`Inventory::load`].
    pub fn parse(path: &Path, text: &str, field: &str) -> Result<Self, ProviderError> {
        let shown = path.display();
        let raw: RawInventory = serde_saphyr::from_str(text).map_err(|e| {
            let e = e.to_string().replace('\n', " ");
            ProviderError::invalid_config(crate::PROVIDER, field, format!("{shown}: {e}"))
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut problems: Vec<String> = Vec::new();
        let mut problem = |what: String, msg: String| problems.push(format!("{what}: {msg}"));
        if raw.hosts.is_empty() {
            problem("hosts".into(), "lists no host".into());
        }
        let mut keys: HashMap<PathBuf, Result<ClientKey, String>> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut endpoints: HashMap<(String, u16), usize> = HashMap::new();
        let mut hosts = Vec::new();
        for (i, h) in raw.hosts.into_iter().enumerate() {
            let at = if h.name.is_empty() {
                format!("hosts[{i}]")
            } else {
                format!("hosts[{i}] ({})", h.name)
            };
            if !valid_name(&h.name) {
                problem(
                    format!("{at}.name"),
                    "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit".into(),
                );
            } else if let Some(j) = names.insert(h.name.clone(), i) {
                problem(
                    format!("{at}.name"),
                    format!("is also the name of hosts[{j}]"),
                );
            }
            let address = h.address.trim().to_string();
            if address.is_empty() || address.contains(char::is_whitespace) || address.contains('@')
            {
                problem(
                    format!("{at}.address"),
                    "must be an IP address or DNS name (the user goes in `user:`)".into(),
                );
            }
            let port = h.port.or(raw.defaults.port).unwrap_or(22);
            if port == 0 {
                problem(format!("{at}.port"), "must be 1-65535".into());
            }
            if !address.is_empty()
                && let Some(j) = endpoints.insert((address.to_ascii_lowercase(), port), i)
            {
                problem(
                    format!("{at}.address"),
                    format!(
                        "{address}:{port} is also hosts[{j}]: one machine listed twice could be taken by two pools"
                    ),
                );
            }
            let user = h
                .user
                .clone()
                .or_else(|| raw.defaults.user.clone())
                .unwrap_or_else(|| "root".into());
            if user.is_empty() || user.contains(char::is_whitespace) {
                problem(format!("{at}.user"), "must be a user name".into());
            }
            if h.pool.as_ref().is_some_and(|p| p.trim().is_empty()) {
                problem(
                    format!("{at}.pool"),
                    "is empty; name a pool or leave it out".into(),
                );
            }
            let key = match h.key.as_ref().or(raw.defaults.key.as_ref()) {
                None => {
                    problem(
                        format!("{at}.key"),
                        "is required (here or under `defaults:`): the private key to log in with"
                            .into(),
                    );
                    None
                }
                Some(k) => {
                    let key_path = resolve(dir, k);
                    let loaded = keys
                        .entry(key_path.clone())
                        .or_insert_with(|| load_key(&key_path));
                    match loaded {
                        Ok(key) => Some(key.clone()),
                        Err(msg) => {
                            problem(format!("{at}.key"), msg.clone());
                            None
                        }
                    }
                }
            };
            let sudo = h.sudo.or(raw.defaults.sudo).unwrap_or(user != "root");
            if let Some(key) = key {
                hosts.push(Host {
                    name: h.name,
                    address,
                    port,
                    user,
                    sudo,
                    labels: h.labels,
                    pool: h.pool,
                    key,
                });
            }
        }
        if !problems.is_empty() {
            return Err(ProviderError::invalid_config(
                crate::PROVIDER,
                field,
                format!("{shown}: {}", problems.join("; ")),
            ));
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
        })
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Load and check one private key: owner-only permissions (as ssh requires),
/// unencrypted, ed25519 or ECDSA.
fn load_key(path: &Path) -> Result<ClientKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} is readable by others (mode {mode:04o}); `chmod 600 {shown}`, as ssh requires"
            ));
        }
    }
    let _ = meta;
    let key = russh::keys::load_secret_key(path, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => format!(
            "{shown} is encrypted with a passphrase; give kbg an unencrypted key of its own (ssh-keygen -t ed25519 -N '')"
        ),
        other => format!("{shown} is not a private key kbg can use: {other}"),
    })?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(ClientKey {
            path: path.to_path_buf(),
            key: Arc::new(key),
        }),
        other => Err(format!(
            "{shown} is a {other} key; kbg's SSH client takes ed25519 or ECDSA keys only (no RSA: RUSTSEC-2023-0071); make one with ssh-keygen -t ed25519"
        )),
    }
}

/// Test helpers: private keys made from a fixed seed, written with a chosen mode.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use russh::keys::ssh_key::LineEnding;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    /// Write an unencrypted ed25519 key made from `seed` to `dir/name` with `mode`.
    pub(crate) fn write_key(dir: &Path, name: &str, seed: u8, mode: u32) -> PathBuf {
        let key = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
        let path = dir.join(name);
        std::fs::write(&path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::testing::write_key;
    use super::*;
    use kbg_provider::ErrorKind;

    const FIELD: &str = "pools.beta.metal.inventory";

    fn parse(dir: &Path, text: &str) -> Result<Inventory, ProviderError> {
        Inventory::parse(&dir.join("inventory.yaml"), text, FIELD)
    }

    #[test]
    fn defaults_fill_in_and_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path(), "id_ed25519", 1, 0o600);
        let inv = parse(
            dir.path(),
            "defaults: {user: kbg, key: id_ed25519, port: 2222}\n\
             hosts:\n\
             - {name: n1, address: 10.0.0.1, labels: {rack: r1}}\n\
             - {name: n2, address: 10.0.0.2, port: 22, user: root, pool: beta}\n",
        )
        .unwrap();
        let [n1, n2] = &inv.hosts[..] else {
            panic!("{inv:?}")
        };
        assert_eq!((n1.port, n1.user.as_str(), n1.sudo), (2222, "kbg", true));
        assert_eq!((n2.port, n2.user.as_str(), n2.sudo), (22, "root", false));
        assert_eq!(n1.key.path, dir.path().join("id_ed25519"));
        assert_eq!(n2.pool.as_deref(), Some("beta"));
        assert_eq!(n1.ssh_target(), "kbg@10.0.0.1:2222");
        // The key never shows in Debug; its fingerprint does.
        let shown = format!("{inv:?}");
        assert!(shown.contains("SHA256:"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn every_bad_host_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path(), "ok", 1, 0o600);
        write_key(dir.path(), "open", 2, 0o644);
        std::fs::write(dir.path().join("junk"), "not a key").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.path().join("junk"), mode).unwrap();
        }
        let err = parse(
            dir.path(),
            "defaults: {key: ok}\n\
             hosts:\n\
             - {name: Bad_Name, address: 10.0.0.1}\n\
             - {name: n2, address: 10.0.0.2, port: 0}\n\
             - {name: n2, address: root@10.0.0.3}\n\
             - {name: n4, address: 10.0.0.2, port: 0}\n\
             - {name: n5, address: 10.0.0.5, key: open}\n\
             - {name: n6, address: 10.0.0.6, key: missing}\n\
             - {name: n7, address: 10.0.0.7, key: junk}\n",
        )
        .unwrap_err();
        assert!(matches!(&err.kind, ErrorKind::InvalidConfig { field } if field == FIELD));
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        for want in [
            "hosts[0] (Bad_Name).name: must be lowercase",
            "hosts[1] (n2).port: must be 1-65535",
            "hosts[2] (n2).name: is also the name of hosts[1]",
            "hosts[2] (n2).address: must be an IP address or DNS name",
            "hosts[3] (n4).address: 10.0.0.2:0 is also hosts[1]",
            "hosts[4] (n5).key: ",
            "is readable by others (mode 0644); `chmod 600",
            "hosts[5] (n6).key: ",
            "No such file",
            "hosts[6] (n7).key: ",
            "is not a private key kbg can use",
        ] {
            assert!(line.contains(want), "missing {want:?} in {line}");
        }
    }

    #[test]
    fn a_missing_key_and_an_unknown_field_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse(dir.path(), "hosts:\n- {name: n1, address: 10.0.0.1}\n").unwrap_err();
        assert!(
            err.to_string().contains("hosts[0] (n1).key: is required"),
            "{err}"
        );
        let err = parse(dir.path(), "hosts:\n- {name: n1, adress: 10.0.0.1}\n").unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
        let err = parse(dir.path(), "hosts: []\n").unwrap_err();
        assert!(err.to_string().contains("hosts: lists no host"), "{err}");
        let err = Inventory::load(&dir.path().join("nope.yaml"), FIELD).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metal: pools.beta.metal.inventory: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn eligibility_follows_reservation_and_selector() {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path(), "k", 1, 0o600);
        let inv = parse(
            dir.path(),
            "defaults: {key: k}\nhosts:\n\
             - {name: a, address: a, labels: {disk: ssd}}\n\
             - {name: b, address: b, pool: gamma, labels: {disk: ssd}}\n\
             - {name: c, address: c, pool: beta}\n",
        )
        .unwrap();
        let ssd = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        let none = BTreeMap::new();
        let who = |sel: &BTreeMap<String, String>| {
            inv.hosts
                .iter()
                .filter(|h| h.eligible_for("beta", sel))
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(who(&none), ["a", "c"]);
        assert_eq!(who(&ssd), ["a"]);
    }
}
