//! Faults on request: a share of API requests answered 500, 429 (with `Retry-After`) or
//! dropped (the connection closed without an answer); nodes that never become Ready; pods
//! that always use their whole grace period; the disruption controller stopped. All off
//! by default. Set them in a scenario (`faults:`), with [`crate::SimCluster::set_faults`],
//! or over HTTP (`PUT /sim/v1/faults`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Faults to inject. Shares are probabilities in `0.0..=1.0`, drawn per request from a
/// generator seeded with `seed` (so a run is repeatable for a given request order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of API requests answered `500 InternalError`.
    pub error_500: f64,
    /// Share of API requests answered `429 TooManyRequests` with `Retry-After`.
    pub error_429: f64,
    /// `Retry-After` of injected 429s, in seconds.
    pub retry_after_seconds: u32,
    /// Share of API requests whose connection is closed without an answer.
    pub drop: f64,
    /// Seed of the dice.
    pub seed: u64,
    /// Only requests with these Kubernetes verbs (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, `deletecollection`); empty = all.
    pub verbs: Vec<String>,
    /// Only requests on these resources (`pods`, `nodes`, `pods/eviction`, …); empty = all.
    pub resources: Vec<String>,
    /// Nodes that never become Ready: exact names, or prefixes ending in `*`.
    pub never_ready_nodes: Vec<String>,
    /// Every pod uses its whole grace period to terminate.
    pub full_grace: bool,
    /// The disruption controller does not run: PDB statuses stay as they are (a new
    /// PDB stays unobserved, so evictions get 429 with `Retry-After: 10`).
    pub disruption_controller_stopped: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_500: 0.0,
            error_429: 0.0,
            retry_after_seconds: 1,
            drop: 0.0,
            seed: 0,
            verbs: vec![],
            resources: vec![],
            never_ready_nodes: vec![],
            full_grace: false,
            disruption_controller_stopped: false,
        }
    }
}

impl Faults {
    /// Whether node `name` is one of `never_ready_nodes`.
    pub(crate) fn node_never_ready(&self, name: &str) -> bool {
        self.never_ready_nodes
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            })
    }

    /// Checks the shares.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("error_500", self.error_500),
            ("error_429", self.error_429),
            ("drop", self.drop),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("faults.{name}: {v} is not a share between 0 and 1"));
            }
        }
        if self.error_500 + self.error_429 + self.drop > 1.0 {
            return Err("faults: error_500 + error_429 + drop must not exceed 1".into());
        }
        Ok(())
    }
}

/// What the dice say for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// 500
    Error500,
    /// 429
    Error429(u32),
    /// close the connection
    Drop,
}

impl Injected {
    /// For the audit log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Injected::Error500 => "500",
            Injected::Error429(_) => "429",
            Injected::Drop => "drop",
        }
    }
}

/// Faults and their dice.
pub(crate) struct Dice {
    pub faults: Faults,
    rng: StdRng,
}

impl Dice {
    pub(crate) fn new(faults: Faults) -> Dice {
        let rng = StdRng::seed_from_u64(faults.seed);
        Dice { faults, rng }
    }

    /// Rolls for a request.
    pub(crate) fn roll(&mut self, verb: &str, resource: &str) -> Option<Injected> {
        let f = &self.faults;
        if f.error_500 + f.error_429 + f.drop <= 0.0 {
            return None;
        }
        if !f.verbs.is_empty() && !f.verbs.iter().any(|v| v == verb) {
            return None;
        }
        if !f.resources.is_empty() && !f.resources.iter().any(|r| r == resource) {
            return None;
        }
        let x: f64 = self.rng.random();
        if x < f.error_500 {
            Some(Injected::Error500)
        } else if x < f.error_500 + f.error_429 {
            Some(Injected::Error429(f.retry_after_seconds))
        } else if x < f.error_500 + f.error_429 + f.drop {
            Some(Injected::Drop)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_respected_and_filtered() {
        let mut d = Dice::new(Faults {
            error_500: 0.5,
            resources: vec!["pods/eviction".into()],
            seed: 7,
            ..Faults::default()
        });
        assert_eq!(d.roll("create", "pods"), None);
        let hits = (0..1000)
            .filter(|_| d.roll("create", "pods/eviction").is_some())
            .count();
        assert!((350..650).contains(&hits), "{hits}");
        assert!(
            Faults {
                drop: 2.0,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
        let f = Faults {
            never_ready_nodes: vec!["beta-*".into(), "x".into()],
            ..Faults::default()
        };
        assert!(
            f.node_never_ready("beta-3")
                && f.node_never_ready("x")
                && !f.node_never_ready("alpha-1")
        );
    }
}
