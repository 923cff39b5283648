//! The metal provider against real OpenSSH servers on loopback (see `support/mod.rs`):
//! provisioning takes free hosts and bootstraps them over SSH, reruns take nothing more,
//! failures are reported per machine without leaking hosts, deprovisioning resets and
//! frees, run-command reports what ran, host keys are checked, and secrets stay secret.

mod support;

use std::sync::Arc;

use kbg_provider::{
    ErrorKind, Ledger, Machine, MachineState, MemoryLedger, PoolSpec, Provider as _,
};
use kbg_provider_metal::book::{self, Assignment, HostState, LEDGER_KEY};
use kbg_provider_metal::{MetalOptions, MetalProvider};
use serde_json::json;
use support::{CA_HASH, Lab, TOKEN, TOKEN_SECRET};

/// A lab of `hosts`, an empty ledger, pool beta at v1.31.2, and its provider.
async fn setup(hosts: &[&str]) -> (Lab, Arc<dyn Ledger>, PoolSpec, MetalProvider) {
    let lab = Lab::start(hosts, None);
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let pool = lab.pool("beta", "v1.31.2", json!({}));
    let provider = lab.provider(&pool, ledger.clone()).await;
    (lab, ledger, pool, provider)
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(ToString::to_string).collect()
}

/// Host name → (pool, machine, state), from the ledger.
async fn assignments(ledger: &dyn Ledger) -> Vec<(String, String, String, HostState)> {
    let (b, _) = book::load(ledger).await.unwrap();
    b.hosts
        .into_iter()
        .map(|(h, a)| (h, a.pool, a.machine, a.state))
        .collect()
}

fn by_host(rows: &[(&str, &str, &str, HostState)]) -> Vec<(String, String, String, HostState)> {
    rows.iter()
        .map(|(h, p, m, s)| (h.to_string(), p.to_string(), m.to_string(), *s))
        .collect()
}

#[tokio::test]
async fn provision_takes_two_of_three_hosts_and_a_rerun_takes_none_more() {
    let (lab, ledger, pool, provider) = setup(&["host-a", "host-b", "host-c"]).await;

    let report = provider
        .provision(&pool, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let got: Vec<_> = report
        .machines
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.provider_id.as_deref(),
                m.node_name.as_deref(),
                m.state,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "beta-0",
                Some("metal://host-a"),
                Some("beta-0"),
                MachineState::Running
            ),
            (
                "beta-1",
                Some("metal://host-b"),
                Some("beta-1"),
                MachineState::Running
            ),
        ]
    );
    assert_eq!(
        assignments(ledger.as_ref()).await,
        by_host(&[
            ("host-a", "beta", "beta-0", HostState::Ready),
            ("host-b", "beta", "beta-1", HostState::Ready),
        ])
    );

    // The bootstrap ran on the two hosts with the pool's version, labels and taints.
    for (host, machine) in [("host-a", "beta-0"), ("host-b", "beta-1")] {
        let h = lab.host(host);
        let calls = h.calls();
        assert!(
            calls.iter().any(|c| c.starts_with("apt-get install")
                && c.contains("kubelet=1.31.2-*")
                && c.contains("kubeadm=1.31.2-*")),
            "{host}: {calls:#?}"
        );
        assert!(
            calls.contains(&"apt-mark hold kubelet kubeadm".to_string()),
            "{calls:#?}"
        );
        assert!(
            calls.contains(&"systemctl enable kubelet".to_string()),
            "{calls:#?}"
        );
        let join_path = h.root().join("etc/kbg/join.yaml");
        assert_eq!(
            calls.last().unwrap(),
            &format!("kubeadm join --config {}", join_path.display())
        );
        let join = h.read_state("join.yaml").unwrap();
        for want in [
            format!("name: \"{machine}\""),
            "node-labels: \"kbg.io/pool=beta,tier=web\"".to_string(),
            "register-with-taints: \"dedicated=web:NoSchedule\"".to_string(),
            format!("provider-id: \"metal://{host}\""),
            "apiServerEndpoint: \"127.0.0.1:6443\"".to_string(),
            format!("token: \"{TOKEN}\""),
            format!("- \"{CA_HASH}\""),
        ] {
            assert!(join.contains(&want), "{host}: {want} not in\n{join}");
        }
        // The token travelled in root-only files, both gone once the script ended.
        assert_eq!(h.read_state("join-config-mode").unwrap().trim(), "600");
        assert_eq!(h.read_state("script-modes").unwrap().trim(), "600");
        assert!(
            !join_path.exists(),
            "the join configuration was left on {host}"
        );
        // What `ps` on the host showed while kubeadm ran: the fixed wrapper, no secret.
        let ps = h.read_state("command-lines").unwrap();
        assert!(ps.contains("sh -c umask 077;"), "{ps}");
        assert!(ps.contains("sshd"), "{ps}");
        for secret in [TOKEN_SECRET, CA_HASH] {
            assert!(
                !ps.contains(secret),
                "a command line on {host} shows a secret:\n{ps}"
            );
        }
        assert_eq!(
            std::fs::read_dir(h.tmp()).unwrap().count(),
            0,
            "a script was left on {host}"
        );
        assert!(h.kubelet_active());
    }
    assert!(lab.host("host-c").calls().is_empty());

    // A rerun finds both machines in the ledger: no host touched, none taken.
    for h in &lab.hosts {
        h.clear_calls();
    }
    let again = provider
        .provision(&pool, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(again.machines, report.machines);
    for h in &lab.hosts {
        assert!(h.calls().is_empty(), "{}: {:?}", h.name, h.calls());
    }
    assert_eq!(assignments(ledger.as_ref()).await.len(), 2);
    assert_eq!(provider.list(&pool).await.unwrap(), report.machines);

    // A third machine takes the last host; a fourth finds none.
    let more = provider
        .provision(&pool, &names(&["beta-0", "beta-1", "beta-2", "beta-3"]))
        .await
        .unwrap();
    assert_eq!(more.machines.len(), 3);
    assert_eq!(
        more.machines[2].provider_id.as_deref(),
        Some("metal://host-c")
    );
    let [err] = &more.failed[..] else {
        panic!("{:?}", more.failed)
    };
    assert_eq!(err.kind, ErrorKind::Capacity);
    assert_eq!(err.machine.as_deref(), Some("beta-3"));
    assert!(
        err.to_string()
            .starts_with("metal: machine beta-3: no free host in "),
        "{err}"
    );
    assert_eq!(assignments(ledger.as_ref()).await.len(), 3);
}

#[tokio::test]
async fn a_failing_bootstrap_is_reported_per_machine_and_nothing_leaks() {
    let (lab, ledger, pool, provider) = setup(&["host-a", "host-b", "host-c"]).await;
    // host-b's kubeadm join fails, and (like a script under `set -x`) prints the join
    // configuration with the token to stderr on its way out.
    lab.host("host-b").fail(
        "kubeadm",
        "error execution phase preflight: couldn't validate the identity of the API Server\n",
        true,
    );

    let report = provider
        .provision(&pool, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!(report.machines.len(), 1);
    assert_eq!(report.machines[0].name, "beta-0");
    let [err] = &report.failed[..] else {
        panic!("{:?}", report.failed)
    };
    assert_eq!(err.machine.as_deref(), Some("beta-1"));
    assert_eq!(err.kind, ErrorKind::Failed);
    let line = err.to_string();
    assert!(
        line.starts_with("metal: machine beta-1: host host-b (")
            && line.contains("bootstrap exited 1: ")
            && line.contains("couldn't validate the identity of the API Server"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    for secret in [TOKEN, TOKEN_SECRET, CA_HASH] {
        assert!(!line.contains(secret), "the error leaks {secret}: {line}");
    }

    // The host whose bootstrap started stays with its machine, marked failed, listed;
    // the third host was never touched and is still free.
    assert_eq!(
        assignments(ledger.as_ref()).await,
        by_host(&[
            ("host-a", "beta", "beta-0", HostState::Ready),
            ("host-b", "beta", "beta-1", HostState::BootstrapFailed),
        ])
    );
    let listed = provider.list(&pool).await.unwrap();
    assert_eq!(listed[1].name, "beta-1");
    assert_eq!(listed[1].state, MachineState::Failed);
    assert!(listed[1].details["error"].contains("couldn't validate"));
    assert!(lab.host("host-c").calls().is_empty());

    // Retrying after the fault is fixed bootstraps beta-1 again on the same host, after a
    // reset (kubeadm was installed by the first attempt).
    lab.host("host-b").heal("kubeadm");
    lab.host("host-b").clear_calls();
    let again = provider
        .provision(&pool, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(
        again.machines[1].provider_id.as_deref(),
        Some("metal://host-b")
    );
    let calls = lab.host("host-b").calls();
    let reset = calls
        .iter()
        .position(|c| c == "kubeadm reset -f")
        .expect("reset");
    let join = calls
        .iter()
        .position(|c| c.starts_with("kubeadm join"))
        .expect("join");
    assert!(reset < join, "{calls:#?}");
    assert!(lab.host("host-c").calls().is_empty());
    assert_eq!(assignments(ledger.as_ref()).await.len(), 2);
}

#[tokio::test]
async fn a_rerun_after_a_crash_mid_bootstrap_resets_and_finishes_on_the_same_host() {
    let (lab, ledger, pool, provider) = setup(&["host-a", "host-b"]).await;
    // kbg took host-b for beta-0 and died after kubeadm join had run.
    let inventory = provider.inventory().clone();
    let taken = Assignment::new(inventory.host("host-b").unwrap(), "beta", "beta-0");
    let value = serde_json::to_value(book::Book {
        hosts: [("host-b".to_string(), taken)].into(),
    })
    .unwrap();
    ledger.store(LEDGER_KEY, value, None).await.unwrap();
    let conf = lab
        .host("host-b")
        .root()
        .join("etc/kubernetes/kubelet.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, "half-joined").unwrap();
    assert_eq!(
        provider.list(&pool).await.unwrap()[0].state,
        MachineState::Pending
    );

    let report = provider
        .provision(&pool, &names(&["beta-0"]))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.machines[0].provider_id.as_deref(),
        Some("metal://host-b")
    );
    let calls = lab.host("host-b").calls();
    assert_eq!(
        calls.first().map(String::as_str),
        Some("kubeadm reset -f"),
        "{calls:#?}"
    );
    assert!(
        calls.last().unwrap().starts_with("kubeadm join"),
        "{calls:#?}"
    );
    assert!(lab.host("host-a").calls().is_empty());
}

#[tokio::test]
async fn deprovision_resets_the_host_and_frees_it() {
    let (lab, ledger, pool, provider) = setup(&["host-a", "host-b"]).await;
    let report = provider
        .provision(&pool, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!(report.machines.len(), 2, "{:?}", report.failed);
    for h in &lab.hosts {
        h.clear_calls();
    }

    let gone = provider.deprovision(&pool, &report.machines).await.unwrap();
    assert!(gone.failed.is_empty(), "{:?}", gone.failed);
    assert_eq!(gone.removed, ["beta-0", "beta-1"]);
    for h in &lab.hosts {
        let calls = h.calls();
        assert_eq!(
            calls,
            [
                "kubeadm reset -f",
                "systemctl stop kubelet",
                "systemctl disable kubelet",
                "systemctl is-active --quiet kubelet"
            ],
            "{}",
            h.name
        );
        assert!(!h.kubelet_active());
        assert!(!h.root().join("etc/kubernetes/kubelet.conf").exists());
    }
    assert!(assignments(ledger.as_ref()).await.is_empty());
    assert!(provider.list(&pool).await.unwrap().is_empty());

    // Again: already gone is a success, and nothing runs.
    for h in &lab.hosts {
        h.clear_calls();
    }
    let again = provider.deprovision(&pool, &report.machines).await.unwrap();
    assert_eq!(again.removed, ["beta-0", "beta-1"]);
    assert!(lab.hosts.iter().all(|h| h.calls().is_empty()));

    // A freed host serves the next pool, at that pool's version.
    let gamma = lab.pool("gamma", "v1.32.0", json!({}));
    let gamma_provider = lab.provider(&gamma, ledger.clone()).await;
    let g = gamma_provider
        .provision(&gamma, &names(&["gamma-0"]))
        .await
        .unwrap();
    assert_eq!(g.machines[0].provider_id.as_deref(), Some("metal://host-a"));
    let calls = lab.host("host-a").calls();
    assert!(
        calls.contains(&"apt-mark unhold kubelet kubeadm".to_string()),
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(|c| c.contains("kubelet=1.32.0-*")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_failed_reset_keeps_the_host_taken() {
    let (lab, ledger, pool, provider) = setup(&["host-a"]).await;
    let report = provider
        .provision(&pool, &names(&["beta-0"]))
        .await
        .unwrap();
    lab.host("host-a").fail(
        "kubeadm",
        "[reset] failed to unmount /var/lib/kubelet\n",
        false,
    );

    let gone = provider.deprovision(&pool, &report.machines).await.unwrap();
    assert!(gone.removed.is_empty());
    let [err] = &gone.failed[..] else {
        panic!("{gone:?}")
    };
    assert!(
        err.to_string()
            .starts_with("metal: machine beta-0: host host-a (")
            && err
                .to_string()
                .contains("reset exited 1: [reset] failed to unmount"),
        "{err}"
    );
    assert_eq!(
        assignments(ledger.as_ref()).await,
        by_host(&[("host-a", "beta", "beta-0", HostState::ResetFailed)])
    );
    assert_eq!(
        provider.list(&pool).await.unwrap()[0].state,
        MachineState::Failed
    );
    // Nobody else can take it meanwhile.
    let gamma = lab.pool("gamma", "v1.31.2", json!({}));
    let other = lab.provider(&gamma, ledger.clone()).await;
    let r = other.provision(&gamma, &names(&["gamma-0"])).await.unwrap();
    assert_eq!(r.failed[0].kind, ErrorKind::Capacity);
    // Once the host is fixed, deprovisioning again frees it.
    lab.host("host-a").heal("kubeadm");
    let gone = provider.deprovision(&pool, &report.machines).await.unwrap();
    assert_eq!(gone.removed, ["beta-0"]);
    assert!(assignments(ledger.as_ref()).await.is_empty());
}

#[tokio::test]
async fn run_command_returns_the_exit_code_and_output() {
    let (lab, _ledger, pool, provider) = setup(&["host-a"]).await;
    let report = provider
        .provision(&pool, &names(&["beta-0"]))
        .await
        .unwrap();
    let machine = &report.machines[0];

    let out = Lab::run(
        &provider,
        &pool,
        machine,
        "echo \"on $(id -un)\"; printf 'line 2\\n'; echo oops >&2; exit 7\n",
        60,
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, format!("on {}\nline 2\n", lab.user));
    assert_eq!(out.stderr, "oops\n");

    // A command that outlives its timeout is a Timeout error, not an exit code.
    let err = Lab::run(&provider, &pool, machine, "sleep 600\n", 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(
        err.to_string().contains("did not finish within 1 s"),
        "{err}"
    );

    // A machine the provider does not know.
    let stranger = Machine {
        name: "beta-9".into(),
        ..machine.clone()
    };
    let err = Lab::run(&provider, &pool, &stranger, "true", 5)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.machine.as_deref(), Some("beta-9"));
}

#[tokio::test]
async fn unknown_host_keys_are_refused_unless_explicitly_accepted() {
    let lab = Lab::start(&["host-a"], None);
    let port = lab.host("host-a").port;
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    // A known_hosts file that does not list the host.
    let empty = lab.dir.path().join("known_hosts.empty");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let pool = lab.pool("beta", "v1.31.2", json!({"known_hosts": empty}));
    let provider = MetalProvider::from_pool(&pool, ledger.clone()).unwrap();
    let report = provider
        .provision(&pool, &names(&["beta-0"]))
        .await
        .unwrap();
    let [err] = &report.failed[..] else {
        panic!("{report:?}")
    };
    let line = err.to_string();
    assert!(
        line.starts_with("metal: machine beta-0: host host-a: host key SHA256:")
            && line.contains(&format!(
                "of [127.0.0.1]:{port} is not in {}",
                empty.display()
            ))
            && line.contains("insecure_accept_host_keys"),
        "{line}"
    );
    assert!(!err.is_retryable());
    // Nothing ran on the host, so it was handed back.
    assert!(assignments(ledger.as_ref()).await.is_empty());
    assert!(lab.host("host-a").calls().is_empty());

    // Explicitly accepted (the setting, or kbg's --insecure-accept-host-keys): it works.
    let insecure = lab
        .provider_with(
            &pool,
            ledger.clone(),
            &MetalOptions {
                insecure_accept_host_keys: true,
                ..MetalOptions::default()
            },
        )
        .await;
    let report = insecure
        .provision(&pool, &names(&["beta-0"]))
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(support::logs().contains("accepting a host key not in known_hosts"));

    // A key that contradicts known_hosts is refused even then.
    let liar = lab.dir.path().join("known_hosts.changed");
    support::keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        lab.dir.path().join("other").to_str().unwrap(),
    ]);
    let other = std::fs::read_to_string(lab.dir.path().join("other.pub")).unwrap();
    std::fs::write(&liar, format!("[127.0.0.1]:{port} {other}")).unwrap();
    let pool = lab.pool(
        "beta",
        "v1.31.2",
        json!({"known_hosts": liar, "insecure_accept_host_keys": true}),
    );
    let provider = MetalProvider::from_pool(&pool, ledger.clone()).unwrap();
    let err = Lab::run(&provider, &pool, &report.machines[0], "true", 5)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("does not match {} line 1", liar.display())),
        "{err}"
    );

    // A known_hosts file hashed by the real ssh-keygen (Debian's HashKnownHosts default).
    let hashed = lab.dir.path().join("known_hosts.hashed");
    std::fs::copy(&lab.known_hosts, &hashed).unwrap();
    support::keygen(&["-H", "-f", hashed.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&hashed).unwrap().starts_with("|1|"));
    let pool = lab.pool("beta", "v1.31.2", json!({"known_hosts": hashed}));
    let provider = MetalProvider::from_pool(&pool, ledger.clone()).unwrap();
    let out = Lab::run(&provider, &pool, &report.machines[0], "echo hi", 30)
        .await
        .unwrap();
    assert_eq!(out.stdout, "hi\n");
}

#[tokio::test]
async fn two_pools_racing_for_one_inventory_never_share_a_host() {
    let lab = Lab::start(&["host-a", "host-b", "host-c"], None);
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let beta = lab.pool("beta", "v1.31.2", json!({}));
    let gamma = lab.pool("gamma", "v1.31.2", json!({}));
    let pb = lab.provider(&beta, ledger.clone()).await;
    let pg = lab.provider(&gamma, ledger.clone()).await;
    let (nb, ng) = (names(&["beta-0", "beta-1"]), names(&["gamma-0", "gamma-1"]));
    let (rb, rg) = tokio::join!(pb.provision(&beta, &nb), pg.provision(&gamma, &ng));
    let (rb, rg) = (rb.unwrap(), rg.unwrap());
    assert_eq!(rb.machines.len() + rg.machines.len(), 3);
    let failed: Vec<_> = rb.failed.iter().chain(&rg.failed).collect();
    let [err] = &failed[..] else {
        panic!("{failed:?}")
    };
    assert_eq!(err.kind, ErrorKind::Capacity);
    let mut ids: Vec<_> = rb
        .machines
        .iter()
        .chain(&rg.machines)
        .map(|m| m.provider_id.clone().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["metal://host-a", "metal://host-b", "metal://host-c"]);
    // Each host was bootstrapped exactly once.
    for h in &lab.hosts {
        let joins = h
            .calls()
            .iter()
            .filter(|c| c.starts_with("kubeadm join"))
            .count();
        assert_eq!(joins, 1, "{}", h.name);
    }
}

#[tokio::test]
async fn reserved_hosts_and_selectors_decide_who_takes_what() {
    let lab = Lab::start(&["host-a", "host-b", "host-c"], None);
    lab.inventory(|h| match h.name.as_str() {
        "host-a" => ", pool: gamma".into(),
        "host-b" => ", labels: {disk: hdd}".into(),
        _ => ", labels: {disk: ssd}".into(),
    });
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let beta = lab.pool("beta", "v1.31.2", json!({"selector": {"disk": "ssd"}}));
    let pb = lab.provider(&beta, ledger.clone()).await;
    let r = pb
        .provision(&beta, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!(r.machines[0].provider_id.as_deref(), Some("metal://host-c"));
    assert!(
        r.failed[0].to_string().contains("(selector disk=ssd)"),
        "{}",
        r.failed[0]
    );
    let gamma = lab.pool("gamma", "v1.31.2", json!({}));
    let pg = lab.provider(&gamma, ledger.clone()).await;
    let r = pg
        .provision(&gamma, &names(&["gamma-0", "gamma-1"]))
        .await
        .unwrap();
    let ids: Vec<_> = r
        .machines
        .iter()
        .map(|m| m.provider_id.clone().unwrap())
        .collect();
    // Its reserved host first, then a free one.
    assert_eq!(ids, ["metal://host-a", "metal://host-b"]);
}

#[tokio::test]
async fn keys_kbg_cannot_use_are_refused_up_front() {
    let lab = Lab::start(&["host-a"], None);
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let rsa = lab.dir.path().join("id_rsa");
    support::keygen(&[
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-N",
        "",
        "-f",
        rsa.to_str().unwrap(),
    ]);
    let locked = lab.dir.path().join("id_locked");
    support::keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "a passphrase",
        "-f",
        locked.to_str().unwrap(),
    ]);
    for (key, want) in [
        (&rsa, "RUSTSEC-2023-0071"),
        (&locked, "is encrypted with a passphrase"),
    ] {
        lab.inventory(|_| format!(", key: {}", key.display()));
        let pool = lab.pool("beta", "v1.31.2", json!({}));
        let err = MetalProvider::from_pool(&pool, ledger.clone()).unwrap_err();
        assert!(
            matches!(&err.kind, ErrorKind::InvalidConfig { field } if field == "pools.beta.metal.inventory"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("hosts[0] (host-a).key: ") && err.to_string().contains(want),
            "{err}"
        );
    }
    assert!(lab.host("host-a").calls().is_empty());
    assert!(ledger.load(LEDGER_KEY).await.unwrap().is_none());
}

#[tokio::test]
async fn secrets_reach_no_log_line_no_error_and_no_ledger_record() {
    let (lab, ledger, pool, provider) = setup(&["host-a", "host-b"]).await;
    lab.host("host-b").fail("kubeadm", "join failed\n", true);
    let report = provider
        .provision(&pool, &names(&["beta-0", "beta-1"]))
        .await
        .unwrap();
    assert_eq!((report.machines.len(), report.failed.len()), (1, 1));
    lab.host("host-b").heal("kubeadm");
    let machines = provider.list(&pool).await.unwrap();
    let gone = provider.deprovision(&pool, &machines).await.unwrap();
    assert_eq!(gone.removed.len(), 2, "{:?}", gone.failed);

    // The token did reach the host's join configuration…
    assert!(
        lab.host("host-a")
            .read_state("join.yaml")
            .unwrap()
            .contains(TOKEN)
    );
    // …and nowhere on our side.
    let logs = support::logs();
    assert!(
        logs.contains("bootstrapping") && logs.contains("russh"),
        "logs not captured:\n{logs}"
    );
    let private_key = std::fs::read_to_string(&lab.key).unwrap();
    let key_lines: Vec<&str> = private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!key_lines.is_empty());
    let ledger_text = format!("{:?}", ledger.load(LEDGER_KEY).await.unwrap());
    let errors = format!("{:?} {}", report.failed, report.failed[0]);
    let debug = format!("{provider:?}");
    for (place, text) in [
        ("logs", &logs),
        ("ledger", &ledger_text),
        ("errors", &errors),
        ("provider Debug", &debug),
    ] {
        for secret in [TOKEN, TOKEN_SECRET, CA_HASH] {
            assert!(!text.contains(secret), "{place} contain {secret}");
        }
        for line in &key_lines {
            assert!(
                !text.contains(line),
                "{place} contain a line of the private key"
            );
        }
    }
}
