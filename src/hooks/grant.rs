//! What a hook may do: the grant an operator writes for it, and the pure checks every host
//! call goes through. No I/O here; the host adds the checks that need the file system
//! (symlinks) on top.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The smallest memory cap: the Python runtime alone needs about 12 MiB at start.
pub const MIN_MEMORY_MB: u64 = 16;
/// The largest memory cap.
pub const MAX_MEMORY_MB: u64 = 4096;
/// The default memory cap.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// The default deadline of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest deadline a grant may give.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// What one hook may do, from `[hook.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Absolute directories; files may be written only beneath them.
    pub write_paths: Vec<PathBuf>,
    /// Exact argv lists the hook may run.
    pub commands: Vec<Vec<String>>,
    /// `host:port` pairs the hook may send HTTPS requests to (lowercase host).
    pub http_hosts: Vec<String>,
    /// Extra CA certificates (PEM) trusted for those requests, besides the system roots.
    pub http_ca_file: Option<PathBuf>,
    /// Whether the key may enter the guest (the bundle's `key-pem`, `convert` to key formats).
    pub key_access: bool,
    /// The cap on the guest's memory, all linear memories together.
    pub memory_bytes: u64,
    /// The deadline of one run, host calls included.
    pub timeout: Duration,
}

impl Default for Grant {
    fn default() -> Self {
        Self {
            write_paths: Vec::new(),
            commands: Vec::new(),
            http_hosts: Vec::new(),
            http_ca_file: None,
            key_access: false,
            memory_bytes: DEFAULT_MEMORY_MB << 20,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `memory_mb` in bytes, when it lies in `MIN_MEMORY_MB..=MAX_MEMORY_MB` (checked before
/// the shift, so no value wraps into range).
pub fn memory_bytes(mb: i64) -> Result<u64, String> {
    match u64::try_from(mb) {
        Ok(mb) if (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb) => Ok(mb << 20),
        _ => Err(format!(
            "{mb} MiB is outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB} MiB"
        )),
    }
}

/// Why a call was refused; maps onto the WIT `hook-error` cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The grant does not allow it; names the grant key.
    AccessDenied(String),
    /// The argument is malformed.
    InvalidArgument(String),
}

impl Refusal {
    /// The message without its tag.
    pub fn message(&self) -> &str {
        match self {
            Self::AccessDenied(m) | Self::InvalidArgument(m) => m,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AccessDenied(m) => write!(f, "access-denied: {m}"),
            Self::InvalidArgument(m) => write!(f, "invalid-argument: {m}"),
        }
    }
}

/// `path` made absolute-and-clean without touching the disk: `.` dropped; `..`, relative
/// paths and NUL bytes refused.
pub fn normalize(path: &str) -> Result<PathBuf, Refusal> {
    if path.contains('\0') {
        return Err(Refusal::InvalidArgument(
            "the path contains a NUL byte".into(),
        ));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Refusal::InvalidArgument(format!(
            "{path:?} is not an absolute path"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                return Err(Refusal::InvalidArgument(format!("{path:?} contains '..'")));
            }
            Component::Prefix(_) => {
                return Err(Refusal::InvalidArgument(format!(
                    "{path:?} is not a Unix path"
                )));
            }
        }
    }
    if out == Path::new("/") {
        return Err(Refusal::InvalidArgument("the path names no file".into()));
    }
    Ok(out)
}

/// Checks a file mode: permission bits only, no setuid/setgid/sticky, no write for group or
/// others, and no access at all for others when the file holds the private key.
pub fn check_mode(mode: u32, holds_key: bool) -> Result<(), Refusal> {
    if mode & !0o7777 != 0 {
        return Err(Refusal::InvalidArgument(format!(
            "mode {mode:o} has bits beyond the permission bits"
        )));
    }
    if mode & 0o7000 != 0 {
        return Err(Refusal::InvalidArgument(format!(
            "mode {mode:04o} sets setuid, setgid or sticky"
        )));
    }
    if mode & 0o022 != 0 {
        return Err(Refusal::InvalidArgument(format!(
            "mode {mode:04o} lets group or others write"
        )));
    }
    if holds_key && mode & 0o007 != 0 {
        return Err(Refusal::InvalidArgument(format!(
            "mode {mode:04o} lets others read a file holding the private key (use 0600 or 0640)"
        )));
    }
    if mode & 0o600 != 0o600 {
        return Err(Refusal::InvalidArgument(format!(
            "mode {mode:04o} does not let the owner read and write"
        )));
    }
    Ok(())
}

impl Grant {
    /// The clean path when it lies beneath a granted directory (compared by whole
    /// components, so `/etc/nginx/certsX` is not beneath `/etc/nginx/certs`).
    pub fn check_write_path(&self, path: &str) -> Result<PathBuf, Refusal> {
        let clean = normalize(path)?;
        match self.write_paths.iter().find(|root| clean.starts_with(root)) {
            Some(root) if clean != *root => Ok(clean),
            Some(_) => Err(Refusal::InvalidArgument(format!(
                "{path:?} is a granted directory, not a file in it"
            ))),
            None => Err(Refusal::AccessDenied(format!(
                "{} is not beneath write_paths {}",
                clean.display(),
                list(self.write_paths.iter().map(|p| p.display().to_string()))
            ))),
        }
    }

    /// The granted directory a clean path lies beneath (the deepest, when grants nest), and
    /// the path relative to it; `None` when it lies beneath none or is one of them.
    pub fn write_root<'a>(&self, clean: &'a Path) -> Option<(&Path, &'a Path)> {
        self.write_paths
            .iter()
            .filter_map(|root| {
                let rel = clean.strip_prefix(root).ok()?;
                (!rel.as_os_str().is_empty()).then_some((root.as_path(), rel))
            })
            .max_by_key(|(root, _)| root.components().count())
    }

    /// The argv when it is exactly one of the granted commands.
    pub fn check_command(&self, argv: &[String]) -> Result<(), Refusal> {
        if argv.is_empty() {
            return Err(Refusal::InvalidArgument("empty argv".into()));
        }
        if self.commands.iter().any(|c| c == argv) {
            Ok(())
        } else {
            Err(Refusal::AccessDenied(format!(
                "{argv:?} is not one of the granted commands (grant key: commands)"
            )))
        }
    }

    /// The `host:port` of an `https://` URL whose authority is granted.
    pub fn check_url(&self, url: &str) -> Result<http::Uri, Refusal> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Refusal::InvalidArgument(format!("{url:?} is not a URL: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(Refusal::AccessDenied(format!(
                "{url:?}: only https:// URLs are allowed (grant key: http_hosts)"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| Refusal::InvalidArgument(format!("{url:?} has no host")))?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(Refusal::InvalidArgument(format!(
                "{url:?} carries user information"
            )));
        }
        let hostport = format!(
            "{}:{}",
            host.to_ascii_lowercase(),
            uri.port_u16().unwrap_or(443)
        );
        if self.http_hosts.contains(&hostport) {
            Ok(uri)
        } else {
            Err(Refusal::AccessDenied(format!(
                "{hostport} is not in http_hosts {}",
                list(self.http_hosts.iter().cloned())
            )))
        }
    }

    /// Whether a format holding the private key may be returned to the guest.
    pub fn check_key_access(&self, format: &str) -> Result<(), Refusal> {
        if self.key_access {
            Ok(())
        } else {
            Err(Refusal::AccessDenied(format!(
                "{format} contains the private key and the grant does not set key_access = true \
                 (write-cert writes it without the key entering the hook)"
            )))
        }
    }

    /// Problems with the grant itself, each as `key: message`, for config validation.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for p in &self.write_paths {
            if p.is_absolute()
                && p.components()
                    .all(|c| matches!(c, Component::RootDir | Component::CurDir))
            {
                // Refused rather than allowed: it would let a hook replace any file this
                // process may write (the store's key, /etc/passwd as root), and naming the
                // few directories a hook needs is always possible.
                out.push((
                    "write_paths",
                    format!(
                        "{:?} grants the whole file system; name the directories the hook \
                         writes in (e.g. \"/etc/nginx/certs\")",
                        p.display().to_string()
                    ),
                ));
                continue;
            }
            match p.to_str().map(normalize) {
                Some(Ok(clean)) if clean == *p => {}
                Some(Ok(clean)) => out.push((
                    "write_paths",
                    format!(
                        "{} is not in clean form (write {})",
                        p.display(),
                        clean.display()
                    ),
                )),
                Some(Err(e)) => out.push(("write_paths", e.message().to_owned())),
                None => out.push(("write_paths", format!("{} is not UTF-8", p.display()))),
            }
        }
        for c in &self.commands {
            match c.first() {
                None => out.push(("commands", "an empty argv".into())),
                Some(p) if p.is_empty() => out.push(("commands", "an empty program name".into())),
                // No lookup and no working directory to be relative to: a relative name would
                // run whatever that name resolves to from `/` or the PATH at the time.
                Some(p) if !p.starts_with('/') => out.push((
                    "commands",
                    format!(
                        "{p:?} is not an absolute path (write the program's full path, e.g. \
                         \"/usr/sbin/nginx\")"
                    ),
                )),
                Some(_) => {}
            }
        }
        for h in &self.http_hosts {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
                    && *h == h.to_ascii_lowercase()
            });
            if !ok {
                out.push((
                    "http_hosts",
                    format!("{h:?} is not a lowercase host:port (e.g. \"lb1.example.net:443\")"),
                ));
            }
        }
        if let Err(e) = memory_bytes(i64::try_from(self.memory_bytes >> 20).unwrap_or(i64::MAX)) {
            out.push(("memory_mb", e));
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > MAX_TIMEOUT {
            out.push((
                "timeout",
                format!(
                    "{} is outside 1s..=1h",
                    humantime::format_duration(self.timeout)
                ),
            ));
        }
        out
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "(none granted)".into()
    } else {
        format!("[{}]", v.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            write_paths: vec!["/srv/certs".into()],
            commands: vec![vec!["nginx".into(), "-s".into(), "reload".into()]],
            http_hosts: vec!["lb.test:8443".into()],
            ..Grant::default()
        }
    }

    #[test]
    fn paths_beneath_the_grant_by_whole_components() {
        let g = grant();
        assert_eq!(
            g.check_write_path("/srv/certs/./a/b.pem").unwrap(),
            Path::new("/srv/certs/a/b.pem")
        );
        for (path, denied) in [
            ("/srv/certsX/b.pem", true),
            ("/srv/b.pem", true),
            ("/etc/passwd", true),
            ("/srv/certs/../b.pem", false),
            ("srv/certs/b.pem", false),
            ("/srv/certs", false),
            ("/srv/certs/a\0b", false),
        ] {
            let e = g.check_write_path(path).unwrap_err();
            assert_eq!(matches!(e, Refusal::AccessDenied(_)), denied, "{path}: {e}");
        }
        let e = g.check_write_path("/etc/x").unwrap_err().to_string();
        assert!(e.contains("write_paths [/srv/certs]"), "{e}");
    }

    #[test]
    fn modes() {
        assert!(check_mode(0o644, false).is_ok());
        assert!(check_mode(0o640, true).is_ok());
        assert!(check_mode(0o600, true).is_ok());
        for (mode, key) in [
            (0o644, true),
            (0o666, false),
            (0o4755, false),
            (0o1644, false),
            (0o10644, false),
            (0o400, false),
        ] {
            assert!(check_mode(mode, key).is_err(), "{mode:o} key={key}");
        }
    }

    #[test]
    fn commands_match_exactly() {
        let g = grant();
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(g.check_command(&argv("nginx -s reload")).is_ok());
        for bad in [
            "nginx -s stop",
            "nginx -s reload extra",
            "nginx",
            "/bin/sh -c id",
        ] {
            let e = g.check_command(&argv(bad)).unwrap_err();
            assert!(
                matches!(e, Refusal::AccessDenied(ref m) if m.contains("commands")),
                "{e}"
            );
        }
        assert!(matches!(
            g.check_command(&[]),
            Err(Refusal::InvalidArgument(_))
        ));
    }

    #[test]
    fn urls_https_to_granted_authorities_only() {
        let g = grant();
        assert!(g.check_url("https://LB.test:8443/api").is_ok());
        for bad in [
            "http://lb.test:8443/api",
            "https://lb.test/api",
            "https://lb.test:8444/",
            "https://other.test:8443/",
        ] {
            assert!(
                matches!(g.check_url(bad), Err(Refusal::AccessDenied(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            g.check_url("https://u:p@lb.test:8443/"),
            Err(Refusal::InvalidArgument(_))
        ));
    }

    #[test]
    fn grant_problems_name_their_key() {
        let g = Grant {
            write_paths: vec![
                "relative".into(),
                "/a/../b".into(),
                "/ok".into(),
                "/".into(),
            ],
            commands: vec![vec![], vec!["bin/true".into()], vec!["/bin/true".into()]],
            http_hosts: vec![
                "Host:1".into(),
                "host".into(),
                "h:99999".into(),
                "h:443".into(),
            ],
            memory_bytes: 4 << 20,
            timeout: Duration::from_millis(10),
            ..Grant::default()
        };
        let keys: Vec<&str> = g.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "write_paths",
                "write_paths",
                "write_paths",
                "commands",
                "commands",
                "http_hosts",
                "http_hosts",
                "http_hosts",
                "memory_mb",
                "timeout"
            ]
        );
        let messages: Vec<String> = g.problems().into_iter().map(|(_, m)| m).collect();
        assert!(
            messages[2].contains("grants the whole file system"),
            "{}",
            messages[2]
        );
        assert!(
            messages[4].contains("\"bin/true\" is not an absolute path"),
            "{}",
            messages[4]
        );
    }

    #[test]
    fn memory_is_checked_before_it_is_shifted() {
        assert_eq!(memory_bytes(128), Ok(128 << 20));
        assert_eq!(memory_bytes(MAX_MEMORY_MB as i64), Ok(MAX_MEMORY_MB << 20));
        // 2^44 + 128 MiB would wrap to 128 MiB once shifted into bytes.
        for mb in [(1 << 44) + 128, i64::MAX, -1, 0, 15, 4097] {
            let e = memory_bytes(mb).unwrap_err();
            assert_eq!(e, format!("{mb} MiB is outside 16..=4096 MiB"));
        }
    }

    #[test]
    fn the_write_root_is_the_deepest_grant_holding_the_path() {
        let g = Grant {
            write_paths: vec!["/srv".into(), "/srv/certs".into()],
            ..Grant::default()
        };
        let p = Path::new("/srv/certs/a/b.pem");
        assert_eq!(
            g.write_root(p),
            Some((Path::new("/srv/certs"), Path::new("a/b.pem")))
        );
        assert_eq!(
            g.write_root(Path::new("/srv/certs")),
            Some((Path::new("/srv"), Path::new("certs")))
        );
        assert_eq!(g.write_root(Path::new("/srv")), None);
        assert_eq!(g.write_root(Path::new("/srvx/a")), None);
    }
}
