//! Portable ACME accounts: what the store's account is (for CAA `accounturi`, RFC 8657 §3),
//! exporting it encrypted with age, adopting an existing account key (an export of ours,
//! certbot's `private_key.json` JWK, a PEM key) once the CA confirms it knows the key
//! (`onlyReturnExisting`, RFC 8555 §7.3.1), and the key change of RFC 8555 §7.3.5.
//!
//! Keys only ever pass through [`Secret`]; what is printed or journaled is the account URL
//! and the key's RFC 7638 thumbprint, never key bytes. A replaced key stays sealed in the
//! store (`retired_account_keys`), so a backup holds it. instant-acme signs with ECDSA P-256
//! (ES256) only, so that is the one key type adopted; an RSA key is refused with that reason.

use std::io::{Read, Write};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use instant_acme::{Account, AccountCredentials, Key};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use super::{AcmeSettings, https_client};
use crate::clock::{Clock, unix_seconds as unix};
use crate::store::{AccountChange, Secret, Store, StoreError};

/// The `format` of an account export's plaintext.
const EXPORT_FORMAT: &str = "tlsward-acme-account";
/// The version of that format this build writes and reads.
const EXPORT_VERSION: u64 = 1;
/// The one key type instant-acme signs with.
const ACCOUNT_KEY_TYPE: &str = "ecdsa-p256";

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The store holds no account for the directory.
    #[error(
        "the store has no ACME account for {0} (serve or `cert issue` registers one; `acme account import` adopts one)"
    )]
    NoAccount(String),
    /// An import would replace the store's account.
    #[error(
        "the store already has account {url} for {directory}: pass --force to replace it (its key is kept in the store)"
    )]
    Exists {
        /// The directory.
        directory: String,
        /// The account the store has.
        url: String,
    },
    /// The CA has no account for the key (`accountDoesNotExist`).
    #[error("the CA has no account for this key: {0}")]
    UnknownToCa(String),
    /// The key's account is not the one the export names.
    #[error("the CA says this key is account {found}, but the export names {expected}")]
    OtherAccount {
        /// The account the export names.
        expected: String,
        /// The account the CA answered with.
        found: String,
    },
    /// The export is for another ACME directory than the config's.
    #[error("the export is for the ACME directory {found}, but the config uses {expected}")]
    OtherDirectory {
        /// The config's directory.
        expected: String,
        /// The export's.
        found: String,
    },
    /// The file is not a key tlsward can adopt.
    #[error("unusable account key: {0}")]
    Key(String),
    /// Encryption or decryption with age failed.
    #[error("{0}")]
    Age(String),
    /// The CA changed the key, and storing the new key failed: the account now answers only
    /// to a key that is lost.
    #[error(
        "the CA changed the account key, but the store could not save the new key ({0}): the account must be registered anew"
    )]
    RolloverNotStored(StoreError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ACME client or the CA failed otherwise.
    #[error("ACME: {0}")]
    Ca(String),
}

impl From<instant_acme::Error> for AccountError {
    fn from(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p)
                if p.r#type
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
            {
                Self::UnknownToCa(visible(
                    p.detail.as_deref().unwrap_or("accountDoesNotExist"),
                ))
            }
            other => Self::Ca(visible(&other.to_string())),
        }
    }
}

/// Text from the CA, safe to show.
fn visible(s: &str) -> String {
    crate::escape::visible_within(s, 512).into_owned()
}

/// The store's account for a directory, as `acme account show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    /// The ACME directory URL.
    pub directory: String,
    /// The account URL (CAA `accounturi`).
    pub account_url: String,
    /// When this store got the account, Unix seconds.
    pub created_at: i64,
    /// The key type (`ecdsa-p256`, the one instant-acme signs with).
    pub key_type: &'static str,
    /// The key's RFC 7638 JWK thumbprint (base64url SHA-256): public, and what changes in a
    /// rollover.
    pub thumbprint: String,
    /// How many replaced keys the store keeps for the directory.
    pub retired_keys: usize,
}

/// The account of `directory` in `store`, if it has one.
pub fn account_summary(
    store: &Store,
    directory: &str,
) -> Result<Option<AccountSummary>, AccountError> {
    let Some(row) = store.account_row(directory)? else {
        return Ok(None);
    };
    let creds = store
        .account(directory)?
        .ok_or_else(|| AccountError::NoAccount(directory.to_owned()))?;
    let pkcs8 = credentials_key(&creds)?;
    Ok(Some(AccountSummary {
        directory: row.directory,
        account_url: row.account_url,
        created_at: row.created_at,
        key_type: ACCOUNT_KEY_TYPE,
        thumbprint: thumbprint(&pkcs8)?,
        retired_keys: store.retired_account_keys(directory)?.len(),
    }))
}

/// The PKCS#8 key inside stored instant-acme credentials.
fn credentials_key(creds: &Secret) -> Result<Secret, AccountError> {
    let creds: AccountCredentials = serde_json::from_slice(creds.expose())
        .map_err(|e| AccountError::Key(format!("the stored credentials: {e}")))?;
    Ok(Secret::new(creds.private_key().secret_pkcs8_der().to_vec()))
}

/// The P-256 key pair of PKCS#8 DER; ring checks that its public half matches.
fn key_pair(pkcs8: &[u8]) -> Result<EcdsaKeyPair, AccountError> {
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

/// The RFC 7638 thumbprint of a P-256 key's JWK: SHA-256 over its required members in
/// lexicographic order, base64url.
pub fn thumbprint(pkcs8: &Secret) -> Result<String, AccountError> {
    let pair = key_pair(pkcs8.expose())?;
    let point = pair.public_key().as_ref();
    let (x, y) = point
        .get(1..33)
        .zip(point.get(33..65))
        .ok_or_else(|| AccountError::Key("unexpected public key length".into()))?;
    let jwk = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    Ok(URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes())))
}

// === export ===

/// Age X25519 recipients (`age1...`), one per string.
pub fn parse_recipients(given: &[String]) -> Result<Vec<age::x25519::Recipient>, AccountError> {
    if given.is_empty() {
        return Err(AccountError::Age(
            "at least one age recipient (age1...) is needed".into(),
        ));
    }
    given
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim()).map_err(|_| {
                AccountError::Age(format!(
                    "{:?} is not an age X25519 recipient (age1...)",
                    crate::escape::visible_within(r, 80)
                ))
            })
        })
        .collect()
}

/// The age X25519 identities (`AGE-SECRET-KEY-1...` lines) in an identity file's text.
pub fn parse_identities(text: &str) -> Result<Vec<age::x25519::Identity>, AccountError> {
    let found: Vec<_> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .map(|l| {
            age::x25519::Identity::from_str(l)
                .map_err(|_| AccountError::Age("the identity file has an invalid age key".into()))
        })
        .collect::<Result<_, _>>()?;
    if found.is_empty() {
        return Err(AccountError::Age(
            "no AGE-SECRET-KEY line in the identity file".into(),
        ));
    }
    Ok(found)
}

/// The plaintext of an account export (inside the age encryption).
#[derive(serde::Serialize, serde::Deserialize)]
struct ExportFile {
    format: String,
    version: u64,
    directory: String,
    account_url: String,
    created_at: i64,
    exported_at: i64,
    key_type: String,
    thumbprint: String,
    /// The key as PKCS#8 PEM, zeroed on drop.
    key_pem: String,
}

impl Drop for ExportFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_pem);
    }
}

/// The store's account of `directory`, encrypted with age to `recipients`: JSON with the
/// directory, the account URL and the key as PKCS#8 PEM (readable by other ACME clients once
/// decrypted with `age -d`).
pub fn export_account(
    store: &Store,
    directory: &str,
    recipients: &[age::x25519::Recipient],
    clock: &dyn Clock,
) -> Result<Vec<u8>, AccountError> {
    let summary = account_summary(store, directory)?
        .ok_or_else(|| AccountError::NoAccount(directory.to_owned()))?;
    let creds = store
        .account(directory)?
        .ok_or_else(|| AccountError::NoAccount(directory.to_owned()))?;
    let pkcs8 = credentials_key(&creds)?;
    let pem = zeroize::Zeroizing::new(
        rcgen::KeyPair::try_from(pkcs8.expose())
            .map_err(|e| AccountError::Key(e.to_string()))?
            .serialize_pem(),
    );
    let plain = Secret::new(
        serde_json::to_vec_pretty(&ExportFile {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
            directory: summary.directory,
            account_url: summary.account_url,
            created_at: summary.created_at,
            exported_at: unix(clock),
            key_type: summary.key_type.into(),
            thumbprint: summary.thumbprint,
            key_pem: pem.to_string(),
        })
        .map_err(|e| AccountError::Key(e.to_string()))?,
    );
    let age_err = |e: &dyn std::fmt::Display| AccountError::Age(format!("age encryption: {e}"));
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|r| r as &dyn age::Recipient)
            .collect::<Vec<_>>()
            .into_iter(),
    )
    .map_err(|e| age_err(&e))?;
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| age_err(&e))?;
    writer.write_all(plain.expose()).map_err(|e| age_err(&e))?;
    writer.finish().map_err(|e| age_err(&e))?;
    Ok(out)
}

// === import ===

/// Where an adopted key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// An `acme account export` of tlsward, decrypted.
    Export,
    /// A JSON Web Key (RFC 7517), such as certbot's `private_key.json`.
    Jwk,
    /// A PEM private key (PKCS#8 or SEC1 `EC PRIVATE KEY`).
    Pem,
}

impl KeyOrigin {
    /// The stable name, as journaled.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Export => "tlsward-export",
            Self::Jwk => "jwk",
            Self::Pem => "pem",
        }
    }
}

/// An account key read from a file, not yet confirmed by the CA.
pub struct ImportedKey {
    pkcs8: Secret,
    /// What kind of file it was.
    pub origin: KeyOrigin,
    /// The account URL the file names (an export), to be checked against the CA's answer.
    pub account_url: Option<String>,
    /// The ACME directory the file names (an export).
    pub directory: Option<String>,
}

impl std::fmt::Debug for ImportedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedKey")
            .field("origin", &self.origin)
            .field("account_url", &self.account_url)
            .finish_non_exhaustive()
    }
}

impl ImportedKey {
    /// Reads a key file: an age-encrypted export of ours (decrypted with `identities`), a
    /// JWK (`kty` `EC`, `crv` `P-256`), or PEM. Everything is checked here except that the
    /// CA knows the key.
    pub fn parse(bytes: &[u8], identities: &[age::x25519::Identity]) -> Result<Self, AccountError> {
        if bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
            return Err(AccountError::Age(
                "an ASCII-armored age file: decrypt it with `age -d` first, or export again".into(),
            ));
        }
        if bytes.starts_with(b"age-encryption.org/") {
            if identities.is_empty() {
                return Err(AccountError::Age(
                    "the file is age-encrypted: pass --identity with a key it was exported to"
                        .into(),
                ));
            }
            let plain = decrypt(bytes, identities)?;
            return Self::from_export(&plain);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| AccountError::Key("not a JWK, PEM key or age file".into()))?
            .trim_start();
        if text.starts_with('{') {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| AccountError::Key(format!("not valid JSON: {e}")))?;
            if value.get("format").is_some() {
                return Self::from_export(&Secret::new(text.as_bytes().to_vec()));
            }
            return Ok(Self::bare(from_jwk(&value)?, KeyOrigin::Jwk));
        }
        if text.starts_with("-----BEGIN") {
            return Ok(Self::bare(from_pem(text.as_bytes())?, KeyOrigin::Pem));
        }
        Err(AccountError::Key(
            "not a JWK (certbot's private_key.json), a PEM key or an age-encrypted export".into(),
        ))
    }

    fn bare(pkcs8: Secret, origin: KeyOrigin) -> Self {
        Self {
            pkcs8,
            origin,
            account_url: None,
            directory: None,
        }
    }

    fn from_export(plain: &Secret) -> Result<Self, AccountError> {
        let value: Value = serde_json::from_slice(plain.expose())
            .map_err(|e| AccountError::Key(format!("the export is not JSON: {e}")))?;
        if value.get("format").and_then(Value::as_str) != Some(EXPORT_FORMAT) {
            return Err(AccountError::Key("not a tlsward account export".into()));
        }
        if value.get("version").and_then(Value::as_u64) != Some(EXPORT_VERSION) {
            return Err(AccountError::Key(format!(
                "not export format version {EXPORT_VERSION}"
            )));
        }
        drop(value);
        let file: ExportFile = serde_json::from_slice(plain.expose())
            .map_err(|e| AccountError::Key(format!("the export: {e}")))?;
        Ok(Self {
            pkcs8: from_pem(file.key_pem.as_bytes())?,
            origin: KeyOrigin::Export,
            account_url: Some(file.account_url.clone()),
            directory: Some(file.directory.clone()),
        })
    }

    /// The key's RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> Result<String, AccountError> {
        thumbprint(&self.pkcs8)
    }
}

fn decrypt(bytes: &[u8], identities: &[age::x25519::Identity]) -> Result<Secret, AccountError> {
    let decryptor = age::Decryptor::new(bytes)
        .map_err(|e| AccountError::Age(format!("not a readable age file: {e}")))?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|_| {
            AccountError::Age(
                "cannot decrypt: the file was not encrypted to this identity, or is damaged".into(),
            )
        })?;
    let mut plain = zeroize::Zeroizing::new(Vec::new());
    reader.read_to_end(&mut plain).map_err(|_| {
        AccountError::Age("cannot decrypt: the file is truncated or altered".into())
    })?;
    Ok(Secret::new(plain.to_vec()))
}

/// The DER prefix of a PKCS#8 P-256 key (RFC 5915 inside RFC 5208), up to the private
/// scalar; then [`PKCS8_MIDDLE`] and the uncompressed public point.
const PKCS8_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
/// Between the scalar and the public point: `[1] BIT STRING` of 66 bytes.
const PKCS8_MIDDLE: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
/// The OID of P-256 (prime256v1), DER content bytes.
const P256_OID: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// PKCS#8 from a P-256 scalar (up to 32 bytes, left-padded) and an uncompressed point;
/// checked by ring (the point must be the scalar's).
fn pkcs8_from_parts(d: &[u8], point: &[u8]) -> Result<Secret, AccountError> {
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
fn from_jwk(jwk: &Value) -> Result<Secret, AccountError> {
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
fn from_pem(pem: &[u8]) -> Result<Secret, AccountError> {
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
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
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
fn from_sec1(der: &[u8]) -> Result<Secret, AccountError> {
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

/// The account the CA confirmed for an imported key.
pub struct Confirmed {
    /// The account URL the CA answered with.
    pub account_url: String,
    /// The key's thumbprint.
    pub thumbprint: String,
    creds: Secret,
    origin: KeyOrigin,
}

impl std::fmt::Debug for Confirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmed")
            .field("account_url", &self.account_url)
            .finish_non_exhaustive()
    }
}

/// Asks the CA of `settings` for the account of `key` without creating one
/// (`onlyReturnExisting`). Stores nothing.
pub async fn confirm_with_ca(
    settings: &AcmeSettings,
    key: &ImportedKey,
) -> Result<Confirmed, AccountError> {
    if let Some(found) = key
        .directory
        .as_deref()
        .filter(|d| *d != settings.directory)
    {
        return Err(AccountError::OtherDirectory {
            expected: settings.directory.clone(),
            found: visible(found),
        });
    }
    let http = https_client(settings.ca_file.as_deref()).map_err(AccountError::Ca)?;
    let signer = Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(key.pkcs8.expose()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8.expose().to_vec()));
    let (account, creds) = Account::builder_with_http(http)
        .from_key((signer, der), settings.directory.clone())
        .await?;
    if let Some(expected) = key.account_url.as_deref().filter(|u| *u != account.id()) {
        return Err(AccountError::OtherAccount {
            expected: visible(expected),
            found: visible(account.id()),
        });
    }
    let creds =
        Secret::new(serde_json::to_vec(&creds).map_err(|e| AccountError::Ca(e.to_string()))?);
    Ok(Confirmed {
        account_url: account.id().to_owned(),
        thumbprint: key.thumbprint()?,
        creds,
        origin: key.origin,
    })
}

/// Stores a confirmed account as the store's account of `directory` (the one it replaces,
/// if any, kept retired), journaled as `account.imported`.
pub fn adopt(
    store: &Store,
    directory: &str,
    confirmed: &Confirmed,
    clock: &dyn Clock,
) -> Result<(), AccountError> {
    let detail = json!({
        "directory": directory,
        "account": confirmed.account_url,
        "thumbprint": confirmed.thumbprint,
        "source": confirmed.origin.as_str(),
    });
    store.replace_account(
        directory,
        &confirmed.account_url,
        &confirmed.creds,
        AccountChange::Imported,
        &detail,
        unix(clock),
    )?;
    tracing::info!(directory = %directory, account = %confirmed.account_url, thumbprint = %confirmed.thumbprint, "ACME account imported");
    Ok(())
}

// === rollover ===

/// What a key rollover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollover {
    /// The account (unchanged).
    pub account_url: String,
    /// The thumbprint of the key replaced (kept retired in the store).
    pub old_thumbprint: String,
    /// The thumbprint of the new key.
    pub new_thumbprint: String,
}

/// Changes the account key of `settings`' directory at the CA (RFC 8555 §7.3.5) and stores
/// the new key, the old one retired, journaled as `account.rollover`.
///
/// instant-acme makes the new key inside the key-change request, so it can only be stored
/// once the CA has answered: a crash in between leaves an account whose key is lost (the
/// error [`AccountError::RolloverNotStored`] says so when the store refuses).
pub async fn rollover(
    settings: &AcmeSettings,
    store: &Store,
    clock: &dyn Clock,
) -> Result<Rollover, AccountError> {
    let directory = &settings.directory;
    let no_account = || AccountError::NoAccount(directory.clone());
    let row = store.account_row(directory)?.ok_or_else(no_account)?;
    let stored = store.account(directory)?.ok_or_else(no_account)?;
    let old_thumbprint = thumbprint(&credentials_key(&stored)?)?;
    let creds: AccountCredentials = serde_json::from_slice(stored.expose())
        .map_err(|e| AccountError::Key(format!("the stored credentials: {e}")))?;
    let http = https_client(settings.ca_file.as_deref()).map_err(AccountError::Ca)?;
    let mut account = Account::builder_with_http(http)
        .from_credentials(creds)
        .await?;
    let new = account.update_key().await?;
    let new = Secret::new(serde_json::to_vec(&new).map_err(|e| AccountError::Ca(e.to_string()))?);
    let new_thumbprint = account.key_thumbprint().to_owned();
    let detail = json!({
        "directory": directory,
        "account": row.account_url,
        "old_thumbprint": old_thumbprint,
        "thumbprint": new_thumbprint,
    });
    store
        .replace_account(
            directory,
            account.id(),
            &new,
            AccountChange::RolledOver,
            &detail,
            unix(clock),
        )
        .map_err(AccountError::RolloverNotStored)?;
    tracing::info!(directory = %directory, account = %account.id(), old_thumbprint = %old_thumbprint, thumbprint = %new_thumbprint, "ACME account key rolled over");
    Ok(Rollover {
        account_url: account.id().to_owned(),
        old_thumbprint,
        new_thumbprint,
    })
}

#[cfg(test)]
mod tests;
