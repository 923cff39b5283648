//! `kbg rbac`: print the RBAC manifest kbg needs (`templates/rbac.yaml.j2`), ready for
//! `kubectl apply -f -`: a ServiceAccount, a ClusterRole and its binding for what kbg does
//! cluster-wide, and a Role and its binding for its state ConfigMap and Leases in the
//! state namespace (`--state-namespace`, `cluster.state_namespace`). The rules are the ones
//! `tests/e2e_rbac.rs` checks against every request kbg makes in a blue/green run.
//!
//! Nodes get `create` only when `kbg.yaml` has a pool of the sim provider, whose machines
//! are Node objects. Nothing is sent to a cluster.

use std::process::ExitCode;

use kbg_provider::bootstrap::{RbacContext, render_rbac};

use crate::cli::{OutputFormat, RbacArgs};
use crate::error::{Error, Result};
use crate::settings::Settings;

/// `kbg rbac`.
///
/// # Errors
/// Exit 2 when a name is not a valid Kubernetes name (the message names the flag).
pub fn run(settings: &Settings, args: &RbacArgs) -> Result<ExitCode> {
    let ctx = RbacContext {
        name: args.service_account.clone(),
        namespace: args.namespace.clone(),
        state_namespace: settings.state_namespace.clone(),
        node_create: settings
            .config
            .pools
            .values()
            .any(|p| p.provider == kbg_provider_sim::NAME),
    };
    let manifest = render_rbac(&ctx).map_err(|e| {
        let flag = match &e.kind {
            kbg_provider::ErrorKind::InvalidConfig { field } => match field.as_str() {
                "name" => "--service-account",
                "namespace" => "--namespace",
                _ => "--state-namespace",
            },
            _ => "rbac",
        };
        Error::usage(format!("{flag}: {}", e.message))
    })?;
    let text = match settings.output {
        OutputFormat::Table | OutputFormat::Yaml => manifest,
        OutputFormat::Json => {
            let items: Vec<serde_json::Value> = serde_saphyr::from_multiple(&manifest)
                .map_err(|e| Error::Failed(format!("the RBAC manifest does not parse: {e}")))?;
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            serde_json::to_string_pretty(&list).expect("JSON values serialise") + "\n"
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
