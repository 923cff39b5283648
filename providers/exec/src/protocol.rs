//! The wire format between kbg and a plugin (`PROTOCOL.md` is the user-facing spec).
//!
//! Requests are built from typed views that borrow the pool spec; responses are parsed
//! by [`parse_response`], a pure function that accepts any bytes and never panics: a
//! plugin is someone else's program, and whatever it prints becomes a typed error.

use std::collections::{BTreeMap, BTreeSet};

use kbg_provider::{CommandOutput, ErrorKind, Machine, MachineState, Taint};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version kbg speaks; requests carry it and responses must echo it.
pub const PROTOCOL_VERSION: u64 = 1;

/// The longest plugin message kept, in characters; longer ones are cut with `…`.
const MAX_MESSAGE_CHARS: usize = 300;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Provision,
    List,
    Deprovision,
    Run,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Provision => "provision",
            Op::List => "list",
            Op::Deprovision => "deprovision",
            Op::Run => "run",
        }
    }
}

/// One request, written to the plugin's stdin. It can hold the join token and rendered
/// bootstraps, so it has no `Debug` and is never logged.
#[derive(Serialize)]
pub(crate) struct Request<'a> {
    pub protocol: u64,
    pub op: Op,
    pub pool: PoolView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machines: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandView<'a>>,
}

/// The pool as a plugin sees it.
#[derive(Serialize)]
pub(crate) struct PoolView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    pub config: &'a Value,
}

/// `kubeadm join` parameters, secret parts included (provision only).
#[derive(Serialize)]
pub(crate) struct JoinView<'a> {
    pub endpoint: &'a str,
    pub token: &'a str,
    pub ca_cert_hash: &'a str,
}

/// The command of a `run` request.
#[derive(Serialize)]
pub(crate) struct CommandView<'a> {
    pub script: &'a str,
    pub timeout_secs: u64,
}

/// A machine the plugin could not make or remove, or the plugin's whole-request error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PluginError {
    pub machine: Option<String>,
    pub kind: ErrorKind,
    pub message: String,
}

/// A well-formed response, by operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Response {
    /// `provision` and `list`.
    Machines {
        machines: Vec<Machine>,
        errors: Vec<PluginError>,
    },
    /// `deprovision`.
    Removed {
        removed: Vec<String>,
        errors: Vec<PluginError>,
    },
    /// `run`.
    Output(CommandOutput),
}

/// Why a response was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ResponseError {
    /// Not JSON at all (serde_json's message).
    NotJson(String),
    /// JSON, but not an object.
    NotAnObject,
    /// No `"protocol"`, or another version than ours (shown as the plugin wrote it).
    Protocol(Option<String>),
    /// The plugin reported that the whole request failed.
    Plugin(PluginError),
    /// An object of the right protocol whose content is wrong; says where.
    Malformed(String),
}

#[derive(Deserialize)]
struct RawMachine {
    name: String,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
    state: MachineState,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    details: BTreeMap<String, String>,
}

/// Parse what a plugin printed on stdout in answer to `op` for pool `pool`.
///
/// Accepts any bytes: the result is a [`Response`] or a [`ResponseError`], never a
/// panic. Unknown fields are ignored (a newer plugin may say more); missing required
/// ones, wrong types, machines of another pool and duplicate names are errors.
pub(crate) fn parse_response(op: Op, pool: &str, bytes: &[u8]) -> Result<Response, ResponseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ResponseError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ResponseError::NotAnObject);
    };
    match obj.get("protocol") {
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(other) => return Err(ResponseError::Protocol(Some(one_line(&other.to_string())))),
        None => return Err(ResponseError::Protocol(None)),
    }
    if let Some(err) = obj.get("error").filter(|v| !v.is_null()) {
        return Err(ResponseError::Plugin(plugin_error(err, "error", false)?));
    }
    match op {
        Op::Provision | Op::List => {
            let list = required_array(&obj, "machines")?;
            let mut machines = Vec::with_capacity(list.len());
            let mut seen = BTreeSet::new();
            for (i, v) in list.iter().enumerate() {
                let m = machine(v, pool).map_err(|e| malformed(format!("machines[{i}]: {e}")))?;
                if !seen.insert(m.name.clone()) {
                    return Err(malformed(format!(
                        "machines[{i}]: machine `{}` is listed twice",
                        m.name
                    )));
                }
                machines.push(m);
            }
            let errors = errors(&obj, op == Op::Provision)?;
            Ok(Response::Machines { machines, errors })
        }
        Op::Deprovision => {
            let list = required_array(&obj, "removed")?;
            let mut removed = Vec::with_capacity(list.len());
            for (i, v) in list.iter().enumerate() {
                match v.as_str() {
                    Some(name) if !name.is_empty() => removed.push(name.to_string()),
                    _ => {
                        return Err(malformed(format!(
                            "removed[{i}]: expected a machine name (a non-empty string)"
                        )));
                    }
                }
            }
            let errors = errors(&obj, true)?;
            Ok(Response::Removed { removed, errors })
        }
        Op::Run => {
            let Some(Value::Object(out)) = obj.get("output") else {
                return Err(malformed(
                    "`output` is missing or not an object: expected {\"exit_code\": N, \
                     \"stdout\": \"…\", \"stderr\": \"…\"}",
                ));
            };
            let exit_code = match out.get("exit_code") {
                Some(Value::Number(n)) => n
                    .as_i64()
                    .and_then(|c| i32::try_from(c).ok())
                    .ok_or_else(|| malformed("output.exit_code: not a 32-bit integer"))?,
                _ => return Err(malformed("output.exit_code: missing or not an integer")),
            };
            let text = |key: &str| match out.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(malformed(format!("output.{key}: not a string"))),
            };
            Ok(Response::Output(CommandOutput {
                exit_code,
                stdout: text("stdout")?,
                stderr: text("stderr")?,
            }))
        }
    }
}

fn malformed(detail: impl Into<String>) -> ResponseError {
    ResponseError::Malformed(detail.into())
}

fn required_array<'v>(
    obj: &'v serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'v Vec<Value>, ResponseError> {
    match obj.get(key) {
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(malformed(format!("`{key}` is not an array"))),
        None => Err(malformed(format!("`{key}` is missing"))),
    }
}

fn machine(v: &Value, pool: &str) -> Result<Machine, String> {
    let raw: RawMachine = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    if raw.name.is_empty() {
        return Err("`name` is empty".into());
    }
    if let Some(p) = raw.pool.as_deref().filter(|p| *p != pool) {
        return Err(format!(
            "machine `{}` belongs to pool `{p}`, not `{pool}`",
            raw.name
        ));
    }
    Ok(Machine {
        name: raw.name,
        pool: pool.to_string(),
        provider_id: raw.provider_id,
        node_name: raw.node_name,
        state: raw.state,
        address: raw.address,
        details: raw.details,
    })
}

fn errors(
    obj: &serde_json::Map<String, Value>,
    per_machine: bool,
) -> Result<Vec<PluginError>, ResponseError> {
    let list = match obj.get("errors") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(malformed("`errors` is not an array")),
    };
    list.iter()
        .enumerate()
        .map(|(i, e)| plugin_error(e, &format!("errors[{i}]"), per_machine))
        .collect()
}

/// `{"machine"?, "message", "kind"?, "retryable"?}`; `machine` required when
/// `per_machine`.
fn plugin_error(v: &Value, at: &str, per_machine: bool) -> Result<PluginError, ResponseError> {
    let Value::Object(e) = v else {
        return Err(malformed(format!("{at}: not an object")));
    };
    let message = match e.get("message") {
        Some(Value::String(s)) if !s.trim().is_empty() => one_line(s),
        _ => return Err(malformed(format!("{at}.message: missing or empty"))),
    };
    let machine = match e.get("machine") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(malformed(format!("{at}.machine: not a machine name"))),
    };
    if per_machine && machine.is_none() {
        return Err(malformed(format!("{at}.machine: missing")));
    }
    let retryable = match e.get("retryable") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(malformed(format!("{at}.retryable: not true or false"))),
    };
    let kind = match e.get("kind") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => kind_named(k),
        Some(_) => return Err(malformed(format!("{at}.kind: not a string"))),
    };
    let kind = kind.unwrap_or(if retryable == Some(true) {
        ErrorKind::Transient
    } else {
        ErrorKind::Failed
    });
    Ok(PluginError {
        machine,
        kind,
        message,
    })
}

/// The [`ErrorKind`] a plugin's `kind` names; `None` for a kind this kbg does not know
/// (then `retryable` decides). `invalid_config` means the plugin's own settings are wrong.
fn kind_named(kind: &str) -> Option<ErrorKind> {
    Some(match kind {
        "not_found" => ErrorKind::NotFound,
        "permission_denied" => ErrorKind::PermissionDenied,
        "capacity" => ErrorKind::Capacity,
        "throttled" => ErrorKind::Throttled,
        "transient" => ErrorKind::Transient,
        "timeout" => ErrorKind::Timeout,
        "unsupported" => ErrorKind::Unsupported,
        "failed" => ErrorKind::Failed,
        "invalid_config" => ErrorKind::InvalidConfig {
            field: "config".into(),
        },
        _ => return None,
    })
}

/// `s` on one line: control characters become spaces, runs of spaces collapse, and the
/// result is cut at [`MAX_MESSAGE_CHARS`].
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_MESSAGE_CHARS + 4));
    let mut chars = 0;
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if chars >= MAX_MESSAGE_CHARS {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(op: Op, v: Value) -> Result<Response, ResponseError> {
        parse_response(op, "beta", v.to_string().as_bytes())
    }

    #[test]
    fn provision_machines_and_per_machine_errors() {
        let r = parse(
            Op::Provision,
            json!({"protocol": 1,
                   "machines": [{"name": "beta-0", "state": "running",
                                 "provider_id": "maas://abc", "details": {"zone": "r3"}}],
                   "errors": [{"machine": "beta-1", "message": "no machine\nfree",
                               "kind": "capacity", "retryable": true},
                              {"machine": "beta-2", "message": "flaky", "retryable": true},
                              {"machine": "beta-3", "message": "broken"}],
                   "something_new": 42}),
        )
        .unwrap();
        let Response::Machines { machines, errors } = r else {
            panic!()
        };
        assert_eq!(machines[0].pool, "beta", "the pool is filled in");
        assert_eq!(machines[0].provider_id.as_deref(), Some("maas://abc"));
        assert_eq!(machines[0].details["zone"], "r3");
        assert_eq!(
            errors
                .iter()
                .map(|e| (
                    e.machine.as_deref().unwrap(),
                    e.kind.clone(),
                    e.message.as_str()
                ))
                .collect::<Vec<_>>(),
            [
                ("beta-1", ErrorKind::Capacity, "no machine free"),
                ("beta-2", ErrorKind::Transient, "flaky"),
                ("beta-3", ErrorKind::Failed, "broken"),
            ]
        );
    }

    #[test]
    fn the_protocol_version_is_checked() {
        assert_eq!(
            parse(Op::List, json!({"machines": []})),
            Err(ResponseError::Protocol(None))
        );
        assert_eq!(
            parse(Op::List, json!({"protocol": 2, "machines": []})),
            Err(ResponseError::Protocol(Some("2".into())))
        );
        assert_eq!(
            parse(Op::List, json!({"protocol": "1", "machines": []})),
            Err(ResponseError::Protocol(Some("\"1\"".into())))
        );
    }

    #[test]
    fn a_whole_request_error_wins() {
        let r = parse(
            Op::Deprovision,
            json!({"protocol": 1, "error": {"message": "MAAS is down", "kind": "transient"}}),
        );
        assert_eq!(
            r,
            Err(ResponseError::Plugin(PluginError {
                machine: None,
                kind: ErrorKind::Transient,
                message: "MAAS is down".into()
            }))
        );
    }

    #[test]
    fn wrong_shapes_say_where() {
        for (op, v, says) in [
            (Op::List, json!([]), "NotAnObject"),
            (Op::List, json!({"protocol": 1}), "`machines` is missing"),
            (
                Op::List,
                json!({"protocol": 1, "machines": [{"name": "x"}]}),
                "machines[0]: missing field `state`",
            ),
            (
                Op::List,
                json!({"protocol": 1, "machines": [{"name": "x", "state": "booting"}]}),
                "machines[0]: unknown variant `booting`",
            ),
            (
                Op::List,
                json!({"protocol": 1, "machines": [{"name": "x", "state": "running", "pool": "gamma"}]}),
                "belongs to pool `gamma`",
            ),
            (
                Op::List,
                json!({"protocol": 1, "machines": [{"name": "x", "state": "running"}, {"name": "x", "state": "pending"}]}),
                "listed twice",
            ),
            (
                Op::Provision,
                json!({"protocol": 1, "machines": [], "errors": [{"message": "m"}]}),
                "errors[0].machine: missing",
            ),
            (
                Op::Deprovision,
                json!({"protocol": 1, "removed": [""]}),
                "removed[0]",
            ),
            (Op::Run, json!({"protocol": 1}), "`output` is missing"),
            (
                Op::Run,
                json!({"protocol": 1, "output": {"exit_code": 1e10}}),
                "exit_code",
            ),
            (
                Op::Run,
                json!({"protocol": 1, "output": {"exit_code": 0, "stdout": 5}}),
                "output.stdout",
            ),
        ] {
            let err = parse(op, v.clone()).unwrap_err();
            let shown = format!("{err:?}");
            assert!(shown.contains(says), "{v}: {shown}");
        }
        assert!(matches!(
            parse_response(Op::List, "beta", b"machines: []"),
            Err(ResponseError::NotJson(_))
        ));
    }

    #[test]
    fn run_output_defaults_missing_streams_to_empty() {
        assert_eq!(
            parse(
                Op::Run,
                json!({"protocol": 1, "output": {"exit_code": 3, "stdout": "hi"}})
            ),
            Ok(Response::Output(CommandOutput {
                exit_code: 3,
                stdout: "hi".into(),
                stderr: String::new()
            }))
        );
    }

    #[test]
    fn messages_become_one_bounded_line() {
        assert_eq!(one_line("  a\n\tb \u{7}c  "), "a b c");
        let long = "x".repeat(1000);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    /// JSON values of any shape, nested a few levels, biased towards the keys a
    /// response uses so that the parser's inner branches are reached.
    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("protocol".to_string()),
            Just("machines".to_string()),
            Just("errors".to_string()),
            Just("error".to_string()),
            Just("removed".to_string()),
            Just("output".to_string()),
            Just("name".to_string()),
            Just("state".to_string()),
            Just("pool".to_string()),
            Just("message".to_string()),
            Just("machine".to_string()),
            Just("kind".to_string()),
            Just("retryable".to_string()),
            Just("exit_code".to_string()),
            Just("details".to_string()),
            "[a-z_]{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(Value::from(1)),
            prop_oneof![
                Just("running".to_string()),
                Just("beta-0".to_string()),
                Just("capacity".to_string()),
                ".{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Provision),
            Just(Op::List),
            Just(Op::Deprovision),
            Just(Op::Run)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever bytes a plugin prints, parsing returns; it never panics.
        #[test]
        fn random_bytes_never_panic(op in arb_op(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_response(op, "beta", &bytes);
        }

        /// Random JSON of response-like shapes, with and without the right protocol.
        #[test]
        fn random_json_never_panics(op in arb_op(), mut v in arb_json(), stamp in any::<bool>()) {
            if let (true, Value::Object(m)) = (stamp, &mut v) {
                m.insert("protocol".into(), Value::from(1));
            }
            let parsed = parse_response(op, "beta", v.to_string().as_bytes());
            // Whatever is accepted keeps the rules: one pool, unique names, one-line messages.
            if let Ok(Response::Machines { machines, errors }) = &parsed {
                let names: BTreeSet<_> = machines.iter().map(|m| &m.name).collect();
                prop_assert_eq!(names.len(), machines.len());
                prop_assert!(machines.iter().all(|m| m.pool == "beta" && !m.name.is_empty()));
                prop_assert!(errors.iter().all(|e| !e.message.contains('\n')));
            }
        }

        /// Truncated valid responses are refused, not half-read.
        #[test]
        fn truncated_responses_are_errors(cut in 1usize..60) {
            let full = json!({"protocol": 1, "machines": [{"name": "beta-0", "state": "running"}]}).to_string();
            let cut = cut.min(full.len() - 1);
            prop_assert!(parse_response(Op::List, "beta", &full.as_bytes()[..cut]).is_err());
        }
    }
}
