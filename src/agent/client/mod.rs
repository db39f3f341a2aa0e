//! `tlsward agent` on an endpoint host: enrollment (`enroll.rs`, over the pinned verifier
//! of `pin.rs`), the state directory (`state.rs`), the agent's config (`config.rs`), the
//! center's HTTPS API (`http.rs`), the loop (`run.rs`) with its backoff (pure
//! `backoff.rs`), one deployment with its local probe and roll back (`deploy.rs`), and
//! `key = "agent"` keys (`keys.rs`). It listens on no port, and never logs a token or a key.

pub mod backoff;
pub mod config;
pub mod deploy;
pub mod enroll;
pub mod http;
pub mod keys;
pub mod pin;
pub mod run;
pub mod state;

/// Whether `name` can be an agent's name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}` (it becomes a
/// metric label and a file name).
pub fn valid_agent_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
