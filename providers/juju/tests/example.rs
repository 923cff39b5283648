//! `examples/juju.yaml` stays valid: every juju pool in it builds a provider.

use kbg_provider::{JoinConfig, POOL_LABEL, PoolSpec, Taint};
use kbg_provider_juju::JujuProvider;
use serde_json::Value;

#[test]
fn the_example_configuration_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/juju.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut seen = 0;
    for (name, p) in doc["pools"].as_object().unwrap() {
        assert_eq!(p["provider"], "juju", "{name}");
        let mut labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(p.get("labels").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        labels.insert(POOL_LABEL.into(), name.clone());
        let taints: Vec<Taint> =
            serde_json::from_value(p.get("taints").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        let spec = PoolSpec {
            name: name.clone(),
            version: p["version"].as_str().unwrap().into(),
            labels,
            taints,
            settings: p["juju"].clone(),
            template: None,
            join: JoinConfig::default(),
        };
        let provider = JujuProvider::from_pool(&spec).unwrap_or_else(|e| panic!("{e}"));
        seen += 1;
        if name == "workers-b" {
            let s = provider.settings();
            assert_eq!(s.channel, "1.31/stable");
            assert_eq!(s.config["labels"], "kbg.io/pool=workers-b tier=web");
            assert_eq!(s.relations.len(), 4);
        }
    }
    assert_eq!(seen, 2);
}
