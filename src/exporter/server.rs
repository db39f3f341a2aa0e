//! The routes, served under the limits of [`crate::listen`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::WebConfig;
use super::allow::ProbeTargets;
use super::auth::{Authenticator, Verdict};
use super::gzip::accepts_gzip;
use super::metrics::{BlackboxCompat, MetricsMode, ModeSwitch, ProbeCollector};
use super::stream::{MetricsBody, Progress, QUEUE, produce, produce_with};
use super::text::openmetrics_to_text;
use crate::clock::Clock;
use crate::listen::Limits;
use crate::probe::{Host, ProbeReport, Prober, Round, Target, report_json};
use crate::schedule::{Results, TargetKey, TargetSpec};
use crate::shutdown::Shutdown;

/// Subtracted from Prometheus's scrape timeout so the answer arrives in time.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);
/// The longest scrape timeout taken from `X-Prometheus-Scrape-Timeout-Seconds`; larger
/// values are clamped to it (the profile's timeout caps the probe anyway).
const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The shortest probe budget a scrape timeout leaves after the offset.
const MIN_PROBE_BUDGET: Duration = Duration::from_millis(100);

/// A request to reload the configuration, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// What `/probe` may probe, and with which profiles.
#[derive(Debug, Clone, Default)]
pub struct ProbeProfiles {
    /// Profile name to prober.
    pub by_name: BTreeMap<String, Arc<Prober>>,
    /// Used when a request names no profile.
    pub default: String,
    /// Which targets may be probed (`[server] probe_targets`).
    pub allowed: ProbeTargets,
    /// The configured targets by (`host:port`, profile), with their own settings
    /// (`connect_to`, `server_name`, timeout): `/probe` of one probes it as scheduled.
    pub configured: BTreeMap<TargetKey, Arc<TargetSpec>>,
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
    pub web: RwLock<Arc<WebConfig>>,
    /// Where `/-/reload` sends its requests.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The daemon's clock.
    pub clock: Arc<dyn Clock>,
    /// Checks credentials: bcrypt off the async workers, successes remembered.
    auth: Authenticator,
    /// What `/metrics` exports per target (`[server] metrics`), read at each scrape.
    mode: ModeSwitch,
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
        let mode = ModeSwitch::default();
        registry
            .sub_registry_with_prefix("tlsward")
            .register_collector(Box::new(super::metrics::TargetCollector {
                results: results.clone(),
                mode: mode.clone(),
            }));
        Self {
            registry,
            results,
            profiles: RwLock::new(profiles),
            web: RwLock::new(Arc::new(web)),
            reload,
            clock,
            auth: Authenticator::default(),
            mode,
        }
    }

    /// Sets what `/metrics` exports per target from the next scrape on (at start and at
    /// each reload; [`MetricsMode::Full`] until then).
    pub fn set_metrics(&self, mode: MetricsMode) {
        self.mode.set(mode);
    }

    async fn authorized(&self, req: &Request<Incoming>) -> Verdict {
        let web = self
            .web
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth.check(&web, header).await
    }
}

/// Serves HTTP (or HTTPS, with `tls`) on `listener` under `limits` until `shutdown`
/// fires. Connections in progress are left to finish on their own.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ExporterState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: Shutdown,
) {
    let handler = move |req| {
        let state = state.clone();
        async move { route(req, state).await }
    };
    crate::listen::serve(listener, limits, tls, handler, shutdown.wait()).await;
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

/// Whether a request may go without credentials: liveness and readiness, which load
/// balancers, orchestrators and service managers check without any, and which say nothing
/// but a fixed word. (Prometheus' own web config protects every path; its users ask for this
/// exemption, prometheus/exporter-toolkit#111.) Everything else needs credentials when web
/// auth is on.
fn open_to_all(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && matches!(req.uri().path(), "/-/healthy" | "/-/ready")
}

/// An answer: whole, or streamed (`/metrics`, `/api/targets`).
type Answer = Either<Full<Bytes>, MetricsBody>;

async fn route(req: Request<Incoming>, state: Arc<ExporterState>) -> Response<Answer> {
    if let Some(refused) = refusal(&req, &state).await {
        return refused.map(Either::Left);
    }
    if req.method() == Method::GET {
        match req.uri().path() {
            "/metrics" => return metrics(&req, state).await,
            "/api/targets" => return targets(&req, state).await,
            _ => {}
        }
    }
    answer(req, &state).await.map(Either::Left)
}

/// The answer to a request without the credentials it needs, if it lacks them.
async fn refusal(req: &Request<Incoming>, state: &ExporterState) -> Option<Response<Full<Bytes>>> {
    let verdict = if open_to_all(req) {
        Verdict::Allowed
    } else {
        state.authorized(req).await
    };
    match verdict {
        Verdict::Allowed => None,
        Verdict::Denied => {
            let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tlsward\""),
            );
            Some(r)
        }
        Verdict::Busy => {
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many password checks in progress; retry shortly\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Some(r)
        }
    }
}

/// The answer to an authorized request for anything but `/metrics` and `/api/targets`.
async fn answer(req: Request<Incoming>, state: &ExporterState) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
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

/// `/metrics`, encoded on a blocking thread while it is sent (see [`super::stream`]): gzip
/// when asked, OpenMetrics or the text format by `Accept`.
async fn metrics(req: &Request<Incoming>, state: Arc<ExporterState>) -> Response<Answer> {
    let openmetrics = wants_openmetrics(req);
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    streamed(req, content_type, move |gzip, tx| {
        produce(
            &state.registry,
            openmetrics,
            gzip,
            tx,
            Arc::new(Progress::default()),
        );
    })
    .await
}

/// `/api/targets`: every scheduled target's latest reports and recent history, encoded as
/// `/metrics` is, while it is sent.
async fn targets(req: &Request<Incoming>, state: Arc<ExporterState>) -> Response<Answer> {
    streamed(req, "application/json", move |gzip, tx| {
        let now = OffsetDateTime::from(state.clock.now());
        produce_with(false, gzip, tx, Arc::new(Progress::default()), |out| {
            super::api::write_targets(&state.results, now, out)
        });
    })
    .await
}

/// An answer that `encode` writes into a queue on a blocking thread while it is sent, gzipped
/// when the client accepts it. One that fits in one chunk is sent whole, with its length, as
/// are failures before the first chunk (a 500); a larger one is sent chunked, and a failure
/// after its first chunk aborts it, so a client never takes a cut answer for a whole one.
async fn streamed(
    req: &Request<Incoming>,
    content_type: &'static str,
    encode: impl FnOnce(bool, mpsc::Sender<super::stream::Message>) + Send + 'static,
) -> Response<Answer> {
    let gzip = accepts_gzip(req.headers());
    let (tx, mut rx) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || encode(gzip, tx));
    let first = match rx.recv().await {
        Some(Ok(piece)) => piece,
        failed => {
            let why = match failed {
                Some(Err(e)) => e,
                _ => super::stream::StreamError::Stopped,
            };
            let mut r = text(StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n"));
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            return r.map(Either::Left);
        }
    };
    let body = if first.last {
        Either::Left(Full::new(first.bytes))
    } else {
        Either::Right(MetricsBody::new(first.bytes, rx))
    };
    let mut r = Response::new(body);
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
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
    let requested: Target = match target.parse() {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let budget = match scrape_budget(req.headers().get("X-Prometheus-Scrape-Timeout-Seconds")) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let asked = params.get("profile").or(params.get("module"));
    let (mut target, prober, allowlist) = {
        let profiles = state
            .profiles
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match &profiles.allowed {
            ProbeTargets::Configured => match configured(&profiles, &requested, asked) {
                Some(spec) => (spec.target.clone(), spec.prober.clone(), None),
                None => {
                    let profile = asked.unwrap_or(&profiles.default);
                    return text(
                        StatusCode::FORBIDDEN,
                        format!(
                            "{requested} with profile {profile:?} is not a configured target, and [server] probe_targets = \"configured\" (the default) allows only those; add it as a [[target]], or set probe_targets to a list of name patterns and CIDRs, or to \"any\"\n"
                        ),
                    );
                }
            },
            allowed => {
                let name = asked.unwrap_or(&profiles.default);
                let Some(prober) = profiles.by_name.get(name) else {
                    let known: Vec<&str> = profiles.by_name.keys().map(String::as_str).collect();
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("unknown profile {name:?} (known: {})\n", known.join(", ")),
                    );
                };
                let list = match allowed {
                    ProbeTargets::Only(list) => Some(list.clone()),
                    _ => None,
                };
                (requested, prober.clone(), list)
            }
        }
    };
    let mut timeout = prober.module().timeout;
    if let Some(budget) = budget {
        timeout = timeout.min(budget);
    }
    let started = tokio::time::Instant::now();
    let mut unresolved = None;
    if let Some(list) = &allowlist {
        let refuse = |why: super::allow::Refusal| {
            text(
                StatusCode::FORBIDDEN,
                format!(
                    "{target} is not allowed by [server] probe_targets = {list}: {why}; add a name pattern or CIDR that covers it, or set probe_targets = \"any\"\n"
                ),
            )
        };
        if let Err(why) = list.check_request(&target.host, target.port) {
            return refuse(why);
        }
        if list.checks_addresses() && matches!(target.host, Host::Name(_)) {
            // Resolve once, check every address, and probe exactly those: a second lookup
            // could answer differently (DNS rebinding).
            match crate::probe::resolve(&target, timeout).await {
                Ok(addrs) => {
                    if let Err(why) = list.check_addresses(&addrs) {
                        return refuse(why);
                    }
                    target.connect_to = addrs;
                }
                Err(failure) => unresolved = Some(failure),
            }
        }
    }
    let report = match unresolved {
        Some(failure) => ProbeReport::unreached(&target, started.elapsed(), failure),
        None => {
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(MIN_PROBE_BUDGET);
            // One report: a round within the budget never returns an empty list.
            let mut reports = prober
                .round(&target, state.clock.clone(), Round::FirstWithin(left))
                .await;
            reports.swap_remove(0)
        }
    };
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

/// The configured target a `/probe` request names: with the profile it asks for, else with
/// the default profile, else with the first profile it is configured with.
fn configured<'a>(
    profiles: &'a ProbeProfiles,
    target: &Target,
    asked: Option<&String>,
) -> Option<&'a Arc<TargetSpec>> {
    let name: Arc<str> = target.to_string().into();
    if let Some(profile) = asked {
        return profiles.configured.get(&(name, profile.as_str().into()));
    }
    profiles
        .configured
        .get(&(name.clone(), profiles.default.as_str().into()))
        .or_else(|| {
            profiles
                .configured
                .range((name.clone(), Arc::<str>::from(""))..)
                .next()
                .filter(|((n, _), _)| *n == name)
                .map(|(_, v)| v)
        })
}

/// The probe budget `X-Prometheus-Scrape-Timeout-Seconds` leaves: its value (at most
/// [`MAX_SCRAPE_TIMEOUT`]) minus [`SCRAPE_TIMEOUT_OFFSET`], at least [`MIN_PROBE_BUDGET`].
/// `None` without the header; an error unless it is a positive, finite number of seconds.
fn scrape_budget(value: Option<&HeaderValue>) -> Result<Option<Duration>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let secs = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| {
            let shown: String = String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(32)
                .collect();
            format!(
                "X-Prometheus-Scrape-Timeout-Seconds must be a positive number of seconds, not {shown:?}"
            )
        })?;
    let scrape = Duration::try_from_secs_f64(secs)
        .unwrap_or(MAX_SCRAPE_TIMEOUT)
        .min(MAX_SCRAPE_TIMEOUT);
    Ok(Some(
        scrape
            .saturating_sub(SCRAPE_TIMEOUT_OFFSET)
            .max(MIN_PROBE_BUDGET),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_timeout_header_is_bounded_and_never_panics() {
        let budget = |v: &str| scrape_budget(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(scrape_budget(None), Ok(None));
        assert_eq!(budget("10"), Ok(Some(Duration::from_millis(9500))));
        assert_eq!(budget(" 1.2 "), Ok(Some(Duration::from_millis(700))));
        // Shorter than the offset: the minimum budget, not zero.
        assert_eq!(budget("0.2"), Ok(Some(MIN_PROBE_BUDGET)));
        // Huge values are clamped, saturating instead of overflowing a Duration.
        let max = MAX_SCRAPE_TIMEOUT - SCRAPE_TIMEOUT_OFFSET;
        for huge in [
            "1e300",
            "1.7976931348623157e308",
            "18446744073709551616",
            "3601",
        ] {
            assert_eq!(budget(huge), Ok(Some(max)), "{huge}");
        }
        for bad in [
            "NaN", "nan", "inf", "-inf", "infinity", "-1", "0", "-0", "", "ten", "1e-400",
        ] {
            let e = budget(bad).unwrap_err();
            assert!(
                e.starts_with("X-Prometheus-Scrape-Timeout-Seconds must be"),
                "{bad}: {e}"
            );
        }
        let bytes = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        assert!(scrape_budget(Some(&bytes)).is_err());
    }
}
