//! STARTTLS against real servers (Debian's nginx mail proxy for SMTP, IMAP and POP3,
//! PostgreSQL, slapd, vsftpd, prosody), and against scripted servers that refuse, stall or
//! inject data, which must end with a clear reason and never hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsward::cert::{Status, TrustStore};
use tlsward::clock::TestClock;
use tlsward::probe::{Module, ProbeReport, Prober, Protocol, Target};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::probe_chain::{assert_verdict, facts};
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                for answer in answers {
                    if !matches!(lines.next_line().await, Ok(Some(_))) {
                        return;
                    }
                    let _ = write.write_all(answer.as_bytes()).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
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
