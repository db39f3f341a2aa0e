//! File changes beneath a granted directory, made through directory handles so that a check
//! and its use are about the same directory.
//!
//! Each operation opens the granted directory (its own path is the operator's and may pass
//! through links), then each directory below it from its parent's handle with
//! `O_DIRECTORY | O_NOFOLLOW`, so no symbolic link is ever followed below the grant. The file
//! itself is then created (`O_CREAT | O_EXCL | O_NOFOLLOW`), synced, renamed, hard-linked
//! and removed relative to the handle of the directory that holds it (`openat`, `renameat`,
//! `linkat`, `unlinkat`), and that directory is synced through the same handle. Someone who
//! swaps a directory inside the grant for a link to elsewhere while a write or a rollback runs
//! can only make it fail: the handle already refers to the real directory, and an open through
//! the link is refused.
//!
//! A walk from the root handle rather than `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`:
//! it gives the same guarantee on every kernel (and under seccomp filters that refuse
//! `openat2`), with one code path to test.
//!
//! Owns: the `*at` system calls (through rustix). Knows nothing of grants, hooks or runs: the
//! host decides what may be written and where the granted directory is.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a change beneath a directory was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A directory on the way is a symbolic link (or was swapped for one).
    #[error("{} is a symbolic link", .0.display())]
    LinkOnTheWay(PathBuf),
    /// The file itself is a symbolic link.
    #[error("{} is a symbolic link", .0.display())]
    LinkAtTheEnd(PathBuf),
    /// Something on the way is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The file exists and is not a regular file.
    #[error("{} exists and is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// The relative path is empty or has components other than plain names.
    #[error("{} is not a path of plain names", .0.display())]
    BadPath(PathBuf),
    /// A system call failed; the text says what was being done.
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

impl Error {
    /// Whether a symbolic link stood in the way.
    pub(crate) fn is_link(&self) -> bool {
        matches!(self, Self::LinkOnTheWay(_) | Self::LinkAtTheEnd(_))
    }
}

/// What [`replace`] did.
#[derive(Debug)]
pub(crate) struct Replaced {
    /// When asked to keep the previous file: `Some` once that is settled, holding where it
    /// was kept (`None` inside when there was no previous file). `None` when not asked, or
    /// when the operation stopped before.
    pub(crate) previous: Option<Option<PathBuf>>,
    /// Whether the new content is in place.
    pub(crate) result: Result<(), Error>,
}

/// What [`restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restored {
    /// The kept previous file was renamed back.
    Renamed,
    /// The file (new in the run) was removed.
    Removed,
    /// The file (new in the run) was already gone.
    Absent,
}

/// Replaces `rel` beneath `root` with `data`, atomically: a new file is created beside it
/// with exactly `mode` (and the old file's owner and group when this process may set them),
/// written, synced and renamed over it, and the directory is synced. With `keep`, the old
/// file is first hard-linked as `<name><keep>`. A link in place of the file, or of any
/// directory below `root`, is refused; symbolic links are never followed or replaced.
pub(crate) fn replace(
    root: &Path,
    rel: &Path,
    data: &[u8],
    mode: u32,
    keep: Option<&str>,
) -> Replaced {
    let mut out = Replaced {
        previous: None,
        result: Ok(()),
    };
    let (dir, name) = match parent(root, rel) {
        Ok(x) => x,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };
    let existing = match dir.entry(name) {
        Ok(Some(e)) if e.kind == FileType::Symlink => {
            out.result = Err(Error::LinkAtTheEnd(dir.path.join(name)));
            return out;
        }
        Ok(Some(e)) if e.kind != FileType::RegularFile => {
            out.result = Err(Error::NotAFile(dir.path.join(name)));
            return out;
        }
        Ok(e) => e,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };
    if let Some(suffix) = keep {
        match existing {
            None => out.previous = Some(None),
            Some(_) => match dir.keep(name, suffix) {
                Ok(kept) => out.previous = Some(Some(dir.path.join(kept))),
                Err(e) => {
                    out.result = Err(e);
                    return out;
                }
            },
        }
    }
    out.result = dir.write_new(name, data, mode, existing);
    out
}

/// Undoes a [`replace`] of `rel` beneath `root`: renames the kept previous file `previous`
/// (a name beside it) back over it, or, when there was none, removes the file. Through
/// directory handles, like [`replace`]: a directory replaced by a link since is refused.
pub(crate) fn restore(
    root: &Path,
    rel: &Path,
    previous: Option<&OsStr>,
) -> Result<Restored, Error> {
    let (dir, name) = parent(root, rel)?;
    match previous {
        Some(prev) => {
            if let Some(e) = dir.entry(prev)?
                && e.kind == FileType::Symlink
            {
                return Err(Error::LinkAtTheEnd(dir.path.join(prev)));
            }
            rustix::fs::renameat(&dir.fd, prev, &dir.fd, name).map_err(|e| {
                Error::Io(
                    format!("cannot rename {} back", dir.path.join(prev).display()),
                    e.into(),
                )
            })?;
            dir.sync()?;
            Ok(Restored::Renamed)
        }
        None => match rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty()) {
            Ok(()) => {
                dir.sync()?;
                Ok(Restored::Removed)
            }
            Err(Errno::NOENT) => Ok(Restored::Absent),
            Err(e) => Err(Error::Io(
                format!("cannot remove {}", dir.path.join(name).display()),
                e.into(),
            )),
        },
    }
}

/// An open directory beneath the root, with the path it was reached by (for messages).
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What [`Dir::entry`] saw of a name, without following it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: FileType,
    uid: u32,
    gid: u32,
}

/// How the directory holding the file is opened: for reading, so it can be synced.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);
/// How the directories above it are opened: only to walk on from, which needs no more than
/// search permission (as a lookup by path did).
const WALK_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

fn dir_flags(holds_the_file: bool) -> OFlags {
    if holds_the_file {
        DIR_FLAGS
    } else {
        WALK_FLAGS
    }
}

/// Opens `root`, then walks `rel`'s directories from it without following links; returns the
/// directory holding `rel`'s last component, and that component.
fn parent<'a>(root: &Path, rel: &'a Path) -> Result<(Dir, &'a OsStr), Error> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::CurDir => {}
            _ => return Err(Error::BadPath(rel.to_path_buf())),
        }
    }
    let Some((name, dirs)) = names.split_last() else {
        return Err(Error::BadPath(rel.to_path_buf()));
    };
    let fd = rustix::fs::openat(CWD, root, dir_flags(dirs.is_empty()), Mode::empty())
        .map_err(|e| Error::Io(root.display().to_string(), e.into()))?;
    let mut dir = Dir {
        fd,
        path: root.to_path_buf(),
    };
    for (i, n) in dirs.iter().enumerate() {
        dir = dir.open_dir(n, dir_flags(i + 1 == dirs.len()))?;
    }
    Ok((dir, name))
}

impl Dir {
    /// The directory `name` in this one; a link there is refused, not followed.
    fn open_dir(&self, name: &OsStr, flags: OFlags) -> Result<Self, Error> {
        let path = self.path.join(name);
        match rustix::fs::openat(&self.fd, name, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => Ok(Self { fd, path }),
            Err(Errno::LOOP) => Err(Error::LinkOnTheWay(path)),
            // Linux answers a link opened with O_DIRECTORY | O_NOFOLLOW with ENOTDIR. A name
            // that is a directory by now was a link a moment ago (swapped back since).
            Err(Errno::NOTDIR) => match self.entry(name) {
                Ok(Some(e)) if matches!(e.kind, FileType::Symlink | FileType::Directory) => {
                    Err(Error::LinkOnTheWay(path))
                }
                _ => Err(Error::NotADirectory(path)),
            },
            Err(e) => Err(Error::Io(path.display().to_string(), e.into())),
        }
    }

    /// What `name` is here (a link itself, not what it points to); `None` when absent.
    fn entry(&self, name: &OsStr) -> Result<Option<Entry>, Error> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Entry {
                kind: FileType::from_raw_mode(st.st_mode),
                uid: st.st_uid,
                gid: st.st_gid,
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::Io(
                self.path.join(name).display().to_string(),
                e.into(),
            )),
        }
    }

    /// Hard-links `name` as `<name><suffix>` (through a temporary name, so an older kept file
    /// is replaced atomically); returns the kept name.
    fn keep(&self, name: &OsStr, suffix: &str) -> Result<OsString, Error> {
        let kept = with_suffix(name, suffix);
        let tmp = with_suffix(name, &format!(".tlsward-link-{}", fastrand::u64(..)));
        let linked = rustix::fs::linkat(&self.fd, name, &self.fd, &tmp, AtFlags::empty())
            .and_then(|()| rustix::fs::renameat(&self.fd, &tmp, &self.fd, &kept));
        linked.map(|()| kept).map_err(|e| {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            Error::Io(
                format!(
                    "cannot keep the previous {}",
                    self.path.join(name).display()
                ),
                e.into(),
            )
        })
    }

    /// Writes a new file beside `name` and renames it over `name`, then syncs this directory.
    fn write_new(
        &self,
        name: &OsStr,
        data: &[u8],
        mode: u32,
        existing: Option<Entry>,
    ) -> Result<(), Error> {
        let tmp = with_suffix(name, &format!(".tlsward-tmp-{}", fastrand::u64(..)));
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, &tmp, flags, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| self.write_error(name, e.into()))?;
        let written = (|| -> io::Result<()> {
            let mut f = File::from(fd);
            // Exactly `mode`, whatever the umask.
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            if let Some(e) = existing {
                // Keep the owner and group of the file being replaced (a key readable by the
                // service's group stays so); only root can do this, so best effort.
                let _ = std::os::unix::fs::fchown(&f, Some(e.uid), Some(e.gid));
            }
            f.write_all(data)?;
            f.sync_all()?;
            rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(self.write_error(name, e));
        }
        self.sync()
    }

    fn write_error(&self, name: &OsStr, e: io::Error) -> Error {
        Error::Io(
            format!("cannot write {}", self.path.join(name).display()),
            e,
        )
    }

    fn sync(&self) -> Result<(), Error> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| Error::Io(format!("cannot sync {}", self.path.display()), e.into()))
    }
}

fn with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let mut s = name.to_os_string();
    s.push(suffix);
    s
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rustix::fs::RenameFlags;

    use super::*;

    const PREV: &str = ".prev";

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_atomically_with_the_mode_and_keeps_the_previous_file() {
        let f = fixture();
        let rel = Path::new("sub/cert.pem");
        let r = replace(&f.root, rel, b"one\n", 0o640, Some(PREV));
        r.result.unwrap();
        assert_eq!(r.previous, Some(None), "no previous file");
        let file = f.root.join(rel);
        assert_eq!(std::fs::read(&file).unwrap(), b"one\n");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o640);

        let r = replace(&f.root, rel, b"two\n", 0o600, Some(PREV));
        r.result.unwrap();
        let kept = f.root.join("sub/cert.pem.prev");
        assert_eq!(r.previous, Some(Some(kept.clone())));
        assert_eq!(std::fs::read(&file).unwrap(), b"two\n");
        assert_eq!(std::fs::read(&kept).unwrap(), b"one\n");
        assert_eq!(std::fs::metadata(&kept).unwrap().mode() & 0o7777, 0o640);
        // Not asked to keep: the kept file stays the first one.
        let r = replace(&f.root, rel, b"three\n", 0o600, None);
        r.result.unwrap();
        assert_eq!(r.previous, None);
        assert_eq!(std::fs::read(&kept).unwrap(), b"one\n");
        assert_eq!(names(&f.root.join("sub")), ["cert.pem", "cert.pem.prev"]);

        assert_eq!(
            restore(&f.root, rel, Some(OsStr::new("cert.pem.prev"))).unwrap(),
            Restored::Renamed
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"one\n");
        let new = Path::new("sub/new.pem");
        replace(&f.root, new, b"new\n", 0o600, Some(PREV))
            .result
            .unwrap();
        assert_eq!(restore(&f.root, new, None).unwrap(), Restored::Removed);
        assert_eq!(restore(&f.root, new, None).unwrap(), Restored::Absent);
        assert_eq!(names(&f.root.join("sub")), ["cert.pem"]);
    }

    #[test]
    fn links_are_refused_on_the_way_and_at_the_end() {
        let f = fixture();
        symlink(&f.outside, f.root.join("link")).unwrap();
        symlink(f.outside.join("x"), f.root.join("sub/file-link")).unwrap();
        std::fs::write(f.root.join("plain"), "").unwrap();
        std::fs::create_dir(f.outside.join("d")).unwrap();
        for through in ["link/x", "link/d/x"] {
            let r = replace(&f.root, Path::new(through), b"x", 0o600, Some(PREV));
            assert!(
                matches!(r.result, Err(Error::LinkOnTheWay(ref p)) if p.ends_with("link")),
                "{through}: {r:?}"
            );
            assert_eq!(r.previous, None);
        }
        let r = replace(&f.root, Path::new("sub/file-link"), b"x", 0o600, Some(PREV));
        assert!(matches!(r.result, Err(Error::LinkAtTheEnd(_))), "{r:?}");
        let r = replace(&f.root, Path::new("plain/x"), b"x", 0o600, None);
        assert!(matches!(r.result, Err(Error::NotADirectory(_))), "{r:?}");
        let r = replace(&f.root, Path::new("sub"), b"x", 0o600, None);
        assert!(matches!(r.result, Err(Error::NotAFile(_))), "{r:?}");
        for bad in ["", "../x", "/etc/x"] {
            let r = replace(&f.root, Path::new(bad), b"x", 0o600, None);
            assert!(matches!(r.result, Err(Error::BadPath(_))), "{bad}: {r:?}");
        }
        assert!(matches!(
            restore(&f.root, Path::new("link/x"), None),
            Err(Error::LinkOnTheWay(_))
        ));
        assert_eq!(names(&f.outside), ["d"]);
        assert_eq!(names(&f.outside.join("d")), Vec::<String>::new());
        assert!(f.root.join("sub/file-link").is_symlink(), "never replaced");
    }

    /// A thread exchanges `root/sub` with a link to `outside` without pause while thousands
    /// of replacements (with previous files kept) go into `root/sub` and `root/sub/d` (both
    /// also exist outside): each lands in the real directory or is refused, and nothing, not
    /// even a temporary file, lands outside.
    #[test]
    fn a_directory_swapped_for_a_link_during_writes_does_not_lead_out() {
        let f = fixture();
        let (sub, swap) = (f.root.join("sub"), f.root.join("swap"));
        std::fs::create_dir(sub.join("d")).unwrap();
        std::fs::create_dir(f.outside.join("d")).unwrap();
        symlink(&f.outside, &swap).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = std::thread::spawn({
            let (stop, sub, swap) = (stop.clone(), sub.clone(), swap.clone());
            move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) && swaps < 100_000_000 {
                    rustix::fs::renameat_with(CWD, &sub, CWD, &swap, RenameFlags::EXCHANGE)
                        .unwrap();
                    swaps += 1;
                    std::thread::yield_now();
                }
                swaps
            }
        });
        let (mut ok, mut refused) = (0, 0);
        // A refused write takes microseconds, a written one milliseconds (two fsyncs): most
        // attempts are refusals, so count until both kinds are well represented.
        for i in 0..1_000_000u32 {
            let dir = if i % 2 == 0 { "sub" } else { "sub/d" };
            let rel = PathBuf::from(format!("{dir}/f{}", i % 50));
            let r = replace(&f.root, &rel, b"data\n", 0o600, Some(PREV));
            match r.result {
                Ok(()) => ok += 1,
                Err(e) if e.is_link() => refused += 1,
                Err(e) => panic!("{e}"),
            }
            if i >= 2_000 && ok >= 50 && refused >= 50 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(ok >= 50 && refused >= 50, "{ok} written, {refused} refused");
        assert_eq!(names(&f.outside), ["d"], "{swaps} swaps");
        assert_eq!(names(&f.outside.join("d")), Vec::<String>::new());
        let real = if swaps % 2 == 0 { sub } else { swap };
        for dir in [real.clone(), real.join("d")] {
            for name in names(&dir) {
                assert!(
                    name == "d" || (name.starts_with('f') && !name.contains(".tlsward-")),
                    "{name} left behind"
                );
            }
        }
    }

    /// Rollback after the directory was replaced by a link: refused, and the files of the
    /// same names outside stay as they were.
    #[test]
    fn restore_through_a_directory_replaced_by_a_link_is_refused() {
        let f = fixture();
        std::fs::write(f.root.join("sub/a"), "old a\n").unwrap();
        let a = replace(&f.root, Path::new("sub/a"), b"new a\n", 0o600, Some(PREV));
        a.result.unwrap();
        replace(&f.root, Path::new("sub/b"), b"new b\n", 0o600, Some(PREV))
            .result
            .unwrap();
        std::fs::rename(f.root.join("sub"), f.root.join("moved")).unwrap();
        symlink(&f.outside, f.root.join("sub")).unwrap();
        for name in ["a", "a.prev", "b"] {
            std::fs::write(f.outside.join(name), name).unwrap();
        }
        let e = restore(&f.root, Path::new("sub/a"), Some(OsStr::new("a.prev"))).unwrap_err();
        assert!(e.is_link(), "{e}");
        let e = restore(&f.root, Path::new("sub/b"), None).unwrap_err();
        assert!(e.is_link(), "{e}");
        for name in ["a", "a.prev", "b"] {
            assert_eq!(std::fs::read_to_string(f.outside.join(name)).unwrap(), name);
        }
        assert_eq!(names(&f.root.join("moved")), ["a", "a.prev", "b"]);
    }
}
