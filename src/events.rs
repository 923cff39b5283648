//! Kubernetes Events on the nodes kbg cordons, drains and deletes.
//!
//! `kubectl describe node alpha-0` then shows what kbg did to it and when. Events go
//! through kube-runtime's [`Recorder`] (events.k8s.io/v1, reporting controller `kbg`),
//! published by one background task so that callers (the drain observer is synchronous)
//! never wait on them. They are best effort: a cluster that refuses Events does not stop
//! an operation; kbg warns once. Event notes never carry secrets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::ui::Ui;

/// The reporting controller name on kbg's Events.
pub const REPORTER: &str = "kbg";

struct Item {
    node: String,
    warning: bool,
    reason: &'static str,
    action: &'static str,
    note: String,
}

/// Publishes Events in the background.
pub struct EventSink {
    tx: Option<mpsc::UnboundedSender<Item>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

impl EventSink {
    /// A sink publishing through `client` as `kbg` (instance `instance`, e.g. the host).
    pub fn new(client: kube::Client, instance: String, ui: Ui) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: REPORTER.into(),
                instance: Some(instance),
            },
        );
        let warned = AtomicBool::new(false);
        let task = tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let reference = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(item.node.clone()),
                    ..Default::default()
                };
                let ev = Event {
                    type_: if item.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: item.reason.into(),
                    note: Some(item.note),
                    action: item.action.into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &reference).await {
                    tracing::debug!(node = %item.node, error = %e, "event not published");
                    if !warned.swap(true, Ordering::Relaxed) {
                        ui.warn(format_args!(
                            "cannot publish Events on nodes ({}); going on without them",
                            crate::client::describe(&e)
                        ));
                    }
                }
            }
        });
        EventSink {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// A sink that drops everything (dry runs).
    pub fn disabled() -> Self {
        EventSink {
            tx: None,
            task: None,
        }
    }

    /// A `Normal` Event on node `node`.
    pub fn normal(&self, node: &str, reason: &'static str, action: &'static str, note: String) {
        self.send(node, false, reason, action, note);
    }

    /// A `Warning` Event on node `node`.
    pub fn warning(&self, node: &str, reason: &'static str, action: &'static str, note: String) {
        self.send(node, true, reason, action, note);
    }

    fn send(
        &self,
        node: &str,
        warning: bool,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Item {
                node: node.to_string(),
                warning,
                reason,
                action,
                note,
            });
        }
    }

    /// Publish what is queued, waiting at most `limit` (wall time).
    pub async fn flush(mut self, limit: Duration) {
        self.tx.take();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(limit, task).await;
        }
    }
}
