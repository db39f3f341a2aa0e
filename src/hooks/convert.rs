//! Certificate formats the host writes for hooks: PEM and DER files, PKCS#12 and Java KeyStore.
//!
//! Pure: bytes in, bytes out. No files, no clock (the JKS creation date is passed in); the
//! only outside input is the system random generator, for salts.
//!
//! Buffers that hold private key bytes are [`Zeroizing`]: the output, and the scratch space of
//! the PEM and JKS encoders. The PKCS#12 encoder (`p12-keystore`) keeps its own copy of the key
//! while writing, which it does not wipe.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use ring::digest::{self, SHA1_FOR_LEGACY_USE_ONLY};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

/// A format the host converts to (names match the WIT enum `cert-format` in
/// `hooks/wit/hook.wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The leaf alone, PEM.
    PemCert,
    /// The intermediates alone, PEM, in order (empty when the leaf has none).
    PemChain,
    /// The leaf then the intermediates, PEM.
    PemFullchain,
    /// The private key, PKCS#8 PEM (`PRIVATE KEY`).
    PemKey,
    /// The leaf, the intermediates, then the private key, PEM (HAProxy `crt`).
    PemCombined,
    /// The leaf, DER.
    DerCert,
    /// The private key, PKCS#8 DER.
    DerKey,
    /// PKCS#12: PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) with an HMAC-SHA-256 MAC.
    Pkcs12,
    /// PKCS#12: pbeWithSHAAnd3-KeyTripleDES-CBC with an HMAC-SHA-1 MAC, for old readers.
    Pkcs12Legacy,
    /// Java KeyStore (JKS, version 2) with one private key entry.
    Jks,
}

// === impl Format ===

impl Format {
    /// Every format, in the order of the WIT enum.
    pub const ALL: [Self; 10] = [
        Self::PemCert,
        Self::PemChain,
        Self::PemFullchain,
        Self::PemKey,
        Self::PemCombined,
        Self::DerCert,
        Self::DerKey,
        Self::Pkcs12,
        Self::Pkcs12Legacy,
        Self::Jks,
    ];

    /// The WIT name, e.g. `pem-fullchain`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PemCert => "pem-cert",
            Self::PemChain => "pem-chain",
            Self::PemFullchain => "pem-fullchain",
            Self::PemKey => "pem-key",
            Self::PemCombined => "pem-combined",
            Self::DerCert => "der-cert",
            Self::DerKey => "der-key",
            Self::Pkcs12 => "pkcs12",
            Self::Pkcs12Legacy => "pkcs12-legacy",
            Self::Jks => "jks",
        }
    }

    /// The format with this WIT name, if any (exact, case-sensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether the output contains the private key (and so needs one to be made).
    pub fn holds_key(self) -> bool {
        matches!(
            self,
            Self::PemKey
                | Self::PemCombined
                | Self::DerKey
                | Self::Pkcs12
                | Self::Pkcs12Legacy
                | Self::Jks
        )
    }

    /// Whether the output is protected by a password, which must then be given.
    pub fn needs_password(self) -> bool {
        matches!(self, Self::Pkcs12 | Self::Pkcs12Legacy | Self::Jks)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is converted: a leaf, its intermediates and (optionally) its key.
#[derive(Clone, Copy)]
pub struct Material<'a> {
    /// The leaf certificate, DER.
    pub leaf_der: &'a [u8],
    /// The intermediates, DER, in order from the leaf's issuer upwards; the leaf excluded.
    pub chain_der: &'a [Vec<u8>],
    /// The leaf's private key, PKCS#8 DER; `None` when the caller has no key.
    pub key_pkcs8_der: Option<&'a [u8]>,
    /// The keystore alias (JKS) or friendlyName (PKCS#12).
    pub alias: &'a str,
}

impl fmt::Debug for Material<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("leaf_der", &format_args!("<{} bytes>", self.leaf_der.len()))
            .field(
                "chain_der",
                &format_args!("<{} certs>", self.chain_der.len()),
            )
            .field("key_pkcs8_der", &self.key_pkcs8_der.map(|_| "<redacted>"))
            .field("alias", &self.alias)
            .finish()
    }
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The format contains the private key, and none was given.
    #[error("{0} contains the private key, and there is none")]
    MissingKey(Format),
    /// The format is password-protected, and no password (or an empty one) was given.
    #[error("{0} needs a non-empty password")]
    MissingPassword(Format),
    /// A password was given for a format that is never encrypted. Refused rather than
    /// ignored, so that nobody believes an unencrypted key file is protected.
    #[error("{0} takes no password (it is never encrypted)")]
    UnexpectedPassword(Format),
    /// The PKCS#12 encoder refused the material (e.g. a certificate or key it cannot parse).
    #[error("cannot write {format}")]
    Pkcs12 {
        /// `pkcs12` or `pkcs12-legacy`.
        format: Format,
        /// The encoder's error.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// The material cannot be encoded in this format.
    #[error("cannot write {format}: {reason}")]
    Encoding {
        /// The format being written.
        format: Format,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Converts `m` to `format`.
///
/// `password` must be given (and non-empty) exactly for the formats that
/// [need one](Format::needs_password), and is refused for the others. A key given for a
/// format without one is not used. `now_unix_ms` is the JKS entry's creation date.
pub fn convert(
    format: Format,
    m: &Material<'_>,
    password: Option<&str>,
    now_unix_ms: i64,
) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
    let password = match (format.needs_password(), password) {
        (true, Some(p)) if !p.is_empty() => p,
        (true, _) => return Err(ConvertError::MissingPassword(format)),
        (false, Some(_)) => return Err(ConvertError::UnexpectedPassword(format)),
        (false, None) => "",
    };
    let key: &[u8] = match (format.holds_key(), m.key_pkcs8_der) {
        (true, None) => return Err(ConvertError::MissingKey(format)),
        (true, Some(key)) => key,
        (false, _) => &[],
    };
    let chain = || m.chain_der.iter().map(Vec::as_slice);
    let leaf = std::iter::once(m.leaf_der);
    match format {
        Format::PemCert => Ok(pem(leaf, None)),
        Format::PemChain => Ok(pem(chain(), None)),
        Format::PemFullchain => Ok(pem(leaf.chain(chain()), None)),
        Format::PemKey => Ok(pem(std::iter::empty(), Some(key))),
        Format::PemCombined => Ok(pem(leaf.chain(chain()), Some(key))),
        Format::DerCert => Ok(Zeroizing::new(m.leaf_der.to_vec())),
        Format::DerKey => Ok(Zeroizing::new(key.to_vec())),
        Format::Pkcs12 | Format::Pkcs12Legacy => pkcs12(format, m, key, password),
        Format::Jks => jks(m, key, password, now_unix_ms),
    }
}

// === PEM ===

const CERT_LABEL: &str = "CERTIFICATE";
const KEY_LABEL: &str = "PRIVATE KEY";
/// Input bytes per 64-column base64 line.
const PEM_LINE_INPUT: usize = 48;

/// The exact size of one PEM block, so the output never reallocates (which would leave a
/// copy of the key behind, unwiped).
fn pem_len(label: &str, der_len: usize) -> usize {
    let b64 = der_len.div_ceil(3) * 4;
    let lines = b64.div_ceil(64);
    ("-----BEGIN -----\n".len() + label.len())
        + b64
        + lines
        + ("-----END -----\n".len() + label.len())
}

/// Certificates as PEM blocks, then the key if any.
fn pem<'a>(
    certs: impl Iterator<Item = &'a [u8]> + Clone,
    key: Option<&[u8]>,
) -> Zeroizing<Vec<u8>> {
    let len = certs
        .clone()
        .map(|c| pem_len(CERT_LABEL, c.len()))
        .sum::<usize>()
        + key.map_or(0, |k| pem_len(KEY_LABEL, k.len()));
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for cert in certs {
        push_pem(&mut out, CERT_LABEL, cert);
    }
    if let Some(key) = key {
        push_pem(&mut out, KEY_LABEL, key);
    }
    debug_assert_eq!(out.len(), len, "PEM size computed exactly");
    out
}

/// Appends one PEM block: 64-column base64 between BEGIN and END lines, LF line ends.
fn push_pem(out: &mut Vec<u8>, label: &str, der: &[u8]) {
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    // Each line is encoded on the stack and wiped, so no heap copy of the base64 is left.
    let mut line = [0u8; 64];
    for chunk in der.chunks(PEM_LINE_INPUT) {
        let n = BASE64
            .encode_slice(chunk, &mut line)
            .expect("48 bytes encode to 64 base64 characters");
        out.extend_from_slice(&line[..n]);
        out.push(b'\n');
    }
    line.zeroize();
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
}

// === PKCS#12 ===

/// PBKDF2 and MAC iterations for `pkcs12`: what Java's keytool writes.
const PKCS12_ITERATIONS: u32 = 10_000;
/// Iterations for `pkcs12-legacy`: OpenSSL's long-standing default, which every old reader
/// has been tested with.
const PKCS12_LEGACY_ITERATIONS: u32 = 2_048;

/// One private key entry named `m.alias`, holding the leaf then the intermediates. Its
/// localKeyId is the leaf's SHA-1 fingerprint, as OpenSSL writes it.
fn pkcs12(
    format: Format,
    m: &Material<'_>,
    key: &[u8],
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
    let fail = |source| ConvertError::Pkcs12 { format, source };
    let certs = std::iter::once(m.leaf_der)
        .chain(m.chain_der.iter().map(Vec::as_slice))
        .map(Certificate::from_der)
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let key = PrivateKey::from_der(key).map_err(fail)?;
    let local_key_id = digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, m.leaf_der);
    let chain = PrivateKeyChain::new(local_key_id.as_ref(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(m.alias, KeyStoreEntry::PrivateKeyChain(chain));

    let writer = store.writer(password);
    let writer = match format {
        Format::Pkcs12Legacy => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(PKCS12_LEGACY_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(PKCS12_LEGACY_ITERATIONS),
        _ => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .encryption_iterations(PKCS12_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha256)
            .mac_iterations(PKCS12_ITERATIONS),
    };
    writer.write().map(Zeroizing::new).map_err(fail)
}

// === JKS ===

const JKS_MAGIC: u32 = 0xFEED_FEED;
const JKS_VERSION: u32 = 2;
const JKS_PRIVATE_KEY_ENTRY: u32 = 1;
/// Mixed into the store's integrity digest, after the password (Sun's `JavaKeyStore`).
const JKS_WHITENER: &[u8] = b"Mighty Aphrodite";
/// DER of OID 1.3.6.1.4.1.42.2.17.1.1, Sun's proprietary key protection algorithm.
const KEY_PROTECTOR_OID: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01];
const SHA1_LEN: usize = 20;

/// A JKS store with one private key entry, the way `sun.security.provider.JavaKeyStore`
/// writes it. Java looks aliases up lowercased, so the alias is stored lowercased.
fn jks(
    m: &Material<'_>,
    key: &[u8],
    password: &str,
    now_unix_ms: i64,
) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
    let fail = |reason| ConvertError::Encoding {
        format: Format::Jks,
        reason,
    };
    // Java hashes a password as its UTF-16 code units, big-endian. Allocated once (a unit
    // per UTF-8 byte at most), so no unwiped copy is left behind by growth.
    let mut password_utf16 = Zeroizing::new(Vec::with_capacity(2 * password.len()));
    password_utf16.extend(password.encode_utf16().flat_map(u16::to_be_bytes));
    let password = password_utf16;
    let protected = protect_key(&password, key)?;
    let certs = || std::iter::once(m.leaf_der).chain(m.chain_der.iter().map(Vec::as_slice));

    let mut out = Vec::with_capacity(
        64 + m.alias.len() * 3
            + protected.len()
            + certs().map(|c| c.len() + 11).sum::<usize>()
            + SHA1_LEN,
    );
    out.extend_from_slice(&JKS_MAGIC.to_be_bytes());
    out.extend_from_slice(&JKS_VERSION.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&JKS_PRIVATE_KEY_ENTRY.to_be_bytes());
    write_java_utf(&mut out, &m.alias.to_lowercase())
        .ok_or_else(|| fail("the alias is longer than 65535 bytes"))?;
    out.extend_from_slice(&now_unix_ms.to_be_bytes());
    push_u32_len(&mut out, protected.len()).ok_or_else(|| fail("the key is too large"))?;
    out.extend_from_slice(&protected);
    push_u32_len(&mut out, certs().count()).ok_or_else(|| fail("the chain is too long"))?;
    for cert in certs() {
        write_java_utf(&mut out, "X.509").expect("a short type name");
        push_u32_len(&mut out, cert.len()).ok_or_else(|| fail("a certificate is too large"))?;
        out.extend_from_slice(cert);
    }
    let mut integrity = digest::Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    integrity.update(&password);
    integrity.update(JKS_WHITENER);
    integrity.update(&out);
    out.extend_from_slice(integrity.finish().as_ref());
    Ok(Zeroizing::new(out))
}

/// Sun's `KeyProtector`: the PKCS#8 key XORed with a SHA-1 keystream seeded by a random
/// salt, then a SHA-1 check over the plaintext, wrapped in a DER `EncryptedPrivateKeyInfo`.
fn protect_key(password: &[u8], key: &[u8]) -> Result<Vec<u8>, ConvertError> {
    let mut salt = [0u8; SHA1_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| ConvertError::Encoding {
            format: Format::Jks,
            reason: "the system random generator failed",
        })?;

    let mut protected = Vec::with_capacity(SHA1_LEN + key.len() + SHA1_LEN);
    protected.extend_from_slice(&salt);
    let mut block = salt;
    for chunk in key.chunks(SHA1_LEN) {
        let mut next = digest::Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
        next.update(password);
        next.update(&block);
        block.copy_from_slice(next.finish().as_ref());
        protected.extend(chunk.iter().zip(block).map(|(k, s)| k ^ s));
    }
    block.zeroize();
    let mut check = digest::Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    check.update(password);
    check.update(key);
    protected.extend_from_slice(check.finish().as_ref());

    // EncryptedPrivateKeyInfo ::= SEQUENCE { AlgorithmIdentifier { OID, NULL }, OCTET STRING }
    let mut algorithm = Vec::with_capacity(2 + KEY_PROTECTOR_OID.len() + 2);
    push_der(&mut algorithm, 0x06, &KEY_PROTECTOR_OID);
    push_der(&mut algorithm, 0x05, &[]);
    let mut body = Vec::with_capacity(algorithm.len() + protected.len() + 12);
    push_der(&mut body, 0x30, &algorithm);
    push_der(&mut body, 0x04, &protected);
    let mut info = Vec::with_capacity(body.len() + 6);
    push_der(&mut info, 0x30, &body);
    Ok(info)
}

/// Appends a DER tag-length-value, with a definite length in the shortest form.
fn push_der(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

/// Appends a Java `int` length; `None` if it does not fit.
fn push_u32_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    let len = i32::try_from(len).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    Some(())
}

/// Appends `s` as Java's `DataOutputStream.writeUTF` does: a big-endian u16 byte count,
/// then modified UTF-8 (each UTF-16 unit on its own, NUL as two bytes). `None` if the
/// encoding is longer than 65535 bytes.
fn write_java_utf(out: &mut Vec<u8>, s: &str) -> Option<()> {
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    for unit in s.encode_utf16() {
        match unit {
            0x0001..=0x007f => out.push(unit as u8),
            0x0000 | 0x0080..=0x07ff => {
                out.extend_from_slice(&[0xc0 | (unit >> 6) as u8, 0x80 | (unit & 0x3f) as u8]);
            }
            _ => out.extend_from_slice(&[
                0xe0 | (unit >> 12) as u8,
                0x80 | ((unit >> 6) & 0x3f) as u8,
                0x80 | (unit & 0x3f) as u8,
            ]),
        }
    }
    let len = u16::try_from(out.len() - len_at - 2).ok()?;
    out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use p12_keystore::Pkcs12ImportPolicy;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    const PASSWORD: &str = "correct horse";
    const NOW_MS: i64 = 1_780_315_200_000;

    /// A leaf issued by intermediate B, issued by intermediate A, issued by a root.
    struct Fixture {
        leaf: Vec<u8>,
        /// B then A (the root excluded).
        chain: Vec<Vec<u8>>,
        key: Vec<u8>,
    }

    impl Fixture {
        fn new() -> Self {
            let ca = |name: &str| {
                let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
                params.distinguished_name.push(DnType::CommonName, name);
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params
            };
            let root_key = KeyPair::generate().unwrap();
            let root_params = ca("Convert Root");
            root_params.self_signed(&root_key).unwrap();
            let root = Issuer::new(root_params, root_key);

            let a_key = KeyPair::generate().unwrap();
            let a_params = ca("Convert Intermediate A");
            let a = a_params.signed_by(&a_key, &root).unwrap();
            let a_issuer = Issuer::new(a_params, a_key);

            let b_key = KeyPair::generate().unwrap();
            let b_params = ca("Convert Intermediate B");
            let b = b_params.signed_by(&b_key, &a_issuer).unwrap();
            let b_issuer = Issuer::new(b_params, b_key);

            let leaf_key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["a.test".into()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, "a.test");
            let leaf = params.signed_by(&leaf_key, &b_issuer).unwrap();
            Self {
                leaf: leaf.der().to_vec(),
                chain: vec![b.der().to_vec(), a.der().to_vec()],
                key: leaf_key.serialize_der(),
            }
        }

        fn material(&self) -> Material<'_> {
            Material {
                leaf_der: &self.leaf,
                chain_der: &self.chain,
                key_pkcs8_der: Some(&self.key),
                alias: "Web-Server",
            }
        }

        fn convert(&self, format: Format) -> Vec<u8> {
            let password = format.needs_password().then_some(PASSWORD);
            let out = convert(format, &self.material(), password, NOW_MS)
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            out.to_vec()
        }
    }

    /// The PEM blocks of `out` as (label, DER), after checking the layout line by line.
    fn pem_blocks(out: &[u8]) -> Vec<(String, Vec<u8>)> {
        let text = std::str::from_utf8(out).expect("PEM is ASCII");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "ends with a newline"
        );
        assert!(!text.contains('\r'), "LF line ends");
        for line in text.lines() {
            assert!(line.len() <= 64, "line over 64 columns: {line}");
        }
        // Every base64 line but a block's last is exactly 64 columns.
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if !pair[0].starts_with("-----") && !pair[1].starts_with("-----") {
                assert_eq!(pair[0].len(), 64, "a full line before {}", pair[1]);
            }
        }
        pem::parse_many(text)
            .expect("valid PEM")
            .into_iter()
            .map(|p| (p.tag().to_owned(), p.contents().to_vec()))
            .collect()
    }

    fn certs(items: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
        items
            .iter()
            .map(|der| ("CERTIFICATE".to_owned(), der.to_vec()))
            .collect()
    }

    #[test]
    fn names_round_trip_and_properties_match_the_wit() {
        assert_eq!(Format::ALL.len(), 10);
        for format in Format::ALL {
            assert_eq!(Format::parse(format.name()), Some(format));
            assert_eq!(format.to_string(), format.name());
            if format.needs_password() {
                assert!(format.holds_key(), "{format}");
            }
        }
        assert_eq!(Format::parse("PEM-CERT"), None);
        assert_eq!(Format::parse("pkcs7"), None);
        let keyed: Vec<_> = Format::ALL.into_iter().filter(|f| f.holds_key()).collect();
        assert_eq!(
            keyed,
            [
                Format::PemKey,
                Format::PemCombined,
                Format::DerKey,
                Format::Pkcs12,
                Format::Pkcs12Legacy,
                Format::Jks
            ]
        );
        let wit = include_str!("../../hooks/wit/hook.wit");
        for format in Format::ALL {
            assert!(
                wit.contains(&format!("    {},\n", format.name())),
                "{format} in the WIT enum"
            );
        }
    }

    #[test]
    fn pem_and_der_formats_hold_what_they_say() {
        let f = Fixture::new();
        let (leaf, b, a) = (&f.leaf[..], &f.chain[0][..], &f.chain[1][..]);
        let key = ("PRIVATE KEY".to_owned(), f.key.clone());

        assert_eq!(pem_blocks(&f.convert(Format::PemCert)), certs(&[leaf]));
        assert_eq!(pem_blocks(&f.convert(Format::PemChain)), certs(&[b, a]));
        assert_eq!(
            pem_blocks(&f.convert(Format::PemFullchain)),
            certs(&[leaf, b, a])
        );
        assert_eq!(pem_blocks(&f.convert(Format::PemKey)), vec![key.clone()]);
        let mut combined = certs(&[leaf, b, a]);
        combined.push(key);
        assert_eq!(pem_blocks(&f.convert(Format::PemCombined)), combined);
        assert_eq!(f.convert(Format::DerCert), f.leaf);
        assert_eq!(f.convert(Format::DerKey), f.key);

        let text = String::from_utf8(f.convert(Format::PemKey)).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        assert!(text.ends_with("\n-----END PRIVATE KEY-----\n"), "{text}");
    }

    #[test]
    fn certificate_formats_need_no_key() {
        let f = Fixture::new();
        let m = Material {
            key_pkcs8_der: None,
            ..f.material()
        };
        for format in Format::ALL.into_iter().filter(|f| !f.holds_key()) {
            let out = convert(format, &m, None, NOW_MS).unwrap();
            assert!(!out.is_empty(), "{format}");
            assert!(
                !out.windows(f.key.len()).any(|w| w == f.key),
                "{format} leaks no key"
            );
        }
    }

    #[test]
    fn pem_chain_without_intermediates_is_empty() {
        let f = Fixture::new();
        let m = Material {
            chain_der: &[],
            ..f.material()
        };
        assert!(
            convert(Format::PemChain, &m, None, NOW_MS)
                .unwrap()
                .is_empty()
        );
        let full = convert(Format::PemFullchain, &m, None, NOW_MS).unwrap();
        assert_eq!(pem_blocks(&full), certs(&[&f.leaf[..]]));
    }

    #[test]
    fn key_formats_without_a_key_fail() {
        let f = Fixture::new();
        let m = Material {
            key_pkcs8_der: None,
            ..f.material()
        };
        for format in Format::ALL.into_iter().filter(|f| f.holds_key()) {
            let password = format.needs_password().then_some(PASSWORD);
            let err = convert(format, &m, password, NOW_MS).unwrap_err();
            assert!(
                matches!(err, ConvertError::MissingKey(got) if got == format),
                "{format}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("{format} contains the private key, and there is none")
            );
        }
    }

    #[test]
    fn passwords_are_required_exactly_where_used() {
        let f = Fixture::new();
        let m = f.material();
        for format in Format::ALL {
            if format.needs_password() {
                for password in [None, Some("")] {
                    let err = convert(format, &m, password, NOW_MS).unwrap_err();
                    assert!(
                        matches!(err, ConvertError::MissingPassword(got) if got == format),
                        "{format}: {err:?}"
                    );
                }
            } else {
                let err = convert(format, &m, Some(PASSWORD), NOW_MS).unwrap_err();
                assert!(
                    matches!(err, ConvertError::UnexpectedPassword(got) if got == format),
                    "{format}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn material_debug_hides_the_key() {
        let f = Fixture::new();
        let debug = format!("{:?}", f.material());
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("<2 certs>"), "{debug}");
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// DER of OIDs the PKCS#12 outputs are checked for.
    const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
    const AES_256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    const HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
    const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    const PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
    const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];

    #[test]
    fn pkcs12_round_trips_with_the_full_chain() {
        let f = Fixture::new();
        for format in [Format::Pkcs12, Format::Pkcs12Legacy] {
            let out = f.convert(format);
            let store = KeyStore::from_pkcs12(&out, PASSWORD, Pkcs12ImportPolicy::Strict)
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(store.entries_len(), 1, "{format}");
            let (alias, chain) = store.private_key_chain().expect("a key entry");
            assert_eq!(alias, "Web-Server", "{format}: friendlyName");
            assert_eq!(chain.key().as_der(), f.key, "{format}: key");
            let ders: Vec<&[u8]> = chain.certs().iter().map(Certificate::as_der).collect();
            assert_eq!(
                ders,
                [&f.leaf[..], &f.chain[0][..], &f.chain[1][..]],
                "{format}"
            );

            assert!(
                KeyStore::from_pkcs12(&out, "wrong", Pkcs12ImportPolicy::Strict).is_err(),
                "{format}: a wrong password is refused"
            );
        }
    }

    #[test]
    fn pkcs12_algorithms() {
        let f = Fixture::new();
        let modern = f.convert(Format::Pkcs12);
        for oid in [PBES2, PBKDF2, AES_256_CBC, HMAC_SHA256, SHA256] {
            assert!(contains(&modern, oid), "pkcs12 names {oid:02x?}");
        }
        assert!(!contains(&modern, PBE_SHA1_3DES));

        let legacy = f.convert(Format::Pkcs12Legacy);
        for oid in [PBE_SHA1_3DES, SHA1] {
            assert!(contains(&legacy, oid), "pkcs12-legacy names {oid:02x?}");
        }
        for oid in [PBES2, AES_256_CBC, SHA256] {
            assert!(!contains(&legacy, oid), "pkcs12-legacy avoids {oid:02x?}");
        }
    }

    #[test]
    fn pkcs12_refuses_material_it_cannot_parse() {
        let f = Fixture::new();
        let m = Material {
            key_pkcs8_der: Some(b"not a key"),
            ..f.material()
        };
        let err = convert(Format::Pkcs12, &m, Some(PASSWORD), NOW_MS).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::Pkcs12 {
                    format: Format::Pkcs12,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    // --- a JKS reader, written from the format description, to check the writer ---

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            assert!(
                self.0.len() >= n,
                "truncated: want {n}, have {}",
                self.0.len()
            );
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
        fn u16(&mut self) -> usize {
            u16::from_be_bytes(self.take(2).try_into().unwrap()).into()
        }
        fn u32(&mut self) -> u32 {
            u32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        fn i64(&mut self) -> i64 {
            i64::from_be_bytes(self.take(8).try_into().unwrap())
        }
        fn utf(&mut self) -> &'a [u8] {
            let n = self.u16();
            self.take(n)
        }
        /// One DER element: (tag, value).
        fn der(&mut self) -> (u8, &'a [u8]) {
            let tag = self.take(1)[0];
            let first = self.take(1)[0];
            let len = if first < 0x80 {
                usize::from(first)
            } else {
                let n = usize::from(first & 0x7f);
                assert!((1..=4).contains(&n), "length of length {n}");
                let bytes = self.take(n);
                assert_ne!(bytes[0], 0, "minimal length");
                let len = bytes.iter().fold(0, |acc, b| (acc << 8) | usize::from(*b));
                assert!(len >= 0x80, "long form only when needed");
                len
            };
            (tag, self.take(len))
        }
    }

    fn sha1(parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
        for part in parts {
            ctx.update(part);
        }
        ctx.finish().as_ref().to_vec()
    }

    fn utf16be(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    /// A JKS store's one key entry: (alias, date, key, chain), after checking the integrity
    /// digest and the key's check digest.
    fn read_jks(store: &[u8], password: &str) -> (Vec<u8>, i64, Vec<u8>, Vec<Vec<u8>>) {
        let pw = utf16be(password);
        let (body, digest) = store.split_at(store.len() - SHA1_LEN);
        assert_eq!(
            sha1(&[&pw, b"Mighty Aphrodite", body]),
            digest,
            "integrity digest"
        );

        let mut r = Reader(body);
        assert_eq!(r.u32(), 0xFEED_FEED, "magic");
        assert_eq!(r.u32(), 2, "version");
        assert_eq!(r.u32(), 1, "entries");
        assert_eq!(r.u32(), 1, "private key entry");
        let alias = r.utf().to_vec();
        let date = r.i64();
        let n = r.u32() as usize;
        let mut info = Reader(r.take(n));

        let (tag, epki) = info.der();
        assert_eq!(tag, 0x30);
        assert!(info.0.is_empty(), "nothing after EncryptedPrivateKeyInfo");
        let mut epki = Reader(epki);
        let (tag, algorithm) = epki.der();
        assert_eq!(tag, 0x30);
        let mut algorithm = Reader(algorithm);
        assert_eq!(algorithm.der(), (0x06, &KEY_PROTECTOR_OID[..]));
        assert_eq!(algorithm.der(), (0x05, &[][..]));
        assert!(algorithm.0.is_empty());
        let (tag, protected) = epki.der();
        assert_eq!(tag, 0x04);
        assert!(epki.0.is_empty());

        let (salt, rest) = protected.split_at(SHA1_LEN);
        let (encrypted, check) = rest.split_at(rest.len() - SHA1_LEN);
        let mut stream = Vec::new();
        let mut block = salt.to_vec();
        while stream.len() < encrypted.len() {
            block = sha1(&[&pw, &block]);
            stream.extend_from_slice(&block);
        }
        let key: Vec<u8> = encrypted.iter().zip(&stream).map(|(c, s)| c ^ s).collect();
        assert_eq!(sha1(&[&pw, &key]), check, "key check digest");

        let count = r.u32();
        let chain = (0..count)
            .map(|_| {
                assert_eq!(r.utf(), b"X.509");
                let n = r.u32() as usize;
                r.take(n).to_vec()
            })
            .collect();
        assert!(r.0.is_empty(), "nothing after the entry");
        (alias, date, key, chain)
    }

    #[test]
    fn jks_digest_verifies_and_key_decrypts() {
        let f = Fixture::new();
        let out = f.convert(Format::Jks);
        let (alias, date, key, chain) = read_jks(&out, PASSWORD);
        assert_eq!(alias, b"web-server", "Java looks aliases up lowercased");
        assert_eq!(date, NOW_MS);
        assert_eq!(key, f.key);
        assert_eq!(
            chain,
            [f.leaf.clone(), f.chain[0].clone(), f.chain[1].clone()]
        );

        // A fresh salt each time.
        let again = f.convert(Format::Jks);
        assert_ne!(out, again);
        assert_eq!(read_jks(&again, PASSWORD).2, f.key);
    }

    #[test]
    fn jks_handles_long_keys_and_odd_aliases() {
        let f = Fixture::new();
        // Not a real key: JKS protection is format-agnostic, and 1000 bytes needs two-byte
        // DER lengths and a partial last keystream block.
        let key: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let m = Material {
            key_pkcs8_der: Some(&key),
            alias: "Caf\u{e9} \u{1F600}\0",
            ..f.material()
        };
        let password = "p\u{e4}ss\u{1F511}";
        let out = convert(Format::Jks, &m, Some(password), NOW_MS).unwrap();
        let (alias, _, decrypted, _) = read_jks(&out, password);
        assert_eq!(decrypted, key);
        assert_eq!(
            alias, b"caf\xc3\xa9 \xed\xa0\xbd\xed\xb8\x80\xc0\x80",
            "modified UTF-8"
        );
    }

    #[test]
    fn jks_refuses_an_alias_too_long_for_write_utf() {
        let f = Fixture::new();
        let alias = "x".repeat(65_536);
        let m = Material {
            alias: &alias,
            ..f.material()
        };
        let err = convert(Format::Jks, &m, Some(PASSWORD), NOW_MS).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::Encoding {
                    format: Format::Jks,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut ok = Vec::new();
        assert!(write_java_utf(&mut ok, &"x".repeat(65_535)).is_some());
        assert_eq!(ok[..2], [0xff, 0xff]);
    }

    #[test]
    fn der_lengths_use_the_shortest_form() {
        for (len, header) in [
            (0, vec![0x04, 0x00]),
            (127, vec![0x04, 0x7f]),
            (128, vec![0x04, 0x81, 0x80]),
            (255, vec![0x04, 0x81, 0xff]),
            (256, vec![0x04, 0x82, 0x01, 0x00]),
            (65_536, vec![0x04, 0x83, 0x01, 0x00, 0x00]),
        ] {
            let mut out = Vec::new();
            push_der(&mut out, 0x04, &vec![0xaa; len]);
            assert_eq!(out[..header.len()], header, "length {len}");
            assert_eq!(out.len(), header.len() + len);
        }
    }

    #[test]
    fn pem_size_is_computed_exactly() {
        for n in [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1000] {
            let der = vec![0x5a; n];
            let mut out = Vec::new();
            push_pem(&mut out, KEY_LABEL, &der);
            assert_eq!(out.len(), pem_len(KEY_LABEL, n), "{n} bytes");
        }
    }
}
