//! The eviction subresource, as kube-apiserver's `pkg/registry/core/pod/storage/eviction.go`
//! does it:
//! - a pod that is Pending, Succeeded, Failed or already terminating is deleted without a
//!   PDB check;
//! - no PDB selects the pod: deleted, `201` Success;
//! - more than one: `500` "This pod has more than one PodDisruptionBudget, which the
//!   eviction subresource does not support.";
//! - a pod that is not Ready is deleted without spending budget when the PDB's
//!   `unhealthyPodEvictionPolicy` is `AlwaysAllow`, or when `currentHealthy >=
//!   desiredHealthy > 0`;
//! - the PDB's `status.observedGeneration` is behind its `metadata.generation`: `429`
//!   with `Retry-After: 10` ("… is still being processed by the server.");
//! - `disruptionsAllowed == 0`: `429` with the `DisruptionBudget` cause "The disruption
//!   budget <name> needs <desiredHealthy> healthy pods and has <currentHealthy>
//!   currently", no Retry-After;
//! - otherwise `disruptionsAllowed` is decremented, the pod recorded in
//!   `status.disruptedPods`, the pod gets the `DisruptionTarget` condition and is deleted
//!   gracefully (`deleteOptions.gracePeriodSeconds` overrides the pod's own).

use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::controllers::disruption::PdbStatus;
use crate::object::{Key, Phase, set, set_condition};
use crate::ops::DeleteOpts;
use crate::resources::Res;
use crate::state::State;
use crate::status::ApiError;

/// kube-apiserver's `MaxDisruptedPodSize`.
const MAX_DISRUPTED_POD_SIZE: usize = 2000;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn refused(cause: String, retry_after: Option<u32>) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", REFUSED);
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if let Some(s) = retry_after {
        details["retryAfterSeconds"] = json!(s);
        e.retry_after = Some(s);
    }
    e.with_details(details)
}

impl State {
    /// Evicts pod `key` (body: a policy/v1 or v1beta1 `Eviction`).
    ///
    /// # Errors
    /// 404 for a missing pod, 429 when a PDB refuses, 500 for several PDBs, 409 for a
    /// failed precondition, 400 for a name mismatch.
    pub(crate) fn evict(&mut self, key: &Key, body: &Value) -> Result<(), ApiError> {
        let Some(pod) = self.get(Res::Pod, key).cloned() else {
            return Err(ApiError::not_found("pods", "", &key.name));
        };
        if let Some(n) = body
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            && !n.is_empty()
            && n != &*key.name
        {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let opts = match body.get("deleteOptions") {
            Some(d) if !d.is_null() => DeleteOpts::from_value(d)?,
            _ => DeleteOpts::default(),
        };
        let pe = pod.pod();
        let ignore_pdb = matches!(pe.phase, Phase::Pending | Phase::Succeeded | Phase::Failed)
            || pod.terminating();
        if ignore_pdb {
            self.delete(Res::Pod, key, &opts)?;
            self.counters.evictions_allowed += 1;
            return Ok(());
        }
        let pdbs = self.pdbs_for(&pod);
        if pdbs.len() > 1 {
            self.counters.evictions_errors += 1;
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let Some(pdb_key) = pdbs.into_iter().next() else {
            self.delete(Res::Pod, key, &opts)?;
            self.counters.evictions_allowed += 1;
            return Ok(());
        };
        let pdb = self.get(Res::Pdb, &pdb_key).cloned().expect("indexed");
        let st = PdbStatus::of(&pdb);
        let spend = if !pe.ready
            && (st.always_allow || (st.current >= st.desired && st.desired > 0))
        {
            false
        } else {
            if st.observed_generation < st.generation {
                self.counters.evictions_refused += 1;
                return Err(refused(
                    format!(
                        "The disruption budget {} is still being processed by the server.",
                        pdb_key.name
                    ),
                    Some(10),
                ));
            }
            if st.allowed < 0 {
                self.counters.evictions_errors += 1;
                return Err(ApiError::forbidden(
                    "poddisruptionbudget",
                    "policy",
                    &pdb_key.name,
                    "pdb disruptions allowed is negative",
                ));
            }
            if st.disrupted > MAX_DISRUPTED_POD_SIZE {
                self.counters.evictions_errors += 1;
                return Err(ApiError::forbidden(
                    "poddisruptionbudget",
                    "policy",
                    &pdb_key.name,
                    "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
                ));
            }
            if st.allowed == 0 {
                self.counters.evictions_refused += 1;
                return Err(refused(
                    format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        pdb_key.name, st.desired, st.current
                    ),
                    None,
                ));
            }
            true
        };
        if opts.dry_run {
            return Ok(());
        }
        let now = rfc3339(self.now());
        if spend {
            let pod_name = key.name.to_string();
            let left = st.allowed - 1;
            self.modify(Res::Pdb, &pdb_key, |v| {
                set(v, &["status", "disruptionsAllowed"], json!(left));
                let m = crate::object::obj_mut(v, &["status", "disruptedPods"]);
                m.insert(pod_name, json!(now));
                if left == 0 {
                    set_condition(
                        v,
                        &["status", "conditions"],
                        "DisruptionAllowed",
                        "False",
                        "InsufficientPods",
                        "",
                        &now,
                        false,
                    );
                    if let Some(a) = v["status"]["conditions"].as_array_mut() {
                        for c in a.iter_mut() {
                            if let Some(o) = c.as_object_mut() {
                                o.remove("lastProbeTime");
                            }
                        }
                    }
                }
            });
        }
        self.modify(Res::Pod, key, |v| {
            set_condition(
                v,
                &["status", "conditions"],
                "DisruptionTarget",
                "True",
                "EvictionByEvictionAPI",
                "Eviction API: evicting",
                &now,
                false,
            );
        });
        self.delete(Res::Pod, key, &opts)?;
        self.counters.evictions_allowed += 1;
        Ok(())
    }
}
