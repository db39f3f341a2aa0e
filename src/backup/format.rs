//! The backup file: plain [age](https://age-encryption.org/v1) (so the `age` CLI opens
//! it), encrypted to X25519 recipients, around a small container:
//!
//! ```text
//! "tlsward-backup\n" 0x01                     magic and container version
//! 'M' u64-be length  manifest (JSON)          format version, created at, counts, hashes
//! 'S' u64-be length  the store (SQLite file)  a VACUUM INTO snapshot
//! 'K' u64-be length  the store key            AGE-SECRET-KEY-1... (needed to re-seal)
//! 'E' u64-be 0                                the end
//! ```
//!
//! age's STREAM authenticates every chunk and marks the last one, so a truncated or altered
//! file fails to decrypt; the manifest's SHA-256 of each part is checked on top. The file is
//! written to a temporary name (0600) in the same directory, synced, renamed into place and
//! the directory synced: a kill at any moment leaves the old state or a whole backup, and a
//! leftover temporary file never decrypts (its last chunk is missing).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::store::{Counts, Secret};

/// The container's format version, in the manifest and after the magic.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8] = b"tlsward-backup\n\x01";
/// Caps on the parts read from a file (the store is streamed to disk).
const MAX_MANIFEST: u64 = 64 * 1024;
const MAX_KEY: u64 = 4096;
const MAX_STORE: u64 = 64 * 1024 * 1024 * 1024;

/// What a backup says about itself, inside the encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// When it was made (unix seconds).
    pub created_at: i64,
    /// The tlsward version that made it.
    pub tlsward: String,
    /// The store's schema version.
    pub schema_version: i64,
    /// Rows in each part of the store.
    pub counts: Counts,
    /// Size of the store snapshot in bytes.
    pub store_bytes: u64,
    /// SHA-256 (hex) of the store snapshot.
    pub store_sha256: String,
    /// SHA-256 (hex) of the store key.
    pub key_sha256: String,
}

/// SHA-256 of a file, hex.
pub(super) fn sha256_file(path: &Path) -> Result<(String, u64), BackupError> {
    let mut f = std::fs::File::open(path).map_err(|e| BackupError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| BackupError::io(path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((hex::encode(ctx.finish().as_ref()), total))
}

/// SHA-256 of bytes, hex.
pub(super) fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Writes a backup to `path` atomically, encrypted to `recipients`.
pub(super) fn write(
    path: &Path,
    recipients: &[age::x25519::Recipient],
    manifest: &Manifest,
    store: &Path,
    key: &Secret,
) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| BackupError::io(path, "not a file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| BackupError::io(&tmp, e))?;
    let written = (|| {
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| BackupError::Key(format!("cannot encrypt to the recipients: {e}")))?;
        let mut out = BufWriter::new(&file);
        let io = |e: std::io::Error| BackupError::io(&tmp, e);
        let mut w = encryptor.wrap_output(&mut out).map_err(io)?;
        w.write_all(MAGIC).map_err(io)?;
        let json = serde_json::to_vec(manifest).expect("a manifest serializes");
        section(&mut w, b'M', &json).map_err(io)?;
        let mut db = std::fs::File::open(store).map_err(|e| BackupError::io(store, e))?;
        w.write_all(b"S").map_err(io)?;
        w.write_all(&manifest.store_bytes.to_be_bytes())
            .map_err(io)?;
        let copied =
            std::io::copy(&mut (&mut db).take(manifest.store_bytes), &mut w).map_err(io)?;
        if copied != manifest.store_bytes {
            return Err(BackupError::io(store, "the snapshot changed while written"));
        }
        section(&mut w, b'K', key.expose()).map_err(io)?;
        section(&mut w, b'E', &[]).map_err(io)?;
        w.finish().map_err(io)?;
        out.flush().map_err(io)?;
        drop(out);
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| BackupError::io(path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BackupError::io(dir, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn section(w: &mut impl Write, tag: u8, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&[tag])?;
    w.write_all(&(bytes.len() as u64).to_be_bytes())?;
    w.write_all(bytes)
}

/// A backup opened into a scratch directory.
#[derive(Debug)]
pub(super) struct Opened {
    /// Its manifest.
    pub(super) manifest: Manifest,
    /// The store snapshot, in the scratch directory.
    pub(super) store: PathBuf,
    /// The store key, in the scratch directory (0600).
    pub(super) key: PathBuf,
}

/// Decrypts the backup at `path` with `identities` into `scratch` and checks every part
/// against the manifest.
pub(super) fn read(
    path: &Path,
    identities: &[age::x25519::Identity],
    scratch: &Path,
) -> Result<Opened, BackupError> {
    let file = std::fs::File::open(path).map_err(|e| BackupError::io(path, e))?;
    let refused = |why: String| BackupError::Refused(format!("{}: {why}", path.display()));
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file)).map_err(|e| {
        refused(format!(
            "not an age file, or its header is truncated or altered ({e})"
        ))
    })?;
    let mut r = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => refused(
                "no identity given can decrypt it (the wrong identity, or a backup of another store)"
                    .into(),
            ),
            e => refused(format!("cannot decrypt: the file is altered ({e})")),
        })?;
    let damaged = |e: std::io::Error| refused(format!("the file is truncated or altered ({e})"));
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(damaged)?;
    if magic != MAGIC {
        return Err(refused(
            "an age file, but not a tlsward backup of a format this version reads".into(),
        ));
    }
    let manifest_bytes = read_section(&mut r, b'M', MAX_MANIFEST, &mut Vec::new(), path)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| refused(format!("its manifest is unreadable: {e}")))?;
    if manifest.format != FORMAT_VERSION {
        return Err(refused(format!(
            "format version {} (this tlsward reads {FORMAT_VERSION})",
            manifest.format
        )));
    }
    let store = scratch.join("tlsward.db");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let len = read_header(&mut r, b'S', MAX_STORE, path)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&store)
            .map_err(|e| BackupError::io(&store, e))?;
        let copied = std::io::copy(&mut (&mut r).take(len), &mut out).map_err(damaged)?;
        if copied != len {
            return Err(refused("the file is truncated".into()));
        }
        out.sync_all().map_err(|e| BackupError::io(&store, e))?;
    }
    let key_bytes =
        zeroize::Zeroizing::new(read_section(&mut r, b'K', MAX_KEY, &mut Vec::new(), path)?);
    read_section(&mut r, b'E', 0, &mut Vec::new(), path)?;
    let mut rest = [0u8; 1];
    match r.read(&mut rest).map_err(damaged)? {
        0 => {}
        _ => return Err(refused("bytes after the end of the backup".into())),
    }
    let (store_sha, store_len) = sha256_file(&store)?;
    if store_sha != manifest.store_sha256 || store_len != manifest.store_bytes {
        return Err(refused(
            "the store inside does not match its manifest's hash".into(),
        ));
    }
    if sha256(&key_bytes) != manifest.key_sha256 {
        return Err(refused(
            "the key inside does not match its manifest's hash".into(),
        ));
    }
    let key = scratch.join("store.key");
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(&key_bytes).and_then(|()| f.sync_all()))
            .map_err(|e| BackupError::io(&key, e))?;
    }
    Ok(Opened {
        manifest,
        store,
        key,
    })
}

fn read_header(r: &mut impl Read, tag: u8, max: u64, path: &Path) -> Result<u64, BackupError> {
    let refused = |why: String| BackupError::Refused(format!("{}: {why}", path.display()));
    let mut head = [0u8; 9];
    r.read_exact(&mut head)
        .map_err(|e| refused(format!("the file is truncated or altered ({e})")))?;
    if head[0] != tag {
        return Err(refused("its parts are out of order".into()));
    }
    let len = u64::from_be_bytes(head[1..].try_into().expect("8 bytes"));
    if len > max {
        return Err(refused(format!(
            "a part of {len} bytes, more than the {max} allowed"
        )));
    }
    Ok(len)
}

fn read_section(
    r: &mut impl Read,
    tag: u8,
    max: u64,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<Vec<u8>, BackupError> {
    let len = read_header(r, tag, max, path)?;
    buf.clear();
    let got = r.take(len).read_to_end(buf).map_err(|e| {
        BackupError::Refused(format!(
            "{}: the file is truncated or altered ({e})",
            path.display()
        ))
    })?;
    if got as u64 != len {
        return Err(BackupError::Refused(format!(
            "{}: the file is truncated",
            path.display()
        )));
    }
    Ok(std::mem::take(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup of `store` bytes and `key` under `manifest`, encrypted to a new identity.
    fn make(
        dir: &Path,
        store: &[u8],
        key: &[u8],
        edit: impl FnOnce(&mut Manifest),
    ) -> (PathBuf, age::x25519::Identity) {
        let db = dir.join("snap.db");
        std::fs::write(&db, store).unwrap();
        let mut manifest = Manifest {
            format: FORMAT_VERSION,
            created_at: 1_800_000_000,
            tlsward: "test".into(),
            schema_version: 5,
            counts: Counts::default(),
            store_bytes: store.len() as u64,
            store_sha256: sha256(store),
            key_sha256: sha256(key),
        };
        edit(&mut manifest);
        let id = age::x25519::Identity::generate();
        let path = dir.join("b.age");
        write(
            &path,
            &[id.to_public()],
            &manifest,
            &db,
            &Secret::new(key.to_vec()),
        )
        .unwrap();
        (path, id)
    }

    fn scratch(dir: &Path) -> PathBuf {
        let s = dir.join(format!("scratch{}", fastrand::u32(..)));
        std::fs::create_dir(&s).unwrap();
        s
    }

    #[test]
    fn a_round_trip_gives_back_every_part() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = make(dir.path(), b"sqlite bytes", b"AGE-SECRET-KEY-1X", |_| {});
        let opened = read(&path, &[id], &scratch(dir.path())).unwrap();
        assert_eq!(std::fs::read(&opened.store).unwrap(), b"sqlite bytes");
        assert_eq!(std::fs::read(&opened.key).unwrap(), b"AGE-SECRET-KEY-1X");
        assert_eq!(opened.manifest.store_bytes, 12);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&path), mode(&opened.key), mode(&opened.store)),
            (0o600, 0o600, 0o600)
        );
    }

    #[test]
    fn parts_that_do_not_match_the_manifest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = make(dir.path(), b"sqlite", b"key", |m| {
            m.store_sha256 = sha256(b"other");
        });
        let e = read(&path, &[id], &scratch(dir.path())).unwrap_err();
        assert!(
            e.to_string().contains("does not match its manifest's hash"),
            "{e}"
        );

        let (path, id) = make(dir.path(), b"sqlite", b"key", |m| {
            m.key_sha256 = sha256(b"k")
        });
        let e = read(&path, &[id], &scratch(dir.path())).unwrap_err();
        assert!(
            e.to_string().contains("the key inside does not match"),
            "{e}"
        );

        let (path, id) = make(dir.path(), b"sqlite", b"key", |m| m.format = 2);
        let e = read(&path, &[id], &scratch(dir.path())).unwrap_err();
        assert!(e.to_string().contains("format version 2"), "{e}");
        assert!(matches!(e, BackupError::Refused(_)));
    }

    #[test]
    fn an_age_file_that_is_not_a_backup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public();
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(b"just some text, not a container").unwrap();
        w.finish().unwrap();
        let path = dir.path().join("x.age");
        std::fs::write(&path, out).unwrap();
        let e = read(&path, &[id], &scratch(dir.path())).unwrap_err();
        assert!(e.to_string().contains("not a tlsward backup"), "{e}");
    }
}
