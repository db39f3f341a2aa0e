//! A stand-in for a network appliance with a certificate API (the contract the stock
//! `http-appliance` hook speaks): an HTTPS API on 127.0.0.1 that takes an uploaded
//! certificate, activates it in a job the client polls, and then serves it on the appliance's
//! data-plane TLS listener, which is what a re-probe checks.
//!
//! The API, every call with `Authorization: Bearer <token>` (else 401):
//! - `POST /api/v1/certificates`, body `application/x-pkcs12` (passphrase in `X-Passphrase`)
//!   or `application/x-pem-file` (leaf, chain and PKCS#8/SEC1/RSA key) → 201 `{"id":"c1"}`;
//!   400 when it cannot be read or the key does not match the leaf, 413 over 1 MiB.
//! - `POST /api/v1/certificates/{id}/activate` → 202 `{"job":"j1"}` (404 for an unknown id).
//! - `GET /api/v1/jobs/{job}` → `{"state":"running"}` twice, then the job finishes as the
//!   [`ApplianceMode`] says: `done`, or `failed` with a `message`.
//! - `GET /api/v1/certificates/active` → `{"sha256":"<hex of the active leaf>"}`.
//!
//! Errors are JSON `{"error":"..."}`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use tlsward::cert::sha256_hex;

use super::{Leaf, ServerSpec, TlsServer};

/// The largest upload the appliance takes.
pub const MAX_UPLOAD: usize = 1 << 20;

/// How many polls of a job answer `running` before it finishes.
const RUNNING_POLLS: u32 = 2;

/// How the appliance finishes an activation job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplianceMode {
    /// The job is `done` and the data plane serves the new certificate.
    Honest,
    /// The job is `failed` ("certificate rejected by policy"); nothing changes.
    RejectActivation,
    /// The job is `done` and `/certificates/active` claims the new certificate, but the data
    /// plane keeps serving the old one: only a probe of the data plane finds out.
    Lying,
}

/// One upload that got past authentication, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The request's `Content-Type`, as sent.
    pub content_type: String,
    /// For PKCS#12: whether `X-Passphrase` opened it. None for other content types.
    pub passphrase_ok: Option<bool>,
    /// The uploaded leaf's SHA-256 when the upload was accepted.
    pub sha256: Option<String>,
    /// The status the appliance answered.
    pub status: u16,
}

/// A certificate the appliance holds.
struct Stored {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// An activation job: which certificate, how often polled, how it ended.
struct Job {
    cert: usize,
    polls: u32,
    finished: Option<Value>,
}

#[derive(Default)]
struct State {
    certs: Vec<Stored>,
    jobs: Vec<Job>,
    uploads: Vec<Upload>,
    /// What `/certificates/active` reports (a lying appliance claims what it never serves).
    claimed: String,
}

struct Shared {
    token: String,
    mode: Mutex<ApplianceMode>,
    data_plane: TlsServer,
    state: Mutex<State>,
}

/// A running appliance; both listeners stop when it is dropped.
pub struct Appliance {
    api_addr: SocketAddr,
    api_task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.api_task.abort();
    }
}

impl Appliance {
    /// Starts the API (HTTPS with `api_leaf`'s chain) and the data plane (serving
    /// `data_plane` until an activation), both on 127.0.0.1, accepting `token`.
    pub async fn start(
        api_leaf: &Leaf,
        data_plane: ServerSpec,
        token: &str,
        mode: ApplianceMode,
    ) -> Self {
        let claimed = sha256_hex(&data_plane.chain[0]);
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            mode: Mutex::new(mode),
            data_plane: data_plane.start().await,
            state: Mutex::new(State {
                claimed,
                ..State::default()
            }),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(api_leaf.chain.clone(), api_leaf.key.clone_key())
            .expect("API certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api_addr = listener.local_addr().expect("addr");
        let served = shared.clone();
        let api_task = tokio::spawn(async move {
            // Connections live in this set, so aborting the task (on drop) ends them too,
            // and with them the last references to the data plane.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let (acceptor, shared) = (acceptor.clone(), served.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, hyper::Error>(shared.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            api_addr,
            api_task,
            shared,
        }
    }

    /// The API's address (HTTPS).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Changes how later activations behave (an appliance that starts lying).
    pub fn set_mode(&self, mode: ApplianceMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// The API's port on 127.0.0.1.
    pub fn api_port(&self) -> u16 {
        self.api_addr.port()
    }

    /// The data-plane TLS listener, as a probe sees it.
    pub fn data_plane(&self) -> &TlsServer {
        &self.shared.data_plane
    }

    /// The data-plane port on 127.0.0.1.
    pub fn data_port(&self) -> u16 {
        self.shared.data_plane.addr.port()
    }

    /// Every upload that got past authentication, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.state.lock().unwrap().uploads.clone()
    }

    /// The SHA-256 of the leaf the API reports as active (for a lying appliance, not the one
    /// the data plane serves).
    pub fn active_sha256(&self) -> String {
        self.shared.state.lock().unwrap().claimed.clone()
    }

    /// The SHA-256 of the leaf the data plane really serves now.
    pub fn serving_sha256(&self) -> String {
        sha256_hex(&self.shared.data_plane.cert.0.read().unwrap().cert[0])
    }
}

/// A JSON response.
fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": message.to_string() }))
}

/// A certificate chain and key from an upload body, checked to belong together; and, for
/// PKCS#12, whether the passphrase opened it.
fn parse_upload(
    content_type: &str,
    passphrase: &str,
    body: &[u8],
) -> (Option<bool>, Result<Stored, String>) {
    // The media type, without parameters such as `; charset=...`.
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    match media_type.to_ascii_lowercase().as_str() {
        "application/x-pkcs12" => {
            let policy = p12_keystore::Pkcs12ImportPolicy::Relaxed;
            match p12_keystore::KeyStore::from_pkcs12(body, passphrase, policy) {
                Err(e) => (Some(false), Err(format!("cannot open PKCS#12: {e}"))),
                Ok(store) => (Some(true), from_pkcs12(&store).and_then(checked)),
            }
        }
        "application/x-pem-file" => (None, from_pem(body).and_then(checked)),
        other => (None, Err(format!("unsupported content type {other:?}"))),
    }
}

fn from_pkcs12(store: &p12_keystore::KeyStore) -> Result<Stored, String> {
    let (_, found) = store
        .private_key_chain()
        .ok_or("no private key in the PKCS#12")?;
    Ok(Stored {
        chain: found
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect(),
        key: PrivatePkcs8KeyDer::from(found.key().as_der().to_vec()).into(),
    })
}

fn from_pem(body: &[u8]) -> Result<Stored, String> {
    Ok(Stored {
        chain: CertificateDer::pem_slice_iter(body)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad PEM certificate: {e}"))?,
        key: PrivateKeyDer::from_pem_slice(body)
            .map_err(|e| format!("no usable private key in the PEM: {e}"))?,
    })
}

/// Refuses an upload without a certificate or whose key is not the leaf's.
fn checked(stored: Stored) -> Result<Stored, String> {
    if stored.chain.is_empty() {
        return Err("no certificate in the upload".into());
    }
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(stored.chain.clone(), stored.key.clone_key(), &provider)
        .map_err(|e| format!("key and certificate do not match: {e}"))?;
    Ok(stored)
}

impl Shared {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        if header("authorization") != format!("Bearer {}", self.token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
        match (&method, parts.as_slice()) {
            (&Method::POST, ["certificates"]) => {
                let (content_type, passphrase) = (header("content-type"), header("x-passphrase"));
                let body = match Limited::new(req.into_body(), MAX_UPLOAD).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "upload over 1 MiB"),
                };
                self.upload(content_type, &passphrase, &body)
            }
            (&Method::POST, ["certificates", id, "activate"]) => self.activate(id),
            (&Method::GET, ["certificates", "active"]) => {
                let sha256 = self.state.lock().unwrap().claimed.clone();
                reply(StatusCode::OK, json!({ "sha256": sha256 }))
            }
            (&Method::GET, ["jobs", job]) => self.poll(job),
            _ => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
        }
    }

    fn upload(&self, content_type: String, passphrase: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let (passphrase_ok, parsed) = parse_upload(&content_type, passphrase, body);
        let mut state = self.state.lock().unwrap();
        let (sha256, response) = match parsed {
            Ok(stored) => {
                let sha256 = sha256_hex(&stored.chain[0]);
                state.certs.push(stored);
                let id = format!("c{}", state.certs.len());
                (
                    Some(sha256),
                    reply(StatusCode::CREATED, json!({ "id": id })),
                )
            }
            Err(message) => (None, error(StatusCode::BAD_REQUEST, message)),
        };
        state.uploads.push(Upload {
            content_type,
            passphrase_ok,
            sha256,
            status: response.status().as_u16(),
        });
        response
    }

    fn activate(&self, id: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let index = id.strip_prefix('c').and_then(|n| n.parse::<usize>().ok());
        match index.filter(|n| (1..=state.certs.len()).contains(n)) {
            Some(n) => {
                state.jobs.push(Job {
                    cert: n - 1,
                    polls: 0,
                    finished: None,
                });
                let job = format!("j{}", state.jobs.len());
                reply(StatusCode::ACCEPTED, json!({ "job": job }))
            }
            None => error(StatusCode::NOT_FOUND, format!("no certificate {id:?}")),
        }
    }

    /// Reports a job; the poll after the running ones finishes it as the mode says.
    fn poll(&self, job: &str) -> Response<Full<Bytes>> {
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        let index = job.strip_prefix('j').and_then(|n| n.parse::<usize>().ok());
        let Some(job) = index.and_then(|n| state.jobs.get_mut(n.wrapping_sub(1))) else {
            return error(StatusCode::NOT_FOUND, format!("no job {job:?}"));
        };
        job.polls += 1;
        if job.polls <= RUNNING_POLLS {
            return reply(StatusCode::OK, json!({ "state": "running" }));
        }
        if job.finished.is_none() {
            let cert = &state.certs[job.cert];
            let sha256 = sha256_hex(&cert.chain[0]);
            let mode = *self.mode.lock().unwrap();
            job.finished = Some(match mode {
                ApplianceMode::Honest => {
                    self.data_plane
                        .swap(cert.chain.clone(), cert.key.clone_key());
                    state.claimed = sha256;
                    json!({ "state": "done" })
                }
                ApplianceMode::Lying => {
                    state.claimed = sha256;
                    json!({ "state": "done" })
                }
                ApplianceMode::RejectActivation => {
                    json!({ "state": "failed", "message": "certificate rejected by policy" })
                }
            });
        }
        reply(StatusCode::OK, job.finished.clone().expect("finished"))
    }
}
