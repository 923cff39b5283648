//! Query parameters of list and watch requests: selectors, paging tokens.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use serde_json::json;

use crate::object::{Key, Obj, field_supported};
use crate::resources::{Res, ResDef};
use crate::selector::{FieldSelector, Selector};
use crate::status::ApiError;

/// Parsed query parameters (the last value of a repeated parameter wins).
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub(crate) fn parse(q: &str) -> Query {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A parameter.
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter (`true`, `1`).
    pub(crate) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    /// `dryRun=All`.
    pub(crate) fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| !v.is_empty())
    }
}

/// Which objects a list or watch returns.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// The resource.
    pub res: Res,
    /// Namespace (None: all).
    pub ns: Option<Arc<str>>,
    /// Label selector.
    pub labels: Selector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// From the request.
    ///
    /// # Errors
    /// 400 BadRequest for a selector that does not parse or a field the resource does not
    /// support, with the API server's messages.
    pub(crate) fn new(def: &ResDef, ns: Option<&str>, q: &Query) -> Result<Filter, ApiError> {
        let labels =
            Selector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
        let fs_text = q.get("fieldSelector").unwrap_or("");
        let fields = FieldSelector::parse(fs_text).map_err(ApiError::bad_request)?;
        for t in &fields.terms {
            if !field_supported(def.res, &t.field) {
                let gv = if def.group.is_empty() {
                    format!("/{}", def.version)
                } else {
                    format!("{}/{}", def.group, def.version)
                };
                return Err(ApiError::bad_request(format!(
                    "Unable to find \"{gv}, Resource={}\" that match label selector \"{}\", field selector \"{fs_text}\": field label not supported: {}",
                    def.plural,
                    q.get("labelSelector").unwrap_or(""),
                    t.field
                )));
            }
        }
        let mut fields = fields;
        if def.res == Res::EventV1 {
            for t in &mut fields.terms {
                t.field = crate::events::core_field(&t.field);
            }
        }
        Ok(Filter {
            res: def.res.storage(),
            ns: ns.map(Into::into),
            labels,
            fields,
        })
    }

    /// Whether `o` is selected.
    pub(crate) fn matches(&self, o: &Obj) -> bool {
        if let Some(ns) = &self.ns
            && o.ns() != &**ns
        {
            return false;
        }
        if !self.labels.matches(o) {
            return false;
        }
        self.fields.terms.iter().all(|t| {
            let v = o.field(self.res, &t.field).unwrap_or_default();
            (v == t.value) == t.equal
        })
    }
}

/// A `continue` token: the list's resourceVersion and the last key returned.
pub(crate) fn encode_continue(rv: u64, last: &Key) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "ns": &*last.ns, "name": &*last.name});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Reads a `continue` token.
///
/// # Errors
/// 400 `continue key is not valid`.
pub(crate) fn decode_continue(token: &str) -> Result<(u64, Key), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let ns = v["ns"].as_str().ok_or_else(bad)?;
    let name = v["name"].as_str().ok_or_else(bad)?;
    Ok((rv, Key::new(ns, name)))
}
