//! Where a control-plane upgrade stands, in StarlingX's words.
//!
//! StarlingX keeps a Kubernetes upgrade as a persisted state machine (`system
//! kube-upgrade-show`): `upgrade-started`, `upgrading-first-master`,
//! `upgraded-first-master`, `upgrading-second-master`, …, `upgrading-kubelets`,
//! `upgrade-complete`, each step with a `-failed` twin that a rerun of the step leaves.
//! kbg records the same states in its state ConfigMap, numbering masters past the second
//! (`upgrading-third-master`, …), and adds `backing-up-etcd` for the snapshot taken
//! before the first master (StarlingX's `downloading-images` sits at the same place).
//!
//! Every run starts at `upgrade-started` (the checks passed) and moves forward from
//! what the cluster shows, so a rerun after a failure or a crash resumes at the first
//! master not yet upgraded: [`UpgradeState::may_follow`] says which moves are allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A step of the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The checks passed; the upgrade started.
    Started,
    /// Snapshotting etcd before the first master.
    BackingUpEtcd,
    /// Upgrading the control plane of the n-th master (1-based).
    UpgradingMaster(u32),
    /// The n-th master's control plane is upgraded.
    UpgradedMaster(u32),
    /// Upgrading the masters' kubelets, one by one.
    UpgradingKubelets,
    /// Every master and its kubelet run the new version.
    Complete,
}

/// A [`Stage`], possibly failed. Displays and serialises as StarlingX writes it:
/// `upgrading-second-master-failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeState {
    /// The step.
    pub stage: Stage,
    /// Whether the step failed (a rerun does it again).
    pub failed: bool,
}

impl UpgradeState {
    /// The step, in progress or done.
    pub fn at(stage: Stage) -> Self {
        UpgradeState {
            stage,
            failed: false,
        }
    }

    /// The step's failed twin.
    pub fn failed(self) -> Self {
        UpgradeState {
            stage: self.stage,
            failed: true,
        }
    }

    /// Whether nothing is left to do.
    pub fn is_complete(self) -> bool {
        self.stage == Stage::Complete && !self.failed
    }

    /// Whether the upgrade may go from `prev` to `self`: a run starts over at `Started`
    /// from any state; a step may fail; otherwise steps go forward, masters one by one.
    /// From `Started` a resumed run goes to whichever master is next.
    pub fn may_follow(self, prev: UpgradeState) -> bool {
        use Stage::*;
        if self.stage == Started && !self.failed {
            return true;
        }
        if self.failed {
            return self.stage == prev.stage && !prev.failed;
        }
        if prev.failed {
            return false;
        }
        match (prev.stage, self.stage) {
            (Started, BackingUpEtcd | UpgradingMaster(_) | UpgradingKubelets | Complete) => true,
            (BackingUpEtcd, UpgradingMaster(_) | UpgradingKubelets) => true,
            (UpgradingMaster(a), UpgradedMaster(b)) => a == b,
            (UpgradedMaster(a), UpgradingMaster(b)) => b > a,
            (UpgradedMaster(_), UpgradingKubelets) => true,
            (UpgradingKubelets, Complete) => true,
            _ => false,
        }
    }
}

/// `first`, `second`, … `tenth`, then `11th`, `12th`, `21st`, …
pub fn ordinal(n: u32) -> String {
    const WORDS: [&str; 10] = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
        "tenth",
    ];
    if (1..=10).contains(&n) {
        return WORDS[n as usize - 1].to_string();
    }
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn ordinal_number(word: &str) -> Option<u32> {
    (1..=10).find(|n| ordinal(*n) == word).or_else(|| {
        let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        digits
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 10 && ordinal(*n) == word)
    })
}

impl fmt::Display for UpgradeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Stage::Started => f.write_str("upgrade-started")?,
            Stage::BackingUpEtcd => f.write_str("backing-up-etcd")?,
            Stage::UpgradingMaster(n) => write!(f, "upgrading-{}-master", ordinal(n))?,
            Stage::UpgradedMaster(n) => write!(f, "upgraded-{}-master", ordinal(n))?,
            Stage::UpgradingKubelets => f.write_str("upgrading-kubelets")?,
            Stage::Complete => f.write_str("upgrade-complete")?,
        }
        if self.failed {
            f.write_str("-failed")?;
        }
        Ok(())
    }
}

/// A string that is not an upgrade state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an upgrade state (upgrade-started, upgrading-first-master, …)")]
pub struct BadState(pub String);

impl FromStr for UpgradeState {
    type Err = BadState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadState(s.to_string());
        let (body, failed) = match s.strip_suffix("-failed") {
            Some(b) => (b, true),
            None => (s, false),
        };
        let stage = match body {
            "upgrade-started" => Stage::Started,
            "backing-up-etcd" => Stage::BackingUpEtcd,
            "upgrading-kubelets" => Stage::UpgradingKubelets,
            "upgrade-complete" => Stage::Complete,
            other => {
                let (verb, rest) = other.split_once('-').ok_or_else(bad)?;
                let word = rest.strip_suffix("-master").ok_or_else(bad)?;
                let n = ordinal_number(word).ok_or_else(bad)?;
                match verb {
                    "upgrading" => Stage::UpgradingMaster(n),
                    "upgraded" => Stage::UpgradedMaster(n),
                    _ => return Err(bad()),
                }
            }
        };
        Ok(UpgradeState { stage, failed })
    }
}

impl Serialize for UpgradeState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpgradeState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stage::*;

    fn st(stage: Stage) -> UpgradeState {
        UpgradeState::at(stage)
    }

    #[test]
    fn states_read_as_starlingx_writes_them() {
        for (state, text) in [
            (st(Started), "upgrade-started"),
            (st(BackingUpEtcd).failed(), "backing-up-etcd-failed"),
            (st(UpgradingMaster(1)), "upgrading-first-master"),
            (st(UpgradedMaster(1)), "upgraded-first-master"),
            (
                st(UpgradingMaster(2)).failed(),
                "upgrading-second-master-failed",
            ),
            (st(UpgradedMaster(3)), "upgraded-third-master"),
            (st(UpgradingMaster(11)), "upgrading-11th-master"),
            (st(UpgradingMaster(22)), "upgrading-22nd-master"),
            (st(UpgradingMaster(113)), "upgrading-113th-master"),
            (st(UpgradingKubelets), "upgrading-kubelets"),
            (st(UpgradingKubelets).failed(), "upgrading-kubelets-failed"),
            (st(Complete), "upgrade-complete"),
        ] {
            assert_eq!(state.to_string(), text);
            assert_eq!(text.parse::<UpgradeState>().unwrap(), state, "{text}");
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_json::from_str::<UpgradeState>(&json).unwrap(), state);
        }
        for bad in [
            "",
            "upgrading",
            "upgrading-zeroth-master",
            "upgrading-0th-master",
            "upgrading-1th-master",
            "upgrading-1st-master",
            "downgrading-first-master",
            "upgrade-complete-failed-failed",
        ] {
            assert!(bad.parse::<UpgradeState>().is_err(), "{bad}");
        }
    }

    /// Each case: (from, to, allowed).
    #[test]
    fn transitions() {
        for (from, to, ok) in [
            (st(Started), st(BackingUpEtcd), true),
            (st(Started), st(UpgradingMaster(1)), true),
            (st(Started), st(UpgradingMaster(3)), true), // resumed at the third
            (st(Started), st(UpgradingKubelets), true),
            (st(Started), st(Complete), true),
            (st(BackingUpEtcd), st(UpgradingMaster(1)), true),
            (st(UpgradingMaster(1)), st(UpgradedMaster(1)), true),
            (st(UpgradingMaster(1)), st(UpgradedMaster(2)), false),
            (st(UpgradedMaster(1)), st(UpgradingMaster(2)), true),
            (st(UpgradedMaster(2)), st(UpgradingMaster(2)), false),
            (st(UpgradedMaster(3)), st(UpgradingKubelets), true),
            (st(UpgradingMaster(2)), st(UpgradingKubelets), false),
            (st(UpgradingKubelets), st(Complete), true),
            (st(UpgradingMaster(1)), st(Complete), false),
            // failures: the step's twin, then only a new run
            (
                st(UpgradingMaster(2)),
                st(UpgradingMaster(2)).failed(),
                true,
            ),
            (
                st(UpgradingMaster(2)),
                st(UpgradingMaster(3)).failed(),
                false,
            ),
            (
                st(UpgradingMaster(2)).failed(),
                st(UpgradedMaster(2)),
                false,
            ),
            (st(UpgradingMaster(2)).failed(), st(Started), true),
            (st(Complete), st(Started), true),
            (st(UpgradingKubelets), st(UpgradingKubelets).failed(), true),
        ] {
            assert_eq!(to.may_follow(from), ok, "{from} -> {to}");
        }
        assert!(st(Complete).is_complete());
        assert!(!st(Complete).failed().is_complete());
    }
}
