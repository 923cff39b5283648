//! Which host holds which machine: the provider's record in kbg's state.
//!
//! One ledger record, [`LEDGER_KEY`], maps host names to their assignment
//! (`rack1-node2 → machine beta-1 of pool beta, ready since …`). A host with no entry is
//! free. Every change is a compare-and-swap on the whole record, so two kbg runs taking
//! hosts from one inventory for different pools cannot both take the same host: the loser
//! reloads, plans again against what the winner wrote, and takes another host.
//!
//! The record holds no secrets: no keys, no tokens, no script output beyond a one-line,
//! redacted error.

use std::collections::BTreeMap;

use kbg_provider::{ErrorKind, Ledger, Machine, MachineState, ProviderError};
use serde::{Deserialize, Serialize};

use crate::PROVIDER;
use crate::inventory::{Host, Inventory};

/// The ledger key of the metal provider's record (a ConfigMap data key in kbg's state).
pub const LEDGER_KEY: &str = "metal-hosts";

/// How often a write that lost a compare-and-swap race is redone before giving up.
const CAS_ATTEMPTS: usize = 16;

/// Where a taken host stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Taken for a machine; its bootstrap has not finished (or kbg stopped mid-way).
    Bootstrapping,
    /// The bootstrap ran to the end.
    Ready,
    /// The bootstrap started and failed; the host may hold a half-installed kubelet, so it
    /// stays with its machine until deprovisioned (which resets it) or retried.
    BootstrapFailed,
    /// Being reset for deprovisioning.
    Resetting,
    /// The reset failed; the host stays taken, because a kubelet left running on it would
    /// register its node again.
    ResetFailed,
}

impl HostState {
    /// The machine state kbg sees for a host in this state.
    pub fn machine_state(self) -> MachineState {
        match self {
            HostState::Bootstrapping => MachineState::Pending,
            HostState::Ready => MachineState::Running,
            HostState::BootstrapFailed | HostState::ResetFailed => MachineState::Failed,
            HostState::Resetting => MachineState::Stopping,
        }
    }
}

/// One taken host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The pool holding it.
    pub pool: String,
    /// The machine it is (`beta-1`), which is also the node name it registers.
    pub machine: String,
    /// Where it stands.
    pub state: HostState,
    /// Its address when taken (so a listing works even if the inventory changes).
    pub address: String,
    /// Its SSH port when taken.
    pub port: u16,
    /// When `state` was last set (RFC 3339).
    pub since: jiff::Timestamp,
    /// The last failure, one redacted line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Assignment {
    /// A fresh assignment of `host` to `machine` of `pool`, bootstrapping now.
    pub fn new(host: &Host, pool: &str, machine: &str) -> Self {
        Assignment {
            pool: pool.to_string(),
            machine: machine.to_string(),
            state: HostState::Bootstrapping,
            address: host.address.clone(),
            port: host.port,
            since: jiff::Timestamp::now(),
            error: None,
        }
    }

    /// The [`Machine`] this assignment describes, on host `host_name`.
    pub fn to_machine(&self, host_name: &str) -> Machine {
        let mut details = BTreeMap::from([
            ("host".to_string(), host_name.to_string()),
            ("port".to_string(), self.port.to_string()),
            ("since".to_string(), self.since.to_string()),
        ]);
        if let Some(e) = &self.error {
            details.insert("error".into(), e.clone());
        }
        Machine {
            name: self.machine.clone(),
            pool: self.pool.clone(),
            provider_id: Some(provider_id(host_name)),
            node_name: Some(self.machine.clone()),
            state: self.state.machine_state(),
            address: Some(self.address.clone()),
            details,
        }
    }
}

/// `metal://<host>`: what the bootstrap passes as the kubelet's `--provider-id`.
pub fn provider_id(host_name: &str) -> String {
    format!("metal://{host_name}")
}

/// The whole record: host name → assignment. Free hosts are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Taken hosts by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, Assignment>,
}

impl Book {
    /// The host holding `machine` of `pool`, with its assignment.
    pub fn find(&self, pool: &str, machine: &str) -> Option<(&str, &Assignment)> {
        self.hosts
            .iter()
            .find(|(_, a)| a.pool == pool && a.machine == machine)
            .map(|(h, a)| (h.as_str(), a))
    }

    /// Set the state (and error) of `host` if it still holds `machine` of `pool`.
    /// Returns whether it did.
    pub fn set_state(
        &mut self,
        host: &str,
        pool: &str,
        machine: &str,
        state: HostState,
        error: Option<String>,
    ) -> bool {
        match self.hosts.get_mut(host) {
            Some(a) if a.pool == pool && a.machine == machine => {
                a.state = state;
                a.error = error;
                a.since = jiff::Timestamp::now();
                true
            }
            _ => false,
        }
    }

    /// Free `host` if it still holds `machine` of `pool`.
    pub fn release(&mut self, host: &str, pool: &str, machine: &str) {
        if matches!(self.hosts.get(host), Some(a) if a.pool == pool && a.machine == machine) {
            self.hosts.remove(host);
        }
    }
}

/// What provisioning does for one requested machine name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The machine already holds `host` (a rerun); what happens depends on `state`.
    Existing {
        /// The host it holds.
        host: String,
        /// Where that host stands.
        state: HostState,
    },
    /// Take the free `host` for it.
    Take {
        /// The host to take.
        host: String,
    },
    /// No free host is eligible.
    NoHost,
}

/// Decide, for each of `names`, whether it already holds a host, which free host it
/// takes, or that none is left. Pure; the caller writes the takes.
///
/// A pool takes the free hosts reserved for it first, then free unreserved hosts, each in
/// inventory order, never a host reserved for another pool, and only hosts carrying every
/// label of `selector`.
pub fn plan(
    inventory: &Inventory,
    selector: &BTreeMap<String, String>,
    book: &Book,
    pool: &str,
    names: &[String],
) -> Vec<(String, Step)> {
    let mut free: Vec<&Host> = inventory
        .hosts
        .iter()
        .filter(|h| !book.hosts.contains_key(&h.name) && h.eligible_for(pool, selector))
        .collect();
    // Stable: reserved-for-this-pool first, inventory order within each group.
    free.sort_by_key(|h| h.pool.is_none());
    let mut free = free.into_iter();
    names
        .iter()
        .map(|name| {
            let step = match book.find(pool, name) {
                Some((host, a)) => Step::Existing {
                    host: host.to_string(),
                    state: a.state,
                },
                None => match free.next() {
                    Some(h) => Step::Take {
                        host: h.name.clone(),
                    },
                    None => Step::NoHost,
                },
            };
            (name.clone(), step)
        })
        .collect()
}

/// Read the record, apply `change`, and write it back with compare-and-swap, redoing the
/// whole thing when someone else wrote first. `change` returns what the caller needs and
/// may leave the book untouched (then nothing is written).
///
/// # Errors
/// The ledger's own errors; [`ErrorKind::Failed`] if the record is not what this provider
/// writes; [`ErrorKind::Transient`] if the race was lost [`CAS_ATTEMPTS`] times.
pub async fn update<T>(
    ledger: &dyn Ledger,
    mut change: impl FnMut(&mut Book) -> T,
) -> Result<T, ProviderError> {
    for _ in 0..CAS_ATTEMPTS {
        let (book, version) = load(ledger).await?;
        let mut next = book.clone();
        let out = change(&mut next);
        if next == book {
            return Ok(out);
        }
        let value = serde_json::to_value(&next).expect("the book serialises");
        match ledger.store(LEDGER_KEY, value, version.as_deref()).await {
            Ok(_) => return Ok(out),
            Err(e) if is_conflict(&e) => {
                tracing::debug!(key = LEDGER_KEY, "ledger changed under us; reloading");
            }
            Err(e) => return Err(e),
        }
    }
    Err(ProviderError::new(
        PROVIDER,
        ErrorKind::Transient,
        format!(
            "ledger record {LEDGER_KEY} kept changing under us ({CAS_ATTEMPTS} attempts); try again"
        ),
    ))
}

/// Read the record (empty if absent) and its version.
///
/// # Errors
/// The ledger's own errors; [`ErrorKind::Failed`] if the record does not parse.
pub async fn load(ledger: &dyn Ledger) -> Result<(Book, Option<String>), ProviderError> {
    match ledger.load(LEDGER_KEY).await? {
        None => Ok((Book::default(), None)),
        Some(entry) => {
            let book = serde_json::from_value(entry.value).map_err(|e| {
                ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!("ledger record {LEDGER_KEY} is not what the metal provider writes: {e}; nothing was changed"),
                )
            })?;
            Ok((book, Some(entry.version)))
        }
    }
}

/// The [`Ledger`] contract: a lost race is `Transient` with `conflict` in the message.
fn is_conflict(e: &ProviderError) -> bool {
    e.kind == ErrorKind::Transient && e.message.contains("conflict")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::inventory::testing::write_key;
    use kbg_provider::MemoryLedger;

    fn inventory(dir: &Path) -> Inventory {
        write_key(dir, "k", 1, 0o600);
        Inventory::parse(
            &dir.join("inv.yaml"),
            "defaults: {key: k}\nhosts:\n\
             - {name: free-1, address: 10.0.0.1}\n\
             - {name: gamma-only, address: 10.0.0.2, pool: gamma}\n\
             - {name: free-2, address: 10.0.0.3, labels: {disk: ssd}}\n\
             - {name: beta-only, address: 10.0.0.4, pool: beta}\n",
            "f",
        )
        .unwrap()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_pool_takes_its_reserved_hosts_first_then_free_ones_never_anothers() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let steps = plan(
            &inv,
            &BTreeMap::new(),
            &Book::default(),
            "beta",
            &names(&["beta-0", "beta-1", "beta-2", "beta-3"]),
        );
        let take = |h: &str| Step::Take { host: h.into() };
        assert_eq!(
            steps,
            vec![
                ("beta-0".into(), take("beta-only")),
                ("beta-1".into(), take("free-1")),
                ("beta-2".into(), take("free-2")),
                ("beta-3".into(), Step::NoHost),
            ]
        );
        let ssd = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        let steps = plan(
            &inv,
            &ssd,
            &Book::default(),
            "beta",
            &names(&["beta-0", "beta-1"]),
        );
        assert_eq!(
            steps,
            vec![
                ("beta-0".into(), take("free-2")),
                ("beta-1".into(), Step::NoHost)
            ]
        );
    }

    #[test]
    fn existing_machines_keep_their_hosts_and_taken_hosts_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let mut book = Book::default();
        let host = inv.host("free-1").unwrap();
        book.hosts
            .insert("free-1".into(), Assignment::new(host, "alpha", "alpha-0"));
        let mut ready = Assignment::new(inv.host("beta-only").unwrap(), "beta", "beta-0");
        ready.state = HostState::Ready;
        book.hosts.insert("beta-only".into(), ready);
        let steps = plan(
            &inv,
            &BTreeMap::new(),
            &book,
            "beta",
            &names(&["beta-0", "beta-1", "beta-2"]),
        );
        assert_eq!(
            steps,
            vec![
                (
                    "beta-0".into(),
                    Step::Existing {
                        host: "beta-only".into(),
                        state: HostState::Ready
                    }
                ),
                (
                    "beta-1".into(),
                    Step::Take {
                        host: "free-2".into()
                    }
                ),
                ("beta-2".into(), Step::NoHost),
            ]
        );
    }

    #[tokio::test]
    async fn updates_redo_their_change_when_they_lose_a_race() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let ledger = MemoryLedger::default();
        // Someone else takes free-1 between our read and our write: the change runs
        // again on their record and takes the next host.
        let mut calls = 0;
        let taken = update(&ledger, |b| {
            calls += 1;
            if calls == 1 {
                // Simulate the other writer: store directly, bypassing this update.
                let other = Book {
                    hosts: BTreeMap::from([(
                        "free-1".to_string(),
                        Assignment::new(inv.host("free-1").unwrap(), "gamma", "gamma-0"),
                    )]),
                };
                let l = &ledger;
                futures::executor::block_on(l.store(
                    LEDGER_KEY,
                    serde_json::to_value(other).unwrap(),
                    None,
                ))
                .unwrap();
            }
            let steps = plan(&inv, &BTreeMap::new(), b, "delta", &names(&["delta-0"]));
            let Step::Take { host } = &steps[0].1 else {
                panic!("{steps:?}")
            };
            b.hosts.insert(
                host.clone(),
                Assignment::new(inv.host(host).unwrap(), "delta", "delta-0"),
            );
            host.clone()
        })
        .await
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(taken, "free-2");
        let (book, _) = load(&ledger).await.unwrap();
        assert_eq!(book.hosts["free-1"].pool, "gamma");
        assert_eq!(book.hosts["free-2"].machine, "delta-0");
    }

    #[tokio::test]
    async fn a_record_kbg_did_not_write_is_an_error_not_an_empty_book() {
        let ledger = MemoryLedger::default();
        ledger
            .store(LEDGER_KEY, serde_json::json!({"hosts": 3}), None)
            .await
            .unwrap();
        let err = load(&ledger).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("is not what the metal provider writes"),
            "{err}"
        );
    }
}
