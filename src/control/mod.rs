//! The control channel: how the command line asks a running `tlsward serve` to act, so that
//! what it does goes through the daemon's own reconciler (its HTTP-01 responder, its ACME
//! account, its metrics and journal) instead of a second process beside it.
//!
//! Owns the protocol (`protocol.rs`), the server `serve` runs (`server.rs`) and the client
//! the CLI uses (`client.rs`). Knows the reconciler's requests
//! ([`crate::reconcile::Reconciler`]); knows nothing of the config file or the command line.
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

mod client;
mod protocol;
mod server;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::client::{Client, connect};
pub use self::protocol::{Reply, Request};
pub use self::server::{ControlSocket, bind, peer_allowed, serve};

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
