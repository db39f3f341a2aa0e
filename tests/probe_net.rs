//! Probes that fail before the certificate (refused, timeout, not TLS) or around it (mutual
//! TLS, stapled OCSP), and the fixture certificates rcgen cannot make (SHA-1, RSA-1024), the
//! latter served by a real `openssl s_server`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tlsward::cert::{CheckKind, OcspCertStatus, Policy, Status, TrustStore};
use tlsward::clock::TestClock;
use tlsward::probe::{ClientIdentity, Module, ProbeFailure, ProbeReport, Prober, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::probe::{assert_verdict, facts, probe};
use crate::util::{
    OpensslServer, TestCa, TlsServer, fixture, fixture_chain, fixture_time, fixture_trust,
    test_time,
};

fn quick_module(trust: TrustStore, timeout: Duration) -> Module {
    let mut m = Module::new(Arc::new(trust));
    m.timeout = timeout;
    m
}

async fn probe_addr(addr: SocketAddr, name: &str, module: Module, at: SystemTime) -> ProbeReport {
    let mut target: Target = format!("{name}:{}", addr.port()).parse().unwrap();
    target.connect_to = vec![addr];
    Prober::new(module).probe(&target, &TestClock::at(at)).await
}

fn fixture_server(
    cert: &str,
    key: &str,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rustls::pki_types::pem::PemObject;
    let chain = fixture_chain(cert);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(fixture(key)).unwrap();
    (chain, key)
}

#[tokio::test]
async fn connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = probe_addr(
        addr,
        "closed.test",
        quick_module(TrustStore::empty(), Duration::from_secs(2)),
        test_time(),
    )
    .await;
    assert_eq!(r.outcome, Err(ProbeFailure::ConnectRefused));
    assert_eq!(
        (r.status(), r.reason()),
        (Status::Critical, Some("connect_refused"))
    );
    assert_eq!(r.address, Some(addr));
}

#[tokio::test]
async fn connect_timeout_when_the_accept_queue_is_full() {
    // A listener that never accepts, with a backlog of 1 already filled: Linux drops further
    // SYNs, so the next connect hangs exactly like an unreachable host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let timeout = Duration::from_millis(700);
    let started = std::time::Instant::now();
    let r = probe_addr(
        addr,
        "tarpit.test",
        quick_module(TrustStore::empty(), timeout),
        test_time(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.outcome, Err(ProbeFailure::ConnectTimeout(timeout)));
    assert_eq!(r.reason(), Some("connect_timeout"));
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "took {took:?}"
    );
    drop(listener);
}

/// A listener that answers every connection with `reply` and closes.
async fn plain_server(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(reply).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn plain_http_listener_is_not_tls() {
    let addr = plain_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let r = probe_addr(
        addr,
        "http.test",
        quick_module(TrustStore::empty(), Duration::from_secs(3)),
        test_time(),
    )
    .await;
    assert_eq!(r.reason(), Some("not_tls"), "{:?}", r.outcome);
    assert_eq!(r.status(), Status::Critical);
    assert!(r.error().unwrap().contains("does not speak TLS"));
}

#[tokio::test]
async fn ssh_banner_is_not_tls() {
    let addr = plain_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
    let r = probe_addr(
        addr,
        "ssh.test",
        quick_module(TrustStore::empty(), Duration::from_secs(3)),
        test_time(),
    )
    .await;
    assert_eq!(r.reason(), Some("not_tls"), "{:?}", r.outcome);
}

#[tokio::test]
async fn mtls_with_a_client_certificate_is_ok() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["mtls.test"]).build();
    let client_ca = TestCa::root("Client CA");
    // The in-process server judges client certificates by real time, not the test clock.
    let client = client_ca
        .leaf(&["client.test"])
        .client()
        .valid(-365.0, 3650.0)
        .build();
    let server = TlsServer::leaf(&leaf)
        .require_client_cert(&client_ca)
        .start()
        .await;
    let mut module = quick_module(root.trust(), Duration::from_secs(5));
    module.client_identity = Some(Arc::new(
        ClientIdentity::new(client.chain.clone(), client.key.clone_key()).unwrap(),
    ));
    let r = probe_addr(server.addr, "mtls.test", module, test_time()).await;
    assert_verdict(&r, Status::Ok, None);
    let detail = facts(&r)
        .check(CheckKind::Handshake)
        .unwrap()
        .detail
        .clone()
        .unwrap();
    assert_eq!(detail, "client certificate accepted");
}

#[tokio::test]
async fn mtls_without_a_client_certificate_still_reports_the_leaf() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["mtls.test"]).build();
    let client_ca = TestCa::root("Client CA");
    let server = TlsServer::leaf(&leaf)
        .require_client_cert(&client_ca)
        .start()
        .await;
    let r = probe_addr(
        server.addr,
        "mtls.test",
        quick_module(root.trust(), Duration::from_secs(5)),
        test_time(),
    )
    .await;
    assert_verdict(&r, Status::Critical, Some("client_cert_required"));
    assert_eq!(facts(&r).leaf.dns_names, ["mtls.test"]);
    assert!(facts(&r).check(CheckKind::Chain).unwrap().ok());
    assert!(
        r.error().unwrap().contains("none was configured"),
        "{:?}",
        r.error()
    );
}

#[tokio::test]
async fn mtls_with_a_certificate_the_server_does_not_trust_is_rejected() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["mtls.test"]).build();
    let client_ca = TestCa::root("Client CA");
    let wrong = TestCa::root("Wrong CA")
        .leaf(&["client.test"])
        .client()
        .valid(-365.0, 3650.0)
        .build();
    let server = TlsServer::leaf(&leaf)
        .require_client_cert(&client_ca)
        .start()
        .await;
    let mut module = quick_module(root.trust(), Duration::from_secs(5));
    module.client_identity = Some(Arc::new(
        ClientIdentity::new(wrong.chain.clone(), wrong.key.clone_key()).unwrap(),
    ));
    let r = probe_addr(server.addr, "mtls.test", module, test_time()).await;
    assert_verdict(&r, Status::Critical, Some("client_cert_required"));
    assert!(
        r.error()
            .unwrap()
            .contains("rejected the client certificate"),
        "{:?}",
        r.error()
    );
}

#[tokio::test]
async fn stapled_ocsp_good_and_revoked() {
    let (chain, key) = fixture_server("certs/ocsp-leaf.pem", "certs/ocsp-leaf.key");
    for (file, status, reason) in [
        ("certs/ocsp-good.der", OcspCertStatus::Good, None),
        (
            "certs/ocsp-revoked.der",
            OcspCertStatus::Revoked,
            Some("ocsp_revoked"),
        ),
    ] {
        let staple = std::fs::read(fixture(file)).unwrap();
        let server = TlsServer::serve(chain.clone(), key.clone_key())
            .ocsp(staple)
            .start()
            .await;
        let r = probe_addr(
            server.addr,
            "ocsp.test",
            quick_module(fixture_trust(), Duration::from_secs(5)),
            fixture_time(),
        )
        .await;
        let expected = if reason.is_some() {
            Status::Critical
        } else {
            Status::Ok
        };
        assert_verdict(&r, expected, reason);
        let ocsp = facts(&r).ocsp.as_ref().expect("staple parsed");
        assert_eq!(ocsp.status, status, "{file}");
        assert_eq!(
            ocsp.revocation_time.is_some(),
            status == OcspCertStatus::Revoked
        );
    }
}

#[tokio::test]
async fn sha1_signed_leaf_is_a_weak_signature() {
    let (chain, key) = fixture_server("certs/sha1-leaf.pem", "certs/sha1-leaf.key");
    let server = TlsServer::serve(chain, key).start().await;
    let r = probe_addr(
        server.addr,
        "sha1.test",
        quick_module(fixture_trust(), Duration::from_secs(5)),
        fixture_time(),
    )
    .await;
    assert_verdict(&r, Status::Critical, Some("weak_signature"));
    let f = facts(&r);
    assert_eq!(f.leaf.signature_algorithm, "sha1WithRSAEncryption");
    assert!(!f.check(CheckKind::SignatureAlgorithm).unwrap().ok());
    assert!(f.check(CheckKind::Hostname).unwrap().ok());
}

async fn openssl_server(cert: &str, key: &str, extra: &[&str]) -> OpensslServer {
    OpensslServer::start(&fixture(cert), &fixture(key), extra).await
}

#[tokio::test]
async fn rsa_1024_leaf_is_a_weak_key() {
    let server = openssl_server(
        "certs/rsa1024-leaf.pem",
        "certs/rsa1024-leaf.key",
        &[
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256",
        ],
    )
    .await;
    let r = probe_addr(
        server.addr,
        "rsa1024.test",
        quick_module(fixture_trust(), Duration::from_secs(5)),
        fixture_time(),
    )
    .await;
    assert_verdict(&r, Status::Critical, Some("weak_key"));
    let f = facts(&r);
    assert_eq!(f.leaf.public_key.to_string(), "RSA 1024");
    assert!(
        f.check(CheckKind::Chain).unwrap().ok(),
        "the chain itself is valid"
    );
    assert!(
        f.check(CheckKind::KeyStrength)
            .unwrap()
            .detail
            .as_deref()
            .unwrap()
            .contains("below 2048")
    );
}

#[tokio::test]
async fn policy_is_applied_to_probe_reports() {
    // Max validity is enforced only for chains to public roots, so a private CA's long-lived
    // certificate passes with an explanation.
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["long.test"]).valid(-1.0, 400.0).build();
    let server = TlsServer::leaf(&leaf).start().await;
    let r = probe(&server, "long.test", root.trust()).await;
    assert_verdict(&r, Status::Ok, None);
    let detail = facts(&r)
        .check(CheckKind::MaxValidity)
        .unwrap()
        .detail
        .clone()
        .unwrap();
    assert!(
        detail.contains("exceeds") && detail.contains("not applied"),
        "{detail}"
    );
    let _ = Policy::new();
}
