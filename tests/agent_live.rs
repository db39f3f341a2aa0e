//! The agent against the real center, on loopback: a `tlsward serve` process issuing from a
//! real Pebble with `[agents] listen` on 127.0.0.1, real `tlsward agent` processes, and a
//! Debian nginx as the endpoint the agent deploys to with the stock pem-files hook.
//! Enrollment over the network (a good token, the same token again, an expired token, a
//! wrong `--ca-sha256` that never lets the token leave), `agent run --once` with nothing due
//! and with an approved deployment (installed, then verified by the center), SIGTERM while a
//! slow hook runs, a revoked agent that backs off instead of hot-looping, `key = "agent"`
//! (no key in the store; nginx serves the agent's own key), and trace-level logs of both
//! sides that hold no token and no key.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tlsward::store::Store;

use crate::util::cli::open_store;
use crate::util::daemon::{answering, free_addr, serve_command};
use crate::util::pebble::Pebble;
use crate::util::servers::NginxHttps;
use crate::util::wait::{eventually, within};
use crate::util::{TestCa, real_now};

const NAME: &str = "site.tlsward.test";
const AGENT: &str = "web-01";
/// Trace level for both sides, except the hook compiler's own codegen tracing (gigabytes
/// when a component is compiled; it holds nothing of ours).
const TRACE: &str = "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
                     wasmtime_cranelift=info,wasmtime=info";

/// How the center's one agent endpoint is set up.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// `key = "agent"` on the certificate.
    agent_key: bool,
    /// A daily window that is closed now (opens in two hours).
    closed_window: bool,
}

/// Pebble, nginx serving an old certificate, and `tlsward serve` (a process, TLSWARD_LOG=trace,
/// stderr kept in `serve.log`) with one endpoint `web` bound to agent `web-01`.
struct Center {
    pebble: Pebble,
    nginx: NginxHttps,
    old_sha: String,
    config: PathBuf,
    /// The agent API's address.
    agents: SocketAddr,
    serve: tokio::process::Child,
}

impl Center {
    async fn start(setup: Setup) -> Self {
        let http01_port = crate::util::unique_port();
        let pebble = Pebble::start(http01_port, 30 * 86_400).await;
        let dir = pebble.dir.path().to_owned();
        let root = crate::util::pem(&pebble.issuing_root().await);
        std::fs::write(dir.join("acme-root.pem"), root).unwrap();
        let old_ca = TestCa::root_at("Old CA", real_now());
        std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
        let old = old_ca.leaf(&[NAME]).build();
        let (c, k) = old.write_pem(&dir, "old");
        let nginx = NginxHttps::start(1, &c, &k).await;
        let old_sha = tlsward::cert::sha256_hex(old.der());
        let port = nginx.addrs[0].port();
        let agents = free_addr();
        let certs = nginx.certs.display().to_string();
        let now = real_now();
        let window = if setup.closed_window {
            format!(
                "[window.nightly]\ndays = [\"daily\"]\nstart = \"{:02}:00\"\nduration = \"1h\"\n",
                (now.hour() + 2) % 24
            )
        } else {
            String::new()
        };
        let config = format!(
            r#"
[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[deploy]
verify_timeout = "120s"
verify_interval = "500ms"
emergency_days = 1

[agents]
listen = "{agents}"

{window}
[[certificate]]
name = "site"
domains = ["{NAME}"]
{key}

[profile.site]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false

[[target]]
address = "127.0.0.1:{port}"
server_name = "{NAME}"
profile = "site"
interval = "1s"

[[endpoint]]
name = "web"
certificate = "site"
target = "127.0.0.1:{port}"
agent = "{AGENT}"
hook = "nginx"
{window_line}
settings = {{ fullchain_path = "{certs}/0.crt", key_path = "{certs}/0.key" }}
"#,
            directory = pebble.directory,
            ca = pebble.tls_ca_file.display(),
            key = if setup.agent_key {
                "key = \"agent\""
            } else {
                ""
            },
            window_line = if setup.closed_window {
                "window = \"nightly\""
            } else {
                ""
            },
        );
        let path = dir.join("tlsward.toml");
        std::fs::write(&path, config).unwrap();
        let http = free_addr();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let serve = serve_command(&path, http)
            .env("TLSWARD_LOG", TRACE)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        answering(http, "/-/healthy").await;
        // The agent API answers (a TLS handshake is possible) once the listener is bound.
        eventually(60, "the agent API listening", || async move {
            tokio::net::TcpStream::connect(agents).await.is_ok()
        })
        .await;
        Self {
            pebble,
            nginx,
            old_sha,
            config: path,
            agents,
            serve,
        }
    }

    fn dir(&self) -> &Path {
        self.pebble.dir.path()
    }

    fn store(&self) -> Store {
        open_store(&self.dir().join("state"))
    }

    fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.agents.port())
    }

    /// `tlsward ARGS -c <center config>` with logs off.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"));
        cmd.args(args)
            .arg("-c")
            .arg(&self.config)
            .env_remove("TLSWARD_LOG");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// A fresh token for `web-01` (`ttl` as the CLI takes it): (token, ca_sha256).
    async fn token(&self, ttl: &str) -> (String, String) {
        let out = self
            .cli(&[
                "agent", "token", "create", AGENT, "--ttl", ttl, "-o", "json",
            ])
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["ca_sha256"].as_str().unwrap().to_owned(),
        )
    }

    /// Every journal entry, oldest first.
    fn journal(&self) -> Vec<tlsward::store::JournalEntry> {
        self.store().journal_entries(None).unwrap()
    }

    /// The journal as text, for failure messages.
    fn journal_text(&self) -> String {
        self.journal()
            .iter()
            .map(|e| format!("{} {} {}", e.at, e.kind, e.detail))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The open (or last) deployment of `web`: (id, state).
    fn deployment(&self) -> Option<(i64, String)> {
        let conn = rusqlite::Connection::open(self.dir().join("state/tlsward.db")).unwrap();
        conn.query_row(
            "SELECT id, state FROM deployments WHERE endpoint = 'web' ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
    }

    fn serve_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("serve.log")).unwrap_or_default()
    }

    /// The SHA-256 of the leaf nginx serves now.
    fn served_sha(&self) -> String {
        tlsward::cert::sha256_hex(&served_leaf(self.nginx.addrs[0]))
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        let _ = self.serve.start_kill();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The leaf `addr` serves for NAME, read by openssl as an outside observer would (DER).
fn served_leaf(addr: SocketAddr) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername {NAME} </dev/null 2>/dev/null \
             | openssl x509 -outform DER"
        ))
        .output()
        .expect("openssl");
    out.stdout
}

/// One agent host: its directory (state dir, config, logs) beside the center's nginx.
struct AgentHost {
    dir: tempfile::TempDir,
}

impl AgentHost {
    /// The agent's config: pem-files granted nginx's certs and `reload` (an argv), the site
    /// profile trusting the center's CA files.
    fn new(center: &Center, reload: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_files = ["acme-root.pem", "old-root.pem"].map(|f| center.dir().join(f));
        let config = format!(
            r#"[agent]
state_dir = "state"
[hook.nginx]
component = "{component}"
write_paths = ["{certs}"]
commands = [{reload:?}]
key_access = true
timeout = "60s"
[hook.nginx.settings]
reload = "{reload_line}"
[profile.site]
ca_files = [{ca0:?}, {ca1:?}]
system_roots = false
"#,
            component = crate::util::hooks::component("pem-files").display(),
            certs = center.nginx.certs.display(),
            reload_line = reload.join(" "),
            ca0 = ca_files[0].display().to_string(),
            ca1 = ca_files[1].display().to_string(),
        );
        std::fs::write(dir.path().join("agent.toml"), config).unwrap();
        Self { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    /// `tlsward agent enroll` into the state dir, logs at trace kept in `enroll-<n>.log`.
    async fn enroll(&self, server: &str, token: &str, ca_sha256: &str) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"));
        cmd.args(["agent", "enroll", "--server", server, "--token", token])
            .args(["--ca-sha256", ca_sha256, "--state-dir"])
            .arg(self.state())
            .env("TLSWARD_LOG", TRACE);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        self.keep_log(&out.stderr);
        out
    }

    /// `tlsward agent run -c agent.toml ARGS` to completion, at trace level.
    async fn run_once(&self) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"));
        cmd.args(["agent", "run", "--once", "-c"])
            .arg(self.config())
            .env("TLSWARD_LOG", TRACE);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        self.keep_log(&out.stderr);
        out
    }

    /// `tlsward agent run` as a long-running process, its stderr in `run.log`.
    fn spawn(&self, log: &str) -> tokio::process::Child {
        let file = std::fs::File::create(self.dir.path().join("run.log")).unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["agent", "run", "-c"])
            .arg(self.config())
            .env("TLSWARD_LOG", log)
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    fn run_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    fn keep_log(&self, stderr: &[u8]) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cli.log"))
            .unwrap();
        f.write_all(stderr).unwrap();
    }

    /// Everything the agent's processes wrote to stderr.
    fn logs(&self) -> String {
        let cli = std::fs::read_to_string(self.dir.path().join("cli.log")).unwrap_or_default();
        format!("{cli}{}", self.run_log())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The secrets whose traces no log may hold: the token(s), the agent's identity key and age
/// key, and any private key PEM at all.
fn assert_no_secrets(logs: &[(&str, String)], tokens: &[String], host: &AgentHost) {
    let mut needles: Vec<(String, String)> = tokens
        .iter()
        .map(|t| ("a token".to_owned(), t.clone()))
        .collect();
    let state = host.state();
    if let Ok(pem) = std::fs::read_to_string(state.join("identity.key")) {
        // The base64 body of the identity key, line by line (any line would give it away).
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
        {
            needles.push(("the identity key".into(), line.to_owned()));
        }
    }
    if let Ok(age) = std::fs::read_to_string(state.join("age.key")) {
        needles.push(("the age key".into(), age.trim().to_owned()));
    }
    needles.push(("an age secret key".into(), "AGE-SECRET-KEY-".into()));
    needles.push(("a private key PEM".into(), "PRIVATE KEY-----".into()));
    for (who, log) in logs {
        assert!(!log.is_empty(), "{who} logged nothing at trace level");
        for (what, needle) in &needles {
            assert!(!log.contains(needle.as_str()), "{who}'s log holds {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_over_the_network_refuses_reuse_expiry_and_a_wrong_pin() {
    let center = Center::start(Setup::default()).await;
    let host = AgentHost::new(&center, &center.nginx.reload_argv());
    let url = center.server_url();

    // A wrong pin: refused before the token is sent, so the center never sees it.
    let (token, pin) = center.token("1h").await;
    let refused_before = center
        .journal()
        .iter()
        .filter(|e| e.kind == "agent.refused")
        .count();
    let wrong = format!(
        "{}{}",
        &pin[..63],
        if pin.ends_with('0') { '1' } else { '0' }
    );
    let out = host.enroll(&url, &token, &wrong).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("enrollment failed"), "{err}");
    assert!(err.contains("does not hold the pinned agent CA"), "{err}");
    assert!(!host.state().join("agent.json").exists());
    let journal = center.journal();
    assert_eq!(
        journal.iter().filter(|e| e.kind == "agent.refused").count(),
        refused_before,
        "{}",
        center.journal_text()
    );
    assert!(!journal.iter().any(|e| e.kind == "agent.enrolled"));

    // The same token with the right pin: enrolled; the state dir 0700, its keys 0600.
    let out = host.enroll(&url, &token, &pin).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state = host.state();
    assert_eq!(mode(&state), 0o700);
    for f in ["identity.key", "age.key", "agent.json"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    for f in ["identity.pem", "ca.pem"] {
        assert!(state.join(f).exists(), "{f}");
    }
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("agent.json")).unwrap()).unwrap();
    assert_eq!(file["agent"], AGENT);
    assert_eq!(file["ca_sha256"], pin.as_str());
    let row = center.store().agent(AGENT).unwrap().unwrap();
    assert!(
        row.identity_sha256.is_some() && row.enrolled_at.is_some(),
        "{row:?}"
    );
    assert!(center.journal().iter().any(|e| e.kind == "agent.enrolled"));

    // The same token again, into another state dir: the center refuses it (journaled).
    let other = AgentHost::new(&center, &center.nginx.reload_argv());
    let out = other.enroll(&url, &token, &pin).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("enrollment failed"), "{err}");
    assert!(
        err.contains("401") || err.to_lowercase().contains("token"),
        "{err}"
    );
    assert!(!other.state().join("agent.json").exists());
    let refusals = || {
        center
            .journal()
            .into_iter()
            .filter(|e| e.kind == "agent.refused")
            .map(|e| e.detail.to_string())
            .collect::<Vec<_>>()
    };
    let after_reuse = refusals();
    assert_eq!(after_reuse.len(), refused_before + 1, "{after_reuse:?}");
    assert!(
        after_reuse.last().unwrap().contains("used"),
        "{after_reuse:?}"
    );

    // An expired token: refused.
    let (expiring, _) = center.token("1s").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = AgentHost::new(&center, &center.nginx.reload_argv());
    let out = late.enroll(&url, &expiring, &pin).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!late.state().join("agent.json").exists());
    let after_expiry = refusals();
    assert_eq!(after_expiry.len(), refused_before + 2, "{after_expiry:?}");
    assert!(
        after_expiry.last().unwrap().contains("expired"),
        "{after_expiry:?}"
    );
    // The first agent's record is untouched by the refusals.
    assert_eq!(center.store().agent(AGENT).unwrap().unwrap(), row);

    // Trace-level logs on both sides hold no token and no key.
    let tokens = [token, expiring];
    assert_no_secrets(
        &[
            ("serve", center.serve_log()),
            ("the agent", host.logs()),
            ("the second agent", other.logs()),
        ],
        &tokens,
        &host,
    );
}

/// A host enrolled with a fresh token; the token, for the log checks.
async fn enrolled(center: &Center, reload: &[String]) -> (AgentHost, String) {
    let host = AgentHost::new(center, reload);
    let (token, pin) = center.token("1h").await;
    let out = host.enroll(&center.server_url(), &token, &pin).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The compiled hooks cache the tests share (compiling pem-files in a debug build takes
    // minutes): the agent's own cache dir is a link to it.
    let shared = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hook-cache");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, host.state().join("hook-cache")).unwrap();
    (host, token)
}

/// The kinds of the journal entries about deployment `id`, oldest first.
fn kinds_of(center: &Center, id: i64) -> Vec<String> {
    center
        .journal()
        .into_iter()
        .filter(|e| e.detail["deployment"] == id)
        .map(|e| e.kind)
        .collect()
}

/// Waits for `web`'s deployment to be in `state`; its id.
async fn deployment_in(center: &Center, secs: u64, state: &str) -> i64 {
    let found = within(
        Duration::from_secs(secs),
        Duration::from_millis(250),
        || {
            let d = center.deployment();
            async move { d.filter(|(_, s)| s == state).map(|(id, _)| id) }
        },
    )
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "web's deployment never became {state} (now {:?})\n--- journal ---\n{}\n--- serve ---\n{}",
            center.deployment(),
            center.journal_text(),
            tail(&center.serve_log())
        )
    })
}

/// Waits until nginx serves `sha256` (its reload is asynchronous: old workers may answer for
/// a moment).
async fn serves(center: &Center, sha256: &str) {
    eventually(60, &format!("nginx serving {sha256}"), || {
        let now = center.served_sha();
        async move { now == sha256 }
    })
    .await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains(" INFO "))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_does_nothing_when_nothing_is_due_then_deploys_an_approved_version() {
    let center = Center::start(Setup {
        closed_window: true,
        ..Setup::default()
    })
    .await;
    let (host, token) = enrolled(&center, &center.nginx.reload_argv()).await;
    // Issued from Pebble and queued for web's closed window.
    let id = deployment_in(&center, 180, "waiting").await;
    let version = center.store().latest("site").unwrap().unwrap();

    // Nothing is due: exit 0, nothing touched.
    let out = host.run_once().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(center.served_sha(), center.old_sha);
    assert_eq!(center.deployment(), Some((id, "waiting".to_owned())));
    // The bundle was fetched and kept (sealed) for when the window opens.
    assert!(
        host.state().join("bundles/site").read_dir().is_ok(),
        "{}",
        host.logs()
    );

    // Approved: the next --once deploys it, and the center verifies it.
    let out = center.cli(&["deploy", "approve", &id.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = host.run_once().await;
    assert_eq!(out.status.code(), Some(0), "{}", tail(&text(&out)));
    // nginx's reload is asynchronous: its old workers may answer for a moment.
    let served = within(Duration::from_secs(60), Duration::from_millis(250), || {
        let sha = center.served_sha();
        let want = version.sha256.clone();
        async move { sha == want }
    })
    .await;
    assert!(
        served.is_some(),
        "nginx serves {} (old: {}), deployment {:?}\n--- agent ---\n{}\n--- journal ---\n{}",
        center.served_sha(),
        center.old_sha,
        center.deployment(),
        tail(&text(&out)),
        center.journal_text()
    );
    deployment_in(&center, 120, "verified").await;
    let kinds = kinds_of(&center, id);
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(
        at("deployment.queued") < at("deployment.running"),
        "{kinds:?}"
    );
    assert!(
        at("deployment.running") < at("deployment.installed"),
        "{kinds:?}"
    );
    assert!(
        at("deployment.installed") < at("deployment.verified"),
        "{kinds:?}"
    );
    let installed = center.store().deployment_detail(id).unwrap();
    assert!(
        installed.to_string().contains(&version.sha256),
        "{installed}"
    );

    // The local record and files: what was written, with its fingerprint.
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(host.state().join("installed.json")).unwrap(),
    )
    .unwrap();
    assert!(record.to_string().contains(&version.sha256), "{record}");

    // Nothing due again: exit 0, nothing rerun.
    let before = std::fs::metadata(center.nginx.certs.join("0.crt"))
        .unwrap()
        .modified()
        .unwrap();
    let out = host.run_once().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = std::fs::metadata(center.nginx.certs.join("0.crt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the files were not rewritten");

    // The central key of this version never shows in either side's trace logs.
    let key = center.store().version_key(version.id).unwrap();
    let logs = [("serve", center.serve_log()), ("the agent", host.logs())];
    for b64 in [base64_of(key.expose()), base64url_of(key.expose())] {
        for (who, log) in &logs {
            assert!(
                !log.contains(&b64[..40]),
                "{who}'s log holds the version's key"
            );
        }
    }
    assert_no_secrets(&logs, &[token], &host);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64url_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_a_hook_runs_lets_it_finish_and_exits_0() {
    // The reload command: marks its start, takes a few seconds, reloads nginx, marks its end.
    let center_dir = tempfile::tempdir().unwrap();
    let center = Center::start(Setup::default()).await;
    let script = center_dir.path().join("slow-reload.sh");
    let began = center_dir.path().join("began");
    let ended = center_dir.path().join("ended");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\nsleep 4\n{} || exit 1\ntouch '{}'\n",
            began.display(),
            center
                .nginx
                .reload_argv()
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" "),
            ended.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (host, _token) = enrolled(&center, &[script.to_str().unwrap().to_owned()]).await;
    let mut agent = host.spawn("debug");
    let pid = agent.id().unwrap();
    let b = began.clone();
    eventually(240, "the slow reload to start", || {
        let b = b.clone();
        async move { b.exists() }
    })
    .await;
    assert!(!ended.exists());
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(120), agent.wait())
        .await
        .expect("the agent exits after its hook")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", tail(&host.run_log()));
    // The hook ran to its end: the reload happened, nginx serves the new version.
    assert!(ended.exists(), "{}", host.run_log());
    let version = center.store().latest("site").unwrap().unwrap();
    serves(&center, &version.sha256).await;
    assert!(
        host.run_log().contains("a running hook finishes first"),
        "{}",
        host.run_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_agent_gets_401_logs_it_and_backs_off() {
    let center = Center::start(Setup {
        closed_window: true,
        ..Setup::default()
    })
    .await;
    let (host, _token) = enrolled(&center, &center.nginx.reload_argv()).await;
    let mut agent = host.spawn("info");
    // Seen by the center (its long poll is open).
    eventually(60, "the agent seen by the center", || async {
        center
            .store()
            .agent(AGENT)
            .unwrap()
            .is_some_and(|r| r.last_seen.is_some())
    })
    .await;
    // Its second long poll is held open by now (nothing changes for it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = center.cli(&["agent", "revoke", AGENT]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let refused = || {
        center
            .journal()
            .into_iter()
            .filter(|e| e.kind == "agent.refused" && e.detail.to_string().contains("revoked"))
            .count()
    };
    // Refused at once: even the long poll it holds open (answered only after a minute
    // otherwise) looks again within seconds and gets 401.
    let revoked_at = std::time::Instant::now();
    eventually(30, "a refused call of the revoked agent", || async {
        refused() > 0
    })
    .await;
    let first = std::time::Instant::now();
    eprintln!(
        "first 401 {:.1} s after the revocation",
        (first - revoked_at).as_secs_f64()
    );
    let start_count = refused();
    // Over a generous period it keeps trying, but only as its backoff allows.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let n = refused() - start_count;
    let elapsed = first.elapsed().as_secs();
    eprintln!("{n} refused calls in the {elapsed} s after the first");
    assert!(
        n <= 15,
        "{n} refused calls in {elapsed} s: a hot loop\n{}",
        tail(&host.run_log())
    );
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    let log = host.run_log();
    assert!(
        log.contains("the center refuses this agent's identity"),
        "{}",
        tail(&log)
    );
    let _ = agent.start_kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn key_agent_the_store_holds_no_key_and_nginx_serves_the_agent_s_key() {
    let center = Center::start(Setup {
        agent_key: true,
        ..Setup::default()
    })
    .await;
    let (host, token) = enrolled(&center, &center.nginx.reload_argv()).await;
    let mut agent = host.spawn(TRACE);
    // The agent sends its CSR, the center orders with it, the agent deploys, the center
    // verifies.
    let id = deployment_in(&center, 240, "verified").await;
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    let version = center.store().latest("site").unwrap().unwrap();
    serves(&center, &version.sha256).await;
    assert!(kinds_of(&center, id).contains(&"deployment.installed".to_owned()));

    // The store: the row names the agent as the key's holder and keeps no key.
    let conn = rusqlite::Connection::open(center.dir().join("state/tlsward.db")).unwrap();
    let (holder, sealed): (Option<String>, Vec<u8>) = conn
        .query_row(
            "SELECT key_holder, key_sealed FROM versions WHERE id = ?1",
            [version.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(holder.as_deref(), Some(AGENT));
    assert!(sealed.is_empty());
    assert!(center.store().version_key(version.id).is_err());

    // The leaf nginx serves certifies the agent's local key (sealed to its own age key).
    let leaf = served_leaf(center.nginx.addrs[0]);
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    let served_key = cert.public_key().subject_public_key.data.to_vec();
    let age_text = std::fs::read_to_string(host.state().join("age.key")).unwrap();
    let age: age::x25519::Identity = age_text.trim().parse().unwrap();
    let mut local = Vec::new();
    for entry in std::fs::read_dir(host.state().join("keys/site")).unwrap() {
        let sealed = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let key = tlsward::agent::sign::open_with(&age, &sealed).unwrap();
        let pair = rcgen::KeyPair::try_from(key.expose()).unwrap();
        local.push(pair.public_key_raw().to_vec());
    }
    assert!(local.contains(&served_key), "{} local keys", local.len());
    // And no log holds that key.
    assert_no_secrets(
        &[("serve", center.serve_log()), ("the agent", host.logs())],
        &[token],
        &host,
    );
}

#[test]
fn a_token_beginning_with_a_dash_is_taken_as_the_token() {
    // base64url tokens begin with '-' one time in 64; `--token -x...` must not be an option.
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["agent", "enroll", "--server"])
        .arg(format!("https://127.0.0.1:{port}"))
        .args(["--token", "-8Tz0aWl5q2t3cR0Zc9k1m1o2p3q4r5s6t7u8v9w0x1y"])
        .args(["--ca-sha256", &"ab".repeat(32), "--state-dir"])
        .arg(dir.path().join("state"))
        .env_remove("TLSWARD_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
    // It got as far as trying the (closed) center.
    assert!(err.contains("enrollment failed"), "{err}");
    assert_ne!(out.status.code(), Some(0));
    assert_ne!(out.status.code(), Some(2), "{err}");
}
