//! Counters and the audit log: how tests and benchmarks count requests and prove that no
//! pod was deleted behind a PDB's back.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

/// Counters kept under the state lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub pdb_violations: u64,
    pub evictions_allowed: u64,
    pub evictions_refused: u64,
    pub evictions_errors: u64,
    pub pods_deleted: u64,
    pub pods_removed: u64,
}

/// One PDB's books (see `controllers/disruption.rs` for the exact definition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PdbStats {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// desiredHealthy at the end of the latest transaction that touched it.
    pub desired_healthy: i64,
    /// currentHealthy at the same moment.
    pub current_healthy: i64,
    /// Lowest currentHealthy − desiredHealthy seen since the PDB was first satisfied
    /// (`None` if it never was).
    pub min_margin_seen: Option<i64>,
    /// Client actions (direct pod delete or deletecollection, node delete with pods,
    /// eviction) that took it below desiredHealthy after it was first satisfied.
    pub violations: u64,
    /// The PDB has been deleted (its books are kept).
    pub deleted: bool,
}

/// The cluster's counters, as [`crate::SimCluster::stats`] and `GET /sim/v1/stats` give them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests served (every request to `/api`, `/apis`, `/version`, discovery and
    /// health endpoints; not `/sim/v1`).
    pub requests: u64,
    /// Requests by Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`; non-resource requests under their HTTP method).
    pub requests_by_verb: BTreeMap<String, u64>,
    /// Requests by HTTP status code.
    pub requests_by_code: BTreeMap<u16, u64>,
    /// Sum of the violations of every PDB.
    pub pdb_violations: u64,
    /// Evictions answered 201.
    pub evictions_allowed: u64,
    /// Evictions refused with 429 by a PDB.
    pub evictions_refused: u64,
    /// Evictions answered 500 or 403 (several PDBs, a broken PDB).
    pub evictions_errors: u64,
    /// Pods a client deleted directly (DELETE of a pod, deletecollection), not counting
    /// evictions.
    pub pods_deleted: u64,
    /// Pods removed from the store for any reason (termination finished, force delete,
    /// node deleted, …).
    pub pods_removed: u64,
    /// Pods now.
    pub pods: u64,
    /// Nodes now.
    pub nodes: u64,
    /// The latest resourceVersion.
    pub resource_version: u64,
    /// The simulated time (RFC 3339).
    pub sim_time: String,
    /// Every PDB, live and deleted.
    pub pdbs: Vec<PdbStats>,
}

/// One request, as the audit log records it (JSON lines with `--audit-log`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the request arrived, in simulated time (RFC 3339, microseconds).
    pub time: String,
    /// When it arrived, in wall-clock milliseconds since the cluster started.
    pub wall_ms: u64,
    /// How long the answer took, in wall-clock microseconds (until the headers, for
    /// watches).
    pub latency_us: u64,
    /// `User-Agent`.
    pub user_agent: String,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or the lowercase HTTP method for non-resource paths.
    pub verb: String,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// HTTP status code (0 for a dropped connection).
    pub code: u16,
    /// API group ("" for core).
    pub api_group: String,
    /// Resource (`pods`), "" for non-resource paths.
    pub resource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Subresource (`eviction`, `status`, …).
    pub subresource: String,
    /// An injected fault (`500`, `429`, `drop`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// The audit log and the request counters.
pub(crate) struct Audit {
    pub entries: Vec<AuditEntry>,
    pub by_verb: BTreeMap<String, u64>,
    pub by_code: BTreeMap<u16, u64>,
    pub total: u64,
    pub file: Option<std::io::LineWriter<std::fs::File>>,
}

impl Audit {
    pub(crate) fn new(file: Option<std::fs::File>) -> Audit {
        Audit {
            entries: Vec::new(),
            by_verb: BTreeMap::new(),
            by_code: BTreeMap::new(),
            total: 0,
            file: file.map(std::io::LineWriter::new),
        }
    }

    pub(crate) fn record(&mut self, e: AuditEntry, count: bool) {
        if count {
            self.total += 1;
            *self.by_verb.entry(e.verb.clone()).or_default() += 1;
            *self.by_code.entry(e.code).or_default() += 1;
        }
        if let Some(f) = &mut self.file
            && let Ok(line) = serde_json::to_string(&e)
            && writeln!(f, "{line}").is_err()
        {
            tracing::warn!("kbg-sim: cannot write the audit log; no longer writing it");
            self.file = None;
        }
        self.entries.push(e);
    }
}
