//! Build facts for `tlsward --version` and `tlsward_build_info`: the git commit and the build
//! date, as `TLSWARD_REVISION` and `TLSWARD_BUILD_DATE` for `env!`.
//!
//! No network and no new dependencies: `git` when this is a git checkout of tlsward itself
//! (not a crate unpacked inside some other repository), else "unknown". The date is
//! `SOURCE_DATE_EPOCH` when set (reproducible builds, Debian), else the commit's date, else
//! "unknown": never the wall clock, so two builds of one commit are the same bytes.
//!
//! Reruns only when HEAD moves (its file and the branch's ref) or `SOURCE_DATE_EPOCH`
//! changes, so an ordinary rebuild does not recompile the crate for nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));

    let repo = Repo::find(&manifest);
    if let Some(repo) = &repo {
        for path in repo.watch() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let revision = repo
        .as_ref()
        .and_then(|r| r.git(&["rev-parse", "--short=7", "HEAD"]))
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| {
            repo.as_ref()
                .and_then(|r| r.git(&["log", "-1", "--format=%ct", "HEAD"]))
                .and_then(|s| s.parse().ok())
        });
    let date = epoch.map_or_else(|| "unknown".into(), utc_date);
    println!("cargo:rustc-env=TLSWARD_REVISION={revision}");
    println!("cargo:rustc-env=TLSWARD_BUILD_DATE={date}");
}

/// A git checkout whose top level is this crate's directory.
struct Repo {
    top: PathBuf,
}

impl Repo {
    fn find(manifest: &Path) -> Option<Self> {
        let repo = Self {
            top: manifest.to_path_buf(),
        };
        let top = repo.git(&["rev-parse", "--show-toplevel"])?;
        let same = Path::new(&top).canonicalize().ok()? == manifest.canonicalize().ok()?;
        same.then_some(repo)
    }

    /// Runs git in the checkout; its trimmed stdout when it succeeds.
    fn git(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.top)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_owned())
    }

    /// The files that change when HEAD moves: HEAD itself (a checkout), the branch's loose
    /// ref (a commit) and packed-refs. Only existing ones: cargo reruns a script every time
    /// for a path that does not exist.
    fn watch(&self) -> Vec<PathBuf> {
        let path = |args: &[&str]| self.git(args).map(|p| self.top.join(p));
        let mut files = Vec::new();
        if let Some(head) = path(&["rev-parse", "--git-path", "HEAD"]) {
            files.push(head);
        }
        if let Some(name) = self.git(&["symbolic-ref", "-q", "HEAD"]) {
            files.extend(path(&["rev-parse", "--git-path", &name]));
        }
        files.extend(path(&["rev-parse", "--git-path", "packed-refs"]));
        files.retain(|f| f.is_file());
        files
    }
}

/// `YYYY-MM-DD` in UTC for seconds since the Unix epoch (the proleptic Gregorian calendar,
/// by Howard Hinnant's days-to-civil algorithm).
fn utc_date(epoch: i64) -> String {
    let z = epoch.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
