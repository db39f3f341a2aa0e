//! STARTTLS against real servers (Debian's nginx mail proxy for SMTP, IMAP and POP3,
//! PostgreSQL, slapd, vsftpd, prosody), and against scripted servers that refuse, stall or
//! inject data, which must end with a clear reason and never hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsward::cert::{Status, TrustStore};
use tlsward::clock::TestClock;
use tlsward::probe::{Module, ProbeReport, Prober, Protocol, StartTlsError, Target};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::util::probe::{assert_verdict, facts};
use crate::util::servers::{NginxMail, Postgres, Prosody, Slapd, Vsftpd};
use crate::util::{TestCa, real_now};

const TIMEOUT: Duration = Duration::from_secs(3);

async fn probe_proto(
    addr: SocketAddr,
    name: &str,
    protocol: Protocol,
    trust: TrustStore,
) -> ProbeReport {
    let mut module = Module::new(Arc::new(trust));
    module.protocol = protocol;
    module.timeout = TIMEOUT;
    let mut target: Target = format!("{name}:{}", addr.port()).parse().unwrap();
    target.connect_to = vec![addr];
    let started = Instant::now();
    // Real daemons judge nothing by time, so the report is judged at the real time too.
    let r = Prober::new(module)
        .probe(&target, &TestClock::at(real_now().into()))
        .await;
    assert!(
        started.elapsed() < TIMEOUT + Duration::from_millis(500),
        "{protocol}: took {:?}",
        started.elapsed()
    );
    r
}

/// A scripted SMTP-like server: sends `greeting`, then answers each client line from
/// `answers` in order (one answer per line received), then stays silent.
async fn scripted(greeting: &'static str, answers: &'static [&'static str]) -> SocketAddr {
    hostile(
        greeting.as_bytes().to_vec(),
        answers.iter().map(|a| a.as_bytes().to_vec()).collect(),
    )
    .await
}

/// [`scripted`] with any bytes: sends `greeting`, then one answer per line the client sends,
/// then stays silent until the client closes. Serves every connection alike.
pub async fn hostile(greeting: Vec<u8>, answers: Vec<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new((greeting, answers));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut read = BufReader::new(read);
                if write.write_all(&script.0).await.is_err() {
                    return;
                }
                for answer in &script.1 {
                    let mut line = Vec::new();
                    if !matches!(read.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                        return;
                    }
                    let _ = write.write_all(answer).await;
                }
                // Silent until the client leaves (at the latest after 30 s).
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut rest))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn smtp_without_starttls_in_ehlo_is_refused() {
    let addr = scripted(
        "220 mx.test ESMTP\r\n",
        &["250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"],
    )
    .await;
    let r = probe_proto(addr, "mx.test", Protocol::Smtp, TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("starttls_refused"), "{:?}", r.outcome);
    assert!(
        r.error().unwrap().contains("does not offer STARTTLS"),
        "{:?}",
        r.error()
    );
}

#[tokio::test]
async fn smtp_starttls_declined_is_refused() {
    let addr = scripted(
        "220 mx.test ESMTP\r\n",
        &[
            "250-mx.test\r\n250 STARTTLS\r\n",
            "454 4.7.0 TLS not available\r\n",
        ],
    )
    .await;
    let r = probe_proto(addr, "mx.test", Protocol::Smtp, TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("starttls_refused"));
    assert!(r.error().unwrap().contains("454"), "{:?}", r.error());
}

#[tokio::test]
async fn data_injected_after_the_go_ahead_is_refused() {
    let addr = scripted(
        "220 mx.test ESMTP\r\n",
        &[
            "250-mx.test\r\n250 STARTTLS\r\n",
            "220 go ahead\r\n250 injected\r\n",
        ],
    )
    .await;
    let r = probe_proto(addr, "mx.test", Protocol::Smtp, TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("starttls_failed"), "{:?}", r.outcome);
    assert!(
        r.error().unwrap().contains("after agreeing"),
        "{:?}",
        r.error()
    );
}

#[tokio::test]
async fn silent_server_is_a_starttls_timeout() {
    let mut probes = tokio::task::JoinSet::new();
    for protocol in Protocol::ALL.into_iter().filter(|p| *p != Protocol::Tls) {
        probes.spawn(async move {
            let addr = scripted("", &[]).await;
            (
                protocol,
                probe_proto(addr, "quiet.test", protocol, TrustStore::empty()).await,
            )
        });
    }
    let mut seen = 0;
    while let Some(done) = probes.join_next().await {
        let (protocol, r) = done.unwrap();
        assert_eq!(
            r.reason(),
            Some("starttls_timeout"),
            "{protocol}: {:?}",
            r.outcome
        );
        seen += 1;
    }
    assert_eq!(seen, 7);
}

#[tokio::test]
async fn endless_line_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = [b'2'; 4096];
                while tcp.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let r = probe_proto(addr, "flood.test", Protocol::Smtp, TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("starttls_failed"), "{:?}", r.outcome);
}

#[tokio::test]
async fn imap_and_pop3_refusals_are_named() {
    let imap = scripted("* OK IMAP ready\r\n", &["tw1 BAD unknown command\r\n"]).await;
    let r = probe_proto(imap, "imap.test", Protocol::Imap, TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("starttls_refused"));
    let preauth = scripted("* PREAUTH welcome\r\n", &[]).await;
    assert_eq!(
        probe_proto(preauth, "imap.test", Protocol::Imap, TrustStore::empty())
            .await
            .reason(),
        Some("starttls_refused")
    );
    let pop3 = scripted("+OK POP3 ready\r\n", &["-ERR no TLS here\r\n"]).await;
    assert_eq!(
        probe_proto(pop3, "pop.test", Protocol::Pop3, TrustStore::empty())
            .await
            .reason(),
        Some("starttls_refused")
    );
    let xmpp = scripted(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></stream:features>",
        &[],
    )
    .await;
    assert_eq!(
        probe_proto(xmpp, "chat.test", Protocol::Xmpp, TrustStore::empty())
            .await
            .reason(),
        Some("starttls_refused")
    );
}

#[test]
fn protocol_names_parse_and_reject_unknown_ones() {
    assert_eq!("SMTP".parse::<Protocol>(), Ok(Protocol::Smtp));
    assert_eq!("postgres".parse::<Protocol>(), Ok(Protocol::Postgres));
    let err = "smtps".parse::<Protocol>().unwrap_err();
    assert!(err.contains("expected one of tls, smtp"), "{err}");
}

/// A chain for the real daemons, valid by the wall clock (they and the report use real time).
struct RealCerts {
    root: TestCa,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn real_certs(names: &[&str]) -> RealCerts {
    let root = TestCa::root_at("STARTTLS Root", real_now());
    let leaf = root.intermediate("STARTTLS Int").leaf(names).build();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write_pem(dir.path(), "leaf");
    RealCerts {
        root,
        cert,
        key,
        _dir: dir,
    }
}

#[track_caller]
fn assert_served(r: &ProbeReport, name: &str) {
    assert_verdict(r, Status::Ok, None);
    let f = facts(r);
    assert!(
        f.leaf.dns_names.iter().any(|n| n == name),
        "{:?}",
        f.leaf.dns_names
    );
    assert_eq!(f.chain.len(), 2, "leaf and intermediate");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_mail_proxy_smtp_imap_pop3() {
    let certs = real_certs(&["mail.test"]);
    let nginx = NginxMail::start(&certs.cert, &certs.key).await;
    for (protocol, addr) in [
        (Protocol::Smtp, nginx.smtp),
        (Protocol::Imap, nginx.imap),
        (Protocol::Pop3, nginx.pop3),
    ] {
        let r = probe_proto(addr, "mail.test", protocol, certs.root.trust()).await;
        assert_served(&r, "mail.test");
        assert_eq!(r.tls.as_ref().unwrap().version, "TLSv1.3", "{protocol}");
    }
    let r = probe_proto(
        nginx.smtp_no_starttls,
        "mail.test",
        Protocol::Smtp,
        certs.root.trust(),
    )
    .await;
    assert_eq!(r.reason(), Some("starttls_refused"), "{:?}", r.outcome);
    // Plain TLS against a STARTTLS port is not TLS at all.
    let r = probe_proto(nginx.smtp, "mail.test", Protocol::Tls, certs.root.trust()).await;
    assert_eq!(r.status(), Status::Critical);
    assert!(r.outcome.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_ssl_request() {
    let certs = real_certs(&["db.test"]);
    let pg = Postgres::start(&certs.cert, &certs.key, true).await;
    assert_served(
        &probe_proto(pg.addr, "db.test", Protocol::Postgres, certs.root.trust()).await,
        "db.test",
    );
    drop(pg);
    let plain = Postgres::start(&certs.cert, &certs.key, false).await;
    let r = probe_proto(
        plain.addr,
        "db.test",
        Protocol::Postgres,
        certs.root.trust(),
    )
    .await;
    assert_eq!(r.reason(), Some("starttls_refused"), "{:?}", r.outcome);
    assert!(r.error().unwrap().contains("answered N"), "{:?}", r.error());
}

#[tokio::test(flavor = "multi_thread")]
async fn slapd_start_tls_extended_operation() {
    let certs = real_certs(&["ldap.test"]);
    let slapd = Slapd::start(&certs.cert, &certs.key, true).await;
    assert_served(
        &probe_proto(slapd.addr, "ldap.test", Protocol::Ldap, certs.root.trust()).await,
        "ldap.test",
    );
    let plain = Slapd::start(&certs.cert, &certs.key, false).await;
    let r = probe_proto(plain.addr, "ldap.test", Protocol::Ldap, certs.root.trust()).await;
    assert_eq!(r.reason(), Some("starttls_refused"), "{:?}", r.outcome);
    assert!(
        r.error().unwrap().contains("resultCode 2"),
        "{:?}",
        r.error()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vsftpd_auth_tls() {
    let certs = real_certs(&["ftp.test"]);
    let ftp = Vsftpd::start(&certs.cert, &certs.key, true).await;
    assert_served(
        &probe_proto(ftp.addr, "ftp.test", Protocol::Ftp, certs.root.trust()).await,
        "ftp.test",
    );
    let plain = Vsftpd::start(&certs.cert, &certs.key, false).await;
    let r = probe_proto(plain.addr, "ftp.test", Protocol::Ftp, certs.root.trust()).await;
    assert_eq!(r.reason(), Some("starttls_refused"), "{:?}", r.outcome);
    assert!(r.error().unwrap().contains("530"), "{:?}", r.error());
}

#[tokio::test(flavor = "multi_thread")]
async fn prosody_xmpp_client_stream() {
    let certs = real_certs(&["xmpp.test"]);
    let prosody = Prosody::start(&certs.cert, &certs.key, "xmpp.test").await;
    assert_served(
        &probe_proto(
            prosody.addr,
            "xmpp.test",
            Protocol::Xmpp,
            certs.root.trust(),
        )
        .await,
        "xmpp.test",
    );
    // A domain the server does not host ends the stream with an error.
    let r = probe_proto(
        prosody.addr,
        "other.test",
        Protocol::Xmpp,
        certs.root.trust(),
    )
    .await;
    assert_eq!(r.reason(), Some("starttls_refused"), "{:?}", r.outcome);
}

// === Hostile bytes: replies that are not valid text, and seeded mutations ===

/// An XMPP server's stream head, up to its features.
const XMPP_HEAD: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='h1' from='chat.test' version='1.0'>";

/// A server whose replies break the protocol with bytes that are not (valid) text, the reason
/// its probe must end with, and a fragment of the error message.
struct Hostile {
    protocol: Protocol,
    greeting: Vec<u8>,
    answers: Vec<Vec<u8>>,
    reason: &'static str,
    says: &'static str,
}

fn hostile_cases() -> Vec<Hostile> {
    let case = |protocol, greeting: &[u8], answers: &[&[u8]], reason, says| Hostile {
        protocol,
        greeting: greeting.to_vec(),
        answers: answers.iter().map(|a| a.to_vec()).collect(),
        reason,
        says,
    };
    let mut xmpp_ff = XMPP_HEAD.to_vec();
    xmpp_ff.extend_from_slice(b"<stream:features>");
    xmpp_ff.extend_from_slice(&[0xff; 64]);
    xmpp_ff.extend_from_slice(
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
    );
    let mut xmpp_split = XMPP_HEAD.to_vec();
    xmpp_split.extend_from_slice(b"<stream:features>\xe2\x82</stream:features>");
    vec![
        // Panicked: a str sliced at a byte index inside a replacement character.
        case(
            Protocol::Imap,
            b"* OK ready\r\n",
            &[b"tw1 \xff\xfeOK \xc3\r\n"],
            "starttls_failed",
            r#"not OK, NO or BAD: "\xff\xfeOK \xc3""#,
        ),
        case(
            Protocol::Imap,
            b"* OK \xc3\x28 ready\r\n",
            &[b"tw1 NO \xff\x1b]0;owned\x07\r\n"],
            "starttls_refused",
            r#"STARTTLS answered "NO \xff\x1b]0;owned\x07""#,
        ),
        // Panicked: lossily decoded text cut at an index into the raw buffer.
        case(
            Protocol::Xmpp,
            &xmpp_ff,
            &[],
            "starttls_failed",
            r#"not UTF-8 (RFC 6120 §11.6) at byte 162: "\xff\xff"#,
        ),
        case(
            Protocol::Xmpp,
            &xmpp_split,
            &[],
            "starttls_failed",
            "not UTF-8",
        ),
        case(
            Protocol::Smtp,
            b"220 mx.test \xff\xfe ESMTP\r\n",
            &[
                b"250-mx.test\r\n250-\xc3\x28\r\n250 STARTTLS\r\n",
                b"2\xff0 go ahead\r\n",
            ],
            "starttls_failed",
            r#"not a reply line: "2\xff0 go ahead""#,
        ),
        case(
            Protocol::Smtp,
            b"554 \xff\xfe\x1b[2J no service\r\n",
            &[],
            "starttls_refused",
            r#"greeting 554 "\xff\xfe\x1b[2J no service""#,
        ),
        case(
            Protocol::Pop3,
            b"+OK \xff ready\r\n",
            &[b"\xff\xfe+OK\r\n"],
            "starttls_failed",
            r#"not a POP3 status line: "\xff\xfe+OK""#,
        ),
        case(
            Protocol::Ftp,
            b"220 \xff\r\n",
            &[b"23\xff ok\r\n"],
            "starttls_failed",
            "not a reply line",
        ),
        // resultCode 2 with a diagnostic that is not text.
        case(
            Protocol::Ldap,
            b"\x30\x11\x02\x01\x01\x78\x0c\x0a\x01\x02\x04\x00\x04\x05\xff\x1b[2J",
            &[],
            "starttls_refused",
            r#"resultCode 2 ("\xff\x1b[2J")"#,
        ),
        case(
            Protocol::Postgres,
            b"\xff",
            &[],
            "starttls_failed",
            "unexpected answer byte 0xff",
        ),
    ]
}

#[track_caller]
fn assert_printable(error: &str) {
    assert!(
        error.len() < 300 && !error.chars().any(char::is_control),
        "{error:?}"
    );
}

#[tokio::test]
async fn replies_that_are_not_text_end_in_a_typed_reason() {
    for case in hostile_cases() {
        let addr = hostile(case.greeting, case.answers).await;
        let r = probe_proto(addr, "chat.test", case.protocol, TrustStore::empty()).await;
        assert_eq!(
            r.reason(),
            Some(case.reason),
            "{}: {:?}",
            case.protocol,
            r.outcome
        );
        assert_eq!(r.status(), Status::Critical);
        let error = r.error().unwrap();
        assert!(error.contains(case.says), "{}: {error}", case.protocol);
        assert_printable(&error);
    }
}

/// Mutations of a transcript that hit what byte-level parsing must survive: invalid and
/// truncated UTF-8, runs of 0xff, lost or doubled line ends, repeats, cuts, random bytes.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    const SPLICES: [&[u8]; 10] = [
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        "é".as_bytes(),
        "€".as_bytes(),
        "\u{202e}".as_bytes(),
        b"\r\n",
        b"\x1b[2J",
    ];
    if rng.u8(..) < 20 {
        return (0..rng.usize(..300)).map(|_| rng.u8(..)).collect();
    }
    let mut s = seed.to_vec();
    for _ in 0..rng.usize(1..=3) {
        let at = rng.usize(..=s.len());
        match rng.u8(..8) {
            0 if !s.is_empty() => {
                let i = rng.usize(..s.len());
                s[i] = rng.u8(..);
            }
            1 => {
                let run = vec![0xff; rng.usize(1..64)];
                s.splice(at..at, run);
            }
            2 => {
                let splice = SPLICES[rng.usize(..SPLICES.len())];
                s.splice(at..at, splice.iter().copied());
            }
            3 => {
                let end = rng.usize(at..=s.len());
                s.drain(at..end);
            }
            4 => s.truncate(at),
            5 => {
                let end = rng.usize(at..=s.len().min(at + 40));
                let piece = s[at..end].repeat(rng.usize(1..30));
                s.splice(at..at, piece);
            }
            6 => {
                let i = rng.usize(..=s.len());
                if let Some(p) = s[..i].iter().rposition(|&b| b == b'\r') {
                    s.remove(p);
                }
            }
            _ => {
                let noise: Vec<u8> = (0..rng.usize(1..16)).map(|_| rng.u8(..)).collect();
                s.splice(at..at, noise);
            }
        }
    }
    s
}

/// The fuzz target's harness (tests/util/starttls_script.rs), seeded and bounded: each
/// protocol's good transcript goes through whatever the read sizes, then thousands of
/// mutations of it must each end `Ok` or in a typed error with a short printable message,
/// the same kind of outcome in small reads as in whole ones (the parsers resume where they
/// stopped, which must not change a verdict), except that larger reads can only see more of
/// what follows the go-ahead.
#[test]
fn mutated_transcripts_never_panic() {
    use crate::util::starttls_script::{PROTOCOLS, SEEDS, check, converse};
    const RUNS: usize = 3000;
    assert_eq!(SEEDS.map(|(p, _)| p), PROTOCOLS);
    for (n, (protocol, seed)) in SEEDS.into_iter().enumerate() {
        for chunk in [1, 2, 3, 7, 64, 2048] {
            assert_eq!(
                converse(protocol, seed, chunk),
                Ok(()),
                "{protocol} in reads of {chunk}"
            );
        }
        let mut rng = fastrand::Rng::with_seed(0x5747_0000 + n as u64);
        let mut failed = 0;
        for _ in 0..RUNS {
            let script = mutate(&mut rng, seed);
            // Mostly whole reads; one in four split into reads of 1 to 16 bytes.
            let chunk = if rng.u8(..4) == 0 {
                rng.usize(1..=16)
            } else {
                2048
            };
            let outcome = std::panic::catch_unwind(|| converse(protocol, &script, chunk))
                .unwrap_or_else(|_| {
                    panic!(
                        "{protocol} panicked on {:?} in reads of {chunk}",
                        script.escape_ascii().to_string()
                    )
                });
            check(protocol, &script, &outcome);
            failed += usize::from(outcome.is_err());
            let whole = converse(protocol, &script, 2048);
            let read_ahead = |e: &StartTlsError| {
                let m = e.to_string();
                m.contains("after agreeing") || m.contains("bytes before TLS")
            };
            let consistent = match (&outcome, &whole) {
                (Ok(()), Ok(())) => true,
                (Err(a), Err(b)) => {
                    std::mem::discriminant(a) == std::mem::discriminant(b) || read_ahead(b)
                }
                (Ok(()), Err(b)) => read_ahead(b),
                (Err(_), Ok(())) => false,
            };
            assert!(
                consistent,
                "{protocol}: {outcome:?} in reads of {chunk} but {whole:?} whole, for {:?}",
                script.escape_ascii().to_string()
            );
        }
        assert!(
            failed > RUNS / 10,
            "{protocol}: only {failed} mutations failed"
        );
    }
}

// === Batches and schedules with hostile servers among good ones ===

/// An IMAP server that agrees to STARTTLS, then hands the connection to the TLS `backend`.
async fn imap_front(backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut client = BufReader::new(tcp);
                let mut line = Vec::new();
                if client.get_mut().write_all(b"* OK ready\r\n").await.is_err()
                    || client.read_until(b'\n', &mut line).await.is_err()
                    || client
                        .get_mut()
                        .write_all(b"tw1 OK begin TLS\r\n")
                        .await
                        .is_err()
                {
                    return;
                }
                let Ok(mut tls) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(client.get_mut(), &mut tls).await;
            });
        }
    });
    addr
}

/// The non-UTF-8 tagged answer that panicked the prober, and a refusal with the same bytes.
async fn hostile_imap() -> (SocketAddr, SocketAddr) {
    let broken = hostile(
        b"* OK ready\r\n".to_vec(),
        vec![b"tw1 \xff\xfeOK\r\n".to_vec()],
    )
    .await;
    let refused = hostile(
        b"* OK ready\r\n".to_vec(),
        vec![b"tw1 NO \xff\xfe\r\n".to_vec()],
    )
    .await;
    (broken, refused)
}

/// `tlsward probe` over a hostile IMAP server (which used to panic the whole batch: exit 3,
/// no output), a refusing one and a good one: every result is printed, in input order, and
/// the exit code is the worst status's (2, critical).
#[tokio::test(flavor = "multi_thread")]
async fn a_probe_batch_with_hostile_servers_prints_every_result() {
    let root = TestCa::root_at("Batch Root", real_now());
    let leaf = root.intermediate("Batch Int").leaf(&["imap.test"]).build();
    let backend = crate::util::TlsServer::leaf(&leaf).start().await;
    let good = imap_front(backend.addr).await;
    let (broken, refused) = hostile_imap().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("root.pem");
    std::fs::write(&ca, root.pem()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args([
            "probe",
            "--starttls",
            "imap",
            "--no-system-roots",
            "-o",
            "json",
        ])
        .arg("--ca-file")
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("imap.test:{}:127.0.0.1", good.port()))
        .arg(broken.to_string())
        .arg(format!("imap.test:{}", good.port()))
        .arg(refused.to_string())
        .env_remove("TLSWARD_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panic"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(&str, &str, Option<&str>)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["reason"].as_str(),
            )
        })
        .collect();
    let (broken, good, refused) = (
        broken.to_string(),
        format!("imap.test:{}", good.port()),
        refused.to_string(),
    );
    assert_eq!(
        got,
        [
            (broken.as_str(), "critical", Some("starttls_failed")),
            (good.as_str(), "ok", None),
            (refused.as_str(), "critical", Some("starttls_refused")),
        ]
    );
    let error = v[2]["error"].as_str().unwrap();
    assert!(
        error.ends_with(r#"STARTTLS answered "NO \xff\xfe""#),
        "{error}"
    );
}

/// `tlsward serve` with the hostile servers of [`hostile_cases`] among its targets (the
/// IMAP and XMPP ones used to kill their probe loops: no series, `/-/ready` 503 for ever):
/// it gets ready, reports every target with its reason, and keeps probing them.
#[tokio::test(flavor = "multi_thread")]
async fn serve_keeps_probing_every_target_beside_hostile_servers() {
    use crate::util::daemon::{Endpoints, start};
    use crate::util::exposition::{assert_metric, metric};
    use crate::util::http::get;
    use crate::util::wait::eventually;

    let e = Endpoints::start().await;
    let mut config = String::from(
        "[defaults]\ninterval = \"1s\"\ntimeout = \"3s\"\n\n[profile.test]\nprotocol = \"tls\"\nca_files = [\"ca.pem\"]\nsystem_roots = false\n\n",
    );
    for p in [
        Protocol::Smtp,
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::Ftp,
    ] {
        config.push_str(&format!(
            "[profile.{p}-test]\nprotocol = \"{p}\"\nca_files = [\"ca.pem\"]\nsystem_roots = false\n\n"
        ));
    }
    config.push_str(
        "[profile.ldap-test]\nprotocol = \"ldap\"\nca_files = [\"ca.pem\"]\nsystem_roots = false\n\n[profile.postgres-test]\nprotocol = \"postgres\"\nca_files = [\"ca.pem\"]\nsystem_roots = false\n\n[profile.xmpp-test]\nprotocol = \"xmpp\"\nca_files = [\"ca.pem\"]\nsystem_roots = false\n\n",
    );
    config.push_str(&Endpoints::target("good.test", &e.good, ""));
    // (target, profile, failure reason) of every target.
    let mut expected = vec![(
        format!("good.test:{}", e.good.addr.port()),
        "test".to_owned(),
        None,
    )];
    for (n, case) in hostile_cases().into_iter().enumerate() {
        let addr = hostile(case.greeting, case.answers).await;
        let name = format!("h{n}.test:{}", addr.port());
        config.push_str(&format!(
            "[[target]]\naddress = \"{name}\"\nprofile = \"{}-test\"\nconnect_to = [\"127.0.0.1\"]\n\n",
            case.protocol
        ));
        expected.push((name, format!("{}-test", case.protocol), Some(case.reason)));
    }
    let d = start(&e.write(&config)).await;
    let addr = d.addr;
    eventually(20, "/-/ready", || async move {
        get(addr, "/-/ready").await.status == 200
    })
    .await;
    let first = get(addr, "/metrics").await.body;
    for (target, profile, reason) in &expected {
        let labels = [("target", target.as_str()), ("profile", profile.as_str())];
        let success = if reason.is_some() { 0.0 } else { 1.0 };
        assert_metric(&first, "tlsward_probe_success", &labels, success);
        if let Some(reason) = reason {
            let labels = [labels[0], labels[1], ("reason", *reason)];
            assert_metric(&first, "tlsward_probe_failure_info", &labels, 1.0);
        }
    }
    // The loops go on: every target, the hostile ones included, is probed again.
    let stamp = |body: &str, target: &str, profile: &str| {
        let labels = [("target", target), ("profile", profile)];
        metric(body, "tlsward_probe_timestamp_seconds", &labels)
    };
    let expected = Arc::new(expected);
    let first = Arc::new(first);
    eventually(20, "a second round of every target", || {
        let (expected, first) = (expected.clone(), first.clone());
        async move {
            let now = get(addr, "/metrics").await.body;
            expected
                .iter()
                .all(|(t, p, _)| stamp(&now, t, p) > stamp(&first, t, p))
        }
    })
    .await;
}
