//! `key = "agent"`: keys made on this host for a certificate, sealed in the state dir to
//! the agent's own age recipient, and the CSRs the center orders with. The key never leaves
//! the endpoint.

use crate::secret::Secret;

use super::state::StateDir;

/// The most keys kept per certificate (each CSR makes one; old ones go).
pub const MAX_KEYS: usize = 4;

/// A new key for `certificate` of `key_type`, sealed to `age` in `keys/<certificate>/`,
/// and a CSR (PEM) for `domains` over it.
pub fn make(
    state: &StateDir,
    age: &age::x25519::Identity,
    certificate: &str,
    key_type: &str,
    domains: &[String],
    stamp: i64,
) -> Result<String, String> {
    if !super::state::safe_name(certificate) {
        return Err(format!("{certificate:?} cannot be a file name"));
    }
    let alg = match key_type {
        "ecdsa-p256" | "" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "ecdsa-p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        other => {
            return Err(format!(
                "the agent makes ecdsa-p256 and ecdsa-p384 keys, not {}",
                crate::escape::visible(other)
            ));
        }
    };
    let key = rcgen::KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::new(domains.to_vec())
        .map_err(|e| e.to_string())?
        .serialize_request(&key)
        .map_err(|e| e.to_string())?
        .pem()
        .map_err(|e| e.to_string())?;
    let pkcs8 = Secret::new(key.serialize_der());
    let sealed = crate::agent::sign::seal_to(&age.to_public().to_string(), &pkcs8)
        .map_err(|e| e.to_string())?;
    state
        .write(
            &format!("keys/{certificate}/{stamp}.age"),
            sealed.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    prune(state, certificate);
    Ok(csr)
}

/// The key of `certificate` kept here whose public key is `leaf_der`'s.
pub fn matching(
    state: &StateDir,
    age: &age::x25519::Identity,
    certificate: &str,
    leaf_der: &[u8],
) -> Result<Secret, String> {
    let spki = x509_parser::parse_x509_certificate(leaf_der)
        .map_err(|e| format!("the bundle's leaf: {e}"))?
        .1
        .public_key()
        .raw
        .to_vec();
    for path in files(state, certificate) {
        let Ok(sealed) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(key) = crate::agent::sign::open_with(age, &sealed) else {
            continue;
        };
        let Ok(pair) = rcgen::KeyPair::try_from(key.expose()) else {
            continue;
        };
        if rcgen::PublicKeyData::subject_public_key_info(&pair) == spki {
            return Ok(key);
        }
    }
    Err(format!(
        "no key of this agent's for {certificate} matches the bundle's leaf"
    ))
}

fn files(state: &StateDir, certificate: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(state.path(&format!("keys/{certificate}")))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "age"))
        .collect();
    out.sort();
    out
}

fn prune(state: &StateDir, certificate: &str) {
    let all = files(state, certificate);
    let excess = all.len().saturating_sub(MAX_KEYS);
    for old in all.into_iter().take(excess) {
        let _ = std::fs::remove_file(old);
    }
}
