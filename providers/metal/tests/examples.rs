//! The example files in `examples/` stay valid: the `metal:` blocks of `metal.yaml` parse,
//! and `metal-inventory.yaml` passes every check once its key path points at a real key.

mod support;

use std::path::Path;

use kbg_provider_metal::MetalSettings;
use kbg_provider_metal::inventory::Inventory;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))
}

#[test]
fn the_metal_blocks_of_the_example_kbg_yaml_parse() {
    let text = std::fs::read_to_string(examples().join("metal.yaml")).unwrap();
    let config: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let pools = config["pools"].as_object().unwrap();
    assert!(!pools.is_empty());
    for (name, pool) in pools {
        assert_eq!(pool["provider"], "metal", "{name}");
        let s = MetalSettings::parse(name, &pool["metal"], examples()).unwrap();
        assert_eq!(s.inventory, examples().join("metal-inventory.yaml"));
    }
    let beta = MetalSettings::parse("beta", &pools["beta"]["metal"], examples()).unwrap();
    assert_eq!(beta.selector["disk"], "ssd");
}

#[test]
fn the_example_inventory_passes_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("kbg_ed25519");
    support::keypair(&key, "example");
    let text = std::fs::read_to_string(examples().join("metal-inventory.yaml"))
        .unwrap()
        .replace("~/.ssh/kbg_ed25519", key.to_str().unwrap());
    let inv = Inventory::parse(&dir.path().join("inventory.yaml"), &text, "f").unwrap();
    assert_eq!(inv.hosts.len(), 5);
    let kbg = inv.host("rack2-node2").unwrap();
    assert_eq!((kbg.port, kbg.user.as_str(), kbg.sudo), (2222, "kbg", true));
    assert_eq!(inv.host("gpu-node1").unwrap().pool.as_deref(), Some("gpu"));
}
