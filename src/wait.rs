//! Waiting on the cluster: a watch, a condition, a deadline, and a message naming what
//! was waited for.
//!
//! Every wait of kbg's is [`until`]: a kube-runtime reflector (list, then watch from the
//! list's resourceVersion, relisting after a 410 or a dropped connection, with
//! kube-runtime's backoff between reconnections) feeds a condition checked after each
//! change; the deadline is cluster time through [`Clock`]. No poll loops.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt, reflector};
use serde::de::DeserializeOwned;

use crate::clock::Clock;

/// A wait ran out.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {} (cluster time) waiting for {what}", crate::duration::display(*.limit))]
pub struct TimedOut<K> {
    /// What was waited for.
    pub what: String,
    /// The deadline.
    pub limit: Duration,
    /// The objects as last seen, for a report of what was missing.
    pub last: Vec<Arc<K>>,
}

/// Watch the objects of `api` selected by `config` until `done` holds for the current
/// set, then return that set.
///
/// `done` is called after the initial list and after every change.
///
/// # Errors
/// [`TimedOut`] (naming `what`, with the last set seen) when `limit` (cluster time)
/// passes first.
pub async fn until<K, F>(
    api: Api<K>,
    config: watcher::Config,
    clock: Clock,
    limit: Duration,
    what: impl Into<String>,
    mut done: F,
) -> Result<Vec<Arc<K>>, TimedOut<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    F: FnMut(&[Arc<K>]) -> bool,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector(writer, watcher(api, config)).default_backoff();
    let watch = async {
        futures::pin_mut!(stream);
        let mut listed = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::InitDone) => listed = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "watch interrupted; resuming");
                    continue;
                }
            }
            if listed {
                let set = reader.state();
                if done(&set) {
                    return set;
                }
            }
        }
        // The reflector's stream never ends on its own.
        std::future::pending().await
    };
    match clock.timeout(limit, watch).await {
        Ok(set) => Ok(set),
        Err(_) => Err(TimedOut {
            what: what.into(),
            limit,
            last: reader.state(),
        }),
    }
}
