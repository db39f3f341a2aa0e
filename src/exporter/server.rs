//! The hyper server and its routes.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::WebConfig;
use super::metrics::{BlackboxCompat, ProbeCollector};
use super::text::openmetrics_to_text;
use crate::cert::rfc3339;
use crate::clock::Clock;
use crate::probe::{Prober, Target, report_json};
use crate::schedule::Results;

/// Subtracted from Prometheus's scrape timeout so the answer arrives in time.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

/// A request to reload the configuration, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// The profiles `/probe` may use.
#[derive(Debug, Clone, Default)]
pub struct ProbeProfiles {
    /// Profile name to prober.
    pub by_name: BTreeMap<String, Arc<Prober>>,
    /// Used when a request names no profile.
    pub default: String,
}

/// What the HTTP handlers share.
pub struct ExporterState {
    /// The daemon's registry: its own families and the scheduled targets' collector.
    pub registry: Registry,
    /// Latest results of scheduled targets.
    pub results: Arc<Results>,
    /// Profiles for `/probe`.
    pub profiles: RwLock<ProbeProfiles>,
    /// Authentication (replaced on reload; TLS is fixed at start).
    pub web: RwLock<WebConfig>,
    /// Where `/-/reload` sends its requests.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The daemon's clock.
    pub clock: Arc<dyn Clock>,
    /// Successful basic-auth checks, so bcrypt runs once per credential, not per scrape.
    auth_cache: Mutex<HashMap<(String, [u8; 32]), bool>>,
}

impl std::fmt::Debug for ExporterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterState").finish_non_exhaustive()
    }
}

impl ExporterState {
    /// State for `serve`.
    pub fn new(
        registry: Registry,
        results: Arc<Results>,
        profiles: ProbeProfiles,
        web: WebConfig,
        reload: mpsc::Sender<ReloadRequest>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut registry = registry;
        registry
            .sub_registry_with_prefix("tlsward")
            .register_collector(Box::new(super::metrics::TargetCollector {
                results: results.clone(),
            }));
        Self {
            registry,
            results,
            profiles: RwLock::new(profiles),
            web: RwLock::new(web),
            reload,
            clock,
            auth_cache: Mutex::new(HashMap::new()),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let web = self.web.read().unwrap_or_else(PoisonError::into_inner);
        if !web.requires_auth() {
            return true;
        }
        let Some(value) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            let digest = sha256(token.trim().as_bytes());
            // Comparing digests, not tokens: timing reveals nothing about a token's bytes.
            return web.bearer_token_sha256.contains(&digest);
        }
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        let Some(hash) = web.basic_auth_users.get(user) else {
            return false;
        };
        let key = (user.to_owned(), sha256(password.as_bytes()));
        let mut cache = self
            .auth_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(ok) = cache.get(&key) {
            return *ok;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// Serves HTTP (or HTTPS, when the web config has TLS) on `listener` until `shutdown`
/// completes. Connections in progress are left to finish on their own.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ExporterState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "TLS handshake with a client failed");
                        return;
                    }
                },
                None => {
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(req: Request<Incoming>, state: &ExporterState) -> Response<Full<Bytes>> {
    if !state.authorized(&req) {
        let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tlsward\""),
        );
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&req, &state.registry),
        (&Method::GET, "/probe") => probe(&req, state).await,
        (&Method::GET, "/-/healthy") => text(StatusCode::OK, "Healthy\n"),
        (&Method::GET, "/-/ready") => {
            if state.results.all_probed() {
                text(StatusCode::OK, "Ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "first probes still running\n",
                )
            }
        }
        (&Method::POST | &Method::PUT, "/-/reload") => {
            let (tx, rx) = oneshot::channel();
            if state.reload.send(tx).await.is_err() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
            match rx.await {
                Ok(Ok(())) => text(StatusCode::OK, "config reloaded\n"),
                Ok(Err(e)) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reload failed, the previous config stays in effect:\n{e}"),
                ),
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            }
        }
        (_, "/-/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        (&Method::GET, "/api/targets") => targets_json(state),
        (&Method::GET, "/") => text(
            StatusCode::OK,
            "tlsward\n\n/metrics        scheduled probes\n/probe?target=HOST:PORT&profile=NAME[&debug=true]\n/api/targets    latest reports and history\n/-/healthy /-/ready /-/reload (POST)\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

fn encode(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let mut om = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut om, registry) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        );
    }
    let (body, content_type) = if wants_openmetrics(req) {
        (
            om,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            openmetrics_to_text(&om),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn metrics(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    encode(req, registry)
}

/// `/probe?target=&profile=[&debug=true]`: one probe now, answered from a fresh registry.
async fn probe(req: &Request<Incoming>, state: &ExporterState) -> Response<Full<Bytes>> {
    let params: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let Some(target) = params.get("target") else {
        return text(StatusCode::BAD_REQUEST, "the target parameter is missing\n");
    };
    let target: Target = match target.parse() {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let prober = {
        let profiles = state
            .profiles
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let name = params
            .get("profile")
            .or(params.get("module"))
            .unwrap_or(&profiles.default);
        match profiles.by_name.get(name) {
            Some(p) => p.clone(),
            None => {
                let known: Vec<&str> = profiles.by_name.keys().map(String::as_str).collect();
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("unknown profile {name:?} (known: {})\n", known.join(", ")),
                );
            }
        }
    };
    let mut timeout = prober.module().timeout;
    if let Some(scrape) = req
        .headers()
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        let budget = Duration::from_secs_f64(scrape)
            .saturating_sub(SCRAPE_TIMEOUT_OFFSET)
            .max(Duration::from_millis(100));
        timeout = timeout.min(budget);
    }
    let report = prober
        .probe_within_caught(&target, state.clock.clone(), timeout)
        .await;
    let debug = params.get("debug").is_some_and(|v| v == "true");
    let now = OffsetDateTime::from(state.clock.now());
    let report_text =
        debug.then(|| serde_json::to_string_pretty(&report_json(&report, now)).unwrap_or_default());
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BlackboxCompat {
        report: report.clone(),
        timeout,
    }));
    registry
        .sub_registry_with_prefix("tlsward")
        .register_collector(Box::new(ProbeCollector { report }));
    let response = encode(req, &registry);
    match report_text {
        None => response,
        Some(report) => {
            let mut om = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut om, &registry);
            text(
                StatusCode::OK,
                format!(
                    "Probe of {target} (timeout {timeout:?}):\n{report}\n\nMetrics that would have been returned:\n{}",
                    openmetrics_to_text(&om)
                ),
            )
        }
    }
}

#[derive(Serialize)]
struct TargetJson<'a> {
    target: &'a str,
    profile: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    interval_seconds: f64,
    last_probe: Option<String>,
    reports: Vec<crate::probe::JsonReport<'a>>,
    history: Vec<HistoryJson>,
}

#[derive(Serialize)]
struct HistoryJson {
    at: String,
    status: &'static str,
    reason: Option<&'static str>,
    address: Option<String>,
    sha256: Option<String>,
    duration_seconds: f64,
}

/// `/api/targets`: every scheduled target's latest reports and recent history.
fn targets_json(state: &ExporterState) -> Response<Full<Bytes>> {
    let now = OffsetDateTime::from(state.clock.now());
    let snapshot = state.results.snapshot();
    let body: Vec<TargetJson<'_>> = snapshot
        .iter()
        .map(|s| TargetJson {
            target: &s.spec.name,
            profile: &s.spec.profile,
            labels: s
                .spec
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            interval_seconds: s.spec.interval.as_secs_f64(),
            last_probe: s.last_at.map(|t| rfc3339(t.into())),
            reports: s.last.iter().map(|r| report_json(r, now)).collect(),
            history: s
                .history
                .iter()
                .map(|h| HistoryJson {
                    at: rfc3339(h.at.into()),
                    status: h.status.as_str(),
                    reason: h.reason,
                    address: h.address.map(|a| a.to_string()),
                    sha256: h.sha256.clone(),
                    duration_seconds: h.duration.as_secs_f64(),
                })
                .collect(),
        })
        .collect();
    json(serde_json::to_vec_pretty(&body).unwrap_or_default())
}
