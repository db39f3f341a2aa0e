//! Test support: a certificate authority made with rcgen around a test clock, and real TLS
//! servers (tokio-rustls on 127.0.0.1:0) that serve whatever chain a test asks for. Beside
//! them: `daemon` (serve in this process), `wait` (the one polling loop), `probe`, `tools`
//! (openssl, keytool), `cli` (the binary and its store), `exposition` (a strict parser and
//! `metric`), and the real servers, Pebble, the appliance stand-in and the hook helpers.

#![allow(dead_code)]

pub mod appliance;
pub mod cli;
pub mod daemon;
pub mod exposition;
pub mod hooks;
pub mod http;
pub mod netns;
pub mod pebble;
pub mod probe;
pub mod servers;
pub mod starttls_script;
pub mod tools;
pub mod wait;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use tlsward::cert::{Origin, TrustStore};

/// A free loopback TCP port for a server a test starts by address (Pebble, daemons, the
/// HTTP-01 responder). It is taken below the kernel's ephemeral range (32768 and up), so no
/// listener bound to port 0 and no outgoing connection can be handed the same port between
/// this check and the server's bind, and never twice in one test process.
pub fn unique_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = fastrand::u16(24_000..32_700);
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
}

/// The instant every time-sensitive test is judged at.
pub fn test_now() -> OffsetDateTime {
    time::macros::datetime!(2026-06-01 12:00 UTC)
}

/// `test_now()` as a SystemTime.
pub fn test_time() -> SystemTime {
    test_now().into()
}

/// A path under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The time the static fixtures (tests/fixtures/gen.sh) are judged at.
pub fn fixture_time() -> SystemTime {
    time::macros::datetime!(2026-02-01 00:00 UTC).into()
}

/// The certificates of a PEM file under tests/fixtures, in file order.
pub fn fixture_chain(name: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .map(|c| c.unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

/// The static fixtures' root (tests/fixtures/certs/root.pem), as a private anchor.
pub fn fixture_trust() -> TrustStore {
    let mut trust = TrustStore::empty();
    trust.add_all(&fixture_chain("certs/root.pem"), Origin::Private);
    trust
}

/// A text file's contents; the panic names the file.
pub fn read(path: impl AsRef<std::path::Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A file's permission bits, setuid, setgid and sticky included.
pub fn mode(path: impl AsRef<std::path::Path>) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let path = path.as_ref();
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The real time, for tests whose certificates are judged by another process (the CLI) or
/// by a server's own verifier, which use the wall clock.
#[allow(clippy::disallowed_methods)]
pub fn real_now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A CA (root or intermediate) that issues certificates relative to its base time
/// (`test_now()` unless made with [`TestCa::root_at`]).
pub struct TestCa {
    pub cert: CertificateDer<'static>,
    base: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
    /// The certificates a server sends above its leaf: this CA (if not a root) and its
    /// parents below the root.
    pub chain_above: Vec<CertificateDer<'static>>,
    pub name: String,
}

fn ca_params(name: &str, base: OffsetDateTime, from_days: i64, to_days: i64) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = base + Duration::days(from_days);
    params.not_after = base + Duration::days(to_days);
    params.use_authority_key_identifier_extension = true;
    params
}

impl TestCa {
    /// A self-signed root valid from a year before to ten years after the test clock.
    pub fn root(name: &str) -> Self {
        Self::root_at(name, test_now())
    }

    /// A root whose certificates are made relative to `base`.
    pub fn root_at(name: &str, base: OffsetDateTime) -> Self {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(name, base, -365, 3650);
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            cert: cert.der().clone(),
            base,
            issuer: Issuer::new(params, key),
            chain_above: Vec::new(),
            name: name.into(),
        }
    }

    /// An intermediate CA issued by `self`, valid between the given day offsets.
    pub fn intermediate_valid(&self, name: &str, from_days: i64, to_days: i64) -> Self {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(name, self.base, from_days, to_days);
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let mut chain_above = vec![cert.der().clone()];
        chain_above.extend(self.chain_above.iter().cloned());
        Self {
            cert: cert.der().clone(),
            base: self.base,
            issuer: Issuer::new(params, key),
            chain_above,
            name: name.into(),
        }
    }

    /// An intermediate CA issued by `self`, valid around the test clock.
    pub fn intermediate(&self, name: &str) -> Self {
        self.intermediate_valid(name, -300, 1800)
    }

    /// Starts a leaf for these names (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> LeafSpec<'_> {
        LeafSpec {
            ca: self,
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            from_days: -10.0,
            to_days: 80.0,
            key: None,
            cn: names.first().map(|s| (*s).to_owned()),
            client: false,
        }
    }

    /// A trust store holding only this CA, as a private anchor.
    pub fn trust(&self) -> TrustStore {
        let mut store = TrustStore::empty();
        store.add_all([&self.cert], Origin::Private);
        store
    }

    /// This CA's certificate as PEM.
    pub fn pem(&self) -> String {
        pem(&self.cert)
    }
}

/// PEM of one certificate.
pub fn pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// PEM of a chain, in the order given.
pub fn pem_chain(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem(c)).collect()
}

/// A leaf under construction.
pub struct LeafSpec<'a> {
    ca: &'a TestCa,
    names: Vec<String>,
    from_days: f64,
    to_days: f64,
    key: Option<KeyPair>,
    cn: Option<String>,
    client: bool,
}

impl LeafSpec<'_> {
    /// Validity relative to the test clock, in (fractional) days.
    pub fn valid(mut self, from_days: f64, to_days: f64) -> Self {
        self.from_days = from_days;
        self.to_days = to_days;
        self
    }

    /// Use this key instead of a fresh P-256 key.
    pub fn key(mut self, key: KeyPair) -> Self {
        self.key = Some(key);
        self
    }

    /// This common name instead of the first name: any text, as a hostile server may send.
    pub fn cn(mut self, cn: &str) -> Self {
        self.cn = Some(cn.to_owned());
        self
    }

    /// No subjectAltName at all: the name only in the CN.
    pub fn cn_only(mut self) -> Self {
        self.names.clear();
        self
    }

    /// A client-authentication certificate instead of a server one.
    pub fn client(mut self) -> Self {
        self.client = true;
        self
    }

    pub fn build(self) -> Leaf {
        let key = match self.key {
            Some(k) => k,
            None => KeyPair::generate().expect("key"),
        };
        let mut params = CertificateParams::new(self.names.clone()).expect("params");
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &self.cn {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        let secs = |d: f64| Duration::seconds_f64(d * 86_400.0);
        params.not_before = self.ca.base + secs(self.from_days);
        params.not_after = self.ca.base + secs(self.to_days);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if self.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.ca.issuer).expect("signed");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.ca.chain_above.iter().cloned());
        Leaf {
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// A leaf with the chain a correct server would send, and its key.
pub struct Leaf {
    /// Leaf first, then intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Leaf {
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

/// An RSA-2048 key for rcgen (ring cannot generate RSA keys; see tests/fixtures/gen.sh).
pub fn rsa_key() -> KeyPair {
    let pem = std::fs::read_to_string(fixture("certs/rsa2048.key")).expect("fixture rsa2048.key");
    KeyPair::from_pem(&pem).expect("RSA key")
}

/// Serves one certificate, which a test may swap (a deployment).
#[derive(Debug)]
struct FixedCert(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap().clone())
    }
}

/// `openssl s_server` on a free loopback port (a real, configurable TLS server, e.g. TLS 1.0
/// only), killed by its pid on drop.
pub struct OpensslServer {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpensslServer {
    pub async fn start(cert: &std::path::Path, key: &std::path::Path, extra: &[&str]) -> Self {
        let port = unique_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server (Debian package openssl) must be installed");
        let server = Self { child, addr };
        wait::eventually(10, &format!("openssl s_server on {addr}"), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        server
    }
}

impl Leaf {
    /// Writes the chain and key as PEM files into `dir`, returning their paths.
    pub fn write_pem(&self, dir: &std::path::Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, pem_chain(&self.chain)).unwrap();
        let key_pem = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.key.secret_der().to_vec(),
        ));
        std::fs::write(&key, key_pem).unwrap();
        (cert, key)
    }
}

/// A real TLS server on 127.0.0.1:0, serving one chain until dropped.
pub struct TlsServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    cert: Arc<FixedCert>,
}

impl TlsServer {
    /// Serves another chain from now on, as a deployment would.
    pub fn swap(&self, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) {
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .expect("server key");
        *self.cert.0.write().unwrap() =
            Arc::new(rustls::sign::CertifiedKey::new(chain, signing_key));
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`TlsServer`] behaves.
pub struct ServerSpec {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Vec<CertificateDer<'static>>>,
    ocsp: Vec<u8>,
}

impl TlsServer {
    /// A server for `chain` (sent exactly as given) and its leaf's key.
    pub fn serve(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> ServerSpec {
        ServerSpec {
            chain,
            key,
            client_roots: None,
            ocsp: Vec::new(),
        }
    }

    /// A server for a [`Leaf`] with its normal chain.
    pub fn leaf(leaf: &Leaf) -> ServerSpec {
        Self::serve(leaf.chain.clone(), leaf.key.clone_key())
    }
}

impl ServerSpec {
    /// Require client certificates issued by `root`.
    pub fn require_client_cert(mut self, root: &TestCa) -> Self {
        self.client_roots = Some(vec![root.cert.clone()]);
        self
    }

    /// Staple this OCSP response.
    pub fn ocsp(mut self, der: Vec<u8>) -> Self {
        self.ocsp = der;
        self
    }

    pub async fn start(self) -> TlsServer {
        self.start_on("127.0.0.1:0").await
    }

    /// Starts on the given local address (e.g. `[::1]:0`).
    pub async fn start_on(self, bind: &str) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("versions");
        let builder = match self.client_roots {
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for r in roots {
                    store.add(r).expect("client root");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(store),
                    provider.clone(),
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        // A fixed certificate resolver: unlike with_single_cert, it serves any bytes as the
        // chain (hostile and malformed certificates included) without checking them.
        let signing_key = provider
            .key_provider
            .load_private_key(self.key)
            .expect("server key");
        let mut certified = rustls::sign::CertifiedKey::new(self.chain, signing_key);
        certified.ocsp = (!self.ocsp.is_empty()).then_some(self.ocsp);
        let cert = Arc::new(FixedCert(std::sync::RwLock::new(Arc::new(certified))));
        let config = builder.with_cert_resolver(cert.clone());
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 1024];
                        while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                });
            }
        });
        TlsServer { addr, task, cert }
    }
}
