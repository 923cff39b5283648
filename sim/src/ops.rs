//! The write operations of the API server, shared by API requests and controllers:
//! create, update (with optimistic concurrency), patch, graceful delete with
//! propagation, and `modify` for controllers that write an object they own.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::{default_object, stamp_new, validate, validate_update};
use crate::clock::{add_secs, rfc3339};
use crate::object::{Key, Obj, Phase, get, get_str, obj_mut, set};
use crate::patch::strategic_merge;
use crate::resources::Res;
use crate::state::State;
use crate::status::ApiError;

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    /// The object (status changes ignored where there is a status subresource).
    Main,
    /// `/status` (only status changes kept).
    Status,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// Dependents lose their owner reference and stay.
    Orphan,
    /// The owner goes at once; the garbage collector deletes dependents after.
    Background,
    /// The owner waits (finalizer `foregroundDeletion`) until its dependents are gone.
    Foreground,
}

/// `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `propagationPolicy` (or the legacy `orphanDependents`).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub rv: Option<String>,
    /// `dryRun: [All]`.
    pub dry_run: bool,
}

impl DeleteOpts {
    /// Reads a `DeleteOptions` body (or the same fields from query parameters).
    pub(crate) fn from_value(v: &Value) -> Result<DeleteOpts, ApiError> {
        let propagation = match get_str(v, &["propagationPolicy"]) {
            None | Some("") => match v.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some(Propagation::Orphan),
                Some(false) => Some(Propagation::Background),
                None => None,
            },
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    "",
                    &[crate::status::FieldError::invalid(
                        "propagationPolicy",
                        other,
                        "propagationPolicy must be one of Orphan, Foreground or Background",
                    )],
                ));
            }
        };
        Ok(DeleteOpts {
            grace: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation,
            uid: get_str(v, &["preconditions", "uid"]).map(str::to_string),
            rv: get_str(v, &["preconditions", "resourceVersion"]).map(str::to_string),
            dry_run: v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
        })
    }
}

/// What a delete did.
#[derive(Debug)]
pub(crate) enum Deleted {
    /// The object is gone (its last state).
    Gone(Arc<Obj>),
    /// The object is terminating (graceful delete, finalizers, foreground).
    Pending(Arc<Obj>),
}

/// A patch type (`Content-Type` of a PATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json` (RFC 7386)
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json` (RFC 6902)
    Json,
}

const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five random characters as `generateName` uses (k8s.io/apimachinery `rand.String`).
pub(crate) fn random_suffix(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

/// `rand.SafeEncodeString`: maps each byte into the same alphabet.
pub(crate) fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| NAME_ALPHABET[b as usize % NAME_ALPHABET.len()] as char)
        .collect()
}

/// Another face of stored objects (events.k8s.io/v1 Events of v1 Events): how a patch
/// sees the object, and how the patched object is stored.
pub(crate) struct View {
    /// Stored → shown.
    pub to: fn(&Value) -> Value,
    /// Shown → stored.
    pub from: fn(&Value) -> Value,
}

/// Applies a patch of type `ty` to `v`.
///
/// # Errors
/// 400 for a patch of the wrong shape, 422 for a JSON patch that does not apply.
pub(crate) fn apply_patch(v: &mut Value, ty: PatchType, patch: &Value) -> Result<(), ApiError> {
    match ty {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}",
                ));
            }
            json_patch::merge(v, patch);
        }
        PatchType::Strategic => {
            strategic_merge(v, patch).map_err(ApiError::bad_request)?;
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("json: {e}")))?;
            json_patch::patch(v, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
    }
    Ok(())
}

/// 409 for a `uid` precondition that does not hold.
fn uid_precondition_failed(
    d: &crate::resources::ResDef,
    key: &Key,
    want: &str,
    have: &str,
) -> ApiError {
    ApiError::conflict_msg(
        d.plural,
        d.group,
        &key.name,
        &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have}"),
    )
}

/// Compares two objects, ignoring resourceVersion.
fn same_ignoring_rv(a: &Value, b: &Value) -> bool {
    let rv = |v: &Value| get(v, &["metadata", "resourceVersion"]).cloned();
    if rv(a) == rv(b) {
        return a == b;
    }
    let mut b = b.clone();
    match rv(a) {
        Some(r) => set(&mut b, &["metadata", "resourceVersion"], r),
        None => {
            crate::object::remove(&mut b, &["metadata", "resourceVersion"]);
        }
    }
    *a == b
}

impl State {
    /// Creates an object in namespace `ns` ("" for cluster-scoped resources).
    ///
    /// # Errors
    /// 404 for a missing namespace, 403 for a terminating one, 409 AlreadyExists,
    /// 422 Invalid.
    pub(crate) fn create(
        &mut self,
        res: Res,
        ns: &str,
        mut v: Value,
        dry_run: bool,
    ) -> Result<Arc<Obj>, ApiError> {
        let d = res.def();
        if d.namespaced {
            match self.get_nn(Res::Namespace, "", ns) {
                None => return Err(ApiError::not_found("namespaces", "", ns)),
                Some(n) if n.terminating() => {
                    let msg = format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    );
                    let name = get_str(&v, &["metadata", "name"]).unwrap_or("").to_string();
                    let mut e = ApiError::forbidden(d.plural, d.group, &name, &msg);
                    e.body["details"]["causes"] = json!([{
                        "reason": "NamespaceTerminating", "message": msg, "field": "metadata.namespace"}]);
                    return Err(e);
                }
                Some(_) => {}
            }
            set(&mut v, &["metadata", "namespace"], json!(ns));
        } else if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        set(&mut v, &["kind"], json!(d.kind));
        set(&mut v, &["apiVersion"], json!(d.api_version()));
        let mut name = get_str(&v, &["metadata", "name"]).unwrap_or("").to_string();
        if name.is_empty()
            && let Some(prefix) = get_str(&v, &["metadata", "generateName"]).map(str::to_string)
            && !prefix.is_empty()
        {
            loop {
                name = format!("{prefix}{}", random_suffix(5));
                if self.get_nn(res, ns, &name).is_none() {
                    break;
                }
            }
            set(&mut v, &["metadata", "name"], json!(name));
        }
        if res == Res::Node {
            self.kubelet_register(&mut v);
        }
        default_object(res, &mut v);
        validate(res, &v)?;
        if self.get_nn(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(d.plural, d.group, &name));
        }
        let now = rfc3339(self.now());
        stamp_new(res, &mut v, &now, &uuid::Uuid::new_v4().to_string());
        if dry_run {
            return Ok(Arc::new(Obj::new(res, &v)));
        }
        Ok(self.store(res, v))
    }

    /// Replaces an object (PUT), or its status (PUT …/status).
    ///
    /// # Errors
    /// 404, 409 Conflict on a stale `metadata.resourceVersion`, 422 Invalid.
    pub(crate) fn update(
        &mut self,
        res: Res,
        key: &Key,
        new: Value,
        sub: Sub,
        dry_run: bool,
    ) -> Result<Arc<Obj>, ApiError> {
        let d = res.def();
        let Some(old) = self.get(res, key).cloned() else {
            return Err(ApiError::not_found(d.plural, d.group, &key.name));
        };
        let new_rv = get_str(&new, &["metadata", "resourceVersion"]).unwrap_or("");
        if !new_rv.is_empty() && new_rv != old.meta.rv.to_string() {
            return Err(ApiError::conflict(d.plural, d.group, &key.name));
        }
        if let Some(uid) = get_str(&new, &["metadata", "uid"])
            && !uid.is_empty()
            && uid != &*old.meta.uid
        {
            return Err(uid_precondition_failed(d, key, uid, &old.meta.uid));
        }
        let old_v = old.value();
        let mut merged = match sub {
            Sub::Main => {
                let mut m = new;
                if d.has_status {
                    match old_v.get("status") {
                        Some(s) => set(&mut m, &["status"], s.clone()),
                        None => {
                            crate::object::remove(&mut m, &["status"]);
                        }
                    }
                }
                m
            }
            Sub::Status => {
                let mut m = old_v.clone();
                match new.get("status") {
                    Some(s) => set(&mut m, &["status"], s.clone()),
                    None => {
                        crate::object::remove(&mut m, &["status"]);
                    }
                }
                m
            }
        };
        // fields a client cannot change
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "namespace",
        ] {
            match old_v.get("metadata").and_then(|m| m.get(f)) {
                Some(x) => set(&mut merged, &["metadata", f], x.clone()),
                None => {
                    crate::object::remove(&mut merged, &["metadata", f]);
                }
            }
        }
        set(&mut merged, &["kind"], json!(d.kind));
        set(&mut merged, &["apiVersion"], json!(d.api_version()));
        set(
            &mut merged,
            &["metadata", "resourceVersion"],
            json!(old.meta.rv.to_string()),
        );
        if sub == Sub::Main && res != Res::Pod {
            default_object(res, &mut merged);
        }
        validate(res, &merged)?;
        validate_update(res, &old_v, &merged)?;
        if d.generation && old_v.get("spec") != merged.get("spec") {
            let g = old.meta.generation.max(1) + 1;
            set(&mut merged, &["metadata", "generation"], json!(g));
        }
        if same_ignoring_rv(&old_v, &merged) {
            return Ok(old);
        }
        if dry_run {
            return Ok(Arc::new(Obj::new(res, &merged)));
        }
        Ok(self.store_checking_finalizers(res, key, merged))
    }

    /// Stores an object, or removes it when it is terminating and its last finalizer is
    /// gone.
    fn store_checking_finalizers(&mut self, res: Res, key: &Key, v: Value) -> Arc<Obj> {
        let terminating = get(&v, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null());
        let finalizers = get(&v, &["metadata", "finalizers"])
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let pod_done = res != Res::Pod || self.pods_terminated.contains(key);
        if terminating && !finalizers && pod_done && res != Res::Namespace {
            self.store(res, v);
            return self.purge(res, key).expect("just stored");
        }
        self.store(res, v)
    }

    /// Applies a patch (PATCH, PATCH …/status).
    ///
    /// # Errors
    /// 404, 409 when the patch carries a stale resourceVersion, 400/422 for a bad patch,
    /// and the errors of [`State::update`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        res: Res,
        key: &Key,
        ty: PatchType,
        patch: &Value,
        sub: Sub,
        dry_run: bool,
        view: Option<&View>,
    ) -> Result<Arc<Obj>, ApiError> {
        let d = res.def();
        let Some(old) = self.get(res, key).cloned() else {
            return Err(ApiError::not_found(d.plural, d.group, &key.name));
        };
        let mut v = match view {
            Some(view) => (view.to)(&old.value()),
            None => old.value(),
        };
        apply_patch(&mut v, ty, patch)?;
        if let Some(view) = view {
            v = (view.from)(&v);
        }
        let rv = get_str(&v, &["metadata", "resourceVersion"]).unwrap_or("");
        if !rv.is_empty() && rv != old.meta.rv.to_string() {
            return Err(ApiError::conflict(d.plural, d.group, &key.name));
        }
        set(
            &mut v,
            &["metadata", "resourceVersion"],
            json!(old.meta.rv.to_string()),
        );
        self.update(res, key, v, sub, dry_run)
    }

    /// Deletes an object: pods gracefully (`deletionTimestamp` now, removal by the kubelet
    /// after the grace period; at once when unbound, terminal or grace 0), objects with
    /// finalizers when their finalizers are gone, namespaces after their content, nodes
    /// with their pods (the pod garbage collector's job), and dependents per
    /// `propagationPolicy`.
    ///
    /// # Errors
    /// 404, 409 when a precondition fails.
    pub(crate) fn delete(
        &mut self,
        res: Res,
        key: &Key,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let d = res.def();
        let Some(obj) = self.get(res, key).cloned() else {
            return Err(ApiError::not_found(d.plural, d.group, &key.name));
        };
        if let Some(uid) = &opts.uid
            && uid != &*obj.meta.uid
        {
            return Err(uid_precondition_failed(d, key, uid, &obj.meta.uid));
        }
        if let Some(rv) = &opts.rv
            && rv != &obj.meta.rv.to_string()
        {
            return Err(ApiError::conflict_msg(
                d.plural,
                d.group,
                &key.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    obj.meta.rv
                ),
            ));
        }
        if opts.dry_run {
            return Ok(Deleted::Pending(obj));
        }
        let now = self.now();
        if res == Res::Pod {
            let p = obj.pod();
            let mut grace = opts.grace.unwrap_or(p.grace).max(0);
            if p.node.is_none() || matches!(p.phase, Phase::Succeeded | Phase::Failed) {
                grace = 0;
            }
            if let Some(del) = obj.meta.deletion {
                // already terminating: a shorter grace period may cut it short
                let new_end = add_secs(now, grace as f64);
                if grace == 0 {
                    self.pods_terminated.insert(key.clone());
                    if !obj.meta.has_finalizers {
                        return Ok(Deleted::Gone(self.purge(res, key).expect("exists")));
                    }
                } else if new_end < del {
                    let o = self.modify(res, key, |v| {
                        set(
                            v,
                            &["metadata", "deletionTimestamp"],
                            json!(rfc3339(new_end)),
                        );
                        set(v, &["metadata", "deletionGracePeriodSeconds"], json!(grace));
                    });
                    return Ok(Deleted::Pending(o.unwrap_or(obj)));
                }
                return Ok(Deleted::Pending(obj));
            }
            if grace == 0 {
                self.pods_terminated.insert(key.clone());
                if !obj.meta.has_finalizers {
                    return Ok(Deleted::Gone(self.purge(res, key).expect("exists")));
                }
            }
            let end = add_secs(now, grace as f64);
            let o = self
                .modify(res, key, |v| {
                    set(v, &["metadata", "deletionTimestamp"], json!(rfc3339(end)));
                    set(v, &["metadata", "deletionGracePeriodSeconds"], json!(grace));
                })
                .expect("exists");
            return Ok(Deleted::Pending(o));
        }
        if obj.terminating() {
            return Ok(Deleted::Pending(obj));
        }
        let propagation = opts.propagation.unwrap_or(Propagation::Background);
        let has_dependents = self.by_owner.contains_key(&obj.meta.uid);
        if propagation == Propagation::Orphan && has_dependents {
            let uid = obj.meta.uid.clone();
            for (r, k) in self.owned(&uid) {
                self.modify(r, &k, |v| {
                    if let Some(refs) = v
                        .get_mut("metadata")
                        .and_then(|m| m.get_mut("ownerReferences"))
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(&*uid));
                        if refs.is_empty() {
                            crate::object::remove(v, &["metadata", "ownerReferences"]);
                        }
                    }
                });
            }
        }
        let stamp = rfc3339(now);
        if res == Res::Namespace {
            let o = self
                .modify(res, key, |v| {
                    set(v, &["metadata", "deletionTimestamp"], json!(stamp));
                    set(v, &["metadata", "deletionGracePeriodSeconds"], json!(0));
                    set(v, &["status", "phase"], json!("Terminating"));
                })
                .expect("exists");
            return Ok(Deleted::Pending(o));
        }
        if propagation == Propagation::Foreground && has_dependents {
            let o = self
                .modify(res, key, |v| {
                    set(v, &["metadata", "deletionTimestamp"], json!(stamp));
                    set(v, &["metadata", "deletionGracePeriodSeconds"], json!(0));
                    let f = obj_mut(v, &["metadata"])
                        .entry("finalizers")
                        .or_insert_with(|| json!([]));
                    if let Some(a) = f.as_array_mut()
                        && !a.iter().any(|x| x == "foregroundDeletion")
                    {
                        a.push(json!("foregroundDeletion"));
                    }
                })
                .expect("exists");
            self.dirty
                .foreground
                .insert(obj.meta.uid.clone(), (res, key.clone()));
            self.dirty.gc.push(obj.meta.uid.clone());
            return Ok(Deleted::Pending(o));
        }
        if obj.meta.has_finalizers {
            let o = self
                .modify(res, key, |v| {
                    set(v, &["metadata", "deletionTimestamp"], json!(stamp));
                    set(v, &["metadata", "deletionGracePeriodSeconds"], json!(0));
                })
                .expect("exists");
            return Ok(Deleted::Pending(o));
        }
        if res == Res::Node {
            // the pod garbage collector deletes the pods of a node that is gone
            for p in self.pods_on(&key.name) {
                self.pods_terminated.insert(p.meta.key.clone());
                if p.meta.has_finalizers {
                    self.modify(Res::Pod, &p.meta.key, |v| {
                        set(v, &["metadata", "deletionTimestamp"], json!(stamp));
                        set(v, &["metadata", "deletionGracePeriodSeconds"], json!(0));
                    });
                } else {
                    self.purge(Res::Pod, &p.meta.key);
                }
            }
        }
        Ok(Deleted::Gone(self.purge(res, key).expect("exists")))
    }

    /// A controller's write: applies `f` to the object and stores it if anything changed
    /// (bumping `metadata.generation` when the spec did). Returns the current object, or
    /// `None` if it does not exist.
    pub(crate) fn modify(
        &mut self,
        res: Res,
        key: &Key,
        f: impl FnOnce(&mut Value),
    ) -> Option<Arc<Obj>> {
        let old = self.get(res, key)?.clone();
        let mut v = old.value();
        let spec_before = if res.def().generation {
            v.get("spec").cloned()
        } else {
            None
        };
        f(&mut v);
        // unchanged? (serialization is deterministic: maps are sorted)
        if serde_json::to_vec(&v).is_ok_and(|b| b == old.bytes) {
            return Some(old);
        }
        if res.def().generation && v.get("spec") != spec_before.as_ref() {
            set(
                &mut v,
                &["metadata", "generation"],
                json!(old.meta.generation.max(1) + 1),
            );
        }
        Some(self.store_checking_finalizers(res, key, v))
    }
}
