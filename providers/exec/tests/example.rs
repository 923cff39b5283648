//! `examples/exec.yaml` stays valid: every exec pool in it builds a provider.

use kbg_provider::{JoinConfig, PoolSpec};
use kbg_provider_exec::{Bootstrap, ExecProvider};
use serde_json::Value;

#[test]
fn the_example_configuration_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/exec.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut seen = 0;
    for (name, p) in doc["pools"].as_object().unwrap() {
        assert_eq!(p["provider"], "exec", "{name}");
        let spec = PoolSpec {
            name: name.clone(),
            version: p["version"].as_str().unwrap().into(),
            labels: Default::default(),
            taints: serde_json::from_value(p.get("taints").cloned().unwrap_or(Value::Null))
                .unwrap_or_default(),
            settings: p["exec"].clone(),
            template: None,
            join: JoinConfig::default(),
        };
        let provider = ExecProvider::from_pool(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(provider.settings().bootstrap, Bootstrap::CloudInit);
        assert!(
            provider
                .settings()
                .program
                .ends_with("examples/exec-plugin.sh"),
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, 2);
}
