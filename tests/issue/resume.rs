//! Orders a crash interrupted, against a real Pebble: each case of resumption made
//! deterministic by an HTTP client that "dies" at one request (nothing after it reaches the
//! CA, as after a kill -9), then kill -9 of the real `tlsward serve` and `tlsward cert renew`
//! at random moments. Whatever the moment, every certificate Pebble issued ends up stored and
//! no order stays pending.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tlsward::clock::SystemClock;
use tlsward::issuer::{
    AbandonReason, CertificateSpec, ChallengeKind, Http01Responder, Issuer, KeyType, Resumption,
};
use tlsward::store::Store;

use super::{Setup, setup};
use crate::util::cli::open_store;
use crate::util::pebble::{Pebble, normal_serial};
use crate::util::wait::{eventually, within};

fn spec(name: &str, domain: &str) -> CertificateSpec {
    CertificateSpec {
        name: name.into(),
        domains: vec![domain.into()],
        key_type: KeyType::EcdsaP256,
        challenge: ChallengeKind::Http01,
        profile: None,
        agent_key: None,
    }
}

/// Where a simulated crash happens: at the first POST whose path contains `at`.
#[derive(Clone, Copy)]
struct Crash {
    at: &'static str,
    /// Whether that request reaches the CA (its answer is lost either way).
    delivered: bool,
}

/// An HTTP client that passes everything to Pebble until the crash point, where it signals
/// and never answers: the issuance is then dropped mid-flight, so nothing after the crash
/// point runs, in the client or in the store, as after a kill -9.
struct Dying {
    inner: Box<dyn instant_acme::HttpClient>,
    crash: Crash,
    crashed: Arc<tokio::sync::Notify>,
}

impl instant_acme::HttpClient for Dying {
    fn request(
        &self,
        req: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send>,
    > {
        if req.method() == http::Method::POST && req.uri().path().contains(self.crash.at) {
            let sent = self.crash.delivered.then(|| self.inner.request(req));
            let crashed = self.crashed.clone();
            return Box::pin(async move {
                if let Some(sent) = sent {
                    let _ = sent.await;
                }
                crashed.notify_one();
                std::future::pending().await
            });
        }
        self.inner.request(req)
    }
}

/// Runs `spec`'s issuance until it "dies" at `crash`: its order stays pending.
async fn interrupted(s: &Setup, spec: &CertificateSpec, crash: Crash, responder: Http01Responder) {
    let crashed = Arc::new(tokio::sync::Notify::new());
    let http = Box::new(Dying {
        inner: tlsward::issuer::https_client(Some(&s.pebble.tls_ca_file)).unwrap(),
        crash,
        crashed: crashed.clone(),
    });
    let clock = SystemClock;
    let dying = Issuer::connect_with_http(s.settings.clone(), &s.store, responder, &clock, http)
        .await
        .unwrap();
    tokio::select! {
        r = dying.issue(spec, &s.store, &clock, None) => panic!("it did not crash: {r:?}"),
        () = crashed.notified() => {}
    }
    assert_eq!(s.store.pending_orders(Some(&spec.name)).unwrap().len(), 1);
}

async fn issuer(s: &Setup) -> Issuer {
    Issuer::connect(
        s.settings.clone(),
        &s.store,
        s.responder.clone(),
        &SystemClock,
    )
    .await
    .unwrap()
}

fn kinds(store: &Store, certificate: &str) -> Vec<String> {
    store
        .journal_entries(Some(certificate))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Stored serials, in Pebble's form.
fn stored_serials(store: &Store, certificate: &str) -> Vec<String> {
    let mut serials: Vec<String> = store
        .versions(certificate)
        .unwrap()
        .iter()
        .map(|v| normal_serial(&v.serial))
        .collect();
    serials.sort();
    serials
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Killed right after finalize reached the CA: the CA issues, and the next issuance stores
/// that certificate, with the key sealed before finalize was sent, instead of ordering again.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_issued_before_a_crash_is_stored_by_the_next_run() {
    let s = setup().await;
    let spec = spec("issued", "issued.tlsward.test");
    let crash = Crash {
        at: "/finalize-order/",
        delivered: true,
    };
    interrupted(&s, &spec, crash, s.responder.clone()).await;
    let pending = s.store.pending_orders(None).unwrap();
    assert!(pending[0].has_key, "the key is sealed before finalize");
    let sealed = s.store.order_key(pending[0].id).unwrap().unwrap();
    eventually(30, "Pebble to issue", || async {
        s.pebble.issued_serials().len() == 1
    })
    .await;

    let v = issuer(&s)
        .await
        .issue(&spec, &s.store, &SystemClock, None)
        .await
        .unwrap();
    assert_eq!(s.pebble.issued_serials(), [normal_serial(&v.serial)]);
    assert_eq!(s.store.version_key(v.id).unwrap(), sealed);
    assert!(s.store.pending_orders(None).unwrap().is_empty());
    assert_eq!(
        kinds(&s.store, "issued"),
        ["order.started", "order.finalizing", "version.stored"]
    );
    assert!(s.store.check().unwrap().is_empty());
}

/// Killed with the key sealed but before finalize left: the order is ready at the CA, and is
/// finalized with that key.
#[tokio::test(flavor = "multi_thread")]
async fn a_ready_order_is_finalized_with_the_key_sealed_before_the_crash() {
    let s = setup().await;
    let spec = spec("ready", "ready.tlsward.test");
    let crash = Crash {
        at: "/finalize-order/",
        delivered: false,
    };
    interrupted(&s, &spec, crash, s.responder.clone()).await;
    let pending = s.store.pending_orders(None).unwrap();
    let sealed = s.store.order_key(pending[0].id).unwrap().unwrap();
    assert!(s.pebble.issued_serials().is_empty());

    let v = issuer(&s)
        .await
        .issue(&spec, &s.store, &SystemClock, None)
        .await
        .unwrap();
    assert_eq!(s.store.version_key(v.id).unwrap(), sealed);
    assert_eq!(s.pebble.issued_serials(), [normal_serial(&v.serial)]);
    assert!(s.store.pending_orders(None).unwrap().is_empty());
    // One order, finalized once.
    assert_eq!(
        kinds(&s.store, "ready"),
        ["order.started", "order.finalizing", "version.stored"]
    );
}

/// Killed before its challenge was answered: the resumed order answers it and completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_order_has_its_challenges_answered_when_resumed() {
    let s = setup().await;
    let spec = spec("pending", "pending.tlsward.test");
    let crash = Crash {
        at: "/chalZ/",
        delivered: false,
    };
    interrupted(&s, &spec, crash, s.responder.clone()).await;
    assert!(!s.store.pending_orders(None).unwrap()[0].has_key);

    let v = issuer(&s)
        .await
        .issue(&spec, &s.store, &SystemClock, None)
        .await
        .unwrap();
    assert_eq!(s.pebble.issued_serials(), [normal_serial(&v.serial)]);
    assert!(s.store.pending_orders(None).unwrap().is_empty());
    assert_eq!(
        kinds(&s.store, "pending"),
        ["order.started", "order.finalizing", "version.stored"]
    );
}

/// Killed after answering a challenge nobody served: the CA makes the order invalid; it is
/// abandoned with the CA's problem, and only then is a new order placed.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_order_is_abandoned_before_ordering_anew() {
    let s = setup().await;
    let spec = spec("invalid", "invalid.tlsward.test");
    let crash = Crash {
        at: "/chalZ/",
        delivered: true,
    };
    // A responder nobody listens for: Pebble's validation fails.
    interrupted(&s, &spec, crash, Http01Responder::new()).await;
    let url = s.store.pending_orders(None).unwrap()[0]
        .url
        .clone()
        .unwrap();
    // Wait for Pebble's verdict, asked by the account's own key.
    let creds: instant_acme::AccountCredentials = serde_json::from_slice(
        s.store
            .account(&s.settings.directory)
            .unwrap()
            .unwrap()
            .expose(),
    )
    .unwrap();
    let account = instant_acme::Account::builder_with_http(
        tlsward::issuer::https_client(Some(&s.pebble.tls_ca_file)).unwrap(),
    )
    .from_credentials(creds)
    .await
    .unwrap();
    eventually(30, "Pebble to invalidate the order", || {
        let (account, url) = (&account, url.clone());
        async move {
            let mut order = account.order(url).await.unwrap();
            order.state().status == instant_acme::OrderStatus::Invalid
        }
    })
    .await;

    let v = issuer(&s)
        .await
        .issue(&spec, &s.store, &SystemClock, None)
        .await
        .unwrap();
    assert_eq!(s.pebble.issued_serials(), [normal_serial(&v.serial)]);
    let journal = s.store.journal_entries(Some("invalid")).unwrap();
    let kinds: Vec<&str> = journal.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order.started",
            "order.abandoned",
            "order.started",
            "order.finalizing",
            "version.stored"
        ]
    );
    assert_eq!(journal[1].detail["reason"], "invalid");
    assert!(
        journal[1].detail["detail"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")),
        "{}",
        journal[1].detail
    );
    assert!(s.store.pending_orders(None).unwrap().is_empty());
}

/// Orders with nothing to resume from are abandoned, each with its reason; one the CA cannot
/// be asked about yet is kept, and its certificate is not ordered again meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn orders_that_cannot_be_resumed_are_abandoned_with_their_reason() {
    let s = setup().await;
    let clock = SystemClock;
    let issuer = issuer(&s).await;
    let now = tlsward::clock::unix_seconds(&clock);
    let www = spec("www", "www.tlsward.test");
    let stuck = spec("stuck", "stuck.tlsward.test");
    for c in [&www, &stuck] {
        let row = tlsward::store::CertificateRow {
            name: c.name.clone(),
            domains: c.domains.clone(),
            key_type: "ecdsa-p256".into(),
        };
        s.store.upsert_certificate(&row, now).unwrap();
    }
    let dir = s.settings.directory.as_str();
    let base = dir.trim_end_matches("/dir");
    let unreachable = "https://127.0.0.1:1/my-order/gone";
    let week = tlsward::issuer::ORDER_LIFETIME.as_secs() as i64;
    let no_url = s.store.begin_order("www", None, now).unwrap();
    let not_found = s.store.begin_order("www", None, now).unwrap();
    s.store
        .set_order_url(not_found, dir, &format!("{base}/my-order/unknown"))
        .unwrap();
    let elsewhere = s.store.begin_order("www", None, now).unwrap();
    s.store
        .set_order_url(
            elsewhere,
            "https://other-ca.test/dir",
            "https://other-ca.test/o/1",
        )
        .unwrap();
    let old = s.store.begin_order("www", None, now - week - 60).unwrap();
    s.store.set_order_url(old, dir, unreachable).unwrap();
    let recent = s.store.begin_order("stuck", None, now).unwrap();
    s.store.set_order_url(recent, dir, unreachable).unwrap();

    let resumed = issuer
        .resume(&s.store, &clock, &[www.clone(), stuck.clone()])
        .await
        .unwrap();
    let outcome: Vec<(i64, Option<AbandonReason>)> = resumed
        .iter()
        .map(|r| {
            let reason = match &r.outcome {
                Resumption::Abandoned(why) => Some(*why),
                Resumption::Kept(_) => None,
                other => panic!("order {}: {other:?}", r.order.id),
            };
            (r.order.id, reason)
        })
        .collect();
    assert_eq!(
        sorted_pairs(outcome),
        [
            (no_url, Some(AbandonReason::NoUrl)),
            (not_found, Some(AbandonReason::NotFound)),
            (elsewhere, Some(AbandonReason::OtherDirectory)),
            (old, Some(AbandonReason::Expired)),
            (recent, None),
        ]
    );
    let reasons: Vec<String> = s
        .store
        .journal_entries(Some("www"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "order.abandoned")
        .map(|e| e.detail["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["no_url", "not_found", "other_directory", "expired"]
    );

    // The kept order blocks a new one of its certificate: the CA may have issued it.
    let err = issuer
        .issue(&stuck, &s.store, &clock, None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "client", "{err}");
    assert_eq!(s.store.pending_orders(None).unwrap().len(), 1);
    assert_eq!(
        kinds(&s.store, "stuck")
            .iter()
            .filter(|k| *k == "order.started")
            .count(),
        1
    );
    // Nothing stands in the way of the other.
    assert!(issuer.issue(&www, &s.store, &clock, None).await.is_ok());
    assert_eq!(s.pebble.issued_serials().len(), 1);
}

fn sorted_pairs<T>(mut v: Vec<(i64, T)>) -> Vec<(i64, T)> {
    v.sort_by_key(|p| p.0);
    v
}

/// Pebble 2.6 refuses a replacement order for a certificate whose serial has its high bit set
/// (it looks the ARI identifier's serial up without the leading zero DER gives it). This
/// stand-in answers the second new-order request as Pebble 2.6 does then, whatever the serial.
struct RefuseSecondOrder {
    inner: Box<dyn instant_acme::HttpClient>,
    seen: AtomicUsize,
}

impl instant_acme::HttpClient for RefuseSecondOrder {
    fn request(
        &self,
        req: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send>,
    > {
        if req.uri().path().ends_with("/order-plz") && self.seen.fetch_add(1, Ordering::SeqCst) == 1
        {
            return Box::pin(async {
                let (parts, ()) = http::Response::builder()
                    .status(500)
                    .header("content-type", "application/problem+json")
                    .body(())
                    .unwrap()
                    .into_parts();
                let body = br#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"could not find an order for the given certificate: could not find order resulting in the given certificate serial number","status":500}"#;
                Ok(instant_acme::BytesResponse {
                    parts,
                    body: Box::new(bytes::Bytes::from_static(body)),
                })
            });
        }
        self.inner.request(req)
    }
}

/// A renewal the CA will not take as a replacement is ordered again without `replaces`, and
/// the refusal is journaled.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_replacement_is_ordered_without_replaces() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let responder = Http01Responder::new();
    tokio::spawn(responder.clone().serve(listener, std::future::pending()));
    let pebble = Pebble::start_ari(port, 600).await;
    let store = open_store(&pebble.dir.path().join("r"));
    let http = Box::new(RefuseSecondOrder {
        inner: tlsward::issuer::https_client(Some(&pebble.tls_ca_file)).unwrap(),
        seen: AtomicUsize::new(0),
    });
    let clock = SystemClock;
    let issuer = Issuer::connect_with_http(
        super::acme_settings(&pebble),
        &store,
        responder,
        &clock,
        http,
    )
    .await
    .unwrap();
    let spec = spec("renewed", "renewed.tlsward.test");
    let v1 = issuer.issue(&spec, &store, &clock, None).await.unwrap();
    let id = v1.ari_id.clone().unwrap();
    let v2 = issuer
        .issue(&spec, &store, &clock, Some(&id))
        .await
        .unwrap();
    assert_ne!(v1.sha256, v2.sha256);
    let journal = store.journal_entries(Some("renewed")).unwrap();
    let kinds: Vec<&str> = journal.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order.started",
            "order.finalizing",
            "version.stored",
            "order.started",
            "order.replaces_refused",
            "order.finalizing",
            "version.stored"
        ]
    );
    assert_eq!(journal[3].detail["replaces"], id.as_str());
    assert_eq!(journal[4].detail["replaces"], id.as_str());
    assert_eq!(
        journal[4].detail["problem"]["type"],
        "urn:ietf:params:acme:error:serverInternal"
    );
    assert_eq!(pebble.issued_serials().len(), 2);
}

// === the real binary, killed at random moments ===

/// A seeded RNG for the kill moments: `TLSWARD_CRASH_SEED` or a fixed seed, printed so a
/// failing run can be replayed.
fn crash_rng(what: &str) -> fastrand::Rng {
    let seed = std::env::var("TLSWARD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7157_a4d0);
    eprintln!("{what}: kill moments from seed {seed}");
    fastrand::Rng::with_seed(seed)
}

/// When to kill: a random delay after the process started, after it placed a new order, or
/// after it sealed a key and sent finalize (the moments that lose certificates).
#[derive(Debug, Clone, Copy)]
enum Anchor {
    Spawned,
    Ordered,
    Finalizing,
}

impl Anchor {
    fn journal_kind(self) -> Option<&'static str> {
        match self {
            Self::Spawned => None,
            Self::Ordered => Some("order.started"),
            Self::Finalizing => Some("order.finalizing"),
        }
    }

    /// An anchor and a delay after it. The delays are shorter than the waits the process
    /// itself makes after each anchor (it polls the order 250 ms after answering the
    /// challenges, and again 250 ms after finalize), so the kill lands mid-way whatever the
    /// machine's speed.
    fn pick(rng: &mut fastrand::Rng) -> (Self, Duration) {
        match rng.u8(0..3) {
            0 => (Self::Spawned, Duration::from_millis(rng.u64(0..500))),
            1 => (Self::Ordered, Duration::from_millis(rng.u64(0..400))),
            _ => (Self::Finalizing, Duration::from_millis(rng.u64(0..200))),
        }
    }
}

/// Waits (generously, not on speed) for the anchor's journal entry after `since` or for the
/// child to exit by itself; true when the anchor was seen.
async fn wait_for(
    anchor: Anchor,
    store: &Store,
    since: i64,
    child: &mut std::process::Child,
) -> bool {
    let Some(kind) = anchor.journal_kind() else {
        return true;
    };
    // Looked at every 10 ms: the kill that follows must land close after the anchor.
    within(Duration::from_secs(60), Duration::from_millis(10), || {
        let seen = store
            .journal_entries(None)
            .unwrap()
            .iter()
            .any(|e| e.id > since && e.kind == kind);
        let exited = !seen && child.try_wait().unwrap().is_some();
        std::future::ready((seen || exited).then_some(seen))
    })
    .await
    .unwrap_or(false)
}

fn last_journal_id(store: &Store) -> i64 {
    store
        .journal_entries(None)
        .unwrap()
        .last()
        .map_or(0, |e| e.id)
}

/// (issued by Pebble, stored, pending) for `certificate`.
fn figures(pebble: &Pebble, store: &Store, certificate: &str) -> (usize, usize, usize) {
    (
        pebble.issued_serials().len(),
        store.versions(certificate).unwrap().len(),
        store.pending_orders(None).unwrap().len(),
    )
}

fn config(pebble: &Pebble, http01_port: u16, renew_fraction: f64) -> std::path::PathBuf {
    let path = pebble
        .dir
        .path()
        .join(format!("crash-{renew_fraction}.toml"));
    let text = format!(
        "[store]\npath = \"crash/tlsward.db\"\nkey_file = \"crash/store.key\"\n\n[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nhttp01_listen = \"127.0.0.1:{http01_port}\"\nrenew_fraction = {renew_fraction}\n\n[[certificate]]\nname = \"site\"\ndomains = [\"site.tlsward.test\"]\n",
        pebble.directory,
        pebble.tls_ca_file.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Kills `spawn()`'s process at random moments until it was killed mid-way `KILLS` times,
/// in at most three times as many runs; returns how many runs were killed mid-way.
async fn kill_loop(
    what: &str,
    store: &Store,
    mut spawn: impl FnMut() -> std::process::Child,
) -> usize {
    let mut rng = crash_rng(what);
    let mut killed = 0;
    for i in 0..3 * KILLS {
        if killed == KILLS {
            break;
        }
        let (anchor, delay) = Anchor::pick(&mut rng);
        let since = last_journal_id(store);
        let mut child = spawn();
        if wait_for(anchor, store, since, &mut child).await {
            tokio::time::sleep(delay).await;
        }
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        eprintln!("{what}: run {i}: {delay:?} after {anchor:?}: {status}");
    }
    killed
}

/// How many runs of the real binary each loop kills mid-way.
const KILLS: usize = 8;

fn assert_all_issued_are_stored(pebble: &Pebble, store: &Store, what: &str) {
    let issued = sorted(pebble.issued_serials());
    let stored = stored_serials(store, "site");
    let missing: Vec<&String> = issued.iter().filter(|s| !stored.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{what}: issued {issued:?}, stored {stored:?}"
    );
    assert_eq!(
        issued, stored,
        "{what}: stored a certificate Pebble did not issue?"
    );
    assert!(
        store.pending_orders(None).unwrap().is_empty(),
        "{what}: {:?}",
        store.pending_orders(None).unwrap()
    );
    assert!(store.check().unwrap().is_empty());
}

/// `tlsward cert renew` killed -9 at random moments, then run to the end once.
#[tokio::test(flavor = "multi_thread")]
async fn cert_renew_killed_at_random_moments_loses_no_certificate() {
    let port = crate::util::unique_port();
    let pebble = Pebble::start(port, 3600).await;
    let config = config(&pebble, port, 0.34);
    let store = open_store(&pebble.dir.path().join("crash"));
    let killed = kill_loop("cert renew", &store, || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["cert", "renew", "site", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    })
    .await;
    let before = figures(&pebble, &store, "site");
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["cert", "renew", "site", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(done.status.success(), "{done:?}");
    let after = figures(&pebble, &store, "site");
    eprintln!(
        "cert renew: {killed} runs killed mid-way; (issued, stored, pending) before the clean run {before:?}, after {after:?}"
    );
    assert_eq!(killed, KILLS);
    assert_all_issued_are_stored(&pebble, &store, "cert renew");
}

/// `tlsward serve` renewing continuously, killed -9 at random moments, then started once
/// more: at start it resumes what was interrupted.
#[tokio::test(flavor = "multi_thread")]
async fn serve_killed_at_random_moments_loses_no_certificate() {
    let port = crate::util::unique_port();
    let pebble = Pebble::start(port, 3600).await;
    // A renewal due 3.6 s into a 3600 s lifetime: `serve` keeps ordering while it is killed.
    let churn = config(&pebble, port, 0.999);
    let calm = config(&pebble, port, 0.34);
    let store = open_store(&pebble.dir.path().join("crash"));
    let serve = |config: &Path| {
        let listen = format!("127.0.0.1:{}", crate::util::unique_port());
        std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["serve", "--listen", &listen, "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let killed = kill_loop("serve", &store, || serve(&churn)).await;
    let before = figures(&pebble, &store, "site");
    // The clean run: nothing is due, so it only resumes; stopped once nothing is pending.
    let mut child = serve(&calm);
    eventually(120, "serve to resume the interrupted orders", || async {
        let stored = stored_serials(&store, "site").len();
        store.pending_orders(None).unwrap().is_empty()
            && stored >= 1
            && stored >= pebble.issued_serials().len()
    })
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let after = figures(&pebble, &store, "site");
    eprintln!(
        "serve: {killed} runs killed mid-way; (issued, stored, pending) before the clean run {before:?}, after {after:?}"
    );
    assert_eq!(killed, KILLS);
    assert_all_issued_are_stored(&pebble, &store, "serve");
}
