//! Bootstrap data for new machines, rendered from the templates in `templates/`.
//!
//! Every provider that boots a machine from scratch hands it a bootstrap: cloud-init
//! user-data that installs the pool's kubelet and runs `kubeadm join` (EC2, bare metal),
//! a kubelet systemd unit (CoreOS style), a Juju bundle. The templates are minijinja,
//! rendered with [`BootstrapContext`]; the result is a [`Secret`] because it carries the
//! join token. The RBAC manifest for kbg itself is rendered the same way from an
//! [`RbacContext`] ([`render_rbac`]); it holds nothing secret.
//!
//! The engine is set up the way YAML templates need it: no auto-escaping (minijinja
//! would otherwise JSON-escape `*.yaml` output), trailing newlines kept, and strict
//! undefined variables, so a typo in a template is an error, not an empty string. A
//! `tojson` filter quotes a value as JSON (valid YAML) where user text lands in a document.

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
    /// `templates/kubelet.service.j2`: a kubelet systemd unit in the CoreOS kubelet-wrapper
    /// style, carrying the pool's version as `KUBELET_VERSION` and its labels and taints as
    /// kubelet flags. No secret in it: the kubelet joins with a bootstrap kubeconfig.
    KubeletService,
    /// `templates/juju-bundle.yaml.j2`: a Juju bundle overlay with one worker application
    /// for the pool. Needs the variable `juju` (see [`BootstrapContext::with_var`]):
    /// `{application, charm, channel, base, series, num_units, constraints, options,
    /// relations}`, where `base`, `series` and `constraints` may be `null`, `options` maps
    /// charm option names to values and `relations` maps the application's endpoints to
    /// `<application>:<endpoint>` on the other side. The Juju provider fills it in.
    JujuBundle,
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
            BuiltinTemplate::KubeletService => "kubelet.service.j2",
            BuiltinTemplate::JujuBundle => "juju-bundle.yaml.j2",
            BuiltinTemplate::MetalBootstrap => "metal-bootstrap.sh.j2",
        }
    }

    fn source(self) -> &'static str {
        match self {
            BuiltinTemplate::CloudInitKubeadm => {
                include_str!("../../../templates/cloud-init-kubeadm.yaml.j2")
            }
            BuiltinTemplate::KubeletService => {
                include_str!("../../../templates/kubelet.service.j2")
            }
            BuiltinTemplate::JujuBundle => include_str!("../../../templates/juju-bundle.yaml.j2"),
            BuiltinTemplate::MetalBootstrap => {
                include_str!("../../../templates/metal-bootstrap.sh.j2")
            }
        }
    }
}

/// The names [`BootstrapContext`] defines itself; [`BootstrapContext::with_var`] cannot
/// take them.
const RESERVED_VARIABLES: [&str; 12] = [
    "cloud",
    "pool",
    "machine",
    "version",
    "semver",
    "minor",
    "labels",
    "taints",
    "node_labels",
    "register_with_taints",
    "join",
    "settings",
];

/// What a bootstrap template sees.
///
/// Variables: `pool`, `machine`, `version` (`v1.31.2`), `semver` (`1.31.2`), `minor`
/// (`1.31`), `labels` (map), `taints` (list of `{key, value, effect}`), `node_labels`
/// (the kubelet's `--node-labels` value, `k=v,k2=v2`), `register_with_taints`
/// (`k=v:NoSchedule,…`), `join.endpoint`, `join.token`, `join.ca_cert_hash`,
/// `settings` (the provider's own block from `kbg.yaml`) and `cloud` (see
/// [`BootstrapContext::on_cloud`]), plus whatever a provider adds with
/// [`BootstrapContext::with_var`].
#[derive(Clone, Debug, Serialize)]
pub struct BootstrapContext {
    cloud: String,
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
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
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
            cloud: String::new(),
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
            extra: BTreeMap::new(),
        }
    }

    /// The same context for a machine booting on `cloud` (`aws`): a template can then ask
    /// the platform at boot for what kbg cannot know when it renders, e.g.
    /// [`BuiltinTemplate::CloudInitKubeadm`] reads the instance ID and availability zone
    /// from EC2's instance metadata (IMDSv2) and registers the node with the provider ID
    /// `aws:///<az>/<instance-id>`, as the AWS cloud provider writes it. Without it
    /// (`cloud` is `""`) templates stay generic.
    #[must_use]
    pub fn on_cloud(mut self, cloud: &str) -> Self {
        self.cloud = cloud.to_string();
        self
    }

    /// The same context with one more variable, `name`, for a provider's own template
    /// (the Juju provider adds `juju` for [`BuiltinTemplate::JujuBundle`]). Never put a
    /// secret in a variable whose template output is not itself treated as a secret.
    ///
    /// # Panics
    /// If `name` is one of the context's own variables (`pool`, `machine`, `version`, …):
    /// that is a bug in the caller, not bad input.
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        let name = name.into();
        assert!(
            !RESERVED_VARIABLES.contains(&name.as_str()),
            "bootstrap variable `{name}` is reserved"
        );
        self.extra.insert(name, value);
        self
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
    // `tojson`: a value as JSON, which is also valid YAML: strings quoted and escaped, so a
    // label or a charm option cannot break the document it lands in.
    env.add_filter("tojson", |value: minijinja::Value| {
        serde_json::to_string(&value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })
    });
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

/// What the RBAC manifest (`templates/rbac.yaml.j2`) is rendered for.
///
/// The manifest holds a ServiceAccount, a ClusterRole and ClusterRoleBinding with the
/// cluster-wide permissions kbg needs (nodes, pods, `pods/eviction`, PDBs, workload
/// controllers, events.k8s.io Events), and a Role and RoleBinding for its state ConfigMap
/// and Leases in the state namespace only; each verb is one kbg uses (`tests/e2e_rbac.rs`
/// in the kbg package checks the rules against the requests of a whole blue/green).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RbacContext {
    /// Name of the ServiceAccount, ClusterRole and ClusterRoleBinding; the Role and
    /// RoleBinding are `<name>-state`. Default `kbg`.
    pub name: String,
    /// The ServiceAccount's namespace. Default `kube-system`.
    pub namespace: String,
    /// Where kbg keeps its state ConfigMap and Leases. Default `kube-system`, as kbg's
    /// own default.
    pub state_namespace: String,
    /// Also allow `create` on nodes: only the sim provider, whose machines are Node
    /// objects, needs it. Default `false`.
    pub node_create: bool,
}

impl Default for RbacContext {
    fn default() -> Self {
        RbacContext {
            name: "kbg".into(),
            namespace: "kube-system".into(),
            state_namespace: "kube-system".into(),
            node_create: false,
        }
    }
}

/// Render kbg's RBAC manifest (`templates/rbac.yaml.j2`): multi-document YAML ready for
/// `kubectl apply -f`.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] naming the field when a name is not a valid Kubernetes
/// name (a lowercase RFC 1123 label); [`ErrorKind::Failed`] if the template does not
/// render (a bug in the shipped template).
pub fn render_rbac(ctx: &RbacContext) -> Result<String, ProviderError> {
    for (field, value) in [
        ("name", &ctx.name),
        ("namespace", &ctx.namespace),
        ("state_namespace", &ctx.state_namespace),
    ] {
        if !is_dns_label(value) {
            return Err(ProviderError::invalid_config(
                "rbac",
                field,
                format!(
                    "`{value}` is not a valid Kubernetes name: use 1-63 lowercase letters, \
                     digits and `-`, starting and ending with a letter or digit"
                ),
            ));
        }
    }
    environment()
        .render_named_str(RBAC_FILE, RBAC_SOURCE, Serde(ctx))
        .map_err(|e| {
            ProviderError::new(
                "bootstrap",
                ErrorKind::Failed,
                format!("template {RBAC_FILE} does not render: {e}"),
            )
        })
}

const RBAC_FILE: &str = "rbac.yaml.j2";
const RBAC_SOURCE: &str = include_str!("../../../templates/rbac.yaml.j2");

/// An RFC 1123 label, as Kubernetes names namespaces (and, here, the RBAC objects).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
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
    fn cloud_init_on_aws_registers_the_provider_id_from_instance_metadata() {
        let generic = render_builtin(
            BuiltinTemplate::CloudInitKubeadm,
            &BootstrapContext::new(&pool(), "beta-0"),
        )
        .unwrap();
        assert!(!generic.expose().contains("provider-id"));
        assert!(!generic.expose().contains("169.254.169.254"));
        let out = render_builtin(
            BuiltinTemplate::CloudInitKubeadm,
            &BootstrapContext::new(&pool(), "beta-0").on_cloud("aws"),
        )
        .unwrap();
        let text = out.expose();
        insta::assert_snapshot!(text);
        // Still one YAML document cloud-init reads; the join configuration in it names the
        // machine and carries the placeholder the boot script fills in.
        let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let files = doc["write_files"].as_array().unwrap();
        let file = |path: &str| {
            files
                .iter()
                .find(|f| f["path"] == path)
                .unwrap_or_else(|| panic!("{path} in {files:?}"))
        };
        let join: serde_json::Value =
            serde_saphyr::from_str(file("/etc/kbg/join.yaml")["content"].as_str().unwrap())
                .unwrap();
        assert_eq!(join["nodeRegistration"]["name"], "beta-0");
        assert_eq!(
            join["nodeRegistration"]["kubeletExtraArgs"]["provider-id"],
            "@PROVIDER_ID@"
        );
        let script = file("/etc/kbg/provider-id.sh");
        assert_eq!(script["permissions"], "0700");
        let script = script["content"].as_str().unwrap();
        // IMDSv2: a token by PUT, then GETs that carry it.
        assert!(script.contains("-X PUT \"$imds/api/token\""), "{script}");
        assert!(
            script.contains("X-aws-ec2-metadata-token: $token"),
            "{script}"
        );
        assert!(script.contains("aws:///$az/$id"), "{script}");
        let runcmd: Vec<&str> = doc["runcmd"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert!(
            runcmd.contains(&"/etc/kbg/provider-id.sh && kubeadm join --config /etc/kbg/join.yaml"),
            "{runcmd:?}"
        );
    }

    /// The boot script under a real `sh`, with a stand-in for `curl` that answers as EC2's
    /// instance metadata service does for IMDSv2 (a token for the PUT; metadata only for
    /// GETs carrying that token), and the join configuration in a temp dir.
    #[test]
    fn the_aws_boot_script_fills_in_the_provider_id_from_imdsv2() {
        let out = render_builtin(
            BuiltinTemplate::CloudInitKubeadm,
            &BootstrapContext::new(&pool(), "beta-0").on_cloud("aws"),
        )
        .unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(out.expose()).unwrap();
        let content = |path: &str| {
            doc["write_files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == path)
                .unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let join = dir.path().join("join.yaml");
        std::fs::write(&join, content("/etc/kbg/join.yaml")).unwrap();
        let script = dir.path().join("provider-id.sh");
        std::fs::write(
            &script,
            content("/etc/kbg/provider-id.sh")
                .replace("/etc/kbg/join.yaml", join.to_str().unwrap()),
        )
        .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(
            bin.join("curl"),
            r#"#!/bin/sh
method=GET; token=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -X) method=$2; shift ;;
    -H) case "$2" in X-aws-ec2-metadata-token:*) token=${2#*: } ;; esac; shift ;;
    --retry) shift ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
echo "$method $url" >> "$(dirname "$0")/calls"
case "$method $url" in
  "PUT http://169.254.169.254/latest/api/token") echo "t0k3n" ;;
  "GET http://169.254.169.254/latest/meta-data/"*)
    [ "$token" = t0k3n ] || { echo "401 Unauthorized" >&2; exit 22; }
    case "$url" in
      */instance-id) echo "i-0123456789abcdef0" ;;
      */placement/availability-zone) echo "eu-west-1b" ;;
      *) exit 22 ;;
    esac ;;
  *) exit 22 ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(
            bin.join("curl"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let status = std::process::Command::new("sh")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .status()
            .unwrap();
        assert!(status.success());
        let filled = std::fs::read_to_string(&join).unwrap();
        assert!(
            filled.contains("provider-id: \"aws:///eu-west-1b/i-0123456789abcdef0\""),
            "{filled}"
        );
        assert!(!filled.contains("@PROVIDER_ID@"));
        let calls = std::fs::read_to_string(bin.join("calls")).unwrap();
        assert!(
            calls.starts_with("PUT http://169.254.169.254/latest/api/token\n"),
            "{calls}"
        );
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

    fn no_taints() -> PoolSpec {
        PoolSpec {
            taints: Vec::new(),
            ..pool()
        }
    }

    #[test]
    fn kubelet_unit_carries_the_version_labels_and_taints() {
        let out = render_builtin(
            BuiltinTemplate::KubeletService,
            &BootstrapContext::new(&pool(), "beta-0"),
        )
        .unwrap();
        let text = out.expose();
        assert!(
            text.contains("Environment=KUBELET_VERSION=v1.31.2\n"),
            "{text}"
        );
        assert!(
            !text.contains("0123456789abcdef"),
            "no join token in a unit file"
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn kubelet_unit_without_taints_has_no_dangling_continuation() {
        let out = render_builtin(
            BuiltinTemplate::KubeletService,
            &BootstrapContext::new(&no_taints(), "beta-0"),
        )
        .unwrap();
        let text = out.expose();
        assert!(!text.contains("register-with-taints"), "{text}");
        let exec_start: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("ExecStart="))
            .take_while(|l| !l.starts_with("ExecStop="))
            .collect();
        let last = exec_start.last().unwrap();
        assert_eq!(*last, "  --node-labels=kbg.io/pool=beta,tier=web");
        assert!(
            exec_start[..exec_start.len() - 1]
                .iter()
                .all(|l| l.ends_with(" \\")),
            "{exec_start:?}"
        );
    }

    fn juju_var() -> serde_json::Value {
        serde_json::json!({
            "application": "beta",
            "charm": "kubernetes-worker",
            "channel": "1.31/stable",
            "base": "ubuntu@22.04",
            "series": null,
            "num_units": 3,
            "constraints": "cores=4 mem=16G",
            "options": {
                "channel": "1.31/stable",
                "labels": "kbg.io/pool=beta tier=web",
                "kubelet-extra-args": "register-with-taints=dedicated=web:NoSchedule",
                "ingress": false,
            },
            "relations": {
                "kube-control": "kubernetes-control-plane:kube-control",
                "certificates": "easyrsa:client",
            },
        })
    }

    #[test]
    fn juju_bundle_names_the_application_after_the_pool() {
        let ctx = BootstrapContext::new(&pool(), "beta").with_var("juju", juju_var());
        let out = render_builtin(BuiltinTemplate::JujuBundle, &ctx).unwrap();
        insta::assert_snapshot!(out.expose());
        // It is a YAML document Juju can read, with the values kbg meant.
        let doc: serde_json::Value = serde_saphyr::from_str(out.expose()).unwrap();
        let app = &doc["applications"]["beta"];
        assert_eq!(app["num_units"], 3);
        assert_eq!(app["channel"], "1.31/stable");
        assert_eq!(app["options"]["ingress"], false);
        assert_eq!(app["options"]["labels"], "kbg.io/pool=beta tier=web");
        assert_eq!(
            doc["relations"],
            serde_json::json!([
                ["beta:certificates", "easyrsa:client"],
                ["beta:kube-control", "kubernetes-control-plane:kube-control"]
            ])
        );
    }

    #[test]
    fn juju_bundle_needs_its_variable() {
        let err = render_builtin(
            BuiltinTemplate::JujuBundle,
            &BootstrapContext::new(&pool(), "beta"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("juju-bundle.yaml.j2"), "{err}");
    }

    #[test]
    #[should_panic(expected = "reserved")]
    fn provider_variables_cannot_shadow_the_context() {
        let _ = BootstrapContext::new(&pool(), "beta-0").with_var("version", "v9".into());
    }

    #[test]
    fn rbac_manifest_snapshot() {
        insta::assert_snapshot!(render_rbac(&RbacContext::default()).unwrap());
    }

    /// The rules, as `(kind, namespace, group, resource) -> verbs`.
    fn rbac_rules(manifest: &str) -> BTreeMap<(String, String, String, String), Vec<String>> {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(manifest).unwrap();
        let mut rules = BTreeMap::new();
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            for rule in doc["rules"].as_array().into_iter().flatten() {
                let verbs: Vec<String> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                for group in rule["apiGroups"].as_array().unwrap() {
                    for resource in rule["resources"].as_array().unwrap() {
                        let key = (
                            kind.clone(),
                            ns.clone(),
                            group.as_str().unwrap().to_string(),
                            resource.as_str().unwrap().to_string(),
                        );
                        assert!(
                            rules.insert(key.clone(), verbs.clone()).is_none(),
                            "{key:?} twice"
                        );
                    }
                }
            }
        }
        rules
    }

    #[test]
    fn rbac_grants_exactly_what_kbg_needs() {
        let ctx = RbacContext {
            state_namespace: "kbg-system".into(),
            ..RbacContext::default()
        };
        let rules = rbac_rules(&render_rbac(&ctx).unwrap());
        let v = |verbs: &[&str]| verbs.iter().map(ToString::to_string).collect::<Vec<_>>();
        let k = |kind: &str, ns: &str, group: &str, resource: &str| {
            (kind.into(), ns.into(), group.into(), resource.into())
        };
        let list_watch = ["list", "watch"];
        let expected = BTreeMap::from([
            (
                k("ClusterRole", "", "", "nodes"),
                v(&["get", "list", "watch", "patch", "delete"]),
            ),
            (k("ClusterRole", "", "", "pods"), v(&list_watch)),
            (k("ClusterRole", "", "", "pods/eviction"), v(&["create"])),
            (
                k("ClusterRole", "", "policy", "poddisruptionbudgets"),
                v(&list_watch),
            ),
            (k("ClusterRole", "", "apps", "deployments"), v(&list_watch)),
            (k("ClusterRole", "", "apps", "statefulsets"), v(&list_watch)),
            (
                k("ClusterRole", "", "apps", "replicasets"),
                v(&["get", "list", "watch"]),
            ),
            (k("ClusterRole", "", "apps", "daemonsets"), v(&["list"])),
            (
                k("ClusterRole", "", "events.k8s.io", "events"),
                v(&["create", "patch"]),
            ),
            (
                k("Role", "kbg-system", "", "configmaps"),
                v(&["get", "create", "update"]),
            ),
            (
                k("Role", "kbg-system", "coordination.k8s.io", "leases"),
                v(&["get", "list", "create", "update"]),
            ),
        ]);
        assert_eq!(rules, expected);

        let sim = rbac_rules(
            &render_rbac(&RbacContext {
                node_create: true,
                ..RbacContext::default()
            })
            .unwrap(),
        );
        assert!(sim[&k("ClusterRole", "", "", "nodes")].contains(&"create".to_string()));
    }

    #[test]
    fn rbac_binds_the_service_account_to_both_roles() {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&render_rbac(&RbacContext::default()).unwrap()).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding"
            ]
        );
        for binding in [&docs[2], &docs[4]] {
            assert_eq!(
                binding["roleRef"]["name"],
                docs[if binding == &docs[2] { 1 } else { 3 }]["metadata"]["name"]
            );
            assert_eq!(
                binding["subjects"],
                serde_json::json!([{"kind": "ServiceAccount", "name": "kbg", "namespace": "kube-system"}])
            );
        }
    }

    #[test]
    fn rbac_refuses_names_kubernetes_would() {
        for bad in ["", "Kbg", "kbg_", "-kbg", "a.b"] {
            let err = render_rbac(&RbacContext {
                name: bad.into(),
                ..RbacContext::default()
            })
            .unwrap_err();
            assert!(matches!(err.kind, ErrorKind::InvalidConfig { .. }), "{bad}");
        }
    }
}
