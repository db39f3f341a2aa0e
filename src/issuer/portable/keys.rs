//! Account keys: P-256 PKCS#8 from a JWK, PEM or SEC1, checked by ring; RFC 7638 thumbprints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use super::AccountError;
use crate::store::Secret;

/// The P-256 key pair of PKCS#8 DER; ring checks that its public half matches.
pub(super) fn key_pair(pkcs8: &[u8]) -> Result<EcdsaKeyPair, AccountError> {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| {
        AccountError::Key(
            "not an ECDSA P-256 private key (instant-acme, tlsward's ACME client, signs with ES256 only)"
                .into(),
        )
    })
}

/// The public JWK (RFC 7517) of a P-256 key pair, in RFC 7638's canonical form: its
/// required members in lexicographic order, no whitespace.
pub(super) fn public_jwk(pair: &EcdsaKeyPair) -> Result<String, AccountError> {
    let point = pair.public_key().as_ref();
    let (x, y) = point
        .get(1..33)
        .zip(point.get(33..65))
        .ok_or_else(|| AccountError::Key("unexpected public key length".into()))?;
    Ok(format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    ))
}

/// The RFC 7638 thumbprint of a P-256 key: SHA-256 over its canonical JWK, base64url.
pub fn thumbprint(pkcs8: &Secret) -> Result<String, AccountError> {
    let jwk = public_jwk(&key_pair(pkcs8.expose())?)?;
    Ok(URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes())))
}

/// A new P-256 account key, as PKCS#8 DER.
pub(super) fn new_key() -> Result<Secret, AccountError> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| AccountError::Key("cannot generate a key".into()))?;
    Ok(Secret::new(pkcs8.as_ref().to_vec()))
}

/// A flattened JWS (RFC 7515 §7.2.2) of `payload` under `protected`, signed ES256 with `pair`
/// (RFC 7518 §3.4: the fixed-width `r || s`).
pub(super) fn jws(
    pair: &EcdsaKeyPair,
    protected: &Value,
    payload: &[u8],
) -> Result<Value, AccountError> {
    let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let signature = pair
        .sign(
            &ring::rand::SystemRandom::new(),
            format!("{protected}.{payload}").as_bytes(),
        )
        .map_err(|_| AccountError::Key("cannot sign with the account key".into()))?;
    Ok(serde_json::json!({
        "protected": protected,
        "payload": payload,
        "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
    }))
}

/// The DER prefix of a PKCS#8 P-256 key (RFC 5915 inside RFC 5208), up to the private
/// scalar; then [`PKCS8_MIDDLE`] and the uncompressed public point.
pub(super) const PKCS8_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
/// Between the scalar and the public point: `[1] BIT STRING` of 66 bytes.
pub(super) const PKCS8_MIDDLE: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
/// The OID of P-256 (prime256v1), DER content bytes.
pub(super) const P256_OID: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// PKCS#8 from a P-256 scalar (up to 32 bytes, left-padded) and an uncompressed point;
/// checked by ring (the point must be the scalar's).
pub(super) fn pkcs8_from_parts(d: &[u8], point: &[u8]) -> Result<Secret, AccountError> {
    if d.is_empty() || d.len() > 32 || point.len() != 65 || point[0] != 0x04 {
        return Err(AccountError::Key("not a P-256 key".into()));
    }
    let mut der = Vec::with_capacity(138);
    der.extend_from_slice(&PKCS8_PREFIX);
    der.resize(der.len() + 32 - d.len(), 0);
    der.extend_from_slice(d);
    der.extend_from_slice(&PKCS8_MIDDLE);
    der.extend_from_slice(point);
    let der = Secret::new(der);
    key_pair(der.expose()).map_err(|_| {
        AccountError::Key("the key's public and private halves do not match".into())
    })?;
    Ok(der)
}

/// A JWK's P-256 private key as PKCS#8.
pub(super) fn from_jwk(jwk: &Value) -> Result<Secret, AccountError> {
    match jwk["kty"].as_str() {
        Some("EC") => {}
        Some("RSA") => {
            return Err(AccountError::Key(
                "an RSA key: instant-acme, tlsward's ACME client, signs with ECDSA P-256 only \
                 (certbot makes RSA account keys unless told otherwise)"
                    .into(),
            ));
        }
        _ => return Err(AccountError::Key("not a JWK (no kty EC)".into())),
    }
    if jwk["crv"] != "P-256" {
        return Err(AccountError::Key(
            "an EC key on another curve than P-256 (instant-acme signs with ES256 only)".into(),
        ));
    }
    let member = |name: &str| -> Result<zeroize::Zeroizing<Vec<u8>>, AccountError> {
        let text = jwk[name]
            .as_str()
            .ok_or_else(|| AccountError::Key(format!("the JWK has no {name:?}")))?;
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map(zeroize::Zeroizing::new)
            .map_err(|_| AccountError::Key(format!("the JWK's {name:?} is not base64url")))
    };
    let (d, x, y) = (member("d")?, member("x")?, member("y")?);
    if x.len() != 32 || y.len() != 32 {
        return Err(AccountError::Key("the JWK's point is not on P-256".into()));
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    pkcs8_from_parts(&d, &point)
}

/// A PEM private key as PKCS#8: PKCS#8 as it is, SEC1 (`EC PRIVATE KEY`) rewrapped.
pub(super) fn from_pem(pem: &[u8]) -> Result<Secret, AccountError> {
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| AccountError::Key("no PEM private key in the file".into()))?;
    match key {
        PrivateKeyDer::Pkcs8(der) => {
            let der = Secret::new(der.secret_pkcs8_der().to_vec());
            key_pair(der.expose())?;
            Ok(der)
        }
        PrivateKeyDer::Sec1(der) => from_sec1(der.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(_) => Err(AccountError::Key(
            "an RSA key: instant-acme, tlsward's ACME client, signs with ECDSA P-256 only".into(),
        )),
        _ => Err(AccountError::Key("an unknown kind of private key".into())),
    }
}

/// One DER TLV: its tag, its content and what follows. `None` when malformed.
pub(super) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, start) = match first {
        0..=0x7f => (usize::from(first), 2),
        0x81 => (usize::from(*input.get(2)?), 3),
        0x82 => (
            (usize::from(*input.get(2)?) << 8) | usize::from(*input.get(3)?),
            4,
        ),
        _ => return None,
    };
    let end = len.checked_add(start)?;
    Some((tag, input.get(start..end)?, input.get(end..)?))
}

/// A SEC1 `ECPrivateKey` (RFC 5915 §3) on P-256 with its public key, as PKCS#8.
pub(super) fn from_sec1(der: &[u8]) -> Result<Secret, AccountError> {
    let bad = || AccountError::Key("a malformed EC PRIVATE KEY".into());
    let (0x30, body, _) = tlv(der).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x02, [1], rest) = tlv(body).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x04, d, mut rest) = tlv(rest).ok_or_else(bad)? else {
        return Err(bad());
    };
    let mut point = None;
    while !rest.is_empty() {
        let (tag, content, next) = tlv(rest).ok_or_else(bad)?;
        match (tag, tlv(content)) {
            (0xa0, Some((0x06, oid, _))) if oid != P256_OID => {
                return Err(AccountError::Key(
                    "an EC key on another curve than P-256 (instant-acme signs with ES256 only)"
                        .into(),
                ));
            }
            (0xa1, Some((0x03, [0, bits @ ..], _))) => point = Some(bits),
            _ => {}
        }
        rest = next;
    }
    let point = point.ok_or_else(|| {
        AccountError::Key(
            "the EC PRIVATE KEY has no public key: convert it with `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        )
    })?;
    pkcs8_from_parts(d, point)
}
