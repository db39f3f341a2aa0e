//! The socket side of a probe: resolve, connect, and a TLS handshake that records what the
//! server presented whatever the verdict.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tracing::{debug, instrument};

use super::{
    Host, Module, ProbeFailure, ProbeReport, Protocol, StartTlsError, Target, TlsInfo,
    find_rustls_error, legacy, starttls,
};
use crate::cert::{self, Check, CheckKind, Reason, Severity};
use crate::clock::Clock;

/// After a handshake in which the server asked for a client certificate, how long to wait
/// for it to reject the certificate (TLS 1.3 servers do that after the client's Finished).
const CLIENT_AUTH_GRACE: Duration = Duration::from_millis(1000);

tokio::task_local! {
    /// The probe whose handshake is being polled: the shared configuration's verifier and
    /// client certificate resolver record what they see into it.
    static OBSERVED: Arc<Mutex<Observed>>;
}

/// Probes targets with one prepared TLS configuration.
///
/// The rustls configuration is built once and shared by every probe (what a handshake shows
/// is recorded through [`OBSERVED`], set for the duration of that handshake), so each probe's
/// cost is the handshake itself.
#[derive(Debug)]
pub struct Prober {
    module: Module,
    config: Arc<ClientConfig>,
}

impl Prober {
    /// Prepares a prober for `module`.
    pub fn new(module: Module) -> Self {
        let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recorder { algs }))
            .with_client_cert_resolver(Arc::new(ClientAuth {
                identity: module.client_identity.as_ref().map(|i| i.key.clone()),
            }));
        // A resumed handshake carries no certificate, so every probe must be a full one.
        config.resumption = Resumption::disabled();
        config.enable_early_data = false;
        config.alpn_protocols = module.alpn.clone();
        Self {
            module,
            config: Arc::new(config),
        }
    }

    /// The module this prober was built for.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Probes one target. Never fails: every problem is inside the report.
    #[instrument(level = "debug", skip_all, fields(target = %target))]
    pub async fn probe(&self, target: &Target, clock: &dyn Clock) -> ProbeReport {
        self.probe_within(target, clock, self.module.timeout).await
    }

    /// Probes one target within `budget` instead of the module's timeout (for `/probe`,
    /// where Prometheus's scrape timeout may be shorter).
    pub async fn probe_within(
        &self,
        target: &Target,
        clock: &dyn Clock,
        budget: Duration,
    ) -> ProbeReport {
        let start = Instant::now();
        let deadline = start + budget;
        let mut report = ProbeReport {
            target: target.to_string(),
            address: None,
            server_name: target.verify_name(),
            duration: Duration::ZERO,
            tls: None,
            outcome: Err(ProbeFailure::Closed),
        };
        report.outcome = self
            .run(target, (deadline, budget), &mut report, clock)
            .await;
        report.duration = start.elapsed();
        debug!(status = %report.status(), reason = report.reason().unwrap_or("none"), "probe finished");
        report
    }

    /// Probes every address of the target separately (each A and AAAA record, or each
    /// `--resolve` address), so one stale backend behind a name shows up. A name that does
    /// not resolve gives one report saying so.
    pub async fn probe_each_address(&self, target: &Target, clock: &dyn Clock) -> Vec<ProbeReport> {
        let deadline = Instant::now() + self.module.timeout;
        match addresses(target, deadline).await {
            Ok(addrs) if addrs.len() > 1 => {
                let mut reports = Vec::with_capacity(addrs.len());
                for addr in addrs {
                    let mut one = target.clone();
                    one.connect_to = vec![addr];
                    reports.push(self.probe(&one, clock).await);
                }
                reports
            }
            _ => vec![self.probe(target, clock).await],
        }
    }

    async fn run(
        &self,
        target: &Target,
        (deadline, budget): (Instant, Duration),
        report: &mut ProbeReport,
        clock: &dyn Clock,
    ) -> Result<cert::ChainFacts, ProbeFailure> {
        let server_name = target
            .server_name()
            .map_err(|e| ProbeFailure::Connect(e.to_string()))?;
        let addr = addresses(target, deadline).await?[0];
        report.address = Some(addr);
        let tcp = self
            .connect(addr, &report.server_name, (deadline, budget))
            .await?;

        let observed = Arc::new(Mutex::new(Observed::default()));
        let connector = TlsConnector::from(self.config.clone());
        let handshake = timeout_at(
            deadline,
            OBSERVED.scope(
                observed.clone(),
                connector.connect(server_name.clone(), tcp),
            ),
        )
        .await;

        let handshake_check = match handshake {
            Ok(Ok(mut stream)) => {
                let (_, conn) = stream.get_ref();
                report.tls = Some(TlsInfo {
                    version: version_name(conn.protocol_version()),
                    cipher_suite: conn
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                        .unwrap_or_default(),
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                });
                let requested = lock(&observed).client_cert_requested;
                if requested {
                    Box::pin(self.client_auth_verdict(&mut stream, deadline)).await
                } else {
                    let tls = report.tls.as_ref().expect("just set");
                    Check::pass(
                        CheckKind::Handshake,
                        format!("{} {}", tls.version, tls.cipher_suite),
                    )
                }
            }
            Ok(Err(e)) => {
                let failure = ProbeFailure::from_handshake_error(&e);
                if lock(&observed).chain.is_empty() {
                    if !may_be_legacy(&failure) {
                        return Err(failure);
                    }
                    return Box::pin(self.legacy(
                        addr,
                        &server_name,
                        (deadline, budget),
                        failure,
                        report,
                        clock,
                    ))
                    .await;
                }
                self.failed_after_certificate(&lock(&observed), &e, failure)
            }
            Err(_) => {
                if lock(&observed).chain.is_empty() {
                    return Err(ProbeFailure::HandshakeTimeout(budget));
                }
                Check::fail(
                    CheckKind::Handshake,
                    Severity::Critical,
                    Reason::HandshakeFailed,
                    format!(
                        "the handshake timed out after the certificate ({:?})",
                        budget
                    ),
                )
            }
        };

        let observed = std::mem::take(&mut *lock(&observed));
        let ocsp = (!observed.ocsp.is_empty()).then_some(observed.ocsp.as_slice());
        let mut facts = cert::analyze(
            &observed.chain,
            &server_name,
            ocsp,
            &self.module.trust,
            &self.module.policy,
            clock.now(),
        )
        .map_err(|e| ProbeFailure::MalformedCertificate(e.to_string()))?;
        facts.set_check(handshake_check);
        Ok(facts)
    }

    /// Connects and, for STARTTLS protocols, negotiates the upgrade.
    async fn connect(
        &self,
        addr: SocketAddr,
        host: &str,
        (deadline, budget): (Instant, Duration),
    ) -> Result<TcpStream, ProbeFailure> {
        let mut tcp = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(ProbeFailure::ConnectTimeout(budget)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ProbeFailure::ConnectRefused);
            }
            Ok(Err(e)) => return Err(ProbeFailure::Connect(e.to_string())),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let protocol = self.module.protocol;
        if protocol == Protocol::Tls {
            return Ok(tcp);
        }
        // Boxed, as are the other paths few probes take (the legacy read, a client
        // certificate's verdict): inline, their state would be in every probe's future,
        // which is moved and held for each probe in flight.
        match Box::pin(timeout_at(
            deadline,
            starttls::upgrade(protocol, &mut tcp, host),
        ))
        .await
        {
            Err(_) => Err(ProbeFailure::StartTlsTimeout(protocol)),
            Ok(Err(StartTlsError::Refused(detail))) => {
                Err(ProbeFailure::StartTlsRefused { protocol, detail })
            }
            Ok(Err(e)) => Err(ProbeFailure::StartTlsFailed {
                protocol,
                detail: e.to_string(),
            }),
            Ok(Ok(())) => Ok(tcp),
        }
    }

    /// Reads the certificate of a server rustls cannot complete a handshake with, over a new
    /// connection and a legacy ClientHello. When that fails too, the original failure stands
    /// (it says what rustls saw), unless the server proved hostile.
    async fn legacy(
        &self,
        addr: SocketAddr,
        server_name: &ServerName<'static>,
        (deadline, budget): (Instant, Duration),
        original: ProbeFailure,
        report: &mut ProbeReport,
        clock: &dyn Clock,
    ) -> Result<cert::ChainFacts, ProbeFailure> {
        let tcp = self
            .connect(addr, &report.server_name, (deadline, budget))
            .await?;
        let hello = match legacy::read_hello(tcp, server_name, deadline).await {
            Ok(hello) => hello,
            Err(legacy::LegacyError::TooLarge) => {
                return Err(ProbeFailure::ChainTooLarge(
                    legacy::LegacyError::TooLarge.to_string(),
                ));
            }
            Err(e) => {
                debug!(error = %e, "legacy handshake read failed too");
                return Err(original);
            }
        };
        let version = legacy::version_name(hello.version);
        let suite = legacy::suite_name(hello.cipher_suite);
        report.tls = Some(TlsInfo {
            version: version.clone(),
            cipher_suite: suite.clone(),
            alpn: None,
        });
        let (reason, why) = if hello.version < 0x0303 {
            (
                Reason::LegacyTlsVersion,
                format!("the server speaks only {version}, deprecated by RFC 8996"),
            )
        } else {
            (
                Reason::LegacyCipherSuite,
                format!("the server offers only {suite}, which modern clients refuse"),
            )
        };
        let check = Check::fail(
            CheckKind::Handshake,
            Severity::Warning,
            reason,
            format!("{why}; the certificate was read from the clear-text handshake ({original})"),
        );
        let mut facts = cert::analyze(
            &hello.chain,
            server_name,
            hello.ocsp.as_deref(),
            &self.module.trust,
            &self.module.policy,
            clock.now(),
        )
        .map_err(|e| ProbeFailure::MalformedCertificate(e.to_string()))?;
        facts.set_check(check);
        Ok(facts)
    }

    /// The handshake check when the server asked for a client certificate: a TLS 1.3 server
    /// rejects it only after the handshake completes, so read briefly for its alert.
    async fn client_auth_verdict(
        &self,
        stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
        deadline: Instant,
    ) -> Check {
        let have_identity = self.module.client_identity.is_some();
        let grace = (Instant::now() + CLIENT_AUTH_GRACE).min(deadline);
        let mut buf = [0u8; 256];
        let rejected = match timeout_at(grace, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(1..)) => None,
            Ok(Ok(0)) => Some("the server closed the connection".to_owned()),
            Ok(Err(e)) => Some(match find_rustls_error(&e) {
                Some(rustls::Error::AlertReceived(alert)) => format!("alert {alert:?}"),
                _ => e.to_string(),
            }),
        };
        match (rejected, have_identity) {
            (None, true) => Check::pass(
                CheckKind::Handshake,
                "client certificate accepted".to_owned(),
            ),
            (None, false) => Check::pass(
                CheckKind::Handshake,
                "the server asked for a client certificate but did not require one".to_owned(),
            ),
            (Some(why), true) => Check::fail(
                CheckKind::Handshake,
                Severity::Critical,
                Reason::ClientCertRequired,
                format!("the server rejected the client certificate ({why})"),
            ),
            (Some(why), false) => Check::fail(
                CheckKind::Handshake,
                Severity::Critical,
                Reason::ClientCertRequired,
                format!("the server requires a client certificate and none was configured ({why})"),
            ),
        }
    }

    /// The handshake check when the handshake failed after the server's certificate arrived.
    fn failed_after_certificate(
        &self,
        observed: &Observed,
        err: &io::Error,
        failure: ProbeFailure,
    ) -> Check {
        let fail =
            |reason, detail| Check::fail(CheckKind::Handshake, Severity::Critical, reason, detail);
        if let Some(sig) = &observed.signature_error {
            return fail(
                Reason::HandshakeFailed,
                format!("the server's handshake signature cannot be verified: {sig}"),
            );
        }
        if observed.client_cert_requested
            && matches!(
                find_rustls_error(err),
                Some(rustls::Error::AlertReceived(_))
            )
        {
            let what = if self.module.client_identity.is_some() {
                "the server rejected the client certificate"
            } else {
                "the server requires a client certificate and none was configured"
            };
            return fail(Reason::ClientCertRequired, format!("{what} ({failure})"));
        }
        fail(Reason::HandshakeFailed, failure.to_string())
    }
}

/// Whether a failure before any certificate may come from a server that speaks only older
/// TLS versions or suites: it answered with a version or handshake alert, or with parameters
/// rustls does not offer.
fn may_be_legacy(failure: &ProbeFailure) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        failure,
        ProbeFailure::Tls(
            rustls::Error::AlertReceived(
                A::ProtocolVersion
                    | A::HandshakeFailure
                    | A::InsufficientSecurity
                    | A::IllegalParameter
            ) | rustls::Error::PeerIncompatible(_)
                | rustls::Error::PeerMisbehaved(_)
        )
    )
}

/// Every address `target` may be reached at, looked up within `within`: for callers that
/// must check the addresses before probing them (`/probe`'s allowlist), then probe exactly
/// those through [`Target::connect_to`].
pub async fn resolve(target: &Target, within: Duration) -> Result<Vec<SocketAddr>, ProbeFailure> {
    let deadline = Instant::now()
        .checked_add(within)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
    addresses(target, deadline).await
}

/// Every address the target may be reached at, in order: the `--resolve` override, the IP
/// itself, or what DNS returns (A and AAAA, duplicates removed).
async fn addresses(target: &Target, deadline: Instant) -> Result<Vec<SocketAddr>, ProbeFailure> {
    if !target.connect_to.is_empty() {
        return Ok(target.connect_to.clone());
    }
    let name = match &target.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(n) => n.as_str(),
    };
    match timeout_at(deadline, tokio::net::lookup_host((name, target.port))).await {
        Err(_) => Err(ProbeFailure::Resolve("DNS lookup timed out".into())),
        Ok(Err(e)) => Err(ProbeFailure::Resolve(e.to_string())),
        Ok(Ok(found)) => {
            let mut all: Vec<SocketAddr> = Vec::new();
            for addr in found {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }
            if all.is_empty() {
                return Err(ProbeFailure::Resolve("no addresses".into()));
            }
            Ok(all)
        }
    }
}

fn version_name(v: Option<rustls::ProtocolVersion>) -> String {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "unknown".into(),
    }
}

fn lock(m: &Mutex<Observed>) -> std::sync::MutexGuard<'_, Observed> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records into the current probe's [`Observed`]; false outside a probe's handshake (which
/// the prober never lets happen).
fn record(f: impl FnOnce(&mut Observed)) -> bool {
    OBSERVED.try_with(|o| f(&mut lock(o))).is_ok()
}

/// What one handshake showed, recorded as it happens.
#[derive(Debug, Default)]
struct Observed {
    chain: Vec<CertificateDer<'static>>,
    ocsp: Vec<u8>,
    client_cert_requested: bool,
    signature_error: Option<rustls::Error>,
}

/// A verifier that records the presented chain and lets the handshake go on, so the chain is
/// reported whatever its verdict (the verdict itself is [`cert::analyze`]'s). The server must
/// still prove possession of the leaf's key: handshake signatures are verified for real.
#[derive(Debug)]
struct Recorder {
    algs: WebPkiSupportedAlgorithms,
}

impl Recorder {
    fn note_signature(
        &self,
        r: Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if let Err(e) = &r {
            record(|o| o.signature_error = Some(e.clone()));
        }
        r
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let recorded = record(|o| {
            o.chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
            o.ocsp = ocsp_response.to_vec();
        });
        if !recorded {
            return Err(rustls::Error::General(
                "no probe is recording this handshake".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.note_signature(rustls::crypto::verify_tls12_signature(
            message, cert, dss, &self.algs,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.note_signature(rustls::crypto::verify_tls13_signature(
            message, cert, dss, &self.algs,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Offers the configured client certificate, and records that the server asked for one.
#[derive(Debug)]
struct ClientAuth {
    identity: Option<Arc<CertifiedKey>>,
}

impl ResolvesClientCert for ClientAuth {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        record(|o| o.client_cert_requested = true);
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        // Always true, so rustls asks `resolve` and the request is recorded.
        true
    }
}
