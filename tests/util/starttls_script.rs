//! One STARTTLS exchange against a server that answers with fixed bytes, in memory and
//! without a runtime or a clock: the harness of the `starttls` fuzz target (which includes
//! this file: fuzz/fuzz_targets/starttls.rs) and of the seeded run over mutated transcripts
//! in tests/probe_starttls.rs. Uses only tlsward's public API and tokio's I/O traits.

use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tlsward::probe::{Protocol, StartTlsError, starttls_upgrade};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The seven protocols with a plain-text exchange before TLS.
pub const PROTOCOLS: [Protocol; 7] = [
    Protocol::Smtp,
    Protocol::Imap,
    Protocol::Pop3,
    Protocol::Ftp,
    Protocol::Ldap,
    Protocol::Postgres,
    Protocol::Xmpp,
];

/// The XMPP domain the exchange asks for.
pub const DOMAIN: &str = "chat.test";

/// The longest error message any outcome may carry (a fixed text plus a capped quote).
pub const MAX_MESSAGE: usize = 200;

/// A complete server side of each protocol's exchange that ends in the go-ahead: seeds for
/// mutation and for the fuzzer's corpus.
pub const SEEDS: [(Protocol, &[u8]); 7] = [
    (
        Protocol::Smtp,
        b"220 mx.test ESMTP ready\r\n250-mx.test greets tlsward.invalid\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n",
    ),
    (
        Protocol::Imap,
        b"* OK [CAPABILITY IMAP4rev2 STARTTLS LOGINDISABLED] ready\r\n* CAPABILITY IMAP4rev2 STARTTLS\r\ntw1 OK Begin TLS negotiation now\r\n",
    ),
    (Protocol::Pop3, b"+OK POP3 ready <1.2@pop.test>\r\n+OK Begin TLS\r\n"),
    (
        Protocol::Ftp,
        b"220-Welcome to ftp.test\r\n220 FTP server ready\r\n234 Proceed with negotiation.\r\n",
    ),
    (
        Protocol::Ldap,
        b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00",
    ),
    (Protocol::Postgres, b"S"),
    (
        Protocol::Xmpp,
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='c2s1' from='chat.test' version='1.0' xml:lang='en'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    ),
];

/// A server that sends its script `chunk` bytes per read, then closes; it takes any write.
/// It is always ready, so an exchange over it never waits.
struct Scripted<'a> {
    script: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.script.len()).min(buf.remaining());
        let (now, rest) = self.script.split_at(n);
        buf.put_slice(now);
        self.script = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `protocol`'s exchange against a server sending `script` in reads of `chunk` bytes
/// (at least 1). The stream never makes the exchange wait, so it ends in one poll.
pub fn converse(protocol: Protocol, script: &[u8], chunk: usize) -> Result<(), StartTlsError> {
    let mut server = Scripted {
        script,
        chunk: chunk.max(1),
    };
    let mut exchange = pin!(starttls_upgrade(protocol, &mut server, DOMAIN));
    match exchange
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => panic!("{protocol}: the exchange waited on a stream that is always ready"),
    }
}

/// What every outcome must be: `Ok`, or a typed error whose message is short and has no
/// control character (peer bytes reach it only escaped).
pub fn check(protocol: Protocol, script: &[u8], outcome: &Result<(), StartTlsError>) {
    if let Err(e) = outcome {
        let msg = e.to_string();
        assert!(
            msg.len() <= MAX_MESSAGE && !msg.chars().any(char::is_control),
            "{protocol}: message of {} bytes for script {:?}: {msg:?}",
            msg.len(),
            script.escape_ascii().to_string(),
        );
    }
}
