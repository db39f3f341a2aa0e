//! `tlsward serve` for tests: the daemon run in this process on a free loopback port and
//! stopped on drop, and three TLS endpoints (good, expired, wrong name) for it to probe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tlsward::clock::SystemClock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::util::http::get;
use crate::util::wait::eventually;
use crate::util::{TestCa, TlsServer, real_now};

/// Three endpoints under one private root: good, expired, and one serving a certificate
/// for another name.
pub struct Endpoints {
    pub root: TestCa,
    pub good: TlsServer,
    pub expired: TlsServer,
    pub wrong: TlsServer,
    pub dir: tempfile::TempDir,
}

impl Endpoints {
    pub async fn start() -> Self {
        let root = TestCa::root_at("Serve Root", real_now());
        let int = root.intermediate("Serve Int");
        let good = TlsServer::leaf(&int.leaf(&["good.test"]).valid(-10.0, 80.0).build())
            .start()
            .await;
        let expired = TlsServer::leaf(&int.leaf(&["expired.test"]).valid(-60.0, -1.0).build())
            .start()
            .await;
        let wrong = TlsServer::leaf(&int.leaf(&["other.test"]).build())
            .start()
            .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), root.pem()).unwrap();
        Self {
            root,
            good,
            expired,
            wrong,
            dir,
        }
    }

    pub fn target(name: &str, server: &TlsServer, extra: &str) -> String {
        format!(
            "[[target]]\naddress = \"{name}:{}\"\nprofile = \"test\"\nconnect_to = [\"127.0.0.1\"]\n{extra}\n",
            server.addr.port()
        )
    }

    /// A config probing all three every second, plus `extra` TOML.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[defaults]\ninterval = \"1s\"\ntimeout = \"3s\"\n\n[profile.test]\nprotocol = \"tls\"\nca_files = [\"ca.pem\"]\nsystem_roots = false\n\n{extra}\n{}{}{}",
            Self::target("good.test", &self.good, "labels = { env = \"test\" }"),
            Self::target("expired.test", &self.expired, ""),
            Self::target("wrong.test", &self.wrong, ""),
        )
    }

    pub fn write(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("tlsward.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A daemon running in this process, stopped on drop.
pub struct Daemon {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Whether `daemon::run` has returned (or panicked on an error) already.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `tlsward serve` in this process with the config at `path`, on a free port, at the real
/// time.
pub async fn start(path: &Path) -> Daemon {
    start_with_clock(path, Arc::new(SystemClock)).await
}

/// `tlsward serve` in this process with the config at `path`, on a free port, with `clock`.
pub async fn start_with_clock(path: &Path, clock: Arc<dyn tlsward::clock::Clock>) -> Daemon {
    let config = tlsward::config::load(path).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let path = path.to_owned();
    let task = tokio::spawn(async move {
        tlsward::daemon::run(listener, path, config, clock, async {
            let _ = rx.await;
        })
        .await
        .expect("daemon runs");
    });
    Daemon {
        addr,
        stop: Some(tx),
        task,
    }
}

/// Waits for the daemon's `/-/ready`.
pub async fn ready(addr: SocketAddr) {
    eventually(30, "/-/ready", || async move {
        get(addr, "/-/ready").await.status == 200
    })
    .await;
}

/// A free loopback address for a `tlsward serve` run as a process.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::util::unique_port()))
}

/// `tlsward serve --config <config> --listen <addr>` as a process, killed when dropped once
/// spawned; a test may add to it before spawning.
pub fn serve_command(config: &Path, addr: SocketAddr) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsward"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &addr.to_string()])
        .kill_on_drop(true);
    cmd
}

/// Waits until the serve process at `addr` answers `path` (`/-/ready`, `/-/healthy`) with 200.
pub async fn answering(addr: SocketAddr, path: &str) {
    eventually(
        60,
        &format!("{path} from the serve process on {addr}"),
        || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && get(addr, path).await.status == 200
        },
    )
    .await;
}
