//! Encryption at rest for private keys and ACME account credentials, with age (X25519).

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use super::StoreError;
use crate::secret::Secret;

/// Where the store's age identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An age identity file (`AGE-SECRET-KEY-1...`), created 0600 when missing.
    File(std::path::PathBuf),
    /// An age identity in an environment variable.
    Env(String),
}

/// Encrypts to, and decrypts with, one age X25519 identity.
pub(crate) struct Crypt {
    identity: age::x25519::Identity,
}

impl fmt::Debug for Crypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Crypt(age x25519)")
    }
}

impl Crypt {
    pub(crate) fn load(source: &KeySource) -> Result<Self, StoreError> {
        let text = match source {
            KeySource::Env(var) => std::env::var(var)
                .map_err(|_| StoreError::Key(format!("environment variable {var} is not set")))?,
            KeySource::File(path) => {
                if !path.exists() {
                    match create_identity(path) {
                        // Another process (a concurrent `tlsward cert`) created it first.
                        Err(StoreError::Key(_)) if path.exists() => {}
                        other => other?,
                    }
                }
                check_private(path)?;
                crate::files::read_to_string(path, crate::files::MAX_SECRET)
                    .map_err(|e| StoreError::Key(e.to_string()))?
            }
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| StoreError::Key("no AGE-SECRET-KEY line in the store key".into()))?;
        let identity = age::x25519::Identity::from_str(line)
            .map_err(|_| StoreError::Key("the store key is not a valid age identity".into()))?;
        Ok(Self { identity })
    }

    /// A key that lives only in memory, for a store that does not exist on disk.
    pub(crate) fn ephemeral() -> Self {
        Self {
            identity: age::x25519::Identity::generate(),
        }
    }

    /// The identity in age's text form (`AGE-SECRET-KEY-1...`), for a backup, which carries
    /// it only inside its own encryption.
    pub(crate) fn identity_text(&self) -> Secret {
        Secret::new(
            self.identity
                .to_string()
                .expose_secret()
                .as_bytes()
                .to_vec(),
        )
    }

    pub(crate) fn encrypt(&self, plain: &Secret) -> Result<Vec<u8>, StoreError> {
        let recipient = self.identity.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| StoreError::Crypto(e.to_string()))?;
        let mut out = Vec::new();
        let mut writer = encryptor
            .wrap_output(&mut out)
            .map_err(|e| StoreError::Crypto(e.to_string()))?;
        writer
            .write_all(plain.expose())
            .map_err(|e| StoreError::Crypto(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| StoreError::Crypto(e.to_string()))?;
        Ok(out)
    }

    pub(crate) fn decrypt(&self, sealed: &[u8]) -> Result<Secret, StoreError> {
        let decryptor =
            age::Decryptor::new(sealed).map_err(|e| StoreError::Crypto(e.to_string()))?;
        let mut reader = decryptor
            .decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .map_err(|_| StoreError::Crypto("cannot decrypt: wrong store key?".into()))?;
        let mut plain = Vec::new();
        reader
            .read_to_end(&mut plain)
            .map_err(|e| StoreError::Crypto(e.to_string()))?;
        Ok(Secret::new(plain))
    }
}

/// Writes a new identity to `path` atomically: into a private temporary file first, then
/// hard-linked into place, which fails if another process got there first. Nobody ever
/// reads a half-written key.
fn create_identity(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |p: &Path, e: std::io::Error| StoreError::Key(format!("{}: {e}", p.display()));
    let identity = age::x25519::Identity::generate();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::files::create_private_dir(dir).map_err(|e| err(dir, e))?;
    let tmp = dir.join(format!(
        ".store.key.{}.{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let text = format!(
        "# tlsward store key: decrypts the private keys in the store. Back it up apart from the store.\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    written.map_err(|e| err(path, e))
}

/// Refuses a key file that others can read, or that another user owns (and so could have
/// replaced with a key of their choosing).
fn check_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))?;
    let mode = meta.mode();
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StoreError::Key(format!(
            "{} is owned by uid {}, not by this user (uid {me}); chown it to the user that runs tlsward",
            path.display(),
            meta.uid()
        )));
    }
    if mode & 0o077 != 0 {
        return Err(StoreError::Key(format!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}
