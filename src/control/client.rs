//! The command line's side: connect to the daemon that holds a store, send one request, and
//! read its progress notes and final reply.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Line, RequestBody, parse_reply};
use super::{ControlError, MAX_REPLY, REQUEST_TIMEOUT, Reply, Request, VERSION};

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
