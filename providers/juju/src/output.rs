//! Reading what `juju exec`/`juju run` (commands) and `juju run`/`run-action` (charm
//! actions) print with `--format=json`, in every shape the 2.9 and 3.x CLIs use.

use std::collections::BTreeMap;

use kbg_provider::CommandOutput;
use serde_json::{Map, Value};

/// One unit's task, as the CLI reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskResult {
    /// `completed`, `failed`, `error`, `aborted`, `cancelled`; empty when not reported
    /// (the 2.x command output has none).
    pub status: String,
    /// The charm's failure message, if any.
    pub message: String,
    /// The hook's or command's exit code (0 when not reported).
    pub return_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TaskResult {
    /// Whether the task did what was asked.
    pub fn succeeded(&self) -> bool {
        matches!(self.status.as_str(), "" | "completed") && self.return_code == 0
    }

    pub fn into_output(self) -> CommandOutput {
        CommandOutput {
            exit_code: self.return_code,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

/// `beta/0` from a unit tag (`unit-beta-0`) or a unit name.
fn unit_name(key: &str) -> String {
    match key.strip_prefix("unit-").and_then(|t| t.rsplit_once('-')) {
        Some((app, n)) if n.parse::<u32>().is_ok() => format!("{app}/{n}"),
        _ => key.to_string(),
    }
}

fn text(obj: &Map<String, Value>, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn code(obj: &Map<String, Value>, keys: &[&str]) -> Option<i32> {
    keys.iter().find_map(|k| match obj.get(*k)? {
        Value::Number(n) => n.as_i64().and_then(|c| i32::try_from(c).ok()),
        // 2.9 prints some codes as strings ("Code": "0").
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// One task entry: 3.x/2.9-new `{id, status, message, results: {return-code, stdout,
/// stderr}, unit}` or 2.x-legacy `{UnitId, ReturnCode, Stdout, Stderr, Error}`.
fn task(obj: &Map<String, Value>) -> TaskResult {
    let empty = Map::new();
    let results = obj
        .get("results")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let legacy_error = text(obj, &["Error"]);
    TaskResult {
        status: text(obj, &["status"]),
        message: if legacy_error.is_empty() {
            text(obj, &["message"])
        } else {
            legacy_error
        },
        return_code: code(results, &["return-code", "Code", "ReturnCode"])
            .or_else(|| code(obj, &["ReturnCode", "return-code"]))
            .unwrap_or(0),
        stdout: {
            let s = text(results, &["stdout", "Stdout"]);
            if s.is_empty() {
                text(obj, &["Stdout", "stdout"])
            } else {
                s
            }
        },
        stderr: {
            let s = text(results, &["stderr", "Stderr"]);
            if s.is_empty() {
                text(obj, &["Stderr", "stderr"])
            } else {
                s
            }
        },
    }
}

/// Per-unit task results from the CLI's JSON, keyed by unit name (`beta/0`). Accepts a
/// map keyed by unit name or unit tag, or a list of entries naming their unit (`unit`
/// or `UnitId`). `None` when the text is not one of those shapes.
pub(crate) fn parse_tasks(stdout: &str) -> Option<BTreeMap<String, TaskResult>> {
    let value: Value = serde_json::from_str(stdout.trim()).ok()?;
    let mut out = BTreeMap::new();
    match value {
        Value::Object(map) => {
            for (key, entry) in map {
                let obj = entry.as_object()?;
                let unit = obj
                    .get("unit")
                    .and_then(Value::as_str)
                    .map_or_else(|| unit_name(&key), ToString::to_string);
                out.insert(unit, task(obj));
            }
        }
        Value::Array(list) => {
            for entry in list {
                let obj = entry.as_object()?;
                let unit = text(obj, &["unit", "UnitId"]);
                if unit.is_empty() {
                    return None;
                }
                out.insert(unit_name(&unit), task(obj));
            }
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn juju3_exec_output() {
        let out = r#"{"beta/0": {"id": "28", "results": {"return-code": 3, "stdout": "hi\n",
                      "stderr": "oops\n"}, "status": "completed", "unit": "beta/0"}}"#;
        let tasks = parse_tasks(out).unwrap();
        let t = &tasks["beta/0"];
        assert_eq!(
            (t.return_code, t.stdout.as_str(), t.stderr.as_str()),
            (3, "hi\n", "oops\n")
        );
        assert!(!t.succeeded());
    }

    #[test]
    fn juju29_legacy_run_output() {
        let out = r#"[{"MachineId": "3", "ReturnCode": 1, "Stdout": "", "Stderr": "no\n",
                       "UnitId": "workers-b/12"}, {"Stdout": "ok\n", "UnitId": "workers-b/13"}]"#;
        let tasks = parse_tasks(out).unwrap();
        assert_eq!(tasks["workers-b/12"].return_code, 1);
        assert_eq!(tasks["workers-b/12"].stderr, "no\n");
        assert!(tasks["workers-b/13"].succeeded());
        assert_eq!(tasks["workers-b/13"].stdout, "ok\n");
    }

    #[test]
    fn juju29_run_action_output_keyed_by_tag() {
        let out = r#"{"unit-workers-b-0": {"id": "5", "results": {"Code": "0"}, "status": "completed"},
                      "unit-workers-b-1": {"id": "6", "status": "failed",
                                           "message": "drain failed: pods with local storage"}}"#;
        let tasks = parse_tasks(out).unwrap();
        assert!(tasks["workers-b/0"].succeeded());
        let failed = &tasks["workers-b/1"];
        assert!(!failed.succeeded());
        assert_eq!(failed.message, "drain failed: pods with local storage");
    }

    #[test]
    fn other_text_is_not_tasks() {
        for bad in [
            "",
            "ERROR boom",
            "[1]",
            "{\"beta/0\": 3}",
            "[{\"id\": 1}]",
            "\"x\"",
        ] {
            assert_eq!(parse_tasks(bad), None, "{bad}");
        }
    }
}
