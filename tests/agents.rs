//! Agents end to end with real processes: a central `tlsward serve` issuing from Pebble (on
//! loopback) with its agent API on a bridge the test makes, and `tlsward agent` processes,
//! each with its own state dir and its own Debian nginx in its own network namespace. The
//! center probes each nginx over the bridge as it would over a network; each agent listens
//! on no port at all (asserted with `ss` inside its namespace).
//!
//! Written against the contracts of the agent design (the CLI's JSON, the center's config
//! keys, journal kinds and metric names). The first test proves the namespace fixture alone.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tlsward::clock::SystemClock;
use tlsward::probe::{Module, Prober, Target};

use crate::util::cli::open_store;
use crate::util::daemon::{free_addr, serve_command};
use crate::util::exposition::metric;
use crate::util::http::get;
use crate::util::netns::{Bridge, Namespace, NginxNs};
use crate::util::pebble::Pebble;
use crate::util::wait::{EVERY, eventually, within};
use crate::util::{TestCa, real_now};

/// `TLSWARD_LOG` for the center and the agents: everything at trace level (tlsward,
/// rustls, hyper, the hook host), except the JIT compiler's own dumps of machine code.
const TRACE: &str = "trace,cranelift_codegen=warn,cranelift_frontend=warn,regalloc2=warn,\
wasmtime_internal_cranelift=warn,wasmtime_environ=warn,wasmtime=warn,wasmparser=warn";

/// The binary under test.
const TLSWARD: &str = env!("CARGO_BIN_EXE_tlsward");

/// The port every agent's nginx serves on, at its namespace's own address.
const SITE_PORT: u16 = 443;

/// Whether `ip netns list` shows `name`.
fn netns_exists(name: &str) -> bool {
    let out = std::process::Command::new("/usr/sbin/ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Whether a link called `name` exists in the root namespace.
fn link_exists(name: &str) -> bool {
    std::process::Command::new("/usr/sbin/ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ip link show")
        .success()
}

/// The SHA-256 (lower hex) of the leaf served at `addr` for `name`, by a real handshake from
/// the root namespace (tlsward's own prober, trusting `trust`); `None` when no certificate
/// was seen.
async fn served_sha256(
    addr: SocketAddr,
    name: &str,
    trust: Arc<tlsward::cert::TrustStore>,
) -> Option<String> {
    let mut module = Module::new(trust);
    module.timeout = Duration::from_secs(5);
    let mut target: Target = format!("{name}:{}", addr.port()).parse().expect("target");
    target.connect_to = vec![addr];
    let report = Prober::new(module).probe(&target, &SystemClock).await;
    Some(report.outcome.ok()?.leaf.sha256)
}

// === the fixture ===

#[tokio::test(flavor = "multi_thread")]
async fn netns_fixture_nginx_in_a_namespace_answers_the_root_namespace_and_all_is_removed_on_drop()
{
    let bridge = Bridge::new();
    let ns = bridge.namespace();
    let (ns_name, bridge_name) = (ns.name.clone(), bridge_name(&bridge));
    assert!(netns_exists(&ns_name) && link_exists(&bridge_name));
    assert!(!ns.addr.is_loopback());

    let ca = TestCa::root_at("Netns CA", real_now());
    let leaf = ca.leaf(&["site.tlsward.test"]).build();
    let pems = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write_pem(pems.path(), "site");
    let nginx = NginxNs::start(&ns, SITE_PORT, &cert, &key).await;
    assert_eq!(nginx.addr, SocketAddr::new(ns.addr, SITE_PORT));

    // A real handshake from the root namespace, over the bridge, sees nginx's leaf.
    assert_eq!(
        served_sha256(nginx.addr, "site.tlsward.test", Arc::new(ca.trust())).await,
        Some(tlsward::cert::sha256_hex(leaf.der()))
    );
    // Inside the namespace only nginx listens, on the namespace's address.
    let sockets = ns.listening_sockets();
    assert!(!sockets.is_empty(), "nginx's socket is not listed");
    for s in &sockets {
        assert_eq!(s.processes, ["nginx"], "{s:?}");
        assert_eq!(s.local, format!("{}:{SITE_PORT}", ns.addr), "{s:?}");
    }
    // Names resolve inside the namespace by its own hosts file, not outside.
    ns.hosts(&[(ns.addr, &["site.tlsward.test"])]);
    let out = ns
        .command("getent")
        .args(["hosts", "site.tlsward.test"])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&ns.addr.to_string()),
        "{out:?}"
    );
    let hosts_dir = Path::new("/etc/netns").join(&ns_name);
    assert!(hosts_dir.exists());
    // A process started there without a listener adds none.
    let mut sleeper = ns
        .command("sleep")
        .arg("60")
        .spawn()
        .expect("sleep in the namespace");
    assert_eq!(ns.listening_sockets(), sockets);

    // Drop removes the processes, the namespace, its veth and the bridge.
    drop(nginx);
    drop(ns);
    assert!(
        within(Duration::from_secs(30), EVERY, || std::future::ready(
            sleeper.try_wait().expect("try_wait").is_some()
        ))
        .await
        .is_some(),
        "the process inside the namespace survived its Drop"
    );
    assert!(!netns_exists(&ns_name), "{ns_name} left behind");
    assert!(!hosts_dir.exists(), "{} left behind", hosts_dir.display());
    drop(bridge);
    assert!(!link_exists(&bridge_name), "{bridge_name} left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn netns_fixture_removes_the_leftovers_of_a_dead_run_in_its_slot() {
    loop {
        let slot = Bridge::new().slot();
        // What a SIGKILLed run leaves: its bridge, a namespace with a process in it.
        let (bridge, ns) = (format!("twb{slot}"), format!("tw{slot}-0"));
        for args in [
            vec!["link", "add", bridge.as_str(), "type", "bridge"],
            vec!["netns", "add", ns.as_str()],
        ] {
            assert!(
                std::process::Command::new("/usr/sbin/ip")
                    .args(&args)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let mut orphan = std::process::Command::new("/usr/sbin/ip")
            .args(["netns", "exec", &ns, "sleep", "60"])
            .spawn()
            .unwrap();
        // `ip netns exec` enters the namespace after the spawn returns: a leftover is one
        // that is in it (else the cleanup below could run first and miss it).
        let pid = orphan.id().to_string();
        let entered = within(Duration::from_secs(60), EVERY, || {
            let out = std::process::Command::new("/usr/sbin/ip")
                .args(["netns", "identify", pid.as_str()])
                .output()
                .unwrap();
            std::future::ready(String::from_utf8_lossy(&out.stdout).trim() == ns)
        })
        .await;
        assert!(
            entered.is_some(),
            "the leftover's process never entered {ns}"
        );
        let Some(again) = Bridge::in_slot(slot) else {
            // Another test took the slot meanwhile (and cleaned it): try another.
            let _ = orphan.kill();
            let _ = orphan.wait();
            continue;
        };
        assert_eq!(again.slot(), slot);
        let fresh = again.namespace();
        assert_eq!(
            fresh.name, ns,
            "the slot's first namespace has the leftover's name"
        );
        let exited = within(Duration::from_secs(10), EVERY, || {
            std::future::ready(orphan.try_wait().ok().flatten().is_some())
        })
        .await;
        assert!(exited.is_some(), "the leftover's process was not stopped");
        assert!(fresh.listening_sockets().is_empty());
        return;
    }
}

fn bridge_name(bridge: &Bridge) -> String {
    format!("twb{}", bridge.slot())
}

// === the center and its agents ===

/// Pebble, the CA files, and the center's config directory.
struct Center {
    pebble: Pebble,
    http01_port: u16,
    /// The CA of the certificates the nginxes serve before any deployment.
    old_ca: TestCa,
    /// The bridge the agents' namespaces hang off (`None`: all on loopback, the benchmark).
    bridge: Option<Arc<Bridge>>,
    /// The probe interval of every target (`[defaults] interval`).
    interval: &'static str,
    /// The center's `TLSWARD_LOG`.
    rust_log: &'static str,
    /// The agent API's address, on the bridge.
    agents_addr: SocketAddr,
    /// The metrics listener, on loopback.
    addr: SocketAddr,
    config: PathBuf,
    child: Option<tokio::process::Child>,
}

/// One endpoint of the center's config, deployed by an agent.
struct EndpointDef {
    name: String,
    certificate: String,
    agent: String,
    /// The agent's namespace address and nginx port.
    at: SocketAddr,
    certs: PathBuf,
    /// The reload command line, when not the agent hook's default.
    reload: Option<String>,
}

impl Center {
    /// Pebble, the CA files, and a bridge for the agents' namespaces.
    async fn prepare() -> Self {
        Self::prepare_with(true).await
    }

    async fn prepare_with(bridged: bool) -> Self {
        let http01_port = crate::util::unique_port();
        let pebble = Pebble::start(http01_port, 30 * 86_400).await;
        let old_ca = TestCa::root_at("Old CA", real_now());
        let dir = pebble.dir.path();
        std::fs::write(
            dir.join("acme-root.pem"),
            crate::util::pem(&pebble.issuing_root().await),
        )
        .unwrap();
        std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
        let bridge = bridged.then(Bridge::new);
        let ip = bridge
            .as_ref()
            .map_or(IpAddr::from([127, 0, 0, 1]), |b| b.gateway());
        let agents_addr = SocketAddr::new(ip, crate::util::unique_port());
        let config = dir.join("tlsward.toml");
        Self {
            pebble,
            http01_port,
            old_ca,
            bridge,
            interval: "1s",
            rust_log: TRACE,
            agents_addr,
            addr: free_addr(),
            config,
            child: None,
        }
    }

    fn dir(&self) -> &Path {
        self.pebble.dir.path()
    }

    /// Writes the center's config: `[agents]` on the bridge, the certificates (`own` ones
    /// with `key = "agent"`), one target and one agent endpoint per `EndpointDef`.
    fn write_config(&self, shared: &[&str], own: &[&str], endpoints: &[EndpointDef]) {
        let mut text = format!(
            r#"
[defaults]
interval = "{interval}"
timeout = "3s"

[server]
state_dir = "{state_dir}"
first_round = "now"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{port}"

[deploy]
verify_timeout = "{verify_timeout}"
verify_interval = "500ms"

[agents]
listen = "{agents}"
names = ["{gateway}"]

[profile.site]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false
"#,
            state_dir = daemon_state_dir().display(),
            directory = self.pebble.directory,
            ca = self.pebble.tls_ca_file.display(),
            port = self.http01_port,
            agents = self.agents_addr,
            gateway = self.agents_addr.ip(),
            interval = self.interval,
            verify_timeout = if self.bridge.is_some() { "30s" } else { "1h" },
        );
        for name in shared {
            text.push_str(&format!(
                "\n[[certificate]]\nname = \"{name}\"\ndomains = [\"{name}.tlsward.test\"]\n"
            ));
        }
        for name in own {
            text.push_str(&format!(
                "\n[[certificate]]\nname = \"{name}\"\ndomains = [\"{name}.tlsward.test\"]\nkey = \"agent\"\n"
            ));
        }
        let mut targets = std::collections::HashSet::new();
        for e in endpoints {
            let target = format!("{}.tlsward.test:{}", e.certificate, e.at.port());
            // Endpoints sharing an address (the benchmark's) share its one `[[target]]`.
            if targets.insert(target.clone()) {
                text.push_str(&format!(
                    "\n[[target]]\naddress = \"{target}\"\nprofile = \"site\"\nconnect_to = [\"{}\"]\n",
                    e.at.ip()
                ));
            }
            text.push_str(&format!(
                r#"
[[endpoint]]
name = "{name}"
certificate = "{certificate}"
target = "{target}"
agent = "{agent}"
hook = "nginx"
settings = {{ fullchain_path = "{certs}/site.crt", key_path = "{certs}/site.key"{reload} }}
"#,
                name = e.name,
                certificate = e.certificate,
                agent = e.agent,
                certs = e.certs.display(),
                reload = e
                    .reload
                    .as_ref()
                    .map(|r| format!(", reload = \"{r}\""))
                    .unwrap_or_default(),
            ));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    /// Starts (or restarts) `tlsward serve` as a process, logging at trace level.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("center.log"))
            .unwrap();
        let child = serve_command(&self.config, self.addr)
            .current_dir(self.dir())
            .env("TLSWARD_LOG", self.rust_log)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn tlsward serve");
        self.child = Some(child);
        let addr = self.addr;
        let up = within(Duration::from_secs(120), EVERY, || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && get(addr, "/-/healthy").await.status == 200
        })
        .await;
        if up.is_none() {
            panic!(
                "the center never answered /-/healthy\n--- center ---\n{}\n--- config ---\n{}",
                tail(&self.dir().join("center.log"), 40),
                crate::util::read(&self.config)
            );
        }
    }

    /// SIGKILLs the center.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL the center");
            let _ = child.wait().await;
        }
    }

    /// `tlsward ARGS --config <center config>` to completion.
    async fn cli(&self, args: &[&str]) -> Output {
        crate::util::cli::tlsward(args, &self.config).await
    }

    /// A one-time token for `agent` and the fingerprint to pin, from the CLI's JSON.
    async fn token(&self, agent: &str, ttl: &str) -> (String, String) {
        let out = self
            .cli(&[
                "agent", "token", "create", agent, "--ttl", ttl, "-o", "json",
            ])
            .await;
        assert!(out.status.success(), "token create: {}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("token JSON");
        assert_eq!(v["agent"], agent);
        assert!(v["expires_at"].is_string(), "{v}");
        (
            v["token"].as_str().expect("token").to_owned(),
            v["ca_sha256"].as_str().expect("ca_sha256").to_owned(),
        )
    }

    /// `agent list -o json`, by agent name.
    async fn agents(&self) -> Vec<Value> {
        let out = self.cli(&["agent", "list", "-o", "json"]).await;
        assert!(out.status.success(), "agent list: {}", text(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("agent list JSON")
    }

    /// The store's journal, every entry rendered for a failure message.
    fn journal(&self) -> Vec<tlsward::store::JournalEntry> {
        open_store(&self.dir().join("state"))
            .journal_entries(None)
            .unwrap()
    }

    fn journal_text(&self) -> String {
        self.journal()
            .iter()
            .map(|e| format!("{} {} {}", e.at, e.kind, e.detail))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The metrics page.
    async fn metrics(&self) -> String {
        get(self.addr, "/metrics").await.body
    }

    /// The deployment journal kinds of one endpoint, in order.
    fn deployment_steps(&self, endpoint: &str) -> Vec<String> {
        let store = open_store(&self.dir().join("state"));
        let deployments = store.all_deployments().unwrap();
        store
            .journal_entries(None)
            .unwrap()
            .iter()
            .filter(|e| e.kind.starts_with("deployment."))
            .filter(|e| {
                e.detail["endpoint"] == endpoint
                    || e.detail["detail"]["endpoint"] == endpoint
                    || deployments.iter().any(|d| {
                        Some(d.id) == e.detail["deployment"].as_i64() && d.endpoint == endpoint
                    })
            })
            .map(|e| e.kind.clone())
            .collect()
    }

    /// The state of the newest deployment of `endpoint`, read from the database read-only
    /// (polled often: no store is opened for it, nothing is written).
    fn last_state(&self, endpoint: &str) -> Option<String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir().join("state/tlsward.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        conn.query_row(
            "SELECT state FROM deployments WHERE endpoint = ?1 ORDER BY id DESC LIMIT 1",
            [endpoint],
            |r| r.get(0),
        )
        .ok()
    }

    /// Waits for `endpoint`'s newest deployment to reach `state`, showing the journal and
    /// the agents' logs on a timeout.
    async fn wait_state(&self, endpoint: &str, state: &str, secs: u64, agents: &[&Agent]) {
        let seen = within(
            Duration::from_secs(secs),
            Duration::from_millis(500),
            || async move { self.last_state(endpoint).as_deref() == Some(state) },
        )
        .await;
        if seen.is_none() {
            let logs: String = agents
                .iter()
                .map(|a| format!("--- {} ---\n{}\n", a.name, tail(&a.log, 60)))
                .collect();
            panic!(
                "{endpoint} never reached {state} (now {:?})\n--- journal ---\n{}\n--- center ---\n{}\n{logs}",
                self.last_state(endpoint),
                self.journal_text(),
                tail(&self.dir().join("center.log"), 60)
            );
        }
    }

    /// The trust the center's profile has: Pebble's root and the old CA.
    async fn trust(&self) -> Arc<tlsward::cert::TrustStore> {
        let mut trust = self.old_ca.trust();
        trust.add_all(
            [&self.pebble.issuing_root().await],
            tlsward::cert::Origin::Private,
        );
        Arc::new(trust)
    }

    fn server_url(&self) -> String {
        format!("https://{}", self.agents_addr)
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// The daemons' compiled-hook cache, kept across runs (as tests/deploy.rs does).
fn daemon_state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agents-daemon-state")
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A process's stdout and stderr, for messages.
fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One agent: its namespace, its nginx, its state dir and config, its process.
struct Agent {
    name: String,
    // Field order is drop order: the process and nginx before their namespace.
    child: Option<tokio::process::Child>,
    nginx: NginxNs,
    /// More sites of this agent (a `key = "agent"` certificate's).
    extra: Vec<NginxNs>,
    dir: tempfile::TempDir,
    log: PathBuf,
    config: PathBuf,
    /// The CA files of the center's profile `site`, which the agent's local probe uses too.
    profile_cas: [PathBuf; 2],
    ns: Namespace,
}

impl Agent {
    /// A namespace with an nginx serving an old-CA certificate for `site_names`, and an
    /// agent config whose hook `nginx` writes its files and reloads it (or, `broken`, runs
    /// `/bin/true` instead of the reload).
    /// Its nginx listens on `port` (target addresses are unique in the center's config).
    async fn new(center: &Center, name: &str, site: &str, port: u16, broken: bool) -> Self {
        let ns = center.bridge.as_ref().expect("a bridge").namespace();
        // The endpoint host's own DNS: its service names are its own address.
        let names = [
            format!("{site}.tlsward.test"),
            "own.tlsward.test".to_owned(),
        ];
        ns.hosts(&[(
            ns.addr,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )]);
        let dir = tempfile::tempdir().unwrap();
        let old = center
            .old_ca
            .leaf(&[&format!("{site}.tlsward.test")])
            .build();
        let (cert, key) = old.write_pem(dir.path(), "old");
        let nginx = NginxNs::start(&ns, port, &cert, &key).await;
        let agent = Self {
            name: name.into(),
            child: None,
            nginx,
            extra: Vec::new(),
            log: dir.path().join("agent.log"),
            config: dir.path().join("agent.toml"),
            profile_cas: [
                center.dir().join("acme-root.pem"),
                center.dir().join("old-root.pem"),
            ],
            dir,
            ns,
        };
        agent.write_config(broken);
        agent
    }

    /// Adds a second nginx site in this namespace on `port` (for an own-key certificate),
    /// first serving an old-CA certificate for `site`.
    async fn add_site(&mut self, center: &Center, site: &str, port: u16) {
        let old = center
            .old_ca
            .leaf(&[&format!("{site}.tlsward.test")])
            .build();
        let (cert, key) = old.write_pem(self.dir.path(), site);
        self.extra
            .push(NginxNs::start(&self.ns, port, &cert, &key).await);
        self.write_config(false);
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write_config(&self, broken: bool) {
        let mut write_paths = vec![self.nginx.certs.display().to_string()];
        let mut commands = vec![self.nginx.reload_argv()];
        for site in &self.extra {
            write_paths.push(site.certs.display().to_string());
            commands.push(site.reload_argv());
        }
        let (commands, reload) = if broken {
            (vec![vec!["/bin/true".to_owned()]], "/bin/true".to_owned())
        } else {
            // The default reload is the main site's; another site's endpoint names its own
            // in its settings (laid over the hook's).
            (commands.clone(), commands[0].join(" "))
        };
        let text = format!(
            r#"[agent]
state_dir = "{state}"
keep = 3

[hook.nginx]
component = "{component}"
write_paths = {write_paths:?}
commands = {commands:?}
key_access = true
timeout = "60s"

[hook.nginx.settings]
reload = "{reload}"

[profile.site]
ca_files = {cas:?}
system_roots = false
"#,
            cas = self
                .profile_cas
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
            state = self.state_dir().display(),
            component = crate::util::hooks::component("pem-files").display(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// `tlsward agent enroll` inside the namespace.
    async fn enroll(&self, center: &Center, token: &str, ca_sha256: &str) -> Output {
        self.ns
            .command(TLSWARD)
            .args([
                "agent",
                "enroll",
                "--server",
                &center.server_url(),
                // `=`: a base64url token may begin with '-'.
                &format!("--token={token}"),
            ])
            .args(["--ca-sha256", ca_sha256, "--state-dir"])
            .arg(self.state_dir())
            .env("TLSWARD_LOG", TRACE)
            .output()
            .await
            .expect("run agent enroll")
    }

    /// Enrolls with a fresh token, asserting success; the log keeps the output.
    async fn enroll_ok(&self, center: &Center) -> String {
        let (token, fp) = center.token(&self.name, "1h").await;
        let out = self.enroll(center, &token, &fp).await;
        self.append_log(&out);
        assert!(out.status.success(), "enroll {}: {}", self.name, text(&out));
        assert!(self.state_dir().join("identity.pem").exists());
        token
    }

    fn append_log(&self, out: &Output) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        f.write_all(&out.stdout).unwrap();
        f.write_all(&out.stderr).unwrap();
    }

    /// `tlsward agent run -c agent.toml` inside the namespace, at trace level.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .ns
            .command(TLSWARD)
            .args(["agent", "run", "-c"])
            .arg(&self.config)
            .env("TLSWARD_LOG", TRACE)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn agent run");
        self.child = Some(child);
    }

    /// SIGTERM, then waits for the exit status.
    async fn stop(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        let pid = child.id()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
            .await
            .expect("the agent exits after SIGTERM")
            .expect("wait");
        self.child = None;
        status.code()
    }

    /// The endpoint the center's config gets for this agent's main site.
    fn endpoint(&self, name: &str, certificate: &str) -> EndpointDef {
        EndpointDef {
            name: name.into(),
            certificate: certificate.into(),
            agent: self.name.clone(),
            at: self.nginx.addr,
            certs: self.nginx.certs.clone(),
            reload: None,
        }
    }
}

/// Asserts that nothing secret appears in `text`: the tokens, and the PEM/age markers of a
/// private key.
fn assert_no_secrets(what: &str, text: &str, tokens: &[String]) {
    for t in tokens {
        assert!(!text.contains(t.as_str()), "{what} holds a token");
    }
    for marker in ["PRIVATE KEY", "AGE-SECRET-KEY-"] {
        assert!(!text.contains(marker), "{what} holds {marker}");
    }
}

/// The three-agent fleet: a shared certificate `fleet` on three agents, each in its
/// namespace with its nginx; agent-0 also has `own`, a `key = "agent"` certificate on a
/// second site.
async fn fleet(broken: Option<usize>) -> (Center, Vec<Agent>) {
    let mut center = Center::prepare().await;
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(
            Agent::new(
                &center,
                &format!("agent-{i}"),
                "fleet",
                SITE_PORT + i as u16,
                broken == Some(i),
            )
            .await,
        );
    }
    agents[0].add_site(&center, "own", 8443).await;
    let mut endpoints: Vec<EndpointDef> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| a.endpoint(&format!("web{i}"), "fleet"))
        .collect();
    let own = &agents[0].extra[0];
    endpoints.push(EndpointDef {
        name: "own0".into(),
        certificate: "own".into(),
        agent: "agent-0".into(),
        at: own.addr,
        certs: own.certs.clone(),
        reload: Some(own.reload_argv().join(" ")),
    });
    center.write_config(&["fleet"], &["own"], &endpoints);
    center.start().await;
    (center, agents)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_in_namespaces_install_and_the_center_verifies_each_by_handshake() {
    let (center, mut agents) = fleet(None).await;
    let mut tokens = Vec::new();
    for a in &agents {
        tokens.push(a.enroll_ok(&center).await);
    }
    let listed = center.agents().await;
    for a in &agents {
        let row = listed
            .iter()
            .find(|r| r["agent"] == a.name.as_str())
            .unwrap_or_else(|| panic!("{} not listed: {listed:?}", a.name));
        assert_eq!(row["revoked"], false, "{row}");
        assert!(row["identity_not_after"].is_string(), "{row}");
    }
    for a in &mut agents {
        a.run();
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    for i in 0..3 {
        center
            .wait_state(&format!("web{i}"), "verified", 240, &refs)
            .await;
    }
    center.wait_state("own0", "verified", 240, &refs).await;

    // Each nginx serves the fleet version, seen from the root namespace.
    let store = open_store(&center.dir().join("state"));
    let fleet = store.versions("fleet").unwrap();
    let newest = fleet.iter().max_by_key(|v| v.id).expect("a fleet version");
    let trust = center.trust().await;
    for a in &agents {
        assert_eq!(
            served_sha256(a.nginx.addr, "fleet.tlsward.test", trust.clone()).await,
            Some(newest.sha256.clone()),
            "{} does not serve the fleet version",
            a.name
        );
    }
    // The journal: installed (the agent's report) then verified (the center's probe).
    for e in center.journal() {
        if e.kind.starts_with("deployment.") && e.detail.to_string().contains("\"deployment\":1") {
            eprintln!("journal {} {} {}", e.at, e.kind, e.detail);
        }
    }
    for i in 0..3 {
        let steps = center.deployment_steps(&format!("web{i}"));
        let at = |k: &str| steps.iter().position(|s| s == k);
        let (installed, verified) = (at("deployment.installed"), at("deployment.verified"));
        assert!(
            installed.is_some() && installed < verified,
            "web{i}: {steps:?}"
        );
    }
    // Drift 0 everywhere.
    let metrics = center.metrics().await;
    for i in 0..3 {
        assert_eq!(
            metric(
                &metrics,
                "tlsward_endpoint_drift",
                &[("endpoint", &format!("web{i}")), ("certificate", "fleet")]
            ),
            Some(0.0),
            "web{i}"
        );
    }
    for a in &agents {
        assert!(
            metric(
                &metrics,
                "tlsward_agent_last_seen_timestamp_seconds",
                &[("agent", &a.name)]
            )
            .is_some(),
            "{}",
            a.name
        );
    }

    // key = "agent": the store holds no key for `own`, and nginx serves the agent's key.
    let own = store.versions("own").unwrap();
    let own_v = own.iter().max_by_key(|v| v.id).expect("an own version");
    let conn = rusqlite::Connection::open(center.dir().join("state/tlsward.db")).unwrap();
    let (key_len, holder): (i64, Option<String>) = conn
        .query_row(
            "SELECT length(key_sealed), key_holder FROM versions WHERE id = ?1",
            [own_v.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((key_len, holder.as_deref()), (0, Some("agent-0")));
    let own_site = &agents[0].extra[0];
    assert_eq!(
        served_sha256(own_site.addr, "own.tlsward.test", trust.clone()).await,
        Some(own_v.sha256.clone())
    );
    let served_pub = crate::util::tools::cert_pubkey(own_site.cert_path());
    assert_eq!(
        served_pub,
        crate::util::tools::key_pubkey(own_site.key_path())
    );
    // That key's DER is nowhere in the center's database file.
    let key_der = pem::parse(std::fs::read(own_site.key_path()).unwrap()).unwrap();
    let db = std::fs::read(center.dir().join("state/tlsward.db")).unwrap();
    assert!(
        !db.windows(key_der.contents().len())
            .any(|w| w == key_der.contents()),
        "the agent's key is in the center's store"
    );

    // Outbound only: in each namespace only nginx listens.
    for a in &agents {
        for s in a.ns.listening_sockets() {
            assert_eq!(s.processes, ["nginx"], "{}: {s:?}", a.name);
        }
    }

    // Clean exit on SIGTERM; nothing secret in any log at trace level or in the metrics.
    for a in &mut agents {
        assert_eq!(a.stop().await, Some(0), "{}", a.name);
    }
    for a in &agents {
        assert_no_secrets(&a.name, &crate::util::read(&a.log), &tokens);
    }
    assert_no_secrets(
        "the center's log",
        &crate::util::read(center.dir().join("center.log")),
        &tokens,
    );
    assert_no_secrets("/metrics", &metrics, &tokens);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_rolls_back_on_one_agent_and_the_fleet_survives_a_killed_center() {
    let (mut center, mut agents) = fleet(Some(2)).await;
    for a in &agents {
        a.enroll_ok(&center).await;
    }
    for a in &mut agents {
        a.run();
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    center.wait_state("web0", "verified", 240, &refs).await;
    center.wait_state("web1", "verified", 240, &refs).await;
    center.wait_state("web2", "rolled_back", 240, &refs).await;
    let trust = center.trust().await;
    let store = open_store(&center.dir().join("state"));
    let newest = store
        .versions("fleet")
        .unwrap()
        .into_iter()
        .max_by_key(|v| v.id)
        .unwrap()
        .sha256;
    // agent-2's nginx still serves its old, valid leaf; the others the new one.
    let served2 = served_sha256(agents[2].nginx.addr, "fleet.tlsward.test", trust.clone()).await;
    assert!(served2.is_some() && served2.as_deref() != Some(newest.as_str()));
    for a in &agents[..2] {
        assert_eq!(
            served_sha256(a.nginx.addr, "fleet.tlsward.test", trust.clone()).await,
            Some(newest.clone())
        );
    }

    // SIGKILL the center: the agents keep serving.
    let killed_at = real_now().unix_timestamp();
    center.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for a in &agents[..2] {
        assert_eq!(
            served_sha256(a.nginx.addr, "fleet.tlsward.test", trust.clone()).await,
            Some(newest.clone()),
            "{} stopped serving with the center down",
            a.name
        );
    }
    // agent-0 is stopped, its files are changed by hand, and it is restarted with the
    // center down: it redeploys from its local copy.
    assert_eq!(agents[0].stop().await, Some(0));
    let old = center.old_ca.leaf(&["fleet.tlsward.test"]).build();
    let (cert, key) = old.write_pem(agents[0].dir.path(), "hand");
    std::fs::copy(&cert, agents[0].nginx.cert_path()).unwrap();
    std::fs::copy(&key, agents[0].nginx.key_path()).unwrap();
    agents[0].run();
    let addr0 = agents[0].nginx.addr;
    eventually(120, "agent-0 redeploying from its local copy", || {
        let trust = trust.clone();
        let newest = newest.clone();
        async move { served_sha256(addr0, "fleet.tlsward.test", trust).await == Some(newest) }
    })
    .await;

    // The center returns: the agents reconnect within the backoff cap, and their reports
    // arrive (last_seen after the restart).
    center.start().await;
    let restarted = real_now().unix_timestamp();
    assert!(restarted >= killed_at);
    eventually(
        150,
        "every agent seen after the center's restart",
        || async {
            let listed = center.agents().await;
            agents.iter().all(|a| {
                listed.iter().any(|r| {
                    r["agent"] == a.name.as_str()
                        && r["last_seen"]
                            .as_str()
                            .and_then(|t| {
                                time::OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .is_some_and(|t| t.unix_timestamp() >= restarted)
                })
            })
        },
    )
    .await;
    eventually(60, "agent-0's redeployed report in the journal", || {
        std::future::ready(
            center.journal().iter().any(|e| {
                e.kind.contains("redeployed") || e.detail.to_string().contains("redeployed")
            }),
        )
    })
    .await;
    for a in &mut agents {
        assert_eq!(a.stop().await, Some(0), "{}", a.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_token_reuse_expiry_wrong_pin_revocation_foreign_ca_and_other_agents_certificates()
{
    let mut center = Center::prepare().await;
    let mut a0 = Agent::new(&center, "agent-0", "fleet", SITE_PORT, false).await;
    let a1 = Agent::new(&center, "agent-1", "other", SITE_PORT + 1, false).await;
    let endpoints = [a0.endpoint("web0", "fleet"), a1.endpoint("web1", "other")];
    center.write_config(&["fleet", "other"], &[], &endpoints);
    center.start().await;

    // A wrong --ca-sha256: refused before the token is sent, so the token still works.
    let (token, fp) = center.token("agent-0", "1h").await;
    let wrong = "00".repeat(32);
    let out = a0.enroll(&center, &token, &wrong).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pinned agent CA"),
        "{}",
        text(&out)
    );
    let out = a0.enroll(&center, &token, &fp).await;
    assert!(out.status.success(), "{}", text(&out));
    // The same token again: 401, journaled.
    let other_dir = tempfile::tempdir().unwrap();
    let out = a1
        .ns
        .command(TLSWARD)
        .args([
            "agent",
            "enroll",
            "--server",
            &center.server_url(),
            &format!("--token={token}"),
        ])
        .args(["--ca-sha256", &fp, "--state-dir"])
        .arg(other_dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // An expired token.
    let (short, _) = center.token("agent-1", "1s").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = a1.enroll(&center, &short, &fp).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let refused: Vec<Value> = center
        .journal()
        .into_iter()
        .filter(|e| e.kind == "agent.refused")
        .map(|e| e.detail)
        .collect();
    assert!(refused.len() >= 2, "{refused:?}");
    for r in &refused {
        assert!(!r.to_string().contains(&token) && !r.to_string().contains(&short));
    }
    a1.enroll_ok(&center).await;

    // agent-1 asks for agent-0's certificate: 403 and journaled.
    a0.run();
    center
        .wait_state("web0", "verified", 240, &[&a0, &a1])
        .await;
    let store = open_store(&center.dir().join("state"));
    let fleet_v = store
        .versions("fleet")
        .unwrap()
        .iter()
        .map(|v| v.id)
        .max()
        .unwrap();
    let ca_file = a0.state_dir().join("ca.pem");
    let (status, _) = mtls_get(
        &center,
        &ca_file,
        &a1.state_dir().join("identity.pem"),
        &a1.state_dir().join("identity.key"),
        &format!("/v1/bundle/{fleet_v}"),
    )
    .await
    .expect("agent-1's own identity is accepted at the TLS layer");
    assert_eq!(status, 403);
    // A client certificate from another CA: refused (at the handshake or with 401).
    let foreign_ca = TestCa::root_at("Foreign CA", real_now());
    let foreign = foreign_ca.leaf(&["agent-1"]).client().build();
    let (fcert, fkey) = foreign.write_pem(a1.dir.path(), "foreign");
    match mtls_get(&center, &ca_file, &fcert, &fkey, "/v1/state").await {
        Ok((status, _)) => assert_eq!(status, 401),
        Err(e) => eprintln!("foreign client certificate refused at the handshake: {e}"),
    }
    // Revoked: agent-0's next request is refused at once.
    let out = center.cli(&["agent", "revoke", "agent-0"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let (status, _) = mtls_get(
        &center,
        &ca_file,
        &a0.state_dir().join("identity.pem"),
        &a0.state_dir().join("identity.key"),
        "/v1/state",
    )
    .await
    .expect("the TLS layer still accepts a revoked identity's chain");
    assert_eq!(status, 401);
    let listed = center.agents().await;
    assert!(
        listed
            .iter()
            .any(|r| r["agent"] == "agent-0" && r["revoked"] == true),
        "{listed:?}"
    );
    let kinds: Vec<String> = center.journal().into_iter().map(|e| e.kind).collect();
    assert!(
        // The used token, the expired one, the other agent's bundle and the revoked agent; the
        // wrong pin never reaches the center, and the foreign CA's certificate is refused by
        // the TLS handshake itself.
        kinds.iter().filter(|k| *k == "agent.refused").count() >= 4,
        "{kinds:?}"
    );
    let _ = a0.stop().await;
    center.kill().await;
}

/// `GET path` on the agent API with a client certificate and key (PEM files), trusting the
/// agent CA as an enrollment wrote it (`ca_file`); the status code and body.
async fn mtls_get(
    center: &Center,
    ca_file: &Path,
    cert: &Path,
    key: &Path,
    path: &str,
) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca_pem = std::fs::read_to_string(ca_file).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(center.agents_addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::from(center.agents_addr.ip());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        center.agents_addr
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(90), tls.read_to_end(&mut body)).await;
    if let Ok(Err(e)) = read
        && body.is_empty()
    {
        return Err(e.to_string());
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    Ok((status, text))
}

// === the benchmark ===

/// One in-process agent task of the benchmark: an identity the real `tlsward agent enroll`
/// made, and the agent API's calls (long poll, bundle, reports) over mTLS.
/// The benchmark agents' HTTPS client (mTLS, HTTP/1.1).
type MtlsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

struct BenchAgent {
    name: String,
    client: MtlsClient,
    base: String,
    signing_key: String,
    age: age::x25519::Identity,
    /// What the bench's one TLS server presents; an install puts its version there.
    served: Arc<ServedSlot>,
    /// How many agents have a `/v1/state` request open right now.
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

/// The chain and key the benchmark's one TLS server presents: the newest version an agent
/// installed (every endpoint's target is that server, so the center's verification of each
/// install sees what the agent "installed", and the center goes quiet after two rounds).
#[derive(Debug, Default)]
struct ServedSlot {
    current: std::sync::RwLock<Option<(i64, Arc<rustls::sign::CertifiedKey>)>>,
}

impl ServedSlot {
    /// Serves `version` (its chain and its opened key) unless it already is served.
    fn install(&self, version: i64, chain_pem: &str, key: &[u8]) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        if self
            .current
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|(v, _)| *v >= version)
        {
            return;
        }
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("the bundle's chain");
        let key = if key.starts_with(b"-----BEGIN") {
            PrivateKeyDer::from_pem_slice(key).expect("the bundle's key")
        } else {
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()))
        };
        let provider = rustls::crypto::ring::default_provider();
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
            .expect("the chain and key match");
        let mut current = self.current.write().unwrap();
        if current.as_ref().is_none_or(|(v, _)| *v < version) {
            *current = Some((version, Arc::new(certified)));
        }
    }
}

impl rustls::server::ResolvesServerCert for ServedSlot {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().unwrap().as_ref()?.1.clone())
    }
}

/// One loopback TLS server presenting whatever `slot` holds (no certificate yet: the
/// handshake fails); it completes the handshake, then closes. Runs until the test ends.
async fn served_slot_server(slot: Arc<ServedSlot>) -> SocketAddr {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(slot);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                if let Ok(Ok(mut stream)) = handshake {
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

impl BenchAgent {
    /// The agent enrolled into `state` (its `agent.json`, identity, CA and age key).
    fn load(
        state: &Path,
        server: SocketAddr,
        served: Arc<ServedSlot>,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let meta: Value =
            serde_json::from_str(&crate::util::read(state.join("agent.json"))).expect("agent.json");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(state.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_file_iter(state.join("identity.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(state.join("identity.key")).unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(https);
        let age_text = crate::util::read(state.join("age.key"));
        let age = age_text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("an age identity")
            .parse()
            .expect("age identity");
        Self {
            name: meta["agent"].as_str().unwrap().to_owned(),
            client,
            base: format!("https://{server}"),
            signing_key: meta["signing_key"].as_str().unwrap().to_owned(),
            age,
            served,
            polls,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Vec<u8>), String> {
        use http_body_util::BodyExt;
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    }

    async fn report(
        &self,
        endpoint: &str,
        deployment: i64,
        event: tlsward::agent::protocol::ReportEvent,
        sha256: Option<&str>,
    ) -> Result<(), String> {
        let report = tlsward::agent::protocol::Report {
            endpoint: Some(endpoint.to_owned()),
            deployment: Some(deployment),
            event,
            sha256: sha256.map(str::to_owned),
            next_window: None,
            detail: serde_json::json!({"bench": true}),
        };
        let (status, _) = self
            .call(
                "POST",
                "/v1/report",
                Some(serde_json::to_string(&report).unwrap()),
            )
            .await?;
        (status < 300)
            .then_some(())
            .ok_or_else(|| format!("report: {status}"))
    }

    /// Long-polls forever; each deployment it is told of it fetches, checks (signature,
    /// leaf, sealed key opened) and reports installed, sending (version, when) to `done`.
    async fn run(self, done: tokio::sync::mpsc::UnboundedSender<(i64, std::time::Instant)>) {
        use tlsward::agent::protocol::{DesiredState, Instruction, ReportEvent, SignedBundle};
        let mut etag = String::new();
        let mut installed = std::collections::HashSet::new();
        let mut backoff = Duration::from_secs(1);
        loop {
            use std::sync::atomic::Ordering;
            self.polls.fetch_add(1, Ordering::SeqCst);
            let answer = self
                .call("GET", &format!("/v1/state?etag={etag}"), None)
                .await;
            self.polls.fetch_sub(1, Ordering::SeqCst);
            let state = match answer {
                Ok((200, body)) => serde_json::from_slice::<DesiredState>(&body).ok(),
                _ => None,
            };
            let Some(state) = state else {
                tokio::time::sleep(backoff.mul_f64(fastrand::f64())).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            };
            backoff = Duration::from_secs(1);
            etag = state.etag.clone();
            for ep in &state.endpoints {
                let Some(order) = &ep.deployment else {
                    continue;
                };
                if order.instruction == Instruction::RollBack || !installed.insert(order.id) {
                    continue;
                }
                let Ok((200, body)) = self
                    .call("GET", &format!("/v1/bundle/{}", order.version.id), None)
                    .await
                else {
                    installed.remove(&order.id);
                    continue;
                };
                let bundle: SignedBundle = serde_json::from_slice(&body).expect("a bundle");
                let payload = tlsward::agent::sign::verify(
                    &bundle,
                    &self.signing_key,
                    &tlsward::agent::sign::Expected {
                        agent: &self.name,
                        certificate: &ep.certificate,
                        version: order.version.id,
                        sha256: &order.version.sha256,
                    },
                )
                .expect("a bundle that verifies");
                let sealed = payload.sealed_key.as_ref().expect("a shared key, sealed");
                let key =
                    tlsward::agent::sign::open_with(&self.age, sealed).expect("the key opens");
                self.served
                    .install(order.version.id, &payload.chain_pem, key.expose());
                let _ = self
                    .report(&ep.name, order.id, ReportEvent::Started, None)
                    .await;
                let _ = self
                    .report(
                        &ep.name,
                        order.id,
                        ReportEvent::Installed,
                        Some(&order.version.sha256),
                    )
                    .await;
                let _ = done.send((order.version.id, std::time::Instant::now()));
            }
        }
    }
}

/// The serve process's resident set (kB) and CPU time (clock ticks: user + system).
fn rss_and_cpu(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from the state (field 3).
    let cpu = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, cpu)
}

/// The agents benchmark (`bench/agents/run`): N agents (default 1,000) enrolled with the
/// real CLI, then run as tasks in this process against one `tlsward serve` on loopback,
/// sharing one certificate. Prints the serve's idle RSS and CPU, and the time from a
/// renewal's issuance until every agent installed the new version. A benchmark, not a
/// timed test: nothing here asserts a speed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: bench/agents/run"]
async fn bench_agents_fleet() {
    let n: usize = std::env::var("TLSWARD_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut center = Center::prepare_with(false).await;
    center.interval = "1h";
    center.rust_log = "info";
    let certs = center.dir().join("unused-certs");
    // Every endpoint's target is this one server, presenting the newest version an agent
    // installed: the center verifies each install in two rounds, then has nothing to do.
    let served = Arc::new(ServedSlot::default());
    let at = served_slot_server(served.clone()).await;
    let endpoints: Vec<EndpointDef> = (0..n)
        .map(|i| EndpointDef {
            name: format!("e{i}"),
            certificate: "shared".into(),
            agent: format!("a{i}"),
            at,
            certs: certs.clone(),
            reload: None,
        })
        .collect();
    center.write_config(&["shared"], &[], &endpoints);
    center.start().await;
    let pid = center.child.as_ref().unwrap().id().unwrap();

    // Enrollment by the real CLI, a few at a time.
    let states = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut enrolls = tokio::task::JoinSet::new();
    // The center queues the first version's n deployments at its first issuance; a
    // `token create` process writing the store meanwhile can make a queueing fail
    // ("database is locked", not retried until the next reconciliation): tokens after.
    let store = open_store(&center.dir().join("state"));
    let queued = within(Duration::from_secs(600), EVERY, || {
        let store = &store;
        async move { (store.all_deployments().unwrap().len() >= n).then_some(()) }
    })
    .await;
    assert!(queued.is_some(), "the first version's deployments queued");
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        tokens.push(center.token(&format!("a{i}"), "1h").await);
    }
    for (i, (token, fp)) in tokens.into_iter().enumerate() {
        let dir = states.path().join(format!("a{i}"));
        let url = center.server_url();
        let permit = sem.clone().acquire_owned().await.unwrap();
        enrolls.spawn(async move {
            let out = tokio::process::Command::new(TLSWARD)
                .args([
                    "agent",
                    "enroll",
                    "--server",
                    &url,
                    &format!("--token={token}"),
                    "--ca-sha256",
                    &fp,
                    "--state-dir",
                ])
                .arg(&dir)
                .output()
                .await
                .unwrap();
            drop(permit);
            assert!(out.status.success(), "enroll a{i}: {}", text(&out));
            dir
        });
    }
    let dirs = enrolls.join_all().await;
    eprintln!(
        "bench: {n} agents enrolled in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for dir in &dirs {
        let agent = BenchAgent::load(dir, center.agents_addr, served.clone(), polls.clone());
        tokio::spawn(agent.run(tx.clone()));
    }
    // Everyone installs the first version.
    let mut counts = std::collections::HashMap::<i64, usize>::new();
    let first = loop {
        let (version, _) = tokio::time::timeout(Duration::from_secs(600), rx.recv())
            .await
            .expect("installs of the first version")
            .unwrap();
        let c = counts.entry(version).or_default();
        *c += 1;
        if *c == n {
            break version;
        }
    };
    eprintln!("bench: all {n} installed version {first}");

    // Idle: the center has verified every install (no deployment open) and every agent
    // holds a long poll. Polled, not timed: the wait ends when the store says so.
    let settled = std::time::Instant::now();
    let open = within(Duration::from_secs(600), EVERY, || {
        let store = &store;
        async move { store.open_deployments().unwrap().is_empty().then_some(()) }
    })
    .await;
    assert!(
        open.is_some(),
        "deployments still open after 600 s: {}",
        store.open_deployments().unwrap().len()
    );
    let verified = store
        .all_deployments()
        .unwrap()
        .iter()
        .filter(|d| d.state == tlsward::store::DeploymentState::Verified)
        .count();
    eprintln!(
        "bench: no deployment open {:.1} s after the last install ({verified} verified)",
        settled.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, cpu0) = rss_and_cpu(pid);
    let held0 = polls.load(std::sync::atomic::Ordering::SeqCst);
    let idle = Duration::from_secs(60);
    let t = std::time::Instant::now();
    tokio::time::sleep(idle).await;
    let (rss, cpu1) = rss_and_cpu(pid);
    let held1 = polls.load(std::sync::atomic::Ordering::SeqCst);
    let still_open = store.open_deployments().unwrap().len();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu_share = (cpu1 - cpu0) as f64 / ticks / t.elapsed().as_secs_f64();
    eprintln!(
        "bench: idle RSS {:.1} MB, CPU {:.2} % of a core, long polls held {held0} / {held1}",
        rss as f64 / 1024.0,
        cpu_share * 100.0
    );

    // One renewal of the shared certificate, issued by the center from Pebble.
    let asked = std::time::Instant::now();
    let out = center.cli(&["cert", "renew", "shared"]).await;
    let issued = std::time::Instant::now();
    assert!(out.status.success(), "cert renew: {}", text(&out));
    let newest = store
        .versions("shared")
        .unwrap()
        .iter()
        .map(|v| v.id)
        .max()
        .unwrap();
    assert_ne!(newest, first);
    let mut last = issued;
    let mut got = 0;
    while got < n {
        let (version, at) = tokio::time::timeout(Duration::from_secs(600), rx.recv())
            .await
            .expect("installs of the renewal")
            .unwrap();
        if version == newest {
            got += 1;
            last = last.max(at);
        }
    }
    println!("agents benchmark: {n} agents on one tlsward serve (loopback)");
    println!(
        "  serve RSS while idle:        {:.1} MB",
        rss as f64 / 1024.0
    );
    println!(
        "  serve CPU while idle ({}s): {:.2} % of a core",
        idle.as_secs(),
        cpu_share * 100.0
    );
    println!(
        "  long polls held:             {held0} at the start, {held1} at the end of the idle \
         minute (of {n}); deployments open then: {still_open}"
    );
    println!(
        "  renewal ordered (cert renew): {:.2} s",
        (issued - asked).as_secs_f64()
    );
    // The version is stored before the CLI's answer arrives: the first figure is a lower
    // bound, the second (which includes the ACME order) an upper bound.
    println!(
        "  issuance -> all {n} installed: {:.2} s (from the CLI's answer)",
        last.saturating_duration_since(issued).as_secs_f64()
    );
    println!(
        "  renew asked -> all {n} installed: {:.2} s (ACME order included)",
        last.saturating_duration_since(asked).as_secs_f64()
    );
    center.kill().await;
}

// === a bundle altered in transit ===

/// A TLS-terminating proxy in front of the agent API, as strong as an attacker can be: it
/// presents a server certificate from the agent CA itself (made from the store) and talks to
/// the center with the agent's own identity. Every bundle passing through has its chain
/// replaced by another valid certificate (and the leaf digest with it), the signature left
/// as it was. Counts the bundles it altered.
async fn altering_proxy(
    center: &Center,
    listen: SocketAddr,
    agent_state: &Path,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let store = open_store(&center.dir().join("state"));
    let now = real_now().unix_timestamp();
    let ca = tlsward::agent::ca::AgentCa::load_or_create(&store, now).expect("the agent CA");
    let server = ca
        .server_config(&[listen.ip().to_string()], now)
        .expect("a proxy certificate from the agent CA");
    let upstream = BenchAgent::load(
        agent_state,
        center.agents_addr,
        Arc::default(),
        Arc::default(),
    );
    let upstream = Arc::new(upstream);
    let substitute = center.old_ca.leaf(&["fleet.tlsward.test"]).build();
    let sub_pem = crate::util::pem_chain(&substitute.chain);
    let sub_sha = tlsward::cert::sha256_hex(substitute.der());
    let altered = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("bind the proxy");
    let count = altered.clone();
    let task = tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream, count) = (acceptor.clone(), upstream.clone(), count.clone());
            let (sub_pem, sub_sha) = (sub_pem.clone(), sub_sha.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (upstream, count) = (upstream.clone(), count.clone());
                        let (sub_pem, sub_sha) = (sub_pem.clone(), sub_sha.clone());
                        async move {
                            let method = req.method().as_str().to_owned();
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = (!body.is_empty())
                                .then(|| String::from_utf8_lossy(&body).into_owned());
                            let (status, mut answer) = upstream
                                .call(&method, &path, body)
                                .await
                                .unwrap_or((502, b"{\"error\":\"upstream\"}".to_vec()));
                            if status == 200 && path.starts_with("/v1/bundle/") {
                                answer = alter_bundle(&answer, &sub_pem, &sub_sha);
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (altered, task)
}

/// The bundle with its payload's chain and digest replaced; the signature kept.
fn alter_bundle(body: &[u8], chain_pem: &str, sha256: &str) -> Vec<u8> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let mut bundle: tlsward::agent::protocol::SignedBundle =
        serde_json::from_slice(body).expect("a bundle from the center");
    let mut payload: tlsward::agent::protocol::BundlePayload =
        serde_json::from_slice(&STANDARD.decode(&bundle.payload).unwrap()).unwrap();
    payload.chain_pem = chain_pem.to_owned();
    payload.sha256 = sha256.to_owned();
    bundle.payload = STANDARD.encode(serde_json::to_vec(&payload).unwrap());
    serde_json::to_vec(&bundle).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_altered_by_a_proxy_holding_an_agent_ca_certificate_is_refused() {
    let mut center = Center::prepare().await;
    let mut a0 = Agent::new(&center, "agent-0", "fleet", SITE_PORT, false).await;
    center.write_config(&["fleet"], &[], &[a0.endpoint("web0", "fleet")]);
    center.start().await;
    a0.enroll_ok(&center).await;
    let proxy_addr = SocketAddr::new(center.agents_addr.ip(), crate::util::unique_port());
    let (altered, proxy) = altering_proxy(&center, proxy_addr, &a0.state_dir()).await;
    // The agent talks to the proxy instead of the center.
    let config = crate::util::read(&a0.config).replace(
        "[agent]\n",
        &format!("[agent]\nserver = \"https://{proxy_addr}\"\n"),
    );
    std::fs::write(&a0.config, config).unwrap();
    let served_before =
        served_sha256(a0.nginx.addr, "fleet.tlsward.test", center.trust().await).await;
    a0.run();
    eventually(240, "a bundle altered by the proxy", || {
        std::future::ready(altered.load(std::sync::atomic::Ordering::SeqCst) > 0)
    })
    .await;
    let log = a0.log.clone();
    eventually(60, "the agent refusing the altered bundle", || {
        std::future::ready(crate::util::read(&log).contains("signature does not check"))
    })
    .await;
    // Nothing was installed: nginx serves what it served, the deployment is not installed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        served_sha256(a0.nginx.addr, "fleet.tlsward.test", center.trust().await).await,
        served_before
    );
    let state = center.last_state("web0");
    assert!(
        !matches!(state.as_deref(), Some("installed" | "verified")),
        "{state:?}"
    );
    let _ = a0.stop().await;
    proxy.abort();
}
