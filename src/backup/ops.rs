//! `create`, `verify` and `restore`: the three things done with a backup file.
//!
//! Plain text of the store (the snapshot, the store key) only ever exists in a private
//! scratch directory (0700, files 0600) beside the store or where the caller says, removed
//! when done; one a kill left behind is removed by the next run.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::format::{self, Manifest, Opened};
use super::{BackupError, BackupSettings};
use crate::store::{KeySource, SealedKey, Store};

const SCRATCH_PREFIX: &str = ".tlsward-scratch-";

/// What `verify` found: everything it checked held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Managed certificates in it.
    pub certificates: i64,
    /// Versions in it.
    pub versions: i64,
    /// Private keys decrypted and matched to their certificate.
    pub keys_checked: usize,
    /// ACME accounts whose credentials decrypted.
    pub accounts_checked: usize,
    /// The newest version: its certificate and when it was issued (unix seconds).
    pub newest_version: Option<(String, i64)>,
}

/// What `restore` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup, as verified before it was restored.
    pub summary: Summary,
    /// The store it became.
    pub store: PathBuf,
}

/// The recipients of every backup: `[backup] recipients` and the drill identity's.
fn recipients(settings: &BackupSettings) -> Result<Vec<age::x25519::Recipient>, BackupError> {
    let mut out = Vec::new();
    for r in &settings.recipients {
        out.push(age::x25519::Recipient::from_str(r).map_err(|e| {
            BackupError::Key(format!(
                "backup.recipients: {r:?} is not an age recipient: {e}"
            ))
        })?);
    }
    if out.is_empty() {
        return Err(BackupError::Key(
            "backup.recipients is empty: name at least one age recipient whose identity is kept off this server".into(),
        ));
    }
    if let Some(file) = &settings.drill_identity_file {
        for identity in load_identities(file)? {
            out.push(identity.to_public());
        }
    }
    Ok(out)
}

/// Reads the X25519 identities (`AGE-SECRET-KEY-1...` lines) of an age identity file.
pub fn load_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, BackupError> {
    let text = zeroize::Zeroizing::new(
        crate::files::read_to_string(path, crate::files::MAX_SECRET)
            .map_err(|e| BackupError::io(path, e.why()))?,
    );
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("AGE-SECRET-KEY-") {
            out.push(age::x25519::Identity::from_str(line).map_err(|_| {
                BackupError::Key(format!(
                    "{}: a line is not a valid age identity",
                    path.display()
                ))
            })?);
        }
    }
    if out.is_empty() {
        return Err(BackupError::Key(format!(
            "{}: no AGE-SECRET-KEY line (an age identity file, as age-keygen writes)",
            path.display()
        )));
    }
    Ok(out)
}

/// Makes a backup of `store` at `to` (atomically; an existing file is replaced), encrypted
/// to `settings`' recipients. `now` is the manifest's creation time.
pub fn create(
    store: &Store,
    settings: &BackupSettings,
    to: &Path,
    now: i64,
) -> Result<Manifest, BackupError> {
    let recipients = recipients(settings)?;
    let scratch = Scratch::new(store_dir(store.path()))?;
    let snapshot = scratch.0.join("tlsward.db");
    store.snapshot_to(&snapshot)?;
    let key = store.key_text();
    let key_file = scratch.write_private("store.key", key.expose())?;
    let (counts, schema_version) = {
        let snap = Store::open_existing(&snapshot, &KeySource::File(key_file))?;
        (snap.counts()?, snap.schema_version()?)
    };
    let (store_sha256, store_bytes) = format::sha256_file(&snapshot)?;
    let manifest = Manifest {
        format: format::FORMAT_VERSION,
        created_at: now,
        tlsward: crate::version::VERSION.to_owned(),
        schema_version,
        counts,
        store_bytes,
        store_sha256,
        key_sha256: format::sha256(key.expose()),
    };
    format::write(to, &recipients, &manifest, &snapshot, &key)?;
    Ok(manifest)
}

/// Opens the backup at `path` with `identities` in a scratch directory under
/// `scratch_base`, and checks it: the store's consistency check, its counts against the
/// manifest, every private key against its certificate, every account's credentials and
/// every order's key. `Ok` only when all of it holds.
pub fn verify(
    path: &Path,
    identities: &[age::x25519::Identity],
    scratch_base: &Path,
) -> Result<Summary, BackupError> {
    let scratch = Scratch::new(scratch_base)?;
    let opened = format::read(path, identities, &scratch.0)?;
    check(&opened)
}

fn check(opened: &Opened) -> Result<Summary, BackupError> {
    let store = Store::open_existing(&opened.store, &KeySource::File(opened.key.clone()))
        .map_err(|e| BackupError::Inconsistent(vec![format!("the store does not open: {e}")]))?;
    let mut problems = store.check()?;
    let counts = store.counts()?;
    if counts != opened.manifest.counts {
        problems.push(format!(
            "the store holds {counts:?}, its manifest says {:?}",
            opened.manifest.counts
        ));
    }
    let (mut keys, mut accounts) = (0, 0);
    let mut newest: Option<(String, i64)> = None;
    for sealed in store.sealed_keys()? {
        match sealed {
            SealedKey::Version {
                id,
                certificate,
                issued_at,
                chain_pem,
                key,
            } => {
                match key {
                    Ok(k) if key_matches(k.expose(), &chain_pem) => keys += 1,
                    Ok(_) => problems.push(format!(
                        "version {id} of {certificate}: the private key does not match the certificate"
                    )),
                    Err(e) => problems.push(format!(
                        "version {id} of {certificate}: the private key does not decrypt: {e}"
                    )),
                }
                if newest.as_ref().is_none_or(|(_, at)| issued_at > *at) {
                    newest = Some((certificate, issued_at));
                }
            }
            SealedKey::Account {
                directory,
                credentials,
            } => match credentials {
                Ok(c) if serde_json::from_slice::<serde_json::Value>(c.expose()).is_ok() => {
                    accounts += 1;
                }
                Ok(_) => problems.push(format!(
                    "the ACME account for {directory}: its credentials are not readable"
                )),
                Err(e) => problems.push(format!(
                    "the ACME account for {directory}: its credentials do not decrypt: {e}"
                )),
            },
            SealedKey::Order { id, key } => {
                if let Err(e) = key {
                    problems.push(format!("order {id}: its key does not decrypt: {e}"));
                }
            }
            SealedKey::AccountKey { table, row, key } => {
                if let Err(e) = key {
                    problems.push(format!(
                        "{table} {row}: the account key does not decrypt: {e}"
                    ));
                }
            }
            SealedKey::AgentCa {
                ca_cert_pem,
                ca_key,
                signing_key,
            } => {
                match ca_key {
                    Ok(k) if key_matches(k.expose(), &ca_cert_pem) => {}
                    Ok(_) => problems.push(
                        "the agent CA: its key does not match its certificate".to_owned(),
                    ),
                    Err(e) => problems.push(format!("the agent CA: its key does not decrypt: {e}")),
                }
                match signing_key {
                    Ok(k) if ring::signature::Ed25519KeyPair::from_pkcs8(k.expose()).is_ok() => {}
                    Ok(_) => problems
                        .push("the agent CA: its bundle-signing key is not Ed25519".to_owned()),
                    Err(e) => problems.push(format!(
                        "the agent CA: its bundle-signing key does not decrypt: {e}"
                    )),
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(BackupError::Inconsistent(problems));
    }
    Ok(Summary {
        manifest: opened.manifest.clone(),
        certificates: counts.certificates,
        versions: counts.versions,
        keys_checked: keys,
        accounts_checked: accounts,
        newest_version: newest,
    })
}

/// Whether the leaf of `chain_pem` certifies the public half of `key` (PKCS#8 DER).
fn key_matches(key: &[u8], chain_pem: &str) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let Ok(pair) = rcgen::KeyPair::try_from(key) else {
        return false;
    };
    let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(chain_pem.as_bytes()).next() else {
        return false;
    };
    x509_parser::certificate::X509Certificate::from_der(&leaf).is_ok_and(|(_, cert)| {
        cert.public_key().subject_public_key.data.as_ref() == pair.public_key_raw()
    })
}

/// Restores the backup at `path` as the store at `store_path` with key `key`: verified
/// first, in full; then every key re-sealed to `key` (a key file is created if missing),
/// and `backup.restored` journaled. The store's directory must be empty or missing
/// unless `force` (which replaces the database there and keeps an existing key file).
pub fn restore(
    path: &Path,
    identities: &[age::x25519::Identity],
    store_path: &Path,
    key: &KeySource,
    force: bool,
    now: i64,
) -> Result<Restored, BackupError> {
    let dir = store_dir(store_path);
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                return Err(BackupError::NotEmpty(format!(
                    "{} is not empty: restore into an empty directory, or pass --force to replace the store there",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BackupError::io(dir, e)),
    }
    crate::files::create_private_dir(dir).map_err(|e| BackupError::io(dir, e))?;
    let scratch = Scratch::new(dir)?;
    let opened = format::read(path, identities, &scratch.0)?;
    let summary = check(&opened)?;
    let detail = serde_json::json!({
        "file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "created_at": summary.manifest.created_at,
        "versions": summary.versions,
    });
    Store::restore_snapshot(
        &opened.store,
        &KeySource::File(opened.key.clone()),
        store_path,
        key,
        now,
        &detail,
    )?;
    Ok(Restored {
        summary,
        store: store_path.to_owned(),
    })
}

/// The directory holding the store.
fn store_dir(store: &Path) -> &Path {
    store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A private scratch directory (0700), removed on drop.
#[derive(Debug)]
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    /// Creates one under `base` (created 0700 if missing), first removing the ones left by
    /// processes that no longer run.
    pub(super) fn new(base: &Path) -> Result<Self, BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        crate::files::create_private_dir(base).map_err(|e| BackupError::io(base, e))?;
        sweep(base);
        let dir = base.join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| BackupError::io(&dir, e))?;
        Ok(Self(dir))
    }

    fn write_private(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, BackupError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| BackupError::io(&path, e))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes scratch directories under `base` whose process is gone.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn scratch_dirs_are_private_removed_on_drop_and_swept_when_orphaned() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::new(dir.path()).unwrap();
        let path = s.0.clone();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = s.write_private("k", b"secret").unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(s);
        assert!(!path.exists());
        // One left by a process that is gone (no such pid) is removed by the next one.
        let orphan = dir.path().join(format!("{SCRATCH_PREFIX}4294967-1"));
        std::fs::create_dir(&orphan).unwrap();
        let _s = Scratch::new(dir.path()).unwrap();
        assert!(!orphan.exists());
    }

    #[test]
    fn recipients_need_an_offline_one_and_add_the_drill_identity() {
        let dir = tempfile::tempdir().unwrap();
        let none = BackupSettings {
            recipients: vec![],
            drill_identity_file: None,
            schedule: None,
        };
        assert!(
            recipients(&none)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let drill = age::x25519::Identity::generate();
        let file = dir.path().join("drill.key");
        std::fs::write(
            &file,
            format!(
                "# drill\n{}\n",
                age::secrecy::ExposeSecret::expose_secret(&drill.to_string())
            ),
        )
        .unwrap();
        let offline = age::x25519::Identity::generate().to_public().to_string();
        let settings = BackupSettings {
            recipients: vec![offline.clone()],
            drill_identity_file: Some(file),
            schedule: None,
        };
        let got: Vec<String> = recipients(&settings)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, [offline, drill.to_public().to_string()]);
    }
}
