//! The agent API over a real loopback mTLS connection, a real store and a real agent CA,
//! with a fake reconciler behind [`AgentBackend`].

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use super::*;
use crate::agent::protocol::{AgentEndpoint, SignedBundle, VersionRef};
use crate::clock::SystemClock;
use crate::shutdown::Shutdown;
use crate::store::{CertificateRow, KeySource, NewVersion};

/// A reconciler stand-in: `web-01` has the endpoint `www` of certificate `www`.
struct FakeBackend {
    endpoints: Mutex<Vec<AgentEndpoint>>,
    tx: watch::Sender<u64>,
    /// How many times a state was computed.
    looks: std::sync::atomic::AtomicUsize,
}

impl AgentBackend for FakeBackend {
    fn endpoints_of(&self, agent: &str) -> Vec<AgentEndpoint> {
        self.looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if agent == "web-01" {
            self.endpoints.lock().unwrap().clone()
        } else {
            Vec::new()
        }
    }
    fn report(&self, _: &str, _: &Report) -> Result<(), Refusal> {
        Ok(())
    }
    fn csr(&self, _: &str, _: &CsrSubmission, _: &[u8]) -> Result<(), Refusal> {
        Ok(())
    }
    fn changes(&self, _: &str) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

fn endpoint(version: Option<VersionRef>) -> AgentEndpoint {
    AgentEndpoint {
        name: "www".into(),
        certificate: "www".into(),
        target: "127.0.0.1:443".into(),
        server_name: None,
        connect_to: Vec::new(),
        profile: "https".into(),
        hook: "nginx".into(),
        settings: Default::default(),
        window: None,
        key: KeyMode::Central,
        version,
        deployment: None,
        csr_wanted: None,
    }
}

struct Center {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    store: Arc<Store>,
    ca: Arc<AgentCa>,
    backend: Arc<FakeBackend>,
    stop: Shutdown,
}

impl Drop for Center {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

fn now() -> i64 {
    unix_seconds(&SystemClock)
}

async fn center() -> Center {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            &dir.path().join("state/tlsward.db"),
            &KeySource::File(dir.path().join("state/store.key")),
        )
        .unwrap(),
    );
    let ca = Arc::new(AgentCa::load_or_create(&store, now()).unwrap());
    let tls = ca
        .server_config(&["localhost".into(), "127.0.0.1".into()], now())
        .unwrap();
    let (tx, _) = watch::channel(0);
    let backend = Arc::new(FakeBackend {
        endpoints: Mutex::new(vec![endpoint(None)]),
        tx,
        looks: Default::default(),
    });
    let api = Arc::new(AgentApi::new(
        store.clone(),
        ca.clone(),
        backend.clone(),
        Arc::new(SystemClock),
        Duration::from_secs(30 * 86_400),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Shutdown::new();
    tokio::spawn(serve(listener, Limits::new(), tls, api, {
        let s = stop.clone();
        async move { s.wait().await }
    }));
    Center {
        _dir: dir,
        addr,
        store,
        ca,
        backend,
        stop,
    }
}

/// A client identity: the certificate chain and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn connector(ca_pem: &str, identity: Option<&Identity>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Where a client connects, and the CA it trusts.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    ca_pem: String,
}

impl Center {
    fn peer(&self) -> Peer {
        Peer {
            addr: self.addr,
            ca_pem: self.ca.ca_pem().to_owned(),
        }
    }
}

/// One HTTP/1.1 request; the status and body, or the I/O error (a refused handshake).
async fn call(
    c: &Peer,
    identity: Option<&Identity>,
    method: &str,
    path: &str,
    body: &[u8],
    content_length: Option<usize>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let tcp = TcpStream::connect(c.addr).await?;
    let mut tls = connector(&c.ca_pem, identity)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        content_length.unwrap_or(body.len())
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    // A server that answers before reading the whole body may reset the rest.
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, rest.as_bytes().to_vec()))
}

fn token(c: &Center, agent: &str) -> String {
    let t = crate::agent::ca::new_token();
    c.store
        .create_agent_token(
            agent,
            &crate::agent::ca::token_sha256(&t),
            now() + 3600,
            now(),
        )
        .unwrap();
    t
}

fn enroll_body(token: &str) -> (Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let body = EnrollRequest {
        token: token.into(),
        csr_pem: csr.pem().unwrap(),
        age_recipient: age::x25519::Identity::generate().to_public().to_string(),
        version: "0.1.0".into(),
    };
    (serde_json::to_vec(&body).unwrap(), key)
}

/// Enrolls `web-01` with a fresh token; its identity.
async fn enrolled(c: &Center) -> Identity {
    let (body, key) = enroll_body(&token(c, "web-01"));
    let (status, rsp) = call(&c.peer(), None, "POST", "/v1/enroll", &body, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&rsp));
    let rsp: EnrollResponse = serde_json::from_slice(&rsp).unwrap();
    let mut chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(rsp.certificate_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    assert!(!chain.is_empty());
    chain.truncate(1);
    Identity {
        chain,
        key: PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    }
}

fn refusals(c: &Center) -> Vec<serde_json::Value> {
    c.store
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == JOURNAL_REFUSED)
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn a_token_enrolls_once_and_its_identity_is_then_accepted() {
    let c = center().await;
    let t = token(&c, "web-01");
    let (body, _) = enroll_body(&t);
    let (status, rsp) = call(&c.peer(), None, "POST", "/v1/enroll", &body, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&rsp));
    let rsp: EnrollResponse = serde_json::from_slice(&rsp).unwrap();
    assert_eq!(rsp.agent, "web-01");
    assert_eq!(rsp.ca_pem, c.ca.ca_pem());
    assert_eq!(rsp.signing_key, c.ca.signer().public_base64());
    let row = c.store.agent("web-01").unwrap().unwrap();
    assert_eq!(row.identity_not_after, Some(rsp.not_after));
    assert_eq!(row.version.as_deref(), Some("0.1.0"));

    // The same token again: 401, journaled without the token.
    let (body, _) = enroll_body(&t);
    let (status, rsp) = call(&c.peer(), None, "POST", "/v1/enroll", &body, None)
        .await
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&rsp));
    let err: serde_json::Value = serde_json::from_slice(&rsp).unwrap();
    assert_eq!(err["error"], "refused: token already used");
    let refused = refusals(&c);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["agent"], "web-01");
    assert!(!refused[0].to_string().contains(&t));

    // Without a client certificate only enrollment answers.
    let (status, _) = call(&c.peer(), None, "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_state_long_poll_answers_at_once_on_a_change() {
    let c = center().await;
    let id = enrolled(&c).await;
    let (status, rsp) = call(&c.peer(), Some(&id), "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let first: DesiredState = serde_json::from_slice(&rsp).unwrap();
    assert_eq!(first.agent, "web-01");
    assert_eq!(first.endpoints, [endpoint(None)]);
    assert!(
        c.store
            .agent("web-01")
            .unwrap()
            .unwrap()
            .last_seen
            .is_some()
    );

    // A poll with the current etag waits; a new version wakes it with the new state, long
    // before the poll's minute.
    let path = format!("/v1/state?etag={}", first.etag);
    let poll = {
        let peer = c.peer();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = call(&peer, Some(&id), "GET", &path, b"", None).await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = VersionRef {
        id: 7,
        sha256: "ab".repeat(32),
        not_after: 2_000_000_000,
    };
    *c.backend.endpoints.lock().unwrap() = vec![endpoint(Some(v.clone()))];
    c.backend.tx.send_modify(|n| *n += 1);
    let (r, took) = tokio::time::timeout(Duration::from_secs(50), poll)
        .await
        .expect("the poll answered before its deadline")
        .unwrap();
    let (status, rsp) = r.unwrap();
    assert_eq!(status, 200);
    let second: DesiredState = serde_json::from_slice(&rsp).unwrap();
    assert_ne!(second.etag, first.etag);
    assert_eq!(second.endpoints[0].version, Some(v));
    assert!(took < LONG_POLL, "{took:?}");
}

#[tokio::test]
async fn a_bundle_of_another_certificate_is_forbidden_and_journaled() {
    let c = center().await;
    let id = enrolled(&c).await;
    let key = crate::secret::Secret::new(b"not really a key".to_vec());
    let mut ids = Vec::new();
    for cert in ["www", "other"] {
        c.store
            .upsert_certificate(
                &CertificateRow {
                    name: cert.into(),
                    domains: vec![format!("{cert}.test")],
                    key_type: "ecdsa-p256".into(),
                },
                now(),
            )
            .unwrap();
        let leaf = rcgen::CertificateParams::new(vec![format!("{cert}.test")])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let sha = hex::encode(digest::digest(&digest::SHA256, leaf.der()).as_ref());
        let order = c.store.begin_order(cert, None, now()).unwrap();
        let v = NewVersion {
            certificate: cert,
            serial: "01",
            sha256: &sha,
            not_before: now(),
            not_after: now() + 86_400,
            chain_pem: &leaf.pem(),
            key: &key,
            ari_id: None,
        };
        ids.push((c.store.complete_order(order, &v, now()).unwrap().id, sha));
    }
    // Its own certificate's version: signed, for it, with the key sealed to it.
    let (status, rsp) = call(
        &c.peer(),
        Some(&id),
        "GET",
        &format!("/v1/bundle/{}", ids[0].0),
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&rsp));
    let bundle: SignedBundle = serde_json::from_slice(&rsp).unwrap();
    let payload = sign::verify(
        &bundle,
        &c.ca.signer().public_base64(),
        &sign::Expected {
            agent: "web-01",
            certificate: "www",
            version: ids[0].0,
            sha256: &ids[0].1,
        },
    )
    .unwrap();
    assert!(payload.sealed_key.is_some());
    assert!(!String::from_utf8_lossy(&rsp).contains("not really a key"));

    // Another certificate's: 403, journaled with the agent and the reason.
    let (status, rsp) = call(
        &c.peer(),
        Some(&id),
        "GET",
        &format!("/v1/bundle/{}", ids[1].0),
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&rsp));
    let refused = refusals(&c);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["agent"], "web-01");
    assert_eq!(refused[0]["call"], "bundle");
    assert_eq!(refused[0]["reason"], "not this agent's certificate");
}

#[tokio::test]
async fn a_revoked_identity_is_refused_at_once() {
    let c = center().await;
    let id = enrolled(&c).await;
    let (status, _) = call(&c.peer(), Some(&id), "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(c.store.revoke_agent("web-01", now()).unwrap());
    let (status, rsp) = call(&c.peer(), Some(&id), "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&rsp));
    let err: serde_json::Value = serde_json::from_slice(&rsp).unwrap();
    assert_eq!(err["error"], "the client certificate is refused: revoked");
    let refused = refusals(&c);
    assert_eq!(refused[0]["reason"], "revoked");
    assert!(
        refused[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test]
async fn a_held_long_poll_rechecks_revocation_without_writing_last_seen() {
    let c = center().await;
    let id = enrolled(&c).await;
    let (status, rsp) = call(&c.peer(), Some(&id), "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let etag = serde_json::from_slice::<DesiredState>(&rsp).unwrap().etag;
    let seen = || c.store.agent("web-01").unwrap().unwrap().last_seen;
    let first = seen().expect("the agent's first call wrote last_seen at once");
    let looks = || c.backend.looks.load(std::sync::atomic::Ordering::SeqCst);
    let path = format!("/v1/state?etag={etag}");
    let polled_at = now();
    let poll = {
        let peer = c.peer();
        tokio::spawn(async move { call(&peer, Some(&id), "GET", &path, b"", None).await })
    };
    // Over two rechecks of the held poll, nothing is written for the waiting agent
    // (1,000 held polls would otherwise be 200 store writes a second), and its state is
    // not computed again (nothing changed).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = looks();
    tokio::time::sleep(RECHECK_EVERY * 2).await;
    assert!(!poll.is_finished(), "the poll is still held");
    // The poll's own request is a sighting, written at the next flush with its own time;
    // nothing later is written while it is held.
    let last = seen().unwrap();
    assert!(
        (first..=polled_at).contains(&last),
        "last_seen {last}, the poll began at {polled_at}"
    );
    assert_eq!(looks(), held, "a recheck computed the state again");
    // The recheck still refuses a revocation long before the poll's minute.
    assert!(c.store.revoke_agent("web-01", now()).unwrap());
    let (status, rsp) = tokio::time::timeout(RECHECK_EVERY * 4, poll)
        .await
        .expect("the held poll answered at its next recheck")
        .unwrap()
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&rsp));
    assert_eq!(refusals(&c)[0]["reason"], "revoked");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_gets_nothing() {
    let c = center().await;
    let _ = enrolled(&c).await;
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "web-01");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&other_key).unwrap();
    let forged = Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::from_pem_slice(other_key.serialize_pem().as_bytes()).unwrap(),
    };
    match call(&c.peer(), Some(&forged), "GET", "/v1/state", b"", None).await {
        Err(_) => {}
        Ok((status, _)) => assert_eq!(status, 401),
    }
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused_with_413() {
    let c = center().await;
    // Announced too long: refused before it is read.
    let (status, _) = call(
        &c.peer(),
        None,
        "POST",
        "/v1/enroll",
        b"{}",
        Some(MAX_BODY + 1),
    )
    .await
    .unwrap();
    assert_eq!(status, 413);
    // Sent too long in chunks... announced as is: read up to the cap and refused.
    let id = enrolled(&c).await;
    let big = vec![b' '; MAX_BODY + 10];
    let (status, rsp) = call(&c.peer(), Some(&id), "POST", "/v1/report", &big, None)
        .await
        .unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&rsp));
    // A malformed body: 400 with a JSON error.
    let (status, rsp) = call(
        &c.peer(),
        Some(&id),
        "POST",
        "/v1/report",
        b"{\"event\":1}",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_slice(&rsp).unwrap();
    assert!(err["error"].as_str().unwrap().starts_with("malformed body"));
}

#[tokio::test]
async fn sightings_after_the_first_are_written_together_at_the_next_flush() {
    let c = center().await;
    let id = enrolled(&c).await;
    let seen = || c.store.agent("web-01").unwrap().unwrap().last_seen.unwrap();
    let (status, _) = call(&c.peer(), Some(&id), "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let first = seen();
    // A second later (last_seen has whole seconds), another call: written by the flush,
    // within a few of its periods.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = now();
    let (status, _) = call(&c.peer(), Some(&id), "GET", "/v1/state", b"", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(again > first);
    let deadline = tokio::time::Instant::now() + RECHECK_EVERY * 12;
    while seen() < again {
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_seen {} never reached {again}",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
