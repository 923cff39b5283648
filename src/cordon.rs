//! Cordon and uncordon with a record of who cordoned what.
//!
//! When kbg cordons a node it writes, in the same patch, the annotation
//! `kbg.io/cordoned` on the node: which operation cordoned it and whether the node was
//! already unschedulable before. The annotation is what makes rollback safe: kbg
//! uncordons only nodes it cordoned itself, never one a person had cordoned, and the
//! record survives kbg's process (a crash between the cordon and any state write loses
//! nothing). A node that already carries the annotation keeps it as it is: a rerun never
//! rewrites "was schedulable" into "was cordoned".
//!
//! Patches are JSON merge patches carrying the `resourceVersion` that was read, which
//! the API server treats as a precondition (409 if the node changed since): a person
//! cordoning between kbg's read and write cannot be mistaken for "was schedulable".

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::client::is_conflict;
use crate::clock::Clock;
use crate::retry::retry;

/// The annotation recording that kbg cordoned a node.
pub const CORDON_ANNOTATION: &str = "kbg.io/cordoned";

/// What [`CORDON_ANNOTATION`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CordonNote {
    /// The operation that cordoned the node: `migrate.alpha.beta`.
    pub operation: String,
    /// Whether the node was already unschedulable before kbg cordoned it (then kbg
    /// leaves it cordoned on rollback).
    pub was_unschedulable: bool,
    /// When kbg cordoned it.
    pub at: Timestamp,
}

/// The note on `node`, if kbg cordoned it (an unreadable note counts as none).
pub fn note_of(node: &Node) -> Option<CordonNote> {
    node.metadata
        .annotations
        .as_ref()?
        .get(CORDON_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// What [`cordon`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cordoned {
    /// kbg cordoned it now; `was_unschedulable` tells whether it was already.
    Now {
        /// Whether a person had cordoned it before.
        was_unschedulable: bool,
    },
    /// It already carried kbg's note (a rerun): nothing changed, or only the cordon was
    /// put back after someone lifted it.
    Already(CordonNote),
}

/// The JSON merge patch that cordons (or uncordons) `node` with `note` (or removes it),
/// with `node`'s resourceVersion as precondition.
pub fn cordon_patch(
    node: &Node,
    unschedulable: bool,
    note: Option<&CordonNote>,
) -> serde_json::Value {
    let annotation = match note {
        Some(n) => serde_json::Value::String(serde_json::to_string(n).expect("notes serialise")),
        None => serde_json::Value::Null,
    };
    serde_json::json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": { CORDON_ANNOTATION: annotation },
        },
        "spec": { "unschedulable": if unschedulable { serde_json::Value::Bool(true) } else { serde_json::Value::Null } },
    })
}

/// Cordon node `name` for `operation`, recording whether it was cordoned already.
///
/// # Errors
/// When the node cannot be read or patched (after retries of transient faults and of
/// conflicting writes).
pub async fn cordon(
    client: &kube::Client,
    name: &str,
    operation: &str,
    clock: Clock,
) -> Result<Cordoned, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::default();
    loop {
        let node = retry(clock, "get node", || api.get(name)).await?;
        let unschedulable = crate::pool::is_cordoned(&node);
        let patch = match note_of(&node) {
            Some(note) if unschedulable => return Ok(Cordoned::Already(note)),
            Some(note) => {
                // kbg's cordon was lifted by someone mid-operation: put it back, keep the
                // original note.
                let p = cordon_patch(&node, true, Some(&note));
                let mp = Patch::Merge(&p);
                match retry(clock, "cordon node", || api.patch(name, &pp, &mp)).await {
                    Ok(_) => return Ok(Cordoned::Already(note)),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            None => cordon_patch(
                &node,
                true,
                Some(&CordonNote {
                    operation: operation.to_string(),
                    was_unschedulable: unschedulable,
                    at: Timestamp::now(),
                }),
            ),
        };
        let mp = Patch::Merge(&patch);
        match retry(clock, "cordon node", || api.patch(name, &pp, &mp)).await {
            Ok(_) => {
                return Ok(Cordoned::Now {
                    was_unschedulable: unschedulable,
                });
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What [`uncordon_if_ours`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uncordoned {
    /// kbg had cordoned it from schedulable: now schedulable again, note removed.
    Uncordoned,
    /// A person had cordoned it before kbg: left cordoned, kbg's note removed.
    LeftCordoned,
    /// The operation's note is not on it: not its to uncordon; untouched.
    NotOurs,
    /// The node no longer exists.
    Gone,
}

/// Undo `operation`'s cordon of node `name`: uncordon it if kbg cordoned it from
/// schedulable, and remove kbg's note either way. Never uncordons a node kbg did not
/// cordon, nor one another operation cordoned.
///
/// # Errors
/// When the node cannot be read or patched.
pub async fn uncordon_if_ours(
    client: &kube::Client,
    name: &str,
    operation: &str,
    clock: Clock,
) -> Result<Uncordoned, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::default();
    loop {
        let Some(node) = retry(clock, "get node", || api.get_opt(name)).await? else {
            return Ok(Uncordoned::Gone);
        };
        let Some(note) = note_of(&node).filter(|n| n.operation == operation) else {
            return Ok(Uncordoned::NotOurs);
        };
        let (patch, outcome) = if note.was_unschedulable {
            (cordon_patch(&node, true, None), Uncordoned::LeftCordoned)
        } else {
            (cordon_patch(&node, false, None), Uncordoned::Uncordoned)
        };
        let mp = Patch::Merge(&patch);
        match retry(clock, "uncordon node", || api.patch(name, &pp, &mp)).await {
            Ok(_) => return Ok(outcome),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(rv: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("alpha-0".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn patches_carry_the_precondition_and_the_note() {
        let note = CordonNote {
            operation: "migrate.alpha.beta".into(),
            was_unschedulable: false,
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        let p = cordon_patch(&node("42"), true, Some(&note));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["spec"]["unschedulable"], true);
        let stored: CordonNote = serde_json::from_str(
            p["metadata"]["annotations"][CORDON_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(stored, note);
        // Uncordon: null deletes the field and the annotation (merge-patch semantics).
        let p = cordon_patch(&node("43"), false, None);
        assert!(p["spec"]["unschedulable"].is_null());
        assert!(p["metadata"]["annotations"][CORDON_ANNOTATION].is_null());
    }

    #[test]
    fn notes_round_trip_through_the_annotation() {
        let note = CordonNote {
            operation: "migrate.a.b".into(),
            was_unschedulable: true,
            at: Timestamp::now(),
        };
        let mut n = node("1");
        n.metadata.annotations = Some(
            [(
                CORDON_ANNOTATION.to_string(),
                serde_json::to_string(&note).unwrap(),
            )]
            .into(),
        );
        assert_eq!(note_of(&n), Some(note));
        n.metadata.annotations =
            Some([(CORDON_ANNOTATION.to_string(), "garbage".to_string())].into());
        assert_eq!(note_of(&n), None);
    }
}
