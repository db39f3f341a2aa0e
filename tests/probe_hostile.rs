//! Hostile and broken endpoints never stall, crash or bloat the prober: each probe ends within
//! its timeout with a precise reason. Legacy TLS 1.0-1.2 servers still have their certificate
//! read and checked (real `openssl s_server`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsward::cert::{CheckKind, Status, TrustStore};
use tlsward::clock::TestClock;
use tlsward::probe::{Module, ProbeReport, Prober, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::probe::{assert_verdict, facts};
use crate::util::{OpensslServer, TestCa, TlsServer, test_time};

const TIMEOUT: Duration = Duration::from_millis(1500);

/// Probes and asserts the probe ended within its timeout (plus scheduling slack).
async fn probe_timed(addr: SocketAddr, name: &str, trust: TrustStore) -> ProbeReport {
    let mut module = Module::new(Arc::new(trust));
    module.timeout = TIMEOUT;
    let mut target: Target = format!("{name}:{}", addr.port()).parse().unwrap();
    target.connect_to = vec![addr];
    let started = Instant::now();
    let r = Prober::new(module)
        .probe(&target, &TestClock::at(test_time()))
        .await;
    let took = started.elapsed();
    assert!(
        took < TIMEOUT + Duration::from_millis(500),
        "{name}: probe took {took:?}"
    );
    r
}

/// A listener whose every connection is handled by `behave`.
async fn hostile<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(behave(tcp));
        }
    });
    addr
}

#[tokio::test]
async fn tarpit_that_accepts_and_never_answers() {
    let addr = hostile(|tcp| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    })
    .await;
    let r = probe_timed(addr, "tarpit.test", TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("handshake_timeout"), "{:?}", r.outcome);
    assert_eq!(r.status(), Status::Critical);
}

#[tokio::test]
async fn server_that_drips_a_byte_a_second() {
    let addr = hostile(|mut tcp| async move {
        // The start of a plausible TLS handshake record, one byte per second.
        for b in [0x16u8, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00] {
            if tcp.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let r = probe_timed(addr, "drip.test", TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("handshake_timeout"), "{:?}", r.outcome);
}

#[tokio::test]
async fn garbage_bytes_are_not_tls() {
    let addr = hostile(|mut tcp| async move {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 0x80)
            .collect();
        let _ = tcp.write_all(&garbage).await;
    })
    .await;
    let r = probe_timed(addr, "garbage.test", TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("not_tls"), "{:?}", r.outcome);
}

#[tokio::test]
async fn http_redirect_is_not_tls() {
    let addr = hostile(|mut tcp| async move {
        let mut buf = [0u8; 512];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.test/\r\nContent-Length: 0\r\n\r\n")
            .await;
    })
    .await;
    let r = probe_timed(addr, "redirect.test", TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("not_tls"), "{:?}", r.outcome);
}

#[tokio::test]
async fn reset_in_the_middle_of_the_handshake() {
    let addr = hostile(|mut tcp| async move {
        let mut buf = [0u8; 64];
        let _ = tcp.read(&mut buf).await; // part of the ClientHello
        let _ = tcp.write_all(&[0x16, 0x03, 0x03, 0x00, 0x40, 0x02]).await; // half a ServerHello
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tcp.set_zero_linger(); // close with RST
        drop(tcp);
    })
    .await;
    let r = probe_timed(addr, "reset.test", TrustStore::empty()).await;
    assert_eq!(r.reason(), Some("connection_reset"), "{:?}", r.outcome);
}

#[tokio::test]
async fn chain_of_one_mebibyte_is_refused_not_buffered() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["huge.test"]).build();
    let mut chain = leaf.chain.clone();
    chain.push(vec![0x30u8; 1024 * 1024].into());
    let server = TlsServer::serve(chain, leaf.key.clone_key()).start().await;
    let r = probe_timed(server.addr, "huge.test", root.trust()).await;
    assert_eq!(r.reason(), Some("chain_too_large"), "{:?}", r.outcome);
}

#[tokio::test]
async fn chain_of_two_hundred_certificates() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["many.test"]).build();
    let mut chain = leaf.chain.clone();
    let stranger = TestCa::root("Stranger");
    for i in 0..200 {
        chain.push(
            stranger
                .intermediate(&format!("Stranger Int {i}"))
                .cert
                .clone(),
        );
    }
    let server = TlsServer::serve(chain, leaf.key.clone_key()).start().await;
    let r = probe_timed(server.addr, "many.test", root.trust()).await;
    // Over rustls's 64 KiB handshake message limit: refused before any parsing.
    assert_eq!(r.reason(), Some("chain_too_large"), "{:?}", r.outcome);

    // Eighty unrelated certificates fit: the chain is judged, and path building stays bounded.
    let mut chain = leaf.chain.clone();
    for i in 0..80 {
        chain.push(
            stranger
                .intermediate(&format!("Stranger Int {i}"))
                .cert
                .clone(),
        );
    }
    let server = TlsServer::serve(chain, leaf.key.clone_key()).start().await;
    let r = probe_timed(server.addr, "many.test", root.trust()).await;
    assert_verdict(&r, Status::Warning, Some("chain_extra_certs"));
    assert_eq!(facts(&r).chain.len(), 81);
}

#[tokio::test]
async fn malformed_leaf_inside_a_valid_handshake() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["broken.test"]).build();
    let der = leaf.der().as_ref().to_vec();
    // Truncated DER.
    let truncated = der[..der.len() / 2].to_vec();
    // Bad lengths: the outer SEQUENCE claims more bytes than there are.
    let mut bad_len = der.clone();
    bad_len[3] = bad_len[3].wrapping_add(40);
    for broken in [truncated, bad_len] {
        let server = TlsServer::serve(vec![broken.into()], leaf.key.clone_key())
            .start()
            .await;
        let r = probe_timed(server.addr, "broken.test", root.trust()).await;
        assert_eq!(r.reason(), Some("malformed_certificate"), "{:?}", r.outcome);
        assert_eq!(r.status(), Status::Critical);
    }
}

#[tokio::test]
async fn malformed_intermediate_is_flagged_and_the_leaf_still_reported() {
    let root = TestCa::root("Test Root");
    let int = root.intermediate("Test Int");
    let leaf = int.leaf(&["halfbroken.test"]).build();
    let mut chain = leaf.chain.clone();
    chain[1] = chain[1].as_ref()[..100].to_vec().into();
    let server = TlsServer::serve(chain, leaf.key.clone_key()).start().await;
    let r = probe_timed(server.addr, "halfbroken.test", root.trust()).await;
    assert_eq!(r.status(), Status::Critical);
    let f = facts(&r);
    assert_eq!(f.leaf.dns_names, ["halfbroken.test"]);
    assert!(!f.check(CheckKind::Chain).unwrap().ok());
    assert!(
        f.check(CheckKind::ChainOrder)
            .unwrap()
            .detail
            .as_deref()
            .unwrap()
            .contains("malformed")
    );
}

#[tokio::test]
async fn tls_1_0_only_server_still_has_its_certificate_checked() {
    let root = TestCa::root("Test Root");
    let leaf = root
        .leaf(&["legacy.test"])
        .key(crate::util::rsa_key())
        .build();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write_pem(dir.path(), "legacy");
    let server =
        OpensslServer::start(&cert, &key, &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]).await;
    let r = probe_timed(server.addr, "legacy.test", root.trust()).await;
    assert_verdict(&r, Status::Warning, Some("legacy_tls_version"));
    assert_eq!(r.tls.as_ref().unwrap().version, "TLSv1.0");
    let f = facts(&r);
    assert_eq!(f.leaf.dns_names, ["legacy.test"]);
    for kind in [
        CheckKind::Chain,
        CheckKind::Hostname,
        CheckKind::Expiry,
        CheckKind::KeyStrength,
    ] {
        assert!(f.check(kind).unwrap().ok(), "{kind:?}");
    }
    // Certificate problems still outrank the protocol: a wrong name is critical.
    let r = probe_timed(server.addr, "other.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("hostname_mismatch"));
    assert!(!facts(&r).check(CheckKind::Handshake).unwrap().ok());
}

#[tokio::test]
async fn tls_1_2_with_only_rsa_key_exchange_is_a_legacy_cipher_suite() {
    let root = TestCa::root("Test Root");
    let leaf = root
        .leaf(&["rsakx.test"])
        .key(crate::util::rsa_key())
        .build();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write_pem(dir.path(), "rsakx");
    let server = OpensslServer::start(
        &cert,
        &key,
        &["-tls1_2", "-cipher", "AES128-SHA@SECLEVEL=0"],
    )
    .await;
    let r = probe_timed(server.addr, "rsakx.test", root.trust()).await;
    assert_verdict(&r, Status::Warning, Some("legacy_cipher_suite"));
    let tls = r.tls.as_ref().unwrap();
    assert_eq!(
        (tls.version.as_str(), tls.cipher_suite.as_str()),
        ("TLSv1.2", "TLS_RSA_WITH_AES_128_CBC_SHA")
    );
}
