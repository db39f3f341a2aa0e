//! `tlsward cert export`: a stored version written to a directory, for the operator who needs
//! a file now, converted by the same code hooks use ([`crate::hooks::convert`]).
//!
//! Files are never readable by others, not even for a moment: each is created with its final
//! mode (0600 when it holds the key) and `O_EXCL`, so an existing file or a symlink planted
//! at its name is never written through. Without `--force` the file is created at its final
//! name and an existing one is refused before anything is written; with `--force` it is
//! written under a temporary name beside it and renamed over the old one, so a reader sees
//! the old file or the new one, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use super::cert::time;
use super::{ExportArgs, ExportFormat};
use crate::clock::{Clock, SystemClock};
use crate::hooks::convert::{self, Format, Material};
use crate::issuer::CertificateSpec;
use crate::store::Store;

/// The mode of files that hold the private key.
const KEY_MODE: u32 = 0o600;
/// The mode of files that hold only certificates (the umask still applies).
const CERT_MODE: u32 = 0o644;

/// One file to write: its name in the directory, the format and its mode.
struct Output {
    file: &'static str,
    format: Format,
}

// === impl Output ===

impl Output {
    fn mode(&self) -> u32 {
        if self.format.holds_key() {
            KEY_MODE
        } else {
            CERT_MODE
        }
    }
}

/// The files an export format writes.
fn outputs(format: ExportFormat) -> Vec<Output> {
    let one = |file, format| vec![Output { file, format }];
    match format {
        ExportFormat::Pem => vec![
            Output {
                file: "cert.pem",
                format: Format::PemCert,
            },
            Output {
                file: "chain.pem",
                format: Format::PemChain,
            },
            Output {
                file: "fullchain.pem",
                format: Format::PemFullchain,
            },
            Output {
                file: "key.pem",
                format: Format::PemKey,
            },
        ],
        ExportFormat::Pkcs12 => one("cert.p12", Format::Pkcs12),
        ExportFormat::Pkcs12Legacy => one("cert.p12", Format::Pkcs12Legacy),
        ExportFormat::Jks => one("cert.jks", Format::Jks),
    }
}

pub(super) fn run(
    store: &Store,
    spec: &CertificateSpec,
    args: &ExportArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let files = outputs(args.format);
    let encrypted = files.iter().any(|f| f.format.needs_password());
    let password = password(args, encrypted)?;
    let version = match args.version_id {
        Some(id) => store
            .version_by_id(id)?
            .filter(|v| v.certificate == spec.name)
            .with_context(|| {
                format!(
                    "{} has no version {id} (see `tlsward cert show {}`)",
                    spec.name, spec.name
                )
            })?,
        None => store.latest(&spec.name)?.with_context(|| {
            format!(
                "{} has no issued version yet (`tlsward cert issue {}`)",
                spec.name, spec.name
            )
        })?,
    };
    let chain = version.chain_der()?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        bail!("version {}: the stored chain is empty", version.id);
    };
    let intermediates: Vec<Vec<u8>> = intermediates.iter().map(|c| c.to_vec()).collect();
    let key = store
        .version_key(version.id)
        .with_context(|| format!("cannot unseal the key of version {}", version.id))?;
    let material = Material {
        leaf_der: leaf,
        chain_der: &intermediates,
        key_pkcs8_der: Some(key.expose()),
        alias: &spec.name,
    };
    let now_ms = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));

    // Everything is converted before anything is written: a refusal leaves the directory as
    // it was.
    let mut converted = Vec::with_capacity(files.len());
    for f in &files {
        let pass = password.as_deref().filter(|_| f.format.needs_password());
        let bytes = convert::convert(f.format, &material, pass.map(String::as_str), now_ms)
            .with_context(|| format!("cannot convert version {} to {}", version.id, f.format))?;
        converted.push((f, bytes));
    }
    crate::files::create_private_dir(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if !args.force {
        let existing: Vec<String> = files
            .iter()
            .map(|f| args.out.join(f.file))
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist{}; --force replaces {}",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" },
                if existing.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let mut written = Vec::with_capacity(converted.len());
    for (f, bytes) in &converted {
        let path = args.out.join(f.file);
        place(&path, bytes, f.mode(), args.force)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(format!("{} ({:04o})", f.file, f.mode()));
    }
    writeln!(
        out,
        "exported {} version {} (serial {}, sha256 {}, valid until {}) to {}: {}",
        spec.name,
        version.id,
        version.serial,
        version.sha256,
        time(version.not_after),
        args.out.display(),
        written.join(", ")
    )?;
    Ok(())
}

/// The password for an encrypted format, from `--password-file` (its first line, without
/// the line end) or `--password-env`; refused for formats that are never encrypted, so that
/// nobody believes a PEM key file is protected by one.
fn password(args: &ExportArgs, needed: bool) -> anyhow::Result<Option<Zeroizing<String>>> {
    let given = match (&args.password_file, &args.password_env) {
        (Some(path), _) => {
            let text = Zeroizing::new(crate::files::read_to_string(
                path,
                crate::files::MAX_SECRET,
            )?);
            let first = text.split('\n').next().unwrap_or_default();
            let first = first.strip_suffix('\r').unwrap_or(first);
            if first.is_empty() {
                bail!("{}: the first line (the password) is empty", path.display());
            }
            Some(Zeroizing::new(first.to_owned()))
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(Zeroizing::new(v)),
            _ => bail!("--password-env: the environment variable {var} is not set or empty"),
        },
        (None, None) => None,
    };
    match (needed, given) {
        (true, None) => bail!(
            "this format is encrypted: give its password with --password-file FILE or \
             --password-env VAR (never on the command line, where other users can read it)"
        ),
        (false, Some(_)) => bail!(
            "PEM files are never encrypted, so they take no password: key.pem is protected \
             by its mode (0600) alone"
        ),
        (_, given) => Ok(given),
    }
}

/// Writes `bytes` to `path` with `mode`, never through an existing file or symlink: created
/// with `O_EXCL` at `path`, or with `replace` under a temporary name beside it, then renamed
/// over `path`.
fn place(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> io::Result<()> {
    if !replace {
        let file = create(path, mode)?;
        return fill(file, bytes).inspect_err(|_| {
            let _ = fs::remove_file(path);
        });
    }
    let tmp = temporary(path);
    let result = create(&tmp, mode)
        .and_then(|file| fill(file, bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates a new file (`O_EXCL`: never an existing file, never through a symlink) with `mode`
/// from the start; the umask can only narrow it.
fn create(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

fn fill(mut file: File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// `.NAME.tlsward-PID-RANDOM` beside `path`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.tlsward-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn place_never_writes_through_an_existing_file_or_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("key.pem");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = place(&link, b"secret", KEY_MODE, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        // Replacing swaps the link itself for a new file; the file it pointed to is untouched.
        place(&link, b"secret", KEY_MODE, true).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&link).unwrap(), b"secret");
        let mode = fs::metadata(&link).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, KEY_MODE);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
