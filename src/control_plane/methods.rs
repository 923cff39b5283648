//! The three ways a master is upgraded in place, and the scripts they run.
//!
//! | method | once | each master's control plane | each master's kubelet |
//! | --- | --- | --- | --- |
//! | `kubeadm` | etcd snapshot on the first master (`cp-etcd-backup.sh.j2`) | first: kubeadm package, `kubeadm upgrade apply V` (`cp-kubeadm-apply.sh.j2`); others: kubeadm package, `kubeadm upgrade node` (`cp-kubeadm-node.sh.j2`) | kubelet and kubectl packages, restart (`cp-kubelet.sh.j2`) |
//! | `manifests` | etcd snapshot (as kubeadm) | back up the manifests, rewrite the images' tags (`cp-manifests.sh.j2`) | as kubeadm, or the CoreOS kubelet-wrapper unit |
//! | `charm` | the etcd charm's `snapshot` action; `juju refresh` of the control-plane charm to `<minor>/stable` and its snap `channel` | the charm's `upgrade` action on the master's unit | done by the `upgrade` action (the snaps move together) |
//!
//! Scripts are minijinja templates from `templates/`, rendered for one master with
//! `machine` (the node), `version` (`v1.34.1`), `semver` (`1.34.1`), `minor` (`1.34`) and
//! `cp` (`method`, `from`, `package_manager`, `manifests_dir`, `backup_dir`, `stamp`,
//! `etcd_snapshot`), and run through the provider's run-command as root. Any of them can
//! be replaced in `kbg.yaml` (`control_plane.templates.<step>`); a replacement may
//! `{% include "cp-kubeadm-package.sh.j2" %}`. They carry no secret: printing them
//! (`--dry-run`) is safe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use kbg_provider::{
    ErrorKind, JoinConfig, Machine, MachineState, PoolSpec, Provider, RemoteCommand,
};
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::facts::MasterFacts;
use crate::clock::Clock;
use crate::config::{CpMethod, PackageManager};
use crate::error::{Error, Result};
use crate::version::KubeVersion;

/// The name kbg gives the masters when it talks to a provider about them (the
/// [`PoolSpec::name`] of its run-command calls).
pub const CONTROL_PLANE_POOL: &str = "control-plane";

/// A step that runs a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptStep {
    /// Snapshot etcd before the first master.
    EtcdBackup,
    /// The first master's control plane.
    FirstMaster,
    /// Every other master's control plane.
    OtherMaster,
    /// A master's kubelet.
    Kubelet,
}

impl ScriptStep {
    /// Its key under `control_plane.templates`.
    pub fn key(self) -> &'static str {
        match self {
            ScriptStep::EtcdBackup => "etcd_backup",
            ScriptStep::FirstMaster => "first_master",
            ScriptStep::OtherMaster => "other_masters",
            ScriptStep::Kubelet => "kubelet",
        }
    }

    /// A few words for messages: `first-master`.
    pub fn describe(self) -> &'static str {
        match self {
            ScriptStep::EtcdBackup => "etcd-backup",
            ScriptStep::FirstMaster => "first-master",
            ScriptStep::OtherMaster => "master",
            ScriptStep::Kubelet => "kubelet",
        }
    }

    const ALL: [ScriptStep; 4] = [
        ScriptStep::EtcdBackup,
        ScriptStep::FirstMaster,
        ScriptStep::OtherMaster,
        ScriptStep::Kubelet,
    ];

    /// The shipped template of this step for `method` (`None`: the method runs no
    /// script for it).
    pub fn shipped(self, method: CpMethod) -> Option<&'static str> {
        match (method, self) {
            (CpMethod::Charm, _) => None,
            (_, ScriptStep::EtcdBackup) => Some("cp-etcd-backup.sh.j2"),
            (CpMethod::Kubeadm, ScriptStep::FirstMaster) => Some("cp-kubeadm-apply.sh.j2"),
            (CpMethod::Kubeadm, ScriptStep::OtherMaster) => Some("cp-kubeadm-node.sh.j2"),
            (CpMethod::Manifests, ScriptStep::FirstMaster | ScriptStep::OtherMaster) => {
                Some("cp-manifests.sh.j2")
            }
            (_, ScriptStep::Kubelet) => Some("cp-kubelet.sh.j2"),
        }
    }
}

/// The shipped templates, by file name.
const SHIPPED: [(&str, &str); 6] = [
    (
        "cp-etcd-backup.sh.j2",
        include_str!("../../templates/cp-etcd-backup.sh.j2"),
    ),
    (
        "cp-kubeadm-apply.sh.j2",
        include_str!("../../templates/cp-kubeadm-apply.sh.j2"),
    ),
    (
        "cp-kubeadm-node.sh.j2",
        include_str!("../../templates/cp-kubeadm-node.sh.j2"),
    ),
    (
        "cp-kubeadm-package.sh.j2",
        include_str!("../../templates/cp-kubeadm-package.sh.j2"),
    ),
    (
        "cp-manifests.sh.j2",
        include_str!("../../templates/cp-manifests.sh.j2"),
    ),
    (
        "cp-kubelet.sh.j2",
        include_str!("../../templates/cp-kubelet.sh.j2"),
    ),
];

/// What the method's scripts need besides the master and the version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptSettings {
    /// The method.
    pub method: CpMethod,
    /// How packages are installed.
    pub package_manager: PackageManager,
    /// The static pod manifests' directory on the masters.
    pub manifests_dir: String,
    /// Where backups go on the masters.
    pub backup_dir: String,
}

/// The `cp` variable of a script.
#[derive(Clone, Debug, Serialize)]
struct CpVars<'a> {
    method: String,
    from: String,
    package_manager: &'a PackageManager,
    manifests_dir: &'a str,
    backup_dir: &'a str,
    stamp: &'a str,
    etcd_snapshot: String,
}

#[derive(Clone, Debug, Serialize)]
struct Vars<'a> {
    machine: &'a str,
    version: String,
    semver: String,
    minor: String,
    cp: CpVars<'a>,
}

/// An upgrade's constants: where from, where to, and the stamp of its backups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The oldest API server's version when the upgrade started.
    pub from: KubeVersion,
    /// The target.
    pub to: KubeVersion,
    /// `20260102T030405Z`: names this upgrade's backups.
    pub stamp: String,
}

impl Run {
    /// A run from `from` to `to`, stamped now.
    pub fn new(from: KubeVersion, to: KubeVersion) -> Run {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        Run { from, to, stamp }
    }
}

/// The method's scripts: the shipped templates and the user's replacements.
pub struct Scripts {
    env: Environment<'static>,
    settings: ScriptSettings,
    chosen: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts")
            .field("settings", &self.settings)
            .field("chosen", &self.chosen)
            .finish_non_exhaustive()
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    for (name, source) in SHIPPED {
        env.add_template(name, source)
            .expect("the shipped templates parse");
    }
    env
}

impl Scripts {
    /// The scripts of `settings.method`, with `overrides` (step key → file, relative
    /// paths taken from `base_dir`) replacing shipped ones. Every script is rendered once
    /// for a made-up master, so a broken replacement is found before anything is touched.
    ///
    /// # Errors
    /// A usage error naming `control_plane.templates.<step>` when a file cannot be read
    /// or does not render.
    pub fn new(
        settings: ScriptSettings,
        overrides: &BTreeMap<String, PathBuf>,
        base_dir: Option<&Path>,
    ) -> Result<Scripts> {
        let mut env = environment();
        let mut chosen = BTreeMap::new();
        for step in ScriptStep::ALL {
            let field = format!("control_plane.templates.{}", step.key());
            if let Some(path) = overrides.get(step.key()) {
                let path = match base_dir {
                    Some(b) if path.is_relative() => b.join(path),
                    _ => path.clone(),
                };
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    Error::usage(format!("{field}: {} cannot be read: {e}", path.display()))
                })?;
                let name = format!("{}:{}", step.key(), path.display());
                env.add_template_owned(name.clone(), source).map_err(|e| {
                    Error::usage(format!("{field}: {} does not parse: {e}", path.display()))
                })?;
                chosen.insert(step.key(), name);
            } else if let Some(name) = step.shipped(settings.method) {
                chosen.insert(step.key(), name.to_string());
            }
        }
        let scripts = Scripts {
            env,
            settings,
            chosen,
        };
        let v = KubeVersion::parse("v1.34.1").expect("a version");
        let run = Run {
            from: KubeVersion::parse("v1.33.5").expect("a version"),
            to: v,
            stamp: "20260101T000000Z".into(),
        };
        for step in ScriptStep::ALL {
            if let Err(e) = scripts.render(step, "master-0", &run) {
                return Err(match overrides.get(step.key()) {
                    Some(p) => Error::usage(format!(
                        "control_plane.templates.{}: {} does not render: {e}",
                        step.key(),
                        p.display()
                    )),
                    None => e,
                });
            }
        }
        Ok(scripts)
    }

    /// Where `run`'s etcd snapshot goes.
    pub fn etcd_snapshot(&self, run: &Run) -> String {
        format!(
            "{}/etcd-snapshot-{}-{}.db",
            self.settings.backup_dir, run.from, run.stamp
        )
    }

    /// The script of `step` for master `machine` (`None`: the method has none).
    ///
    /// # Errors
    /// [`Error::Failed`] when it does not render.
    pub fn render(&self, step: ScriptStep, machine: &str, run: &Run) -> Result<Option<String>> {
        let Some(name) = self.chosen.get(step.key()) else {
            return Ok(None);
        };
        let to = &run.to;
        let semver = to.to_string().trim_start_matches('v').to_string();
        let vars = Vars {
            machine,
            semver,
            minor: format!("{}.{}", to.major, to.minor),
            version: to.to_string(),
            cp: CpVars {
                method: self.settings.method.to_string(),
                from: run.from.to_string(),
                package_manager: &self.settings.package_manager,
                manifests_dir: &self.settings.manifests_dir,
                backup_dir: &self.settings.backup_dir,
                stamp: &run.stamp,
                etcd_snapshot: self.etcd_snapshot(run),
            },
        };
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| Error::Failed(format!("template {name}: {e}")))?;
        tmpl.render(minijinja::value::Serde(&vars))
            .map(Some)
            .map_err(|e| Error::Failed(format!("template {name} does not render: {e:#}")))
    }
}

/// A step that did not go through on a master: one line, with the end of what it
/// printed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepFailed(pub String);

/// How the masters are upgraded: one per method.
#[async_trait]
pub trait Upgrader: Send + Sync + std::fmt::Debug {
    /// The method.
    fn method(&self) -> CpMethod;

    /// Whether the kubelet is a step of its own (`false`: the control-plane step moves
    /// it too, as the charm's `upgrade` action does).
    fn separate_kubelet(&self) -> bool {
        true
    }

    /// What a step would do on `node`, for `--dry-run`: the script, or the Juju call.
    ///
    /// # Errors
    /// When a script does not render.
    fn describe(&self, step: ScriptStep, node: &str, run: &Run) -> Result<Option<String>>;

    /// Once per run, before the first master (the charm's refresh).
    ///
    /// # Errors
    /// What went wrong.
    async fn prepare(&self, _run: &Run) -> std::result::Result<(), StepFailed> {
        Ok(())
    }

    /// Snapshot etcd through `node`; returns where the snapshot is.
    ///
    /// # Errors
    /// What went wrong.
    async fn etcd_backup(&self, node: &str, run: &Run) -> std::result::Result<String, StepFailed>;

    /// Upgrade `node`'s control plane (`first`: kubeadm's `apply`).
    ///
    /// # Errors
    /// What went wrong.
    async fn control_plane(
        &self,
        node: &str,
        first: bool,
        run: &Run,
    ) -> std::result::Result<(), StepFailed>;

    /// Upgrade `node`'s kubelet.
    ///
    /// # Errors
    /// What went wrong.
    async fn kubelet(&self, node: &str, run: &Run) -> std::result::Result<(), StepFailed>;
}

/// The [`PoolSpec`] the masters are reached with: pool `control-plane`, the provider's
/// block from `control_plane:`, the target version.
pub fn control_plane_spec(settings: &serde_json::Value, version: &KubeVersion) -> PoolSpec {
    PoolSpec {
        name: CONTROL_PLANE_POOL.into(),
        version: version.to_string(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
        settings: settings.clone(),
        template: None,
        join: JoinConfig::default(),
    }
}

/// The machine behind each master: the provider's own, matched by provider ID or node
/// name, else one named after the node (how bare-metal inventories and simulated
/// clusters name their masters).
pub fn machines_for(masters: &[MasterFacts], listed: &[Machine]) -> BTreeMap<String, Machine> {
    masters
        .iter()
        .map(|m| {
            let machine = listed
                .iter()
                .find(|x| x.matches_node(m.provider_id.as_deref(), &m.node))
                .cloned()
                .unwrap_or_else(|| Machine {
                    name: m.node.clone(),
                    pool: CONTROL_PLANE_POOL.into(),
                    provider_id: m.provider_id.clone(),
                    node_name: Some(m.node.clone()),
                    state: MachineState::Running,
                    address: None,
                    details: BTreeMap::new(),
                });
            (m.node.clone(), machine)
        })
        .collect()
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// kubeadm and manifests: scripts through the provider's run-command.
pub struct ScriptUpgrader {
    provider: Box<dyn Provider>,
    spec: PoolSpec,
    scripts: Scripts,
    machines: BTreeMap<String, Machine>,
    timeout: Duration,
    clock: Clock,
}

impl std::fmt::Debug for ScriptUpgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptUpgrader")
            .field("provider", &self.provider.kind())
            .field("scripts", &self.scripts)
            .finish_non_exhaustive()
    }
}

impl ScriptUpgrader {
    /// Run scripts on `machines` through `provider` (its pool spec `spec`), each for at
    /// most `timeout` (wall time).
    pub fn new(
        provider: Box<dyn Provider>,
        spec: PoolSpec,
        scripts: Scripts,
        machines: BTreeMap<String, Machine>,
        timeout: Duration,
        clock: Clock,
    ) -> Self {
        ScriptUpgrader {
            provider,
            spec,
            scripts,
            machines,
            timeout,
            clock,
        }
    }

    async fn run_script(
        &self,
        step: ScriptStep,
        node: &str,
        run: &Run,
    ) -> std::result::Result<(), StepFailed> {
        let Some(script) = self
            .scripts
            .render(step, node, run)
            .map_err(|e| StepFailed(e.to_string()))?
        else {
            return Ok(());
        };
        let Some(machine) = self.machines.get(node) else {
            return Err(StepFailed(format!("no machine is known for master {node}")));
        };
        let cmd = RemoteCommand {
            script,
            timeout_secs: self.timeout.as_secs().max(1),
        };
        // Connection trouble is retried here; a command that ran and failed, or timed
        // out, is the step's failure (the caller decides about repeating it).
        let mut attempt = 0u32;
        let out = loop {
            match self.provider.run_command(&self.spec, machine, &cmd).await {
                Ok(out) => break out,
                Err(e)
                    if attempt < 3
                        && matches!(e.kind, ErrorKind::Transient | ErrorKind::Throttled) =>
                {
                    attempt += 1;
                    tracing::debug!(%node, error = %e, attempt, "retrying run-command");
                    self.clock.sleep(Duration::from_secs(2 << attempt)).await;
                }
                Err(e) => return Err(StepFailed(e.to_string())),
            }
        };
        tracing::debug!(%node, step = step.key(), code = out.exit_code, stdout = %out.stdout, stderr = %out.stderr, "ran");
        if out.exit_code == 0 {
            return Ok(());
        }
        let said = [tail(&out.stderr, 3), tail(&out.stdout, 3)]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "no output".into());
        Err(StepFailed(format!(
            "the {} script exited with {} on {node}: {said}",
            step.describe(),
            out.exit_code
        )))
    }
}

#[async_trait]
impl Upgrader for ScriptUpgrader {
    fn method(&self) -> CpMethod {
        self.scripts.settings.method
    }

    fn describe(&self, step: ScriptStep, node: &str, run: &Run) -> Result<Option<String>> {
        self.scripts.render(step, node, run)
    }

    async fn etcd_backup(&self, node: &str, run: &Run) -> std::result::Result<String, StepFailed> {
        self.run_script(ScriptStep::EtcdBackup, node, run).await?;
        Ok(format!("{node}:{}", self.scripts.etcd_snapshot(run)))
    }

    async fn control_plane(
        &self,
        node: &str,
        first: bool,
        run: &Run,
    ) -> std::result::Result<(), StepFailed> {
        let step = if first {
            ScriptStep::FirstMaster
        } else {
            ScriptStep::OtherMaster
        };
        self.run_script(step, node, run).await
    }

    async fn kubelet(&self, node: &str, run: &Run) -> std::result::Result<(), StepFailed> {
        self.run_script(ScriptStep::Kubelet, node, run).await
    }
}

/// The Juju channel of a Kubernetes minor: `1.34/stable`.
pub fn charm_channel(v: &KubeVersion) -> String {
    format!("{}.{}/stable", v.major, v.minor)
}

#[cfg(feature = "juju")]
pub use charm::CharmUpgrader;

#[cfg(feature = "juju")]
mod charm {
    use super::*;
    use kbg_provider_juju::JujuProvider;

    /// Charmed Kubernetes: the control-plane application's charm and snaps.
    #[derive(Debug)]
    pub struct CharmUpgrader {
        juju: JujuProvider,
        application: String,
        etcd: Option<(JujuProvider, String)>,
        units: BTreeMap<String, String>,
    }

    impl CharmUpgrader {
        /// Upgrade the masters through `juju` (built for the control-plane application),
        /// `units` mapping each master to its unit; `etcd` the etcd application's
        /// provider and name, when etcd is backed up.
        pub fn new(
            juju: JujuProvider,
            units: BTreeMap<String, String>,
            etcd: Option<(JujuProvider, String)>,
        ) -> Self {
            let application = juju.settings().application.clone();
            CharmUpgrader {
                juju,
                application,
                etcd,
                units,
            }
        }

        fn unit(&self, node: &str) -> std::result::Result<&str, StepFailed> {
            self.units.get(node).map(String::as_str).ok_or_else(|| {
                StepFailed(format!(
                    "no unit of {} runs on master {node}",
                    self.application
                ))
            })
        }
    }

    #[async_trait]
    impl Upgrader for CharmUpgrader {
        fn method(&self) -> CpMethod {
            CpMethod::Charm
        }

        fn separate_kubelet(&self) -> bool {
            false
        }

        fn describe(&self, step: ScriptStep, node: &str, run: &Run) -> Result<Option<String>> {
            let channel = charm_channel(&run.to);
            Ok(match step {
                ScriptStep::EtcdBackup => self
                    .etcd
                    .as_ref()
                    .map(|(_, app)| format!("juju run {app}/<first unit> snapshot")),
                ScriptStep::FirstMaster => Some(format!(
                    "juju refresh {app} --channel {channel}\njuju config {app} channel={channel} require-manual-upgrade=true\njuju run {} upgrade",
                    self.units.get(node).map_or("<unit>", String::as_str),
                    app = self.application
                )),
                ScriptStep::OtherMaster => Some(format!(
                    "juju run {} upgrade",
                    self.units.get(node).map_or("<unit>", String::as_str)
                )),
                ScriptStep::Kubelet => None,
            })
        }

        async fn prepare(&self, run: &Run) -> std::result::Result<(), StepFailed> {
            let channel = charm_channel(&run.to);
            self.juju
                .refresh_application(&self.application, Some(&channel))
                .await
                .map_err(|e| StepFailed(format!("juju refresh {}: {e}", self.application)))?;
            let options = BTreeMap::from([
                ("channel".to_string(), serde_json::json!(channel)),
                (
                    "require-manual-upgrade".to_string(),
                    serde_json::json!(true),
                ),
            ]);
            self.juju
                .set_charm_config(&self.application, &options)
                .await
                .map_err(|e| StepFailed(format!("juju config {}: {e}", self.application)))
        }

        async fn etcd_backup(
            &self,
            _node: &str,
            _run: &Run,
        ) -> std::result::Result<String, StepFailed> {
            let Some((etcd, app)) = &self.etcd else {
                return Err(StepFailed("no etcd application to back up".into()));
            };
            let spec = control_plane_spec(
                &serde_json::Value::Null,
                &KubeVersion::parse("v1.0").expect("a version"),
            );
            let units = etcd
                .list(&spec)
                .await
                .map_err(|e| StepFailed(format!("listing the units of {app}: {e}")))?;
            let Some(unit) = units.iter().find_map(|m| m.details.get("unit").cloned()) else {
                return Err(StepFailed(format!("application {app} has no unit")));
            };
            let report = etcd
                .run_action(std::slice::from_ref(&unit), "snapshot", &[])
                .await
                .map_err(|e| StepFailed(format!("juju run {unit} snapshot: {e}")))?;
            if let Some(e) = report.failed.first() {
                return Err(StepFailed(e.to_string()));
            }
            Ok(format!("{unit} (the etcd charm's snapshot action)"))
        }

        async fn control_plane(
            &self,
            node: &str,
            _first: bool,
            _run: &Run,
        ) -> std::result::Result<(), StepFailed> {
            let unit = self.unit(node)?.to_string();
            let report = self
                .juju
                .run_action(std::slice::from_ref(&unit), "upgrade", &[])
                .await
                .map_err(|e| StepFailed(format!("juju run {unit} upgrade: {e}")))?;
            match report.failed.first() {
                Some(e) => Err(StepFailed(e.to_string())),
                None => Ok(()),
            }
        }

        async fn kubelet(&self, _node: &str, _run: &Run) -> std::result::Result<(), StepFailed> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(method: CpMethod, pm: PackageManager) -> ScriptSettings {
        ScriptSettings {
            method,
            package_manager: pm,
            manifests_dir: "/etc/kubernetes/manifests".into(),
            backup_dir: "/var/lib/kbg/backups".into(),
        }
    }

    fn run() -> Run {
        Run {
            from: KubeVersion::parse("v1.33.1").unwrap(),
            to: KubeVersion::parse("v1.34.2").unwrap(),
            stamp: "20260102T030405Z".into(),
        }
    }

    /// What the simulated masters understand of each script (the sim provider's
    /// reading), for each method and package manager.
    #[test]
    fn the_shipped_scripts_say_what_the_procedures_say() {
        use kbg_provider_sim::script::{Action, actions};
        let s = Scripts::new(
            settings(CpMethod::Kubeadm, PackageManager::Apt),
            &BTreeMap::new(),
            None,
        )
        .unwrap();
        let r = run();
        let first = s
            .render(ScriptStep::FirstMaster, "cp-0", &r)
            .unwrap()
            .unwrap();
        assert!(first.starts_with("#!/bin/sh\n"), "{first}");
        assert!(first.contains("set -eu\n"), "{first}");
        assert!(first.contains("/v1.34/"), "{first}");
        assert_eq!(
            actions(&first),
            [
                Action::Install("kubeadm".into(), "1.34.2".into()),
                Action::KubeadmApply("v1.34.2".into())
            ]
        );
        let other = s
            .render(ScriptStep::OtherMaster, "cp-1", &r)
            .unwrap()
            .unwrap();
        assert_eq!(
            actions(&other),
            [
                Action::Install("kubeadm".into(), "1.34.2".into()),
                Action::KubeadmNode
            ]
        );
        let kubelet = s.render(ScriptStep::Kubelet, "cp-1", &r).unwrap().unwrap();
        assert_eq!(
            actions(&kubelet),
            [
                Action::Install("kubelet".into(), "1.34.2".into()),
                Action::Install("kubectl".into(), "1.34.2".into()),
                Action::RestartKubelet
            ]
        );
        let backup = s
            .render(ScriptStep::EtcdBackup, "cp-0", &r)
            .unwrap()
            .unwrap();
        assert_eq!(
            actions(&backup),
            [Action::EtcdSnapshot(
                "/var/lib/kbg/backups/etcd-snapshot-v1.33.1-20260102T030405Z.db".into()
            )]
        );

        let s = Scripts::new(
            settings(CpMethod::Kubeadm, PackageManager::Dnf),
            &BTreeMap::new(),
            None,
        )
        .unwrap();
        let first = s
            .render(ScriptStep::FirstMaster, "cp-0", &r)
            .unwrap()
            .unwrap();
        assert!(
            first.contains("dnf install -y --disableexcludes=kubernetes \"kubeadm-1.34.2\""),
            "{first}"
        );
        assert_eq!(
            actions(&first)[0],
            Action::Install("kubeadm".into(), "1.34.2".into())
        );

        let s = Scripts::new(
            settings(CpMethod::Manifests, PackageManager::KubeletWrapper),
            &BTreeMap::new(),
            None,
        )
        .unwrap();
        let m = s
            .render(ScriptStep::OtherMaster, "cp-1", &r)
            .unwrap()
            .unwrap();
        assert!(m.contains("manifests-v1.33.1-20260102T030405Z"), "{m}");
        assert_eq!(
            actions(&m),
            [
                Action::SetImage("kube-apiserver".into(), "v1.34.2".into()),
                Action::SetImage("kube-controller-manager".into(), "v1.34.2".into()),
                Action::SetImage("kube-scheduler".into(), "v1.34.2".into()),
            ]
        );
        let k = s.render(ScriptStep::Kubelet, "cp-1", &r).unwrap().unwrap();
        assert_eq!(
            actions(&k),
            [
                Action::KubeletUnit("v1.34.2".into()),
                Action::RestartKubelet
            ]
        );
        assert_eq!(
            Scripts::new(
                settings(CpMethod::Charm, PackageManager::Apt),
                &BTreeMap::new(),
                None
            )
            .unwrap()
            .render(ScriptStep::FirstMaster, "cp-0", &r)
            .unwrap(),
            None
        );
    }

    #[test]
    fn replacements_are_checked_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.sh.j2"),
            "#!/bin/sh\n{% include \"cp-kubeadm-package.sh.j2\" %}\nmy-upgrade {{ machine }} {{ version }}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("typo.sh.j2"), "echo {{ verison }}\n").unwrap();
        let ok = BTreeMap::from([("first_master".to_string(), PathBuf::from("mine.sh.j2"))]);
        let s = Scripts::new(
            settings(CpMethod::Kubeadm, PackageManager::Yum),
            &ok,
            Some(dir.path()),
        )
        .unwrap();
        let text = s
            .render(ScriptStep::FirstMaster, "cp-0", &run())
            .unwrap()
            .unwrap();
        assert!(
            text.contains("yum install -y --disableexcludes=kubernetes \"kubeadm-1.34.2\""),
            "{text}"
        );
        assert!(text.contains("my-upgrade cp-0 v1.34.2"), "{text}");
        for (file, says) in [
            ("typo.sh.j2", "does not render"),
            ("missing.sh.j2", "cannot be read"),
        ] {
            let bad = BTreeMap::from([("kubelet".to_string(), PathBuf::from(file))]);
            let e = Scripts::new(
                settings(CpMethod::Kubeadm, PackageManager::Apt),
                &bad,
                Some(dir.path()),
            )
            .unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(
                msg.starts_with("control_plane.templates.kubelet: "),
                "{msg}"
            );
            assert!(msg.contains(says), "{msg}");
        }
    }

    #[test]
    fn masters_map_to_machines_by_provider_id_or_name() {
        use crate::control_plane::facts::tests::node;
        let nodes = vec![
            node("cp-0", true, None, "v1.33.1"),
            node("cp-1", true, None, "v1.33.1"),
        ];
        let f = crate::control_plane::Facts::from_objects(
            KubeVersion::parse("v1.33.1").unwrap(),
            &nodes,
            &[],
            &crate::config::Config::default(),
        );
        let listed = vec![Machine {
            name: "kubernetes-control-plane-7".into(),
            pool: "control-plane".into(),
            provider_id: None,
            node_name: Some("cp-1".into()),
            state: MachineState::Running,
            address: None,
            details: BTreeMap::from([(
                "unit".to_string(),
                "kubernetes-control-plane/7".to_string(),
            )]),
        }];
        let m = machines_for(&f.masters, &listed);
        assert_eq!(m["cp-0"].name, "cp-0");
        assert_eq!(m["cp-1"].details["unit"], "kubernetes-control-plane/7");
        assert_eq!(tail("a\n\nb\nc\nd\n", 2), "c | d");
    }
}
