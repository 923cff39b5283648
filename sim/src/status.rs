//! `Status` error bodies, with the reasons and codes of k8s.io/apimachinery's
//! `pkg/api/errors` (`NewNotFound`, `NewConflict`, `NewInvalid`, …).

use serde_json::{Value, json};

/// An API error: the HTTP code and the `Status` object the API server sends with it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `Status` object.
    pub body: Value,
    /// `Retry-After` header, in seconds.
    pub retry_after: Option<u32>,
}

/// The `resource.group` form of a resource in messages (`pods`, `deployments.apps`).
pub(crate) fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    /// A `Status` with `status: Failure`.
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message.into(),
            "code": code,
        });
        if !reason.is_empty() {
            body["reason"] = json!(reason);
        }
        ApiError {
            code,
            body,
            retry_after: None,
        }
    }

    /// Adds `details` to the status.
    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.body["details"] = details;
        self
    }

    /// 404 `<resource> "<name>" not found`.
    pub(crate) fn not_found(resource: &str, group: &str, name: &str) -> Self {
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(details)
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn no_such_resource() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 `<resource> "<name>" already exists`.
    pub(crate) fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(details)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub(crate) fn conflict(resource: &str, group: &str, name: &str) -> Self {
        Self::conflict_msg(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict with a message.
    pub(crate) fn conflict_msg(resource: &str, group: &str, name: &str, why: &str) -> Self {
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(resource, group)
            ),
        )
        .with_details(details)
    }

    /// 422 `<Kind> "<name>" is invalid: <field>: <detail>`.
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, causes: &[FieldError]) -> Self {
        let list: Vec<String> = causes.iter().map(FieldError::render).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut details = json!({
            "name": name,
            "kind": kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.reason, "message": c.detail_message(), "field": c.field,
            })).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{kind}{} \"{name}\" is invalid: {joined}",
                group_suffix(group)
            ),
        )
        .with_details(details)
    }

    /// 400 BadRequest.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub(crate) fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub(crate) fn forbidden(resource: &str, group: &str, name: &str, why: &str) -> Self {
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        let what = if name.is_empty() {
            qualified(resource, group)
        } else {
            format!("{} \"{name}\"", qualified(resource, group))
        };
        ApiError::new(403, "Forbidden", format!("{what} is forbidden: {why}")).with_details(details)
    }

    /// 405 MethodNotAllowed.
    pub(crate) fn method_not_allowed(verb: &str, resource: &str, group: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                qualified(resource, group)
            ),
        )
        .with_details(json!({"kind": qualified(resource, group)}))
    }

    /// 415 UnsupportedMediaType.
    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 500 InternalError.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    /// 410 Expired (a watch or continue token too old).
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// 429 TooManyRequests, optionally with `Retry-After`.
    pub(crate) fn too_many_requests(message: impl Into<String>, retry_after: Option<u32>) -> Self {
        let mut e = ApiError::new(429, "TooManyRequests", message);
        if let Some(s) = retry_after {
            e.body["details"] = json!({"retryAfterSeconds": s});
            e.retry_after = Some(s);
        }
        e
    }

    /// The serialized body.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

fn group_suffix(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
}

/// One field error of an Invalid status (k8s.io/apimachinery `field.Error`).
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueForbidden`, …
    pub reason: &'static str,
    /// The field path (`spec.containers`).
    pub field: String,
    /// The offending value, shown for Invalid.
    pub value: Option<String>,
    /// Extra detail.
    pub detail: String,
}

impl FieldError {
    /// `Required value`.
    pub(crate) fn required(field: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueRequired",
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// `Invalid value`.
    pub(crate) fn invalid(field: &str, value: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// `Forbidden`.
    pub(crate) fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    fn type_text(&self) -> &'static str {
        match self.reason {
            "FieldValueRequired" => "Required value",
            "FieldValueInvalid" => "Invalid value",
            "FieldValueForbidden" => "Forbidden",
            "FieldValueDuplicate" => "Duplicate value",
            _ => "Invalid value",
        }
    }

    fn detail_message(&self) -> String {
        match (&self.value, self.detail.is_empty()) {
            (Some(v), false) => format!("{}: {v:?}: {}", self.type_text(), self.detail),
            (Some(v), true) => format!("{}: {v:?}", self.type_text()),
            (None, false) => format!("{}: {}", self.type_text(), self.detail),
            (None, true) => self.type_text().to_string(),
        }
    }

    fn render(&self) -> String {
        format!("{}: {}", self.field, self.detail_message())
    }
}

/// `{"kind":"Status",…,"status":"Success","code":N}` (with optional details).
pub(crate) fn success(code: u16, details: Option<Value>) -> Value {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    v["code"] = json!(code);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_reason_code_and_details() {
        let e = ApiError::not_found("deployments", "apps", "web");
        assert_eq!(e.code, 404);
        assert_eq!(e.body["reason"], "NotFound");
        assert_eq!(e.body["message"], "deployments.apps \"web\" not found");
        assert_eq!(e.body["details"]["group"], "apps");
        let e = ApiError::invalid(
            "Pod",
            "",
            "p",
            &[FieldError::required("spec.containers", "")],
        );
        assert_eq!(
            e.body["message"],
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        let e = ApiError::too_many_requests("slow down", Some(10));
        assert_eq!(e.retry_after, Some(10));
        assert_eq!(e.body["details"]["retryAfterSeconds"], 10);
    }

    #[test]
    fn success_matches_the_eviction_body() {
        let s = serde_json::to_string(&success(201, None)).unwrap();
        // BTreeMap order, same fields as the API server's
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201})
        );
    }
}
