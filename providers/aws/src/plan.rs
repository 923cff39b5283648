//! Pure decisions of the EC2 provider, kept apart from the SDK calls so they can be
//! table-tested: which subnet a machine goes to, which client token a launch uses,
//! which instance type is tried next, and what an EC2 instance state means to kbg.
//!
//! ## Idempotency, and why tokens have a generation
//!
//! A rerun after a crash must not launch a second instance for a machine. kbg's first
//! guard is the `kbg.io/machine` tag: every instance is tagged at launch (through
//! `TagSpecifications`, never tagged after), and provisioning looks for a live instance
//! with the machine's tag before launching. The second guard is RunInstances'
//! `ClientToken`: the same token returns the instance the first call created, which
//! covers the seconds in which a new instance is not yet visible to DescribeInstances.
//!
//! A token stays bound to its instance "for at least 24 hours after the termination of
//! the instance" (EC2 user guide, *Ensuring idempotency*), and a reused token with other
//! parameters is refused with `IdempotentParameterMismatch`. A pool torn down and
//! deployed again under the same name within a day would then get its terminated
//! instance back, or an error. So the token also carries a *generation*: when a launch
//! answers with a terminated instance or a parameter mismatch, the next generation is
//! tried. Reruns walk the same generations in the same order, so they still land on the
//! same instance.

use sha2::{Digest, Sha256};

/// How many token generations a launch tries before giving up: each one is a pool of
/// the same name torn down and deployed again within a day.
pub(crate) const MAX_TOKEN_GENERATIONS: u32 = 16;

/// The `ClientToken` for one launch attempt of `machine`: `kbg-` and 56 hex digits of a
/// SHA-256 over the cluster, pool, machine, instance type and generation. Stable across
/// reruns; 60 ASCII characters (EC2 allows 64).
///
/// The instance type is part of it because a launch refused for capacity moves on to
/// the next type, which is a different request.
pub fn client_token(
    cluster: &str,
    pool: &str,
    machine: &str,
    instance_type: Option<&str>,
    generation: u32,
) -> String {
    let mut h = Sha256::new();
    for part in [
        "kbg/v1",
        cluster,
        pool,
        machine,
        instance_type.unwrap_or(""),
        &generation.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let hex = hex::encode(h.finalize());
    format!("kbg-{}", &hex[..56])
}

/// The name used to check that the user-data template renders before any launch.
pub(crate) fn machine_probe_name(pool: &str) -> String {
    kbg_provider::machine_name(pool, 0)
}

/// The subnet for `machine`: round robin over `subnets` by the machine's index, so
/// `beta-0`, `beta-1`, `beta-2` land in the first, second and third subnet (one per AZ
/// spreads the pool over AZs), and a rerun picks the same subnet for the same machine.
/// A name without an index is placed by a hash of the name. `None` when no subnets
/// are configured (EC2 picks the default VPC's subnet, or the launch template's).
pub fn subnet_for<'a>(subnets: &'a [String], pool: &str, machine: &str) -> Option<&'a str> {
    if subnets.is_empty() {
        return None;
    }
    let slot = kbg_provider::machine_index(pool, machine).unwrap_or_else(|| {
        let digest = Sha256::digest(machine.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        // On 32-bit targets this truncates, which only changes the subnet chosen.
        u64::from_be_bytes(first) as usize
    });
    Some(subnets[slot % subnets.len()].as_str())
}

/// One RunInstances attempt: which instance type (`None`: the launch template's) and
/// which token generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The instance type to ask for.
    pub instance_type: Option<&'a str>,
    /// The client token generation.
    pub generation: u32,
}

/// How an attempt went, as far as choosing the next one goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An instance is up or coming up: stop.
    Launched,
    /// `InsufficientInstanceCapacity`: try the next instance type.
    NoCapacity,
    /// The token is bound to an earlier, terminated instance, or to other parameters
    /// (`IdempotentParameterMismatch`): try the next generation.
    StaleToken,
    /// Anything else: stop and report it.
    Failed,
}

/// How a RunInstances attempt went: `Ok` with the returned instance's state name, or
/// `Err` with AWS's error code.
///
/// An instance that comes back `terminated` or `shutting-down` was not launched now: the
/// token is bound to an instance of an earlier pool of the same name.
pub fn outcome_of_launch(result: Result<Option<&str>, Option<&str>>) -> Outcome {
    match result {
        Ok(Some("terminated" | "shutting-down")) => Outcome::StaleToken,
        Ok(_) => Outcome::Launched,
        Err(Some("InsufficientInstanceCapacity")) => Outcome::NoCapacity,
        Err(Some("IdempotentParameterMismatch")) => Outcome::StaleToken,
        Err(_) => Outcome::Failed,
    }
}

/// The order in which a machine's launch attempts are made: each instance type in
/// turn (on `InsufficientInstanceCapacity`), and within a type, token generations (on a
/// stale token).
#[derive(Debug)]
pub struct LaunchPlan<'a> {
    types: &'a [String],
    type_index: usize,
    generation: u32,
}

impl<'a> LaunchPlan<'a> {
    /// A plan over `types` (empty: one type, the launch template's).
    pub fn new(types: &'a [String]) -> Self {
        LaunchPlan {
            types,
            type_index: 0,
            generation: 0,
        }
    }

    /// The attempt to make now.
    pub fn current(&self) -> Attempt<'a> {
        Attempt {
            instance_type: self.types.get(self.type_index).map(String::as_str),
            generation: self.generation,
        }
    }

    /// The instance types tried so far, for a message when all of them lacked capacity.
    pub fn tried_types(&self) -> &'a [String] {
        let end = (self.type_index + 1).min(self.types.len());
        &self.types[..end]
    }

    /// Move on after `outcome`; `None` when there is nothing more to try.
    pub fn next(&mut self, outcome: Outcome) -> Option<Attempt<'a>> {
        match outcome {
            Outcome::Launched | Outcome::Failed => None,
            Outcome::NoCapacity => {
                if self.type_index + 1 >= self.types.len() {
                    return None;
                }
                self.type_index += 1;
                Some(self.current())
            }
            Outcome::StaleToken => {
                if self.generation + 1 >= MAX_TOKEN_GENERATIONS {
                    return None;
                }
                self.generation += 1;
                Some(self.current())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn tokens_are_stable_short_and_distinct() {
        let t = client_token("prod", "beta", "beta-0", Some("m6i.large"), 0);
        assert_eq!(
            t,
            client_token("prod", "beta", "beta-0", Some("m6i.large"), 0)
        );
        assert_eq!(t.len(), 60);
        assert!(t.is_ascii() && t.starts_with("kbg-"));
        let others = [
            client_token("staging", "beta", "beta-0", Some("m6i.large"), 0),
            client_token("prod", "alpha", "beta-0", Some("m6i.large"), 0),
            client_token("prod", "beta", "beta-1", Some("m6i.large"), 0),
            client_token("prod", "beta", "beta-0", Some("m5.large"), 0),
            client_token("prod", "beta", "beta-0", None, 0),
            client_token("prod", "beta", "beta-0", Some("m6i.large"), 1),
            // Parts are separated, so shifting a character between them changes it.
            client_token("prod", "bet", "abeta-0", Some("m6i.large"), 0),
        ];
        for o in &others {
            assert_ne!(&t, o);
        }
    }

    #[test]
    fn subnets_go_round_robin_by_machine_index() {
        let subnets = types(&["subnet-a", "subnet-b", "subnet-c"]);
        let picked: Vec<_> = (0..7)
            .map(|i| subnet_for(&subnets, "beta", &format!("beta-{i}")).unwrap())
            .collect();
        assert_eq!(
            picked,
            [
                "subnet-a", "subnet-b", "subnet-c", "subnet-a", "subnet-b", "subnet-c", "subnet-a"
            ]
        );
        // A replacement machine with a fresh index continues the rotation.
        assert_eq!(subnet_for(&subnets, "beta", "beta-11"), Some("subnet-c"));
        // The same machine always gets the same subnet, even without an index.
        let odd = subnet_for(&subnets, "beta", "beta-spare").unwrap();
        assert_eq!(subnet_for(&subnets, "beta", "beta-spare"), Some(odd));
        // "beta-x-1" belongs to pool "beta-x", not to pool "beta".
        assert_eq!(kbg_provider::machine_index("beta", "beta-x-1"), None);
        assert_eq!(kbg_provider::machine_index("beta-x", "beta-x-1"), Some(1));
        assert_eq!(subnet_for(&[], "beta", "beta-0"), None);
    }

    #[test]
    fn capacity_failures_fall_back_through_the_instance_types_in_order() {
        let list = types(&["m6i.large", "m5.large", "m5a.large"]);
        let mut plan = LaunchPlan::new(&list);
        assert_eq!(plan.current().instance_type, Some("m6i.large"));
        assert_eq!(
            plan.next(Outcome::NoCapacity).unwrap().instance_type,
            Some("m5.large")
        );
        assert_eq!(
            plan.next(Outcome::NoCapacity).unwrap().instance_type,
            Some("m5a.large")
        );
        assert_eq!(plan.next(Outcome::NoCapacity), None);
        assert_eq!(plan.tried_types(), &list[..]);
    }

    #[test]
    fn a_launch_or_another_error_stops_the_plan() {
        let list = types(&["m6i.large", "m5.large"]);
        let mut plan = LaunchPlan::new(&list);
        assert_eq!(plan.next(Outcome::Launched), None);
        let mut plan = LaunchPlan::new(&list);
        assert_eq!(plan.next(Outcome::Failed), None);
        assert_eq!(plan.tried_types(), &list[..1]);
    }

    #[test]
    fn stale_tokens_move_to_the_next_generation_of_the_same_type() {
        let list = types(&["m6i.large", "m5.large"]);
        let mut plan = LaunchPlan::new(&list);
        let a = plan.next(Outcome::StaleToken).unwrap();
        assert_eq!((a.instance_type, a.generation), (Some("m6i.large"), 1));
        let b = plan.next(Outcome::NoCapacity).unwrap();
        assert_eq!((b.instance_type, b.generation), (Some("m5.large"), 1));
        let mut n = 1;
        while plan.next(Outcome::StaleToken).is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_TOKEN_GENERATIONS - 1);
    }

    #[test]
    fn launch_answers_map_to_outcomes() {
        for (result, outcome) in [
            (Ok(Some("pending")), Outcome::Launched),
            (Ok(Some("running")), Outcome::Launched),
            (Ok(None), Outcome::Launched),
            (Ok(Some("terminated")), Outcome::StaleToken),
            (Ok(Some("shutting-down")), Outcome::StaleToken),
            (
                Err(Some("InsufficientInstanceCapacity")),
                Outcome::NoCapacity,
            ),
            (
                Err(Some("IdempotentParameterMismatch")),
                Outcome::StaleToken,
            ),
            (Err(Some("InvalidAMIID.NotFound")), Outcome::Failed),
            (Err(Some("RequestLimitExceeded")), Outcome::Failed),
            (Err(None), Outcome::Failed),
        ] {
            assert_eq!(outcome_of_launch(result), outcome, "{result:?}");
        }
    }

    /// The provider's launch loop, with EC2's answers scripted: which attempts (type and
    /// token) are made, in order.
    fn attempts(
        types: &[String],
        answers: &[Result<Option<&str>, Option<&str>>],
    ) -> Vec<(Option<String>, String)> {
        let mut plan = LaunchPlan::new(types);
        let mut attempt = plan.current();
        let mut made = Vec::new();
        for answer in answers {
            made.push((
                attempt.instance_type.map(str::to_owned),
                client_token(
                    "prod",
                    "beta",
                    "beta-0",
                    attempt.instance_type,
                    attempt.generation,
                ),
            ));
            match plan.next(outcome_of_launch(*answer)) {
                Some(a) => attempt = a,
                None => break,
            }
        }
        made
    }

    #[test]
    fn a_pool_redeployed_after_capacity_trouble_walks_types_and_generations() {
        let list = types(&["m6i.large", "m5.large"]);
        let made = attempts(
            &list,
            &[
                Err(Some("InsufficientInstanceCapacity")),
                // m5.large's first token still points at an earlier pool's instance.
                Ok(Some("terminated")),
                Ok(Some("pending")),
                Ok(Some("pending")),
            ],
        );
        assert_eq!(made.len(), 3, "stops at the launch");
        assert_eq!(made[0].0.as_deref(), Some("m6i.large"));
        assert_eq!(made[1].0.as_deref(), Some("m5.large"));
        assert_eq!(made[2].0.as_deref(), Some("m5.large"));
        assert_eq!(
            made[2].1,
            client_token("prod", "beta", "beta-0", Some("m5.large"), 1)
        );
        // A rerun after a crash makes the same attempts with the same tokens, so EC2
        // answers the last one with the instance it already launched.
        assert_eq!(
            attempts(
                &list,
                &[
                    Err(Some("InsufficientInstanceCapacity")),
                    Ok(Some("terminated")),
                    Ok(Some("running")),
                ],
            ),
            made
        );
        // Any other error stops at once.
        assert_eq!(
            attempts(
                &list,
                &[Err(Some("InvalidAMIID.NotFound")), Ok(Some("pending"))]
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_launch_template_without_types_gets_one_attempt_per_generation() {
        let mut plan = LaunchPlan::new(&[]);
        assert_eq!(
            plan.current(),
            Attempt {
                instance_type: None,
                generation: 0
            }
        );
        assert_eq!(plan.next(Outcome::NoCapacity), None);
        assert!(plan.tried_types().is_empty());
    }
}
