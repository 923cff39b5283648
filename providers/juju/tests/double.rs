//! The Juju provider against a test double of the `juju` CLI (`tests/fake-juju/juju`, a
//! Python script that keeps a model in a JSON file and records every command line it is
//! given; it is not Juju). The tests assert the recorded command lines, for Juju 3.x and
//! 2.9 syntax.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{Double, names, pool, provider, recorded, s3, summary};
use kbg_provider::{ErrorKind, MachineState, MemoryLedger, Provider, RemoteCommand};
use kbg_provider_juju::JujuProvider;
use serde_json::json;

const RUNNING: MachineState = MachineState::Running;

#[tokio::test]
async fn a_pool_is_deployed_as_an_application_and_reruns_add_nothing() {
    let double = Double::new(json!({"model": "k8s"}));
    let spec = pool(double.settings(json!({
        "model": "k8s",
        "constraints": "cores=4 mem=16G",
        "base": "ubuntu@22.04",
        "config": {"ingress": false},
        "relations": {"kube-control": "kubernetes-control-plane:kube-control",
                      "certificates": "easyrsa:client"},
    })));
    let ledger = Arc::new(MemoryLedger::default());
    let p = provider(&spec, &ledger);

    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2"]))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        summary(&report.machines),
        s3(&[
            ("beta-0", "beta/0", RUNNING),
            ("beta-1", "beta/1", RUNNING),
            ("beta-2", "beta/2", RUNNING)
        ])
    );
    let m = &report.machines[1];
    assert_eq!(m.node_name.as_deref(), Some("juju-4f2a1c-1"));
    assert_eq!(m.address.as_deref(), Some("10.45.0.11"));
    assert_eq!(m.details["instance-id"], "juju-4f2a1c-1");
    assert_eq!(m.details["availability-zone"], "zone-a");

    let lines = double.lines();
    assert_eq!(
        lines[..5],
        [
            "version",
            "status -m k8s --format=json beta",
            "deploy -m k8s kubernetes-worker beta --channel 1.31/stable -n 3 \
             --constraints cores=4 mem=16G --base ubuntu@22.04 --config <file>",
            "status -m k8s --format=json beta",
            "integrate -m k8s beta:certificates easyrsa:client",
        ]
    );
    assert_eq!(
        lines[5],
        "integrate -m k8s beta:kube-control kubernetes-control-plane:kube-control"
    );
    assert!(
        lines[6..]
            .iter()
            .all(|l| l == "status -m k8s --format=json beta")
    );
    // The charm options went in a file, with the pool's labels, taints and kubelet
    // channel; none of it on a command line; the file is gone.
    let deploy = &double.calls()[2];
    assert_eq!(
        deploy["config"],
        json!({"channel": "1.31/stable", "ingress": false,
               "labels": "kbg.io/pool=beta tier=web",
               "kubelet-extra-args": "register-with-taints=dedicated=web:NoSchedule"})
    );
    let file = deploy["argv"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(!Path::new(file).exists(), "{file} left behind");
    assert!(lines.iter().all(|l| !l.contains("tier=web")));
    assert_eq!(
        recorded(&ledger).await,
        json!({"beta-0": "beta/0", "beta-1": "beta/1", "beta-2": "beta/2"})
    );

    // Again: the same machines, nothing deployed or added.
    double.clear_calls();
    let again = p
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2"]))
        .await
        .unwrap();
    assert_eq!(summary(&again.machines), summary(&report.machines));
    assert!(double.changes().is_empty(), "{:?}", double.changes());
}

#[tokio::test]
async fn a_lost_record_is_rebuilt_by_adoption_not_by_more_units() {
    // kbg died between `juju add-unit` and writing its record: a new provider with an
    // empty record finds the units and adopts them.
    let double = Double::new(json!({"model": "k8s"}));
    let spec = pool(double.settings(json!({"model": "k8s"})));
    let first = Arc::new(MemoryLedger::default());
    provider(&spec, &first)
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2"]))
        .await
        .unwrap();

    double.clear_calls();
    let lost = Arc::new(MemoryLedger::default());
    let p = provider(&spec, &lost);
    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2", "beta-3"]))
        .await
        .unwrap();
    assert_eq!(double.changes(), ["add-unit -m k8s beta -n 1"]);
    assert_eq!(
        summary(&report.machines),
        s3(&[
            ("beta-0", "beta/0", RUNNING),
            ("beta-1", "beta/1", RUNNING),
            ("beta-2", "beta/2", RUNNING),
            ("beta-3", "beta/3", RUNNING)
        ])
    );
    assert_eq!(
        recorded(&lost).await,
        json!({"beta-0": "beta/0", "beta-1": "beta/1", "beta-2": "beta/2", "beta-3": "beta/3"})
    );
}

#[tokio::test]
async fn units_are_removed_one_by_one_and_the_application_with_the_last() {
    let double = Double::new(json!({"model": "k8s"}));
    let spec = pool(double.settings(json!({"model": "k8s"})));
    let ledger = Arc::new(MemoryLedger::default());
    let p = provider(&spec, &ledger);
    let made = p
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2"]))
        .await
        .unwrap()
        .machines;

    double.clear_calls();
    let gone = p.deprovision(&spec, &made[1..2]).await.unwrap();
    assert_eq!(gone.removed, ["beta-1"]);
    assert!(gone.failed.is_empty());
    assert_eq!(double.changes(), ["remove-unit -m k8s beta/1 --no-prompt"]);
    assert_eq!(
        summary(&p.list(&spec).await.unwrap()),
        s3(&[("beta-0", "beta/0", RUNNING), ("beta-2", "beta/2", RUNNING)])
    );

    // A replacement gets a fresh name; Juju gives it the next number (3), and the
    // record remembers which.
    double.clear_calls();
    let more = p
        .provision(&spec, &names(&["beta-0", "beta-2", "beta-4"]))
        .await
        .unwrap();
    assert_eq!(double.changes(), ["add-unit -m k8s beta -n 1"]);
    assert_eq!(
        summary(&more.machines),
        s3(&[
            ("beta-0", "beta/0", RUNNING),
            ("beta-2", "beta/2", RUNNING),
            ("beta-4", "beta/3", RUNNING)
        ])
    );
    // Run-command finds beta-4's unit by the record, even without the unit in details.
    let mut bare = more.machines[2].clone();
    bare.details.clear();
    double.clear_calls();
    let out = p
        .run_command(
            &spec,
            &bare,
            &RemoteCommand {
                script: "echo \"$JUJU_UNIT_NAME\"; echo warn >&2; exit 4".into(),
                timeout_secs: 60,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (4, "beta/3\n", "warn\n")
    );
    assert_eq!(
        double.lines(),
        [
            "exec -m k8s --format=json --unit beta/3 --timeout 60s -- echo \"$JUJU_UNIT_NAME\"; echo warn >&2; exit 4"
        ]
    );

    // All of it: the application goes, in one command.
    double.clear_calls();
    let all = p.list(&spec).await.unwrap();
    let gone = p.deprovision(&spec, &all).await.unwrap();
    assert_eq!(gone.removed, ["beta-0", "beta-2", "beta-4"]);
    assert_eq!(
        double.changes(),
        ["remove-application -m k8s beta --no-prompt"]
    );
    assert!(p.list(&spec).await.unwrap().is_empty());
    assert_eq!(recorded(&ledger).await, json!({}));
    // Already gone is a success, and touches nothing.
    double.clear_calls();
    let again = p.deprovision(&spec, &all).await.unwrap();
    assert_eq!(again.removed.len(), 3);
    assert!(double.changes().is_empty());
}

#[tokio::test]
async fn units_that_fail_to_come_up_are_named_and_removed() {
    let double = Double::new(json!({
        "model": "k8s",
        "faults": {"provisioning": ["beta/1"], "hook": ["beta/2"]},
    }));
    let spec = pool(double.settings(json!({"model": "k8s"})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1", "beta-2"]))
        .await
        .unwrap();
    assert_eq!(
        summary(&report.machines),
        s3(&[("beta-0", "beta/0", RUNNING)])
    );
    let failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
    assert_eq!(
        failed,
        [
            "juju: machine beta-1: unit beta/1: machine provisioning error: no matching \
             instance types; removed (set keep_failed_units to keep it)",
            "juju: machine beta-2: unit beta/2: workload error: hook failed: \"install\"; \
             removed (set keep_failed_units to keep it)",
        ]
    );
    assert!(report.failed.iter().all(|e| !e.is_retryable()));
    assert!(
        double
            .changes()
            .contains(&"remove-unit -m k8s beta/1 beta/2 --no-prompt".to_string())
    );
    // Nothing leaks: once Juju has finished removing them, only beta-0 is left.
    let mut left = p.list(&spec).await.unwrap();
    for _ in 0..5 {
        if left.len() == 1 {
            break;
        }
        assert!(
            left[1..].iter().all(|m| m.state == MachineState::Stopping),
            "{left:?}"
        );
        left = p.list(&spec).await.unwrap();
    }
    assert_eq!(summary(&left), s3(&[("beta-0", "beta/0", RUNNING)]));
}

#[tokio::test]
async fn failed_units_can_be_kept_for_inspection() {
    let double = Double::new(json!({"faults": {"hook": ["beta/0"]}}));
    let spec = pool(double.settings(json!({"keep_failed_units": true})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    let report = p.provision(&spec, &names(&["beta-0"])).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(!report.failed[0].to_string().contains("removed"));
    assert!(double.changes().iter().all(|l| !l.starts_with("remove")));
    let listed = p.list(&spec).await.unwrap();
    assert_eq!(
        summary(&listed),
        s3(&[("beta-0", "beta/0", MachineState::Failed)])
    );
    assert_eq!(
        listed[0].details["reason"],
        "workload error: hook failed: \"install\""
    );
}

#[tokio::test]
async fn slow_units_time_out_retryably_and_are_adopted_by_the_next_run() {
    let double = Double::new(json!({"machine_steps": 100000, "boot_steps": 100001}));
    let spec = pool(double.settings(json!({"wait_timeout_secs": 1})));
    let ledger = Arc::new(MemoryLedger::default());
    let p = provider(&spec, &ledger);
    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(report.machines.is_empty());
    assert_eq!(report.failed.len(), 2);
    for e in &report.failed {
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("not running after 1 s"), "{e}");
    }
    // Not removed: they are still coming up; the next run waits for them.
    double.edit(|st| {
        st["machine_steps"] = json!(1);
        st["boot_steps"] = json!(2);
    });
    double.clear_calls();
    let spec = pool(double.settings(json!({})));
    let p = provider(&spec, &ledger);
    let report = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!(report.machines.len(), 2, "{:?}", report.failed);
    assert!(double.changes().is_empty(), "{:?}", double.changes());
}

#[tokio::test]
async fn the_charm_pause_action_is_the_optional_hand_over() {
    let double = Double::new(json!({"model": "k8s", "faults": {"actions": ["beta/1"]}}));
    let spec = pool(double.settings(json!({"model": "k8s", "use_charm_pause": true})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    assert!(p.uses_charm_pause());
    let made = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap()
        .machines;
    double.clear_calls();
    let report = p.pause(&spec, &made, true, true).await.unwrap();
    assert_eq!(report.done, ["beta-0"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        report.failed[0].to_string(),
        "juju: machine beta-1: action pause on beta/1 failed: kubectl drain failed: cannot \
         evict pod as it would violate the pod's disruption budget"
    );
    assert_eq!(
        double.lines(),
        [
            "run -m k8s --format=json --wait=1800s beta/0 beta/1 pause delete-local-data=true force=true"
        ]
    );
    assert_eq!(
        double.state()["applications"]["beta"]["units"]["beta/0"]["pause_params"],
        json!({"delete-local-data": "true", "force": "true"})
    );
    double.clear_calls();
    let back = p.resume(&spec, &made[..1]).await.unwrap();
    assert_eq!(back.done, ["beta-0"]);
    assert_eq!(
        double.lines(),
        ["run -m k8s --format=json --wait=1800s beta/0 resume"]
    );
}

#[tokio::test]
async fn masters_are_refreshed_in_place() {
    let double = Double::new(json!({}));
    let spec = pool(double.settings(json!({"application": "workers-b"})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    p.provision(&spec, &names(&["beta-0"])).await.unwrap();
    double.edit(|st| {
        st["applications"]["kubernetes-control-plane"] = json!({
            "charm": "kubernetes-control-plane", "channel": "1.31/stable", "config": {},
            "relations": {}, "units": {}, "next_unit": 0});
    });
    double.clear_calls();
    p.refresh_application("kubernetes-control-plane", Some("1.32/stable"))
        .await
        .unwrap();
    p.set_charm_config(
        "kubernetes-control-plane",
        &BTreeMap::from([("channel".to_string(), json!("1.32/stable"))]),
    )
    .await
    .unwrap();
    assert_eq!(
        double.lines(),
        [
            "refresh kubernetes-control-plane --channel 1.32/stable",
            "config kubernetes-control-plane --file <file>",
        ]
    );
    let st = double.state();
    assert_eq!(
        st["applications"]["kubernetes-control-plane"]["channel"],
        "1.32/stable"
    );
    assert_eq!(
        st["applications"]["kubernetes-control-plane"]["config"]["channel"],
        "1.32/stable"
    );
    // The pool's application was named by the setting, its machines still by the pool.
    let listed = p.list(&spec).await.unwrap();
    assert_eq!(summary(&listed), s3(&[("beta-0", "workers-b/0", RUNNING)]));
}

#[tokio::test]
async fn juju_2_9_gets_its_own_syntax() {
    let double = Double::new(json!({"version": "2.9.45", "model": "k8s"}));
    let spec = pool(double.settings(json!({
        "model": "k8s",
        "base": "ubuntu@22.04",
        "relations": {"kube-control": "kubernetes-master:kube-control"},
    })));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    let made = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(made.failed.is_empty(), "{:?}", made.failed);
    let out = p
        .run_command(
            &spec,
            &made.machines[0],
            &RemoteCommand {
                script: "echo hi; exit 2".into(),
                timeout_secs: 30,
            },
        )
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (2, "hi\n"));
    let paused = p.pause(&spec, &made.machines, true, false).await.unwrap();
    assert_eq!(paused.done, ["beta-0", "beta-1"]);
    double.edit(|st| {
        st["applications"]["kubernetes-master"] = json!({
            "charm": "kubernetes-master", "channel": "1.31/stable", "config": {},
            "relations": {}, "units": {}, "next_unit": 0});
    });
    p.refresh_application("kubernetes-master", Some("1.32/stable"))
        .await
        .unwrap();
    let gone = p.deprovision(&spec, &made.machines).await.unwrap();
    assert_eq!(gone.removed, ["beta-0", "beta-1"]);
    assert_eq!(
        double.changes(),
        [
            "deploy -m k8s kubernetes-worker beta --channel 1.31/stable -n 2 --series jammy \
             --config <file>",
            "add-relation -m k8s beta:kube-control kubernetes-master:kube-control",
            "run -m k8s --format=json --unit beta/0 --timeout 30s -- echo hi; exit 2",
            "run-action -m k8s --format=json --wait=1800s beta/0 beta/1 pause \
             delete-local-data=true force=false",
            "upgrade-charm -m k8s kubernetes-master --channel 1.32/stable",
            "remove-application -m k8s beta",
        ]
    );
}

#[tokio::test]
async fn a_cli_without_no_prompt_is_asked_again_without_it() {
    let double = Double::new(json!({"version": "3.0.3", "no_prompt_flag": false}));
    let spec = pool(double.settings(json!({})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    let made = p
        .provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    double.clear_calls();
    let gone = p.deprovision(&spec, &made.machines[..1]).await.unwrap();
    assert_eq!(gone.removed, ["beta-0"]);
    assert_eq!(
        double.changes(),
        ["remove-unit beta/0 --no-prompt", "remove-unit beta/0"]
    );
}

#[tokio::test]
async fn juju_errors_come_out_as_one_line_with_jujus_words() {
    // The wrong model.
    let double = Double::new(json!({"model": "k8s"}));
    let spec = pool(double.settings(json!({"model": "k9s"})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    let err = p.list(&spec).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "juju: juju status: model \"k9s\" not found"
    );

    // Juju refuses the deploy: nothing was created.
    let double = Double::new(json!({"faults": {"commands": {
        "deploy": "ERROR cannot resolve charm or bundle \"kubernetes-wrker\": charm not found"}}}));
    let spec = pool(double.settings(json!({"charm": "kubernetes-wrker"})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    let err = p.provision(&spec, &names(&["beta-0"])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "juju: juju deploy: cannot resolve charm or bundle \"kubernetes-wrker\": charm not found"
    );
    assert!(p.list(&spec).await.unwrap().is_empty());

    // No juju at all: the setting to fix is named.
    let spec = pool(json!({"juju": "/nonexistent/juju"}));
    let p = JujuProvider::from_pool(&spec).unwrap();
    let err = p.list(&spec).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::InvalidConfig {
            field: "pools.beta.juju.juju".into()
        }
    );

    // An application on its way out cannot take new units.
    let double = Double::new(json!({}));
    let spec = pool(double.settings(json!({})));
    let p = provider(&spec, &Arc::new(MemoryLedger::default()));
    p.provision(&spec, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    double.edit(|st| st["applications"]["beta"]["life"] = json!("dying"));
    let err = p.provision(&spec, &names(&["beta-2"])).await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("being removed"),
        "{err}"
    );
}
