//! Kubernetes versions, parsed in one place.
//!
//! Kubernetes writes versions with a leading `v` and often a distribution suffix:
//! `v1.31.2`, `v1.31.2-eks-a1b2c3`, `v1.30.4+k3s1`, `v1.32.0-rc.1`. Users write `1.31` or
//! `1.31.2`. [`KubeVersion::parse`] accepts all of these; the suffix is validated with
//! `semver` and kept for display, but it never takes part in comparisons: for the skew
//! policy and for ordering, `v1.31.2-eks-abc` is `1.31.2`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest minor or patch number [`KubeVersion::parse`] takes. Kubernetes ships about
/// three minors a year (1.33 in 2025) and patch series end near 20: a larger number is a
/// typo, and refusing it keeps every version arithmetic (minor distances, the minors an
/// upgrade passes through) small.
pub const MAX_NUMBER: u64 = 9_999;

/// The forms [`KubeVersion::parse`] accepts, for error messages.
pub const ACCEPTED_FORMS: &str =
    "v1.31.2, 1.31.2, v1.31, or with a suffix such as v1.31.2-eks-abc123";

/// A version that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Kubernetes version {input:?}: {reason}; accepted forms: {ACCEPTED_FORMS}")]
pub struct VersionError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A Kubernetes version: `major.minor`, an optional patch, an optional suffix.
///
/// Equality and ordering use `(major, minor, patch)` with a missing patch counting as 0;
/// the suffix is ignored.
#[derive(Debug, Clone)]
pub struct KubeVersion {
    /// Major version (1 for every Kubernetes release so far).
    pub major: u64,
    /// Minor version: the one the skew policy counts in.
    pub minor: u64,
    /// Patch version, when given.
    pub patch: Option<u64>,
    /// Pre-release/build suffix as written, including its leading `-` or `+`
    /// (`-eks-abc123`, `+k3s1`), or empty.
    pub suffix: String,
}

impl KubeVersion {
    /// Parse `v1.31.2`, `1.31.2`, `v1.31`, `1.31`, `v1.31.2-eks-abc`, `v1.30.4+k3s1`.
    ///
    /// # Errors
    /// [`VersionError`] naming the input, what is wrong, and the accepted forms.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let err = |reason: &str| VersionError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let core_end = s.find(['-', '+']).unwrap_or(s.len());
        let (core, suffix) = s.split_at(core_end);
        let parts: Vec<&str> = core.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(err("expected MAJOR.MINOR or MAJOR.MINOR.PATCH"));
        }
        let num = |p: &str, what: &str| -> Result<u64, VersionError> {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(err(&format!("the {what} version {p:?} is not a number")));
            }
            p.parse().ok().filter(|n| *n <= MAX_NUMBER).ok_or_else(|| {
                err(&format!(
                    "the {what} version {p:?} is too large (at most {MAX_NUMBER})"
                ))
            })
        };
        let major = num(parts[0], "major")?;
        let minor = num(parts[1], "minor")?;
        let patch = parts.get(2).map(|p| num(p, "patch")).transpose()?;
        if major != 1 {
            return Err(err("only Kubernetes 1.x exists"));
        }
        if !suffix.is_empty() {
            // Let semver judge the suffix: identifiers of [0-9A-Za-z-] separated by dots.
            semver::Version::parse(&format!("{major}.{minor}.{}{suffix}", patch.unwrap_or(0)))
                .map_err(|e| err(&format!("bad suffix {suffix:?}: {e}")))?;
        }
        Ok(KubeVersion {
            major,
            minor,
            patch,
            suffix: suffix.to_string(),
        })
    }

    /// `(major, minor)`: what the skew policy compares.
    pub fn minor_key(&self) -> (u64, u64) {
        (self.major, self.minor)
    }

    /// How many minor versions `self` is ahead of `other` (negative when behind).
    pub fn minors_ahead_of(&self, other: &KubeVersion) -> i64 {
        // Kubernetes has only major 1; `parse` refuses anything else, and minors past
        // MAX_NUMBER. A version built by hand with a huge minor saturates at ±i64::MAX
        // (so the distance can still be negated).
        let d = i128::from(self.minor) - i128::from(other.minor);
        i64::try_from(d.clamp(-i128::from(i64::MAX), i128::from(i64::MAX))).unwrap_or_default()
    }

    /// This version without patch and suffix: `v1.31`.
    pub fn minor_only(&self) -> KubeVersion {
        KubeVersion {
            major: self.major,
            minor: self.minor,
            patch: None,
            suffix: String::new(),
        }
    }

    /// The next minor version, `v1.(n+1)` with no patch.
    pub fn next_minor(&self) -> KubeVersion {
        KubeVersion {
            major: self.major,
            minor: self.minor.saturating_add(1),
            patch: None,
            suffix: String::new(),
        }
    }

    fn key(&self) -> (u64, u64, u64) {
        (self.major, self.minor, self.patch.unwrap_or(0))
    }
}

impl fmt::Display for KubeVersion {
    /// `v1.31.2-eks-abc`, `v1.31`: always with the leading `v`, as Kubernetes writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)?;
        if let Some(p) = self.patch {
            write!(f, ".{p}")?;
        }
        f.write_str(&self.suffix)
    }
}

impl PartialEq for KubeVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for KubeVersion {}

impl PartialOrd for KubeVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KubeVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl FromStr for KubeVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KubeVersion::parse(s)
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KubeVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_kubernetes_and_users_write() {
        for (input, shown, key) in [
            ("v1.31.2", "v1.31.2", (1, 31, 2)),
            ("1.31.2", "v1.31.2", (1, 31, 2)),
            ("v1.31", "v1.31", (1, 31, 0)),
            ("1.31", "v1.31", (1, 31, 0)),
            (" v1.31.2 ", "v1.31.2", (1, 31, 2)),
            ("v1.31.2-eks-a1b2c3", "v1.31.2-eks-a1b2c3", (1, 31, 2)),
            ("v1.30.4+k3s1", "v1.30.4+k3s1", (1, 30, 4)),
            ("v1.32.0-rc.1", "v1.32.0-rc.1", (1, 32, 0)),
            ("v1.29.1-gke.1589018", "v1.29.1-gke.1589018", (1, 29, 1)),
        ] {
            let v = KubeVersion::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(v.to_string(), shown, "{input}");
            assert_eq!(v.key(), key, "{input}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_version_and_says_the_accepted_forms() {
        for input in [
            "",
            "v",
            "1",
            "v1",
            "1.31.2.4",
            "latest",
            "v1.x",
            "v1.31.",
            "1..2",
            "v2.0.0",
            "v1.031",
            "v1.31.2-",
            "v1.31.2-é",
            "-1.31",
            "v1.10000",
            "v1.9223372036854775808",
            "v1.31.10000",
            "v1.99999999999999999999999",
        ] {
            let e = KubeVersion::parse(input).expect_err(input);
            let msg = e.to_string();
            assert!(msg.contains(ACCEPTED_FORMS), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn suffixes_do_not_take_part_in_comparisons() {
        let v = |s| KubeVersion::parse(s).unwrap();
        assert_eq!(v("v1.31.2-eks-abc"), v("1.31.2"));
        assert!(v("v1.31.10") > v("v1.31.9"));
        assert!(v("v1.31") < v("v1.31.1"));
        assert!(v("v1.32.0") > v("v1.31.99"));
        assert_eq!(v("v1.33.1").minors_ahead_of(&v("v1.30.9")), 3);
        assert_eq!(v("v1.30.1").minors_ahead_of(&v("v1.31.0")), -1);
    }

    #[test]
    fn round_trips_through_serde() {
        let v: KubeVersion = serde_json::from_str("\"1.31.2-eks-abc\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"v1.31.2-eks-abc\"");
        assert!(serde_json::from_str::<KubeVersion>("\"one\"").is_err());
    }
}
