//! Prometheus `file_sd` target files as `serve` watches them: the patterns a config names,
//! how often to look at them, and a [`Stamp`] of what they were (length, times, inode) when
//! the config was read. `serve` compares a fresh stamp with the last one every
//! [`FileSd::refresh`] and reloads the config when they differ, so a CMDB export that
//! rewrites the files drives the targets without a SIGHUP.
//!
//! The stamp is taken before the files are read (see `validate/file_sd.rs`, which parses
//! them): a change made while they are read is then seen at the next look, never missed.
//! Only metadata is read here, never the content.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `serve` looks at the file_sd files when `file_sd_refresh` is not set.
pub const DEFAULT_FILE_SD_REFRESH: Duration = Duration::from_secs(30);

/// The file_sd files of a config, and how `serve` watches them.
#[derive(Debug, Clone, Default)]
pub struct FileSd {
    /// Glob patterns, resolved against the config file's folder.
    pub patterns: Vec<PathBuf>,
    /// `file_sd_refresh`: how often the files are looked at (default
    /// [`DEFAULT_FILE_SD_REFRESH`]).
    pub refresh: Duration,
    /// What the files were when the config was read.
    pub stamp: Stamp,
}

impl FileSd {
    /// True when the config names no file_sd pattern: there is nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// What the files the patterns match are now. Blocks on the file system (a glob and a
    /// `stat` per file): call it off the async workers.
    pub fn stamp_now(&self) -> Stamp {
        let mut stamp = Stamp::default();
        for pattern in &self.patterns {
            // A pattern that does not parse was refused when the config was loaded.
            for path in matches(pattern).unwrap_or_default() {
                stamp.add(path);
            }
        }
        stamp
    }
}

/// The files a pattern matches, in the glob's (alphabetical) order; unreadable directory
/// entries are skipped.
pub(crate) fn matches(pattern: &Path) -> Result<Vec<PathBuf>, glob::PatternError> {
    Ok(glob::glob(&pattern.to_string_lossy())?.flatten().collect())
}

/// Length, modification and change times, device and inode of one file: a rewrite in place
/// changes the times (and usually the length), a rename into place changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    inode: (u64, u64),
}

/// The files matched, in order, each with its [`FileStamp`] (`None` when it could not be
/// read: gone, or not permitted). Two stamps differ when a file was added, removed, renamed
/// or rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, Option<FileStamp>)>);

impl Stamp {
    /// Adds `path` as it is now (following symlinks, so that swapping a link's target, as
    /// Kubernetes does with mounted ConfigMaps, is a change).
    pub(crate) fn add(&mut self, path: PathBuf) {
        let meta = std::fs::metadata(&path).ok().map(|m| FileStamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            inode: (m.dev(), m.ino()),
        });
        self.0.push((path, meta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rewrite, a new file and a removed file each change the stamp; looking again at
    /// files that did not change gives the same stamp.
    #[test]
    fn the_stamp_changes_with_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.json");
        std::fs::write(&a, "[]").unwrap();
        let sd = FileSd {
            patterns: vec![tmp.path().join("*.json")],
            refresh: DEFAULT_FILE_SD_REFRESH,
            stamp: Stamp::default(),
        };
        let first = sd.stamp_now();
        assert_eq!(first.0.len(), 1);
        assert_eq!(sd.stamp_now(), first);

        std::fs::write(&a, "[ ]").unwrap();
        let rewritten = sd.stamp_now();
        assert_ne!(rewritten, first);

        std::fs::write(tmp.path().join("b.json"), "[]").unwrap();
        let added = sd.stamp_now();
        assert_ne!(added, rewritten);
        assert_eq!(added.0.len(), 2);

        std::fs::remove_file(&a).unwrap();
        let removed = sd.stamp_now();
        assert_ne!(removed, added);
        assert_eq!(removed.0.len(), 1);
        // A file that does not match the patterns is not watched.
        std::fs::write(tmp.path().join("c.txt"), "x").unwrap();
        assert_eq!(sd.stamp_now(), removed);
    }
}
