//! The HTTP side: Prometheus metrics over hyper.
//!
//! Owns: `/metrics` (scheduled results, OpenMetrics or text format by `Accept`, every family
//! or the lean set by [`MetricsMode`], gzip when asked by `Accept-Encoding`, encoded in
//! bounded chunks while it is sent), `/probe`
//! (blackbox-style, a fresh registry per request), `/-/healthy`, `/-/ready`, `/-/reload`,
//! `/api/targets`, and the web protection of all of them (TLS, basic auth with bcrypt hashes
//! checked off the async workers, bearer tokens by SHA-256, which targets `/probe` may
//! probe). Connections are served by [`crate::listen`] under its limits. Must not know the
//! config file or how reloads are done: it asks through a channel.

mod allow;
mod api;
mod auth;
mod gzip;
mod metrics;
mod server;
mod stream;
mod text;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use allow::{Allowlist, ProbeTargets, Refusal};
pub use metrics::MetricsMode;
pub use server::{ExporterState, ProbeProfiles, ReloadRequest, serve};

/// Protection for every endpoint, like Prometheus exporter-toolkit's web config.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name to bcrypt hash; when any are set (or tokens), requests must authenticate.
    pub basic_auth_users: BTreeMap<String, String>,
    /// SHA-256 digests of accepted bearer tokens.
    pub bearer_token_sha256: Vec<[u8; 32]>,
}

impl WebConfig {
    /// No TLS, no authentication.
    pub fn open() -> Self {
        Self::default()
    }

    /// Whether requests must carry credentials.
    pub fn requires_auth(&self) -> bool {
        !self.basic_auth_users.is_empty() || !self.bearer_token_sha256.is_empty()
    }
}

/// Loads a PEM certificate chain and key for serving HTTPS.
pub fn load_server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = crate::files::read_pem_certs(cert).map_err(|e| e.to_string())?;
    let key = crate::files::read_pem_key(key).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Arc::new(config))
}
