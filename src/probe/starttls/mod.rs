//! STARTTLS: the plain-text exchange that upgrades a connection to TLS, one file per protocol
//! behind one signature, chosen by one exhaustive `match` in [`upgrade`].
//!
//! Every exchange is bounded: lines and replies have size caps, the whole conversation shares
//! the probe's deadline (enforced by the caller), and bytes the server sends after its
//! go-ahead are refused, as they would be injected into the TLS stream (CVE-2011-0411).
//!
//! Each protocol is two layers: pure reply parsers over the bytes received so far (a
//! [`Parsed`]: a complete reply and how many bytes it took, "need more", or a typed error),
//! and a short async script that sends a command and waits for a parser's verdict through
//! [`Conversation::next`]. A parser is told how much of the buffer it already judged
//! incomplete and looks only at what is new, so a server that drips its bytes one by one
//! costs time linear in what it sends, not quadratic. Peer bytes are never decoded to be searched or cut: structure (reply
//! codes, tags, status words, XML markers) is matched on bytes; free text stays bytes and only
//! reaches a message through [`peer_text`], a short escaped prefix. Where the protocol defines
//! the text as UTF-8 (XMPP's XML stream) other bytes are a typed failure; where it is free
//! text (an SMTP greeting, an IMAP `NO` reason), any bytes are accepted and shown escaped.

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
///
/// Every byte the server sends is untrusted: whatever it sends, this ends with `Ok` or a
/// [`StartTlsError`] (never a panic), reading at most 64 KiB. It sets no deadline of its own:
/// the caller bounds it in time.
pub async fn upgrade<S>(protocol: Protocol, stream: &mut S, host: &str) -> Result<(), StartTlsError>
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

/// The most bytes one line or reply line may take.
const MAX_LINE: usize = 8 * 1024;
/// The most lines one multi-line reply may have.
const MAX_REPLY_LINES: usize = 100;
/// The most bytes a whole STARTTLS exchange may read.
const MAX_TOTAL: usize = 64 * 1024;
/// The most characters of peer text an error message quotes.
const PEER_TEXT_MAX: usize = 80;

/// What a reply parser makes of the bytes buffered so far: `Ok(Some((reply, used)))` when a
/// complete reply starts the buffer and took its first `used` bytes, `Ok(None)` when more
/// bytes are needed, or why the bytes can never become a valid reply.
///
/// Parsers are `fn(buf: &[u8], seen: usize) -> Parsed<T>`: the first `seen` bytes of `buf`
/// are ones the same parser already judged incomplete (no end marker, nothing invalid), so
/// it need only search what follows (less the length of a marker that may straddle).
pub(crate) type Parsed<T> = Result<Option<(T, usize)>, StartTlsError>;

/// A bounded plain-text exchange over a stream: the only I/O of this module.
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

    /// The next reply as `parse` reads it, reading from the server until `parse` has a
    /// verdict; the reply's bytes leave the buffer, anything after them stays.
    pub(crate) async fn next<T>(
        &mut self,
        parse: impl Fn(&[u8], usize) -> Parsed<T>,
    ) -> Result<T, StartTlsError> {
        let mut seen = 0;
        loop {
            if let Some((reply, used)) = parse(&self.buf, seen)? {
                self.buf.drain(..used.min(self.buf.len()));
                return Ok(reply);
            }
            seen = self.buf.len();
            self.fill().await?;
        }
    }

    /// One line, without its line ending.
    pub(crate) async fn line(&mut self) -> Result<Vec<u8>, StartTlsError> {
        self.next(line).await
    }

    /// A multi-line reply in the SMTP (RFC 5321 §4.2) and FTP (RFC 959 §4.2) style:
    /// `CODE-text` lines, then one `CODE text` line.
    pub(crate) async fn reply(&mut self) -> Result<Reply, StartTlsError> {
        let mut lines = Vec::new();
        loop {
            let text = self.line().await?;
            let (code, last, rest) = reply_line(&text)?;
            lines.push(rest.to_vec());
            if last {
                return Ok(Reply { code, lines });
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(StartTlsError::Protocol(format!(
                    "a reply of more than {MAX_REPLY_LINES} lines"
                )));
            }
        }
    }

    /// Exactly `n` bytes.
    pub(crate) async fn exact(&mut self, n: usize) -> Result<Vec<u8>, StartTlsError> {
        self.next(|buf, _| Ok(buf.get(..n).map(|bytes| (bytes.to_vec(), n))))
            .await
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

// === pure parsers ===

/// One line at the start of `buf`: the bytes before its LF, without trailing CRs. A line
/// longer than [`MAX_LINE`] is an error whether or not its end has arrived.
pub(crate) fn line(buf: &[u8], seen: usize) -> Parsed<Vec<u8>> {
    let window = &buf[..buf.len().min(MAX_LINE + 1)];
    let from = seen.min(window.len());
    match window[from..].iter().position(|&b| b == b'\n') {
        Some(at) => {
            let end = from + at;
            let mut text = &buf[..end];
            while let [rest @ .., b'\r'] = text {
                text = rest;
            }
            Ok(Some((text.to_vec(), end + 1)))
        }
        None if buf.len() <= MAX_LINE => Ok(None),
        None => Err(StartTlsError::Protocol(format!(
            "a line longer than {MAX_LINE} bytes: {}",
            peer_text(buf)
        ))),
    }
}

/// A reply in the SMTP/FTP style, as [`Conversation::reply`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code of the last line.
    pub(crate) code: u16,
    /// Each line's text after the code and its separator, as sent.
    pub(crate) lines: Vec<Vec<u8>>,
}

impl Reply {
    /// The text of the lines from `skip` on, joined by `sep`, as a short escaped prefix.
    pub(crate) fn text(&self, skip: usize, sep: &[u8]) -> String {
        let joined: Vec<u8> = self
            .lines
            .iter()
            .skip(skip)
            .map(Vec::as_slice)
            .collect::<Vec<_>>()
            .join(sep);
        peer_text(&joined)
    }
}

/// A reply line's code (three ASCII digits), whether it is the last line of its reply (no
/// `-` right after the code), and its text.
pub(crate) fn reply_line(text: &[u8]) -> Result<(u16, bool, &[u8]), StartTlsError> {
    match text {
        [a, b, c, rest @ ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            let code = [a, b, c]
                .iter()
                .fold(0u16, |acc, d| acc * 10 + u16::from(**d - b'0'));
            let last = rest.first() != Some(&b'-');
            Ok((code, last, rest.get(1..).unwrap_or_default()))
        }
        _ => Err(StartTlsError::Protocol(format!(
            "not a reply line: {}",
            peer_text(text)
        ))),
    }
}

/// Where the search for a marker of `len` bytes resumes when the first `seen` bytes held
/// none: a marker may straddle the old and new bytes.
pub(crate) fn resume(seen: usize, len: usize) -> usize {
    seen.saturating_sub(len.saturating_sub(1))
}

/// The first occurrence of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first word of `text` (up to a space or tab) and what follows it, spaces trimmed.
pub(crate) fn first_word(text: &[u8]) -> (&[u8], &[u8]) {
    let text = text.trim_ascii_start();
    let end = text
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim_ascii_start())
}

/// Peer bytes for an error message: trimmed, escaped, at most [`PEER_TEXT_MAX`] characters.
pub(crate) fn peer_text(bytes: &[u8]) -> String {
    super::escape_prefix(bytes.trim_ascii(), PEER_TEXT_MAX)
}

#[cfg(test)]
mod tests;
