//! Bundles the center signs and the agent checks, and keys sealed to one agent.
//!
//! The center signs each [`SignedBundle`] with an Ed25519 key the agent pinned at
//! enrollment; a bundle whose signature, agent, version or leaf does not check is refused
//! before anything is written. A shared (central) key travels age-encrypted to the agent's
//! own X25519 recipient: only that agent can open it.

use std::io::{Read, Write};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::protocol::{BUNDLE_CONTEXT, BundlePayload, SignedBundle};
use crate::secret::Secret;

/// Why a bundle, a key or a seal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not base64, not JSON, or a field out of shape.
    #[error("the bundle is malformed: {0}")]
    Malformed(String),
    /// The signature does not check against the pinned key.
    #[error("the bundle's signature does not check against the center's pinned key")]
    Signature,
    /// Signed, but for another agent, certificate or version than asked for.
    #[error("the bundle is not the one asked for: {0}")]
    Mismatch(String),
    /// The chain's leaf does not have the bundle's SHA-256.
    #[error("the bundle's chain does not hold the leaf {0}")]
    Leaf(String),
    /// A key could not be made, sealed or opened.
    #[error("{0}")]
    Key(String),
}

/// The center's bundle-signing key (Ed25519, PKCS#8 v2).
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.public_base64())
            .finish()
    }
}

impl Signer {
    /// A new signing key, as PKCS#8 to be sealed in the store.
    pub fn generate() -> Result<Secret, BundleError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|doc| Secret::new(doc.as_ref().to_vec()))
            .map_err(|_| BundleError::Key("cannot generate an Ed25519 key".into()))
    }

    /// The signer of a stored PKCS#8 key.
    pub fn from_pkcs8(pkcs8: &Secret) -> Result<Self, BundleError> {
        Ed25519KeyPair::from_pkcs8(pkcs8.expose())
            .map(|pair| Self { pair })
            .map_err(|_| BundleError::Key("the bundle-signing key is not Ed25519 PKCS#8".into()))
    }

    /// The public key agents pin, base64.
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// `payload` serialized and signed.
    pub fn sign(&self, payload: &BundlePayload) -> SignedBundle {
        let bytes = serde_json::to_vec(payload).unwrap_or_default();
        let mut message = BUNDLE_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        let signature = self.pair.sign(&message);
        SignedBundle {
            payload: STANDARD.encode(&bytes),
            signature: STANDARD.encode(signature.as_ref()),
        }
    }
}

/// What the agent expects of a bundle it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    /// Its own name.
    pub agent: &'a str,
    /// The certificate.
    pub certificate: &'a str,
    /// The version id.
    pub version: i64,
    /// The leaf's SHA-256 (hex), from the desired state.
    pub sha256: &'a str,
}

/// Checks `bundle`'s signature against the pinned `public_key` (base64), then that it is
/// the bundle `expected` and that its chain's leaf has that SHA-256. Only then is the
/// payload parsed further by the caller.
pub fn verify(
    bundle: &SignedBundle,
    public_key: &str,
    expected: &Expected<'_>,
) -> Result<BundlePayload, BundleError> {
    let key = STANDARD
        .decode(public_key.trim())
        .map_err(|_| BundleError::Key("the pinned signing key is not base64".into()))?;
    let bytes = STANDARD
        .decode(bundle.payload.as_bytes())
        .map_err(|_| BundleError::Malformed("the payload is not base64".into()))?;
    let signature = STANDARD
        .decode(bundle.signature.as_bytes())
        .map_err(|_| BundleError::Malformed("the signature is not base64".into()))?;
    let mut message = BUNDLE_CONTEXT.to_vec();
    message.extend_from_slice(&bytes);
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&message, &signature)
        .map_err(|_| BundleError::Signature)?;
    let payload: BundlePayload = serde_json::from_slice(&bytes)
        .map_err(|e| BundleError::Malformed(format!("the payload is not a bundle: {e}")))?;
    let mismatch = |what: &str| Err(BundleError::Mismatch(what.to_owned()));
    if payload.agent != expected.agent {
        return mismatch("it was made for another agent");
    }
    if payload.certificate != expected.certificate {
        return mismatch("it is for another certificate");
    }
    if payload.version != expected.version {
        return mismatch("it is another version");
    }
    if !payload.sha256.eq_ignore_ascii_case(expected.sha256) {
        return mismatch("its leaf is not the one the desired state names");
    }
    let leaf = leaf_sha256(&payload.chain_pem)?;
    if !leaf.eq_ignore_ascii_case(expected.sha256) {
        return Err(BundleError::Leaf(expected.sha256.to_owned()));
    }
    Ok(payload)
}

/// The SHA-256 (lower-case hex) of the first certificate in `chain_pem`.
pub fn leaf_sha256(chain_pem: &str) -> Result<String, BundleError> {
    let mut reader = chain_pem.as_bytes();
    let leaf = rustls_pki_types::pem::PemObject::pem_reader_iter(&mut reader)
        .next()
        .ok_or_else(|| BundleError::Malformed("the chain holds no certificate".into()))?
        .map_err(|e: rustls_pki_types::pem::Error| BundleError::Malformed(e.to_string()))
        .map(|c: rustls_pki_types::CertificateDer<'static>| c)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// `key` encrypted to the age X25519 `recipient` (`age1...`), base64 (standard, padded).
pub fn seal_to(recipient: &str, key: &Secret) -> Result<String, BundleError> {
    let recipient = age::x25519::Recipient::from_str(recipient.trim())
        .map_err(|e| BundleError::Key(format!("not an age X25519 recipient: {e}")))?;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| BundleError::Key(e.to_string()))?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| BundleError::Key(e.to_string()))?;
    writer
        .write_all(key.expose())
        .and_then(|()| writer.finish())
        .map_err(|e| BundleError::Key(e.to_string()))?;
    Ok(STANDARD.encode(&out))
}

/// Opens what [`seal_to`] sealed, with the agent's identity.
pub fn open_with(identity: &age::x25519::Identity, sealed: &str) -> Result<Secret, BundleError> {
    let bytes = STANDARD
        .decode(sealed.trim())
        .map_err(|_| BundleError::Key("the sealed key is not base64".into()))?;
    let decryptor = age::Decryptor::new(bytes.as_slice())
        .map_err(|e| BundleError::Key(format!("the sealed key is not age: {e}")))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|_| BundleError::Key("the key is not sealed to this agent".into()))?;
    let mut plain = Vec::new();
    reader
        .read_to_end(&mut plain)
        .map_err(|e| BundleError::Key(e.to_string()))?;
    Ok(Secret::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::KeyMode;

    fn chain() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["web.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
        let hex = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        (cert.pem(), hex)
    }

    fn payload(chain_pem: String, sha256: String) -> BundlePayload {
        BundlePayload {
            agent: "web-01".into(),
            certificate: "site".into(),
            version: 7,
            sha256,
            chain_pem,
            key: KeyMode::Agent,
            sealed_key: None,
            signed_at: 1,
        }
    }

    fn expected(sha256: &str) -> Expected<'_> {
        Expected {
            agent: "web-01",
            certificate: "site",
            version: 7,
            sha256,
        }
    }

    #[test]
    fn a_signed_bundle_checks_and_every_altered_byte_is_refused() {
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let (pem, sha) = chain();
        let bundle = signer.sign(&payload(pem, sha.clone()));
        let public = signer.public_base64();
        assert!(verify(&bundle, &public, &expected(&sha)).is_ok());
        let bytes = STANDARD.decode(&bundle.payload).unwrap();
        for i in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            let altered = SignedBundle {
                payload: STANDARD.encode(&flipped),
                signature: bundle.signature.clone(),
            };
            assert_eq!(
                verify(&altered, &public, &expected(&sha)),
                Err(BundleError::Signature),
                "byte {i}"
            );
        }
        let other = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        assert_eq!(
            verify(&bundle, &other.public_base64(), &expected(&sha)),
            Err(BundleError::Signature)
        );
    }

    #[test]
    fn a_validly_signed_bundle_for_something_else_is_refused() {
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let (pem, sha) = chain();
        let (other_pem, other_sha) = chain();
        let public = signer.public_base64();
        let mut p = payload(pem.clone(), sha.clone());
        p.agent = "web-02".into();
        assert!(matches!(
            verify(&signer.sign(&p), &public, &expected(&sha)),
            Err(BundleError::Mismatch(_))
        ));
        // Another valid certificate under the expected fingerprint's name.
        let p = payload(other_pem, sha.clone());
        assert_eq!(
            verify(&signer.sign(&p), &public, &expected(&sha)),
            Err(BundleError::Leaf(sha.clone()))
        );
        let p = payload(pem, other_sha.clone());
        assert!(matches!(
            verify(&signer.sign(&p), &public, &expected(&sha)),
            Err(BundleError::Mismatch(_))
        ));
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_agent() {
        let id = age::x25519::Identity::generate();
        let sealed = seal_to(&id.to_public().to_string(), &Secret::new(b"pkcs8".to_vec())).unwrap();
        assert!(!sealed.contains("pkcs8"));
        assert_eq!(open_with(&id, &sealed).unwrap().expose(), b"pkcs8");
        let other = age::x25519::Identity::generate();
        assert!(open_with(&other, &sealed).is_err());
        assert!(seal_to("not-a-recipient", &Secret::new(vec![1])).is_err());
    }
}
