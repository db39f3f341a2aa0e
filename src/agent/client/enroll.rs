//! Enrollment and identity renewal. Enrollment pins the center by the agent CA's SHA-256
//! (`pin.rs`: the handshake fails before the token is sent when the chain does not hold
//! it), makes the identity key and the age identity here, sends a CSR with the token, and
//! stores what the center answers. Renewal sends a CSR for a fresh key over the current
//! identity and replaces the files.

use std::path::Path;

use age::secrecy::ExposeSecret as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::http::{CALL_TIMEOUT, CallError, Client};
use super::pin::{self, PinError};
use super::state::{AgentFile, StateDir, StateError};
use crate::agent::protocol::{EnrollRequest, EnrollResponse, RenewRequest, RenewResponse};
use crate::version;

/// Why enrollment or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// `--ca-sha256` is not a SHA-256.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// The center could not be reached, refused the handshake, or refused the request.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The center's answer does not fit what was asked.
    #[error("the center's answer is refused: {0}")]
    Answer(String),
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// A key could not be made.
    #[error("{0}")]
    Key(String),
}

impl EnrollError {
    /// Whether the center (or the pin) refused this agent, rather than a local failure: exit
    /// 1 rather than 3.
    pub fn refused(&self) -> bool {
        match self {
            Self::Call(CallError::Status { status, .. }) => (400..500).contains(status),
            Self::Call(CallError::Connect { why, .. }) => why.starts_with("TLS"),
            Self::Answer(_) => true,
            _ => false,
        }
    }
}

/// A new identity key (ECDSA P-256) and a CSR over it.
fn identity_request() -> Result<(rcgen::KeyPair, String), EnrollError> {
    let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tlsward agent");
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    Ok((key, csr))
}

/// Checks that `certificate_pem` is for `key`; its DER.
fn check_identity(certificate_pem: &str, key: &rcgen::KeyPair) -> Result<(), EnrollError> {
    let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|_| EnrollError::Answer("the client certificate is not PEM".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| EnrollError::Answer("the client certificate does not parse".into()))?;
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        return Err(EnrollError::Answer(
            "the client certificate is not for the key this agent made".into(),
        ));
    }
    Ok(())
}

/// Enrolls with the center at `server` using `token`, pinning its agent CA by `ca_sha256`,
/// and fills `state_dir`. Returns the agent's name. The token is sent once, only over a
/// handshake the pin accepted, and never logged.
pub async fn enroll(
    server: &str,
    token: &str,
    ca_sha256: &str,
    state_dir: &Path,
    now: i64,
) -> Result<AgentFile, EnrollError> {
    let pin = pin::parse_pin(ca_sha256)?;
    let tls = pin::enroll_config(pin).map_err(EnrollError::Key)?;
    let client = Client::new(server, tls)?;
    let state = StateDir::create(state_dir)?;
    let (key, csr_pem) = identity_request()?;
    let age = age::x25519::Identity::generate();
    let request = EnrollRequest {
        token: token.to_owned(),
        csr_pem,
        age_recipient: age.to_public().to_string(),
        version: version::VERSION.to_owned(),
    };
    let answer = client.post("/v1/enroll", &request, CALL_TIMEOUT).await?;
    drop(request);
    let answer: EnrollResponse = serde_json::from_slice(&answer)
        .map_err(|e| EnrollError::Answer(format!("not an enrollment answer: {e}")))?;
    let ca = CertificateDer::from_pem_slice(answer.ca_pem.as_bytes())
        .map_err(|_| EnrollError::Answer("the agent CA is not PEM".into()))?;
    if crate::cert::sha256_hex(ca.as_ref()) != pin::pin_hex(&pin) {
        return Err(EnrollError::Answer(
            "the agent CA it sent is not the pinned one".into(),
        ));
    }
    check_identity(&answer.certificate_pem, &key)?;
    if !crate::agent::client::valid_agent_name(&answer.agent) {
        return Err(EnrollError::Answer(
            "the agent name is not a valid name".into(),
        ));
    }
    state.write("identity.key", key.serialize_pem().as_bytes())?;
    state.write("identity.pem", answer.certificate_pem.as_bytes())?;
    state.write("ca.pem", answer.ca_pem.as_bytes())?;
    state.write(
        "age.key",
        format!("{}\n", age.to_string().expose_secret()).as_bytes(),
    )?;
    let file = AgentFile {
        agent: answer.agent,
        server: client.url().to_owned(),
        signing_key: answer.signing_key,
        ca_sha256: pin::pin_hex(&pin),
        identity_not_after: answer.not_after,
        identity_issued_at: now,
    };
    // Written last: its presence is what makes the directory enrolled.
    state.write_json("agent.json", &file)?;
    Ok(file)
}

/// The mTLS client config from the state dir: `ca.pem` the only root, the identity.
pub fn identity_tls(state: &StateDir) -> Result<std::sync::Arc<rustls::ClientConfig>, EnrollError> {
    let read = |rel: &str| -> Result<Vec<u8>, EnrollError> {
        state.read(rel)?.ok_or_else(|| {
            EnrollError::State(StateError::Io {
                path: state.path(rel),
                why: "missing".into(),
            })
        })
    };
    let corrupt = |rel: &str| {
        EnrollError::State(StateError::Corrupt {
            path: state.path(rel),
            why: "not PEM".into(),
        })
    };
    let ca = CertificateDer::from_pem_slice(&read("ca.pem")?).map_err(|_| corrupt("ca.pem"))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("identity.pem")?)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("identity.pem"))?;
    let key = PrivateKeyDer::from_pem_slice(&read("identity.key")?)
        .map_err(|_| corrupt("identity.key"))?;
    pin::identity_config(ca, chain, key).map_err(EnrollError::Key)
}

/// The age identity central keys are sealed to.
pub fn age_identity(state: &StateDir) -> Result<age::x25519::Identity, EnrollError> {
    let text = state.read("age.key")?.unwrap_or_default();
    String::from_utf8_lossy(&text).trim().parse().map_err(|_| {
        EnrollError::State(StateError::Corrupt {
            path: state.path("age.key"),
            why: "not an age X25519 identity".into(),
        })
    })
}

/// Whether the identity is due for renewal at `now`: two thirds of its life have passed.
pub fn renewal_due(file: &AgentFile, now: i64) -> bool {
    let life = file.identity_not_after - file.identity_issued_at;
    life > 0 && now >= file.identity_issued_at.saturating_add(life / 3 * 2)
}

/// Renews the identity over `client` (the current identity); returns the updated file.
pub async fn renew(
    state: &StateDir,
    file: &AgentFile,
    client: &Client,
    now: i64,
) -> Result<AgentFile, EnrollError> {
    let (key, csr_pem) = identity_request()?;
    let answer = client
        .post(
            "/v1/identity",
            &RenewRequest {
                csr_pem,
                version: version::VERSION.to_owned(),
            },
            CALL_TIMEOUT,
        )
        .await?;
    let answer: RenewResponse = serde_json::from_slice(&answer)
        .map_err(|e| EnrollError::Answer(format!("not a renewal answer: {e}")))?;
    check_identity(&answer.certificate_pem, &key)?;
    // The certificate first: a crash between the two leaves a pair that does not match,
    // which the next start refuses loudly rather than using a stale key quietly.
    state.write("identity.key.new", key.serialize_pem().as_bytes())?;
    state.write("identity.pem", answer.certificate_pem.as_bytes())?;
    std::fs::rename(state.path("identity.key.new"), state.path("identity.key")).map_err(|e| {
        StateError::Io {
            path: state.path("identity.key"),
            why: e.to_string(),
        }
    })?;
    let mut next = file.clone();
    next.identity_not_after = answer.not_after;
    next.identity_issued_at = now;
    state.write_json("agent.json", &next)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        let file = AgentFile {
            agent: "a".into(),
            server: "https://c:1".into(),
            signing_key: String::new(),
            ca_sha256: String::new(),
            identity_issued_at: 0,
            identity_not_after: 30,
        };
        assert!(!renewal_due(&file, 19));
        assert!(renewal_due(&file, 20));
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let (key, _) = identity_request().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        assert!(check_identity(&cert.pem(), &key).is_err());
        let mine = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        check_identity(&mine.pem(), &key).unwrap();
    }
}
