//! The control channel: `tlsward cert renew` from the shell while `tlsward serve` runs goes
//! through the daemon, which holds the HTTP-01 port and the ACME account, so its metrics and
//! journal count the order; the protocol's refusals (another uid, oversized or unversioned
//! requests); a stale socket is no daemon; a second daemon on the same store is refused; and
//! without a daemon the CLI orders by itself.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tlsward::clock::SystemClock;

use crate::util::cli::{open_store, tlsward};
use crate::util::exposition::{assert_metric, metric};
use crate::util::http::get;
use crate::util::pebble::Pebble;
use crate::util::wait::eventually;

/// A config for `serve` and the CLI against this Pebble: one certificate, the store and the
/// state in the Pebble's temp dir.
fn config(pebble: &Pebble, http01_port: u16) -> PathBuf {
    let dir = pebble.dir.path();
    let path = dir.join("tlsward.toml");
    let text = format!(
        r#"
[server]
state_dir = "state"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]
"#,
        directory = pebble.directory,
        ca = pebble.tls_ca_file.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One raw exchange on the socket: `request` as given, then every reply line until the
/// daemon closes.
fn exchange(socket: &Path, request: &[u8]) -> Vec<Value> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    BufReader::new(stream)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// The final reply's error kind and message.
fn error_of(replies: &[Value]) -> (String, String) {
    let last = replies.last().expect("a reply");
    assert_eq!(last["v"], 1, "{last}");
    let e = &last["reply"]["error"];
    (
        e["kind"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cert_renew_goes_through_the_daemon_that_holds_the_http01_port() {
    let http01_port = crate::util::unique_port();
    let pebble = Pebble::start(http01_port, 3600).await;
    let dir = pebble.dir.path().to_owned();
    let path = config(&pebble, http01_port);
    let socket = dir.join("state/tlsward.db.sock");

    // A stale socket from a daemon that died: replaced at start.
    std::fs::create_dir(dir.join("state")).unwrap();
    std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    let valid = [("result", "valid"), ("reason", "none")];
    eventually(60, "the daemon's own first order", || async move {
        let m = get(addr, "/metrics").await.body;
        metric(&m, "tlsward_acme_orders_total", &valid) == Some(1.0)
    })
    .await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // The daemon holds the HTTP-01 port: the CLI asks it, and it orders.
    let renew = tlsward(&["cert", "renew", "site"], &path).await;
    let (out, err) = (text(&renew.stdout), text(&renew.stderr));
    assert_eq!(renew.status.code(), Some(0), "{out}\n{err}");
    assert!(out.starts_with("issued site: serial "), "{out}");
    assert!(err.contains("through the running daemon"), "{err}");
    let store = open_store(&dir.join("state"));
    let versions = store.versions("site").unwrap();
    assert_eq!(versions.len(), 2);
    assert!(out.contains(&versions[0].sha256), "{out}");
    // Counted by the daemon, which scrapes show.
    let m = get(addr, "/metrics").await.body;
    assert_metric(&m, "tlsward_acme_orders_total", &valid, 2.0);
    // `cert issue` of a certificate with a version is refused (renew is the command for a
    // new one); with --force it goes the same way.
    let issue = tlsward(&["cert", "issue", "site"], &path).await;
    assert_eq!(issue.status.code(), Some(3), "{issue:?}");
    assert!(
        text(&issue.stderr).contains("already has version"),
        "{issue:?}"
    );
    assert_eq!(store.versions("site").unwrap().len(), 2);
    let issue = tlsward(&["cert", "issue", "--force", "site"], &path).await;
    assert_eq!(issue.status.code(), Some(0), "{issue:?}");
    assert_eq!(store.versions("site").unwrap().len(), 3);

    // The protocol, raw. Without `force`, a valid version is not ordered again.
    let replies = exchange(
        &socket,
        br#"{"v":1,"request":{"cert_issue":{"name":"site","force":false}}}
"#,
    );
    let (kind, message) = error_of(&replies);
    assert_eq!(kind, "conflict", "{replies:?}");
    assert!(message.contains("already has version"), "{message}");
    let (kind, message) = error_of(&exchange(
        &socket,
        br#"{"v":1,"request":{"cert_issue":{"name":"nope","force":true}}}
"#,
    ));
    assert_eq!(kind, "not_found", "{message}");
    assert!(
        message.contains("no [[certificate]] named \"nope\""),
        "{message}"
    );
    // Oversized, another version, unknown requests, garbage: refused, nothing done.
    let (kind, message) = error_of(&exchange(&socket, &vec![b'a'; 100_000]));
    assert_eq!(kind, "bad_request");
    assert!(message.contains("longer than 16384 bytes"), "{message}");
    let (_, message) = error_of(&exchange(
        &socket,
        br#"{"v":2,"request":{"cert_issue":{"name":"site","force":true}}}
"#,
    ));
    assert!(message.contains("version 2"), "{message}");
    let (kind, _) = error_of(&exchange(
        &socket,
        br#"{"v":1,"request":{"exec":{"cmd":"id"}}}
"#,
    ));
    assert_eq!(kind, "bad_request");
    let (kind, _) = error_of(&exchange(&socket, b"\x1b]0;pwned\x07\n"));
    assert_eq!(kind, "bad_request");
    assert_eq!(store.versions("site").unwrap().len(), 3);

    // Another uid is refused by its peer credentials, even where the file modes would let
    // it in (opened up here on purpose). Only root can act as another user.
    if rustix::process::geteuid().is_root() {
        for d in [dir.as_path(), &dir.join("state")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
                      s.sendall(b'{\"v\":1,\"request\":{\"cert_issue\":{\"name\":\"site\",\"force\":true}}}\\n')\n\
                      print(s.makefile().readline())";
        let mut cmd = std::process::Command::new("/usr/bin/python3");
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
        cmd.args(["-c", script]).arg(&socket);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let reply: Value = serde_json::from_str(text(&out.stdout).trim())
            .unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert_eq!(reply["reply"]["error"]["kind"], "refused", "{reply}");
        assert!(
            reply["reply"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("uid 65534 may not control this daemon"),
            "{reply}"
        );
        assert_eq!(store.versions("site").unwrap().len(), 3);
    } else {
        eprintln!("not root: the other-uid refusal is covered by the unit test only");
    }

    // A second daemon on the same store is refused: the first one answers on the socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = tlsward::daemon::run(
        listener,
        path.clone(),
        tlsward::config::load(&path).unwrap(),
        Arc::new(SystemClock),
        std::future::ready(()),
    )
    .await;
    let e = format!("{:#}", second.unwrap_err());
    assert!(e.contains("another tlsward serve answers on"), "{e}");

    // Stopped: the socket goes with the daemon, and the CLI orders by itself.
    drop(daemon);
    let gone = socket.clone();
    eventually(30, "the socket removed", || {
        let gone = gone.clone();
        async move { !gone.exists() }
    })
    .await;
    eventually(30, "the HTTP-01 port free", || async move {
        std::net::TcpListener::bind(("127.0.0.1", http01_port)).is_ok()
    })
    .await;
    // A stale socket is no daemon either.
    drop(UnixListener::bind(&socket).unwrap());
    let alone = tlsward(&["cert", "renew", "site"], &path).await;
    let err = text(&alone.stderr);
    assert_eq!(alone.status.code(), Some(0), "{alone:?}");
    assert!(err.contains("no daemon answers on"), "{err}");
    assert_eq!(store.versions("site").unwrap().len(), 4);
}
