//! Host-key verification against an OpenSSH `known_hosts` file.
//!
//! kbg refuses to talk to a host whose key it cannot vouch for: the bootstrap it sends
//! carries the cluster's join token, and a man in the middle holding it can join nodes of
//! its own. The rules follow OpenSSH's `StrictHostKeyChecking yes` (sshd(8), "SSH_KNOWN_HOSTS
//! FILE FORMAT"):
//!
//! - a host is looked up as `address` on port 22 and as `[address]:port` otherwise;
//! - patterns are comma-separated, may use `*` and `?`, and a `!pattern` that matches
//!   excludes the line; hashed names (`|1|salt|hash`, what `HashKnownHosts yes` writes, the
//!   Debian default) are HMAC-SHA1 of the name;
//! - a key listed for the host is accepted; a *different* key of the same type listed for
//!   the host means the key changed, and is refused whatever the settings say;
//! - a key under `@revoked` is refused for every host; `@cert-authority` lines are ignored
//!   (kbg does not accept host certificates);
//! - a host with no line at all is unknown: refused, unless the operator explicitly set
//!   `insecure_accept_host_keys`.
//!
//! Each line is parsed by `ssh-key`'s `known_hosts::Entry` (already in the tree through
//! russh): markers, host patterns, hashed names and the key. We keep only what it does not
//! do, the matching: globs, negation, ports, the HMAC of hashed names, and the rules above.
//! `Entry` splits fields on single spaces, so each line's whitespace (tabs, runs of
//! spaces, which OpenSSH accepts) is folded to one space first. russh's own
//! `check_known_hosts` is not used: it ignores markers and wildcards and fails on the
//! first line it cannot read. Lines that do not parse are skipped, as OpenSSH does.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;

/// What a `known_hosts` file says about a host's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostKeyCheck {
    /// The key is listed for the host (1-based line number).
    Known {
        /// The line that lists it.
        line: usize,
    },
    /// No line names the host with a key of this type.
    Unknown,
    /// The host is listed with a different key of the same type: possibly a man in the
    /// middle, possibly a reinstalled host. Never accepted.
    Changed {
        /// The line that lists the other key.
        line: usize,
    },
    /// The key is marked `@revoked`. Never accepted.
    Revoked {
        /// The `@revoked` line.
        line: usize,
    },
}

/// One line that parsed, and where it is.
#[derive(Clone, Debug)]
struct Line {
    number: usize,
    entry: Entry,
}

impl Line {
    fn marker(&self) -> Option<Marker> {
        self.entry.marker().copied()
    }

    fn key(&self) -> &PublicKey {
        self.entry.public_key()
    }
}

/// The parsed contents of one `known_hosts` file.
#[derive(Clone, Debug)]
pub(crate) struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
    skipped: usize,
}

impl KnownHosts {
    /// Read and parse `path`.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub(crate) fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::parse(path, &text))
    }

    /// An empty file at `path` (used when the file does not exist and unknown keys are
    /// accepted anyway).
    pub(crate) fn empty(path: &Path) -> Self {
        KnownHosts {
            path: path.to_path_buf(),
            lines: Vec::new(),
            skipped: 0,
        }
    }

    /// Parse `text`, the contents of `path`; lines that do not parse are skipped.
    pub(crate) fn parse(path: &Path, text: &str) -> Self {
        let mut lines = Vec::new();
        let mut skipped = 0;
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(i + 1, trimmed) {
                Some(line) => lines.push(line),
                None => skipped += 1,
            }
        }
        KnownHosts {
            path: path.to_path_buf(),
            lines,
            skipped,
        }
    }

    /// The file this came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// How many lines could not be read and were skipped.
    pub(crate) fn skipped(&self) -> usize {
        self.skipped
    }

    /// What the file says about `key` presented by `address` on `port`.
    pub(crate) fn check(&self, address: &str, port: u16, key: &PublicKey) -> HostKeyCheck {
        let name = lookup_name(address, port);
        if let Some(l) = self
            .lines
            .iter()
            .find(|l| l.marker() == Some(Marker::Revoked) && l.key().key_data() == key.key_data())
        {
            return HostKeyCheck::Revoked { line: l.number };
        }
        let mut changed = None;
        for l in self
            .lines
            .iter()
            .filter(|l| l.marker().is_none() && names_match(l.entry.host_patterns(), &name))
        {
            if l.key().key_data() == key.key_data() {
                return HostKeyCheck::Known { line: l.number };
            }
            if changed.is_none() && l.key().algorithm() == key.algorithm() {
                changed = Some(l.number);
            }
        }
        match changed {
            Some(line) => HostKeyCheck::Changed { line },
            None => HostKeyCheck::Unknown,
        }
    }
}

/// The name OpenSSH looks a host up by: `address` on port 22, `[address]:port` otherwise.
pub(crate) fn lookup_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", address.to_ascii_lowercase())
    }
}

/// `SHA256:…`, the fingerprint `ssh-keygen -l` and OpenSSH's prompts show.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn parse_line(number: usize, line: &str) -> Option<Line> {
    let folded = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let entry: Entry = folded.parse().ok()?;
    Some(Line { number, entry })
}

fn names_match(names: &HostPatterns, name: &str) -> bool {
    match names {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for p in patterns.iter().filter(|p| !p.is_empty()) {
                let p = p.to_ascii_lowercase();
                if let Some(negated) = p.strip_prefix('!') {
                    if glob(negated.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob(p.as_bytes(), name.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// OpenSSH's `match_pattern`: `*` is any run of characters, `?` any one character.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    // Two real ed25519 public keys and an ECDSA one (from ssh-keygen).
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPBVzmghsJQPzABDiSX8wyswZEvIKddZ/Ij72txSp4qz";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFtEOWAKvJuT/YVb6TaTP23Xk5E7RdQWRfJnL87Smj0F";
    const KEY_EC: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDQH+IxM9LnVkO7HFdgUaA7DN41IzVQApH3gLXOsJQsxKZ640R2KqP1ws8tQAH7X0ia3/xG/Tk56hyiEuWJow/s=";

    fn key(b64: &str) -> PublicKey {
        let kind = if b64 == KEY_EC {
            "ecdsa-sha2-nistp256"
        } else {
            "ssh-ed25519"
        };
        PublicKey::from_openssh(&format!("{kind} {b64}")).unwrap()
    }

    fn file(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("known_hosts"), text)
    }

    use HostKeyCheck::{Changed, Known, Unknown};

    /// Check each `(address, port, key, expected)` against `kh`.
    fn expect(kh: &KnownHosts, cases: &[(&str, u16, &str, HostKeyCheck)]) {
        for (address, port, k, want) in cases {
            assert_eq!(&kh.check(address, *port, &key(k)), want, "{address}:{port}");
        }
    }

    #[test]
    fn plain_names_with_and_without_port() {
        let kh = file(&format!(
            "10.0.0.1 ssh-ed25519 {KEY_A}\n[10.0.0.2]:2222,node-2 ssh-ed25519 {KEY_A} a comment\n"
        ));
        // Port 22 is looked up bare; any other port in brackets; names ignore case.
        expect(
            &kh,
            &[
                ("10.0.0.1", 22, KEY_A, Known { line: 1 }),
                ("10.0.0.1", 2200, KEY_A, Unknown),
                ("10.0.0.2", 2222, KEY_A, Known { line: 2 }),
                ("NODE-2", 22, KEY_A, Known { line: 2 }),
                ("10.0.0.2", 22, KEY_A, Unknown),
            ],
        );
    }

    #[test]
    fn another_key_of_the_same_type_is_a_changed_key() {
        let kh = file(&format!("10.0.0.1 ssh-ed25519 {KEY_A}\n"));
        // A key of another type is merely unknown (OpenSSH refuses it too, as unknown).
        expect(
            &kh,
            &[
                ("10.0.0.1", 22, KEY_B, Changed { line: 1 }),
                ("10.0.0.1", 22, KEY_EC, Unknown),
            ],
        );
        // A second line with the right key wins over the changed one.
        let kh = file(&format!(
            "10.0.0.1 ssh-ed25519 {KEY_B}\n10.0.0.1 ssh-ed25519 {KEY_A}\n"
        ));
        expect(&kh, &[("10.0.0.1", 22, KEY_A, Known { line: 2 })]);
    }

    #[test]
    fn wildcards_and_negation() {
        let kh = file(&format!(
            "*.rack1.example,!bad.rack1.example ssh-ed25519 {KEY_A}\n[10.0.0.?]:2222 ssh-ed25519 {KEY_A}\n"
        ));
        expect(
            &kh,
            &[
                ("n1.rack1.example", 22, KEY_A, Known { line: 1 }),
                ("bad.rack1.example", 22, KEY_A, Unknown),
                ("10.0.0.7", 2222, KEY_A, Known { line: 2 }),
                ("10.0.0.17", 2222, KEY_A, Unknown),
            ],
        );
    }

    #[test]
    fn hashed_names() {
        // A `|1|salt|hash` line as `ssh-keygen -H` writes it (HMAC-SHA1 of the name keyed
        // by the salt), built here with a fixed salt; the sshd tests also check a file
        // hashed by the real ssh-keygen.
        let salt = b"0123456789abcdefghij";
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:2201");
        let hash = mac.finalize().into_bytes();
        let kh = file(&format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n",
            BASE64.encode(salt),
            BASE64.encode(hash)
        ));
        expect(
            &kh,
            &[
                ("127.0.0.1", 2201, KEY_A, Known { line: 1 }),
                ("127.0.0.1", 2202, KEY_A, Unknown),
            ],
        );
    }

    #[test]
    fn revoked_keys_are_refused_for_every_host() {
        let kh = file(&format!(
            "10.0.0.1 ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n"
        ));
        expect(
            &kh,
            &[("10.0.0.1", 22, KEY_A, HostKeyCheck::Revoked { line: 2 })],
        );
        // A CA line vouches for nothing here.
        let kh = file(&format!("@cert-authority * ssh-ed25519 {KEY_A}\n"));
        expect(&kh, &[("10.0.0.1", 22, KEY_A, Unknown)]);
    }

    #[test]
    fn unreadable_lines_are_skipped_and_tabs_separate_fields() {
        let kh = file(&format!(
            "# comment\n\ngarbage\n@weird x ssh-ed25519 {KEY_A}\n10.0.0.1 ssh-ed25519 not-base64\n10.0.0.1\tecdsa-sha2-nistp256\t{KEY_EC}\n"
        ));
        assert_eq!(kh.skipped(), 3);
        expect(&kh, &[("10.0.0.1", 22, KEY_EC, Known { line: 6 })]);
    }

    #[test]
    fn glob_is_openssh_match_pattern() {
        for (p, t, want) in [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[h]:22", "[h]:22", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} {t}");
        }
    }
}
