//! `tlsward agent token create`, `agent list`, `agent revoke`: on the center, against its
//! store.

use std::path::Path;
use std::time::Duration;

use crate::cli::output::OutputFormat;

/// `tlsward agent token create NAME`.
pub(super) fn token_create(
    config: &Path,
    name: &str,
    ttl: Duration,
    output: OutputFormat,
) -> anyhow::Result<u8> {
    let _ = (config, name, ttl, output);
    anyhow::bail!("agent tokens are not built yet")
}

/// `tlsward agent list`.
pub(super) fn list(config: &Path, output: OutputFormat) -> anyhow::Result<u8> {
    let _ = (config, output);
    anyhow::bail!("agent list is not built yet")
}

/// `tlsward agent revoke NAME`.
pub(super) fn revoke(config: &Path, name: &str) -> anyhow::Result<u8> {
    let _ = (config, name);
    anyhow::bail!("agent revoke is not built yet")
}
