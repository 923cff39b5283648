//! Every file in `examples/` is read by the parser it is written for, and every example
//! `kbg.yaml` is one kbg accepts: parsed by kbg's own config loader, and each pool's
//! provider built from it the way `deploy-pool` builds it (settings checked, nothing
//! touched). The directory is listed, so a new example is checked without editing this
//! file; a YAML file this test does not know fails it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kbg::config::{Config, JoinSettings};
use kbg::providers::{self, ProviderOptions, pool_spec};
use kbg_provider::{Ledger, MemoryLedger, Secret};

#[path = "../providers/metal/tests/support/mod.rs"]
#[allow(missing_docs, unused)]
mod metal_support;

/// What a YAML file in `examples/` is.
enum Kind {
    /// A `kbg.yaml`.
    KbgYaml,
    /// A simulated cluster's scenario (`kbg sim serve --scenario`, `kbg demo`).
    Scenario,
    /// A bare-metal inventory (`pools.<pool>.metal.inventory`).
    MetalInventory,
}

fn kind(path: &Path) -> Kind {
    let name = path.file_name().unwrap().to_str().unwrap();
    match name {
        "sim-scenario.yaml" | "scenario.yaml" => Kind::Scenario,
        "metal-inventory.yaml" => Kind::MetalInventory,
        "kbg.yaml" | "aws.yaml" | "juju.yaml" | "metal.yaml" | "exec.yaml" => Kind::KbgYaml,
        other => panic!(
            "examples/{other}: this test does not know what it is; add it to `kind` with the parser that reads it"
        ),
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// A client that is never used to send anything: building a provider makes no call.
fn offline_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn every_example_parses_and_every_pool_builds_its_provider() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("kbg_ed25519");
    metal_support::keypair(&key, "examples");
    let metal_copy = tempfile::tempdir().unwrap();
    let inventory = std::fs::read_to_string(root.join("metal-inventory.yaml"))
        .unwrap()
        .replace("~/.ssh/kbg_ed25519", key.to_str().unwrap());
    std::fs::write(metal_copy.path().join("metal-inventory.yaml"), inventory).unwrap();
    let mut pools_built = 0;
    for path in &files {
        let shown = path.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        match kind(path) {
            Kind::Scenario => {
                kbg_sim::Scenario::from_yaml(&text)
                    .unwrap_or_else(|e| panic!("examples/{shown}: {e}"));
            }
            Kind::MetalInventory => {
                // Its hosts' key is the operator's (`~/.ssh/…`): check it with a real one.
                let text = text.replace("~/.ssh/kbg_ed25519", key.to_str().unwrap());
                kbg_provider_metal::inventory::Inventory::parse(path, &text, "inventory")
                    .unwrap_or_else(|e| panic!("examples/{shown}: {e}"));
            }
            Kind::KbgYaml => {
                let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
                assert!(config.pools.len() >= 2, "examples/{shown}: {config:?}");
                // The join secrets come from the environment, as the examples say.
                let join = JoinSettings {
                    token: Some(Secret::new("abcdef.0123456789abcdef")),
                    ca_cert_hash: Some(Secret::new("sha256:00ff")),
                    ..config.cluster.join.clone()
                };
                for pool in config.pools.values() {
                    // A metal pool's inventory names the operator's key: build it from a
                    // copy of the example directory whose inventory names a real one.
                    let base = if pool.provider == "metal" {
                        metal_copy.path()
                    } else {
                        path.parent().unwrap()
                    };
                    let spec = pool_spec(pool, &join, Some(base));
                    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
                    let options = ProviderOptions {
                        base_dir: Some(base.to_path_buf()),
                        // `~/.ssh/known_hosts` need not exist on the test machine.
                        insecure_accept_host_keys: true,
                    };
                    providers::build(pool, &spec, &offline_client(), ledger, &options)
                        .await
                        .unwrap_or_else(|e| panic!("examples/{shown}: pool {}: {e}", pool.name));
                    pools_built += 1;
                }
            }
        }
    }
    println!(
        "figures: {} example files, {pools_built} pools",
        files.len()
    );
}
