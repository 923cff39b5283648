//! Which pods a drain evicts, skips, waits for or refuses: kubectl drain's filters
//! (k8s.io/kubectl/pkg/drain/filters.go), as pure functions.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::DrainOptions;
use crate::selector::Selector;

/// The annotation the kubelet puts on the API object mirroring a static pod
/// (`kubernetes.io/config.mirror`, k8s.io/api core/v1 `MirrorPodAnnotationKey`). Mirror
/// pods cannot be evicted or deleted through the API: the kubelet owns them.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What a drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PodDisposition {
    /// Evict it through the Eviction API and wait until it is gone.
    Evict,
    /// Leave it where it is (or, for [`SkipReason::Terminating`], only wait for it).
    Skip {
        /// Why.
        reason: SkipReason,
    },
    /// Refuse to drain the node while it is there, unless the flag named by
    /// [`BlockReason::flag`] is given.
    Block {
        /// Why.
        reason: BlockReason,
    },
}

/// Why a pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `--pod-selector` does not select it.
    NotSelected,
    /// A mirror pod (static pod): the kubelet owns it, the API cannot remove it.
    MirrorPod,
    /// Managed by a DaemonSet that still exists: its controller ignores cordons and would
    /// put it straight back (kubectl drain `--ignore-daemonsets`, which kbg always implies).
    DaemonSet,
    /// Already being deleted (`metadata.deletionTimestamp` set): the drain waits until it
    /// is gone but sends nothing.
    Terminating,
}

/// Why a pod stops a drain unless a flag allows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlockReason {
    /// Uses emptyDir volumes whose data is lost when the pod goes
    /// (kubectl: "Pods with local storage").
    EmptyDir {
        /// The emptyDir volumes' names.
        volumes: Vec<String>,
    },
    /// Declares no controller: nothing would recreate it elsewhere
    /// (kubectl: "cannot delete Pods that declare no controller").
    NoController,
    /// Its DaemonSet no longer exists, so nothing would recreate it: unreplicated, as
    /// kubectl treats it.
    DaemonSetMissing {
        /// The DaemonSet named by the pod's controller reference.
        daemonset: String,
    },
}

impl BlockReason {
    /// The kubectl/kbg flag that allows evicting such a pod anyway.
    pub fn flag(&self) -> &'static str {
        match self {
            BlockReason::EmptyDir { .. } => "--delete-emptydir-data",
            BlockReason::NoController | BlockReason::DaemonSetMissing { .. } => "--force",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotSelected => "not selected by --pod-selector",
            SkipReason::MirrorPod => "mirror pod",
            SkipReason::DaemonSet => "DaemonSet pod",
            SkipReason::Terminating => "already terminating",
        })
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::EmptyDir { volumes } => {
                write!(f, "has emptyDir data ({})", volumes.join(", "))
            }
            BlockReason::NoController => f.write_str("declares no controller"),
            BlockReason::DaemonSetMissing { daemonset } => {
                write!(
                    f,
                    "belongs to DaemonSet {daemonset}, which no longer exists"
                )
            }
        }
    }
}

/// What classification needs to know about the cluster beyond the pod itself: which
/// DaemonSets exist (a pod of a deleted DaemonSet is unreplicated).
#[derive(Debug, Clone, Default)]
pub struct Owners {
    /// `(namespace, name)` of every DaemonSet; `None` = assume every one exists.
    daemonsets: Option<HashSet<(String, String)>>,
}

/// [`Owners::assume_all_exist`], as a static for borrowing.
pub(crate) static ASSUME_ALL_EXIST: Owners = Owners { daemonsets: None };

impl Owners {
    /// Assume every DaemonSet a pod names exists (what [`classify`] does).
    pub fn assume_all_exist() -> Self {
        Owners { daemonsets: None }
    }

    /// Exactly these DaemonSets exist, as `(namespace, name)`.
    pub fn with_daemonsets(daemonsets: impl IntoIterator<Item = (String, String)>) -> Self {
        Owners {
            daemonsets: Some(daemonsets.into_iter().collect()),
        }
    }

    fn daemonset_exists(&self, namespace: &str, name: &str) -> bool {
        self.daemonsets
            .as_ref()
            .is_none_or(|known| known.contains(&(namespace.to_string(), name.to_string())))
    }
}

/// Decide what a drain does with `pod`, assuming every DaemonSet it names exists.
///
/// The rules, in order (kubectl drain's filters, with kbg's `--ignore-daemonsets` always
/// on): not selected by `pod_selector` → skip; mirror pod → skip; DaemonSet pod → skip
/// (unless finished, or its DaemonSet is gone: see [`classify_with`]); already terminating
/// → skip, but the drain waits for it; finished (Succeeded/Failed) → evict whatever else
/// holds; emptyDir volumes → block unless `delete_emptydir_data`; no controller → block
/// unless `force`; anything else → evict.
///
/// An invalid `pod_selector` selects nothing (drain and preflight refuse it first:
/// [`DrainOptions::validate`]).
pub fn classify(pod: &Pod, opts: &DrainOptions) -> PodDisposition {
    classify_with(pod, opts, &Owners::assume_all_exist())
}

/// [`classify`], knowing which DaemonSets exist: the pod of a DaemonSet that no longer
/// exists is unreplicated (blocked unless `force`), as kubectl drain treats it.
pub fn classify_with(pod: &Pod, opts: &DrainOptions, owners: &Owners) -> PodDisposition {
    Classifier::new(opts).classify(pod, owners)
}

/// Every reason `pod` would block a drain with no flag given, in kubectl's order
/// (emptyDir, then no controller). Empty when it is evicted or skipped anyway. Preflight
/// uses it to name every flag a pod needs, not just the first.
pub fn block_reasons(pod: &Pod, owners: &Owners) -> Vec<BlockReason> {
    let facts = PodFacts::of(pod, owners);
    if facts.mirror || facts.terminating || facts.finished || facts.daemonset_alive() {
        return Vec::new();
    }
    let mut reasons = Vec::new();
    if !facts.empty_dirs.is_empty() {
        reasons.push(BlockReason::EmptyDir {
            volumes: facts.empty_dirs.clone(),
        });
    }
    reasons.extend(facts.unreplicated());
    reasons
}

/// A classifier with `pod_selector` parsed once, for classifying many pods.
pub(crate) struct Classifier {
    force: bool,
    delete_emptydir_data: bool,
    /// `None`: no selector; `Some(None)`: a selector that does not parse (selects nothing).
    selector: Option<Option<Selector>>,
}

impl Classifier {
    pub(crate) fn new(opts: &DrainOptions) -> Self {
        Classifier {
            force: opts.force,
            delete_emptydir_data: opts.delete_emptydir_data,
            selector: opts
                .pod_selector
                .as_deref()
                .filter(|text| !text.trim().is_empty())
                .map(|text| Selector::parse(text).ok()),
        }
    }

    pub(crate) fn classify(&self, pod: &Pod, owners: &Owners) -> PodDisposition {
        let skip = |reason| PodDisposition::Skip { reason };
        let block = |reason| PodDisposition::Block { reason };
        if !self.selects(pod) {
            return skip(SkipReason::NotSelected);
        }
        let facts = PodFacts::of(pod, owners);
        if facts.mirror {
            return skip(SkipReason::MirrorPod);
        }
        if facts.daemonset_alive() {
            return skip(SkipReason::DaemonSet);
        }
        if facts.terminating {
            return skip(SkipReason::Terminating);
        }
        if facts.finished {
            return PodDisposition::Evict;
        }
        if !facts.empty_dirs.is_empty() && !self.delete_emptydir_data {
            return block(BlockReason::EmptyDir {
                volumes: facts.empty_dirs,
            });
        }
        match facts.unreplicated() {
            Some(reason) if !self.force => block(reason),
            _ => PodDisposition::Evict,
        }
    }

    fn selects(&self, pod: &Pod) -> bool {
        match &self.selector {
            None => true,
            Some(None) => false,
            Some(Some(selector)) => {
                let empty = BTreeMap::new();
                selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
            }
        }
    }
}

/// The facts about a pod that the rules read.
struct PodFacts {
    mirror: bool,
    /// The DaemonSet controlling a running pod, and whether it exists.
    daemonset: Option<(String, bool)>,
    has_controller: bool,
    terminating: bool,
    finished: bool,
    empty_dirs: Vec<String>,
}

impl PodFacts {
    fn of(pod: &Pod, owners: &Owners) -> Self {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let finished = is_finished(pod);
        PodFacts {
            mirror: pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION)),
            // kubectl: "Any finished pod can be removed", DaemonSet's included.
            daemonset: controller
                .filter(|c| c.kind == "DaemonSet" && !finished)
                .map(|c| (c.name.clone(), owners.daemonset_exists(namespace, &c.name))),
            has_controller: controller.is_some(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            finished,
            empty_dirs: pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter(|v| v.empty_dir.is_some())
                .map(|v| v.name.clone())
                .collect(),
        }
    }

    fn daemonset_alive(&self) -> bool {
        matches!(self.daemonset, Some((_, true)))
    }

    fn unreplicated(&self) -> Option<BlockReason> {
        match &self.daemonset {
            Some((name, false)) => Some(BlockReason::DaemonSetMissing {
                daemonset: name.clone(),
            }),
            _ if !self.has_controller => Some(BlockReason::NoController),
            _ => None,
        }
    }
}

/// Whether classifying `pod` depends on which DaemonSets exist: a running pod
/// controlled by a DaemonSet.
pub(crate) fn needs_owners(pod: &Pod) -> bool {
    !is_finished(pod)
        && pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "DaemonSet")
}

/// Whether the pod has finished (phase Succeeded or Failed): nothing to protect.
pub(crate) fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod's `Ready` condition is `True`.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, PodStatus, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    /// A running pod owned by a ReplicaSet, labelled `app=web`.
    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-1".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        pod.spec = Some(PodSpec::default());
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        owned_by(pod, "ReplicaSet", "web-abc")
    }

    fn owned_by(mut pod: Pod, kind: &str, name: &str) -> Pod {
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        pod
    }

    fn no_controller(mut pod: Pod) -> Pod {
        pod.metadata.owner_references = None;
        pod
    }

    fn not_controlling_owner(mut pod: Pod) -> Pod {
        for o in pod.metadata.owner_references.iter_mut().flatten() {
            o.controller = None;
        }
        pod
    }

    fn mirror(mut pod: Pod) -> Pod {
        pod.metadata.annotations =
            Some([(MIRROR_POD_ANNOTATION.to_string(), "x".to_string())].into());
        no_controller(pod)
    }

    fn with_empty_dir(mut pod: Pod) -> Pod {
        pod.spec.as_mut().unwrap().volumes = Some(vec![
            Volume {
                name: "config".into(),
                ..Default::default()
            },
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ]);
        pod
    }

    fn phase(mut pod: Pod, phase: &str) -> Pod {
        pod.status.as_mut().unwrap().phase = Some(phase.into());
        pod
    }

    fn terminating(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        pod
    }

    fn opts(force: bool, emptydir: bool, selector: Option<&str>) -> DrainOptions {
        DrainOptions {
            force,
            delete_emptydir_data: emptydir,
            pod_selector: selector.map(str::to_string),
            ..DrainOptions::default()
        }
    }

    const EVICT: PodDisposition = PodDisposition::Evict;
    fn skip(reason: SkipReason) -> PodDisposition {
        PodDisposition::Skip { reason }
    }
    fn block(reason: BlockReason) -> PodDisposition {
        PodDisposition::Block { reason }
    }
    fn empty_dir() -> BlockReason {
        BlockReason::EmptyDir {
            volumes: vec!["scratch".into()],
        }
    }

    #[test]
    fn one_rule_per_row() {
        let ds = || owned_by(pod(), "DaemonSet", "proxy");
        let sts = || owned_by(pod(), "StatefulSet", "db");
        let job = || owned_by(pod(), "Job", "nightly");
        let plain = opts(false, false, None);
        let forced = opts(true, false, None);
        let emptydir_ok = opts(false, true, None);
        let both = opts(true, true, None);
        let rows: Vec<(&str, Pod, &DrainOptions, PodDisposition)> = vec![
            ("ReplicaSet pod", pod(), &plain, EVICT),
            ("StatefulSet pod", sts(), &plain, EVICT),
            ("Job pod", job(), &plain, EVICT),
            ("DaemonSet pod", ds(), &plain, skip(SkipReason::DaemonSet)),
            (
                "DaemonSet pod, --force",
                ds(),
                &forced,
                skip(SkipReason::DaemonSet),
            ),
            (
                "finished DaemonSet pod",
                phase(ds(), "Succeeded"),
                &plain,
                EVICT,
            ),
            (
                "mirror pod",
                mirror(pod()),
                &plain,
                skip(SkipReason::MirrorPod),
            ),
            (
                "mirror pod, --force",
                mirror(pod()),
                &both,
                skip(SkipReason::MirrorPod),
            ),
            (
                "no controller",
                no_controller(pod()),
                &plain,
                block(BlockReason::NoController),
            ),
            (
                "owner that is not a controller",
                not_controlling_owner(pod()),
                &plain,
                block(BlockReason::NoController),
            ),
            (
                "no controller, --force",
                no_controller(pod()),
                &forced,
                EVICT,
            ),
            (
                "emptyDir",
                with_empty_dir(pod()),
                &plain,
                block(empty_dir()),
            ),
            (
                "emptyDir, --force only",
                with_empty_dir(pod()),
                &forced,
                block(empty_dir()),
            ),
            (
                "emptyDir, --delete-emptydir-data",
                with_empty_dir(pod()),
                &emptydir_ok,
                EVICT,
            ),
            (
                "emptyDir and no controller: emptyDir first",
                with_empty_dir(no_controller(pod())),
                &plain,
                block(empty_dir()),
            ),
            (
                "emptyDir and no controller, --delete-emptydir-data",
                with_empty_dir(no_controller(pod())),
                &emptydir_ok,
                block(BlockReason::NoController),
            ),
            (
                "emptyDir and no controller, both flags",
                with_empty_dir(no_controller(pod())),
                &both,
                EVICT,
            ),
            (
                "Succeeded, no controller",
                phase(no_controller(pod()), "Succeeded"),
                &plain,
                EVICT,
            ),
            (
                "Failed, emptyDir",
                phase(with_empty_dir(pod()), "Failed"),
                &plain,
                EVICT,
            ),
            ("Pending", phase(pod(), "Pending"), &plain, EVICT),
            (
                "terminating",
                terminating(pod()),
                &plain,
                skip(SkipReason::Terminating),
            ),
            (
                "terminating, no controller",
                terminating(no_controller(pod())),
                &plain,
                skip(SkipReason::Terminating),
            ),
            (
                "terminating DaemonSet pod",
                terminating(ds()),
                &plain,
                skip(SkipReason::DaemonSet),
            ),
            (
                "terminating mirror pod",
                terminating(mirror(pod())),
                &plain,
                skip(SkipReason::MirrorPod),
            ),
        ];
        for (name, pod, opts, expected) in rows {
            assert_eq!(classify(&pod, opts), expected, "{name}");
        }
    }

    fn generation(mut pod: Pod, value: &str) -> Pod {
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("gen".into(), value.into());
        pod
    }

    #[test]
    fn pod_selector_narrows_before_any_other_rule() {
        let rows = [
            (Some("app=web"), pod(), EVICT),
            (Some("app=db"), pod(), skip(SkipReason::NotSelected)),
            (
                Some("app=db"),
                no_controller(pod()),
                skip(SkipReason::NotSelected),
            ),
            (Some("app=db"), mirror(pod()), skip(SkipReason::NotSelected)),
            (
                Some("app notin (db)"),
                no_controller(pod()),
                block(BlockReason::NoController),
            ),
            (Some(""), pod(), EVICT),
            (Some("app in (web"), pod(), skip(SkipReason::NotSelected)),
            // The numeric forms `kubectl -l` and kbg's command line accept.
            (Some("gen>2"), generation(pod(), "3"), EVICT),
            (
                Some("gen<3"),
                generation(pod(), "3"),
                skip(SkipReason::NotSelected),
            ),
        ];
        for (selector, pod, expected) in rows {
            assert_eq!(
                classify(&pod, &opts(false, false, selector)),
                expected,
                "{selector:?}"
            );
        }
        let mut unlabelled = pod();
        unlabelled.metadata.labels = None;
        assert_eq!(
            classify(&unlabelled, &opts(false, false, Some("!app"))),
            EVICT
        );
    }

    #[test]
    fn pod_of_a_deleted_daemonset_is_unreplicated() {
        let ds = owned_by(pod(), "DaemonSet", "proxy");
        let gone = Owners::with_daemonsets([("other".to_string(), "proxy".to_string())]);
        let there = Owners::with_daemonsets([("default".to_string(), "proxy".to_string())]);
        let missing = BlockReason::DaemonSetMissing {
            daemonset: "proxy".into(),
        };
        let plain = opts(false, false, None);
        assert_eq!(
            classify_with(&ds, &plain, &there),
            skip(SkipReason::DaemonSet)
        );
        assert_eq!(classify_with(&ds, &plain, &gone), block(missing.clone()));
        assert_eq!(classify_with(&ds, &opts(true, false, None), &gone), EVICT);
        assert_eq!(
            classify_with(&terminating(ds.clone()), &plain, &gone),
            skip(SkipReason::Terminating)
        );
        assert_eq!(block_reasons(&ds, &gone), vec![missing.clone()]);
        assert_eq!(missing.flag(), "--force");
    }

    #[test]
    fn block_reasons_name_every_flag() {
        let gone = Owners::assume_all_exist();
        assert_eq!(
            block_reasons(&with_empty_dir(no_controller(pod())), &gone),
            vec![empty_dir(), BlockReason::NoController]
        );
        assert_eq!(block_reasons(&pod(), &gone), vec![]);
        assert_eq!(
            block_reasons(&phase(no_controller(pod()), "Failed"), &gone),
            vec![]
        );
        assert_eq!(block_reasons(&mirror(with_empty_dir(pod())), &gone), vec![]);
        assert_eq!(empty_dir().flag(), "--delete-emptydir-data");
        assert_eq!(empty_dir().to_string(), "has emptyDir data (scratch)");
    }

    #[test]
    fn dispositions_serialize_for_json_output() {
        let json = serde_json::to_value(block(empty_dir())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"action": "block", "reason": {"kind": "empty_dir", "volumes": ["scratch"]}})
        );
        let json = serde_json::to_value(skip(SkipReason::DaemonSet)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"action": "skip", "reason": "daemon_set"})
        );
    }
}
