//! Backups of the store that are proven to restore.
//!
//! Owns: the backup file (`format.rs`: plain age, encrypted to the `[backup] recipients`
//! and the drill identity, around a small container of a manifest, a `VACUUM INTO`
//! snapshot of the store and the store's key), written atomically; `create`, `verify` (the
//! store's consistency check, every private key against its certificate, the ACME
//! account's credentials) and `restore` (re-sealing every key for the new store's key) in
//! `ops.rs`; and the schedule `serve` runs with the restore drill after each backup, the
//! offsite command and the metrics (`schedule.rs`).
//!
//! Knows the store and files; not HTTP, ACME or the config file.

mod format;
mod ops;
mod schedule;

use std::path::PathBuf;
use std::time::Duration;

pub use format::{FORMAT_VERSION, Manifest};
pub use ops::{Restored, Summary, create, load_identities, restore, verify};
pub use schedule::{BackupMetrics, Stage, run};

/// The offsite command's time limit when `command_timeout` is not set.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How many backups the schedule keeps when `keep` is not set.
pub const DEFAULT_KEEP: usize = 14;

/// `[backup]`: who can decrypt backups, and the schedule `serve` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// age X25519 recipients (`age1...`), whose identities stay off the server.
    pub recipients: Vec<String>,
    /// An identity kept on the server only for restore drills; its recipient is added to
    /// every backup.
    pub drill_identity_file: Option<PathBuf>,
    /// Scheduled backups in `serve`, when `every` and `dir` are set.
    pub schedule: Option<Schedule>,
}

/// Scheduled backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How often.
    pub every: Duration,
    /// Where the files go (created 0700).
    pub dir: PathBuf,
    /// How many files to keep; older ones are pruned.
    pub keep: usize,
    /// Run after each backup with the file's path appended: exact argv, cleared
    /// environment.
    pub command: Option<Vec<String>>,
    /// The command's time limit.
    pub command_timeout: Duration,
}

/// A backup problem.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A file or directory could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A recipient or identity is unusable.
    #[error("{0}")]
    Key(String),
    /// The file is not a complete backup this identity can open.
    #[error("{0}")]
    Refused(String),
    /// The backup opened, but what it holds does not check out.
    #[error("the backup does not check out: {}", .0.join("; "))]
    Inconsistent(Vec<String>),
    /// A restore target that already holds something.
    #[error("{0}")]
    NotEmpty(String),
}

impl BackupError {
    /// The exit code the CLI uses: 1 a refused or inconsistent backup, 2 a restore target
    /// that is not empty, 3 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused(_) | Self::Inconsistent(_) => 1,
            Self::NotEmpty(_) => 2,
            _ => 3,
        }
    }

    fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.to_owned(),
            why: e.to_string(),
        }
    }
}
