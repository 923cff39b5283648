//! Shared harness: the `juju` test double (`tests/fake-juju/juju`) in a temporary
//! `JUJU_DATA`, and a pool to point the provider at it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kbg_provider::{
    JoinConfig, Ledger, Machine, MachineState, MemoryLedger, PoolSpec, Taint, TaintEffect,
};
use kbg_provider_juju::JujuProvider;
use serde_json::{Value, json};

/// A model of the double, in a temporary `JUJU_DATA`.
pub struct Double {
    pub dir: tempfile::TempDir,
}

pub fn double_path() -> PathBuf {
    assert!(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("python3").is_file()))
            .unwrap_or(false),
        "the juju test double needs python3 on PATH; run scripts/test-setup"
    );
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-juju/juju")
}

impl Double {
    pub fn new(state: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fake-juju.json"), state.to_string()).unwrap();
        Double { dir }
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join("fake-juju.json")).unwrap(),
        )
        .unwrap()
    }

    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut st = self.state();
        f(&mut st);
        std::fs::write(self.dir.path().join("fake-juju.json"), st.to_string()).unwrap();
    }

    /// The `juju:` block pointing the provider at this double.
    pub fn settings(&self, extra: Value) -> Value {
        let mut s = json!({
            "juju": double_path(),
            "data_dir": self.dir.path(),
            "poll_interval_secs": 0.01,
            "wait_timeout_secs": 120,
            "remove_timeout_secs": 120,
        });
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    }

    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("fake-juju-calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every recorded command line, temporary file paths shown as `<file>`.
    pub fn lines(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| {
                c["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let a = a.as_str().unwrap();
                        if a.contains("kbg-juju-config-") {
                            "<file>"
                        } else {
                            a
                        }
                        .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// The recorded lines other than `status` and `version`.
    pub fn changes(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| !l.starts_with("status") && l != "version")
            .collect()
    }

    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("fake-juju-calls.jsonl"));
    }
}

pub fn pool(settings: Value) -> PoolSpec {
    PoolSpec {
        name: "beta".into(),
        version: "v1.31.2".into(),
        labels: BTreeMap::from([
            ("kbg.io/pool".to_string(), "beta".to_string()),
            ("tier".to_string(), "web".to_string()),
        ]),
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("web".into()),
            effect: TaintEffect::NoSchedule,
        }],
        settings,
        template: None,
        join: JoinConfig::default(),
    }
}

pub fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(ToString::to_string).collect()
}

pub fn provider(spec: &PoolSpec, ledger: &Arc<MemoryLedger>) -> JujuProvider {
    JujuProvider::from_pool(spec)
        .unwrap()
        .with_ledger(Arc::clone(ledger) as Arc<dyn Ledger>)
}

pub async fn recorded(ledger: &MemoryLedger) -> Value {
    ledger
        .load("juju/k8s/beta")
        .await
        .unwrap()
        .map_or(Value::Null, |e| e.value["units"].clone())
}

pub fn summary(machines: &[Machine]) -> Vec<(String, String, MachineState)> {
    machines
        .iter()
        .map(|m| (m.name.clone(), m.details["unit"].clone(), m.state))
        .collect()
}

pub fn s3(list: &[(&str, &str, MachineState)]) -> Vec<(String, String, MachineState)> {
    list.iter()
        .map(|(n, u, s)| (n.to_string(), u.to_string(), *s))
        .collect()
}
