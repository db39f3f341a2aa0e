//! Loading trust anchors and client identities from files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cert::{Origin, TrustStore};

/// A problem loading trust anchors or a client identity.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The system store is empty or unreadable, and no other anchors were given.
    #[error("no trust anchors: the system store is empty or unreadable ({0}); pass --ca-file")]
    NoAnchors(String),
}

fn file_err(path: &Path, why: impl fmt::Display) -> TrustError {
    TrustError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// Reads every certificate of a PEM file (a regular file, size-capped). A file with none is
/// an error.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    crate::files::read_pem_certs(path).map_err(|e| file_err(path, e.why()))
}

/// Builds a trust store: the system's roots (unless `system` is false) plus every certificate
/// in `ca_files`.
pub fn load_trust(system: bool, ca_files: &[PathBuf]) -> Result<TrustStore, TrustError> {
    let mut store = TrustStore::empty();
    let mut system_problem = String::new();
    if system {
        let found = rustls_native_certs::load_native_certs();
        if let Some(e) = found.errors.first() {
            system_problem = e.to_string();
        }
        store.add_all(&found.certs, Origin::Public);
    }
    for path in ca_files {
        let certs = read_pem_certs(path)?;
        if store.add_all(&certs, Origin::Private) == 0 {
            return Err(file_err(path, "no certificate in it can be a trust anchor"));
        }
    }
    if store.is_empty() {
        if system_problem.is_empty() {
            system_problem = "no certificates found".into();
        }
        return Err(TrustError::NoAnchors(system_problem));
    }
    Ok(store)
}

/// A client certificate chain and its private key, for mutual TLS.
pub struct ClientIdentity {
    pub(crate) key: Arc<CertifiedKey>,
}

impl fmt::Debug for ClientIdentity {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certs", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TrustError> {
        let certs = read_pem_certs(cert)?;
        // The error text of a key parse never contains key bytes.
        let der = crate::files::read_pem_key(key).map_err(|e| file_err(key, e.why()))?;
        Self::new(certs, der).map_err(|e| file_err(key, e))
    }

    /// Builds an identity from DER parts.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, String> {
        let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
        let key = CertifiedKey::from_der(certs, key, &provider)
            .map_err(|e| format!("unusable client key: {e}"))?;
        Ok(Self { key: Arc::new(key) })
    }
}
