//! Bootstrap data for new machines, rendered from the templates in `templates/`.
//!
//! Every provider that boots a machine from scratch hands it a bootstrap: cloud-init
//! user-data that installs the pool's kubelet and runs `kubeadm join` (EC2, bare metal),
//! a kubelet systemd unit (CoreOS style), a Juju bundle. The templates are minijinja,
//! rendered with [`BootstrapContext`]; the result is a [`Secret`] because it carries the
//! join token.
//!
//! The engine is set up the way YAML templates need it: no auto-escaping (minijinja
//! would otherwise JSON-escape `*.yaml` output), trailing newlines kept, and strict
//! undefined variables, so a typo in a template is an error, not an empty string.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::{ErrorKind, PoolSpec, ProviderError, Secret, Taint};

/// A template that ships with kbg (the files in `templates/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuiltinTemplate {
    /// `templates/cloud-init-kubeadm.yaml.j2`: cloud-init user-data that installs the
    /// pool's kubeadm/kubelet version and runs `kubeadm join` with its labels and taints.
    CloudInitKubeadm,
    /// `templates/metal-bootstrap.sh.j2`: a POSIX shell script for a pre-provisioned
    /// bare-metal host that installs the pool's kubeadm/kubelet version (apt or dnf) and
    /// runs `kubeadm join` with its labels and taints.
    MetalBootstrap,
}

impl BuiltinTemplate {
    /// The template's file name in `templates/`.
    pub fn file_name(self) -> &'static str {
        match self {
            BuiltinTemplate::CloudInitKubeadm => "cloud-init-kubeadm.yaml.j2",
            BuiltinTemplate::MetalBootstrap => "metal-bootstrap.sh.j2",
        }
    }

    fn source(self) -> &'static str {
        match self {
            BuiltinTemplate::CloudInitKubeadm => {
                include_str!("../../../templates/cloud-init-kubeadm.yaml.j2")
            }
            BuiltinTemplate::MetalBootstrap => {
                include_str!("../../../templates/metal-bootstrap.sh.j2")
            }
        }
    }
}

/// What a bootstrap template sees.
///
/// Variables: `pool`, `machine`, `version` (`v1.31.2`), `semver` (`1.31.2`), `minor`
/// (`1.31`), `labels` (map), `taints` (list of `{key, value, effect}`), `node_labels`
/// (the kubelet's `--node-labels` value, `k=v,k2=v2`), `register_with_taints`
/// (`k=v:NoSchedule,…`), `join.endpoint`, `join.token`, `join.ca_cert_hash`, and
/// `settings` (the provider's own block from `kbg.yaml`).
#[derive(Clone, Debug, Serialize)]
pub struct BootstrapContext {
    pool: String,
    machine: String,
    version: String,
    semver: String,
    minor: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    node_labels: String,
    register_with_taints: String,
    join: JoinView,
    settings: serde_json::Value,
}

#[derive(Clone, Serialize)]
struct JoinView {
    endpoint: String,
    token: String,
    ca_cert_hash: String,
}

impl std::fmt::Debug for JoinView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinView")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl BootstrapContext {
    /// The context for `machine` of `pool`.
    pub fn new(pool: &PoolSpec, machine: &str) -> Self {
        let semver = pool.version.trim_start_matches('v').to_string();
        let minor = semver.split('.').take(2).collect::<Vec<_>>().join(".");
        let node_labels = pool
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let register_with_taints = pool
            .taints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        BootstrapContext {
            pool: pool.name.clone(),
            machine: machine.to_string(),
            version: pool.version.clone(),
            semver,
            minor,
            labels: pool.labels.clone(),
            taints: pool.taints.clone(),
            node_labels,
            register_with_taints,
            join: JoinView {
                endpoint: pool.join.api_server_endpoint.clone(),
                token: pool
                    .join
                    .token
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
                ca_cert_hash: pool
                    .join
                    .ca_cert_hash
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
            },
            settings: pool.settings.clone(),
        }
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
    env
}

/// Render a built-in template for `ctx`.
///
/// # Errors
/// [`ErrorKind::Failed`] if the template does not render (a bug in a shipped template).
pub fn render_builtin(
    template: BuiltinTemplate,
    ctx: &BootstrapContext,
) -> Result<Secret, ProviderError> {
    render_str(template.file_name(), template.source(), ctx)
}

/// Render a user's template (`source`, read from the file `name`) for `ctx`.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] naming `name` and minijinja's message (syntax error,
/// undefined variable) when it does not render.
pub fn render_str(
    name: &str,
    source: &str,
    ctx: &BootstrapContext,
) -> Result<Secret, ProviderError> {
    let env = environment();
    env.render_named_str(name, source, Serde(ctx))
        .map(Secret::new)
        .map_err(|e| {
            ProviderError::new(
                "bootstrap",
                ErrorKind::InvalidConfig {
                    field: format!("template {name}"),
                },
                format!("does not render: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JoinConfig, TaintEffect};

    pub(crate) fn pool() -> PoolSpec {
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
            settings: serde_json::Value::Null,
            template: None,
            join: JoinConfig {
                api_server_endpoint: "10.0.0.10:6443".into(),
                token: Some(Secret::new("abcdef.0123456789abcdef")),
                ca_cert_hash: Some(Secret::new("sha256:00ff")),
            },
        }
    }

    #[test]
    fn cloud_init_joins_with_the_pools_version_labels_and_taints() {
        let out = render_builtin(
            BuiltinTemplate::CloudInitKubeadm,
            &BootstrapContext::new(&pool(), "beta-0"),
        )
        .unwrap();
        insta::assert_snapshot!(out.expose());
    }

    #[test]
    fn context_debug_hides_the_token() {
        let ctx = BootstrapContext::new(&pool(), "beta-0");
        let shown = format!("{ctx:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("10.0.0.10:6443"));
    }

    #[test]
    fn undefined_variables_are_errors_not_blanks() {
        let err = render_str(
            "mine.j2",
            "{{ no_such_thing }}",
            &BootstrapContext::new(&pool(), "beta-0"),
        )
        .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::InvalidConfig { .. }));
        assert!(err.to_string().contains("mine.j2"), "{err}");
    }
}
