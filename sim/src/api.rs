//! Request handling: routing of Kubernetes API paths, authentication (one bearer token),
//! injected faults, the verbs on every resource and subresource, content negotiation
//! (JSON, `Table`, `PartialObjectMetadata`), and the audit log.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::clock::rfc3339_micro;
use crate::faults::Injected;
use crate::object::{Key, Obj, get, get_str, set};
use crate::ops::{DeleteOpts, Deleted, PatchType, Propagation, Sub};
use crate::query::{Filter, Query, decode_continue, encode_continue};
use crate::resources::{self, Res, ResDef};
use crate::server::{Body, Shared, full};
use crate::stats::AuditEntry;
use crate::status::{ApiError, success};
use crate::table::{partial_metadata, table};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest request body accepted (the API server's limit is 3 MiB per object).
const MAX_BODY: usize = 16 << 20;

/// A route.
#[derive(Debug)]
enum Route {
    Health,
    /// `/openapi/v2`, `/openapi/v3`: documents without definitions (kubectl skips client
    /// validation of kinds it finds no schema for)
    OpenApi(bool),
    Version,
    Api,
    Apis,
    ApiGroup(&'static str, &'static str),
    ResourceList(String, String),
    Res {
        def: &'static ResDef,
        ns: Option<String>,
        name: Option<String>,
        sub: Option<String>,
        watch: bool,
    },
    Sim(Vec<String>),
    /// a known group-version, an unknown resource
    NoResource,
    /// nothing served here
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["version"] => Route::Version,
        ["openapi", "v2"] => Route::OpenApi(false),
        ["openapi", "v3", ..] => Route::OpenApi(true),
        ["api"] => Route::Api,
        ["apis"] => Route::Apis,
        ["sim", "v1", rest @ ..] => Route::Sim(rest.iter().map(|x| x.to_string()).collect()),
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis", g] => match resources::GROUPS.iter().find(|(gg, _)| gg == g) {
            Some((g, v)) => Route::ApiGroup(g, v),
            None => Route::NotFound,
        },
        ["apis", g, v, rest @ ..] => {
            if resources::GROUPS.iter().any(|(gg, vv)| gg == g && vv == v) {
                resource_route(g, v, rest)
            } else {
                Route::NotFound
            }
        }
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut rest = rest;
    let mut watch = false;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    let find = |p: &str| ResDef::find(group, version, p);
    let r = |def: Option<&'static ResDef>,
             ns: Option<&str>,
             name: Option<&str>,
             sub: Option<&str>| match def {
        Some(def) => Route::Res {
            def,
            ns: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
            watch,
        },
        None => Route::NoResource,
    };
    match rest {
        [] if !watch => Route::ResourceList(group.into(), version.into()),
        ["namespaces", ns, sub] if group.is_empty() && matches!(*sub, "status" | "finalize") => {
            r(find("namespaces"), None, Some(ns), Some(sub))
        }
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|d| d.namespaced) => {
            match tail {
                [] => r(find(plural), Some(ns), None, None),
                [name] => r(find(plural), Some(ns), Some(name), None),
                [name, sub] => r(find(plural), Some(ns), Some(name), Some(sub)),
                _ => Route::NoResource,
            }
        }
        ["namespaces", _, _, ..] => Route::NoResource,
        [plural] => r(find(plural), None, None, None),
        [plural, name] => match find(plural) {
            Some(d) if !d.namespaced => r(Some(d), None, Some(name), None),
            _ => Route::NoResource,
        },
        [plural, name, sub] => match find(plural) {
            Some(d) if !d.namespaced => r(Some(d), None, Some(name), Some(sub)),
            _ => Route::NoResource,
        },
        _ => Route::NoResource,
    }
}

use crate::api_reply::Reply;

/// What the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Table,
    Metadata,
}

impl Format {
    fn render(self) -> crate::watch::Render {
        match self {
            Format::Json => crate::watch::Render::Stored,
            Format::Table => crate::watch::Render::Table,
            Format::Metadata => crate::watch::Render::Metadata,
        }
    }
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.is_empty() {
        return Ok(Format::Json);
    }
    let mut json_ok = false;
    for part in accept.split(',') {
        let part = part.trim();
        let mut params = part.split(';').map(str::trim);
        let mt = params.next().unwrap_or("");
        let params: Vec<&str> = params.collect();
        let has = |p: &str| params.iter().any(|x| x.replace(' ', "") == p);
        if mt == "application/json" || mt == "*/*" || mt == "application/*" {
            if has("as=Table") && has("g=meta.k8s.io") {
                return Ok(Format::Table);
            }
            if (has("as=PartialObjectMetadata") || has("as=PartialObjectMetadataList"))
                && has("g=meta.k8s.io")
            {
                return Ok(Format::Metadata);
            }
            if params.iter().all(|p| !p.starts_with("as=")) {
                json_ok = true;
            }
        }
    }
    if json_ok {
        Ok(Format::Json)
    } else {
        Err(ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ))
    }
}

/// The Kubernetes verb of a request.
fn verb_of(method: &Method, route: &Route, q: &Query) -> String {
    match route {
        Route::Res { name, watch, .. } => match *method {
            Method::GET if *watch || q.flag("watch") => "watch",
            Method::GET if name.is_none() => "list",
            Method::GET => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_none() => "deletecollection",
            Method::DELETE => "delete",
            _ => "unknown",
        }
        .into(),
        _ => method.as_str().to_lowercase(),
    }
}

/// Handles one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let t0 = Instant::now();
    let wall_ms = shared.clock.wall_ms();
    let time = rfc3339_micro(shared.clock.now());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let q = Query::parse(&query);
    let route = route(&path);
    let verb = verb_of(&parts.method, &route, &q);
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.token);
    if let Route::Sim(segs) = &route {
        let reply = if !authorized {
            ApiError::unauthorized().into()
        } else {
            let body = read_body(body).await.unwrap_or_default();
            crate::sim_api::handle(&shared, &parts.method, segs, &body)
        };
        return Ok(respond(reply));
    }
    let (resource, api_group, namespace, name, subresource) = match &route {
        Route::Res {
            def, ns, name, sub, ..
        } => (
            def.plural.to_string(),
            def.group.to_string(),
            ns.clone().unwrap_or_default(),
            name.clone().unwrap_or_default(),
            sub.clone().unwrap_or_default(),
        ),
        _ => Default::default(),
    };
    let mut entry = AuditEntry {
        time,
        wall_ms,
        latency_us: 0,
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        verb: verb.clone(),
        path,
        query,
        code: 0,
        api_group,
        resource: resource.clone(),
        namespace,
        name,
        subresource: subresource.clone(),
        fault: None,
    };
    let public = matches!(route, Route::Health | Route::Version);
    let reply = if !public && !authorized {
        ApiError::unauthorized().into()
    } else {
        let fault_resource = if subresource.is_empty() {
            resource.clone()
        } else {
            format!("{resource}/{subresource}")
        };
        let injected = if matches!(route, Route::Res { .. }) {
            shared.dice.lock().roll(&verb, &fault_resource)
        } else {
            None
        };
        match injected {
            Some(Injected::Drop) => {
                entry.fault = Some("drop".into());
                entry.latency_us = t0.elapsed().as_micros() as u64;
                shared.audit.lock().record(entry, true);
                return Err("kbg-sim: injected fault: connection dropped".into());
            }
            Some(f @ Injected::Error500) => {
                entry.fault = Some(f.as_str().into());
                ApiError::internal("injected fault (kbg-sim)").into()
            }
            Some(f @ Injected::Error429(s)) => {
                entry.fault = Some(f.as_str().into());
                ApiError::too_many_requests(
                    "the server has received too many requests and has asked us to try again later",
                    Some(s),
                )
                .into()
            }
            None => match read_body(body).await {
                Ok(b) => dispatch(&shared, &parts.method, &parts.headers, route, &q, b),
                Err(e) => e.into(),
            },
        }
    };
    entry.code = reply.code;
    entry.latency_us = t0.elapsed().as_micros() as u64;
    shared.audit.lock().record(entry, true);
    Ok(respond(reply))
}

fn respond(r: Reply) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(r.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, r.content_type)
        .header(header::CACHE_CONTROL, "no-cache, private");
    if let Some(s) = r.retry_after {
        b = b.header(header::RETRY_AFTER, s.to_string());
    }
    b.body(r.body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body could not be read: {e}"),
        )),
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    route: Route,
    q: &Query,
    body: Bytes,
) -> Reply {
    match route {
        Route::Health => Reply::text(200, "ok"),
        Route::OpenApi(v3) => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if v3 {
                Reply::json(200, &json!({"paths": {}}))
            } else if accept.contains("protobuf") {
                // an empty protobuf message: an OpenAPI document with no definitions
                let mut r = Reply::bytes(200, Bytes::new());
                r.content_type =
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf".into();
                r
            } else {
                let version = shared.read(|st| st.apiserver_version());
                Reply::json(
                    200,
                    &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version},
                            "paths": {}, "definitions": {}}),
                )
            }
        }
        Route::Version => {
            let v = shared.read(|st| st.apiserver_version());
            Reply::json(200, &crate::version::version_info(&v))
        }
        Route::Api => Reply::json(200, &resources::api_versions(&shared.server_address)),
        Route::Apis => Reply::json(200, &resources::api_group_list()),
        Route::ApiGroup(g, v) => Reply::json(200, &resources::api_group(g, v)),
        Route::ResourceList(g, v) => match resources::api_resource_list(&g, &v) {
            Some(l) => Reply::json(200, &l),
            None => Reply::text(404, "404 page not found"),
        },
        Route::NotFound => Reply::text(404, "404 page not found"),
        Route::NoResource => ApiError::no_such_resource().into(),
        Route::Sim(_) => unreachable!("handled before"),
        Route::Res {
            def,
            ns,
            name,
            sub,
            watch,
        } => match resource(shared, method, headers, def, ns, name, sub, watch, q, &body) {
            Ok(r) => r,
            Err(e) => e.into(),
        },
    }
}

fn parse_json(body: &[u8], def: &ResDef) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let summary = if body.is_empty() {
            "<empty>".to_string()
        } else if body.len() > 30 {
            format!("{} ...", String::from_utf8_lossy(&body[..30]))
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e} ({summary})",
            def.kind
        ))
    })
}

/// Checks `kind` and `apiVersion` of a body.
fn check_kind(v: &Value, def: &ResDef, kinds: &[(&str, &str)]) -> Result<(), ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): json: cannot unmarshal {} into Go value of type struct",
            def.kind,
            match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => "null",
            }
        )));
    }
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    // a missing kind or apiVersion defaults to the URL's, as the API server's decoder
    // does (kube-rs sends evictions without them)
    if !kinds
        .iter()
        .any(|(k, a)| (kind.is_empty() || *k == kind) && (api.is_empty() || *a == api))
    {
        return Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {}: no kind {kind:?} is registered for version {api:?} in scheme",
            api.rsplit('/').next().unwrap_or(""),
            kinds.first().map_or(def.kind, |k| k.0),
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    def: &'static ResDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    watch: bool,
    q: &Query,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let format = format_of(headers)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if !body.is_empty()
        && *method != Method::PATCH
        && !matches!(ct.as_str(), "application/json" | "" | "*/*")
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
            ),
        ));
    }
    let ns_str = ns.clone().unwrap_or_default();
    let qualified = crate::status::qualified(def.plural, def.group);
    // events.k8s.io/v1 Events are v1 Events seen differently
    let store = def.res.storage();
    let view = (def.res == Res::EventV1).then_some(&EVENTS_VIEW);
    let incoming = |v: Value| match view {
        Some(view) => (view.from)(&v),
        None => v,
    };
    match (name.as_deref(), sub.as_deref()) {
        (None, None) => {
            let filter = Filter::new(def, ns.as_deref(), q)?;
            match *method {
                Method::GET if watch || q.flag("watch") => {
                    let b = crate::watch::watch(shared, def, filter, q, format.render())?;
                    Ok(Reply {
                        code: 200,
                        body: b,
                        content_type: "application/json".into(),
                        retry_after: None,
                    })
                }
                Method::GET => list(shared, def, filter, q, format),
                Method::POST => {
                    if !def.namespaced || ns.is_some() {
                        let v = parse_json(body, def)?;
                        check_kind(&v, def, &[(def.kind, &def.api_version())])?;
                        if def.namespaced
                            && let Some(bns) = get_str(&v, &["metadata", "namespace"])
                            && !bns.is_empty()
                            && bns != ns_str
                        {
                            return Err(ApiError::bad_request(
                                "the namespace of the provided object does not match the namespace sent on the request",
                            ));
                        }
                        let v = incoming(v);
                        let o = shared.write(|st| st.create(store, &ns_str, v, q.dry_run()))?;
                        Ok(object_reply(201, def, &o, format, shared))
                    } else {
                        Err(ApiError::method_not_allowed(
                            "create", def.plural, def.group,
                        ))
                    }
                }
                Method::DELETE => delete_collection(shared, def, filter, q, body),
                _ => Err(ApiError::method_not_allowed(
                    method.as_str(),
                    def.plural,
                    def.group,
                )),
            }
        }
        (Some(name), sub) => {
            let key = Key::new(&ns_str, name);
            match (sub, method.clone()) {
                (None, Method::GET) | (Some("status"), Method::GET) => {
                    if watch || q.flag("watch") {
                        let mut q2 = q.clone();
                        q2.0.insert("fieldSelector".into(), format!("metadata.name={name}"));
                        let filter = Filter::new(def, ns.as_deref(), &q2)?;
                        let b = crate::watch::watch(shared, def, filter, &q2, format.render())?;
                        return Ok(Reply {
                            code: 200,
                            body: b,
                            content_type: "application/json".into(),
                            retry_after: None,
                        });
                    }
                    let o = shared
                        .read(|st| st.get(store, &key).cloned())
                        .ok_or_else(|| ApiError::not_found(def.plural, def.group, name))?;
                    Ok(object_reply(200, def, &o, format, shared))
                }
                (None | Some("status"), Method::PUT) => {
                    let v = parse_json(body, def)?;
                    check_kind(&v, def, &[(def.kind, &def.api_version())])?;
                    let bname = get_str(&v, &["metadata", "name"]).unwrap_or("");
                    if bname != name {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({bname}) does not match the name on the URL ({name})"
                        )));
                    }
                    if let Some(bns) = get_str(&v, &["metadata", "namespace"])
                        && !bns.is_empty()
                        && bns != ns_str
                    {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    let which = which_part(def, sub)?;
                    let v = incoming(v);
                    let o = shared.write(|st| st.update(store, &key, v, which, q.dry_run()))?;
                    Ok(object_reply(200, def, &o, format, shared))
                }
                (None | Some("status"), Method::PATCH) => {
                    let ty = patch_type(&ct)?;
                    let patch: Value = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                    let which = which_part(def, sub)?;
                    let o = shared
                        .write(|st| st.patch(store, &key, ty, &patch, which, q.dry_run(), view))?;
                    Ok(object_reply(200, def, &o, format, shared))
                }
                (None, Method::DELETE) => {
                    let opts = delete_opts(body, q)?;
                    let res = store;
                    let outcome = shared.write(|st| {
                        if matches!(res, Res::Pod | Res::Node) {
                            st.tx.client_action = true;
                        }
                        let r = st.delete(res, &key, &opts);
                        if res == Res::Pod && r.is_ok() && !opts.dry_run {
                            st.counters.pods_deleted += 1;
                        }
                        r
                    })?;
                    Ok(match outcome {
                        Deleted::Pending(o) => object_reply(200, def, &o, format, shared),
                        Deleted::Gone(o) if def.res == Res::Pod => {
                            object_reply(200, def, &o, format, shared)
                        }
                        Deleted::Gone(o) => {
                            let mut details =
                                json!({"name": name, "kind": def.plural, "uid": &*o.meta.uid});
                            if !def.group.is_empty() {
                                details["group"] = json!(def.group);
                            }
                            Reply::json(200, &success(200, Some(details)))
                        }
                    })
                }
                (Some("eviction"), Method::POST) if def.res == Res::Pod => {
                    let v: Value = serde_json::from_slice(body).map_err(|e| {
                        ApiError::bad_request(format!(
                            "the object provided is unrecognized (must be of type Eviction): couldn't get version/kind; json parse error: {e}"
                        ))
                    })?;
                    check_kind(
                        &v,
                        def,
                        &[("Eviction", "policy/v1"), ("Eviction", "policy/v1beta1")],
                    )?;
                    shared.write(|st| {
                        st.tx.client_action = true;
                        st.evict(&key, &v)
                    })?;
                    Ok(Reply::json(201, &success(201, None)))
                }
                (Some("binding"), Method::POST) if def.res == Res::Pod => {
                    let v: Value = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
                    check_kind(&v, def, &[("Binding", "v1")])?;
                    let target = get_str(&v, &["target", "name"]).unwrap_or("").to_string();
                    shared.write(|st| bind(st, &key, &target))?;
                    Ok(Reply::json(201, &success(201, None)))
                }
                (Some("scale"), m) if def.has_scale => scale(shared, def, &key, m, &ct, body),
                (Some("log"), Method::GET) if def.res == Res::Pod => {
                    // simulated containers write nothing
                    shared
                        .read(|st| st.get(Res::Pod, &key).cloned())
                        .ok_or_else(|| ApiError::not_found("pods", "", name))?;
                    Ok(Reply::text(200, ""))
                }
                (Some("finalize"), Method::PUT) if def.res == Res::Namespace => {
                    let v = parse_json(body, def)?;
                    let fin = get(&v, &["spec", "finalizers"])
                        .cloned()
                        .unwrap_or(json!([]));
                    let o = shared.write(|st| {
                        let o = st
                            .modify(Res::Namespace, &key, |n| {
                                set(n, &["spec", "finalizers"], fin)
                            })
                            .ok_or_else(|| ApiError::not_found("namespaces", "", &key.name))?;
                        if o.terminating() {
                            st.dirty.namespaces.insert(key.clone());
                        }
                        Ok::<_, ApiError>(o)
                    })?;
                    Ok(object_reply(200, def, &o, format, shared))
                }
                (None, m) => Err(ApiError::method_not_allowed(
                    &m.as_str().to_lowercase(),
                    def.plural,
                    def.group,
                )),
                (Some(s), m) => {
                    if matches!(s, "status" | "eviction" | "binding" | "scale" | "finalize") {
                        Err(ApiError::method_not_allowed(
                            &m.as_str().to_lowercase(),
                            &format!("{qualified}/{s}"),
                            "",
                        ))
                    } else {
                        Err(ApiError::no_such_resource())
                    }
                }
            }
        }
        (None, Some(_)) => Err(ApiError::no_such_resource()),
    }
}

/// The main resource or its `/status`.
fn which_part(def: &ResDef, sub: Option<&str>) -> Result<Sub, ApiError> {
    match sub {
        None => Ok(Sub::Main),
        Some(_) if def.has_status => Ok(Sub::Status),
        Some(_) => Err(ApiError::no_such_resource()),
    }
}

fn patch_type(ct: &str) -> Result<PatchType, ApiError> {
    match ct {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "server-side apply is not supported by kbg-sim",
        )),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn delete_opts(body: &[u8], q: &Query) -> Result<DeleteOpts, ApiError> {
    let mut opts = if body.iter().any(|b| !b.is_ascii_whitespace()) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
        DeleteOpts::from_value(&v)?
    } else {
        DeleteOpts::default()
    };
    if let Some(g) = q.get("gracePeriodSeconds").and_then(|s| s.parse().ok()) {
        opts.grace = Some(g);
    }
    match q.get("propagationPolicy") {
        Some("Orphan") => opts.propagation = Some(Propagation::Orphan),
        Some("Background") => opts.propagation = Some(Propagation::Background),
        Some("Foreground") => opts.propagation = Some(Propagation::Foreground),
        _ => {}
    }
    match q.get("orphanDependents") {
        Some("true") => opts.propagation = Some(Propagation::Orphan),
        Some("false") if opts.propagation.is_none() => {
            opts.propagation = Some(Propagation::Background)
        }
        _ => {}
    }
    if q.dry_run() {
        opts.dry_run = true;
    }
    Ok(opts)
}

/// How events.k8s.io/v1 shows stored v1 Events.
static EVENTS_VIEW: crate::ops::View = crate::ops::View {
    to: crate::events::to_events_v1,
    from: crate::events::to_core,
};

/// The bytes of an object as resource `def` shows it.
pub(crate) fn shown(def: &ResDef, o: &Obj) -> Bytes {
    if def.res == Res::EventV1 {
        Bytes::from(
            serde_json::to_vec(&crate::events::to_events_v1(&o.value())).unwrap_or_default(),
        )
    } else {
        o.bytes.clone()
    }
}

fn object_reply(code: u16, def: &ResDef, o: &Arc<Obj>, format: Format, shared: &Shared) -> Reply {
    match format {
        Format::Json => Reply::bytes(code, shown(def, o)),
        Format::Metadata => {
            let mut r = Reply::json(code, &partial_metadata(&o.value()));
            r.content_type = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io".into();
            r
        }
        Format::Table => {
            let t = table(
                def.res,
                std::slice::from_ref(o),
                shared.clock.now(),
                None,
                None,
                "Metadata",
            );
            let mut r = Reply::json(code, &t);
            r.content_type = "application/json;as=Table;v=v1;g=meta.k8s.io".into();
            r
        }
    }
}

fn list(
    shared: &Arc<Shared>,
    def: &'static ResDef,
    filter: Filter,
    q: &Query,
    format: Format,
) -> Result<Reply, ApiError> {
    let limit: usize = match q.get("limit") {
        Some(l) if !l.is_empty() => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?
            .max(0) as usize,
        _ => 0,
    };
    let cont = match q.get("continue") {
        Some(c) if !c.is_empty() => Some(decode_continue(c)?),
        _ => None,
    };
    let (rv, items, more) = shared.read(|st| {
        let rv = cont.as_ref().map_or(st.rv, |(rv, _)| *rv);
        let after = cont.as_ref().map(|(_, k)| k.clone());
        let after_key = after.clone();
        let mut items: Vec<Arc<Obj>> = Vec::new();
        let mut more = false;
        let mut push = |o: &Arc<Obj>| -> bool {
            if after.as_ref().is_some_and(|a| &o.meta.key <= a) {
                return true;
            }
            if !filter.matches(o) {
                return true;
            }
            if limit > 0 && items.len() >= limit {
                more = true;
                return false;
            }
            items.push(o.clone());
            true
        };
        // pods of one node: the index
        if def.res == Res::Pod
            && let Some(node) = filter.fields.required("spec.nodeName")
            && !node.is_empty()
        {
            if let Some(keys) = st.pods_by_node.get(node) {
                for k in keys {
                    if let Some(o) = st.get(Res::Pod, k)
                        && !push(o)
                    {
                        break;
                    }
                }
            }
        } else {
            for o in st.objects_after(def.res.storage(), filter.ns.as_deref(), after_key.as_ref()) {
                if !push(o) {
                    break;
                }
            }
        }
        (rv, items, more)
    });
    let next = if more {
        items.last().map(|o| encode_continue(rv, &o.meta.key))
    } else {
        None
    };
    match format {
        Format::Table => {
            let include = q.get("includeObject").unwrap_or("Metadata");
            let t = table(def.res, &items, shared.clock.now(), Some(rv), next, include);
            let mut r = Reply::json(200, &t);
            r.content_type = "application/json;as=Table;v=v1;g=meta.k8s.io".into();
            Ok(r)
        }
        Format::Metadata => {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if let Some(c) = next {
                meta["continue"] = json!(c);
            }
            let list = json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.iter().map(|o| partial_metadata(&o.value())).collect::<Vec<_>>(),
            });
            let mut r = Reply::json(200, &list);
            r.content_type =
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io".into();
            Ok(r)
        }
        Format::Json => Ok(Reply::bytes(
            200,
            list_body(def, rv, next.as_deref(), &items),
        )),
    }
}

/// `{"kind":"PodList","apiVersion":"v1","metadata":{…},"items":[…]}`, joining the stored
/// bytes of the items without parsing them.
fn list_body(def: &ResDef, rv: u64, next: Option<&str>, items: &[Arc<Obj>]) -> Bytes {
    let size: usize = items.iter().map(|o| o.bytes.len() + 1).sum();
    let mut b = BytesMut::with_capacity(size + 256);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = next {
        meta["continue"] = json!(c);
    }
    b.extend_from_slice(
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            def.list_kind(),
            def.api_version(),
            meta
        )
        .as_bytes(),
    );
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            b.extend_from_slice(b",");
        }
        b.extend_from_slice(&shown(def, o));
    }
    b.extend_from_slice(b"]}");
    b.freeze()
}

fn delete_collection(
    shared: &Arc<Shared>,
    def: &'static ResDef,
    filter: Filter,
    q: &Query,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let opts = delete_opts(body, q)?;
    let res = def.res.storage();
    let (rv, items) = shared.write(|st| {
        if res == Res::Pod {
            st.tx.client_action = true;
        }
        let keys: Vec<Key> = st
            .objects(res, filter.ns.as_deref())
            .filter(|o| filter.matches(o))
            .map(|o| o.meta.key.clone())
            .collect();
        let mut out = Vec::new();
        for k in keys {
            match st.delete(res, &k, &opts) {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => {
                    if res == Res::Pod && !opts.dry_run {
                        st.counters.pods_deleted += 1;
                    }
                    out.push(o);
                }
                Err(_) => {}
            }
        }
        (st.rv, out)
    });
    Ok(Reply::bytes(200, list_body(def, rv, None, &items)))
}

fn bind(st: &mut crate::state::State, key: &Key, target: &str) -> Result<(), ApiError> {
    let Some(pod) = st.get(Res::Pod, key).cloned() else {
        return Err(ApiError::not_found("pods", "", &key.name));
    };
    if let Some(n) = &pod.pod().node {
        return Err(ApiError::conflict_msg(
            "pods",
            "",
            &key.name,
            &format!("pod {} is already assigned to node {n:?}", key.name),
        ));
    }
    if pod.terminating() {
        return Err(ApiError::conflict_msg(
            "pods",
            "",
            &key.name,
            "pod is being deleted, cannot be assigned to a host",
        ));
    }
    let now = crate::clock::rfc3339(st.now());
    st.modify(Res::Pod, key, |v| {
        crate::controllers::scheduler::bind(v, target, &now)
    });
    Ok(())
}

fn scale(
    shared: &Arc<Shared>,
    def: &'static ResDef,
    key: &Key,
    method: Method,
    ct: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let make = |o: &Obj| -> Value {
        let v = o.value();
        let selector = get(&v, &["spec", "selector", "matchLabels"])
            .and_then(Value::as_object)
            .map(|m| {
                let mut parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                parts.sort();
                parts.join(",")
            })
            .unwrap_or_default();
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": o.name(), "namespace": o.ns(), "uid": &*o.meta.uid,
                "resourceVersion": o.meta.rv.to_string(),
                "creationTimestamp": get(&v, &["metadata", "creationTimestamp"]),
            },
            "spec": {"replicas": get(&v, &["spec", "replicas"]).cloned().unwrap_or(json!(1))},
            "status": {
                "replicas": get(&v, &["status", "replicas"]).cloned().unwrap_or(json!(0)),
                "selector": selector,
            },
        })
    };
    let current = shared
        .read(|st| st.get(def.res, key).cloned())
        .ok_or_else(|| ApiError::not_found(def.plural, def.group, &key.name))?;
    let mut s = make(&current);
    match method {
        Method::GET => return Ok(Reply::json(200, &s)),
        Method::PUT => {
            s = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
        }
        Method::PATCH => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            match patch_type(ct)? {
                PatchType::Merge => json_patch::merge(&mut s, &p),
                PatchType::Strategic => {
                    crate::patch::strategic_merge(&mut s, &p).map_err(ApiError::bad_request)?
                }
                PatchType::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(p)
                        .map_err(|e| ApiError::bad_request(format!("json: {e}")))?;
                    json_patch::patch(&mut s, &ops)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                }
            }
        }
        m => {
            return Err(ApiError::method_not_allowed(
                m.as_str(),
                &format!("{}/scale", def.plural),
                def.group,
            ));
        }
    }
    let replicas = get(&s, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "autoscaling",
                &key.name,
                &[crate::status::FieldError::required("spec.replicas", "")],
            )
        })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            &key.name,
            &[crate::status::FieldError::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let rv = get_str(&s, &["metadata", "resourceVersion"])
        .unwrap_or("")
        .to_string();
    let o = shared.write(|st| {
        let mut v = st
            .get(def.res, key)
            .map(|o| o.value())
            .ok_or_else(|| ApiError::not_found(def.plural, def.group, &key.name))?;
        set(&mut v, &["spec", "replicas"], json!(replicas));
        if !rv.is_empty() {
            set(&mut v, &["metadata", "resourceVersion"], json!(rv));
        }
        st.update(def.res, key, v, Sub::Main, false)
    })?;
    Ok(Reply::json(200, &make(&o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_kubernetes_paths() {
        let r = route("/api/v1/namespaces/default/pods/web-1/eviction");
        let Route::Res {
            def, ns, name, sub, ..
        } = r
        else {
            panic!()
        };
        assert_eq!(
            (def.plural, ns.as_deref(), name.as_deref(), sub.as_deref()),
            ("pods", Some("default"), Some("web-1"), Some("eviction"))
        );
        let Route::Res { def, ns, name, .. } = route("/api/v1/namespaces/kube-system") else {
            panic!()
        };
        assert_eq!(
            (def.plural, ns, name.as_deref()),
            ("namespaces", None, Some("kube-system"))
        );
        let Route::Res { def, name, sub, .. } = route("/api/v1/namespaces/x/status") else {
            panic!()
        };
        assert_eq!(
            (def.plural, name.as_deref(), sub.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let Route::Res { def, ns, .. } = route("/apis/apps/v1/namespaces/d/deployments") else {
            panic!()
        };
        assert_eq!((def.plural, ns.as_deref()), ("deployments", Some("d")));
        let Route::Res { def, name, .. } = route("/api/v1/nodes/n1") else {
            panic!()
        };
        assert_eq!((def.plural, name.as_deref()), ("nodes", Some("n1")));
        let Route::Res { watch, .. } = route("/api/v1/watch/pods") else {
            panic!()
        };
        assert!(watch);
        assert!(matches!(route("/api/v1/foos"), Route::NoResource));
        assert!(matches!(route("/api/v1/pods/x"), Route::NoResource));
        assert!(matches!(route("/apis/batch/v1/jobs"), Route::NotFound));
        assert!(matches!(route("/api/v1"), Route::ResourceList(..)));
        assert!(matches!(route("/readyz/ping"), Route::Health));
    }

    #[test]
    fn negotiates_formats() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json".parse().unwrap());
        assert_eq!(format_of(&h).unwrap(), Format::Table);
        h.insert(
            header::ACCEPT,
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
                .parse()
                .unwrap(),
        );
        assert_eq!(format_of(&h).unwrap(), Format::Metadata);
        h.insert(
            header::ACCEPT,
            "application/vnd.kubernetes.protobuf, */*".parse().unwrap(),
        );
        assert_eq!(format_of(&h).unwrap(), Format::Json);
        h.insert(
            header::ACCEPT,
            "application/vnd.kubernetes.protobuf".parse().unwrap(),
        );
        assert!(format_of(&h).is_err());
    }
}
