//! How a hook's `http` call checks the server's certificate: by the CA roots (the system's,
//! or the grant's `http_ca_file`) and the name, or, when the grant lists `http_pin_sha256`,
//! by the SHA-256 of the leaf alone, for an appliance whose certificate is self-signed (an
//! `openssl req -x509` certificate is a CA, which path validation refuses as a server's
//! leaf with `CaUsedAsEndEntity`).
//!
//! Either way the handshake's signature is verified with the leaf's public key (rustls's
//! `verify_tls12_signature`/`verify_tls13_signature` over the crypto provider's algorithms),
//! so a server presenting a pinned certificate without its key fails the handshake. The
//! verifier also remembers the leaf it refused, so the hook's error can show its
//! fingerprint for the operator to compare and pin.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::cert::sha256_hex;

/// `text` as a SHA-256 fingerprint in lowercase hex: 64 hex digits, with or without the
/// colons `openssl x509 -fingerprint -sha256` prints between bytes, any case.
pub fn parse_pin(text: &str) -> Result<String, String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!(
            "{:?} is not a SHA-256 fingerprint (64 hex digits, as `openssl x509 -noout \
             -fingerprint -sha256` prints them)",
            crate::escape::visible_within(text, 100)
        ))
    }
}

/// A leaf the verifier refused: why, and its fingerprint.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) error: rustls::Error,
    pub(crate) sha256: String,
}

/// The server certificate verifier of one hook `http` call.
#[derive(Debug)]
pub(crate) struct HookVerifier {
    /// Path validation, when no pins are given.
    roots: Option<Arc<WebPkiServerVerifier>>,
    /// The accepted leaves' SHA-256, lowercase hex; when not empty, `roots` is None.
    pins: Vec<String>,
    provider: Arc<CryptoProvider>,
    refused: Mutex<Option<Refused>>,
}

impl HookVerifier {
    /// A client config for one call: pinned when `pins` is not empty, else verified by
    /// `http_ca_file`'s roots or the system's.
    pub(crate) fn client_config(
        ca_file: Option<&std::path::Path>,
        pins: &[String],
    ) -> Result<(rustls::ClientConfig, Arc<Self>), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = if pins.is_empty() {
            let roots = Arc::new(crate::files::root_store(ca_file)?);
            Some(
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let verifier = Arc::new(Self {
            roots,
            pins: pins.to_vec(),
            provider: provider.clone(),
            refused: Mutex::new(None),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok((config, verifier))
    }

    /// The leaf refused during the call, if one was.
    pub(crate) fn refused(&self) -> Option<Refused> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn refuse(&self, error: rustls::Error, leaf: &CertificateDer<'_>) -> rustls::Error {
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(Refused {
            error: error.clone(),
            sha256: sha256_hex(leaf),
        });
        error
    }
}

impl ServerCertVerifier for HookVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.roots {
            Some(roots) => roots
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| self.refuse(e, end_entity)),
            None if self.pins.contains(&sha256_hex(end_entity)) => {
                Ok(ServerCertVerified::assertion())
            }
            None => Err(self.refuse(
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
                end_entity,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_64_hex_digits_with_or_without_colons() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&hex), Ok(hex.clone()));
        assert_eq!(parse_pin(&"AB".repeat(32)), Ok(hex.clone()));
        assert_eq!(parse_pin(&vec!["AB"; 32].join(":")), Ok(hex));
        for bad in ["", "ab", &"ab".repeat(33), &"zz".repeat(32)] {
            let e = parse_pin(bad).unwrap_err();
            assert!(e.contains("is not a SHA-256 fingerprint"), "{e}");
        }
    }
}
