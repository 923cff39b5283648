//! Watches: newline-delimited JSON events (`{"type":"ADDED","object":{…}}`), from a
//! resourceVersion (or from the current state when none is given: ADDED for every
//! object first), `410 Gone` as an ERROR event with reason `Expired` when the
//! resourceVersion is older than the resource's history, BOOKMARK events with
//! `allowWatchBookmarks`, `sendInitialEvents` (streaming lists, ending with a bookmark
//! annotated `k8s.io/initial-events-end`), `timeoutSeconds`. With a label or field
//! selector, an object that leaves the selection is sent as DELETED and one that enters
//! it as ADDED, as the API server's watch cache does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;

use crate::query::{Filter, Query};
use crate::resources::ResDef;
use crate::server::{Body, Shared};
use crate::state::{EvType, Event, Hist};
use crate::status::ApiError;
use crate::table::{partial_metadata, table};

/// How a watch shows objects (the `Accept` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Render {
    /// The objects.
    Stored,
    /// `PartialObjectMetadata`.
    Metadata,
    /// A one-row `Table` per event (`kubectl get -w`).
    Table,
}

/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK (wall time).
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// A watch without `timeoutSeconds` ends after this long (kube-apiserver's
/// `--min-request-timeout`, 1800 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Coalesce lines into chunks of about this size.
const CHUNK: usize = 64 * 1024;

fn error_line(e: &ApiError) -> Bytes {
    let v = json!({"type": "ERROR", "object": e.body});
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

struct WatchState {
    shared: Arc<Shared>,
    hist: Arc<Hist>,
    latest: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    filter: Filter,
    render: Render,
    res: crate::resources::Res,
    events_v1: bool,
    last: u64,
    pending: VecDeque<Bytes>,
    bookmarks: bool,
    bookmark_obj: (String, String),
    deadline: tokio::time::Instant,
    done: bool,
}

impl WatchState {
    /// The watch line for `obj` as event `ty`; `ev` when it comes from the history
    /// (stored objects share its serialized line).
    fn line_for(&self, obj: &Arc<crate::object::Obj>, ty: EvType, ev: Option<&Event>) -> Bytes {
        let object = match self.render {
            Render::Metadata => partial_metadata(&obj.value()),
            Render::Table => table(
                self.res,
                std::slice::from_ref(obj),
                self.shared.clock.now(),
                None,
                None,
                "Metadata",
            ),
            Render::Stored if self.events_v1 => crate::events::to_events_v1(&obj.value()),
            Render::Stored => {
                if let Some(ev) = ev {
                    return ev.line(ty);
                }
                let mut b = BytesMut::with_capacity(obj.bytes.len() + 32);
                b.extend_from_slice(
                    format!("{{\"type\":\"{}\",\"object\":", ty.as_str()).as_bytes(),
                );
                b.extend_from_slice(&obj.bytes);
                b.extend_from_slice(b"}\n");
                return b.freeze();
            }
        };
        let v = json!({"type": ty.as_str(), "object": object});
        Bytes::from(format!("{v}\n"))
    }

    /// Reads new events from the history into `pending`. Returns false on 410.
    fn pull(&mut self) -> bool {
        let events: Vec<Arc<Event>> = {
            let h = self.hist.inner.read();
            if self.last < h.floor {
                let e = ApiError::expired(format!(
                    "too old resource version: {} ({})",
                    self.last, h.floor
                ));
                self.pending.push_back(error_line(&e));
                return false;
            }
            let i = h.events.partition_point(|e| e.rv <= self.last);
            h.events.range(i..).cloned().collect()
        };
        for ev in events {
            self.last = ev.rv;
            let now_in = self.filter.matches(&ev.obj);
            let ty = match ev.ty {
                EvType::Added => now_in.then_some(EvType::Added),
                EvType::Deleted => now_in.then_some(EvType::Deleted),
                EvType::Modified => {
                    let was_in = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
                    match (was_in, now_in) {
                        (true, true) => Some(EvType::Modified),
                        (false, true) => Some(EvType::Added),
                        (true, false) => Some(EvType::Deleted),
                        (false, false) => None,
                    }
                }
            };
            if let Some(ty) = ty {
                let line = self.line_for(&ev.obj, ty, Some(&ev));
                self.pending.push_back(line);
            }
        }
        true
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let v = json!({"type": "BOOKMARK", "object": {
            "kind": self.bookmark_obj.0, "apiVersion": self.bookmark_obj.1, "metadata": meta}});
        let mut s = v.to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn take_chunk(&mut self) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        if self.pending.is_empty() || first.len() >= CHUNK {
            return Some(first);
        }
        let mut b = BytesMut::from(&first[..]);
        while b.len() < CHUNK
            && let Some(next) = self.pending.pop_front()
        {
            b.extend_from_slice(&next);
        }
        Some(b.freeze())
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(c) = self.take_chunk() {
                return Some(c);
            }
            if self.done || *self.shutdown.borrow() {
                return None;
            }
            // mark seen before reading, so no wake-up is lost
            self.latest.borrow_and_update();
            let global = self.shared.read_rv();
            if !self.pull() {
                self.done = true;
                continue;
            }
            if !self.pending.is_empty() {
                continue;
            }
            let sleep = if self.bookmarks {
                BOOKMARK_EVERY
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                r = self.latest.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(sleep) => {
                    if self.bookmarks {
                        let rv = global.max(self.last);
                        let b = self.bookmark(rv, false);
                        return Some(b);
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

/// Starts a watch.
///
/// # Errors
/// 400 for a malformed resourceVersion.
pub(crate) fn watch(
    shared: &Arc<Shared>,
    def: &'static ResDef,
    filter: Filter,
    q: &Query,
    render: Render,
) -> Result<Body, ApiError> {
    let rv_param = q.get("resourceVersion").unwrap_or("");
    let send_initial = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let from: Option<u64> = if rv_param.is_empty() || rv_param == "0" || send_initial {
        None
    } else {
        Some(rv_param.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {rv_param:?}"))
        })?)
    };
    let (hist, start, initial) = {
        let st = shared.state.lock();
        let hist = st.table(def.res.storage()).hist.clone();
        match from {
            Some(rv) => (hist, rv, Vec::new()),
            None => {
                let objs: Vec<_> = st
                    .objects(def.res.storage(), filter.ns.as_deref())
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect();
                (hist, st.rv, objs)
            }
        }
    };
    let mut ws = WatchState {
        shared: shared.clone(),
        latest: hist.latest.subscribe(),
        hist,
        shutdown: shared.shutdown.subscribe(),
        filter,
        render,
        res: def.res,
        events_v1: def.res == crate::resources::Res::EventV1,
        last: start,
        pending: VecDeque::new(),
        bookmarks,
        bookmark_obj: (def.kind.to_string(), def.api_version()),
        deadline: tokio::time::Instant::now() + timeout,
        done: false,
    };
    for o in initial {
        let line = ws.line_for(&o, EvType::Added, None);
        ws.pending.push_back(line);
    }
    if send_initial {
        let b = ws.bookmark(start, true);
        ws.pending.push_back(b);
    }
    let stream =
        futures::stream::unfold(ws, |mut ws| async move { ws.next().await.map(|b| (b, ws)) })
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Ok(StreamBody::new(stream).boxed_unsync())
}
