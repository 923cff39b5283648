//! Pairing kbg's machine names with Juju's units: pure decisions, table-tested.
//!
//! kbg names machines (`beta-0`, `beta-1`, …) and provisions by name; Juju names units
//! itself (`beta/0`, `beta/1`, …) and never reuses a number. The two are paired like this:
//!
//! 1. **Recorded pairs.** After every deploy or add-unit the provider records
//!    `name → unit` in kbg's state (the [`kbg_provider::Ledger`], a ConfigMap in the
//!    cluster), so a later run finds `beta-1` whatever unit it got.
//! 2. **Adoption, so a crash never doubles a pool.** A live unit no record claims (kbg
//!    died between `juju add-unit` and writing the record, or the record was lost) is
//!    *adopted* by a requested name that has no unit — `beta-N` takes `<app>/N` first,
//!    then the remaining names take the remaining units in order — instead of adding
//!    more units. Provisioning is therefore idempotent by unit count even with no record
//!    at all.
//! 3. **New units** appear after `deploy -n K`/`add-unit -n K` as the live units that
//!    were not there before; they pair with the still-missing names in order.
//! 4. A unit no record claims is *listed* as `<pool>-<N>` for unit number N (the name
//!    kbg would have given it), or `<pool>-unit-N` when that name is taken.

use std::collections::{BTreeMap, BTreeSet};

use crate::status::unit_number;

/// Recorded pairs: kbg machine name → Juju unit.
pub(crate) type Pairs = BTreeMap<String, String>;

/// How a provision request maps onto what exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// Requested names with a live unit: recorded before, or adopted now.
    pub have: Vec<(String, String)>,
    /// The subset of `have` adopted by this call (to record).
    pub adopted: Vec<(String, String)>,
    /// Requested names that need a new unit, in request order.
    pub missing: Vec<String>,
}

/// The index N of machine name `<pool>-N`, as a unit number.
fn index_of(pool: &str, name: &str) -> Option<u32> {
    kbg_provider::machine_index(pool, name).and_then(|i| u32::try_from(i).ok())
}

fn by_number(units: &mut [String]) {
    units.sort_by_key(|u| (unit_number(u).unwrap_or(u32::MAX), u.clone()));
}

/// `pairs` without the entries whose unit is no longer live.
pub(crate) fn prune(pairs: &Pairs, live: &[String]) -> Pairs {
    let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
    pairs
        .iter()
        .filter(|(_, unit)| live.contains(unit.as_str()))
        .map(|(n, u)| (n.clone(), u.clone()))
        .collect()
}

/// Pair `requested` names of `pool` with the `live` units, given the recorded `pairs`.
pub(crate) fn assign(
    pool: &str,
    requested: &[String],
    pairs: &Pairs,
    live: &[String],
) -> Assignment {
    let pairs = prune(pairs, live);
    let claimed: BTreeSet<&str> = pairs.values().map(String::as_str).collect();
    let mut orphans: Vec<String> = live
        .iter()
        .filter(|u| !claimed.contains(u.as_str()))
        .cloned()
        .collect();
    by_number(&mut orphans);

    let mut out = Assignment::default();
    let mut unpaired = Vec::new();
    for name in requested {
        match pairs.get(name) {
            Some(unit) => out.have.push((name.clone(), unit.clone())),
            None => unpaired.push(name.clone()),
        }
    }
    // First the unit whose number is the name's index, then any orphan in order.
    let mut still = Vec::new();
    for name in unpaired {
        let same = index_of(pool, &name)
            .and_then(|i| orphans.iter().position(|u| unit_number(u) == Some(i)));
        match same {
            Some(at) => {
                let unit = orphans.remove(at);
                out.adopted.push((name.clone(), unit.clone()));
                out.have.push((name, unit));
            }
            None => still.push(name),
        }
    }
    for name in still {
        if orphans.is_empty() {
            out.missing.push(name);
        } else {
            let unit = orphans.remove(0);
            out.adopted.push((name.clone(), unit.clone()));
            out.have.push((name, unit));
        }
    }
    out
}

/// Pair the `missing` names with the units that appeared between `before` and `after`
/// (in unit-number order). Returns the pairs and the names left without a unit.
pub(crate) fn pair_new(
    missing: &[String],
    before: &[String],
    after: &[String],
) -> (Vec<(String, String)>, Vec<String>) {
    let before: BTreeSet<&str> = before.iter().map(String::as_str).collect();
    let mut new: Vec<String> = after
        .iter()
        .filter(|u| !before.contains(u.as_str()))
        .cloned()
        .collect();
    by_number(&mut new);
    let paired: Vec<(String, String)> = missing.iter().cloned().zip(new).collect();
    let left = missing[paired.len()..].to_vec();
    (paired, left)
}

/// The machine name a listing shows for `unit`.
pub(crate) fn name_of(pool: &str, unit: &str, pairs: &Pairs) -> String {
    if let Some((name, _)) = pairs.iter().find(|(_, u)| u.as_str() == unit) {
        return name.clone();
    }
    let n = unit_number(unit).map_or_else(|| unit.replace('/', "-"), |n| n.to_string());
    let derived = format!("{pool}-{n}");
    if pairs.contains_key(&derived) {
        format!("{pool}-unit-{n}")
    } else {
        derived
    }
}

/// The unit behind machine `name`: recorded, or the one its name was derived from.
pub(crate) fn unit_of(pool: &str, application: &str, name: &str, pairs: &Pairs) -> Option<String> {
    if let Some(unit) = pairs.get(name) {
        return Some(unit.clone());
    }
    let n = index_of(pool, name).or_else(|| {
        name.strip_prefix(pool)?
            .strip_prefix("-unit-")?
            .parse()
            .ok()
    })?;
    Some(format!("{application}/{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(ToString::to_string).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Pairs {
        items
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect()
    }

    fn p(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect()
    }

    #[test]
    fn assignment_table() {
        struct Case<'a> {
            what: &'a str,
            requested: &'a [&'a str],
            recorded: &'a [(&'a str, &'a str)],
            live: &'a [&'a str],
            have: &'a [(&'a str, &'a str)],
            adopted: &'a [(&'a str, &'a str)],
            missing: &'a [&'a str],
        }
        let cases = [
            Case {
                what: "fresh application",
                requested: &["beta-0", "beta-1"],
                recorded: &[],
                live: &[],
                have: &[],
                adopted: &[],
                missing: &["beta-0", "beta-1"],
            },
            Case {
                what: "all recorded and live: nothing to do",
                requested: &["beta-0", "beta-1"],
                recorded: &[("beta-0", "beta/0"), ("beta-1", "beta/3")],
                live: &["beta/0", "beta/3"],
                have: &[("beta-0", "beta/0"), ("beta-1", "beta/3")],
                adopted: &[],
                missing: &[],
            },
            Case {
                what: "crash after add-unit: the orphans are adopted, nothing added",
                requested: &["beta-0", "beta-1", "beta-2"],
                recorded: &[],
                live: &["beta/0", "beta/1", "beta/2"],
                have: &[
                    ("beta-0", "beta/0"),
                    ("beta-1", "beta/1"),
                    ("beta-2", "beta/2"),
                ],
                adopted: &[
                    ("beta-0", "beta/0"),
                    ("beta-1", "beta/1"),
                    ("beta-2", "beta/2"),
                ],
                missing: &[],
            },
            Case {
                what: "numbers drifted: same number first, then in order",
                requested: &["beta-3", "beta-4"],
                recorded: &[("beta-0", "beta/0")],
                live: &["beta/0", "beta/4", "beta/5"],
                have: &[("beta-4", "beta/4"), ("beta-3", "beta/5")],
                adopted: &[("beta-4", "beta/4"), ("beta-3", "beta/5")],
                missing: &[],
            },
            Case {
                what: "a recorded unit that died is replaced",
                requested: &["beta-0", "beta-1"],
                recorded: &[("beta-0", "beta/0"), ("beta-1", "beta/1")],
                live: &["beta/0"],
                have: &[("beta-0", "beta/0")],
                adopted: &[],
                missing: &["beta-1"],
            },
            Case {
                what: "units claimed by other names are not taken",
                requested: &["beta-2"],
                recorded: &[("beta-0", "beta/0"), ("beta-1", "beta/1")],
                live: &["beta/0", "beta/1"],
                have: &[],
                adopted: &[],
                missing: &["beta-2"],
            },
            Case {
                what: "numeric order, not string order",
                requested: &["beta-x", "beta-y"],
                recorded: &[],
                live: &["beta/10", "beta/9"],
                have: &[("beta-x", "beta/9"), ("beta-y", "beta/10")],
                adopted: &[("beta-x", "beta/9"), ("beta-y", "beta/10")],
                missing: &[],
            },
        ];
        for c in cases {
            let got = assign("beta", &v(c.requested), &pairs(c.recorded), &v(c.live));
            assert_eq!(
                got,
                Assignment {
                    have: p(c.have),
                    adopted: p(c.adopted),
                    missing: v(c.missing),
                },
                "{}",
                c.what
            );
        }
    }

    #[test]
    fn new_units_pair_in_number_order() {
        let (paired, left) = pair_new(
            &v(&["beta-3", "beta-4", "beta-5"]),
            &v(&["beta/0"]),
            &v(&["beta/0", "beta/11", "beta/9"]),
        );
        assert_eq!(paired, p(&[("beta-3", "beta/9"), ("beta-4", "beta/11")]));
        assert_eq!(left, v(&["beta-5"]));
    }

    #[test]
    fn listing_names_and_their_way_back() {
        let rec = pairs(&[("beta-0", "beta/4"), ("beta-4", "beta/7")]);
        assert_eq!(name_of("beta", "beta/4", &rec), "beta-0");
        assert_eq!(name_of("beta", "beta/2", &rec), "beta-2");
        assert_eq!(name_of("beta", "beta/4", &Pairs::new()), "beta-4");
        // beta-4 is taken by beta/7, so an unclaimed beta/4 needs another name.
        let rec2 = pairs(&[("beta-4", "beta/7")]);
        assert_eq!(name_of("beta", "beta/4", &rec2), "beta-unit-4");
        assert_eq!(
            unit_of("beta", "workers-b", "beta-unit-4", &rec2).as_deref(),
            Some("workers-b/4")
        );
        assert_eq!(
            unit_of("beta", "beta", "beta-4", &rec2).as_deref(),
            Some("beta/7")
        );
        assert_eq!(
            unit_of("beta", "beta", "beta-2", &rec2).as_deref(),
            Some("beta/2")
        );
        assert_eq!(unit_of("beta", "beta", "gamma-2", &rec2), None);
    }

    #[test]
    fn prune_drops_dead_units() {
        let rec = pairs(&[("beta-0", "beta/0"), ("beta-1", "beta/1")]);
        assert_eq!(prune(&rec, &v(&["beta/1"])), pairs(&[("beta-1", "beta/1")]));
    }
}
