//! Files that a config or an operator names: the config itself, targets files, profiles,
//! CA bundles, certificates, keys and secrets.
//!
//! Each is read only when it is a regular file, and only up to a size cap, so a config that
//! names `/dev/zero`, a FIFO or a runaway log gets a clear error instead of exhausting memory
//! or hanging `check-config` and reloads. Errors never carry the file's content.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The config file and profile files.
pub const MAX_CONFIG: u64 = 16 << 20;
/// A targets file (a million `host:port` lines fit).
pub const MAX_TARGETS: u64 = 256 << 20;
/// A PEM bundle: certificates, CA roots, a private key.
pub const MAX_PEM: u64 = 16 << 20;
/// A secret: a store key, a TSIG secret, a token.
pub const MAX_SECRET: u64 = 64 << 10;

/// Why a named file could not be read.
#[derive(Debug)]
pub struct FileError {
    path: PathBuf,
    kind: FileErrorKind,
}

#[derive(Debug)]
enum FileErrorKind {
    Io(io::Error),
    NotRegular(&'static str),
    TooLarge(u64),
    NotText,
    Invalid(String),
}

impl FileError {
    /// The file it is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The message without the path, for callers that print the path themselves.
    pub fn why(&self) -> String {
        match &self.kind {
            FileErrorKind::Io(e) => e.to_string(),
            FileErrorKind::NotRegular(what) => format!("is {what}, not a regular file"),
            FileErrorKind::TooLarge(max) => format!("is larger than {}", size(*max)),
            FileErrorKind::NotText => "is not UTF-8 text".to_owned(),
            FileErrorKind::Invalid(why) => why.clone(),
        }
    }

    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.kind, FileErrorKind::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why())
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            FileErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads a regular file of at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let err = |kind| FileError {
        path: path.to_owned(),
        kind,
    };
    // Non-blocking, so that opening a FIFO with no writer returns at once; the type check
    // below then refuses it. For a regular file the flag changes nothing.
    let file = File::options()
        .read(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| err(FileErrorKind::Io(e)))?;
    let meta = file.metadata().map_err(|e| err(FileErrorKind::Io(e)))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(err(FileErrorKind::NotRegular(what)));
    }
    if meta.len() > max {
        return Err(err(FileErrorKind::TooLarge(max)));
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the stat and the read: read one byte past the cap to see it.
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| err(FileErrorKind::Io(e)))?;
    if out.len() as u64 > max {
        return Err(err(FileErrorKind::TooLarge(max)));
    }
    Ok(out)
}

/// Reads a regular UTF-8 text file of at most `max` bytes.
pub fn read_to_string(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, max)?).map_err(|_| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::NotText,
    })
}

/// Creates `dir` and its missing parents 0700, whatever the umask (state directories hold
/// keys and compiled code); a directory that exists is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Every certificate of a PEM file; a file with none is an error.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let invalid = |why: String| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Invalid(why),
    };
    let bytes = read(path, MAX_PEM)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no PEM certificates found".into()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = zeroize::Zeroizing::new(read(path, MAX_PEM)?);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Invalid(format!("cannot read private key: {e}")),
    })
}

/// Trust anchors for an HTTPS client: every certificate of `ca_file` (a private CA: an ACME
/// server, an appliance's API), or the system's roots when there is none.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_pem_certs(path).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(roots)
}

/// At most `max` characters of peer- or file-supplied text, quoted and escaped (`"ro\u{1b}…"`),
/// for error messages that must say what was wrong without echoing a whole line.
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_directories_fifos_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(e.why(), "is a character device, not a regular file");
        let e = read(dir.path(), 1024).unwrap_err();
        assert_eq!(e.why(), "is a directory, not a regular file");

        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // No writer: a blocking open would hang here.
        let e = read(&fifo, 1024).unwrap_err();
        assert_eq!(e.why(), "is a FIFO, not a regular file");

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2049]).unwrap();
        let e = read(&big, 2048).unwrap_err();
        assert_eq!(e.why(), "is larger than 2 KiB");
        assert_eq!(read(&big, 4096).unwrap().len(), 2049);

        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_to_string(&bin, 10).unwrap_err().to_string(),
            format!("{}: is not UTF-8 text", bin.display())
        );
        assert!(
            read(&dir.path().join("nope"), 1)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("abc", 8), "\"abc\"");
        assert_eq!(excerpt("root:$y$j9T$secret", 5), "\"root:\"…");
        assert_eq!(excerpt("a\x1b[2Jb", 8), "\"a\\u{1b}[2Jb\"");
        assert_eq!(excerpt("ééé", 2), "\"éé\"…");
    }
}
