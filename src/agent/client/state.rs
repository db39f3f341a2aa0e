//! The agent's state directory: what enrollment wrote, the bundles received, the keys made
//! here and what was installed. The directory is 0700 and every file 0600, written
//! atomically (a temporary file, fsync, rename, fsync of the directory), so a crash leaves
//! either the old file or the new one.
//!
//! ```text
//! agent.json                           AgentFile: name, server, pinned keys
//! identity.key / identity.pem / ca.pem the mTLS identity and the pinned agent CA
//! age.key                              the X25519 identity central keys are sealed to
//! bundles/<certificate>/<version>.json SignedBundle as received (its key stays sealed)
//! keys/<certificate>/<n>.age           key = "agent" keys, sealed to age.key's recipient
//! installed.json                       per endpoint: version, sha256, files written
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::protocol::SignedBundle;

/// The largest state file read back.
pub const MAX_FILE: u64 = 4 << 20;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing a file failed.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A file is not what the agent wrote.
    #[error("{path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The directory has not been enrolled (`agent.json` is missing).
    #[error("{0} is not an enrolled agent's state directory (run `tlsward agent enroll`)")]
    NotEnrolled(PathBuf),
    /// A name from the center that cannot be a file name.
    #[error("{0:?} cannot be used as a file name")]
    BadName(String),
}

/// `agent.json`: who this agent is and whom it trusts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The agent's name.
    pub agent: String,
    /// The center's agent API (`https://HOST:PORT`).
    pub server: String,
    /// The center's bundle-signing public key (Ed25519, base64).
    pub signing_key: String,
    /// The pinned SHA-256 of the agent CA certificate (lower hex).
    pub ca_sha256: String,
    /// When the identity certificate expires (unix seconds).
    pub identity_not_after: i64,
    /// When it was issued, or last renewed (unix seconds).
    pub identity_issued_at: i64,
}

/// One file a deployment wrote, with the SHA-256 of what it wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// The file.
    pub path: PathBuf,
    /// The SHA-256 of its content right after the hook wrote it (lower hex).
    pub sha256: String,
}

/// What is installed at one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstalledEndpoint {
    /// The certificate.
    pub certificate: String,
    /// The version id.
    pub version: i64,
    /// Its leaf's SHA-256.
    pub sha256: String,
    /// Every file the hook wrote.
    pub files: Vec<FileRecord>,
    /// The version before it, when there was one (what a roll back after a restart puts back).
    pub previous: Option<i64>,
}

/// `installed.json`: by endpoint name.
pub type Installed = BTreeMap<String, InstalledEndpoint>;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// Whether `name` (a certificate's, from the center) can be a path component here.
pub fn safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl StateDir {
    /// The directory at `root`, created 0700 if missing; an existing one is made 0700.
    pub fn create(root: &Path) -> Result<Self, StateError> {
        let io = |e: std::io::Error| StateError::Io {
            path: root.to_owned(),
            why: e.to_string(),
        };
        crate::files::create_private_dir(root).map_err(io)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// An enrolled directory (its `agent.json` is there).
    pub fn open(root: &Path) -> Result<(Self, AgentFile), StateError> {
        let dir = Self {
            root: root.to_owned(),
        };
        if !dir.path("agent.json").is_file() {
            return Err(StateError::NotEnrolled(root.to_owned()));
        }
        let file = dir.read_json("agent.json")?;
        Ok((dir, file))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes `bytes` to `rel` atomically, 0600, creating its parent directories 0700.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.path(rel), bytes)
    }

    /// Reads `rel` (at most [`MAX_FILE`] bytes); `None` when it does not exist.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, StateError> {
        match crate::files::read(&self.path(rel), MAX_FILE) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(StateError::Io {
                path: self.path(rel),
                why: e.why(),
            }),
        }
    }

    /// Reads `rel` as JSON.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<T, StateError> {
        let bytes = self.read(rel)?.ok_or_else(|| StateError::Io {
            path: self.path(rel),
            why: "missing".into(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: self.path(rel),
            why: e.to_string(),
        })
    }

    /// Writes `value` to `rel` as JSON, atomically.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: self.path(rel),
            why: e.to_string(),
        })?;
        self.write(rel, &bytes)
    }

    /// What is installed, per endpoint (empty before the first deployment).
    pub fn installed(&self) -> Result<Installed, StateError> {
        if self.read("installed.json")?.is_none() {
            return Ok(Installed::new());
        }
        self.read_json("installed.json")
    }

    /// Replaces `installed.json`.
    pub fn set_installed(&self, installed: &Installed) -> Result<(), StateError> {
        self.write_json("installed.json", installed)
    }

    /// The bundle of `certificate` version `version`, as received.
    pub fn bundle(
        &self,
        certificate: &str,
        version: i64,
    ) -> Result<Option<SignedBundle>, StateError> {
        let rel = bundle_rel(certificate, version)?;
        if self.read(&rel)?.is_none() {
            return Ok(None);
        }
        self.read_json(&rel).map(Some)
    }

    /// Stores a verified bundle, then removes the oldest of that certificate's beyond `keep`
    /// (never `protect`, the installed version).
    pub fn store_bundle(
        &self,
        certificate: &str,
        version: i64,
        bundle: &SignedBundle,
        keep: usize,
        protect: Option<i64>,
    ) -> Result<(), StateError> {
        self.write_json(&bundle_rel(certificate, version)?, bundle)?;
        let mut versions = self.bundle_versions(certificate)?;
        versions.sort_unstable();
        let excess = versions.len().saturating_sub(keep.max(1));
        for old in versions.into_iter().take(excess) {
            if Some(old) == protect || old == version {
                continue;
            }
            let _ = std::fs::remove_file(self.path(&bundle_rel(certificate, old)?));
        }
        Ok(())
    }

    /// The versions of `certificate` kept here.
    pub fn bundle_versions(&self, certificate: &str) -> Result<Vec<i64>, StateError> {
        if !safe_name(certificate) {
            return Err(StateError::BadName(certificate.to_owned()));
        }
        let dir = self.path(&format!("bundles/{certificate}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse::<i64>()
                    .ok()
            })
            .collect())
    }
}

fn bundle_rel(certificate: &str, version: i64) -> Result<String, StateError> {
    if !safe_name(certificate) {
        return Err(StateError::BadName(certificate.to_owned()));
    }
    Ok(format!("bundles/{certificate}/{version}.json"))
}

/// Writes `bytes` to `path` atomically (temporary file 0600 beside it, fsync, rename, fsync
/// of the directory), creating missing parents 0700.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |e: std::io::Error| StateError::Io {
        path: path.to_owned(),
        why: e.to_string(),
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    crate::files::create_private_dir(parent).map_err(io)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    // An existing temporary file keeps its mode: make sure.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The SHA-256 (lower hex) of the file at `path`, or `None` when it cannot be read.
pub fn file_sha256(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(crate::cert::sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn bundle(n: u8) -> SignedBundle {
        SignedBundle {
            payload: format!("p{n}"),
            signature: format!("s{n}"),
        }
    }

    #[test]
    fn files_are_0600_in_0700_directories_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let dir = StateDir::create(&root).unwrap();
        dir.write("identity.key", b"secret").unwrap();
        dir.store_bundle("site", 3, &bundle(3), 3, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.path("identity.key")), 0o600);
        assert_eq!(mode(&dir.path("bundles")), 0o700);
        assert_eq!(mode(&dir.path("bundles/site")), 0o700);
        assert_eq!(mode(&dir.path("bundles/site/3.json")), 0o600);
        // Nothing temporary left behind.
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn only_the_last_bundles_are_kept_and_the_installed_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        for v in 1..=5 {
            dir.store_bundle("site", v, &bundle(v as u8), 2, Some(1))
                .unwrap();
        }
        let mut kept = dir.bundle_versions("site").unwrap();
        kept.sort_unstable();
        assert_eq!(kept, [1, 4, 5]);
        assert_eq!(dir.bundle("site", 5).unwrap(), Some(bundle(5)));
        assert_eq!(dir.bundle("site", 2).unwrap(), None);
    }

    #[test]
    fn names_from_the_center_cannot_leave_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        for bad in ["../x", "a/b", "", ".hidden", "a\0b"] {
            assert!(
                matches!(
                    dir.store_bundle(bad, 1, &bundle(1), 3, None),
                    Err(StateError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(safe_name("web-1.example_com"));
    }

    #[test]
    fn an_unenrolled_directory_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            StateDir::open(tmp.path()),
            Err(StateError::NotEnrolled(_))
        ));
    }
}
