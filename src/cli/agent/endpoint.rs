//! `tlsward agent enroll` and `tlsward agent run`: on an endpoint host.

use std::path::Path;

/// `tlsward agent enroll`.
pub(super) fn enroll(
    server: &str,
    token: &str,
    ca_sha256: &str,
    state_dir: &Path,
) -> anyhow::Result<u8> {
    let _ = (server, token, ca_sha256, state_dir);
    anyhow::bail!("agent enrollment is not built yet")
}

/// `tlsward agent run`.
pub(super) fn run(config: &Path, once: bool) -> anyhow::Result<u8> {
    let _ = (config, once);
    anyhow::bail!("the agent is not built yet")
}
