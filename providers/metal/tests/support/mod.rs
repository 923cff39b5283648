//! A lab of bare-metal "hosts" for the metal provider's tests: one real OpenSSH `sshd` per
//! host on 127.0.0.1, each with its own host key, config and state directory, all letting
//! in one client key generated for the lab.
//!
//! The "host" is the test machine itself. Each sshd sets the session's PATH so that a test
//! double (`fake-host-tool.sh`, under the names kubeadm, systemctl, apt-get, …) comes
//! first; the double records what it was asked and, for `kubeadm join`, registers the
//! node in a simulated cluster. `KBG_BOOTSTRAP_ROOT` points the bootstrap's file writes
//! (`/etc/kbg/join.yaml`, apt sources) into the host's directory, and `TMPDIR` the uploaded
//! script, so a test never touches the machine's own `/etc`.
//!
//! sshd runs as the user running the tests, and that user logs in. As root (CI
//! containers), sshd insists on its privilege-separation directory `/run/sshd`, which the
//! lab creates if missing (what Debian's ssh.service does at boot); as any other user sshd
//! runs unprivileged and needs nothing. sshd is found through `KBG_TEST_SSHD`, then
//! `/usr/sbin/sshd`, then PATH; ssh-keygen through PATH (both from Debian's
//! openssh-server / openssh-client); a missing one fails the test naming
//! `scripts/test-setup`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kbg_provider::{JoinConfig, Ledger, PoolSpec, Secret, Taint, TaintEffect};
use kbg_provider_metal::{MetalOptions, MetalProvider};

/// The join token every lab pool uses; tests look for it where it must not be.
pub const TOKEN: &str = "kbgtst.s3cr3tt0k3nv4lue";
/// The secret half of [`TOKEN`].
pub const TOKEN_SECRET: &str = "s3cr3tt0k3nv4lue";
/// The CA hash every lab pool uses.
pub const CA_HASH: &str = "sha256:c0ffee0000000000000000000000000000000000000000000000000000c0ffee";

/// The test double for the host's tools (`fake-host-tool.sh`).
pub const HOST_TOOL: &str = include_str!("fake-host-tool.sh");

/// The tools the double stands in for, each of which must resolve to it on the host.
pub const FAKED: &[&str] = &[
    "kubeadm",
    "systemctl",
    "apt-get",
    "apt-mark",
    "curl",
    "gpg",
    "modprobe",
    "sysctl",
    "swapoff",
    "containerd",
];

fn tool(env: &str, fallback: Option<&str>, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env}={} does not exist: run scripts/test-setup, which installs Debian's openssh-server, or fix {env}",
            p.display()
        );
        return p;
    }
    if let Some(f) = fallback.filter(|f| Path::new(f).exists()) {
        return PathBuf::from(f);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{name} not found ({env}, {}PATH): run scripts/test-setup, which installs Debian's openssh-server",
        fallback.map(|f| format!("{f}, ")).unwrap_or_default()
    );
}

/// `sshd`: `KBG_TEST_SSHD`, then `/usr/sbin/sshd`, then PATH.
pub fn sshd() -> PathBuf {
    tool("KBG_TEST_SSHD", Some("/usr/sbin/sshd"), "sshd")
}

/// `ssh-keygen`, from PATH (or next to sshd's client tools).
pub fn ssh_keygen() -> PathBuf {
    tool(
        "KBG_TEST_SSH_KEYGEN",
        Some("/usr/bin/ssh-keygen"),
        "ssh-keygen",
    )
}

/// `kubectl` for the double's node registration: `KBG_TEST_KUBECTL`, then PATH.
pub fn kubectl() -> PathBuf {
    tool("KBG_TEST_KUBECTL", None, "kubectl")
}

/// Run ssh-keygen with `args`, panicking with its output on failure.
pub fn keygen(args: &[&str]) {
    let out = Command::new(ssh_keygen()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make an unencrypted ed25519 key pair at `path` (and `path.pub`).
pub fn keypair(path: &Path, comment: &str) {
    keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        path.to_str().unwrap(),
    ]);
}

/// Every log line any test in this binary produced, at TRACE, including russh's (which
/// logs through the `log` crate; the subscriber bridges it).
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.get_or_init(Default::default).lock().unwrap()).into_owned()
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture every log line of this test binary (once).
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let sink = LogSink(LOGS.get_or_init(Default::default).clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init()
            .expect("one subscriber per test binary");
    });
}

/// One fake host: an sshd on 127.0.0.1 and its directories.
pub struct FakeHost {
    /// Its inventory name.
    pub name: String,
    /// Its sshd's port.
    pub port: u16,
    /// Its directory: `state/` (the double's records), `root/` (files the bootstrap
    /// writes), `tmp/` (the uploaded script), its host key, sshd config and log.
    pub dir: PathBuf,
    /// Its host public key line (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    child: Child,
}

impl FakeHost {
    /// The double's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The root the bootstrap's files go under.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Where the uploaded scripts go.
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Every call the double recorded, in order.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Forget the recorded calls.
    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.state().join("calls"));
    }

    /// A state file of the double, if present.
    pub fn read_state(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.state().join(name)).ok()
    }

    /// Make `tool` fail on this host with `message` on stderr; with `echo_config`, it
    /// also prints the join configuration (token included) to stderr.
    pub fn fail(&self, tool: &str, message: &str, echo_config: bool) {
        std::fs::write(self.state().join(format!("fail-{tool}")), message).unwrap();
        if echo_config {
            std::fs::write(self.state().join(format!("fail-{tool}.echo-config")), "").unwrap();
        }
    }

    /// Undo [`FakeHost::fail`].
    pub fn heal(&self, tool: &str) {
        let _ = std::fs::remove_file(self.state().join(format!("fail-{tool}")));
        let _ = std::fs::remove_file(self.state().join(format!("fail-{tool}.echo-config")));
    }

    /// Whether the double's kubelet is running.
    pub fn kubelet_active(&self) -> bool {
        self.state().join("active-kubelet").exists()
    }

    /// The `known_hosts` line for this host.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        // Our own child, by its id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab: hosts, the client key, a `known_hosts` listing every host.
pub struct Lab {
    /// Everything lives under here.
    pub dir: tempfile::TempDir,
    /// The client's private key (ed25519, mode 0600).
    pub key: PathBuf,
    /// A `known_hosts` file with every host's key.
    pub known_hosts: PathBuf,
    /// The hosts, in the order asked for.
    pub hosts: Vec<FakeHost>,
    /// The user the hosts let in (the user running the tests).
    pub user: String,
}

impl Lab {
    /// Start one sshd per name in `names`. With `kubeconfig`, the double's `kubeadm
    /// join` registers nodes in that cluster.
    pub fn start(names: &[&str], kubeconfig: Option<&Path>) -> Lab {
        capture_logs();
        let dir = tempfile::Builder::new()
            .prefix("kbg-metal-")
            .tempdir()
            .unwrap();
        let key = dir.path().join("id_ed25519");
        keypair(&key, "kbg-test-client");
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // The double's text is compiled in, so this harness also works from another
        // crate's tests (kbg's end-to-end tests include it by path).
        for name in FAKED {
            std::fs::write(bin.join(name), HOST_TOOL).unwrap();
            set_mode(&bin.join(name), 0o755);
        }
        let user = current_user();
        if is_root() && !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").unwrap();
            set_mode(Path::new("/run/sshd"), 0o755);
        }
        let hosts: Vec<FakeHost> = names
            .iter()
            .map(|n| start_host(dir.path(), n, &bin, &authorized, kubeconfig))
            .collect();
        let known_hosts = dir.path().join("known_hosts");
        let text: String = hosts.iter().map(|h| h.known_hosts_line() + "\n").collect();
        std::fs::write(&known_hosts, text).unwrap();
        Lab {
            dir,
            key,
            known_hosts,
            hosts,
            user,
        }
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &FakeHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .expect("a lab host")
    }

    /// Write an inventory of the lab's hosts (each with `extra(host)` appended to its
    /// flow mapping, e.g. `, pool: beta`) and return its path.
    pub fn inventory(&self, extra: impl Fn(&FakeHost) -> String) -> PathBuf {
        let mut text = format!(
            "defaults:\n  user: {}\n  key: {}\n  sudo: false\nhosts:\n",
            self.user,
            self.key.display()
        );
        for h in &self.hosts {
            text.push_str(&format!(
                "  - {{name: {}, address: 127.0.0.1, port: {}{}}}\n",
                h.name,
                h.port,
                extra(h)
            ));
        }
        let path = self.dir.path().join("inventory.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Pool `name` at `version`, labelled and tainted, whose `metal:` block names the
    /// lab's inventory and known_hosts, plus `settings` (merged over those).
    pub fn pool(&self, name: &str, version: &str, settings: serde_json::Value) -> PoolSpec {
        let inventory = self.dir.path().join("inventory.yaml");
        if !inventory.exists() {
            self.inventory(|_| String::new());
        }
        let mut block = serde_json::json!({
            "inventory": inventory,
            "known_hosts": self.known_hosts,
            "connect_timeout_seconds": 60,
            "bootstrap_timeout_seconds": 120,
            "reset_timeout_seconds": 120,
        });
        if let serde_json::Value::Object(extra) = settings {
            for (k, v) in extra {
                block[k] = v;
            }
        }
        PoolSpec {
            name: name.into(),
            version: version.into(),
            labels: BTreeMap::from([
                ("kbg.io/pool".to_string(), name.to_string()),
                ("tier".to_string(), "web".to_string()),
            ]),
            taints: vec![Taint {
                key: "dedicated".into(),
                value: Some("web".into()),
                effect: TaintEffect::NoSchedule,
            }],
            settings: block,
            template: None,
            join: JoinConfig {
                api_server_endpoint: "127.0.0.1:6443".into(),
                token: Some(Secret::new(TOKEN)),
                ca_cert_hash: Some(Secret::new(CA_HASH)),
            },
        }
    }

    /// The provider for `pool`, after checking on every host, through the provider's own
    /// run-command, that the double shadows every tool a bootstrap could run for real
    /// (so no test ever runs the machine's own apt-get or kubeadm).
    pub async fn provider(&self, pool: &PoolSpec, ledger: Arc<dyn Ledger>) -> MetalProvider {
        self.provider_with(pool, ledger, &MetalOptions::default())
            .await
    }

    /// [`Lab::provider`] with kbg's `options`.
    pub async fn provider_with(
        &self,
        pool: &PoolSpec,
        ledger: Arc<dyn Ledger>,
        options: &MetalOptions,
    ) -> MetalProvider {
        let provider =
            MetalProvider::from_pool_with(pool, ledger, options).expect("the lab's pool is valid");
        self.check_doubles_first(&provider, pool).await;
        provider
    }

    /// Run `script` on `machine` through `provider`, allowing `timeout_secs`.
    pub async fn run(
        provider: &MetalProvider,
        pool: &PoolSpec,
        machine: &kbg_provider::Machine,
        script: &str,
        timeout_secs: u64,
    ) -> kbg_provider::Result<kbg_provider::CommandOutput> {
        use kbg_provider::Provider as _;
        let command = kbg_provider::RemoteCommand {
            script: script.to_string(),
            timeout_secs,
        };
        provider.run_command(pool, machine, &command).await
    }

    async fn check_doubles_first(&self, provider: &MetalProvider, pool: &PoolSpec) {
        let bin = self.dir.path().join("bin");
        let script = FAKED
            .iter()
            .map(|t| format!("command -v {t}\n"))
            .collect::<String>();
        for h in &self.hosts {
            let machine = kbg_provider::Machine {
                name: h.name.clone(),
                pool: pool.name.clone(),
                provider_id: None,
                node_name: None,
                state: kbg_provider::MachineState::Running,
                address: None,
                details: BTreeMap::new(),
            };
            let out = Self::run(provider, pool, &machine, &script, 60).await;
            let Ok(out) = out else {
                // A host this pool cannot reach (e.g. a test of unknown host keys): its
                // sessions never get as far as running anything.
                continue;
            };
            for (t, line) in FAKED.iter().zip(out.stdout.lines()) {
                assert_eq!(
                    Path::new(line),
                    bin.join(t),
                    "on host {}, {t} is not the test double: the session's PATH is {}",
                    h.name,
                    out.stderr
                );
            }
            assert_eq!(out.stdout.lines().count(), FAKED.len(), "{out:?}");
            h.clear_calls();
        }
    }
}

fn start_host(
    lab: &Path,
    name: &str,
    bin: &Path,
    authorized: &Path,
    kubeconfig: Option<&Path>,
) -> FakeHost {
    let dir = lab.join(name);
    for sub in ["state", "root", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let host_key = dir.join("ssh_host_ed25519_key");
    keypair(&host_key, name);
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let host_pub = host_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let mut env = vec![
        format!(
            "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.display()
        ),
        format!("KBG_FAKE_STATE={}", dir.join("state").display()),
        format!("KBG_BOOTSTRAP_ROOT={}", dir.join("root").display()),
        format!("TMPDIR={}", dir.join("tmp").display()),
    ];
    if let Some(k) = kubeconfig {
        env.push(format!("KBG_TEST_KUBECONFIG={}", k.display()));
        env.push(format!("KBG_TEST_KUBECTL={}", kubectl().display()));
    }
    // A port picked now may be taken by the time sshd binds it: try a few.
    for _ in 0..5 {
        let port = free_port();
        let config = dir.join("sshd_config");
        let text = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {hk}\n\
             PidFile none\n\
             AuthorizedKeysFile {ak}\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             SetEnv {env}\n\
             LogLevel VERBOSE\n",
            hk = host_key.display(),
            ak = authorized.display(),
            user = current_user(),
            env = env.join(" "),
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join("sshd.log");
        let child = Command::new(sshd())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sshd");
        let mut host = FakeHost {
            name: name.to_string(),
            port,
            dir: dir.clone(),
            host_key: host_pub.clone(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server listening on") {
                return host;
            }
            if let Some(status) = host.child.try_wait().unwrap() {
                if text.contains("Address already in use") || text.contains("Bind to port") {
                    break; // try another port
                }
                panic!("sshd for {name} exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "sshd for {name} never listened:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no free port for sshd after 5 tries");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The user running the tests (whom sshd lets in).
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Append `line` to `path`.
pub fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(f, "{line}").unwrap();
}
