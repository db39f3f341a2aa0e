//! The center's agent CA: an ECDSA P-256 CA of its own (10 years, key sealed in the store)
//! that issues the agent API's server certificate at each start and each agent's short-lived
//! client certificate from the agent's CSR; the agent API's rustls config (client
//! certificates only from this CA); and the one-time enrollment tokens' form.
//!
//! Agents pin the CA by the SHA-256 of its certificate's DER ([`AgentCa::fingerprint`],
//! lower hex), printed by `tlsward agent token create`. A CSR is used only for its public
//! key, after its signature checked and the key proved strong; the names, the validity and
//! the extended key usage come from here.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::SecureRandom as _;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;

use super::sign::Signer;
use crate::cert::sha256_hex;
use crate::secret::Secret;
use crate::store::{Store, StoreError};

/// The CA certificate's common name.
pub const CA_COMMON_NAME: &str = "tlsward agent CA";
/// How long the agent CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the agent API's server certificate is valid (a new one at every start).
pub const SERVER_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How far certificates are backdated, so a peer whose clock is a little behind accepts a
/// certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The smallest RSA modulus accepted in an agent's CSR, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest CSR accepted, in bytes.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Why the agent CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The agent's CSR was refused: it does not parse, its signature does not check, or
    /// its key is weak or of an unknown kind.
    #[error("the CSR is refused: {0}")]
    Csr(String),
    /// A certificate, a key or the TLS config could not be made.
    #[error("agent CA: {0}")]
    Tls(String),
}

/// A client certificate issued to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedIdentity {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// SHA-256 (lower hex) of its DER: the identity the store keeps.
    pub sha256: String,
    /// When it expires (unix seconds).
    pub not_after: i64,
}

/// The agent CA, loaded from the store: its certificate and key, and the bundle signer.
pub struct AgentCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    signer: Signer,
    fingerprint: String,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCa")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn tls(e: impl std::fmt::Display) -> CaError {
    CaError::Tls(e.to_string())
}

fn at(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(tls)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A random positive 16-byte serial (RFC 5280 §4.1.2.2: at most 20 octets).
fn serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| tls("no randomness for a serial"))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Parameters every leaf shares: validity from `now`, a random serial, the CA's key id.
fn leaf_params(cn: &str, now: i64, lifetime: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = at(now.saturating_sub(secs(BACKDATE)))?;
    params.not_after = at(now.saturating_add(secs(lifetime)))?;
    params.serial_number = Some(serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A new CA: (certificate PEM, CA key PKCS#8, bundle-signing key PKCS#8).
fn make_ca(now: i64) -> Result<(String, Secret, Secret), CaError> {
    let key = KeyPair::generate().map_err(tls)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now.saturating_sub(secs(BACKDATE)))?;
    params.not_after = at(now.saturating_add(secs(CA_LIFETIME)))?;
    params.serial_number = Some(serial()?);
    let cert = params.self_signed(&key).map_err(tls)?;
    let signing = Signer::generate().map_err(tls)?;
    Ok((cert.pem(), Secret::new(key.serialize_der()), signing))
}

/// Checks that the CSR's key is one tlsward accepts: ECDSA P-256 or P-384, Ed25519, or RSA
/// of at least [`MIN_RSA_BITS`].
fn check_csr_key(csr_der: &[u8]) -> Result<(), CaError> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
        OID_SIG_ED25519,
    };
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|_| CaError::Csr("it is not a DER PKCS#10 request".into()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => Ok(()),
            _ => Err(CaError::Csr(
                "its elliptic curve is not P-256 or P-384".into(),
            )),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(());
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= MIN_RSA_BITS => Ok(()),
            Ok(PublicKey::RSA(rsa)) => Err(CaError::Csr(format!(
                "its RSA key has {} bits, fewer than {MIN_RSA_BITS}",
                rsa.key_size()
            ))),
            _ => Err(CaError::Csr("its RSA key does not parse".into())),
        };
    }
    Err(CaError::Csr(format!("its key type ({alg}) is not accepted")))
}

impl AgentCa {
    /// The store's agent CA, made and stored first if there is none (two processes racing
    /// keep the first one stored).
    pub fn load_or_create(store: &Store, now: i64) -> Result<Self, CaError> {
        let mut failed = None;
        let row = store.ensure_agent_ca(
            || {
                make_ca(now).map_err(|e| {
                    let text = e.to_string();
                    failed = Some(e);
                    StoreError::Crypto(text)
                })
            },
            now,
        );
        let row = match (row, failed) {
            (Ok(row), _) => row,
            (Err(_), Some(e)) => return Err(e),
            (Err(e), None) => return Err(e.into()),
        };
        let cert_der = {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(row.ca_cert_pem.as_bytes())
                .map_err(|e| CaError::Tls(format!("the stored CA certificate: {e}")))?
        };
        let key = KeyPair::try_from(row.ca_key.expose())
            .map_err(|e| CaError::Tls(format!("the stored CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| CaError::Tls(format!("the stored CA certificate: {e}")))?;
        let signer = Signer::from_pkcs8(&row.signing_key).map_err(tls)?;
        Ok(Self {
            fingerprint: sha256_hex(&cert_der),
            cert_pem: row.ca_cert_pem,
            cert_der,
            issuer,
            signer,
        })
    }

    /// SHA-256 of the CA certificate's DER, lower hex without colons: what agents pin.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The bundle-signing key agents pin at enrollment.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The agent API's rustls config: a fresh server certificate for `names` (DNS names or
    /// IP addresses; EKU serverAuth only, [`SERVER_LIFETIME`]) served as the chain
    /// [leaf, CA], and client certificates verified against this CA alone. A client may
    /// also come without a certificate (only enrollment works so; the server checks).
    pub fn server_config(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let key = KeyPair::generate().map_err(tls)?;
        let mut params = leaf_params("tlsward agent API", now, SERVER_LIFETIME)?;
        params.subject_alt_names = CertificateParams::new(names.to_vec())
            .map_err(|e| CaError::Tls(format!("agents.names: {e}")))?
            .subject_alt_names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params.signed_by(&key, &self.issuer).map_err(tls)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(tls)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(tls)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![leaf.der().clone(), self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(tls)?;
        Ok(Arc::new(config))
    }

    /// A client certificate for `agent` (CN = the agent's name, EKU clientAuth only, valid
    /// for `lifetime` from `now`) for the public key of the CSR `csr_der`, once its
    /// signature checks and its key is strong. Nothing else of the CSR is used.
    pub fn issue_client(
        &self,
        agent: &str,
        csr_der: &[u8],
        lifetime: Duration,
        now: i64,
    ) -> Result<IssuedIdentity, CaError> {
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(CaError::Csr(format!(
                "it is larger than {MAX_CSR_BYTES} bytes"
            )));
        }
        check_csr_key(csr_der)?;
        // Parses again and checks the CSR's signature (proof of possession of the key).
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der,
        ))
        .map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                CaError::Csr("its signature does not check".into())
            }
            other => CaError::Csr(other.to_string()),
        })?;
        let mut params = leaf_params(agent, now, lifetime)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_after = now.saturating_add(secs(lifetime));
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = request.signed_by(&self.issuer).map_err(tls)?;
        Ok(IssuedIdentity {
            certificate_pem: cert.pem(),
            sha256: sha256_hex(cert.der()),
            not_after,
        })
    }
}

/// How a token is stored and looked up: the SHA-256 of its text, lower hex.
pub fn token_sha256(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// A new one-time token: 32 random bytes, base64url without padding.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // The system's CSPRNG; failing to read it is not something to go on from.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        panic!("the system random number generator failed");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use rustls::server::danger::ClientCertVerifier;
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::store::KeySource;

    const NOW: i64 = 1_790_000_000;
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("s/tlsward.db"),
            &KeySource::File(dir.path().join("s/store.key")),
        )
        .unwrap();
        (dir, store)
    }

    fn csr(key: &KeyPair) -> Vec<u8> {
        CertificateParams::new(vec!["ignored.test".to_owned()])
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec()
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn verifier(ca: &AgentCa) -> Arc<dyn ClientCertVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der().clone()).unwrap();
        WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .unwrap()
    }

    fn eku(der: &[u8]) -> (bool, bool) {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.server_auth, eku.client_auth)
    }

    #[test]
    fn the_ca_is_made_once_and_loaded_after() {
        let (_d, store) = store();
        let a = AgentCa::load_or_create(&store, NOW).unwrap();
        let b = AgentCa::load_or_create(&store, NOW + 10).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.signer().public_base64(), b.signer().public_base64());
        assert_eq!(a.fingerprint(), sha256_hex(a.ca_der()));
        assert_eq!(a.fingerprint().len(), 64);
        assert!(a.fingerprint().bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(a.ca_der()).unwrap();
        assert!(cert.is_ca());
        assert_eq!(
            cert.subject().iter_common_name().next().unwrap().as_str().unwrap(),
            CA_COMMON_NAME
        );
        let years = (cert.validity().not_after.timestamp() - NOW) / (365 * 24 * 3600);
        assert_eq!(years, 10);
    }

    #[test]
    fn a_client_certificate_from_this_ca_passes_and_one_from_another_does_not() {
        let (_d, store) = store();
        let ca = AgentCa::load_or_create(&store, NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let issued = ca
            .issue_client("web-01", &csr(&key), 30 * DAY, NOW)
            .unwrap();
        let der = der_of(&issued.certificate_pem);
        assert_eq!(issued.sha256, sha256_hex(&der));
        assert_eq!(issued.not_after, NOW + 30 * 24 * 3600);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.validity().not_after.timestamp(), issued.not_after);
        assert_eq!(
            cert.subject().iter_common_name().next().unwrap().as_str().unwrap(),
            "web-01"
        );
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        assert_eq!(eku(&der), (false, true));
        let when = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            (NOW + 60) as u64,
        ));
        assert!(verifier(&ca).verify_client_cert(&der, &[], when).is_ok());
        // Expired: refused.
        let later =
            rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs((NOW + 31 * 86400) as u64));
        assert!(verifier(&ca).verify_client_cert(&der, &[], later).is_err());

        // The same agent name, from another store's CA.
        let (_d2, other_store) = self::store();
        let other = AgentCa::load_or_create(&other_store, NOW).unwrap();
        assert_ne!(other.fingerprint(), ca.fingerprint());
        let foreign = other
            .issue_client("web-01", &csr(&key), 30 * DAY, NOW)
            .unwrap();
        let foreign = der_of(&foreign.certificate_pem);
        assert!(verifier(&ca).verify_client_cert(&foreign, &[], when).is_err());
    }

    #[test]
    fn the_server_certificate_is_server_auth_only_with_the_names_and_the_ca_in_its_chain() {
        let (_d, store) = store();
        let ca = AgentCa::load_or_create(&store, NOW).unwrap();
        let config = ca
            .server_config(&["center.test".into(), "10.203.0.1".into()], NOW)
            .unwrap();
        let client = client_config(&ca, None);
        let (conn, _) = handshake(config, client, "center.test").unwrap();
        let chain = conn.peer_certificates().unwrap().to_vec();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], *ca.ca_der());
        assert_eq!(eku(&chain[0]), (true, false));
        let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&chain[0]).unwrap();
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, ["DNSName(center.test)", "IPAddress(10.203.0.1)"]);
        assert_eq!(
            leaf.validity().not_after.timestamp(),
            NOW + secs(SERVER_LIFETIME)
        );
        // webpki accepts it for its names, as an agent pinning the CA would.
        let anchors = [webpki::anchor_from_trusted_cert(ca.ca_der()).unwrap()];
        let end = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
        let when = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(NOW as u64));
        end.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            when,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        end.verify_is_valid_for_subject_name(
            &rustls::pki_types::ServerName::try_from("center.test").unwrap(),
        )
        .unwrap();
        // A client certificate verified for server use is refused by EKU.
        let key = KeyPair::generate().unwrap();
        let client = ca.issue_client("web-01", &csr(&key), DAY, NOW).unwrap();
        let client = der_of(&client.certificate_pem);
        let client = webpki::EndEntityCert::try_from(&client).unwrap();
        assert!(
            client
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &anchors,
                    &[],
                    when,
                    webpki::KeyUsage::server_auth(),
                    None,
                    None,
                )
                .is_err()
        );
    }

    /// A client trusting only `ca`, presenting `identity` (certificate PEM and key) if any.
    fn client_config(ca: &AgentCa, identity: Option<(&str, &KeyPair)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(match identity {
            None => builder.with_no_client_auth(),
            Some((pem, key)) => builder
                .with_client_auth_cert(
                    vec![der_of(pem)],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        })
    }

    /// A whole TLS handshake between the two configs in memory: the client's view of the
    /// server's chain, and the server's of the client's.
    #[allow(clippy::type_complexity)]
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<(rustls::ClientConnection, rustls::ServerConnection), rustls::Error> {
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..16 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn the_agent_api_accepts_its_own_agents_and_no_others_in_a_real_handshake() {
        let (_d, store) = store();
        let ca = AgentCa::load_or_create(&store, NOW).unwrap();
        let (_d2, other_store) = self::store();
        let other = AgentCa::load_or_create(&other_store, NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        // rustls checks validity by the wall clock: certificates made for now.
        let now = crate::clock::unix_seconds(&crate::clock::SystemClock);
        let ca_now = ca.issue_client("web-01", &csr(&key), 30 * DAY, now).unwrap();
        let foreign_now = other.issue_client("web-01", &csr(&key), 30 * DAY, now).unwrap();
        let server = ca.server_config(&["localhost".into()], now).unwrap();

        let (_, s) = handshake(
            server.clone(),
            client_config(&ca, Some((&ca_now.certificate_pem, &key))),
            "localhost",
        )
        .unwrap();
        let seen = s.peer_certificates().unwrap();
        assert_eq!(sha256_hex(&seen[0]), ca_now.sha256);

        // No certificate: the handshake works (enrollment), and the server sees none.
        let (_, s) = handshake(server.clone(), client_config(&ca, None), "localhost").unwrap();
        assert!(s.peer_certificates().is_none());

        // A certificate from another CA: refused in the handshake.
        let err = handshake(
            server.clone(),
            client_config(&ca, Some((&foreign_now.certificate_pem, &key))),
            "localhost",
        )
        .unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
        // The server's name is checked by the agent: another name is refused.
        assert!(handshake(server, client_config(&ca, None), "other.test").is_err());
    }

    #[test]
    fn a_csr_with_a_bad_signature_or_a_weak_key_is_refused() {
        let (_d, store) = store();
        let ca = AgentCa::load_or_create(&store, NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut bad = csr(&key);
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let err = ca.issue_client("web-01", &bad, DAY, NOW).unwrap_err();
        assert!(
            matches!(&err, CaError::Csr(m) if m.contains("signature")),
            "{err}"
        );
        let weak = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/certs/rsa1024.csr.der"
        ))
        .unwrap();
        let err = ca.issue_client("web-01", &weak, DAY, NOW).unwrap_err();
        assert!(
            matches!(&err, CaError::Csr(m) if m.contains("1024 bits")),
            "{err}"
        );
        let err = ca.issue_client("web-01", b"not a csr", DAY, NOW).unwrap_err();
        assert!(matches!(err, CaError::Csr(_)), "{err}");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(ca.issue_client("web-01", &csr(&ed), DAY, NOW).is_ok());
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(ca.issue_client("web-01", &csr(&p384), DAY, NOW).is_ok());
    }

    #[test]
    fn tokens_are_32_random_bytes_and_stored_by_their_hash() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&a)
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
