//! Disaster recovery end to end: `tlsward serve` (the real binary) with Pebble 2.6 issues two
//! certificates and deploys one to nginx through the stock `pem-files` hook; `backup create`
//! runs beside it; the state directory is deleted; `backup restore` with the offline
//! identity; `serve` again: `cert list` is identical, the ACME account is the same one (no
//! registration), nothing is redeployed and drift stays 0, and the next renewal of a
//! restored version sends `replaces`. The transcript is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tlsward::store::{KeySource, Store};

use super::{identity, text};
use crate::util::exposition::assert_metric;
use crate::util::http::get;
use crate::util::pebble::Pebble;
use crate::util::servers::NginxHttps;
use crate::util::{TestCa, real_now};

/// The real `tlsward serve`, its log in a file; SIGTERM and waited for on drop.
struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Serve {
    fn start(config: &Path, log: PathBuf) -> Self {
        let port = crate::util::unique_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string())
            .env_remove("TLSWARD_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        match tokio::net::TcpStream::connect(self.addr).await {
            Ok(_) => get(self.addr, "/metrics").await.body,
            Err(_) => String::new(),
        }
    }

    async fn wait_for(&mut self, secs: u64, what: &str, series: &str) {
        for _ in 0..secs * 10 {
            if self.metrics().await.contains(series) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "serve exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {what} ({series})\n--- metrics ---\n{}\n--- log ---\n{}",
            self.metrics().await,
            self.log()
        );
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI, records `$ command` and its output in the transcript.
fn run(transcript: &mut String, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(args)
        .env_remove("TLSWARD_LOG")
        .output()
        .unwrap();
    transcript.push_str(&format!(
        "$ tlsward {}\n{}[exit {}]\n",
        args.join(" "),
        text(&out),
        out.status.code().unwrap_or(-1)
    ));
    out
}

fn account(dir: &Path) -> (String, i64) {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("state/tlsward.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row("SELECT account_url, created_at FROM accounts", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn disaster_recovery_restores_the_same_account_versions_and_deployments() {
    let http01_port = crate::util::unique_port();
    let pebble = Pebble::start_ari(http01_port, 30 * 86_400).await;
    let dir = pebble.dir.path();
    let root = crate::util::pem(&pebble.issuing_root().await);
    std::fs::write(dir.join("acme-root.pem"), root).unwrap();
    let old_ca = TestCa::root_at("Old CA", real_now());
    std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
    let old = old_ca.leaf(&["site.tlsward.test"]).build();
    let old_dir = tempfile::tempdir().unwrap();
    let (old_cert, old_key) = old.write_pem(old_dir.path(), "old");
    let nginx = NginxHttps::start(1, &old_cert, &old_key).await;
    let web = nginx.addrs[0];
    let (offline, recipient) = identity(dir, "offline.key");
    let reload = nginx.reload_argv();
    let certs = nginx.certs.display().to_string();
    // Only the hook cache lives in server.state_dir; the store ("the state") is dir/state.
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("backup-daemon-state");
    let config = format!(
        r#"
[server]
state_dir = "{cache}"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[backup]
recipients = ["{recipient}"]

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[deploy]
verify_timeout = "30s"
verify_interval = "500ms"

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]

[[certificate]]
name = "api"
domains = ["api.tlsward.test"]

[profile.site]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false

[[target]]
address = "site.tlsward.test:{port}"
profile = "site"
interval = "1s"
connect_to = ["127.0.0.1"]

[hook.nginx]
component = "{pem_files}"
write_paths = ["{certs}"]
commands = [{reload:?}]
timeout = "60s"

[hook.nginx.settings]
reload = "{reload_str}"

[[endpoint]]
name = "web"
certificate = "site"
target = "site.tlsward.test:{port}"
hook = "nginx"
settings = {{ fullchain_path = "{certs}/0.crt", key_path = "{certs}/0.key" }}
"#,
        cache = cache.display(),
        directory = pebble.directory,
        ca = pebble.tls_ca_file.display(),
        port = web.port(),
        pem_files = crate::util::hooks::component("pem-files").display(),
        reload_str = reload.join(" "),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = path.to_str().unwrap();
    let mut t = String::new();

    // 1. serve issues both certificates and deploys site to nginx.
    let mut serve = Serve::start(&path, dir.join("serve-1.log"));
    serve
        .wait_for(
            240,
            "web deployed",
            "tlsward_deployments_total{endpoint=\"web\",result=\"verified\"} 1",
        )
        .await;
    serve
        .wait_for(
            60,
            "web in sync",
            "tlsward_endpoint_drift{endpoint=\"web\",certificate=\"site\"} 0",
        )
        .await;
    for _ in 0..600 {
        let store = Store::open_existing(
            &dir.join("state/tlsward.db"),
            &KeySource::File(dir.join("state/store.key")),
        )
        .unwrap();
        if store.latest("api").unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list_before = run(&mut t, &["cert", "list", "--config", cfg]);
    assert!(list_before.status.success());
    let list_before = String::from_utf8_lossy(&list_before.stdout).into_owned();
    assert!(
        list_before.contains("site") && list_before.contains("api"),
        "{list_before}"
    );
    let account_before = account(dir);
    let (deployments_before, site_before) = {
        let s = Store::open_existing(
            &dir.join("state/tlsward.db"),
            &KeySource::File(dir.join("state/store.key")),
        )
        .unwrap();
        (
            s.all_deployments().unwrap(),
            s.latest("site").unwrap().unwrap(),
        )
    };
    assert_eq!(deployments_before.len(), 1, "{deployments_before:?}");

    // 2. A backup while serve runs.
    let file = dir.join("dr.age");
    let out = run(
        &mut t,
        &[
            "backup",
            "create",
            "--config",
            cfg,
            "--to",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{t}");
    let log1 = serve.stop();

    // 3. The disaster: the state directory is gone.
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    t.push_str("$ rm -rf state\n");

    // 4. Restore with the offline identity, into a fresh state directory.
    let out = run(
        &mut t,
        &[
            "backup",
            "restore",
            file.to_str().unwrap(),
            "--identity",
            offline.to_str().unwrap(),
            "--config",
            cfg,
        ],
    );
    assert!(out.status.success(), "{t}");

    // 5. serve again: the same account, the same versions, nothing redeployed.
    let mut serve = Serve::start(&path, dir.join("serve-2.log"));
    serve
        .wait_for(
            60,
            "web in sync after the restore",
            "tlsward_endpoint_drift{endpoint=\"web\",certificate=\"site\"} 0",
        )
        .await;
    // A few probe rounds, to give a wrong redeployment the time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = serve.metrics().await;
    assert_metric(
        &m,
        "tlsward_endpoint_drift",
        &[("endpoint", "web"), ("certificate", "site")],
        0.0,
    );
    // (The families are created at start with zeroes.)
    let redeployed: Vec<&str> = m
        .lines()
        .filter(|l| {
            (l.starts_with("tlsward_deployments_total{endpoint=\"web\"")
                || l.starts_with("tlsward_hook_runs_total{hook=\"nginx\""))
                && !l.ends_with(" 0")
        })
        .collect();
    assert!(redeployed.is_empty(), "redeployed: {redeployed:?}");
    assert_metric(
        &m,
        "tlsward_hook_runs_total",
        &[("hook", "nginx"), ("result", "ok"), ("reason", "none")],
        0.0,
    );
    let list_after = run(&mut t, &["cert", "list", "--config", cfg]);
    let list_after = String::from_utf8_lossy(&list_after.stdout).into_owned();
    assert_eq!(list_after, list_before);
    assert_eq!(
        account(dir),
        account_before,
        "a new ACME account was registered"
    );
    let store = Store::open_existing(
        &dir.join("state/tlsward.db"),
        &KeySource::File(dir.join("state/store.key")),
    )
    .unwrap();
    assert_eq!(store.all_deployments().unwrap(), deployments_before);
    let journal = store.journal_entries(None).unwrap();
    assert!(
        journal.iter().any(|e| e.kind == "backup.restored"),
        "{journal:?}"
    );

    // 6. The next renewal of the restored version names it in `replaces` (ARI).
    let ari_id = site_before
        .ari_id
        .clone()
        .expect("Pebble 2.6 gives an ARI identifier");
    let out = run(&mut t, &["cert", "renew", "site", "--config", cfg]);
    assert!(out.status.success(), "{t}");
    let journal = store.journal_entries(Some("site")).unwrap();
    let renewal = journal.iter().rfind(|e| e.kind == "order.started").unwrap();
    assert_eq!(
        renewal.detail["replaces"].as_str(),
        Some(ari_id.as_str()),
        "{journal:?}"
    );
    let log2 = serve.stop();
    assert!(!log2.contains("ACME account created"), "{log2}");

    // No key material in any log, metric or output.
    for (what, s) in [
        ("serve log 1", &log1),
        ("serve log 2", &log2),
        ("transcript", &t),
        ("metrics", &m),
    ] {
        assert!(
            !s.contains("AGE-SECRET-KEY") && !s.contains("PRIVATE KEY"),
            "{what}: {s}"
        );
    }
    println!("--- disaster recovery transcript ---\n{t}");
}
