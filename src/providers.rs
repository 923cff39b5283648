//! Providers by name, and the [`PoolSpec`] they are built from.
//!
//! `sim` is always built in. `aws`, `juju`, `metal` and `exec` are cargo features of the
//! same names (on by default); their crates are wired in here once they have a
//! constructor. A provider's constructor validates its settings block before anything
//! is touched, so a bad block is exit 2.

use std::sync::Arc;

use kbg_provider::{JoinConfig, Ledger, PoolSpec, Provider, ProviderError};

use crate::config::{JoinSettings, PoolConfig};
use crate::error::{Error, Result};

/// The [`PoolSpec`] a provider gets for `pool` (an adopted pool without a version gets
/// an empty one: it can be torn down, not deployed).
pub fn pool_spec(pool: &PoolConfig, join: &JoinSettings) -> PoolSpec {
    let version = pool
        .version
        .as_ref()
        .map_or_else(String::new, ToString::to_string);
    PoolSpec {
        name: pool.name.clone(),
        version,
        labels: pool.labels.clone(),
        taints: pool.taints.clone(),
        settings: pool.settings.clone(),
        template: pool.template.as_ref().map(|p| p.display().to_string()),
        join: JoinConfig {
            api_server_endpoint: join.endpoint.clone().unwrap_or_default(),
            token: join.token.clone(),
            ca_cert_hash: join.ca_cert_hash.clone(),
        },
    }
}

/// Build the provider of `pool`.
///
/// `ledger` is where providers that must remember things (bare metal's host
/// assignments) keep them: kbg's state ConfigMap.
///
/// # Errors
/// [`Error::Provider`] with an `InvalidConfig` kind (exit 2) for a bad settings block;
/// [`Error::Usage`] when the pool has no provider or this build does not include it.
pub async fn build(
    pool: &PoolConfig,
    spec: &PoolSpec,
    client: &kube::Client,
    ledger: Arc<dyn Ledger>,
) -> Result<Box<dyn Provider>> {
    let _ = &ledger;
    let built: std::result::Result<Box<dyn Provider>, ProviderError> = match pool.provider.as_str()
    {
        "sim" => kbg_provider_sim::SimProvider::from_pool(client.clone(), spec)
            .map(|p| Box::new(p) as Box<dyn Provider>),
        "" => {
            return Err(Error::usage(format!(
                "pool {} is not defined in kbg.yaml, so kbg does not know its provider; add pools.{}.provider",
                pool.name, pool.name
            )));
        }
        other => {
            return Err(Error::usage(format!(
                "pools.{}.provider: the {other} provider is not built into this kbg; build it with `cargo build --features {other}`",
                pool.name
            )));
        }
    };
    built.map_err(|e| Error::provider(format!("pool {}", pool.name), e))
}
