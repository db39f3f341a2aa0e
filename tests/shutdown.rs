//! Shutdown with a deployment in flight: `tlsward serve` (the real binary) issues from Pebble
//! and deploys with the stock `pem-files` hook, whose reload command waits for the test.
//! SIGTERM arrives while the hook is mid-run; the daemon stops listening but waits for the
//! deployment, which ends verified and journaled, and the next start finds nothing
//! interrupted.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tlsward::store::{KeySource, Store};

use crate::util::http::get;
use crate::util::pebble::Pebble;
use crate::util::wait::eventually;
use crate::util::{TestCa, TlsServer, real_now};

/// `tlsward serve` as a child process, its stderr collected line by line; killed by pid
/// on drop if it is still running.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(config: &Path) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::util::unique_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, addr, log }
    }

    fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn sigterm(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the process to exit, for up to `secs`.
    async fn exited(&mut self, secs: u64) -> ExitStatus {
        for _ in 0..secs * 10 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "tlsward serve did not exit within {secs} s\n{}",
            self.log_text()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `deploy list --all` rows (the real CLI on the same store).
fn deploy_list(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["deploy", "list", "--all", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_waits_for_a_deployment_whose_hook_is_running() {
    let http01_port = crate::util::unique_port();
    let pebble = Pebble::start(http01_port, 30 * 86_400).await;
    let dir = pebble.dir.path();
    std::fs::write(
        dir.join("acme-root.pem"),
        crate::util::pem(&pebble.issuing_root().await),
    )
    .unwrap();
    // The endpoint first serves a certificate from another, trusted CA: valid but foreign,
    // so a deployment is queued as soon as a version is issued.
    let old_ca = TestCa::root_at("Old CA", real_now());
    std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
    let site = TlsServer::leaf(&old_ca.leaf(&["drain.tlsward.test"]).build())
        .start()
        .await;
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    // The hook's reload: says it started, then waits until the test releases it.
    let reload = dir.join("reload.sh");
    std::fs::write(
        &reload,
        format!(
            "#!/bin/sh\n: > '{o}/started'\nwhile [ ! -e '{o}/release' ]; do sleep 0.1; done\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&reload, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = format!("drain.tlsward.test:{}", site.addr.port());
    let config = format!(
        r#"
[server]
state_dir = "{state_dir}"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[deploy]
verify_timeout = "120s"
verify_interval = "200ms"

[[certificate]]
name = "drain"
domains = ["drain.tlsward.test"]

[profile.drain]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false

[[target]]
address = "{target}"
profile = "drain"
interval = "1s"
connect_to = ["127.0.0.1"]

[hook.files]
component = "{pem_files}"
write_paths = ["{out}"]
commands = [["{reload}"]]
timeout = "600s"

[hook.files.settings]
reload = "{reload}"

[[endpoint]]
name = "site"
certificate = "drain"
target = "{target}"
hook = "files"
settings = {{ fullchain_path = "{out}/site.crt", key_path = "{out}/site.key" }}
"#,
        // Shared with tests/deploy.rs: the compiled hook is cached there.
        state_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("deploy-daemon-state")
            .display(),
        directory = pebble.directory,
        ca = pebble.tls_ca_file.display(),
        pem_files = crate::util::hooks::component("pem-files").display(),
        out = out.display(),
        reload = reload.display(),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();

    let mut serve = Serve::start(&path);
    // Issued, queued, claimed, the files written: the hook is in its reload command. The
    // first run compiles the hook, which takes a while on a loaded machine.
    eventually(600, "the hook's reload command to start", || {
        let started = out.join("started");
        async move { started.exists() }
    })
    .await;
    // The endpoint picks up what the hook wrote, as a reloaded server would.
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(out.join("site.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(out.join("site.key")).unwrap();
    let new_sha = tlsward::cert::sha256_hex(&chain[0]);
    site.swap(chain, key);

    serve.sigterm();
    // The daemon stops serving but waits for the deployment.
    eventually(60, "the daemon to start draining", || {
        let draining = serve.logged("waiting for running deployments to end");
        async move { draining }
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(serve.addr).await.is_err(),
        "the HTTP listener is closed while the deployment drains"
    );
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "tlsward serve exited with its hook still running\n{}",
        serve.log_text()
    );
    std::fs::write(out.join("release"), "").unwrap();
    let status = serve.exited(300).await;
    assert!(status.success(), "{status}\n{}", serve.log_text());
    assert!(
        serve.logged("running deployments ended"),
        "{}",
        serve.log_text()
    );

    // The deployment ended verified, and the journal says so, with the hook's result.
    let list = deploy_list(&path);
    let row = list
        .lines()
        .find(|l| l.contains(" site "))
        .unwrap_or_else(|| panic!("no deployment to site in\n{list}"));
    assert!(row.contains("verified"), "{list}");
    let store = Store::open(
        &dir.join("state/tlsward.db"),
        &KeySource::File(dir.join("state/store.key")),
    )
    .unwrap();
    let journal = store.journal_entries(Some("drain")).unwrap();
    let kinds: Vec<&str> = journal
        .iter()
        .filter(|e| e.kind.starts_with("deployment."))
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "deployment.queued",
            "deployment.running",
            "deployment.verified"
        ],
        "{journal:?}"
    );
    let verified = &journal
        .iter()
        .find(|e| e.kind == "deployment.verified")
        .unwrap()
        .detail["detail"];
    assert!(verified["hook"]["result"]["ok"].is_string(), "{verified}");
    assert_eq!(
        verified["verification"]["served"][0]["sha256"],
        new_sha.as_str()
    );
    drop(store);

    // The next start finds nothing interrupted, and has nothing to drain.
    let mut again = Serve::start(&path);
    eventually(120, "the second serve to be ready", || {
        let addr = again.addr;
        async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && get(addr, "/-/ready").await.status == 200
        }
    })
    .await;
    again.sigterm();
    let status = again.exited(120).await;
    assert!(status.success(), "{status}\n{}", again.log_text());
    let log = again.log_text();
    assert!(log.contains("control socket ready"), "{log}");
    assert!(!log.contains("interrupted"), "{log}");
    assert!(!log.contains("waiting for running deployments"), "{log}");
    let list = deploy_list(&path);
    assert_eq!(
        list.lines().filter(|l| l.contains(" site ")).count(),
        1,
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains(" site ") && l.contains("verified")),
        "{list}"
    );
}
