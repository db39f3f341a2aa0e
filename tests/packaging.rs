//! What an installed tool is expected to have: a systemd unit that systemd accepts, shell
//! completions and a man page generated from the command line, `--version` with the commit
//! and build date, and a Debian package that installs, runs as its own user and purges.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::http::get;
use crate::util::{TestCa, pem_chain, real_now, unique_port};

const BIN: &str = env!("CARGO_BIN_EXE_tlsward");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

/// Runs a command to completion; panics when it cannot start.
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; its stdout.
#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn tlsward(args: &[&str]) -> String {
    ok(Command::new(BIN).args(args))
}

/// The unit as shipped, with ExecStart pointing at the binary under test, in `dir`.
fn unit_copy(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo("packaging/systemd/tlsward.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/tlsward serve --config /etc/tlsward/tlsward.toml\n"));
    let path = dir.join("tlsward.service");
    std::fs::write(&path, unit.replace("/usr/bin/tlsward", BIN)).unwrap();
    path
}

/// `systemd-analyze verify` with nothing to say: it exits 0 even for unknown keys and bad
/// values, which it only warns about, so any output at all is a failure.
#[track_caller]
fn verify_clean(args: &[&str], unit: &Path) {
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .args(args)
        .arg(unit));
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}: {}\n{}{}",
        unit.display(),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    // Man pages are checked on the installed package (deb_installs_runs_and_purges).
    verify_clean(&["--man=no"], &unit);

    // The check is not vacuous: a misspelled directive is reported.
    let broken = dir.path().join("broken.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &broken,
        text.replace("ProtectSystem=strict", "ProtectSystm=strict"),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&broken));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'ProtectSystm'"),
        "{out:?}"
    );
}

#[test]
fn unit_is_hardened() {
    let unit = std::fs::read_to_string(repo("packaging/systemd/tlsward.service")).unwrap();
    let directives: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for want in [
        "User=tlsward",
        "StateDirectory=tlsward",
        "ConfigurationDirectory=tlsward",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(directives.contains(&want), "{want} missing");
    }
    let nofile: u64 = directives
        .iter()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE")
        .parse()
        .unwrap();
    assert!(nofile >= 65_536, "{nofile}");
    // wasmtime's JIT makes its code pages executable after writing them.
    assert!(
        !directives
            .iter()
            .any(|l| l.starts_with("MemoryDenyWriteExecute")),
        "MemoryDenyWriteExecute breaks the hooks"
    );

    // systemd's own judgement of the unit, offline: its exposure score stays low.
    let dir = tempfile::tempdir().unwrap();
    let copy = unit_copy(dir.path());
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=25", "--no-pager"])
        .arg(&copy));
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for tlsward.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    assert!(
        score <= 2.5,
        "exposure {score} (at most 2.5 expected)\n{report}"
    );
}

#[test]
fn bash_completion_completes_subcommands() {
    let script = tlsward(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tlsward.bash");
    std::fs::write(&path, &script).unwrap();
    ok(Command::new("bash").arg("-n").arg(&path));
    // Completing as bash would: `tlsward se<TAB>`, `tlsward cert <TAB>`, `tlsward
    // completions <TAB>`.
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let cword = words.len() - 1;
        let prev = words[cword.saturating_sub(1)];
        let cur = words[cword];
        let snippet = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; _tlsward tlsward '{cur}' '{prev}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            quoted.join(" ")
        );
        ok(Command::new("bash").arg("-c").arg(snippet))
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(complete(&["tlsward", "se"]), ["serve"]);
    let cert = complete(&["tlsward", "cert", ""]);
    for sub in ["list", "show", "issue", "renew", "--config"] {
        assert!(cert.iter().any(|c| c == sub), "{sub} not in {cert:?}");
    }
    let shells = complete(&["tlsward", "completions", ""]);
    for sh in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|c| c == sh), "{sh} not in {shells:?}");
    }

    let zsh = tlsward(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef tlsward\n"), "{zsh}");
    let fish = tlsward(&["completions", "fish"]);
    for sub in ["probe", "check-config", "man"] {
        assert!(zsh.contains(&format!("'{sub}:")), "zsh lacks {sub}");
        assert!(fish.contains(&format!("-a \"{sub}\"")), "fish lacks {sub}");
    }
}

/// Renders a page with groff, which must not warn; the text as a terminal would show it.
#[track_caller]
fn render(page: &Path) -> String {
    let out = run(Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(page)
        .env("MANWIDTH", "80"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff {}: {}",
        page.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn man_page_renders_and_lists_subcommands() {
    let roff = tlsward(&["man"]);
    assert!(
        roff.lines()
            .any(|l| l.starts_with(".TH tlsward 1 ") && l.contains("\"tlsward 0.1.0\"")),
        "{roff}"
    );
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("tlsward.1");
    std::fs::write(&page, &roff).unwrap();
    let shown = render(&page);
    for want in [
        "NAME",
        "SYNOPSIS",
        "tlsward-probe(1)",
        "tlsward-serve(1)",
        "tlsward-check-config(1)",
        "tlsward-completions(1)",
        "EXIT STATUS",
        "/var/lib/tlsward",
        "TLSWARD_LOG",
    ] {
        assert!(shown.contains(want), "{want} not in\n{shown}");
    }

    // --dir: one page per command, each rendering cleanly; the top one is the same page.
    let pages = dir.path().join("pages");
    tlsward(&["man", "--dir", pages.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(pages.join("tlsward.1")).unwrap(),
        roff
    );
    for name in [
        "tlsward-probe.1",
        "tlsward-cert-issue.1",
        "tlsward-deploy-run-now.1",
    ] {
        let shown = render(&pages.join(name));
        assert!(shown.contains("OPTIONS"), "{name}:\n{shown}");
    }
    let probe = render(&pages.join("tlsward-probe.1"));
    assert!(probe.contains("--all-addresses"), "{probe}");
    let count = std::fs::read_dir(&pages).unwrap().count();
    assert!(count >= 20, "{count} pages");
}

/// What `--version` must say for this checkout: (revision, date), or `None` outside git.
fn expected_build() -> Option<(String, String)> {
    let git = |args: &[&str]| {
        let out = run(Command::new("git")
            .arg("-C")
            .arg(REPO)
            .args(args)
            .env("TZ", "UTC"));
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != Path::new(REPO).canonicalize().ok()? {
        return None;
    }
    let revision = git(&["rev-parse", "--short=7", "HEAD"])?;
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => {
            text(&run(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), "+%F"])).stdout)
                .trim()
                .to_owned()
        }
        Err(_) => git(&["log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%d"])?,
    };
    Some((revision, date))
}

#[test]
fn version_names_commit_and_build_date() {
    let line = tlsward(&["--version"]);
    let inner = line
        .strip_prefix("tlsward 0.1.0 (")
        .and_then(|s| s.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (revision, date) = inner.split_once(' ').expect("revision and date");
    assert!(
        revision == "unknown"
            || revision.len() >= 7 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(
        date == "unknown"
            || date.len() == 10
                && time::Date::parse(
                    date,
                    time::macros::format_description!("[year]-[month]-[day]")
                )
                .is_ok(),
        "{line}"
    );
    // This is a git checkout in CI: the real commit and its date, not placeholders.
    if let Some((want_rev, want_date)) = expected_build() {
        assert_eq!((revision, date), (want_rev.as_str(), want_date.as_str()));
    }
    assert_eq!(tlsward(&["-V"]), line);
}

/// Asserts that `serve` at `addr` exports `tlsward_build_info` with exactly the labels of
/// the binary that printed `version`.
async fn assert_build_info(addr: SocketAddr, version: &str) {
    let inner = version
        .trim()
        .strip_prefix("tlsward ")
        .expect("tlsward VERSION (REV DATE)");
    let (ver, rest) = inner.split_once(" (").unwrap();
    let (rev, date) = rest.trim_end_matches(')').split_once(' ').unwrap();
    let labels = [("version", ver), ("revision", rev), ("build_date", date)];
    let body = get(addr, "/metrics").await.body;
    crate::util::exposition::assert_metric(&body, "tlsward_build_info", &labels, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn build_info_has_revision_and_build_date() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tlsward.toml");
    std::fs::write(&config, "[server]\nstate_dir = \"state\"\n").unwrap();
    let addr = crate::util::daemon::free_addr();
    let _child = crate::util::daemon::serve_command(&config, addr)
        .spawn()
        .unwrap();
    crate::util::daemon::answering(addr, "/-/healthy").await;
    assert_build_info(addr, &tlsward(&["--version"])).await;
}

// ---------------------------------------------------------------------------------------
// The Debian package

/// The package `scripts/package` built: `$TLSWARD_DEB`, else its default place in the
/// target directory.
fn deb_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TLSWARD_DEB") {
        return p.into();
    }
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("debian")
        .join(format!("tlsward_0.1.0-1_{}.deb", arch.trim()))
}

/// Removes the package, the user and the state directory, however the test ends.
struct Installed;

impl Installed {
    fn clean() {
        let _ = run(Command::new("dpkg").args(["--purge", "tlsward"]));
        let _ = std::fs::remove_dir_all("/var/lib/tlsward");
        let _ = run(Command::new("userdel").arg("tlsward"));
        let _ = run(Command::new("groupdel").arg("tlsward"));
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        Self::clean();
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

/// A command run as the package's `tlsward` user, as the unit runs it.
fn as_tlsward(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=tlsward", "--regid=tlsward", "--init-groups", "--"])
        .args(args);
    cmd
}

/// Installs the package into this machine for real (CI is a throwaway root machine), as the
/// issue asks: `dpkg -i`, then `dpkg -r` and `--purge`. Any earlier `tlsward` package, user
/// and /var/lib/tlsward are removed first and after.
#[tokio::test(flavor = "multi_thread")]
async fn deb_installs_runs_and_purges() {
    let deb = deb_path();
    assert!(
        deb.is_file(),
        "{} is missing: run scripts/package (scripts/test does) or set TLSWARD_DEB",
        deb.display()
    );
    let deb = deb.to_str().unwrap();
    assert!(
        rustix::process::geteuid().is_root(),
        "dpkg -i needs root (CI runs as root on a throwaway machine)"
    );

    // What is inside, before installing anything.
    let contents = ok(Command::new("dpkg-deb").args(["--contents", deb]));
    let hooks: Vec<String> = std::fs::read_dir(repo("hooks/dist"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".wasm"))
                .collect()
        })
        .unwrap_or_default();
    let mut expected = vec![
        "./usr/bin/tlsward".to_owned(),
        "./usr/lib/systemd/system/tlsward.service".to_owned(),
        "./etc/tlsward/tlsward.toml".to_owned(),
        "./usr/share/man/man1/tlsward.1.gz".to_owned(),
        "./usr/share/man/man1/tlsward-serve.1.gz".to_owned(),
        "./usr/share/bash-completion/completions/tlsward".to_owned(),
        "./usr/share/zsh/vendor-completions/_tlsward".to_owned(),
        "./usr/share/fish/vendor_completions.d/tlsward.fish".to_owned(),
        "./usr/share/doc/tlsward/copyright".to_owned(),
        "./usr/share/tlsward/hooks/README.md".to_owned(),
        "./usr/share/tlsward/alerts/tlsward.rules.yml".to_owned(),
        "./usr/share/tlsward/alerts/agents.rules.yml".to_owned(),
        "./usr/share/tlsward/alerts/backup.rules.yml".to_owned(),
        "./usr/share/tlsward/alerts/deadline.rules.yml".to_owned(),
        "./usr/share/tlsward/dashboards/overview.json".to_owned(),
    ];
    expected.extend(
        hooks
            .iter()
            .map(|h| format!("./usr/share/tlsward/hooks/{h}")),
    );
    for path in &expected {
        assert!(
            contents.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} not in the package:\n{contents}"
        );
    }
    let conffiles = ok(Command::new("dpkg-deb").args(["--info", deb, "conffiles"]));
    assert_eq!(conffiles.trim(), "/etc/tlsward/tlsward.toml");
    let depends = ok(Command::new("dpkg-deb").args(["--field", deb, "Depends"]));
    assert!(depends.contains("adduser"), "{depends}");

    Installed::clean();
    let _installed = Installed;
    ok(Command::new("dpkg")
        .args(["-i", deb])
        .env("DEBIAN_FRONTEND", "noninteractive"));

    // The binary runs and is the one this test suite was built from (a stale package
    // would say another commit).
    let version = ok(Command::new("/usr/bin/tlsward").arg("--version"));
    assert_eq!(
        version,
        tlsward(&["--version"]),
        "rebuild it with scripts/package"
    );

    // The unit, unchanged, accepted by systemd with its binary and man pages in place, and
    // enabled for boot.
    assert_eq!(
        std::fs::read("/usr/lib/systemd/system/tlsward.service").unwrap(),
        std::fs::read(repo("packaging/systemd/tlsward.service")).unwrap()
    );
    verify_clean(&[], Path::new("/usr/lib/systemd/system/tlsward.service"));
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/tlsward.service");
    assert!(wants.is_symlink(), "not enabled");
    assert!(ok(Command::new("man").args(["-w", "tlsward"])).contains("tlsward.1.gz"));
    ok(Command::new("bash").args(["-n", "/usr/share/bash-completion/completions/tlsward"]));

    // The user and its state directory, as the unit expects them.
    let passwd = ok(Command::new("getent").args(["passwd", "tlsward"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid < 1000, "not a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/tlsward", "{passwd}");
    let state = std::fs::metadata("/var/lib/tlsward").unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o700));

    // The packaged config is valid for that user, and serve runs with it as that user.
    ok(&mut as_tlsward(&[
        "/usr/bin/tlsward",
        "check-config",
        "/etc/tlsward/tlsward.toml",
    ]));
    let addr: SocketAddr = format!("127.0.0.1:{}", unique_port()).parse().unwrap();
    let std_cmd = as_tlsward(&[
        "/usr/bin/tlsward",
        "serve",
        "--config",
        "/etc/tlsward/tlsward.toml",
        "--listen",
        &addr.to_string(),
    ]);
    let mut child = tokio::process::Command::from(std_cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::util::daemon::answering(addr, "/-/healthy").await;
    assert_build_info(addr, &version).await;
    let pid = child.id().unwrap().to_string();
    ok(Command::new("kill").args(["-TERM", &pid]));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");

    // A stock hook from the package runs in its sandbox under the packaged binary.
    if hooks.iter().any(|h| h == "pem-files.wasm") {
        run_packaged_hook(uid, gid);
    }

    // Removal keeps the conffile; purge removes it and the enablement, but never the state
    // directory (store.key and the store).
    ok(Command::new("dpkg").args(["-r", "tlsward"]));
    assert!(!Path::new("/usr/bin/tlsward").exists());
    assert!(!Path::new("/usr/lib/systemd/system/tlsward.service").exists());
    assert!(Path::new("/etc/tlsward/tlsward.toml").exists());
    ok(Command::new("dpkg").args(["--purge", "tlsward"]));
    assert!(!Path::new("/etc/tlsward/tlsward.toml").exists());
    assert!(!wants.exists() && !wants.is_symlink());
    assert!(Path::new("/var/lib/tlsward").is_dir());
}

/// `tlsward hook run` of /usr/share/tlsward/hooks/pem-files.wasm as the tlsward user.
fn run_packaged_hook(uid: u32, gid: u32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(&bundle).unwrap();
    let root = TestCa::root_at("Package Root", real_now());
    let leaf = root.leaf(&["pkg.test"]).build();
    std::fs::write(bundle.join("cert.pem"), pem_chain(&leaf.chain)).unwrap();
    let key = pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        leaf.key.secret_der().to_vec(),
    ));
    std::fs::write(bundle.join("key.pem"), key).unwrap();
    let config = dir.path().join("tlsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"state\"\n\n\
             [hook.files]\ncomponent = \"/usr/share/tlsward/hooks/pem-files.wasm\"\n\
             write_paths = [\"{out}\"]\ntimeout = \"5m\"\n\n\
             [hook.files.settings]\nfullchain_path = \"{out}/fullchain.pem\"\n",
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    chown_tree(dir.path(), uid, gid);
    let cfg = config.to_str().unwrap();
    let stdout = ok(&mut as_tlsward(&[
        "/usr/bin/tlsward",
        "hook",
        "run",
        "files",
        "--config",
        cfg,
        "--bundle",
        bundle.to_str().unwrap(),
    ]));
    assert!(stdout.contains("result: ok"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("fullchain.pem")).unwrap(),
        pem_chain(&leaf.chain).replace("\r\n", "\n")
    );
    let written = std::fs::metadata(out.join("fullchain.pem")).unwrap();
    assert_eq!(written.uid(), uid);
}
