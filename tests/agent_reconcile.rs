//! The reconciler's side of agents, in process: a Reconciler built from a real config and a
//! real store answers the agent API's backend calls. Reports move a deployment (started →
//! running, installed with the wrong leaf refused, installed → verified by probing a real
//! TLS server), a verification that times out asks the agent to roll back, and another
//! agent's reports are refused. Against a real Pebble, a `key = "agent"` certificate is
//! ordered with the agent's CSR and the store keeps no key for it.

use std::sync::Arc;
use std::time::Duration;

use tlsward::agent::AgentBackend;
use tlsward::agent::protocol::{Instruction, KeyMode, Report, ReportEvent};
use tlsward::clock::{Clock, SystemClock};
use tlsward::issuer::{CertificateSpec, ChallengeKind, Http01Responder, Issuer, KeyType};
use tlsward::reconcile::Reconciler;
use tlsward::store::{AgentCsr, DeploymentState, NewVersion, Secret, Store};

use crate::util::cli::open_store;
use crate::util::pebble::Pebble;
use crate::util::{TestCa, TlsServer};

fn now() -> i64 {
    tlsward::clock::unix_seconds(&SystemClock)
}

fn report(endpoint: &str, deployment: i64, event: ReportEvent, sha256: Option<&str>) -> Report {
    Report {
        endpoint: Some(endpoint.into()),
        deployment: Some(deployment),
        event,
        sha256: sha256.map(str::to_owned),
        next_window: None,
        detail: serde_json::json!({ "hook": "pem-files" }),
    }
}

/// Two agent endpoints of agent `web-01` (web1 serving the new leaf, web2 an old one) and
/// one of `web-02`, from a real config, with a version of each certificate in the store.
struct Center {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    reconciler: Arc<Reconciler>,
    /// The version of web1's and web2's certificates (row ids).
    versions: [i64; 2],
    shas: [String; 2],
    _servers: Vec<TlsServer>,
}

async fn center() -> Center {
    center_with(Arc::new(SystemClock), "3s", "").await
}

/// As [`center`], on `clock`, with `verify_timeout`; `web2_window`, when not empty, is the
/// `[window.w]` table web2 deploys in.
async fn center_with(clock: Arc<dyn Clock>, verify_timeout: &str, web2_window: &str) -> Center {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::root("agent-reconcile CA");
    let new1 = ca.leaf(&["web1.test"]).build();
    let new2 = ca.leaf(&["web2.test"]).build();
    let old2 = ca.leaf(&["web2.test"]).build();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let s1 = TlsServer::leaf(&new1).start().await;
    // web2 keeps serving its old leaf whatever the agent reports.
    let s2 = TlsServer::leaf(&old2).start().await;
    let config = format!(
        r#"
[server]
state_dir = "{state}"

[acme]
directory = "https://127.0.0.1:1/dir"
http01_listen = "127.0.0.1:0"

[deploy]
verify_timeout = "{verify_timeout}"
verify_interval = "200ms"

[[certificate]]
name = "web1"
domains = ["web1.test"]

[[certificate]]
name = "web2"
domains = ["web2.test"]

[profile.lab]
ca_files = ["ca.pem"]
system_roots = false

[[target]]
address = "web1.test:{p1}"
profile = "lab"
connect_to = ["127.0.0.1"]

[[target]]
address = "web2.test:{p2}"
profile = "lab"
connect_to = ["127.0.0.1"]

[[endpoint]]
name = "web1"
certificate = "web1"
target = "web1.test:{p1}"

[[endpoint]]
name = "web2"
certificate = "web2"
target = "web2.test:{p2}"
{window_key}
{web2_window}
"#,
        window_key = if web2_window.is_empty() {
            ""
        } else {
            r#"window = "w""#
        },
        state = dir.path().display(),
        p1 = s1.addr.port(),
        p2 = s2.addr.port(),
    );
    let path = dir.path().join("tlsward.toml");
    std::fs::write(&path, &config).unwrap();
    let cfg = tlsward::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut desired = tlsward::daemon::desired(&cfg, cfg.remediation.as_ref().unwrap());
    // Bound to agents (the [[endpoint]] agent key is another area's; set here as it sets it).
    for e in &mut desired.endpoints {
        e.agent = Some("web-01".into());
        e.hook = Some("nginx".into());
    }
    let store = Arc::new(open_store(&dir.path().join("state")));
    let mut versions = [0; 2];
    let mut shas = [String::new(), String::new()];
    for (i, (name, leaf)) in [("web1", &new1), ("web2", &new2)].into_iter().enumerate() {
        store
            .upsert_certificate(
                &tlsward::store::CertificateRow {
                    name: name.into(),
                    domains: vec![format!("{name}.test")],
                    key_type: "ecdsa-p256".into(),
                },
                now(),
            )
            .unwrap();
        let order = store.begin_order(name, None, now()).unwrap();
        let facts = tlsward::cert::CertFacts::parse(leaf.der()).unwrap();
        let key = Secret::new(leaf.key.secret_der().to_vec());
        let chain = crate::util::pem_chain(&leaf.chain);
        let v = store
            .complete_order(
                order,
                &NewVersion {
                    certificate: name,
                    serial: &facts.serial,
                    sha256: &facts.sha256,
                    not_before: facts.not_before.unix_timestamp(),
                    not_after: facts.not_after.unix_timestamp(),
                    chain_pem: &chain,
                    key: &key,
                    ari_id: None,
                },
                now(),
            )
            .unwrap();
        versions[i] = v.id;
        shas[i] = v.sha256;
    }
    let mut reg = prometheus_client::registry::Registry::with_prefix("tlsward");
    let reconciler = Reconciler::new(
        store.clone(),
        desired,
        Http01Responder::new(),
        Arc::new(tlsward::schedule::Results::default()),
        clock,
        Arc::new(tlsward::hooks::Hooks::new(None).unwrap()),
        &mut reg,
    );
    Center {
        dir,
        store,
        reconciler,
        versions,
        shas,
        _servers: vec![s1, s2],
    }
}

async fn wait_state(store: &Store, id: i64, want: DeploymentState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = store.deployment(id).unwrap().unwrap();
        if d.state == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment {id} is {}, not {want}",
            d.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until web2's open deployment tells its agent to roll back, checks that the order
/// and the journaled request both say `why`, and returns the request.
async fn rollback_asked(
    c: &Center,
    backend: &dyn AgentBackend,
    why: &str,
) -> tlsward::store::JournalEntry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let order = loop {
        let order = backend.endpoints_of("web-01")[1]
            .deployment
            .clone()
            .unwrap();
        if order.instruction == Instruction::RollBack {
            break order;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rollback asked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(order.why.as_deref(), Some(why));
    let asked = c
        .store
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .find(|j| j.kind == "deployment.rollback_requested")
        .expect("the rollback request is journaled");
    assert_eq!(asked.detail["why"], why);
    asked
}

/// The agent's `rolled_back` report for web2's deployment `d` ends it so, and its detail
/// keeps why the center asked (`why`).
fn rolled_back(c: &Center, backend: &dyn AgentBackend, d: i64, why: &str) {
    backend
        .report(
            "web-01",
            &report("web2", d, ReportEvent::RolledBack, Some("old")),
        )
        .unwrap();
    assert_eq!(
        c.store.deployment(d).unwrap().unwrap().state,
        DeploymentState::RolledBack
    );
    let detail = c.store.deployment_detail(d).unwrap();
    assert_eq!(detail["rollback_requested"], why, "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_take_a_deployment_to_verified_and_a_timeout_asks_for_a_rollback() {
    let c = center().await;
    let backend: Arc<dyn AgentBackend> = c.reconciler.clone();
    let mut changes = backend.changes("web-01");
    let others = backend.changes("web-02");
    let d1 = c
        .store
        .queue_deployment("web1", c.versions[0], "renewed", None, now())
        .unwrap();
    let d2 = c
        .store
        .queue_deployment("web2", c.versions[1], "manual", None, now())
        .unwrap();

    // The desired state: both endpoints, their versions and orders; web2 ran by hand.
    let state = backend.endpoints_of("web-01");
    let names: Vec<&str> = state.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["web1", "web2"]);
    assert_eq!(state[0].hook, "nginx");
    assert_eq!(state[0].profile, "lab");
    assert_eq!(state[0].key, KeyMode::Central);
    assert_eq!(state[0].version.as_ref().unwrap().sha256, c.shas[0]);
    // The addresses the center connects to, for the agent's local probe.
    assert_eq!(state[0].connect_to.len(), 1);
    assert!(state[0].connect_to[0].ip().is_loopback());
    assert_eq!(
        state[0].target,
        format!("web1.test:{}", state[0].connect_to[0].port())
    );
    let order = state[0].deployment.as_ref().unwrap();
    assert_eq!((order.id, order.instruction), (d1, Instruction::Deploy));
    assert_eq!(
        state[1].deployment.as_ref().unwrap().instruction,
        Instruction::DeployNow
    );
    assert!(backend.endpoints_of("web-02").is_empty());

    // Another agent cannot report for these.
    let stolen = backend.report("web-02", &report("web1", d1, ReportEvent::Started, None));
    assert!(
        matches!(stolen, Err(tlsward::agent::Refusal::Forbidden(_))),
        "{stolen:?}"
    );
    // Nor name another endpoint's deployment.
    let crossed = backend.report("web-01", &report("web1", d2, ReportEvent::Started, None));
    assert!(
        matches!(crossed, Err(tlsward::agent::Refusal::Forbidden(_))),
        "{crossed:?}"
    );
    assert_eq!(
        c.store.deployment(d1).unwrap().unwrap().state,
        DeploymentState::Waiting
    );

    // started → running.
    backend
        .report("web-01", &report("web1", d1, ReportEvent::Started, None))
        .unwrap();
    assert_eq!(
        c.store.deployment(d1).unwrap().unwrap().state,
        DeploymentState::Running
    );
    assert!(
        changes.has_changed().unwrap(),
        "a report wakes the agent's long polls"
    );
    assert!(
        !others.has_changed().unwrap(),
        "another agent's report does not wake this one's"
    );
    changes.borrow_and_update();

    // installed with another leaf's fingerprint is refused and changes nothing.
    let wrong = backend.report(
        "web-01",
        &report("web1", d1, ReportEvent::Installed, Some(&c.shas[1])),
    );
    assert!(
        matches!(wrong, Err(tlsward::agent::Refusal::BadRequest(_))),
        "{wrong:?}"
    );
    assert_eq!(
        c.store.deployment(d1).unwrap().unwrap().state,
        DeploymentState::Running
    );

    // installed → the center probes web1, which serves the new leaf: verified.
    backend
        .report(
            "web-01",
            &report("web1", d1, ReportEvent::Installed, Some(&c.shas[0])),
        )
        .unwrap();
    wait_state(&c.store, d1, DeploymentState::Verified).await;
    let kinds: Vec<String> = c
        .store
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .filter(|j| j.detail["deployment"] == d1)
        .map(|j| j.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "deployment.queued",
            "deployment.running",
            "deployment.installed",
            "deployment.verified"
        ]
    );
    let detail = c.store.deployment_detail(d1).unwrap();
    assert!(
        detail["verification"]["attempts"].as_u64().unwrap() >= 2,
        "{detail}"
    );

    // web2 keeps serving its old leaf: after verify_timeout the agent is told to roll back.
    backend
        .report("web-01", &report("web2", d2, ReportEvent::Started, None))
        .unwrap();
    backend
        .report(
            "web-01",
            &report("web2", d2, ReportEvent::Installed, Some(&c.shas[1])),
        )
        .unwrap();
    let asked = rollback_asked(&c, backend.as_ref(), "verify_timeout").await;
    assert_eq!(
        c.store.deployment(d2).unwrap().unwrap().state,
        DeploymentState::Installed
    );
    assert_eq!(asked.detail["deployment"], d2);
    // The agent's rolled_back report ends it so, saying why.
    rolled_back(&c, backend.as_ref(), d2, "verify_timeout");
    assert!(backend.endpoints_of("web-01")[1].deployment.is_none());
    // A report for a finished deployment is out of step.
    let late = backend.report("web-01", &report("web2", d2, ReportEvent::Failed, None));
    assert!(
        matches!(late, Err(tlsward::agent::Refusal::Conflict(_))),
        "{late:?}"
    );
    drop(c.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_agent_certificate_is_ordered_with_the_agent_s_csr_and_no_key_is_stored() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let responder = Http01Responder::new();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(responder.clone().serve(listener, async {
        let _ = rx.await;
    }));
    let pebble = Pebble::start(port, 3600).await;
    let store = open_store(&pebble.dir.path().join("state"));
    let settings = tlsward::issuer::AcmeSettings {
        directory: pebble.directory.clone(),
        contact: vec![],
        ca_file: Some(pebble.tls_ca_file.clone()),
        eab: None,
        retry: instant_acme::RetryPolicy::new()
            .initial_delay(Duration::from_millis(50))
            .backoff(1.5)
            .timeout(Duration::from_secs(30)),
        dns01: None,
    };
    let clock = SystemClock;
    let issuer = Issuer::connect(settings, &store, responder.clone(), &clock)
        .await
        .unwrap();
    let spec = CertificateSpec {
        name: "web1".into(),
        domains: vec!["web1.tlsward.test".into()],
        key_type: KeyType::EcdsaP256,
        challenge: ChallengeKind::Http01,
        profile: None,
        agent_key: Some("web-01".into()),
    };
    // Without the agent's CSR nothing is ordered.
    assert!(issuer.issue(&spec, &store, &clock, None).await.is_err());
    assert!(store.latest("web1").unwrap().is_none());

    // The agent's key, made on the endpoint; the center sees only its CSR.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["web1.tlsward.test".to_owned()]).unwrap();
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    // A CSR asking for more names is refused before it is kept.
    let wide = rcgen::CertificateParams::new(vec![
        "web1.tlsward.test".to_owned(),
        "bank.tlsward.test".to_owned(),
    ])
    .unwrap()
    .serialize_request(&key)
    .unwrap();
    let refused = tlsward::issuer::check_csr(wide.der(), &spec.domains, spec.key_type).unwrap_err();
    assert!(refused.contains("bank.tlsward.test"), "{refused}");
    store
        .put_agent_csr(&AgentCsr {
            certificate: "web1".into(),
            agent: "web-01".into(),
            nonce: "n1".into(),
            csr_der: csr.clone(),
            received_at: now(),
        })
        .unwrap();
    let v = issuer.issue(&spec, &store, &clock, None).await.unwrap();

    // The leaf certifies the agent's key.
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(v.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    // The store holds no key: the row names the agent, its sealed key is empty, and the
    // CSR is gone with the order done.
    let conn = rusqlite::Connection::open(pebble.dir.path().join("state/tlsward.db")).unwrap();
    let (holder, sealed): (Option<String>, Vec<u8>) = conn
        .query_row(
            "SELECT key_holder, key_sealed FROM versions WHERE id = ?1",
            [v.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(holder.as_deref(), Some("web-01"));
    assert!(sealed.is_empty());
    let pending: Option<Vec<u8>> = conn
        .query_row(
            "SELECT key_sealed FROM orders ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, None, "no key was sealed with the order");
    assert!(store.agent_csr("web1").unwrap().is_none());
    let err = store.version_key(v.id).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the key of this version is held by agent web-01"
    );
    // A backup's check of sealed records skips it rather than failing on it.
    let sealed = store.sealed_keys().unwrap();
    assert!(
        !sealed
            .iter()
            .any(|k| matches!(k, tlsward::store::SealedKey::Version { .. })),
        "{sealed:?}"
    );
}

/// An agent installs web2's version inside its window; web2 keeps serving the old leaf, and
/// the window closes (the test clock moves past it) long before `verify_timeout`: the
/// agent is told to roll back, and the request says the window closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_closing_before_the_new_leaf_is_served_asks_for_a_rollback() {
    let start = SystemClock.now();
    let clock = Arc::new(tlsward::clock::TestClock::at(start));
    // A daily window that opened a minute ago and lasts an hour.
    let opened = time::OffsetDateTime::from(start) - time::Duration::minutes(1);
    let window = format!(
        "[window.w]\ndays = [\"daily\"]\nstart = \"{:02}:{:02}\"\nduration = \"1h\"\n",
        opened.hour(),
        opened.minute()
    );
    let c = center_with(clock.clone(), "1h", &window).await;
    let backend: Arc<dyn AgentBackend> = c.reconciler.clone();
    let d2 = c
        .store
        .queue_deployment("web2", c.versions[1], "renewed", None, now())
        .unwrap();
    let state = backend.endpoints_of("web-01");
    assert_eq!(state[1].window.as_ref().map(|w| w.name.as_str()), Some("w"));
    for (event, sha) in [
        (ReportEvent::Started, None),
        (ReportEvent::Installed, Some(c.shas[1].as_str())),
    ] {
        backend
            .report("web-01", &report("web2", d2, event, sha))
            .unwrap();
    }
    assert_eq!(
        c.store.deployment(d2).unwrap().unwrap().state,
        DeploymentState::Installed
    );
    // Two hours on: the window has closed, the verify timeout (an hour of real time) has not.
    clock.advance(Duration::from_secs(2 * 3600));
    let asked = rollback_asked(&c, backend.as_ref(), "window_closed").await;
    assert!(
        asked.detail["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("window closed")),
        "{}",
        asked.detail
    );
    rolled_back(&c, backend.as_ref(), d2, "window_closed");
    drop(c.dir);
}
