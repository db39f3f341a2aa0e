//! STARTTLS: the plain-text exchange that upgrades a connection to TLS, one file per protocol
//! behind one signature, chosen by one exhaustive `match` in [`upgrade`].
//!
//! Every exchange is bounded: lines and replies have size caps, the whole conversation shares
//! the probe's deadline (enforced by the caller), and bytes the server sends after its
//! go-ahead are refused, as they would be injected into the TLS stream (CVE-2011-0411).

mod ftp;
mod imap;
mod ldap;
mod pop3;
mod postgres;
mod smtp;
mod xmpp;

use std::fmt;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol spoken before the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// TLS from the first byte (HTTPS, SMTPS, IMAPS, LDAPS...).
    #[default]
    Tls,
    /// SMTP with EHLO and STARTTLS (RFC 3207), e.g. on ports 25 and 587.
    Smtp,
    /// IMAP STARTTLS (RFC 9051 §6.2.1).
    Imap,
    /// POP3 STLS (RFC 2595 §4).
    Pop3,
    /// FTP AUTH TLS (RFC 4217 §4).
    Ftp,
    /// LDAP StartTLS extended operation (RFC 4511 §4.14).
    Ldap,
    /// PostgreSQL SSLRequest (PostgreSQL protocol, "SSL Session Encryption").
    Postgres,
    /// XMPP client stream STARTTLS (RFC 6120 §5).
    Xmpp,
}

impl Protocol {
    /// Every protocol, in the order the CLI lists them.
    pub const ALL: [Self; 8] = [
        Self::Tls,
        Self::Smtp,
        Self::Imap,
        Self::Pop3,
        Self::Ftp,
        Self::Ldap,
        Self::Postgres,
        Self::Xmpp,
    ];

    /// The stable name (`tls`, `smtp`, ...), used on the command line and in profiles.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Smtp => "smtp",
            Self::Imap => "imap",
            Self::Pop3 => "pop3",
            Self::Ftp => "ftp",
            Self::Ldap => "ldap",
            Self::Postgres => "postgres",
            Self::Xmpp => "xmpp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown protocol {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Why the upgrade to TLS did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartTlsError {
    /// The server answered, but declined or does not offer TLS.
    #[error("{0}")]
    Refused(String),
    /// The server broke the protocol (garbage, oversized replies, data after the go-ahead).
    #[error("{0}")]
    Protocol(String),
    /// The connection failed or closed during the exchange.
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for StartTlsError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Io("the server closed the connection during STARTTLS".into())
        } else {
            Self::Io(e.to_string())
        }
    }
}

/// Runs the plain-text part of `protocol` on `stream`, leaving it ready for the ClientHello.
/// `host` is the name the client asks for (XMPP's `to`, SMTP's context).
pub(crate) async fn upgrade<S>(
    protocol: Protocol,
    stream: &mut S,
    host: &str,
) -> Result<(), StartTlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conv = Conversation::new(stream);
    match protocol {
        Protocol::Tls => return Ok(()),
        Protocol::Smtp => smtp::upgrade(&mut conv).await?,
        Protocol::Imap => imap::upgrade(&mut conv).await?,
        Protocol::Pop3 => pop3::upgrade(&mut conv).await?,
        Protocol::Ftp => ftp::upgrade(&mut conv).await?,
        Protocol::Ldap => ldap::upgrade(&mut conv).await?,
        Protocol::Postgres => postgres::upgrade(&mut conv).await?,
        Protocol::Xmpp => xmpp::upgrade(&mut conv, host).await?,
    }
    conv.finish()
}

/// The most bytes one line or reply may take.
const MAX_LINE: usize = 8 * 1024;
/// The most bytes a whole STARTTLS exchange may read.
const MAX_TOTAL: usize = 64 * 1024;

/// A bounded plain-text exchange over a stream.
pub(crate) struct Conversation<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    total: usize,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Conversation<'a, S> {
    fn new(stream: &'a mut S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            total: 0,
        }
    }

    /// Sends bytes.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), StartTlsError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads more bytes into the buffer; end of stream is an error.
    async fn fill(&mut self) -> Result<(), StartTlsError> {
        let mut chunk = [0u8; 2048];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(StartTlsError::Io(
                "the server closed the connection during STARTTLS".into(),
            ));
        }
        self.total += n;
        if self.total > MAX_TOTAL {
            return Err(StartTlsError::Protocol(format!(
                "the server sent more than {MAX_TOTAL} bytes before TLS"
            )));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One line without its CR LF, lossily decoded.
    pub(crate) async fn line(&mut self) -> Result<String, StartTlsError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(StartTlsError::Protocol(format!(
                    "a line longer than {MAX_LINE} bytes: {}",
                    preview(&self.buf)
                )));
            }
            self.fill().await?;
        }
    }

    /// Exactly `n` bytes.
    pub(crate) async fn exact(&mut self, n: usize) -> Result<Vec<u8>, StartTlsError> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Bytes up to and including the first place where `done` says the text is complete,
    /// judged over everything read so far (for XML streams, which have no line structure).
    pub(crate) async fn until(
        &mut self,
        mut done: impl FnMut(&str) -> Option<usize>,
    ) -> Result<String, StartTlsError> {
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(end) = done(&text) {
                let end = end.min(self.buf.len());
                self.buf.drain(..end);
                return Ok(text[..end].to_owned());
            }
            self.fill().await?;
        }
    }

    /// A multi-line reply in the SMTP/FTP style: `CODE-text` lines, then `CODE text`.
    /// Returns the code and the text of every line.
    pub(crate) async fn reply(&mut self) -> Result<(u16, Vec<String>), StartTlsError> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                return Err(StartTlsError::Protocol(format!(
                    "not a reply line: {}",
                    preview(line.as_bytes())
                )));
            };
            let last = line.as_bytes().get(3).is_none_or(|&b| b != b'-');
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if lines.len() > 100 {
                return Err(StartTlsError::Protocol(
                    "a reply of more than 100 lines".into(),
                ));
            }
            if last {
                return Ok((code, lines));
            }
        }
    }

    /// Ends the exchange: anything already buffered would be injected into TLS.
    fn finish(self) -> Result<(), StartTlsError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StartTlsError::Protocol(format!(
                "the server sent {} bytes after agreeing to start TLS",
                self.buf.len()
            )))
        }
    }
}

/// A short printable preview of peer bytes for error messages.
pub(crate) fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{:?}", clean.trim())
}
