//! Providers by name, and the [`PoolSpec`] they are built from.
//!
//! `sim` is always built in. `aws`, `juju`, `metal` and `exec` are cargo features of the
//! same names (on by default), each pulling in its provider crate; a build without one
//! refuses its pools (exit 2) saying how to build it in. A provider's constructor
//! validates its settings block before anything is touched, so a bad block is exit 2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use kbg_provider::{
    DeprovisionReport, JoinConfig, Ledger, Machine, PoolSpec, Provider, ProviderError,
};

use crate::clock::Clock;
use crate::retry::retry_provider;

use crate::config::{JoinSettings, PoolConfig};
use crate::error::{Error, Result};

/// What kbg tells providers beyond the pool's own settings.
#[derive(Clone, Debug, Default)]
pub struct ProviderOptions {
    /// The directory of `kbg.yaml`: relative paths in it (inventories, templates) are
    /// resolved against it. `None`: the current directory.
    pub base_dir: Option<PathBuf>,
    /// `--insecure-accept-host-keys` (bare metal): accept hosts missing from
    /// `known_hosts`. A changed key is refused regardless.
    pub insecure_accept_host_keys: bool,
}

/// The [`PoolSpec`] a provider gets for `pool` (an adopted pool without a version gets
/// an empty one: it can be torn down, not deployed). A relative `template` path is taken
/// relative to `base_dir` (the directory of `kbg.yaml`).
pub fn pool_spec(pool: &PoolConfig, join: &JoinSettings, base_dir: Option<&Path>) -> PoolSpec {
    let version = pool
        .version
        .as_ref()
        .map_or_else(String::new, ToString::to_string);
    let template = pool.template.as_ref().map(|p| match base_dir {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.clone(),
    });
    PoolSpec {
        name: pool.name.clone(),
        version,
        labels: pool.labels.clone(),
        taints: pool.taints.clone(),
        settings: pool.settings.clone(),
        template: template.map(|p| p.display().to_string()),
        join: JoinConfig {
            api_server_endpoint: join.endpoint.clone().unwrap_or_default(),
            token: join.token.clone(),
            ca_cert_hash: join.ca_cert_hash.clone(),
        },
    }
}

/// Build the provider of `pool`.
///
/// `ledger` is where providers that must remember things (bare metal's host assignments,
/// Juju's unit names) keep them: kbg's state ConfigMap.
///
/// # Errors
/// [`Error::Provider`] with an `InvalidConfig` kind (exit 2) for a bad settings block;
/// [`Error::Usage`] when the pool has no provider or this build does not include it.
pub async fn build(
    pool: &PoolConfig,
    spec: &PoolSpec,
    client: &kube::Client,
    ledger: Arc<dyn Ledger>,
    options: &ProviderOptions,
) -> Result<Box<dyn Provider>> {
    let _ = (&ledger, options);
    let built: std::result::Result<Box<dyn Provider>, ProviderError> = match pool.provider.as_str()
    {
        "sim" => kbg_provider_sim::SimProvider::from_pool(client.clone(), spec)
            .map(|p| Box::new(p) as Box<dyn Provider>),
        #[cfg(feature = "juju")]
        "juju" => kbg_provider_juju::JujuProvider::from_pool(spec)
            .map(|p| Box::new(p.with_ledger(ledger)) as Box<dyn Provider>),
        #[cfg(feature = "exec")]
        "exec" => kbg_provider_exec::ExecProvider::from_pool(spec)
            .map(|p| Box::new(p) as Box<dyn Provider>),
        #[cfg(feature = "metal")]
        "metal" => kbg_provider_metal::MetalProvider::from_pool_with(
            spec,
            ledger,
            &kbg_provider_metal::MetalOptions {
                base_dir: options.base_dir.clone(),
                insecure_accept_host_keys: options.insecure_accept_host_keys,
            },
        )
        .map(|p| Box::new(p) as Box<dyn Provider>),
        "" => {
            return Err(Error::usage(format!(
                "pool {} is not defined in kbg.yaml, so kbg does not know its provider; add pools.{}.provider",
                pool.name, pool.name
            )));
        }
        #[cfg(feature = "aws")]
        "aws" => kbg_provider_aws::AwsProvider::from_pool(spec)
            .await
            .map(|p| Box::new(p) as Box<dyn Provider>),
        other => {
            return Err(Error::usage(format!(
                "pools.{}.provider: the {other} provider is not built into this kbg; build it with `cargo build --features {other}`",
                pool.name
            )));
        }
    };
    built.map_err(|e| Error::provider(format!("pool {}", pool.name), e))
}

/// The providers that can hand a pool over with a drain of their own
/// ([`Provider::hand_over`]): only these are built by `migrate` to ask whether the pool
/// wants it, so a migration never needs what other providers need to be built (SSH keys,
/// inventories, cloud credentials).
pub const HAND_OVER_PROVIDERS: [&str; 1] = ["juju"];

/// The provider of `pool` when the pool asks to be handed over with the provider's own
/// drain ([`Provider::hands_over`]: Juju's `use_charm_pause: true`); `None`, with nothing
/// built, for every other pool.
///
/// # Errors
/// As [`build`]: a bad settings block is exit 2, before anything changes.
pub async fn hand_over_provider(
    pool: &PoolConfig,
    spec: &PoolSpec,
    client: &kube::Client,
    ledger: Arc<dyn Ledger>,
    options: &ProviderOptions,
) -> Result<Option<Box<dyn Provider>>> {
    if !HAND_OVER_PROVIDERS.contains(&pool.provider.as_str()) {
        return Ok(None);
    }
    let provider = build(pool, spec, client, ledger, options).await?;
    Ok(provider.hands_over().then_some(provider))
}

/// Rounds of retrying the machines whose provisioning or deprovisioning failed with a
/// retryable error.
const MACHINE_ROUNDS: usize = 4;

/// Every machine of `spec`'s pool, retrying retryable failures.
///
/// # Errors
/// [`Error::Provider`] when the provider cannot be asked.
pub async fn list(provider: &dyn Provider, spec: &PoolSpec, clock: Clock) -> Result<Vec<Machine>> {
    retry_provider(clock, "list machines", || provider.list(spec))
        .await
        .map_err(|e| Error::provider(format!("listing the machines of pool {}", spec.name), e))
}

/// Make sure machines `names` exist: the whole call is retried on retryable errors, and so
/// are the machines that failed with one (a few rounds). Returns the machines that exist
/// and one error per machine that could not be made.
///
/// # Errors
/// [`Error::Provider`] when the whole request keeps failing.
pub async fn provision(
    provider: &dyn Provider,
    spec: &PoolSpec,
    names: &[String],
    clock: Clock,
) -> Result<(Vec<Machine>, Vec<ProviderError>)> {
    let mut machines = Vec::new();
    let mut pending: Vec<String> = names.to_vec();
    let mut failed = Vec::new();
    for round in 0..MACHINE_ROUNDS {
        if round > 0 {
            clock.sleep(Duration::from_secs(2u64 << round)).await;
        }
        let report = retry_provider(clock, "provision", || provider.provision(spec, &pending))
            .await
            .map_err(|e| Error::provider(format!("provisioning pool {}", spec.name), e))?;
        machines.extend(report.machines);
        let last = round + 1 == MACHINE_ROUNDS;
        let (again, given_up): (Vec<ProviderError>, Vec<ProviderError>) = report
            .failed
            .into_iter()
            .partition(|e| e.is_retryable() && e.machine.is_some() && !last);
        failed = given_up;
        pending = again.into_iter().filter_map(|e| e.machine).collect();
        if pending.is_empty() {
            break;
        }
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    machines.dedup_by(|a, b| a.name == b.name);
    Ok((machines, failed))
}

/// Remove `machines`, retrying the call and the machines that failed with a retryable
/// error (a few rounds).
///
/// # Errors
/// [`Error::Provider`] when the whole request keeps failing.
pub async fn deprovision(
    provider: &dyn Provider,
    spec: &PoolSpec,
    machines: &[Machine],
    clock: Clock,
) -> Result<DeprovisionReport> {
    let mut out = DeprovisionReport::default();
    let mut pending: Vec<Machine> = machines.to_vec();
    for round in 0..MACHINE_ROUNDS {
        if round > 0 {
            clock.sleep(Duration::from_secs(2u64 << round)).await;
        }
        let report = retry_provider(clock, "deprovision", || {
            provider.deprovision(spec, &pending)
        })
        .await
        .map_err(|e| {
            Error::provider(format!("deprovisioning machines of pool {}", spec.name), e)
        })?;
        out.removed.extend(report.removed);
        let last = round + 1 == MACHINE_ROUNDS;
        let (again, given_up): (Vec<ProviderError>, Vec<ProviderError>) = report
            .failed
            .into_iter()
            .partition(|e| e.is_retryable() && e.machine.is_some() && !last);
        out.failed = given_up;
        let names: Vec<String> = again.into_iter().filter_map(|e| e.machine).collect();
        pending.retain(|m| names.contains(&m.name));
        if pending.is_empty() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn templates_are_relative_to_kbg_yaml() {
        let cfg = Config::parse(
            "pools:\n  beta:\n    provider: sim\n    version: v1.31\n    count: 1\n    template: t/boot.j2\n  gamma:\n    provider: sim\n    version: v1.31\n    count: 1\n    template: /abs/boot.j2\n",
        )
        .unwrap();
        let base = Path::new("/etc/kbg");
        let spec = pool_spec(
            cfg.pool("beta").unwrap(),
            &JoinSettings::default(),
            Some(base),
        );
        assert_eq!(spec.template.as_deref(), Some("/etc/kbg/t/boot.j2"));
        assert_eq!(spec.version, "v1.31");
        assert_eq!(spec.labels["kbg.io/pool"], "beta");
        let spec = pool_spec(
            cfg.pool("gamma").unwrap(),
            &JoinSettings::default(),
            Some(base),
        );
        assert_eq!(spec.template.as_deref(), Some("/abs/boot.j2"));
    }
}
