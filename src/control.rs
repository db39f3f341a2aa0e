//! The control channel: how the command line asks a running `tlsward serve` to act, so that
//! what it does goes through the daemon's own reconciler (its HTTP-01 responder, its ACME
//! account, its metrics and journal) instead of a second process beside it.
//!
//! Owns the protocol, the server `serve` runs and the client the CLI uses. Knows the
//! reconciler's requests ([`crate::reconcile::Reconciler`]); knows nothing of the config
//! file or the command line.
//!
//! - **Where:** a Unix socket beside the store (`tlsward.db` → `tlsward.db.sock`, by default
//!   in the 0700 state directory): the CLI acts on a store, so it asks the daemon that holds
//!   that store. The socket is made 0600; a stale one (no listener) is replaced at start, a
//!   live one means another daemon holds the store, and `serve` refuses to start.
//! - **Who:** each connection's peer uid (`SO_PEERCRED`) must be the daemon's or root;
//!   anyone else is answered with a refusal and nothing more.
//! - **What:** one request per connection, one JSON line of at most [`MAX_REQUEST`] bytes,
//!   read within [`REQUEST_TIMEOUT`]. The daemon answers with JSON lines: any number of
//!   [`Reply::Progress`] notes, then one final reply. Every line carries `"v": 1`
//!   ([`VERSION`]); a daemon refuses other versions, and so does the client.
//!
//! ```text
//! > {"v":1,"request":{"cert_issue":{"name":"www","force":true}}}
//! < {"v":1,"reply":{"progress":"ordering www"}}
//! < {"v":1,"reply":{"issued":{"certificate":"www","version":7,...}}}
//! ```

use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::escape::Visible;
use crate::reconcile::{Outcome, Reconciler, RequestError, run_now_trigger};
use crate::store::DeploymentState;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The longest request line the daemon reads.
pub const MAX_REQUEST: u64 = 16 * 1024;
/// The longest reply line the client reads (a deployment's detail with every hook call).
pub const MAX_REPLY: u64 = 4 * 1024 * 1024;
/// The most the daemon reads past a refused request before it closes.
const DISCARD: u64 = 1024 * 1024;
/// How long the daemon waits for a connection's request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the daemon serves at once; more are refused until one ends.
pub const MAX_CONNECTIONS: usize = 16;
/// How long the client waits for the daemon's final reply: issuance polls the CA for minutes
/// and a deployment verifies for `verify_timeout`, maybe after waiting for another.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The socket of the daemon that holds the store at `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".sock");
    store.with_file_name(name)
}

/// What the command line asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `cert issue|renew NAME`: order a version now. Without `force`, a certificate whose
    /// latest version is still valid is refused.
    CertIssue {
        /// The `[[certificate]]`.
        name: String,
        /// Order even when a valid version exists.
        force: bool,
    },
    /// `deploy approve ID`.
    DeployApprove {
        /// The deployment.
        id: i64,
        /// Who asks (journaled beside the uid the daemon sees).
        by: String,
    },
    /// `deploy run-now ID|ENDPOINT`.
    DeployRunNow {
        /// A deployment id or an endpoint name.
        deployment: String,
        /// Who asks (journaled beside the uid the daemon sees).
        by: String,
    },
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// A note while the work goes on; more lines follow.
    Progress(String),
    /// The new version of a certificate.
    Issued {
        /// The certificate.
        certificate: String,
        /// The version's id in the store.
        version: i64,
        /// Its serial number (hex).
        serial: String,
        /// Its leaf's SHA-256.
        sha256: String,
        /// Its notAfter (unix seconds).
        not_after: i64,
    },
    /// A deployment approved; the daemon runs it at once.
    Approved {
        /// The deployment.
        deployment: i64,
        /// Its endpoint.
        endpoint: String,
    },
    /// A deployment run to its end.
    Deployed {
        /// The deployment.
        deployment: i64,
        /// Its endpoint.
        endpoint: String,
        /// The hook that ran.
        hook: String,
        /// Verified, failed or rolled back.
        state: DeploymentState,
        /// What was journaled with it (hook calls, verification, rollback, error).
        detail: Box<Outcome>,
    },
    /// The request was not done.
    Error {
        /// not_found, conflict, unavailable, order_failed, store, bad_request, refused or
        /// busy.
        kind: String,
        /// What to tell the operator.
        message: String,
    },
}

impl Reply {
    fn error(kind: &str, message: impl Into<String>) -> Self {
        Self::Error {
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
}

impl From<RequestError> for Reply {
    fn from(e: RequestError) -> Self {
        Self::error(e.kind(), e.to_string())
    }
}

/// One line on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Line<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestBody<T> {
    request: T,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReplyBody<T> {
    reply: T,
}

/// A control channel failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A daemon already answers on the socket: it holds the same store.
    #[error(
        "another tlsward serve answers on {0}: it holds the same store (stop it, or give this one another [store] path)"
    )]
    InUse(PathBuf),
    /// Something other than a socket is where the socket goes.
    #[error("{0} exists and is not a socket; move it away")]
    NotASocket(PathBuf),
    /// The socket cannot be made, or reached.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon ended the connection without a final reply.
    #[error("the daemon closed the connection without an answer (see its log)")]
    Closed,
    /// The daemon did not answer in time.
    #[error(
        "no answer from the daemon within {}; it may still be working (see its log, `tlsward cert show` or `tlsward deploy list`)",
        humantime::format_duration(*.0)
    )]
    Timeout(Duration),
    /// The daemon's reply could not be read.
    #[error("unreadable reply from the daemon: {0}")]
    Protocol(String),
}

// === server ===

/// The daemon's bound control socket; the socket file is removed when it is dropped (if it
/// is still the one bound here).
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ControlSocket {
    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the control socket at `path`, 0600: a stale socket there (nobody listening) is
/// replaced; a live one, or any other file, is an error.
pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ControlError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                info!(socket = %path.display(), "removing a stale control socket");
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        },
        Ok(_) => return Err(ControlError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let m = std::fs::symlink_metadata(path).map_err(io)?;
    Ok(ControlSocket {
        listener,
        path: path.to_owned(),
        inode: (m.dev(), m.ino()),
    })
}

/// Whether a peer with uid `peer` may control a daemon running as `own`: the same user, or
/// root.
pub const fn peer_allowed(peer: u32, own: u32) -> bool {
    peer == own || peer == 0
}

/// Serves `socket` until `shutdown`, each request by `reconciler`.
pub async fn serve(
    socket: ControlSocket,
    reconciler: Arc<Reconciler>,
    shutdown: impl Future<Output = ()>,
) {
    let own = rustix::process::geteuid().as_raw();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let reconciler = reconciler.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    connection(stream, &reconciler, own).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy = Reply::error(
                        "busy",
                        format!("the daemon serves {MAX_CONNECTIONS} control connections already"),
                    );
                    let _ = send(&mut stream, &busy).await;
                });
            }
        }
    }
    drop(socket);
}

async fn send(stream: &mut UnixStream, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(&Line {
        v: VERSION,
        body: ReplyBody { reply },
    })?;
    line.push(b'\n');
    // A client that stops reading cannot hold the task forever.
    tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Reads one request line: at most [`MAX_REQUEST`] bytes, within [`REQUEST_TIMEOUT`].
async fn read_request(stream: &mut UnixStream) -> Result<Request, Reply> {
    let mut buf = Vec::new();
    let read = async {
        let mut limited = BufReader::new(&mut *stream).take(MAX_REQUEST + 1);
        limited.read_until(b'\n', &mut buf).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => return Err(Reply::error("bad_request", "no request line in time")),
        Ok(Err(e)) => return Err(Reply::error("bad_request", e.to_string())),
        Ok(Ok(_)) => {}
    }
    if buf.len() as u64 > MAX_REQUEST {
        return Err(Reply::error(
            "bad_request",
            format!("the request is longer than {MAX_REQUEST} bytes"),
        ));
    }
    parse_request(&buf)
}

/// Reads and drops what the client still sends (at most [`DISCARD`] bytes, for at most
/// [`REQUEST_TIMEOUT`]) before the connection closes: closing with unread bytes resets the
/// connection, and the client would lose the reply that says what was wrong.
async fn discard_rest(stream: &mut UnixStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut (&mut *stream).take(DISCARD), &mut sink).await
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, drain).await;
}

/// A request line, version first, so a newer client hears which version this daemon speaks.
fn parse_request(line: &[u8]) -> Result<Request, Reply> {
    #[derive(Deserialize)]
    struct Versioned {
        v: u32,
    }
    let bad = |e: serde_json::Error| Reply::error("bad_request", e.to_string());
    let Versioned { v } = serde_json::from_slice(line).map_err(bad)?;
    if v != VERSION {
        return Err(Reply::error(
            "bad_request",
            format!("protocol version {v} is not spoken here (this daemon speaks {VERSION})"),
        ));
    }
    let line: Line<RequestBody<Request>> = serde_json::from_slice(line).map_err(bad)?;
    Ok(line.body.request)
}

async fn connection(mut stream: UnixStream, reconciler: &Arc<Reconciler>, own: u32) {
    let peer = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            warn!(error = %e, "control socket: no peer credentials; refused");
            return;
        }
    };
    if !peer_allowed(peer, own) {
        warn!(
            uid = peer,
            "control socket: a client of another user was refused"
        );
        let refused = Reply::error(
            "refused",
            format!("uid {peer} may not control this daemon (it runs as uid {own})"),
        );
        let _ = send(&mut stream, &refused).await;
        discard_rest(&mut stream).await;
        return;
    }
    let request = match read_request(&mut stream).await {
        Ok(r) => r,
        Err(reply) => {
            if let Reply::Error { message, .. } = &reply {
                warn!(uid = peer, error = %Visible(message), "control socket: bad request");
            }
            let _ = send(&mut stream, &reply).await;
            discard_rest(&mut stream).await;
            return;
        }
    };
    info!(uid = peer, request = %Visible(&format!("{request:?}")), "control request");
    let reply = match request {
        Request::CertIssue { name, force } => {
            let _ = send(&mut stream, &Reply::Progress(format!("ordering {name}"))).await;
            match reconciler.order_now(&name, force).await {
                Ok(v) => Reply::Issued {
                    certificate: v.certificate,
                    version: v.id,
                    serial: v.serial,
                    sha256: v.sha256,
                    not_after: v.not_after,
                },
                Err(e) => e.into(),
            }
        }
        Request::DeployApprove { id, by } => match reconciler.approve(id, &by, Some(peer)) {
            Ok(d) => Reply::Approved {
                deployment: d.id,
                endpoint: d.endpoint,
            },
            Err(e) => e.into(),
        },
        Request::DeployRunNow { deployment, by } => match reconciler.prepare_run_now(&deployment) {
            Ok((d, job)) => {
                let (id, endpoint, hook) = (d.id, d.endpoint.clone(), job.hook.name.clone());
                let note = format!("running deployment {id} to {endpoint} with hook {hook}");
                let _ = send(&mut stream, &Reply::Progress(note)).await;
                match reconciler
                    .run_now(d, job, run_now_trigger(&by, Some(peer)))
                    .await
                {
                    Ok(f) => Reply::Deployed {
                        deployment: id,
                        endpoint,
                        hook,
                        state: f.state,
                        detail: Box::new(f.outcome),
                    },
                    Err(e) => e.into(),
                }
            }
            Err(e) => e.into(),
        },
    };
    let _ = send(&mut stream, &reply).await;
}

// === client ===

/// A connection to a running daemon.
#[derive(Debug)]
pub struct Client {
    stream: std::os::unix::net::UnixStream,
}

/// Connects to the daemon at `path`: `None` when no daemon runs there (no socket, or a
/// stale one nobody listens on).
pub fn connect(path: &Path) -> Result<Option<Client>, ControlError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => Ok(Some(Client { stream })),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ControlError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Client {
    /// Sends `request` and waits up to `timeout` for the final reply, handing each progress
    /// note to `progress`.
    pub fn request(
        self,
        request: &Request,
        timeout: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<Reply, ControlError> {
        let deadline = std::time::Instant::now() + timeout;
        let io = |source: io::Error| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ControlError::Timeout(timeout),
            _ => ControlError::Io {
                path: PathBuf::from("(connected)"),
                source,
            },
        };
        let mut line = serde_json::to_vec(&Line {
            v: VERSION,
            body: RequestBody { request },
        })
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let mut stream = self.stream;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io)?;
        // A daemon that refuses at once (another uid) may close before reading: its reply
        // is still there to read.
        let _ = stream.write_all(&line);
        let mut reader = io::BufReader::new(stream);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout(timeout));
            }
            reader.get_ref().set_read_timeout(Some(left)).map_err(io)?;
            let mut buf = Vec::new();
            let n = reader
                .by_ref()
                .take(MAX_REPLY + 1)
                .read_until(b'\n', &mut buf)
                .map_err(io)?;
            if n == 0 {
                return Err(ControlError::Closed);
            }
            if buf.len() as u64 > MAX_REPLY {
                return Err(ControlError::Protocol(format!(
                    "a reply line longer than {MAX_REPLY} bytes"
                )));
            }
            match parse_reply(&buf)? {
                Reply::Progress(note) => progress(&note),
                reply => return Ok(reply),
            }
        }
    }
}

fn parse_reply(line: &[u8]) -> Result<Reply, ControlError> {
    let line: Line<ReplyBody<Reply>> =
        serde_json::from_slice(line).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if line.v != VERSION {
        return Err(ControlError::Protocol(format!(
            "the daemon speaks protocol version {}, this tlsward {VERSION}",
            line.v
        )));
    }
    Ok(line.body.reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_daemons_user_and_root_may_control_it() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(65534, 1000));
    }

    #[test]
    fn the_socket_sits_beside_the_store() {
        assert_eq!(
            socket_path(Path::new("/var/lib/tlsward/tlsward.db")),
            Path::new("/var/lib/tlsward/tlsward.db.sock")
        );
        assert_eq!(socket_path(Path::new("state/x")), Path::new("state/x.sock"));
    }

    #[test]
    fn requests_are_versioned_lines_and_strangers_are_refused() {
        let line = serde_json::to_vec(&Line {
            v: VERSION,
            body: RequestBody {
                request: &Request::CertIssue {
                    name: "www".into(),
                    force: true,
                },
            },
        })
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&line),
            r#"{"v":1,"request":{"cert_issue":{"name":"www","force":true}}}"#
        );
        assert_eq!(
            parse_request(&line),
            Ok(Request::CertIssue {
                name: "www".into(),
                force: true
            })
        );
        let refused = |line: &str| match parse_request(line.as_bytes()) {
            Err(Reply::Error { kind, message }) => {
                assert_eq!(kind, "bad_request", "{line}");
                message
            }
            other => panic!("{line}: {other:?}"),
        };
        assert!(refused(r#"{"v":2,"request":{"ping":{}}}"#).contains("version 2"));
        assert!(refused(r#"{"request":{"cert_issue":{"name":"a","force":true}}}"#).contains("v"));
        refused(r#"{"v":1,"request":{"shell":{"cmd":"rm -rf /"}}}"#);
        refused(r#"{"v":1,"request":{"cert_issue":{"name":"a","force":true,"x":1}}}"#);
        refused(r#"{"v":1,"request":{"deploy_approve":{"id":"1","by":"me"}}}"#);
        refused("\u{1b}[31m not json");
        refused("");
    }

    #[test]
    fn replies_round_trip_and_other_versions_are_refused() {
        let reply = Reply::Deployed {
            deployment: 3,
            endpoint: "lb".into(),
            hook: "appliance".into(),
            state: DeploymentState::RolledBack,
            detail: Box::new(Outcome::error("x")),
        };
        let line = serde_json::to_vec(&Line {
            v: VERSION,
            body: ReplyBody { reply: &reply },
        })
        .unwrap();
        assert_eq!(parse_reply(&line).unwrap(), reply);
        assert!(matches!(
            parse_reply(br#"{"v":9,"reply":{"progress":"x"}}"#),
            Err(ControlError::Protocol(m)) if m.contains("version 9")
        ));
        assert!(parse_reply(b"garbage").is_err());
    }
}
