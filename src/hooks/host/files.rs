//! Certificates and files: converting the run's certificate, and writing files beneath the
//! grant through directory handles, keeping each file's previous version for rollback.

use super::{MAX_WRITE, PREVIOUS_SUFFIX, State, Written};
use crate::hooks::beneath;
use crate::hooks::bindings::tlsward::hook::types::{CertFormat, HookError};
use crate::hooks::convert::{self, Format};
use crate::hooks::grant::check_mode;

pub(super) fn format_of(f: CertFormat) -> Format {
    match f {
        CertFormat::PemCert => Format::PemCert,
        CertFormat::PemChain => Format::PemChain,
        CertFormat::PemFullchain => Format::PemFullchain,
        CertFormat::PemKey => Format::PemKey,
        CertFormat::PemCombined => Format::PemCombined,
        CertFormat::DerCert => Format::DerCert,
        CertFormat::DerKey => Format::DerKey,
        CertFormat::Pkcs12 => Format::Pkcs12,
        CertFormat::Pkcs12Legacy => Format::Pkcs12Legacy,
        CertFormat::Jks => Format::Jks,
    }
}

impl State {
    pub(super) fn convert_bytes(
        &self,
        format: Format,
        password: Option<&str>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, HookError> {
        self.remaining()?;
        let m = self.cert.material.view(&self.cert.alias);
        convert::convert(format, &m, password, self.cert.now_unix_ms)
            .map_err(|e| HookError::InvalidArgument(e.to_string()))
    }

    /// Writes `data` to `path` atomically, beneath the grant, keeping the previous file.
    /// The path is resolved from a handle on the granted directory, never through a
    /// symbolic link ([`beneath`]).
    pub(super) fn write(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        holds_key: bool,
    ) -> Result<(), HookError> {
        self.remaining()?;
        let clean = self.grant.check_write_path(path)?;
        check_mode(mode, holds_key)?;
        if data.len() > MAX_WRITE {
            return Err(HookError::InvalidArgument(format!(
                "{} bytes is over the {MAX_WRITE}-byte limit",
                data.len()
            )));
        }
        let (root, rel) = self.grant.write_root(&clean).ok_or_else(|| {
            HookError::InvalidArgument(format!("{} names no file", clean.display()))
        })?;
        let first_write = !self.rec().written.iter().any(|w| w.path == clean);
        let replaced = beneath::replace(
            root,
            rel,
            data,
            mode,
            first_write.then_some(PREVIOUS_SUFFIX),
        );
        if let Some(previous) = replaced.previous {
            self.rec().written.push(Written {
                path: clean.clone(),
                root: root.to_path_buf(),
                previous,
            });
        }
        replaced.result.map_err(|e| match e {
            beneath::Error::LinkOnTheWay(link) => HookError::AccessDenied(format!(
                "{} passes through a symbolic link ({}); hooks write through real \
                 directories beneath write_paths only",
                clean.display(),
                link.display()
            )),
            beneath::Error::LinkAtTheEnd(_) => HookError::AccessDenied(format!(
                "{} is a symbolic link; hooks replace regular files only",
                clean.display()
            )),
            beneath::Error::NotADirectory(_)
            | beneath::Error::NotAFile(_)
            | beneath::Error::BadPath(_) => HookError::InvalidArgument(e.to_string()),
            beneath::Error::Io(..) => HookError::Failed(e.to_string()),
        })
    }
}
