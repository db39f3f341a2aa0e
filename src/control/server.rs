//! The daemon's side: the socket beside the store, who may connect, and one request per
//! connection answered by the reconciler.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::protocol::{Line, ReplyBody, parse_request};
use super::{
    ControlError, DISCARD, MAX_CONNECTIONS, MAX_REQUEST, REQUEST_TIMEOUT, Reply, Request, VERSION,
};
use crate::escape::Visible;
use crate::reconcile::{Reconciler, run_now_trigger};

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
        Request::DeployRunNow { deployment, by } => match reconciler
            .agent_run_now(&deployment, &by, Some(peer))
            .await
        {
            // An agent's endpoint: its agent deploys, the center verifies.
            Some(Ok((d, hook, f))) => Reply::Deployed {
                deployment: d.id,
                endpoint: d.endpoint,
                hook,
                state: f.state,
                detail: Box::new(f.outcome),
            },
            Some(Err(e)) => e.into(),
            None => match reconciler.prepare_run_now(&deployment) {
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
        },
    };
    let _ = send(&mut stream, &reply).await;
}
