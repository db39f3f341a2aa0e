//! Reading the certificate of a server that speaks only TLS 1.0-1.2 with parameters rustls
//! refuses (old versions, RSA key exchange, CBC-only suites).
//!
//! Up to TLS 1.2 the server's Certificate message travels in clear (RFC 5246 §7.3), so a
//! ClientHello offering TLS 1.0-1.2 and many suites, plus a parser for the records that come
//! back, is enough to read the chain: no key exchange, no crypto. The parser is pure and
//! bounded ([`MAX_HANDSHAKE_BYTES`]); the socket loop lives in [`fetch`].

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// The most handshake bytes read before giving up: a chain this large is hostile.
pub const MAX_HANDSHAKE_BYTES: usize = 256 * 1024;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const HS_SERVER_HELLO: u8 = 2;
const HS_CERTIFICATE: u8 = 11;
const HS_SERVER_KEY_EXCHANGE: u8 = 12;
const HS_CERTIFICATE_REQUEST: u8 = 13;
const HS_SERVER_HELLO_DONE: u8 = 14;
const HS_CERTIFICATE_STATUS: u8 = 22;

/// What a legacy server revealed before its key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyHello {
    /// The negotiated protocol version (0x0301 TLS 1.0 .. 0x0303 TLS 1.2).
    pub version: u16,
    /// The chosen cipher suite's IANA code.
    pub cipher_suite: u16,
    /// The chain from the Certificate message, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// A stapled OCSP response from CertificateStatus, if sent.
    pub ocsp: Option<Vec<u8>>,
}

/// Why the legacy read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The server sent an alert instead of a certificate.
    #[error("the server sent alert {description} (level {level})")]
    Alert {
        /// 1 warning, 2 fatal.
        level: u8,
        /// The alert description code (RFC 5246 §7.2).
        description: u8,
    },
    /// The bytes are not a TLS handshake as RFC 5246 lays it out.
    #[error("malformed TLS from the server: {0}")]
    Malformed(&'static str),
    /// More than [`MAX_HANDSHAKE_BYTES`] before the certificate was complete.
    #[error("the server's handshake exceeds {MAX_HANDSHAKE_BYTES} bytes")]
    TooLarge,
    /// The server finished its hello without sending a certificate (anonymous suites).
    #[error("the server sent no certificate")]
    NoCertificate,
    /// The connection ended or failed before the certificate.
    #[error("{0}")]
    Io(String),
    /// The deadline passed.
    #[error("timed out reading the legacy handshake")]
    Timeout,
}

/// Incremental parser for the server's first flight. Feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct LegacyParser {
    /// Unparsed record bytes.
    records: Vec<u8>,
    /// Handshake-layer bytes reassembled from records.
    handshake: Vec<u8>,
    total: usize,
    version: Option<u16>,
    cipher_suite: u16,
    chain: Option<Vec<CertificateDer<'static>>>,
    ocsp: Option<Vec<u8>>,
}

impl LegacyParser {
    /// A parser waiting for the ServerHello.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes from the server. Returns `Ok(Some(hello))` once the certificate (and any
    /// CertificateStatus right after it) has been read, `Ok(None)` when more bytes are needed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<LegacyHello>, LegacyError> {
        self.total += bytes.len();
        if self.total > MAX_HANDSHAKE_BYTES + 5 * 64 {
            return Err(LegacyError::TooLarge);
        }
        self.records.extend_from_slice(bytes);
        // Split complete records.
        let mut used = 0;
        while self.records.len() - used >= 5 {
            let header = &self.records[used..used + 5];
            let (content, major) = (header[0], header[1]);
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if major != 3 {
                return Err(LegacyError::Malformed("record version is not 3.x"));
            }
            if len > 16_384 + 2048 {
                return Err(LegacyError::Malformed("record longer than TLS allows"));
            }
            if self.records.len() - used < 5 + len {
                break;
            }
            let body = &self.records[used + 5..used + 5 + len];
            match content {
                CONTENT_HANDSHAKE => self.handshake.extend_from_slice(body),
                CONTENT_ALERT if body.len() >= 2 => {
                    return Err(LegacyError::Alert {
                        level: body[0],
                        description: body[1],
                    });
                }
                CONTENT_ALERT => return Err(LegacyError::Malformed("short alert")),
                _ => {
                    return Err(LegacyError::Malformed(
                        "unexpected record type before the certificate",
                    ));
                }
            }
            used += 5 + len;
        }
        self.records.drain(..used);
        self.parse_messages()
    }

    fn parse_messages(&mut self) -> Result<Option<LegacyHello>, LegacyError> {
        let mut pos = 0;
        let mut done = false;
        while self.handshake.len() - pos >= 4 {
            let msg = &self.handshake[pos..];
            let kind = msg[0];
            let len = usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]);
            if len > MAX_HANDSHAKE_BYTES {
                return Err(LegacyError::TooLarge);
            }
            if msg.len() < 4 + len {
                break;
            }
            let body = &msg[4..4 + len];
            match kind {
                HS_SERVER_HELLO => {
                    let mut r = Reader(body);
                    let version = r.u16()?;
                    if !(0x0301..=0x0303).contains(&version) {
                        return Err(LegacyError::Malformed(
                            "ServerHello with an unknown version",
                        ));
                    }
                    r.take(32)?;
                    let sid = usize::from(r.u8()?);
                    r.take(sid)?;
                    self.cipher_suite = r.u16()?;
                    self.version = Some(version);
                }
                HS_CERTIFICATE => {
                    if self.version.is_none() {
                        return Err(LegacyError::Malformed("Certificate before ServerHello"));
                    }
                    self.chain = Some(parse_certificate_list(body)?);
                }
                HS_CERTIFICATE_STATUS => {
                    let mut r = Reader(body);
                    if r.u8()? == 1 {
                        let n = r.u24()?;
                        self.ocsp = Some(r.take(n)?.to_vec());
                    }
                    done = true;
                }
                HS_SERVER_KEY_EXCHANGE | HS_CERTIFICATE_REQUEST | HS_SERVER_HELLO_DONE => {
                    if self.chain.is_none() {
                        return Err(LegacyError::NoCertificate);
                    }
                    done = true;
                }
                _ => return Err(LegacyError::Malformed("unexpected handshake message")),
            }
            pos += 4 + len;
            if done {
                break;
            }
        }
        self.handshake.drain(..pos);
        match (done, self.version, self.chain.take()) {
            (true, Some(version), Some(chain)) => Ok(Some(LegacyHello {
                version,
                cipher_suite: self.cipher_suite,
                chain,
                ocsp: self.ocsp.take(),
            })),
            (_, _, chain) => {
                self.chain = chain;
                Ok(None)
            }
        }
    }
}

/// `certificate_list<0..2^24-1>` of `opaque ASN.1Cert<1..2^24-1>` (RFC 5246 §7.4.2).
fn parse_certificate_list(body: &[u8]) -> Result<Vec<CertificateDer<'static>>, LegacyError> {
    let mut r = Reader(body);
    let total = r.u24()?;
    let mut list = Reader(r.take(total)?);
    let mut chain = Vec::new();
    while !list.0.is_empty() {
        let n = list.u24()?;
        if n == 0 {
            return Err(LegacyError::Malformed("empty certificate in the list"));
        }
        chain.push(CertificateDer::from(list.take(n)?.to_vec()));
    }
    if chain.is_empty() {
        return Err(LegacyError::NoCertificate);
    }
    Ok(chain)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LegacyError> {
        if self.0.len() < n {
            return Err(LegacyError::Malformed("truncated handshake message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, LegacyError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, LegacyError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, LegacyError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// Cipher suites offered: modern first, then the legacy ones old appliances still pick.
const SUITES: &[u16] = &[
    0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, // ECDHE AES-GCM, ChaCha20
    0xc009, 0xc013, 0xc00a, 0xc014, 0xc023, 0xc027, 0xc024, 0xc028, // ECDHE CBC
    0x009e, 0x009f, 0x0033, 0x0039, 0x0067, 0x006b, // DHE
    0x009c, 0x009d, 0x002f, 0x0035, 0x003c, 0x003d, // RSA key exchange
    0xc012, 0x0016, 0x000a, // 3DES
    0xc011, 0xc007, 0x0005, 0x0004, // RC4
    0x00ff, // TLS_EMPTY_RENEGOTIATION_INFO_SCSV
];

/// A TLS 1.2 ClientHello (accepting 1.0-1.2) in one record, with SNI for DNS names and a
/// status_request for stapled OCSP.
pub fn client_hello(server_name: &ServerName<'_>, random: [u8; 32]) -> Vec<u8> {
    let mut ext = Vec::new();
    if let ServerName::DnsName(name) = server_name {
        let host = name.as_ref().as_bytes();
        let mut sni = Vec::new();
        push_u16(&mut sni, host.len() as u16 + 3);
        sni.push(0); // host_name
        push_u16(&mut sni, host.len() as u16);
        sni.extend_from_slice(host);
        push_ext(&mut ext, 0x0000, &sni);
    }
    push_ext(&mut ext, 0x0005, &[1, 0, 0, 0, 0]); // status_request: ocsp, no ids, no extensions
    push_ext(
        &mut ext,
        0x000a,
        &[0, 8, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x00, 0x19],
    ); // groups
    push_ext(&mut ext, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    let sigalgs: &[u16] = &[
        0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
    ];
    let mut sa = Vec::new();
    push_u16(&mut sa, (sigalgs.len() * 2) as u16);
    sigalgs.iter().for_each(|s| push_u16(&mut sa, *s));
    push_ext(&mut ext, 0x000d, &sa);
    push_ext(&mut ext, 0x0017, &[]); // extended_master_secret
    push_ext(&mut ext, 0xff01, &[0]); // renegotiation_info

    let mut hello = Vec::new();
    push_u16(&mut hello, 0x0303);
    hello.extend_from_slice(&random);
    hello.push(0); // no session id
    push_u16(&mut hello, (SUITES.len() * 2) as u16);
    SUITES.iter().for_each(|s| push_u16(&mut hello, *s));
    hello.extend_from_slice(&[1, 0]); // compression: null
    push_u16(&mut hello, ext.len() as u16);
    hello.extend_from_slice(&ext);

    let mut hs = vec![1];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut record = vec![CONTENT_HANDSHAKE, 3, 1];
    push_u16(&mut record, hs.len() as u16);
    record.extend_from_slice(&hs);
    record
}

fn push_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn push_ext(v: &mut Vec<u8>, kind: u16, body: &[u8]) {
    push_u16(v, kind);
    push_u16(v, body.len() as u16);
    v.extend_from_slice(body);
}

/// The conventional name of a protocol version.
pub fn version_name(v: u16) -> String {
    match v {
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        other => format!("0x{other:04x}"),
    }
}

/// The IANA name of a cipher suite tlsward offers, or its hex code.
pub fn suite_name(s: u16) -> String {
    let name = match s {
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xc009 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        0xc013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        0xc00a => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        0xc014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        0xc023 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xc027 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0xc024 => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        0xc028 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        0x009e => "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        0x009f => "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        0x0033 => "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
        0x0039 => "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
        0x0067 => "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
        0x006b => "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
        0x009c => "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009d => "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x002f => "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
        0x003c => "TLS_RSA_WITH_AES_128_CBC_SHA256",
        0x003d => "TLS_RSA_WITH_AES_256_CBC_SHA256",
        0xc012 => "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0x0016 => "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0x000a => "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        0xc011 => "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        0xc007 => "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        0x0005 => "TLS_RSA_WITH_RC4_128_SHA",
        0x0004 => "TLS_RSA_WITH_RC4_128_MD5",
        other => return format!("0x{other:04x}"),
    };
    name.to_owned()
}

/// Sends the legacy ClientHello on a fresh connection (already past any STARTTLS) and reads
/// the server's hello and certificate.
pub(crate) async fn read_hello(
    mut tcp: TcpStream,
    server_name: &ServerName<'_>,
    deadline: Instant,
) -> Result<LegacyHello, LegacyError> {
    let io = |e: std::io::Error| LegacyError::Io(e.to_string());
    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| LegacyError::Io("no randomness".into()))?;
    let hello = client_hello(server_name, random);
    timeout_at(deadline, tcp.write_all(&hello))
        .await
        .map_err(|_| LegacyError::Timeout)?
        .map_err(io)?;
    let mut parser = LegacyParser::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = timeout_at(deadline, tcp.read(&mut buf))
            .await
            .map_err(|_| LegacyError::Timeout)?
            .map_err(io)?;
        if n == 0 {
            return Err(LegacyError::Io(
                "the server closed the connection before its certificate".into(),
            ));
        }
        if let Some(hello) = parser.feed(&buf[..n])? {
            return Ok(hello);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![content, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(body);
        m
    }

    fn server_flight(certs: &[&[u8]]) -> Vec<u8> {
        let mut hello = vec![3, 1];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0x00, 0x2f, 0]);
        let mut list = Vec::new();
        for c in certs {
            list.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
            list.extend_from_slice(c);
        }
        let mut cert = (list.len() as u32).to_be_bytes()[1..].to_vec();
        cert.extend_from_slice(&list);
        let mut hs = message(HS_SERVER_HELLO, &hello);
        hs.extend(message(HS_CERTIFICATE, &cert));
        hs.extend(message(HS_SERVER_HELLO_DONE, &[]));
        record(CONTENT_HANDSHAKE, &hs)
    }

    #[test]
    fn reads_version_suite_and_chain_byte_by_byte() {
        let flight = server_flight(&[b"leaf", b"int"]);
        let mut p = LegacyParser::new();
        let mut result = None;
        for b in &flight {
            if let Some(h) = p.feed(std::slice::from_ref(b)).unwrap() {
                result = Some(h);
            }
        }
        let h = result.expect("complete");
        assert_eq!((h.version, h.cipher_suite), (0x0301, 0x002f));
        assert_eq!(h.chain.len(), 2);
        assert_eq!(h.chain[1].as_ref(), b"int");
        assert_eq!(version_name(h.version), "TLSv1.0");
        assert_eq!(suite_name(h.cipher_suite), "TLS_RSA_WITH_AES_128_CBC_SHA");
    }

    #[test]
    fn alerts_and_garbage_are_errors() {
        let mut p = LegacyParser::new();
        assert_eq!(
            p.feed(&record(CONTENT_ALERT, &[2, 70])),
            Err(LegacyError::Alert {
                level: 2,
                description: 70
            })
        );
        let mut p = LegacyParser::new();
        assert!(matches!(
            p.feed(b"HTTP/1.1 400 Bad Request\r\n"),
            Err(LegacyError::Malformed(_))
        ));
        let mut p = LegacyParser::new();
        let bad_len = record(
            CONTENT_HANDSHAKE,
            &message(HS_CERTIFICATE, &[0, 0, 9, 0, 0, 200, 1]),
        );
        assert!(p.feed(&bad_len).is_err());
    }

    #[test]
    fn oversized_flights_stop_at_the_cap() {
        let mut p = LegacyParser::new();
        let chunk = record(CONTENT_HANDSHAKE, &[0u8; 16_000]);
        let mut r = Ok(None);
        for _ in 0..40 {
            r = p.feed(&chunk);
            if r.is_err() {
                break;
            }
        }
        assert!(r.is_err());
    }

    #[test]
    fn client_hello_is_a_well_formed_record() {
        let name = ServerName::try_from("legacy.test").unwrap();
        let hello = client_hello(&name, [1; 32]);
        assert_eq!(&hello[..3], &[22, 3, 1]);
        assert_eq!(
            usize::from(u16::from_be_bytes([hello[3], hello[4]])),
            hello.len() - 5
        );
        assert_eq!(hello[5], 1);
        assert!(hello.windows(11).any(|w| w == b"legacy.test"));
    }

    /// Whatever a server sends, a real flight mutated byte by byte or cut anywhere, and in
    /// whatever pieces, the parser ends in a hello, an error or a wish for more bytes; it
    /// never panics, and a flight it accepted really was a flight of certificates.
    #[test]
    fn mutated_flights_end_in_a_verdict() {
        let real = server_flight(&[b"leaf-der", b"int-der"]);
        let mut rng = fastrand::Rng::with_seed(0x001e_9ac7);
        let mut accepted = 0;
        for _ in 0..5000 {
            let mut bytes = real.clone();
            for _ in 0..rng.usize(0..6) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            bytes.truncate(rng.usize(0..=bytes.len()));
            let mut parser = LegacyParser::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (now, later) = rest.split_at(rng.usize(1..=rest.len()));
                rest = later;
                match parser.feed(now) {
                    Ok(None) => {}
                    Ok(Some(hello)) => {
                        assert!(!hello.chain.is_empty());
                        accepted += 1;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        assert!(accepted > 0, "some flights are left intact enough to read");
    }
}
