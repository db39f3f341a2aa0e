//! Facts about one certificate, read from its DER with x509-parser.

use std::fmt;
use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED448, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::CertError;

/// The public key of a certificate, as far as its strength is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with this modulus size in bits.
    Rsa(usize),
    /// ECDSA on a named curve.
    Ec(Curve),
    /// Ed25519 (EdDSA).
    Ed25519,
    /// Ed448 (EdDSA).
    Ed448,
    /// DSA with this size in bits (deprecated everywhere).
    Dsa(usize),
    /// Anything else.
    Other,
}

/// A named elliptic curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
    /// A curve tlsward does not name, with its field size in bits.
    Other(usize),
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa(bits) => write!(f, "RSA {bits}"),
            Self::Ec(Curve::P256) => f.write_str("ECDSA P-256"),
            Self::Ec(Curve::P384) => f.write_str("ECDSA P-384"),
            Self::Ec(Curve::P521) => f.write_str("ECDSA P-521"),
            Self::Ec(Curve::Other(bits)) => write!(f, "ECDSA {bits}-bit curve"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Ed448 => f.write_str("Ed448"),
            Self::Dsa(bits) => write!(f, "DSA {bits}"),
            Self::Other => f.write_str("unknown"),
        }
    }
}

/// What tlsward reports about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject as an RFC 4514-style string, e.g. `CN=good.test`.
    pub subject: String,
    /// The issuer, same form.
    pub issuer: String,
    /// The serial number as lowercase hex, as encoded (leading zero bytes kept).
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DNS names from the subjectAltName extension, as written (A-labels for IDNs).
    pub dns_names: Vec<String>,
    /// IP addresses from the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
    /// Whether the certificate has a subjectAltName extension at all.
    pub has_san: bool,
    /// SHA-256 of the DER, lowercase hex: the certificate's fingerprint.
    pub sha256: String,
    /// The public key type and size.
    pub public_key: KeyKind,
    /// The signature algorithm's conventional name, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// Whether the signature algorithm hashes with MD2, MD5 or SHA-1.
    pub weak_signature: bool,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Subject and issuer are the same name (a root, or a self-signed leaf).
    pub self_issued: bool,
    /// DER of the subject name, for linking a chain.
    pub(crate) subject_der: Vec<u8>,
    /// DER of the issuer name, for linking a chain.
    pub(crate) issuer_der: Vec<u8>,
    /// subjectKeyIdentifier, when present.
    pub(crate) ski: Option<Vec<u8>>,
    /// authorityKeyIdentifier's keyIdentifier, when present.
    pub(crate) aki: Option<Vec<u8>>,
}

impl CertFacts {
    /// Reads the facts from one DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| CertError::Malformed(format!("not a valid X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed(format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            )));
        }
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        let mut has_san = false;
        let mut ski = None;
        let mut aki = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    has_san = true;
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                            GeneralName::IPAddress(bytes) => {
                                if let Some(ip) = ip_from_bytes(bytes) {
                                    ip_addresses.push(ip);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(id) => {
                    aki = id.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                _ => {}
            }
        }
        let sig_oid = &cert.signature_algorithm.algorithm;
        let signature_algorithm = oid2sn(sig_oid, oid_registry())
            .map(str::to_owned)
            .unwrap_or_else(|_| sig_oid.to_id_string());
        let lower = signature_algorithm.to_ascii_lowercase();
        let weak_signature =
            lower.contains("sha1") || lower.contains("md5") || lower.contains("md2");
        let subject_der = cert.subject().as_raw().to_vec();
        let issuer_der = cert.issuer().as_raw().to_vec();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: hex::encode(cert.raw_serial()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            dns_names,
            ip_addresses,
            has_san,
            sha256: sha256_hex(der),
            public_key: key_kind(&cert),
            signature_algorithm,
            weak_signature,
            is_ca: cert.is_ca(),
            self_issued: subject_der == issuer_der,
            subject_der,
            issuer_der,
            ski,
            aki,
        })
    }

    /// Fractional days from `now` until notAfter (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> f64 {
        (self.not_after - now).as_seconds_f64() / 86_400.0
    }

    /// The certificate's ARI identifier (RFC 9773 §4.1), when it names its issuer's key: the
    /// base64url of the authorityKeyIdentifier's keyIdentifier, a dot, and the base64url of the
    /// serial number's DER content bytes, so with the leading zero byte a serial whose first
    /// byte has its high bit set must carry (RFC 9773's own example, `AIdlQyE`, is 0x0087654321).
    pub fn ari_id(&self) -> Option<String> {
        let serial: Vec<u8> = (0..self.serial.len() / 2)
            .map(|i| u8::from_str_radix(&self.serial[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .ok()?;
        Some(ari_identifier(self.aki.as_deref()?, &serial))
    }

    /// Whether `issuer` plausibly issued `self`: names match and, when both carry them, the
    /// authority and subject key identifiers match too (RFC 5280 §4.2.1.1).
    pub(crate) fn issued_by(&self, issuer: &Self) -> bool {
        if self.issuer_der != issuer.subject_der {
            return false;
        }
        match (&self.aki, &issuer.ski) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => true,
        }
    }
}

fn key_kind(cert: &X509Certificate<'_>) -> KeyKind {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_SIG_ED25519 {
        return KeyKind::Ed25519;
    }
    if *alg == OID_SIG_ED448 {
        return KeyKind::Ed448;
    }
    let parsed = spki.parsed();
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return match parsed {
            Ok(PublicKey::RSA(rsa)) => KeyKind::Rsa(rsa.key_size()),
            _ => KeyKind::Other,
        };
    }
    if *alg == OID_KEY_TYPE_DSA {
        return KeyKind::Dsa(parsed.map(|k| k.key_size()).unwrap_or(0));
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return KeyKind::Ec(match curve {
            Some(c) if c == OID_EC_P256 => Curve::P256,
            Some(c) if c == OID_NIST_EC_P384 => Curve::P384,
            Some(c) if c == OID_NIST_EC_P521 => Curve::P521,
            _ => Curve::Other(parsed.map(|k| k.key_size()).unwrap_or(0)),
        });
    }
    KeyKind::Other
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// `AKI.serial` in base64url without padding, from the keyIdentifier and the serial number's
/// DER content bytes (RFC 9773 §4.1).
fn ari_identifier(aki: &[u8], serial: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(aki), b64.encode(serial))
}

/// The SHA-256 fingerprint of `der` as lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf with this serial (its content bytes as rcgen writes them) from a CA whose key
    /// identifier is known; returns the leaf's facts and that identifier.
    fn leaf_with_serial(serial: &[u8]) -> (CertFacts, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ski = CertFacts::parse(ca_cert.der()).unwrap().ski.unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ari.test".to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &issuer).unwrap();
        (CertFacts::parse(leaf.der()).unwrap(), ski)
    }

    #[test]
    fn the_ari_identifier_of_rfc_9773s_example() {
        let aki = [
            0x69, 0x88, 0x5b, 0x6b, 0x87, 0x46, 0x40, 0x41, 0xe1, 0xb3, 0x7b, 0x84, 0x7b, 0xa0,
            0xae, 0x2c, 0xde, 0x01, 0xc8, 0xd4,
        ];
        assert_eq!(
            ari_identifier(&aki, &[0x00, 0x87, 0x65, 0x43, 0x21]),
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        );
    }

    #[test]
    fn a_serial_with_the_high_bit_set_keeps_its_leading_zero_in_the_ari_identifier() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // The first byte's high bit is set: DER writes 00 80 01 02.
        let (facts, ski) = leaf_with_serial(&[0x80, 0x01, 0x02]);
        assert_eq!(facts.serial, "00800102");
        assert_eq!(
            facts.ari_id().unwrap(),
            format!("{}.AIABAg", b64.encode(&ski))
        );
        // Not set: the bytes as they are.
        let (facts, ski) = leaf_with_serial(&[0x7f, 0x01, 0x02]);
        assert_eq!(facts.serial, "7f0102");
        assert_eq!(
            facts.ari_id().unwrap(),
            format!("{}.fwEC", b64.encode(&ski))
        );
        // Without an authorityKeyIdentifier there is no identifier.
        let key = rcgen::KeyPair::generate().unwrap();
        let own = rcgen::CertificateParams::new(vec!["self.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(CertFacts::parse(own.der()).unwrap().ari_id(), None);
    }
}
