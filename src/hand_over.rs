//! The provider's own hand-over, for pools that ask for it instead of kbg's drain.
//!
//! Charmed Kubernetes hands a worker over with the worker charm's `pause` action, which
//! runs `kubectl drain` on the unit's node; a pool with `juju.use_charm_pause: true` asks
//! kbg to do the same ([`kbg_provider::Provider::hand_over`]), with `delete-local-data`
//! and `force` following kbg's `--delete-emptydir-data` and `--force`.
//!
//! kbg does not take the provider's word for it. Around each batch:
//! 1. kbg has cordoned the whole source pool already (so nothing lands on another old
//!    node), and maps each node of the batch to its machine (by provider ID, else name);
//! 2. while the provider drains, kbg watches every PodDisruptionBudget and keeps, per
//!    PDB, the lowest `currentHealthy - desiredHealthy` its status shows once it was
//!    satisfied (the definition the simulated cluster's books use); a PDB that went below
//!    its desired healthy count fails the migration, nodes still cordoned;
//! 3. then kbg runs its own drain over the same nodes: it finds nothing left when the
//!    provider did its job, and otherwise evicts what is left, PDB-safe as always.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kbg_provider::{HandOverOptions, Machine, PoolSpec, Provider};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use crate::clock::Clock;
use crate::commands::Ctx;
use crate::config::PoolConfig;
use crate::error::{Error, Result};
use crate::pool;
use crate::providers::{self, ProviderOptions, pool_spec};
use crate::retry::{retry, retry_provider};
use crate::settings::DrainSettings;
use crate::state::StateLedger;

/// How long kbg waits for its PDB watch to have listed every PDB before the provider
/// starts draining (cluster time is not involved: this is the watch's own start).
const WATCH_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A source pool that is handed over by its provider.
pub struct HandOver {
    provider: Box<dyn Provider>,
    spec: PoolSpec,
    options: HandOverOptions,
    /// The pool's machines, listed at the first batch: the source pool does not grow
    /// while it is handed over, so one listing serves every batch.
    machines: tokio::sync::OnceCell<Vec<Machine>>,
}

impl std::fmt::Debug for HandOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOver")
            .field("provider", &self.provider.kind())
            .field("pool", &self.spec.name)
            .field("options", &self.options)
            .finish()
    }
}

/// What one hand-over did, per batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HandOverOutcome {
    /// The nodes whose machines the provider handed over.
    pub nodes: Vec<String>,
    /// The lowest `currentHealthy - desiredHealthy` each PDB showed while the provider
    /// drained (`namespace/name` → margin); never negative when this is returned.
    pub pdb_margins: BTreeMap<String, i32>,
}

impl HandOver {
    /// The hand-over of `from` when its provider hands over and the pool asks for it;
    /// `None` otherwise (kbg's drain does the job). Builds the provider, which checks its
    /// settings and touches nothing.
    ///
    /// # Errors
    /// A bad settings block (exit 2).
    pub async fn for_pool(
        ctx: &Ctx,
        from: &PoolConfig,
        drain: &DrainSettings,
    ) -> Result<Option<HandOver>> {
        let base = ctx.settings.base_dir();
        let spec = pool_spec(from, &ctx.settings.join, base.as_deref());
        let ledger = Arc::new(StateLedger::new(ctx.state.clone()));
        let options = ProviderOptions {
            base_dir: base,
            insecure_accept_host_keys: false,
        };
        let provider =
            providers::hand_over_provider(from, &spec, &ctx.client, ledger, &options).await?;
        Ok(provider.map(|provider| HandOver {
            provider,
            spec,
            options: HandOverOptions {
                delete_emptydir_data: drain.delete_emptydir_data,
                force: drain.force,
            },
            machines: tokio::sync::OnceCell::new(),
        }))
    }

    /// The provider's name (`juju`).
    pub fn kind(&self) -> &str {
        self.provider.kind()
    }

    /// Hand `nodes` (cordoned) over with the provider's own drain, watching the PDBs.
    ///
    /// # Errors
    /// [`Error::Failed`] when a node has no machine at the provider, the provider could
    /// not hand a machine over (its words), or a PDB went below its desired healthy count
    /// while it drained; [`Error::Provider`] when the provider cannot be asked.
    pub async fn run(&self, ctx: &Ctx, nodes: &[&Node]) -> Result<HandOverOutcome> {
        let (batch, missing) = self.machines_of(ctx, nodes).await?;
        if !missing.is_empty() {
            return Err(Error::Failed(format!(
                "pool {} asks for the {} provider's own hand-over, but nodes {} have no machine at the provider; their nodes stay cordoned",
                self.spec.name,
                self.kind(),
                missing.join(", ")
            )));
        }

        let watch = PdbWatch::start(ctx.client.clone()).await?;
        let names: Vec<&str> = batch.iter().map(|m| m.name.as_str()).collect();
        ctx.ui.step(format_args!(
            "handing over {} with the {} provider's own drain",
            names.join(", "),
            self.kind()
        ));
        let report = retry_provider(ctx.clock, "hand over", || {
            self.provider.hand_over(&self.spec, &batch, &self.options)
        })
        .await
        .map_err(|e| Error::provider(format!("handing over pool {}", self.spec.name), e))?;
        // One last read, so a PDB the controller updates late is seen too.
        let margins = watch.finish(&ctx.client, ctx.clock).await;
        if !report.failed.is_empty() {
            let why: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
            return Err(Error::Failed(format!(
                "the {} provider could not hand over {} machines of pool {}: {}; their nodes stay cordoned",
                self.kind(),
                why.len(),
                self.spec.name,
                why.join("; ")
            )));
        }
        let broken: Vec<String> = margins
            .iter()
            .filter(|(_, m)| **m < 0)
            .map(|(pdb, m)| format!("{pdb} ({m})"))
            .collect();
        if !broken.is_empty() {
            return Err(Error::Failed(format!(
                "while the {} provider drained {}, PodDisruptionBudgets went below their desired healthy count: {}; the nodes stay cordoned",
                self.kind(),
                names.join(", "),
                broken.join(", ")
            )));
        }
        Ok(HandOverOutcome {
            nodes: nodes.iter().map(|n| pool::name(n).to_string()).collect(),
            pdb_margins: margins,
        })
    }
}

impl HandOver {
    /// The machines of `nodes` at the provider (by provider ID, else name), and the names
    /// of the nodes that have none.
    async fn machines_of(&self, ctx: &Ctx, nodes: &[&Node]) -> Result<(Vec<Machine>, Vec<String>)> {
        let machines = self
            .machines
            .get_or_try_init(|| providers::list(self.provider.as_ref(), &self.spec, ctx.clock))
            .await?;
        let mut found: Vec<Machine> = Vec::new();
        let mut missing = Vec::new();
        for n in nodes {
            match machines
                .iter()
                .find(|m| m.matches_node(pool::provider_id(n), pool::name(n)))
            {
                Some(m) => found.push(m.clone()),
                None => missing.push(pool::name(n).to_string()),
            }
        }
        Ok((found, missing))
    }

    /// Undo the hand-over of `nodes`, which `kbg rollback` has uncordoned: the provider's
    /// [`Provider::hand_back`] (the Juju worker charm's `resume`). Returns the names of
    /// the nodes whose machines the provider handed back.
    ///
    /// # Errors
    /// [`Error::Failed`] naming the nodes that have no machine at the provider or whose
    /// machine the provider could not hand back (its words); [`Error::Provider`] when the
    /// provider cannot be asked.
    pub async fn hand_back(&self, ctx: &Ctx, nodes: &[&Node]) -> Result<Vec<String>> {
        let (machines, missing) = self.machines_of(ctx, nodes).await?;
        let mut problems: Vec<String> = missing
            .iter()
            .map(|n| format!("node {n} has no machine at the provider"))
            .collect();
        let mut done = Vec::new();
        if !machines.is_empty() {
            let report = retry_provider(ctx.clock, "hand back", || {
                self.provider.hand_back(&self.spec, &machines)
            })
            .await
            .map_err(|e| Error::provider(format!("handing back pool {}", self.spec.name), e))?;
            problems.extend(report.failed.iter().map(ToString::to_string));
            for m in machines
                .iter()
                .filter(|m| report.handed_over.contains(&m.name))
            {
                if let Some(n) = nodes
                    .iter()
                    .find(|n| m.matches_node(pool::provider_id(n), pool::name(n)))
                {
                    done.push(pool::name(n).to_string());
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::Failed(format!(
                "the nodes of pool {} are uncordoned, but the {} provider could not undo its hand-over: {}; run `kbg rollback` again, or the provider's own undo (Juju: the worker charm's `resume` action)",
                self.spec.name,
                self.kind(),
                problems.join("; ")
            )));
        }
        Ok(done)
    }
}

/// The lowest margin each PDB showed, once it was first satisfied.
type Margins = Arc<Mutex<BTreeMap<String, i32>>>;

fn record(margins: &Margins, pdb: &PodDisruptionBudget) {
    let Some(s) = &pdb.status else { return };
    let key = format!(
        "{}/{}",
        pdb.metadata.namespace.as_deref().unwrap_or_default(),
        pdb.metadata.name.as_deref().unwrap_or_default()
    );
    let margin = s.current_healthy - s.desired_healthy;
    let mut all = margins.lock().expect("PDB margins");
    match all.get_mut(&key) {
        Some(low) => *low = (*low).min(margin),
        None if margin >= 0 => {
            all.insert(key, margin);
        }
        None => {}
    }
}

/// A watch on every PDB for the length of one hand-over.
struct PdbWatch {
    margins: Margins,
    task: tokio::task::JoinHandle<()>,
}

impl PdbWatch {
    /// Start watching; returns once the watch has listed every PDB.
    async fn start(client: kube::Client) -> Result<PdbWatch> {
        let margins: Margins = Arc::default();
        let (listed, ready) = tokio::sync::oneshot::channel::<()>();
        let m = margins.clone();
        let task = tokio::spawn(async move {
            let api: Api<PodDisruptionBudget> = Api::all(client);
            let mut listed = Some(listed);
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        record(&m, &p);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Init | watcher::Event::Delete(_)) | Err(_) => {}
                }
            }
        });
        match tokio::time::timeout(WATCH_START_TIMEOUT, ready).await {
            Ok(Ok(())) => Ok(PdbWatch { margins, task }),
            _ => {
                task.abort();
                Err(Error::Failed(
                    "could not watch the PodDisruptionBudgets before the provider's hand-over; nothing was handed over".into(),
                ))
            }
        }
    }

    /// Stop watching, read every PDB once more, and return the margins.
    async fn finish(self, client: &kube::Client, clock: Clock) -> BTreeMap<String, i32> {
        self.task.abort();
        let api: Api<PodDisruptionBudget> = Api::all(client.clone());
        let lp = kube::api::ListParams::default();
        if let Ok(list) = retry(clock, "list pdbs", || api.list(&lp)).await {
            for p in &list.items {
                record(&self.margins, p);
            }
        }
        self.margins.lock().expect("PDB margins").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus;

    fn pdb(name: &str, current: i32, desired: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            status: Some(PodDisruptionBudgetStatus {
                current_healthy: current,
                desired_healthy: desired,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn margins_count_from_the_first_satisfied_status_and_keep_the_lowest() {
        let m: Margins = Arc::default();
        // Not yet satisfied (pods still starting): not a violation, not counted.
        record(&m, &pdb("web", 1, 3));
        assert!(m.lock().unwrap().is_empty());
        record(&m, &pdb("web", 4, 3));
        record(&m, &pdb("web", 3, 3));
        record(&m, &pdb("web", 4, 3));
        record(&m, &pdb("db", 2, 1));
        assert_eq!(
            *m.lock().unwrap(),
            BTreeMap::from([
                ("default/db".to_string(), 1),
                ("default/web".to_string(), 0)
            ])
        );
        // Once satisfied, going below counts.
        record(&m, &pdb("web", 2, 3));
        assert_eq!(m.lock().unwrap()["default/web"], -1);
    }
}
