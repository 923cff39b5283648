//! Preflight: everything `kbg migrate` checks before its first cordon, and the plan
//! `--dry-run` prints.
//!
//! It reads, and changes nothing: the pods on every source and target node (one list per
//! node by `spec.nodeName`), every PodDisruptionBudget (one list), and DaemonSet metadata
//! (one list, to find pods whose DaemonSet is gone). From those it finds every
//! [`Blocker`]: pods a flag must allow (no controller: `--force`; emptyDir data:
//! `--delete-emptydir-data`), PDBs that can never allow an eviction, pods selected by
//! several PDBs (the Eviction API refuses them), target nodes that are not Ready or not
//! schedulable, and a target pool without room for what must move (the sum of requests
//! against free allocatable cpu, memory and pod slots, and each pod against the nodes it
//! tolerates and selects). The verdict is per flag: [`PreflightReport::blockers`].
//!
//! Room is counted the way the scheduler counts it — requests, not usage; a container
//! without a request counts its limit (what API defaulting stores) — and summed over the
//! pool, so fragmentation across nodes can still leave a pod Pending: the check proves
//! "not enough", never "enough".

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, Pod, ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::core::{Selector, SelectorExt};
use serde::{Deserialize, Serialize};

use crate::drain::{
    Classifier, DrainOptions, Owners, PodDisposition, PodRef, block_reasons, is_finished,
};
use crate::retry::retry;

/// Node lists sent at once while reading the pools.
const LIST_CONCURRENCY: usize = 8;

// ---------------------------------------------------------------------------------------
// Quantities and resources
// ---------------------------------------------------------------------------------------

/// A Kubernetes quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes quantity")]
pub struct QuantityError(pub String);

/// Parse a Kubernetes quantity (`500m`, `1Gi`, `128974848`, `1e3`, `1.5`) into
/// thousandths of its unit (millicores for cpu, millibytes for memory), rounding up as
/// the API server's `MilliValue` does.
///
/// # Errors
/// [`QuantityError`] for anything that is not `[+-]digits[.digits][suffix]` with a suffix
/// of `n u m "" k M G T P E`, `Ki Mi Gi Ti Pi Ei` or a decimal exponent `e3`/`E3`, or that
/// overflows.
pub fn parse_quantity_milli(text: &str) -> Result<i128, QuantityError> {
    let fail = || QuantityError(text.to_string());
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || number.matches('.').count() > 1 {
        return Err(fail());
    }
    if int_part.len() + frac_part.len() > 30 {
        return Err(fail());
    }
    let digits: u128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| fail())?;
    // value = digits × 10^-frac × multiplier; in millis: × 1000.
    let frac = i32::try_from(frac_part.len()).map_err(|_| fail())?;
    let (binary_shift, decimal_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        exp if exp.starts_with(['e', 'E']) => (0, exp[1..].parse::<i32>().map_err(|_| fail())?),
        _ => return Err(fail()),
    };
    let scaled = digits.checked_mul(1u128 << binary_shift).ok_or_else(fail)?;
    let exp10 = decimal_exp + 3 - frac;
    let pow = |e: i32| 10u128.checked_pow(e.unsigned_abs()).ok_or_else(fail);
    let milli = if exp10 >= 0 {
        scaled.checked_mul(pow(exp10)?).ok_or_else(fail)?
    } else {
        scaled.div_ceil(pow(exp10)?)
    };
    let milli = i128::try_from(milli).map_err(|_| fail())?;
    Ok(if negative { -milli } else { milli })
}

/// Requests (or room) in the scheduler's three dimensions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Pod slots.
    pub pods: i64,
}

impl Resources {
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            pods: self.pods.saturating_add(o.pods),
        }
    }

    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            pods: self.pods.saturating_sub(o.pods),
        }
    }

    fn max(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
            pods: self.pods.max(o.pods),
        }
    }

    fn fits_in(&self, room: &Resources) -> bool {
        self.cpu_millis <= room.cpu_millis
            && self.memory_bytes <= room.memory_bytes
            && self.pods <= room.pods
    }

    /// Read `cpu`, `memory` and `pods` from a resource list (`allocatable`, `requests`);
    /// unparseable quantities count 0.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let milli = |key: &str| {
            list.get(key)
                .and_then(|q| parse_quantity_milli(&q.0).ok())
                .unwrap_or(0)
        };
        let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        Resources {
            cpu_millis: clamp(milli("cpu")),
            // Millibytes to bytes, rounding up.
            memory_bytes: clamp(-(-milli("memory")).div_euclid(1000)),
            pods: clamp(milli("pods") / 1000),
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}, memory {}, {} pods",
            format_cpu(self.cpu_millis),
            format_bytes(self.memory_bytes),
            self.pods
        )
    }
}

fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

fn format_bytes(bytes: i64) -> String {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes % (1i64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// What a pod asks of a node: per resource, the larger of its containers' sum and its
/// largest init container, plus its overhead (kube-scheduler's rule); one pod slot. A
/// container without a request counts its limit.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let of = |r: &Option<ResourceRequirements>| {
        let r = r.as_ref();
        let mut list = r.and_then(|r| r.limits.clone()).unwrap_or_default();
        list.extend(r.and_then(|r| r.requests.clone()).unwrap_or_default());
        Resources::from_list(&list)
    };
    let containers = spec
        .containers
        .iter()
        .map(|c| of(&c.resources))
        .fold(Resources::default(), Resources::add);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| of(&c.resources))
        .fold(Resources::default(), Resources::max);
    let overhead = spec
        .overhead
        .as_ref()
        .map(Resources::from_list)
        .unwrap_or_default();
    Resources {
        pods: 1,
        ..containers.max(init).add(overhead)
    }
}

// ---------------------------------------------------------------------------------------
// Nodes: readiness, taints, selectors
// ---------------------------------------------------------------------------------------

/// Whether the node's `Ready` condition is `True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the node accepts new pods (`spec.unschedulable` not set).
pub fn node_schedulable(node: &Node) -> bool {
    !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// Whether `toleration` tolerates `taint` (k8s.io/api core/v1 `Toleration.ToleratesTaint`).
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or("");
    let key_ok = key.is_empty() || key == taint.key;
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

/// The node's taints that keep off pods not tolerating them (NoSchedule, NoExecute).
fn hard_taints(node: &Node) -> impl Iterator<Item = &Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(number), values.first().and_then(|x| number(x))), (Some(v), Some(x)) if v > x)
        }
        "Lt" => {
            matches!((value.and_then(number), values.first().and_then(|x| number(x))), (Some(v), Some(x)) if v < x)
        }
        _ => false,
    }
}

/// Whether `node` satisfies a required node affinity: any term, each term all of its
/// expressions (on labels) and fields (`metadata.name`). An empty term matches nothing.
fn affinity_matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
            })
    })
}

// ---------------------------------------------------------------------------------------
// PodDisruptionBudgets
// ---------------------------------------------------------------------------------------

/// Why `pdb` can never allow an eviction while its workload keeps its size, if it can't:
/// `maxUnavailable` of 0 or 0%; `minAvailable` of 100%; or a status whose desired healthy
/// count reaches the pods it covers (`minAvailable` equal to the replicas, or a
/// percentage that rounds up to all of them).
pub fn pdb_never_allows(pdb: &PodDisruptionBudget) -> Option<String> {
    let spec = pdb.spec.as_ref()?;
    let zero = |v: &IntOrString| match v {
        IntOrString::Int(i) => *i <= 0,
        IntOrString::String(s) => s
            .trim_end_matches('%')
            .trim()
            .parse::<f64>()
            .is_ok_and(|p| p <= 0.0),
    };
    if let Some(max) = &spec.max_unavailable
        && zero(max)
    {
        return Some(format!("maxUnavailable is {}", show(max)));
    }
    if let Some(IntOrString::String(p)) = &spec.min_available
        && p.trim_end_matches('%')
            .trim()
            .parse::<f64>()
            .is_ok_and(|p| p >= 100.0)
    {
        return Some(format!("minAvailable is {p}"));
    }
    let status = pdb.status.as_ref()?;
    if status.expected_pods > 0 && status.desired_healthy >= status.expected_pods {
        let rule = spec
            .min_available
            .as_ref()
            .map(|m| format!("minAvailable {}", show(m)))
            .or_else(|| {
                spec.max_unavailable
                    .as_ref()
                    .map(|m| format!("maxUnavailable {}", show(m)))
            })
            .unwrap_or_else(|| "its rule".to_string());
        return Some(format!(
            "{rule} needs {} healthy pods of the {} it covers",
            status.desired_healthy, status.expected_pods
        ));
    }
    None
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn pdb_selector(pdb: &PodDisruptionBudget) -> Option<Selector> {
    pdb.spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .and_then(|s| Selector::try_from(s).ok())
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// The flags that allow a blocker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowances {
    /// `--force`: pods with no controller (or whose DaemonSet is gone).
    pub force: bool,
    /// `--delete-emptydir-data`: pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
}

impl From<&DrainOptions> for Allowances {
    fn from(opts: &DrainOptions) -> Self {
        Allowances {
            force: opts.force,
            delete_emptydir_data: opts.delete_emptydir_data,
        }
    }
}

impl Allowances {
    fn allows(&self, flag: &str) -> bool {
        match flag {
            "--force" => self.force,
            "--delete-emptydir-data" => self.delete_emptydir_data,
            _ => false,
        }
    }
}

/// What kind of problem a [`Blocker`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    /// A pod that declares no controller.
    NoController,
    /// A pod whose DaemonSet no longer exists.
    DaemonSetMissing,
    /// A pod with emptyDir data.
    EmptyDir,
    /// A pod selected by more than one PDB: the Eviction API refuses it (500).
    MultiplePdbs,
    /// A PDB that can never allow an eviction.
    PdbNeverAllows,
    /// No target node given.
    NoTargetNodes,
    /// A target node that is not Ready.
    TargetNotReady,
    /// A target node that is cordoned.
    TargetUnschedulable,
    /// A pod no Ready, schedulable target node accepts (taints, node selector, affinity,
    /// or size).
    NoTargetFits,
    /// The target pool lacks room (cpu, memory or pod slots) for what must move.
    NotEnoughRoom,
}

/// One reason the migration cannot start, naming the object and the flag (if any) that
/// would allow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    /// What kind.
    pub kind: BlockerKind,
    /// The object: `pod NS/NAME`, `PodDisruptionBudget NS/NAME`, `node NAME`, `target pool`.
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// The flag that allows it (`--force`, `--delete-emptydir-data`); `None`: only
    /// changing the cluster does.
    pub allowed_by: Option<String>,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.allowed_by {
            Some(flag) => write!(
                f,
                "{} {} (use {flag} to allow it)",
                self.object, self.message
            ),
            None => write!(f, "{} {}", self.object, self.message),
        }
    }
}

/// A pod on a source node and what the drain will do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// The pod.
    pub pod: PodRef,
    /// What the drain does with it, under the options given.
    pub disposition: PodDisposition,
    /// What it asks of a node.
    pub requests: Resources,
    /// The PDBs that select it, by name.
    pub pdbs: Vec<String>,
}

/// A source node and its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceNode {
    /// The node's name.
    pub name: String,
    /// Every pod on it.
    pub pods: Vec<PodPlan>,
}

/// A target node and its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetNode {
    /// The node's name.
    pub name: String,
    /// `Ready` condition `True`.
    pub ready: bool,
    /// Not cordoned.
    pub schedulable: bool,
    /// `status.allocatable` (capacity when absent).
    pub allocatable: Resources,
    /// Requests of the pods already on it (finished pods excluded).
    pub requested: Resources,
    /// `allocatable − requested`.
    pub free: Resources,
}

/// A PDB that covers pods that must move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdbPlan {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `status.disruptionsAllowed` now.
    pub disruptions_allowed: i32,
    /// `status.desiredHealthy`.
    pub desired_healthy: i32,
    /// `status.currentHealthy`.
    pub current_healthy: i32,
    /// `status.expectedPods`.
    pub expected_pods: i32,
    /// Pods on the source nodes it covers that must move.
    pub pods_to_move: usize,
    /// Why it can never allow an eviction, if it can't.
    pub never_allows: Option<String>,
}

/// Everything preflight found (serialisable for `--dry-run -o json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReport {
    /// Every source node with its pods and what the drain does with each.
    pub source_nodes: Vec<SourceNode>,
    /// Every target node with its room.
    pub target_nodes: Vec<TargetNode>,
    /// The PDBs covering pods that must move.
    pub pdbs: Vec<PdbPlan>,
    /// Requests of every pod that must move (evicted or blocked; finished pods excluded:
    /// nothing recreates them).
    pub to_move: Resources,
    /// Free room on the Ready, schedulable target nodes.
    pub target_free: Resources,
    /// Every problem found, whatever the flags; [`PreflightReport::blockers`] keeps those
    /// the given flags do not allow.
    pub findings: Vec<Blocker>,
}

impl PreflightReport {
    /// The findings that stop the migration under `allow`: every one whose flag is not
    /// given, and every one no flag allows.
    pub fn blockers(&self, allow: &Allowances) -> Vec<Blocker> {
        self.findings
            .iter()
            .filter(|b| {
                b.allowed_by
                    .as_deref()
                    .is_none_or(|flag| !allow.allows(flag))
            })
            .cloned()
            .collect()
    }

    /// Pods the drain evicts, on all source nodes.
    pub fn pods_to_evict(&self) -> usize {
        self.source_nodes
            .iter()
            .flat_map(|n| &n.pods)
            .filter(|p| p.disposition == PodDisposition::Evict)
            .count()
    }
}

/// A pod on a source node, reduced to what the assessment reads (a full Pod is not kept:
/// a 1,000-node pool holds tens of thousands).
#[derive(Debug, Clone)]
pub struct SourcePod {
    plan: PodPlan,
    labels: BTreeMap<String, String>,
    /// Must find room on the target (evicted or blocked, not finished).
    needs_room: bool,
    /// Blockers of this pod regardless of flags.
    block_reasons: Vec<crate::drain::BlockReason>,
    tolerations: Vec<Toleration>,
    node_selector: BTreeMap<String, String>,
    affinity: Option<NodeSelector>,
}

impl SourcePod {
    /// Reduce `pod` to what the assessment needs, classified under `opts`.
    pub fn of(pod: &Pod, opts: &DrainOptions, owners: &Owners) -> Self {
        Self::classified(pod, &Classifier::new(opts), owners)
    }

    fn classified(pod: &Pod, classifier: &Classifier, owners: &Owners) -> Self {
        let disposition = classifier.classify(pod, owners);
        let needs_room = !is_finished(pod)
            && matches!(
                disposition,
                PodDisposition::Evict | PodDisposition::Block { .. }
            );
        let spec = pod.spec.as_ref();
        SourcePod {
            plan: PodPlan {
                pod: PodRef::of(pod),
                disposition: disposition.clone(),
                requests: pod_requests(pod),
                pdbs: Vec::new(),
            },
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            needs_room,
            block_reasons: if matches!(disposition, PodDisposition::Skip { .. }) {
                Vec::new()
            } else {
                block_reasons(pod, owners)
            },
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .clone()
                }),
        }
    }
}

/// A target node with the pods on it already summed.
#[derive(Debug, Clone)]
pub struct TargetInput {
    node: Node,
    requested: Resources,
}

impl TargetInput {
    /// `node` with `pods` (those bound to it) counted against its allocatable.
    pub fn of(node: &Node, pods: &[Pod]) -> Self {
        TargetInput {
            node: node.clone(),
            requested: pods
                .iter()
                .filter(|p| !is_finished(p))
                .map(pod_requests)
                .fold(Resources::default(), Resources::add),
        }
    }

    fn summary(&self) -> TargetNode {
        let status = self.node.status.as_ref();
        let allocatable = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default();
        TargetNode {
            name: self.node.metadata.name.clone().unwrap_or_default(),
            ready: node_ready(&self.node),
            schedulable: node_schedulable(&self.node),
            allocatable,
            requested: self.requested,
            free: allocatable.sub(self.requested),
        }
    }
}

/// Why a pod cannot go to a node: the first rule it fails, in the order checked (a
/// later rule means the node came closer to taking it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    Taints,
    NodeSelector,
    Affinity,
    Size,
}

fn misfit(pod: &SourcePod, target: &TargetInput, free: &Resources) -> Option<Misfit> {
    let node = &target.node;
    if !hard_taints(node).all(|taint| pod.tolerations.iter().any(|t| tolerates(t, taint))) {
        return Some(Misfit::Taints);
    }
    let labels = node.metadata.labels.as_ref();
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        return Some(Misfit::NodeSelector);
    }
    if let Some(affinity) = &pod.affinity
        && !affinity_matches(affinity, node)
    {
        return Some(Misfit::Affinity);
    }
    if !pod.plan.requests.fits_in(free) {
        return Some(Misfit::Size);
    }
    None
}

/// Assess the pools, purely: `sources` are each source node's name and pods, `targets`
/// the target nodes with what runs on them, `pdbs` every PDB in the cluster.
pub fn assess(
    sources: Vec<(String, Vec<SourcePod>)>,
    targets: &[TargetInput],
    pdbs: &[PodDisruptionBudget],
) -> PreflightReport {
    let mut findings = Vec::new();
    let pdb_selectors: Vec<(&PodDisruptionBudget, String, String, Selector)> = pdbs
        .iter()
        .filter_map(|p| {
            Some((
                p,
                p.metadata.namespace.clone()?,
                p.metadata.name.clone()?,
                pdb_selector(p)?,
            ))
        })
        .collect();
    let mut pods_per_pdb: HashMap<(String, String), Vec<PodRef>> = HashMap::new();

    let mut to_move = Resources::default();
    let mut source_nodes = Vec::new();
    let mut moving: Vec<SourcePod> = Vec::new();
    for (name, mut pods) in sources {
        for pod in &mut pods {
            let ns = &pod.plan.pod.namespace;
            pod.plan.pdbs = pdb_selectors
                .iter()
                .filter(|(_, pns, _, sel)| pns == ns && sel.matches(&pod.labels))
                .map(|(_, _, pname, _)| pname.clone())
                .collect();
            for reason in &pod.block_reasons {
                findings.push(Blocker {
                    kind: match reason {
                        crate::drain::BlockReason::EmptyDir { .. } => BlockerKind::EmptyDir,
                        crate::drain::BlockReason::NoController => BlockerKind::NoController,
                        crate::drain::BlockReason::DaemonSetMissing { .. } => {
                            BlockerKind::DaemonSetMissing
                        }
                    },
                    object: format!("pod {}", pod.plan.pod),
                    message: reason.to_string(),
                    allowed_by: Some(reason.flag().to_string()),
                });
            }
            if pod.needs_room {
                to_move = to_move.add(pod.plan.requests);
                for pdb in &pod.plan.pdbs {
                    pods_per_pdb
                        .entry((ns.clone(), pdb.clone()))
                        .or_default()
                        .push(pod.plan.pod.clone());
                }
                if pod.plan.pdbs.len() > 1 {
                    findings.push(Blocker {
                        kind: BlockerKind::MultiplePdbs,
                        object: format!("pod {}", pod.plan.pod),
                        message: format!(
                            "is selected by more than one PodDisruptionBudget ({}): the Eviction API refuses to evict it; make the PDBs' selectors disjoint",
                            pod.plan.pdbs.join(", ")
                        ),
                        allowed_by: None,
                    });
                }
                moving.push(pod.clone());
            }
        }
        source_nodes.push(SourceNode {
            name,
            pods: pods.into_iter().map(|p| p.plan).collect(),
        });
    }

    let mut pdb_plans = Vec::new();
    for (pdb, ns, name, _) in &pdb_selectors {
        let Some(pods) = pods_per_pdb.get(&(ns.clone(), name.clone())) else {
            continue;
        };
        let never = pdb_never_allows(pdb);
        if let Some(why) = &never {
            findings.push(Blocker {
                kind: BlockerKind::PdbNeverAllows,
                object: format!("PodDisruptionBudget {ns}/{name}"),
                message: format!(
                    "can never allow an eviction ({why}) and covers {} pods that must move (e.g. {}); relax it or scale the workload up",
                    pods.len(),
                    pods[0]
                ),
                allowed_by: None,
            });
        }
        let status = pdb.status.clone().unwrap_or_default();
        pdb_plans.push(PdbPlan {
            namespace: ns.clone(),
            name: name.clone(),
            disruptions_allowed: status.disruptions_allowed,
            desired_healthy: status.desired_healthy,
            current_healthy: status.current_healthy,
            expected_pods: status.expected_pods,
            pods_to_move: pods.len(),
            never_allows: never,
        });
    }

    let target_nodes: Vec<TargetNode> = targets.iter().map(TargetInput::summary).collect();
    if targets.is_empty() {
        findings.push(Blocker {
            kind: BlockerKind::NoTargetNodes,
            object: "target pool".into(),
            message: "has no nodes; deploy it first (kbg deploy-pool)".into(),
            allowed_by: None,
        });
    }
    for t in &target_nodes {
        if !t.ready {
            findings.push(Blocker {
                kind: BlockerKind::TargetNotReady,
                object: format!("node {}", t.name),
                message: "in the target pool is not Ready".into(),
                allowed_by: None,
            });
        }
        if !t.schedulable {
            findings.push(Blocker {
                kind: BlockerKind::TargetUnschedulable,
                object: format!("node {}", t.name),
                message: "in the target pool is cordoned; uncordon it (kubectl uncordon)".into(),
                allowed_by: None,
            });
        }
    }
    let usable: Vec<(&TargetInput, Resources)> = targets
        .iter()
        .zip(&target_nodes)
        .filter(|(_, s)| s.ready && s.schedulable)
        .map(|(t, s)| (t, s.free))
        .collect();
    let target_free = usable
        .iter()
        .map(|(_, free)| *free)
        .fold(Resources::default(), Resources::add);

    if !usable.is_empty() {
        for pod in &moving {
            let misfits: Vec<Misfit> = usable
                .iter()
                .map(|(t, free)| misfit(pod, t, free))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            if let Some(closest) = misfits.iter().max() {
                let why = match closest {
                    Misfit::Size => format!(
                        "asks for {}, more than any target node has free",
                        pod.plan.requests
                    ),
                    Misfit::Taints => "tolerates the taints of no target node".into(),
                    Misfit::NodeSelector => "has a nodeSelector no target node matches".into(),
                    Misfit::Affinity => {
                        "has a required node affinity no target node matches".into()
                    }
                };
                findings.push(Blocker {
                    kind: BlockerKind::NoTargetFits,
                    object: format!("pod {}", pod.plan.pod),
                    message: format!("fits no target node: it {why}"),
                    allowed_by: None,
                });
            }
        }
    }
    if !to_move.fits_in(&target_free) && !targets.is_empty() {
        let mut short = Vec::new();
        if to_move.cpu_millis > target_free.cpu_millis {
            short.push(format!(
                "cpu {} needed, {} free",
                format_cpu(to_move.cpu_millis),
                format_cpu(target_free.cpu_millis)
            ));
        }
        if to_move.memory_bytes > target_free.memory_bytes {
            short.push(format!(
                "memory {} needed, {} free",
                format_bytes(to_move.memory_bytes),
                format_bytes(target_free.memory_bytes)
            ));
        }
        if to_move.pods > target_free.pods {
            short.push(format!(
                "{} pod slots needed, {} free",
                to_move.pods, target_free.pods
            ));
        }
        findings.push(Blocker {
            kind: BlockerKind::NotEnoughRoom,
            object: "target pool".into(),
            message: format!(
                "lacks room for what must move: {}; add nodes to it",
                short.join("; ")
            ),
            allowed_by: None,
        });
    }
    findings.sort_by(|a, b| (a.kind, &a.object).cmp(&(b.kind, &b.object)));
    PreflightReport {
        source_nodes,
        target_nodes,
        pdbs: pdb_plans,
        to_move,
        target_free,
        findings,
    }
}

/// Read the pools and assess them ([`assess`]). Sends only reads: one pod list per node
/// (by `spec.nodeName`, [`LIST_CONCURRENCY`] at a time), one PDB list, one DaemonSet
/// metadata list. Each read goes through kbg's one retry layer ([`crate::retry::retry`],
/// backoff in `opts.clock`'s cluster time), so transient faults (5xx, throttling 429s,
/// dropped connections) are retried read by read, never the whole preflight at once.
///
/// # Errors
/// The first [`kube::Error`] of those reads that is not transient, or a transient one
/// that outlasted the retries (the caller says which pools it was reading).
pub async fn preflight(
    client: &kube::Client,
    source_nodes: &[Node],
    target_nodes: &[Node],
    opts: &DrainOptions,
) -> Result<PreflightReport, kube::Error> {
    let clock = opts.clock;
    let all = ListParams::default();
    let daemonsets: Api<DaemonSet> = Api::all(client.clone());
    let owners = Owners::with_daemonsets(
        retry(clock, "list daemonsets", || daemonsets.list_metadata(&all))
            .await?
            .items
            .into_iter()
            .map(|d| {
                (
                    d.metadata.namespace.unwrap_or_default(),
                    d.metadata.name.unwrap_or_default(),
                )
            }),
    );
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let pdbs = retry(clock, "list pdbs", || pdbs.list(&all)).await?.items;
    let classifier = Classifier::new(opts);
    let list_on = |node: &Node| {
        let name = node.metadata.name.clone().unwrap_or_default();
        async move {
            crate::pool::pods_on(client, &name, clock)
                .await
                .map(|pods| (name, pods))
        }
    };
    let classifier = &classifier;
    let owners = &owners;
    let sources: Vec<(String, Vec<SourcePod>)> = futures::stream::iter(source_nodes)
        .map(list_on)
        .buffered(LIST_CONCURRENCY)
        .map_ok(|(name, pods)| {
            let summaries = pods
                .iter()
                .map(|p| SourcePod::classified(p, classifier, owners))
                .collect();
            (name, summaries)
        })
        .try_collect()
        .await?;
    let targets: Vec<TargetInput> = futures::stream::iter(target_nodes)
        .map(|node| {
            let listing = list_on(node);
            async move { listing.await.map(|(_, pods)| TargetInput::of(node, &pods)) }
        })
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(assess(sources, &targets, &pdbs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, EmptyDirVolumeSource, NodeCondition, NodeSelectorTerm, NodeSpec, NodeStatus,
        PodSpec, PodStatus, Volume,
    };
    use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    #[test]
    fn parses_quantities() {
        let rows: &[(&str, i128)] = &[
            ("500m", 500),
            ("1", 1_000),
            ("0", 0),
            ("1.5", 1_500),
            ("0.1", 100),
            (".5", 500),
            ("5.", 5_000),
            ("+2", 2_000),
            ("-1", -1_000),
            ("100n", 1),
            ("1u", 1),
            ("1500000u", 1_500),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("2G", 2_000_000_000_000),
            ("1Ki", 1_024_000),
            ("1Gi", 1_073_741_824_000),
            ("1.5Gi", 1_610_612_736_000),
            ("128974848", 128_974_848_000),
            ("129M", 129_000_000_000),
            ("123Mi", 128_974_848_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e-3", 1),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1Ei", 1_152_921_504_606_846_976_000),
        ];
        for (text, milli) in rows {
            assert_eq!(parse_quantity_milli(text), Ok(*milli), "{text}");
        }
        for bad in [
            "", "abc", "1Qi", "1.2.3", "1e", "m", "1 Gi", ".", "1e9999", "Gi",
        ] {
            assert!(parse_quantity_milli(bad).is_err(), "{bad:?}");
        }
    }

    fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    #[test]
    fn reads_resource_lists() {
        let r = Resources::from_list(&list(&[
            ("cpu", "3500m"),
            ("memory", "1Gi"),
            ("pods", "110"),
        ]));
        assert_eq!(
            r,
            Resources {
                cpu_millis: 3500,
                memory_bytes: 1 << 30,
                pods: 110
            }
        );
        assert_eq!(
            Resources::from_list(&list(&[("memory", "1500m")])).memory_bytes,
            2
        );
        assert_eq!(
            Resources::from_list(&list(&[("cpu", "nonsense")])).cpu_millis,
            0
        );
        assert_eq!(r.to_string(), "cpu 3500m, memory 1Gi, 110 pods");
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: (!requests.is_empty()).then(|| list(requests)),
                limits: (!limits.is_empty()).then(|| list(limits)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_follow_the_scheduler() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    container(&[("cpu", "250m"), ("memory", "64Mi")], &[]),
                    container(&[("cpu", "250m")], &[("cpu", "1"), ("memory", "128Mi")]),
                ],
                init_containers: Some(vec![container(&[("cpu", "2")], &[])]),
                overhead: Some(list(&[("cpu", "100m")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        // cpu: max(250m + 250m, 2) + 100m; memory: 64Mi + 128Mi (the limit stands in).
        assert_eq!(
            pod_requests(&pod),
            Resources {
                cpu_millis: 2100,
                memory_bytes: 192 << 20,
                pods: 1
            }
        );
        assert_eq!(pod_requests(&Pod::default()).pods, 1);
    }

    fn pdb(
        name: &str,
        app: &str,
        min: Option<IntOrString>,
        max: Option<IntOrString>,
        desired: i32,
        expected: i32,
    ) -> PodDisruptionBudget {
        let mut pdb = PodDisruptionBudget::default();
        pdb.metadata.namespace = Some("default".into());
        pdb.metadata.name = Some(name.into());
        pdb.spec = Some(PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        pdb.status = Some(PodDisruptionBudgetStatus {
            desired_healthy: desired,
            current_healthy: expected,
            expected_pods: expected,
            disruptions_allowed: (expected - desired).max(0),
            ..Default::default()
        });
        pdb
    }

    #[test]
    fn finds_pdbs_that_never_allow_an_eviction() {
        use IntOrString::{Int, String as Str};
        let rows = [
            (None, Some(Int(1)), 2, 3, false),
            (None, Some(Int(0)), 3, 3, true),
            (None, Some(Str("0%".into())), 3, 3, true),
            (None, Some(Str("10%".into())), 2, 3, false),
            (Some(Int(2)), None, 2, 3, false),
            (Some(Int(3)), None, 3, 3, true),
            (Some(Int(5)), None, 5, 3, true),
            (Some(Str("100%".into())), None, 3, 3, true),
            (Some(Str("99%".into())), None, 10, 10, true),
            (Some(Str("50%".into())), None, 2, 4, false),
            // No pods covered yet: nothing to say from the status.
            (Some(Int(1)), None, 1, 0, false),
        ];
        for (min, max, desired, expected, never) in rows {
            let p = pdb("p", "web", min.clone(), max.clone(), desired, expected);
            assert_eq!(
                pdb_never_allows(&p).is_some(),
                never,
                "min {min:?} max {max:?} desired {desired} expected {expected}: {:?}",
                pdb_never_allows(&p)
            );
        }
        let why = pdb_never_allows(&pdb("p", "web", Some(Int(3)), None, 3, 3)).unwrap();
        assert_eq!(
            why,
            "minAvailable 3 needs 3 healthy pods of the 3 it covers"
        );
        let why = pdb_never_allows(&pdb("p", "web", None, Some(Int(0)), 3, 3)).unwrap();
        assert_eq!(why, "maxUnavailable is 0");
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_match_taints() {
        let t = taint("dedicated", Some("beta"), "NoSchedule");
        let rows = [
            (
                toleration(Some("dedicated"), None, Some("beta"), None),
                true,
            ),
            (
                toleration(
                    Some("dedicated"),
                    Some("Equal"),
                    Some("beta"),
                    Some("NoSchedule"),
                ),
                true,
            ),
            (
                toleration(Some("dedicated"), Some("Equal"), Some("alpha"), None),
                false,
            ),
            (
                toleration(Some("dedicated"), Some("Exists"), None, None),
                true,
            ),
            (
                toleration(Some("dedicated"), Some("Exists"), None, Some("NoExecute")),
                false,
            ),
            (toleration(None, Some("Exists"), None, None), true),
            (toleration(Some("other"), Some("Exists"), None, None), false),
        ];
        for (tol, expected) in rows {
            assert_eq!(tolerates(&tol, &t), expected, "{tol:?}");
        }
    }

    fn node(
        name: &str,
        ready: bool,
        cordoned: bool,
        taints: Vec<Taint>,
        labels: &[(&str, &str)],
    ) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n.spec = Some(NodeSpec {
            unschedulable: cordoned.then_some(true),
            taints: Some(taints),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            allocatable: Some(list(&[("cpu", "4"), ("memory", "16Gi"), ("pods", "110")])),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, app: &str, cpu: &str, owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("default".into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        p.metadata.owner_references = owner.map(|kind| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: format!("{app}-owner"),
                uid: "o".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        });
        p.spec = Some(PodSpec {
            containers: vec![container(&[("cpu", cpu), ("memory", "1Gi")], &[])],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        p
    }

    fn sources(pods: &[Pod], opts: &DrainOptions) -> Vec<(String, Vec<SourcePod>)> {
        let owners = Owners::assume_all_exist();
        vec![(
            "alpha-1".to_string(),
            pods.iter()
                .map(|p| SourcePod::of(p, opts, &owners))
                .collect(),
        )]
    }

    fn kinds(blockers: &[Blocker]) -> Vec<BlockerKind> {
        blockers.iter().map(|b| b.kind).collect()
    }

    #[test]
    fn blockers_per_flag() {
        let mut scratch = pod("scratch", "cache", "100m", None);
        scratch.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]);
        let pods = [
            pod("web-1", "web", "500m", Some("ReplicaSet")),
            pod("solo", "solo", "100m", None),
            scratch,
            pod("proxy", "proxy", "100m", Some("DaemonSet")),
        ];
        let targets = [TargetInput::of(
            &node("beta-1", true, false, vec![], &[]),
            &[],
        )];
        let report = assess(sources(&pods, &DrainOptions::default()), &targets, &[]);
        let none = report.blockers(&Allowances::default());
        assert_eq!(
            kinds(&none),
            vec![
                BlockerKind::NoController,
                BlockerKind::NoController,
                BlockerKind::EmptyDir
            ]
        );
        let text: Vec<String> = none.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"pod default/solo declares no controller (use --force to allow it)".to_string()
            ),
            "{text:?}"
        );
        assert!(text.contains(&"pod default/scratch has emptyDir data (tmp) (use --delete-emptydir-data to allow it)".to_string()), "{text:?}");
        let forced = report.blockers(&Allowances {
            force: true,
            delete_emptydir_data: false,
        });
        assert_eq!(kinds(&forced), vec![BlockerKind::EmptyDir]);
        let both = report.blockers(&Allowances {
            force: true,
            delete_emptydir_data: true,
        });
        assert!(both.is_empty(), "{both:?}");
        // What must move: web-1, solo, scratch (the DaemonSet pod stays).
        assert_eq!(report.to_move.cpu_millis, 700);
        assert_eq!(report.to_move.pods, 3);
        assert_eq!(report.pods_to_evict(), 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["source_nodes"][0]["pods"][3]["disposition"]["reason"],
            "daemon_set"
        );
    }

    #[test]
    fn pdbs_that_block_and_pods_with_two_pdbs() {
        let pods = [
            pod("web-1", "web", "100m", Some("ReplicaSet")),
            pod("db-0", "db", "100m", Some("StatefulSet")),
            pod("api-1", "api", "100m", Some("ReplicaSet")),
        ];
        let pdbs = [
            pdb("web", "web", None, Some(IntOrString::Int(1)), 2, 3),
            pdb("db", "db", Some(IntOrString::Int(3)), None, 3, 3),
            pdb("api-a", "api", None, Some(IntOrString::Int(1)), 2, 3),
            pdb("api-b", "api", None, Some(IntOrString::Int(1)), 2, 3),
            pdb("unrelated", "other", None, Some(IntOrString::Int(0)), 3, 3),
        ];
        let targets = [TargetInput::of(
            &node("beta-1", true, false, vec![], &[]),
            &[],
        )];
        let report = assess(sources(&pods, &DrainOptions::default()), &targets, &pdbs);
        let blockers = report.blockers(&Allowances {
            force: true,
            delete_emptydir_data: true,
        });
        assert_eq!(
            kinds(&blockers),
            vec![BlockerKind::MultiplePdbs, BlockerKind::PdbNeverAllows]
        );
        assert_eq!(blockers[1].object, "PodDisruptionBudget default/db");
        assert!(
            blockers[1]
                .message
                .contains("minAvailable 3 needs 3 healthy pods of the 3"),
            "{}",
            blockers[1]
        );
        assert!(
            blockers[0].message.contains("api-a, api-b"),
            "{}",
            blockers[0]
        );
        assert_eq!(
            report.pdbs.len(),
            4,
            "the PDB covering nothing that moves is left out"
        );
        let web = report.pdbs.iter().find(|p| p.name == "web").unwrap();
        assert_eq!(
            (
                web.disruptions_allowed,
                web.pods_to_move,
                web.never_allows.clone()
            ),
            (1, 1, None)
        );
        assert_eq!(report.source_nodes[0].pods[0].pdbs, vec!["web".to_string()]);
    }

    #[test]
    fn target_nodes_must_be_ready_schedulable_and_have_room() {
        let pods: Vec<Pod> = (0..5)
            .map(|i| pod(&format!("web-{i}"), "web", "1", Some("ReplicaSet")))
            .collect();
        // beta-1 has 4 cpu, 1 used by a pod already there: 3 free. beta-2 is cordoned, beta-3 not Ready.
        let running = pod("other", "other", "1", Some("ReplicaSet"));
        let targets = [
            TargetInput::of(&node("beta-1", true, false, vec![], &[]), &[running]),
            TargetInput::of(&node("beta-2", true, true, vec![], &[]), &[]),
            TargetInput::of(&node("beta-3", false, false, vec![], &[]), &[]),
        ];
        let report = assess(sources(&pods, &DrainOptions::default()), &targets, &[]);
        let blockers = report.blockers(&Allowances::default());
        assert_eq!(
            kinds(&blockers),
            vec![
                BlockerKind::TargetNotReady,
                BlockerKind::TargetUnschedulable,
                BlockerKind::NotEnoughRoom
            ]
        );
        assert_eq!(blockers[0].object, "node beta-3");
        assert_eq!(blockers[1].object, "node beta-2");
        assert!(
            blockers[2].message.contains("cpu 5 needed, 3 free"),
            "{}",
            blockers[2]
        );
        assert!(!blockers[2].message.contains("memory"), "{}", blockers[2]);
        assert_eq!(report.target_free.cpu_millis, 3000);
        assert_eq!(report.target_nodes[0].requested.cpu_millis, 1000);

        let none = assess(sources(&pods, &DrainOptions::default()), &[], &[]);
        assert_eq!(
            kinds(&none.blockers(&Allowances::default())),
            vec![BlockerKind::NoTargetNodes]
        );
    }

    #[test]
    fn pods_must_tolerate_and_select_some_target() {
        let mut picky = pod("picky", "picky", "100m", Some("ReplicaSet"));
        picky.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        let mut affine = pod("affine", "affine", "100m", Some("ReplicaSet"));
        affine.spec.as_mut().unwrap().affinity = Some(k8s_openapi::api::core::v1::Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "zone".into(),
                            operator: "In".into(),
                            values: Some(vec!["b".into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut tolerant = pod("tolerant", "tolerant", "100m", Some("ReplicaSet"));
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![toleration(
            Some("dedicated"),
            Some("Exists"),
            None,
            None,
        )]);
        let huge = pod("huge", "huge", "8", Some("ReplicaSet"));
        let plain = pod("plain", "plain", "100m", Some("ReplicaSet"));
        let pods = [picky, affine, tolerant, huge, plain];
        let tainted = node(
            "beta-1",
            true,
            false,
            vec![taint("dedicated", Some("x"), "NoSchedule")],
            &[("zone", "a")],
        );
        let soft = node(
            "beta-2",
            true,
            false,
            vec![taint("soft", None, "PreferNoSchedule")],
            &[("zone", "a")],
        );
        let targets = [TargetInput::of(&tainted, &[]), TargetInput::of(&soft, &[])];
        let report = assess(sources(&pods, &DrainOptions::default()), &targets, &[]);
        let fits: Vec<String> = report
            .blockers(&Allowances::default())
            .into_iter()
            .filter(|b| b.kind == BlockerKind::NoTargetFits)
            .map(|b| b.to_string())
            .collect();
        assert_eq!(
            fits,
            vec![
                "pod default/affine fits no target node: it has a required node affinity no target node matches",
                "pod default/huge fits no target node: it asks for cpu 8, memory 1Gi, 1 pods, more than any target node has free",
                "pod default/picky fits no target node: it has a nodeSelector no target node matches",
            ]
        );
        // With only the tainted node, the pods that do not tolerate it fit nowhere.
        let report = assess(
            sources(&pods, &DrainOptions::default()),
            &[TargetInput::of(&tainted, &[])],
            &[],
        );
        let tainted_out: Vec<String> = report
            .findings
            .iter()
            .filter(|b| b.message.contains("taints"))
            .map(|b| b.object.clone())
            .collect();
        assert_eq!(
            tainted_out,
            vec![
                "pod default/affine",
                "pod default/huge",
                "pod default/picky",
                "pod default/plain"
            ]
        );
    }
}
