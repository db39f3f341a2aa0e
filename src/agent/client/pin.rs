//! The TLS side of reaching the center: at enrollment the agent knows nothing but the
//! agent CA's SHA-256 (`--ca-sha256`), so its verifier accepts a handshake only when one
//! of the certificates the server presents has that SHA-256 and the leaf verifies against
//! that certificate as the only root (webpki: the chain, the validity, the URL's host name
//! and the serverAuth EKU, so an agent's own clientAuth certificate cannot stand in for the
//! center's). Anything else fails the handshake, before a byte of the token is sent. After
//! enrollment the pinned CA (`ca.pem`) is the only root, and the agent shows its identity.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A SHA-256 fingerprint that is not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--ca-sha256 must be the 64 hex digits of a SHA-256 (colons allowed), got {0} digits")]
pub struct PinError(pub usize);

/// Parses a SHA-256 written as hex, upper or lower case, with or without colons.
pub fn parse_pin(text: &str) -> Result<[u8; 32], PinError> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PinError(digits.chars().count()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| PinError(64))?;
    Ok(out)
}

/// `pin` as the lower hex the center prints.
pub fn pin_hex(pin: &[u8; 32]) -> String {
    hex::encode(pin)
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The enrollment verifier: the pinned CA must be in the presented chain, and the leaf must
/// verify against it alone.
#[derive(Debug)]
pub struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCa {
    /// A verifier for the CA whose certificate has SHA-256 `pin`.
    pub fn new(pin: [u8; 32]) -> Self {
        Self {
            pin,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| sha256(c.as_ref()) == self.pin)
        else {
            return Err(rustls::Error::General(format!(
                "the center's chain does not hold the pinned agent CA {}",
                pin_hex(&self.pin)
            )));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned agent CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client config of enrollment: the [`PinnedCa`] verifier, no client certificate.
pub fn enroll_config(pin: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa::new(pin)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The client config after enrollment: `ca` (the pinned agent CA) the only root, and the
/// agent's identity (`chain`, `key`) as its client certificate.
pub fn identity_config(
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| format!("the agent CA: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the agent's identity: {e}"))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    use super::*;

    struct Ca {
        der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, name: &str, eku: ExtendedKeyUsagePurpose) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![eku];
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn check(
        pin: &CertificateDer<'_>,
        end: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        host: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        PinnedCa::new(sha256(pin.as_ref())).verify_server_cert(
            end,
            chain,
            &ServerName::try_from(host.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn a_server_certificate_under_the_pinned_ca_is_accepted() {
        let ca = ca("tlsward agent CA");
        let server = leaf(&ca, "center.test", ExtendedKeyUsagePurpose::ServerAuth);
        check(
            &ca.der,
            &server,
            std::slice::from_ref(&ca.der),
            "center.test",
        )
        .unwrap();
    }

    #[test]
    fn a_chain_without_the_pinned_ca_is_refused() {
        let pinned = ca("tlsward agent CA");
        let other = ca("tlsward agent CA");
        let server = leaf(&other, "center.test", ExtendedKeyUsagePurpose::ServerAuth);
        let e = check(
            &pinned.der,
            &server,
            std::slice::from_ref(&other.der),
            "center.test",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("does not hold the pinned agent CA"),
            "{e}"
        );
        // The pinned CA sent along, but the leaf is not under it.
        let e = check(
            &pinned.der,
            &server,
            &[other.der.clone(), pinned.der.clone()],
            "center.test",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("does not hold"), "{e}");
    }

    #[test]
    fn an_agent_client_certificate_cannot_stand_in_for_the_center() {
        let ca = ca("tlsward agent CA");
        let agent = leaf(&ca, "center.test", ExtendedKeyUsagePurpose::ClientAuth);
        let e = check(
            &ca.der,
            &agent,
            std::slice::from_ref(&ca.der),
            "center.test",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::InvalidPurpose)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::InvalidPurposeContext { .. }
                    )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn the_wrong_host_name_and_the_ca_itself_as_leaf_are_refused() {
        let ca = ca("tlsward agent CA");
        let server = leaf(&ca, "center.test", ExtendedKeyUsagePurpose::ServerAuth);
        assert!(
            check(
                &ca.der,
                &server,
                std::slice::from_ref(&ca.der),
                "other.test"
            )
            .is_err()
        );
        assert!(check(&ca.der, &ca.der, &[], "center.test").is_err());
    }

    #[test]
    fn pins_are_read_with_colons_and_either_case() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_pin(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        assert_eq!(pin_hex(&[0xab; 32]), "ab".repeat(32));
        assert_eq!(parse_pin("abcd"), Err(PinError(4)));
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
