//! The center's agent API: HTTPS with mutual TLS on `[agents] listen`, the routes of
//! [`super::protocol`]'s table.
//!
//! Owns: the identity check of every request (the SHA-256 of the presented leaf must be the
//! identity the store holds for an agent that is not revoked, else 401, journaled), token
//! enrollment and identity renewal through the [`AgentCa`], the long poll of the desired
//! state on [`AgentBackend::changes`], signed bundles (a central key sealed to the agent's
//! own age recipient), bounded bodies and JSON errors. Knows the store and the backend trait;
//! not the reconciler. Never logs tokens, keys or bodies: refusals are journaled with the
//! reason and the peer's address only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::digest;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::ca::AgentCa;
use super::protocol::{
    BundlePayload, CsrSubmission, DesiredState, EnrollRequest, EnrollResponse, KeyMode, LONG_POLL,
    MAX_BODY, RenewRequest, RenewResponse, Report,
};
use super::{AgentBackend, Refusal, sign};
use crate::clock::{Clock, unix_seconds};
use crate::listen::{Limits, PeerAddr, PeerCertificates};
use crate::store::{Store, TokenRefusal};

/// The journal kind of every refused request.
pub const JOURNAL_REFUSED: &str = "agent.refused";
/// The journal kind of an identity renewal.
pub const JOURNAL_RENEWED: &str = "agent.identity_renewed";
/// How often the store is looked at for revocations (the CLI revokes in the store from
/// another process; a held long poll must not outlive its identity): one query for every
/// agent, and held polls recheck their own identity only when it changed.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// The longest agent version string kept (it becomes a label, escaped).
const MAX_VERSION: usize = 64;

type Answer = Response<Full<Bytes>>;

/// What the agent API serves from: the store, the agent CA, the reconciler's side.
pub struct AgentApi {
    store: Arc<Store>,
    ca: Arc<AgentCa>,
    backend: Arc<dyn AgentBackend>,
    clock: Arc<dyn Clock>,
    identity_lifetime: Duration,
    long_poll: Duration,
    /// The agents seen by this process, each with the `last_seen` still to be written
    /// (`None`: written). An agent's first request is written at once; later ones every
    /// [`RECHECK_EVERY`], all in one transaction, so 1,000 agents polling once a minute are
    /// not 17 synchronous writes a second.
    touched: Mutex<HashMap<String, Option<i64>>>,
    /// Bumped when the store's [`Store::revocation_stamp`] changes.
    revocations: watch::Sender<u64>,
}

impl std::fmt::Debug for AgentApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentApi")
            .field("identity_lifetime", &self.identity_lifetime)
            .field("long_poll", &self.long_poll)
            .finish_non_exhaustive()
    }
}

/// Serves the agent API on `listener` with `tls` (from [`AgentCa::server_config`]) under
/// `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<AgentApi>,
    shutdown: impl Future<Output = ()>,
) {
    let watch = api.clone();
    let handler = move |req: Request<Incoming>| {
        let api = api.clone();
        async move { api.handle(req).await }
    };
    tokio::select! {
        () = crate::listen::serve(listener, limits, Some(tls), handler, shutdown) => {}
        () = watch.every_few_seconds() => {}
    }
}

/// A refusal on its way to the agent: the status and a message (shown escaped).
struct Failure {
    status: StatusCode,
    message: String,
}

fn fail(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        warn!(error = %e, "the agent API cannot use the store");
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the center's store failed",
        )
    }
}

impl AgentApi {
    /// The API over `store`, `ca` and `backend`; client certificates live
    /// `identity_lifetime`; long polls wait [`LONG_POLL`].
    pub fn new(
        store: Arc<Store>,
        ca: Arc<AgentCa>,
        backend: Arc<dyn AgentBackend>,
        clock: Arc<dyn Clock>,
        identity_lifetime: Duration,
    ) -> Self {
        Self {
            store,
            ca,
            backend,
            clock,
            identity_lifetime,
            long_poll: LONG_POLL,
            touched: Mutex::new(HashMap::new()),
            revocations: watch::Sender::new(0),
        }
    }

    /// Every [`RECHECK_EVERY`] for as long as the API serves: writes the `last_seen` of the
    /// agents seen since, and looks at the store's revocation stamp, waking the held long
    /// polls when it changed.
    async fn every_few_seconds(&self) {
        let mut last = None;
        let mut every = tokio::time::interval(RECHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.flush_seen();
            match self.store.revocation_stamp() {
                Ok(stamp) if last != Some(stamp) => {
                    if last.is_some() {
                        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    last = Some(stamp);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot look for revoked agents"),
            }
        }
    }

    /// Overrides [`LONG_POLL`] (tests).
    #[must_use]
    pub fn with_long_poll(mut self, d: Duration) -> Self {
        self.long_poll = d;
        self
    }

    async fn handle(&self, req: Request<Incoming>) -> Answer {
        match self.route(req).await {
            Ok(rsp) => rsp,
            Err(f) => error_response(f.status, &f.message),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Answer, Failure> {
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        let leaf = req
            .extensions()
            .get::<PeerCertificates>()
            .and_then(|c| c.0.first().cloned());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        if method == Method::POST && path == "/v1/enroll" {
            let body: EnrollRequest = read_json(req).await?;
            return self.enroll(body, peer);
        }
        let Some(leaf) = leaf else {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "a client certificate from the agent CA is needed",
            ));
        };
        let agent = self.identify(leaf.as_ref(), peer)?;
        match (method, path.as_str()) {
            (Method::GET, "/v1/state") => {
                let etag = query.as_deref().and_then(etag_of);
                let state = self
                    .state(&agent, leaf.as_ref(), peer, etag.as_deref())
                    .await?;
                Ok(json_response(StatusCode::OK, &state))
            }
            (Method::GET, p) if p.starts_with("/v1/bundle/") => {
                let id = p["/v1/bundle/".len()..]
                    .parse::<i64>()
                    .map_err(|_| fail(StatusCode::NOT_FOUND, "no such version"))?;
                self.bundle(&agent, id, peer)
            }
            (Method::POST, "/v1/report") => {
                let report: Report = read_json(req).await?;
                self.refused(&agent, peer, "report", self.backend.report(&agent, &report))?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            (Method::POST, "/v1/csr") => {
                let sub: CsrSubmission = read_json(req).await?;
                let der = csr_der(&sub.csr_pem)?;
                self.refused(&agent, peer, "csr", self.backend.csr(&agent, &sub, &der))?;
                Ok(empty(StatusCode::ACCEPTED))
            }
            (Method::POST, "/v1/identity") => {
                let body: RenewRequest = read_json(req).await?;
                self.renew(&agent, &body)
            }
            _ => Err(fail(StatusCode::NOT_FOUND, "no such call")),
        }
    }

    /// The agent whose identity `leaf` is, or a journaled 401.
    fn identify(&self, leaf: &[u8], peer: Option<SocketAddr>) -> Result<String, Failure> {
        self.identify_as(leaf, peer, true)
    }

    /// As `identify`; `touch` false only reads (a held long poll's recheck: the store is
    /// read, and `last_seen` is written by the agent's next request, not every few seconds
    /// by every waiting poll).
    fn identify_as(
        &self,
        leaf: &[u8],
        peer: Option<SocketAddr>,
        touch: bool,
    ) -> Result<String, Failure> {
        let sha256 = hex::encode(digest::digest(&digest::SHA256, leaf).as_ref());
        let now = unix_seconds(self.clock.as_ref());
        let why = match self.store.agent_by_identity(&sha256)? {
            None => "unknown identity",
            Some(row) if row.revoked_at.is_some() => "revoked",
            Some(row) if row.identity_sha256.as_deref() != Some(sha256.as_str()) => {
                "replaced identity"
            }
            Some(row) => {
                if touch {
                    self.touch(&row.name, row.version.as_deref().unwrap_or(""), now)?;
                }
                return Ok(row.name);
            }
        };
        self.journal_refusal(None, peer, why, "identity");
        Err(fail(
            StatusCode::UNAUTHORIZED,
            format!("the client certificate is refused: {why}"),
        ))
    }

    /// Notes that `agent` was seen `now`: written at once the first time, else at the next
    /// flush.
    fn touch(&self, agent: &str, version: &str, now: i64) -> Result<(), Failure> {
        {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pending) = touched.get_mut(agent) {
                *pending = Some(pending.map_or(now, |at| at.max(now)));
                return Ok(());
            }
            touched.insert(agent.to_owned(), None);
        }
        self.store.touch_agent(agent, version, now)?;
        Ok(())
    }

    /// Writes the `last_seen` still pending, in one transaction.
    fn flush_seen(&self) {
        let seen: Vec<(String, i64)> = self
            .touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .filter_map(|(agent, pending)| pending.take().map(|at| (agent.clone(), at)))
            .collect();
        if seen.is_empty() {
            return;
        }
        if let Err(e) = self.store.agents_seen(&seen) {
            warn!(error = %e, agents = seen.len(), "cannot record when agents were last seen");
        }
    }

    fn journal_refusal(
        &self,
        agent: Option<&str>,
        peer: Option<SocketAddr>,
        why: &str,
        call: &str,
    ) {
        let now = unix_seconds(self.clock.as_ref());
        let detail = json!({
            "agent": agent,
            "reason": why,
            "call": call,
            "peer": peer.map(|p| p.to_string()),
        });
        debug!(agent, reason = why, call, peer = ?peer, "agent request refused");
        if let Err(e) = self.store.journal(now, JOURNAL_REFUSED, None, &detail) {
            warn!(error = %e, "cannot journal a refused agent request");
        }
    }

    /// Maps a backend refusal to its status, journaling a 403.
    fn refused(
        &self,
        agent: &str,
        peer: Option<SocketAddr>,
        call: &str,
        r: Result<(), Refusal>,
    ) -> Result<(), Failure> {
        match r {
            Ok(()) => Ok(()),
            Err(Refusal::BadRequest(m)) => Err(fail(StatusCode::BAD_REQUEST, m)),
            Err(Refusal::Conflict(m)) => Err(fail(StatusCode::CONFLICT, m)),
            Err(Refusal::Forbidden(m)) => {
                self.journal_refusal(Some(agent), peer, &m, call);
                Err(fail(StatusCode::FORBIDDEN, m))
            }
        }
    }

    fn enroll(&self, body: EnrollRequest, peer: Option<SocketAddr>) -> Result<Answer, Failure> {
        let recipient = body.age_recipient.trim();
        if recipient.parse::<age::x25519::Recipient>().is_err() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "age_recipient is not an age X25519 recipient (age1...)",
            ));
        }
        let der = csr_der(&body.csr_pem)?;
        let version = bounded_version(&body.version);
        let now = unix_seconds(self.clock.as_ref());
        let hash = super::ca::token_sha256(&body.token);
        let agent = match self.store.consume_agent_token(&hash, now)? {
            Ok(agent) => agent,
            // The store journaled it (`agent.refused` with the reason, never the token).
            Err(refusal) => {
                let why = match refusal {
                    TokenRefusal::Unknown => "unknown token",
                    TokenRefusal::Used => "token already used",
                    TokenRefusal::Expired => "token expired",
                };
                debug!(peer = ?peer, reason = why, "enrollment refused");
                return Err(fail(StatusCode::UNAUTHORIZED, format!("refused: {why}")));
            }
        };
        let issued = self
            .ca
            .issue_client(&agent, &der, self.identity_lifetime, now)
            .map_err(|e| {
                self.journal_refusal(Some(&agent), peer, "bad CSR", "enroll");
                fail(StatusCode::BAD_REQUEST, format!("the CSR is refused: {e}"))
            })?;
        self.store.enroll_agent(
            &agent,
            &issued.sha256,
            issued.not_after,
            recipient,
            &version,
            now,
        )?;
        // `enroll_agent` journals `agent.enrolled`.
        info!(agent = %agent, "agent enrolled");
        Ok(json_response(
            StatusCode::OK,
            &EnrollResponse {
                agent,
                certificate_pem: issued.certificate_pem,
                ca_pem: self.ca.ca_pem().to_owned(),
                signing_key: self.ca.signer().public_base64(),
                not_after: issued.not_after,
            },
        ))
    }

    fn renew(&self, agent: &str, body: &RenewRequest) -> Result<Answer, Failure> {
        let der = csr_der(&body.csr_pem)?;
        let now = unix_seconds(self.clock.as_ref());
        let issued = self
            .ca
            .issue_client(agent, &der, self.identity_lifetime, now)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("the CSR is refused: {e}")))?;
        self.store
            .renew_agent_identity(agent, &issued.sha256, issued.not_after, now)?;
        self.store
            .touch_agent(agent, &bounded_version(&body.version), now)?;
        let detail = json!({"agent": agent, "identity_not_after": issued.not_after});
        if let Err(e) = self.store.journal(now, JOURNAL_RENEWED, None, &detail) {
            warn!(error = %e, "cannot journal an identity renewal");
        }
        Ok(json_response(
            StatusCode::OK,
            &RenewResponse {
                certificate_pem: issued.certificate_pem,
                not_after: issued.not_after,
            },
        ))
    }

    /// The agent's desired state: at once when it differs from `etag`, else when it changes
    /// or after the long poll.
    async fn state(
        &self,
        agent: &str,
        leaf: &[u8],
        peer: Option<SocketAddr>,
        etag: Option<&str>,
    ) -> Result<DesiredState, Failure> {
        // Subscribed before the first look, so a change in between is not missed.
        let mut changes = self.backend.changes(agent);
        let mut revocations = self.revocations.subscribe();
        // Up to a tenth shorter, at random: polls that began together (all of a fleet after
        // one change) do not all come back in the same instant a minute later.
        let deadline = tokio::time::sleep(self.long_poll.mul_f64(1.0 - fastrand::f64() / 10.0));
        tokio::pin!(deadline);
        changes.borrow_and_update();
        revocations.borrow_and_update();
        // Computed (from the store) only at the start and after a change of this agent's:
        // a held poll with nothing changed costs nothing but its connection.
        let mut state = desired_state(agent, self.backend.endpoints_of(agent));
        let mut backend_gone = false;
        loop {
            if etag != Some(state.etag.as_str()) {
                return Ok(state);
            }
            tokio::select! {
                () = &mut deadline => return Ok(state),
                changed = changes.changed(), if !backend_gone => {
                    if changed.is_err() {
                        // The backend is gone: answer at the deadline with what there is.
                        backend_gone = true;
                        continue;
                    }
                    changes.borrow_and_update();
                    state = desired_state(agent, self.backend.endpoints_of(agent));
                }
                Ok(()) = revocations.changed() => {
                    revocations.borrow_and_update();
                    // Revoked (or replaced) while waiting: refused now, not at the next call.
                    self.identify_as(leaf, peer, false)?;
                }
            }
        }
    }

    /// A version of one of the agent's certificates, signed; anything else a journaled 403.
    fn bundle(&self, agent: &str, id: i64, peer: Option<SocketAddr>) -> Result<Answer, Failure> {
        let version = self.store.version_by_id(id)?;
        let endpoints = self.backend.endpoints_of(agent);
        let mine = version.as_ref().and_then(|v| {
            endpoints
                .iter()
                .find(|e| e.certificate == v.certificate)
                .map(|e| e.key)
        });
        let (Some(version), Some(key)) = (version, mine) else {
            self.journal_refusal(Some(agent), peer, "not this agent's certificate", "bundle");
            return Err(fail(
                StatusCode::FORBIDDEN,
                format!("version {id} is not of a certificate of this agent's endpoints"),
            ));
        };
        let sealed_key = match key {
            KeyMode::Agent => None,
            KeyMode::Central => {
                let recipient = self
                    .store
                    .agent(agent)?
                    .and_then(|r| r.age_recipient)
                    .ok_or_else(|| fail(StatusCode::CONFLICT, "this agent has no age recipient"))?;
                let key = self.store.version_key(id)?;
                Some(sign::seal_to(&recipient, &key).map_err(|e| {
                    warn!(agent, error = %e, "cannot seal a key to an agent");
                    fail(StatusCode::INTERNAL_SERVER_ERROR, "cannot seal the key")
                })?)
            }
        };
        let payload = BundlePayload {
            agent: agent.to_owned(),
            certificate: version.certificate.clone(),
            version: version.id,
            sha256: version.sha256.clone(),
            chain_pem: version.chain_pem.clone(),
            key,
            sealed_key,
            signed_at: unix_seconds(self.clock.as_ref()),
        };
        Ok(json_response(
            StatusCode::OK,
            &self.ca.signer().sign(&payload),
        ))
    }
}

/// The desired state with its etag: the SHA-256 of the endpoints' JSON.
fn desired_state(agent: &str, endpoints: Vec<super::protocol::AgentEndpoint>) -> DesiredState {
    let body = serde_json::to_vec(&endpoints).unwrap_or_default();
    DesiredState {
        etag: hex::encode(digest::digest(&digest::SHA256, &body).as_ref()),
        agent: agent.to_owned(),
        endpoints,
    }
}

/// `etag=E` from a query string (64 hex digits at most are kept).
fn etag_of(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.chars().take(64).collect())
}

/// A version string as kept: visible characters only, bounded.
fn bounded_version(v: &str) -> String {
    crate::escape::visible_within(v, MAX_VERSION).into_owned()
}

fn csr_der(pem: &str) -> Result<Vec<u8>, Failure> {
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| {
            fail(
                StatusCode::BAD_REQUEST,
                "csr_pem is not a PEM certificate request",
            )
        })
}

/// The body as JSON, refused over [`MAX_BODY`] (413) or malformed (400).
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Failure> {
    let too_big = || {
        fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .is_none_or(|l| l > MAX_BODY as u64)
    {
        return Err(too_big());
    }
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_big()
            } else {
                fail(StatusCode::BAD_REQUEST, "the body could not be read")
            }
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        // serde's message names the field and position, never the value's bytes at length.
        fail(StatusCode::BAD_REQUEST, format!("malformed body: {e}"))
    })
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut rsp = Response::new(Full::new(Bytes::from(bytes)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn error_response(status: StatusCode, message: &str) -> Answer {
    json_response(
        status,
        &json!({"error": crate::escape::visible_within(message, 512)}),
    )
}

fn empty(status: StatusCode) -> Answer {
    let mut rsp = Response::new(Full::new(Bytes::new()));
    *rsp.status_mut() = status;
    rsp
}

#[cfg(test)]
mod tests;
