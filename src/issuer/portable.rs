//! Portable ACME accounts: what the store's account is (for CAA `accounturi`, RFC 8657 §3),
//! exporting it encrypted with age, adopting an existing account key (an export of ours,
//! certbot's `private_key.json` JWK, a PEM key) once the CA confirms it knows the key
//! (`onlyReturnExisting`, RFC 8555 §7.3.1), and the key change of RFC 8555 §7.3.5.
//!
//! Keys only ever pass through [`Secret`]; what is printed or journaled is the account URL
//! and the key's RFC 7638 thumbprint, never key bytes. A replaced key stays sealed in the
//! store (`retired_account_keys`), so a backup holds it. instant-acme signs with ECDSA P-256
//! (ES256) only, so that is the one key type adopted; an RSA key is refused with that reason.
//! Key formats, thumbprints and JWS signing are in `keys.rs` (pure: bytes in, bytes out);
//! the key change, which seals its new key in the store before the CA is asked, in
//! `rollover.rs`. Knows the store only through its API; nothing of the CLI or `serve`.

use std::io::{Read, Write};
use std::str::FromStr;

use instant_acme::{Account, AccountCredentials, Key};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

mod keys;
mod rollover;

pub use keys::thumbprint;
use keys::{from_jwk, from_pem};
pub use rollover::{Rollover, rollover};

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
    /// The CA changed the key, and the store failed to make it the account's; it stays the
    /// pending key, which the next rollover settles.
    #[error(
        "the CA changed the account key, but the store could not make it the account's ({0}): it is kept pending; run `tlsward acme account rollover` again"
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
    /// Whether an interrupted rollover left a pending key (the next rollover settles it).
    pub pending_rollover: bool,
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
        pending_rollover: store.pending_account_key(directory)?.is_some(),
    }))
}

/// The PKCS#8 key inside stored instant-acme credentials.
fn credentials_key(creds: &Secret) -> Result<Secret, AccountError> {
    let creds: AccountCredentials = serde_json::from_slice(creds.expose())
        .map_err(|e| AccountError::Key(format!("the stored credentials: {e}")))?;
    Ok(Secret::new(creds.private_key().secret_pkcs8_der().to_vec()))
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

#[cfg(test)]
mod tests;
