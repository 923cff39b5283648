//! One kbg at a time per pool: a `coordination.k8s.io/v1` Lease per pool.
//!
//! Each command that changes a pool holds the Lease `kbg-pool-<pool>` (in the state
//! namespace) while it works. Leases are taken in a fixed order (sorted pool names), so
//! two runs on overlapping pools never wait on each other in a cycle; a run that finds a
//! pool held refuses at once (exit 1) naming the holder: who, where, which process and
//! which command, and when the Lease expires if that process is gone.
//!
//! The holder renews every third of the Lease's duration. A Lease is taken over when it
//! is free (released), expired (not renewed for `leaseDurationSeconds`), or held by a
//! process on this same host that no longer exists (a kbg killed with SIGKILL, rerun at
//! once from the same shell). If renewal fails for longer than the duration, or someone
//! else took the Lease, the holder stops working ([`PoolLocks::lost`]).
//!
//! Lease times are wall-clock times, whatever `--clock-speed` says: they are about
//! processes being alive, and other tools read them. The defaults follow client-go's
//! leader election (`LeaseDuration` 15 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::client::{describe, is_conflict, is_not_found};
use crate::clock::Clock;
use crate::retry::retry;
use crate::state::MANAGED_BY;

/// Annotation on a Lease: the holder's host name.
pub const HOST_ANNOTATION: &str = "kbg.io/holder-host";
/// Annotation on a Lease: the holder's process id.
pub const PID_ANNOTATION: &str = "kbg.io/holder-pid";
/// Annotation on a Lease: the holder's command line.
pub const COMMAND_ANNOTATION: &str = "kbg.io/holder-command";

/// The name of pool `pool`'s Lease.
pub fn lease_name(pool: &str) -> String {
    format!("kbg-pool-{pool}")
}

/// Who holds (or wants) a Lease: a kbg process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The user running kbg.
    pub user: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The command, as typed: `kbg migrate alpha beta`.
    pub command: String,
}

impl Holder {
    /// This process, running `command`.
    pub fn current(command: &str) -> Holder {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into());
        Holder {
            user,
            host,
            pid: std::process::id(),
            command: command.to_string(),
        }
    }

    /// The Lease's `holderIdentity`: `alice@laptop pid 4242: kbg migrate alpha beta`.
    pub fn identity(&self) -> String {
        format!(
            "{}@{} pid {}: {}",
            self.user, self.host, self.pid, self.command
        )
    }
}

/// A pool could not be locked, or the lock was lost.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Another kbg holds the pool.
    #[error(
        "pool {pool} is in use by {holder} (Lease {namespace}/{lease}, renewed {renewed_ago}s ago); nothing was changed; if that kbg is gone the Lease expires in {expires_in}s, then run this again"
    )]
    Held {
        /// The pool.
        pool: String,
        /// The holder's identity.
        holder: String,
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// Seconds since the holder last renewed.
        renewed_ago: i64,
        /// Seconds until the Lease expires without renewal.
        expires_in: i64,
    },
    /// kbg lost its hold while working (someone took the Lease, or it could not be
    /// renewed in time); it stopped.
    #[error("lost the lock on pool {pool}: {why}; stopped; run the same command again to continue")]
    Lost {
        /// The pool.
        pool: String,
        /// What happened.
        why: String,
    },
    /// The Lease could not be read or written.
    #[error("locking pool {pool} (Lease {namespace}/{lease}): {message}")]
    Request {
        /// The pool.
        pool: String,
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// What the API server said.
        message: String,
    },
}

/// What [`decide`] reads from a Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`; `None` or empty when free.
    pub holder: Option<String>,
    /// The holder's host (annotation), if kbg's.
    pub host: Option<String>,
    /// The holder's pid (annotation), if kbg's.
    pub pid: Option<u32>,
    /// `spec.renewTime` (else `acquireTime`).
    pub renewed: Option<Timestamp>,
    /// `spec.leaseDurationSeconds`.
    pub duration_secs: i64,
}

impl LeaseView {
    fn of(lease: &Lease) -> LeaseView {
        let spec = lease.spec.clone().unwrap_or_default();
        let ann = lease.metadata.annotations.clone().unwrap_or_default();
        LeaseView {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            host: ann.get(HOST_ANNOTATION).cloned(),
            pid: ann.get(PID_ANNOTATION).and_then(|p| p.parse().ok()),
            renewed: spec.renew_time.or(spec.acquire_time).map(|t| t.0),
            duration_secs: spec.lease_duration_seconds.unwrap_or(0).into(),
        }
    }
}

/// What to do with a Lease one wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take it: free, expired, ours already, or its holder process is gone.
    Take(&'static str),
    /// Someone else holds it.
    Held {
        /// Seconds since the last renewal.
        renewed_ago: i64,
        /// Seconds until it expires.
        expires_in: i64,
    },
}

/// Whether `me` may take a Lease that looks like `lease` at `now`; `alive` tells whether
/// a process id on this host exists.
pub fn decide(
    lease: &LeaseView,
    me: &Holder,
    now: Timestamp,
    alive: impl Fn(u32) -> bool,
) -> Decision {
    let Some(_) = &lease.holder else {
        return Decision::Take("free");
    };
    let same_host = lease.host.as_deref() == Some(me.host.as_str());
    if same_host && lease.pid == Some(me.pid) {
        return Decision::Take("ours");
    }
    // To the microsecond the Lease records, not to the whole second: a Lease is taken
    // over as soon as it expires, never a second late.
    let Some(renewed_ago) = lease.renewed.map(|t| now.duration_since(t)) else {
        return Decision::Take("expired");
    };
    let valid_for = jiff::SignedDuration::from_secs(lease.duration_secs);
    if renewed_ago > valid_for {
        return Decision::Take("expired");
    }
    if same_host && lease.pid.is_some_and(|p| !alive(p)) {
        return Decision::Take("holder process gone");
    }
    let left = valid_for - renewed_ago;
    Decision::Held {
        renewed_ago: renewed_ago.as_secs().max(0),
        // Rounded up: "expires in 0s" only once it has.
        expires_in: (left.as_secs() + i64::from(left.subsec_nanos() > 0)).max(0),
    }
}

/// Whether process `pid` exists on this host.
pub fn process_alive(pid: u32) -> bool {
    use rustix::io::Errno;
    use rustix::process::{Pid, test_kill_process};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // Signal 0 checks existence without delivering anything; EPERM means it exists
    // under another user.
    matches!(test_kill_process(pid), Ok(()) | Err(Errno::PERM))
}

struct Held {
    pool: String,
    name: String,
    lease: tokio::sync::Mutex<Lease>,
}

struct Inner {
    api: Api<Lease>,
    namespace: String,
    me: Holder,
    duration: Duration,
    held: Vec<Held>,
}

/// The Leases of the pools a command works on, renewed in the background until
/// [`PoolLocks::release`].
pub struct PoolLocks {
    inner: Arc<Inner>,
    lost: watch::Receiver<Option<LockError>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PoolLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pools: Vec<&str> = self.inner.held.iter().map(|h| h.pool.as_str()).collect();
        write!(f, "PoolLocks({pools:?})")
    }
}

fn request_error(pool: &str, namespace: &str, lease: &str, e: &kube::Error) -> LockError {
    LockError::Request {
        pool: pool.to_string(),
        namespace: namespace.to_string(),
        lease: lease.to_string(),
        message: describe(e),
    }
}

fn stamp(lease: &mut Lease, me: &Holder, duration: Duration, now: Timestamp, new_holder: bool) {
    let ann = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(HOST_ANNOTATION.into(), me.host.clone());
    ann.insert(PID_ANNOTATION.into(), me.pid.to_string());
    ann.insert(COMMAND_ANNOTATION.into(), me.command.clone());
    let labels = lease.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if new_holder {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(me.identity());
    spec.lease_duration_seconds = Some(duration.as_secs().clamp(1, i32::MAX as u64) as i32);
    spec.renew_time = Some(MicroTime(now));
}

fn is_mine(lease: &Lease, me: &Holder) -> bool {
    let v = LeaseView::of(lease);
    v.holder.is_some() && v.host.as_deref() == Some(me.host.as_str()) && v.pid == Some(me.pid)
}

async fn take_one(
    api: &Api<Lease>,
    namespace: &str,
    pool: &str,
    me: &Holder,
    duration: Duration,
    clock: Clock,
) -> Result<Lease, LockError> {
    let name = lease_name(pool);
    let pp = PostParams::default();
    let err = |e: &kube::Error| request_error(pool, namespace, &name, e);
    for _ in 0..10 {
        let now = Timestamp::now();
        match retry(clock, "get lease", || api.get(&name)).await {
            Err(e) if is_not_found(&e) => {
                let mut lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_string()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        lease_transitions: Some(-1),
                        ..Default::default()
                    }),
                };
                stamp(&mut lease, me, duration, now, true);
                match retry(clock, "create lease", || api.create(&pp, &lease)).await {
                    Ok(l) => return Ok(l),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(err(&e)),
                }
            }
            Err(e) => return Err(err(&e)),
            Ok(mut lease) => {
                let view = LeaseView::of(&lease);
                match decide(&view, me, now, process_alive) {
                    Decision::Held {
                        renewed_ago,
                        expires_in,
                    } => {
                        return Err(LockError::Held {
                            pool: pool.to_string(),
                            holder: view.holder.unwrap_or_default(),
                            namespace: namespace.to_string(),
                            lease: name,
                            renewed_ago,
                            expires_in,
                        });
                    }
                    Decision::Take(why) => {
                        if let Some(prev) = &view.holder
                            && why != "ours"
                        {
                            tracing::info!(pool, previous = %prev, why, "taking over lease");
                        }
                        stamp(&mut lease, me, duration, now, why != "ours");
                        match retry(clock, "take lease", || api.replace(&name, &pp, &lease)).await {
                            Ok(l) => return Ok(l),
                            Err(e) if is_conflict(&e) => continue,
                            Err(e) => return Err(err(&e)),
                        }
                    }
                }
            }
        }
    }
    Err(LockError::Request {
        pool: pool.to_string(),
        namespace: namespace.to_string(),
        lease: name,
        message: "the Lease kept changing while kbg tried to take it".into(),
    })
}

/// Take the Leases of `pools` (in sorted order) for `me`, and renew them in the
/// background.
///
/// # Errors
/// [`LockError::Held`] naming the holder when another kbg holds one of them (the Leases
/// already taken are released first); [`LockError::Request`] when a Lease cannot be read
/// or written.
pub async fn acquire(
    client: kube::Client,
    namespace: &str,
    pools: &[&str],
    me: Holder,
    duration: Duration,
    clock: Clock,
) -> Result<PoolLocks, LockError> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut sorted: Vec<&str> = pools.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut held = Vec::new();
    for pool in sorted {
        match take_one(&api, namespace, pool, &me, duration, clock).await {
            Ok(lease) => held.push(Held {
                pool: pool.to_string(),
                name: lease_name(pool),
                lease: tokio::sync::Mutex::new(lease),
            }),
            Err(e) => {
                let partial = Arc::new(Inner {
                    api,
                    namespace: namespace.to_string(),
                    me,
                    duration,
                    held,
                });
                release_all(&partial, clock).await;
                return Err(e);
            }
        }
    }
    let inner = Arc::new(Inner {
        api,
        namespace: namespace.to_string(),
        me,
        duration,
        held,
    });
    let (tx, rx) = watch::channel(None);
    let renewer = tokio::spawn(renew_loop(inner.clone(), tx, clock));
    Ok(PoolLocks {
        inner,
        lost: rx,
        renewer,
    })
}

/// Why a renewal did not go through.
enum RenewError {
    /// The Lease is no longer ours: stop.
    Lost(String),
    /// This attempt failed (the API server's words); the next may work.
    Failed(String),
}

async fn renew_one(inner: &Inner, h: &Held, clock: Clock) -> Result<(), RenewError> {
    let pp = PostParams::default();
    let mut lease = h.lease.lock().await;
    let mut next = lease.clone();
    stamp(
        &mut next,
        &inner.me,
        inner.duration,
        Timestamp::now(),
        false,
    );
    match inner.api.replace(&h.name, &pp, &next).await {
        Ok(l) => {
            *lease = l;
            Ok(())
        }
        Err(e) if is_conflict(&e) => {
            // Someone wrote the Lease: still ours (a retried write of our own)?
            match retry(clock, "get lease", || inner.api.get(&h.name)).await {
                Ok(current) if is_mine(&current, &inner.me) => {
                    *lease = current;
                    Err(RenewError::Failed("a conflicting write of its own".into()))
                }
                Ok(current) => Err(RenewError::Lost(format!(
                    "it is now held by {}",
                    LeaseView::of(&current)
                        .holder
                        .unwrap_or_else(|| "nobody".into())
                ))),
                Err(e) => Err(RenewError::Failed(describe(&e))),
            }
        }
        Err(e) if is_not_found(&e) => Err(RenewError::Lost("its Lease was deleted".into())),
        Err(e) => {
            tracing::debug!(pool = %h.pool, error = %describe(&e), "lease renewal failed");
            Err(RenewError::Failed(describe(&e)))
        }
    }
}

async fn renew_loop(inner: Arc<Inner>, tx: watch::Sender<Option<LockError>>, clock: Clock) {
    let period = inner.duration / 3;
    let mut last_ok: Vec<tokio::time::Instant> =
        vec![tokio::time::Instant::now(); inner.held.len()];
    loop {
        // Look twice per period, renew each Lease once per period.
        tokio::time::sleep(period / 2).await;
        for (i, h) in inner.held.iter().enumerate() {
            if last_ok[i].elapsed() < period {
                continue;
            }
            match renew_one(&inner, h, clock).await {
                Ok(()) => last_ok[i] = tokio::time::Instant::now(),
                Err(RenewError::Lost(why)) => {
                    let _ = tx.send(Some(LockError::Lost {
                        pool: h.pool.clone(),
                        why,
                    }));
                    return;
                }
                Err(RenewError::Failed(last)) if last_ok[i].elapsed() >= inner.duration => {
                    let _ = tx.send(Some(LockError::Lost {
                        pool: h.pool.clone(),
                        why: format!(
                            "its Lease could not be renewed for {}s (last attempt: {last})",
                            inner.duration.as_secs()
                        ),
                    }));
                    return;
                }
                Err(RenewError::Failed(_)) => {}
            }
        }
    }
}

async fn release_all(inner: &Inner, clock: Clock) {
    let pp = PostParams::default();
    for h in inner.held.iter().rev() {
        let result = async {
            let mut current = retry(clock, "get lease", || inner.api.get(&h.name)).await?;
            if !is_mine(&current, &inner.me) {
                return Ok(());
            }
            if let Some(spec) = current.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            retry(clock, "release lease", || {
                inner.api.replace(&h.name, &pp, &current)
            })
            .await
            .map(|_| ())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(pool = %h.pool, error = %describe(&e), "could not release the lease; it expires on its own");
        }
    }
}

impl PoolLocks {
    /// Resolves when a hold is lost (someone else took a Lease, or it could not be
    /// renewed in time), with the reason; never resolves while all are held.
    pub async fn lost(&self) -> LockError {
        let mut rx = self.lost.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The renewer ended without a loss (released): wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The Leases' namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Stop renewing and free the Leases (those still ours).
    pub async fn release(self, clock: Clock) {
        self.renewer.abort();
        release_all(&self.inner, clock).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        Holder {
            user: "alice".into(),
            host: "laptop".into(),
            pid: 100,
            command: "kbg migrate alpha beta".into(),
        }
    }

    #[test]
    fn identity_names_user_host_pid_and_command() {
        assert_eq!(
            me().identity(),
            "alice@laptop pid 100: kbg migrate alpha beta"
        );
    }

    /// Each case: the Lease, whether pid 200 is alive, the decision.
    #[test]
    fn when_a_lease_may_be_taken() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let ago = |s: i64| Some(now - jiff::SignedDuration::from_secs(s));
        let lease = |holder: Option<&str>, host: &str, pid: u32, renewed| LeaseView {
            holder: holder.map(String::from),
            host: Some(host.into()),
            pid: Some(pid),
            renewed,
            duration_secs: 15,
        };
        for (l, alive, expect) in [
            (
                lease(None, "laptop", 200, ago(1)),
                true,
                Decision::Take("free"),
            ),
            (
                lease(Some("x"), "laptop", 100, ago(1)),
                true,
                Decision::Take("ours"),
            ),
            (
                lease(Some("x"), "server", 200, ago(16)),
                true,
                Decision::Take("expired"),
            ),
            (
                lease(Some("x"), "laptop", 200, ago(3)),
                false,
                Decision::Take("holder process gone"),
            ),
            (
                lease(Some("x"), "laptop", 200, ago(3)),
                true,
                Decision::Held {
                    renewed_ago: 3,
                    expires_in: 12,
                },
            ),
            // A process id on another host says nothing about this host's processes.
            (
                lease(Some("x"), "server", 200, ago(3)),
                false,
                Decision::Held {
                    renewed_ago: 3,
                    expires_in: 12,
                },
            ),
            (
                lease(Some("x"), "server", 200, ago(15)),
                true,
                Decision::Held {
                    renewed_ago: 15,
                    expires_in: 0,
                },
            ),
            // Expired to the millisecond, not to the whole second.
            (
                lease(
                    Some("x"),
                    "server",
                    200,
                    Some(now - jiff::SignedDuration::from_millis(15_500)),
                ),
                true,
                Decision::Take("expired"),
            ),
            (
                lease(
                    Some("x"),
                    "server",
                    200,
                    Some(now - jiff::SignedDuration::from_millis(3_400)),
                ),
                true,
                Decision::Held {
                    renewed_ago: 3,
                    expires_in: 12,
                },
            ),
            (
                LeaseView {
                    holder: Some("someone else's tool".into()),
                    renewed: ago(2),
                    duration_secs: 15,
                    ..Default::default()
                },
                false,
                Decision::Held {
                    renewed_ago: 2,
                    expires_in: 13,
                },
            ),
            (
                LeaseView {
                    holder: Some("no times".into()),
                    duration_secs: 15,
                    ..Default::default()
                },
                true,
                Decision::Take("expired"),
            ),
        ] {
            assert_eq!(
                decide(&l, &me(), now, |p| p == 200 && alive),
                expect,
                "{l:?}"
            );
        }
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }
}
