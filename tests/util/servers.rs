//! Real Debian server daemons for STARTTLS tests (nginx mail, PostgreSQL, slapd, vsftpd,
//! Prosody), each on free 127.0.0.1 ports, serving a given chain and key from PEM files.
//!
//! Every daemon runs in the foreground as a child process with its own tempdir (config, logs,
//! copies of the certificate and key), and is killed by its pid and reaped on drop.
//! CI installs: nginx libnginx-mod-mail postgresql-15 slapd ldap-utils vsftpd prosody.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::wait::within;

/// How long a daemon may take to accept TCP connections before its start is a failure.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting daemon is looked at.
const POLL: Duration = Duration::from_millis(20);

/// The newest PostgreSQL server binaries installed (/usr/lib/postgresql/15/bin on Debian 12).
fn pg_bin() -> PathBuf {
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| Path::new(&format!("/usr/lib/postgresql/{v}/bin/initdb")).exists())
        .max()
        .expect("no /usr/lib/postgresql/*/bin/initdb: install the Debian package postgresql-15");
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

/// `N` distinct free ports on 127.0.0.1, all bound at once and then released (another
/// process may take one before the daemon binds it: a small race the tests accept).
fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    [(); N].map(|()| SocketAddr::from(([127, 0, 0, 1], crate::util::unique_port())))
}

/// One free port on 127.0.0.1.
fn free_addr() -> SocketAddr {
    let [addr] = free_addrs::<1>();
    addr
}

/// A fresh tempdir for one daemon.
fn daemon_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tlsward-{name}-"))
        .tempdir()
        .expect("tempdir")
}

/// `path` as a double-quoted string for a config file (refusing paths that would need escaping).
fn quoted(path: &Path) -> String {
    let s = path.to_str().expect("UTF-8 path");
    assert!(
        !s.contains(['"', '\\', '\n', ';', '\'']),
        "path unusable in a daemon config: {s:?}"
    );
    format!("\"{s}\"")
}

/// Copies the chain and key into `dir` (the daemon then never depends on the caller's files),
/// the key with mode 0600; returns the copies' paths.
fn copy_pem(dir: &Path, cert: &Path, key: &Path) -> (PathBuf, PathBuf) {
    let (cert_copy, key_copy) = (dir.join("server.pem"), dir.join("server.key"));
    fs::copy(cert, &cert_copy).unwrap_or_else(|e| panic!("copy {}: {e}", cert.display()));
    fs::copy(key, &key_copy).unwrap_or_else(|e| panic!("copy {}: {e}", key.display()));
    fs::set_permissions(&key_copy, fs::Permissions::from_mode(0o600)).expect("chmod key");
    (cert_copy, key_copy)
}

/// Writes a config file into `dir`, returning its path.
fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The uid and gid of a system user, from /etc/passwd.
fn passwd_ids(user: &str, package: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .map(|f| (f[2].parse().expect("uid"), f[3].parse().expect("gid")))
        .unwrap_or_else(|| panic!("no user {user}: install the Debian package {package}"))
}

/// A daemon in the foreground, with its tempdir; stopped and reaped on drop (before the
/// tempdir is removed, since fields drop after `Drop::drop`). It runs in a process group of
/// its own, killed whole: nginx's workers outlive a master killed alone, holding its ports.
struct Daemon {
    name: &'static str,
    child: Child,
    /// Log files besides stdout/stderr, shown when the daemon fails to start.
    logs: Vec<PathBuf>,
    /// A signal sent first on drop (via `kill`), for daemons that must clean up after
    /// themselves (PostgreSQL leaks a SysV shared memory segment when SIGKILLed).
    stop_signal: Option<&'static str>,
    dir: TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The pid cannot have been reused while the child is unreaped (try_wait remembers
        // a status it has reaped, and kill then does nothing).
        if let (Some(signal), Ok(None)) = (self.stop_signal, self.child.try_wait()) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -{signal} {}", self.child.id()))
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Ok(Some(_)) | Err(_) => return,
                }
            }
        }
        // Still unreaped, so the group's id cannot have been reused.
        if let Ok(None) = self.child.try_wait()
            && let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Spawns `cmd` in `dir` with fds 0, 1 and 2 on files there.
    fn spawn(
        name: &'static str,
        package: &str,
        dir: TempDir,
        mut cmd: Command,
        logs: Vec<PathBuf>,
    ) -> Self {
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout.log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr.log");
        // An empty file open for writing too: vsftpd writes its fatal errors to fd 0.
        let stdin = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("fd0.log"))
            .expect("fd0.log");
        let child = cmd
            .current_dir(dir.path())
            .process_group(0)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install the Debian package {package}",
                    cmd.get_program().to_string_lossy()
                )
            });
        Self {
            name,
            child,
            logs,
            stop_signal: None,
            dir,
        }
    }

    /// Waits until every address accepts TCP connections; panics with the daemon's output
    /// if it exits first or takes longer than [`READY_TIMEOUT`].
    async fn wait_ready(&mut self, addrs: &[SocketAddr]) {
        for &addr in addrs {
            let child = &mut self.child;
            let ready = within(READY_TIMEOUT, POLL, || {
                let exited = child.try_wait().ok().flatten();
                async move {
                    match exited {
                        Some(status) => Some(Err(status)),
                        None => tokio::net::TcpStream::connect(addr)
                            .await
                            .ok()
                            .map(|_| Ok(())),
                    }
                }
            })
            .await;
            match ready {
                Some(Ok(())) => {}
                Some(Err(status)) => panic!(
                    "{} exited ({status}) before listening on {addr}\n{}",
                    self.name,
                    self.output()
                ),
                None => panic!(
                    "{} did not listen on {addr} within {READY_TIMEOUT:?}\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Waits until the log file `log` contains `needle`; panics like [`Self::wait_ready`].
    async fn wait_log(&mut self, log: &Path, needle: &str) -> String {
        let child = &mut self.child;
        let logged = within(READY_TIMEOUT, POLL, || {
            let text = fs::read_to_string(log).unwrap_or_default();
            let seen = if text.contains(needle) {
                Some(Ok(text))
            } else {
                child.try_wait().ok().flatten().map(Err)
            };
            std::future::ready(seen)
        })
        .await;
        match logged {
            Some(Ok(text)) => text,
            Some(Err(status)) => panic!(
                "{} exited ({status}) before logging {needle:?}\n{}",
                self.name,
                self.output()
            ),
            None => panic!(
                "{} did not log {needle:?} within {READY_TIMEOUT:?}\n{}",
                self.name,
                self.output()
            ),
        }
    }

    /// The daemon's stdout, stderr and log files, for a panic message.
    fn output(&self) -> String {
        let mut out = String::new();
        let std_logs = ["fd0.log", "stdout.log", "stderr.log"].map(|f| self.dir.path().join(f));
        for path in std_logs.iter().chain(&self.logs) {
            let text = match fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() => "(empty)".to_owned(),
                Ok(text) => text.trim_end().to_owned(),
                Err(e) => format!("({e})"),
            };
            let _ = writeln!(out, "--- {} ---\n{text}", path.display());
        }
        out
    }
}

/// nginx's mail proxy: SMTP, IMAP and POP3 with STARTTLS, and SMTP without it.
pub struct NginxMail {
    /// SMTP offering STARTTLS.
    pub smtp: SocketAddr,
    /// IMAP offering STARTTLS.
    pub imap: SocketAddr,
    /// POP3 offering STARTTLS (STLS).
    pub pop3: SocketAddr,
    /// SMTP whose EHLO reply does not list STARTTLS.
    pub smtp_no_starttls: SocketAddr,
    daemon: Daemon,
}

impl NginxMail {
    /// Starts nginx (packages nginx, libnginx-mod-mail) serving `cert` (chain PEM) and `key`.
    pub async fn start(cert: &Path, key: &Path) -> Self {
        let dir = daemon_dir("nginx");
        let (cert, key) = copy_pem(dir.path(), cert, key);
        let [smtp, imap, pop3, smtp_no_starttls] = free_addrs::<4>();
        let d = dir.path();
        // auth_http is never reached: the tests never authenticate. Without a `resolver`
        // nginx does no reverse DNS, so the SMTP greeting comes at once.
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_mail_module.so;
daemon off;
master_process off;
pid {pid};
error_log {error_log};
events {{ worker_connections 64; }}
mail {{
    auth_http 127.0.0.1:9/auth;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{ listen {smtp}; protocol smtp; starttls on; }}
    server {{ listen {imap}; protocol imap; starttls on; }}
    server {{ listen {pop3}; protocol pop3; starttls on; }}
    server {{ listen {smtp_no_starttls}; protocol smtp; starttls off; }}
}}
",
            pid = quoted(&d.join("nginx.pid")),
            error_log = quoted(&d.join("error.log")),
            cert = quoted(&cert),
            key = quoted(&key),
        );
        let conf = write_config(d, "nginx.conf", &conf);
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-p").arg(d).arg("-c").arg(&conf);
        let logs = vec![d.join("error.log")];
        let mut daemon = Daemon::spawn("nginx", "nginx libnginx-mod-mail", dir, cmd, logs);
        daemon
            .wait_ready(&[smtp, imap, pop3, smtp_no_starttls])
            .await;
        Self {
            smtp,
            imap,
            pop3,
            smtp_no_starttls,
            daemon,
        }
    }
}

/// A PostgreSQL server (15 on Debian 12; trust authentication, user `postgres`).
pub struct Postgres {
    /// Where it listens; it answers SSLRequest with `S` if started with `ssl`, else `N`.
    pub addr: SocketAddr,
    daemon: Daemon,
}

impl Postgres {
    /// Runs initdb and starts postgres (package postgresql-15) as the `postgres` user.
    pub async fn start(cert: &Path, key: &Path, ssl: bool) -> Self {
        const PACKAGE: &str = "postgresql-15";
        let bin = pg_bin();
        let (uid, gid) = passwd_ids("postgres", PACKAGE);
        let dir = daemon_dir("postgres");
        let d = dir.path();
        let (cert, key) = copy_pem(d, cert, key);
        for path in [d, &cert, &key] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
        let data = d.join("data");
        // Setting uid/gid (not `runuser`, which forks and would survive a kill of its pid).
        let initdb = tokio::process::Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .current_dir(d)
            .uid(uid)
            .gid(gid)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run initdb ({e}): install {PACKAGE}"));
        assert!(
            initdb.status.success(),
            "initdb failed ({})\n{}\n{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr),
        );
        let addr = free_addr();
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(addr.port().to_string());
        for setting in [
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", d.display()),
            format!("ssl={}", if ssl { "on" } else { "off" }),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.uid(uid).gid(gid);
        let mut daemon = Daemon::spawn("postgres", PACKAGE, dir, cmd, Vec::new());
        // SIGQUIT: immediate shutdown, which still removes its shared memory.
        daemon.stop_signal = Some("QUIT");
        daemon.wait_ready(&[addr]).await;
        Self { addr, daemon }
    }
}

/// OpenLDAP's slapd with no database: enough for the StartTLS extended operation.
pub struct Slapd {
    /// Its `ldap://` listener.
    pub addr: SocketAddr,
    daemon: Daemon,
}

impl Slapd {
    /// Starts slapd (package slapd); without `tls` it has no certificate and refuses StartTLS.
    pub async fn start(cert: &Path, key: &Path, tls: bool) -> Self {
        let dir = daemon_dir("slapd");
        let d = dir.path();
        let (cert, key) = copy_pem(d, cert, key);
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\npidfile {}\nargsfile {}\n",
            quoted(&d.join("slapd.pid")),
            quoted(&d.join("slapd.args")),
        );
        if tls {
            let _ = write!(
                conf,
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                quoted(&cert),
                quoted(&key)
            );
        }
        let conf = write_config(d, "slapd.conf", &conf);
        let addr = free_addr();
        let mut cmd = Command::new("/usr/sbin/slapd");
        // `-d` keeps it in the foreground; `stats` logs to stderr (errors, connections).
        cmd.args(["-d", "stats", "-f"])
            .arg(&conf)
            .arg("-h")
            .arg(format!("ldap://{addr}/"));
        let mut daemon = Daemon::spawn("slapd", "slapd", dir, cmd, Vec::new());
        daemon.wait_ready(&[addr]).await;
        Self { addr, daemon }
    }
}

/// vsftpd, with `AUTH TLS` if started with `tls` (refused with 530 otherwise).
pub struct Vsftpd {
    /// Its FTP control port.
    pub addr: SocketAddr,
    daemon: Daemon,
}

impl Vsftpd {
    /// Starts vsftpd (package vsftpd); nobody can log in (an empty allow list of users).
    pub async fn start(cert: &Path, key: &Path, tls: bool) -> Self {
        let dir = daemon_dir("vsftpd");
        let d = dir.path();
        let (cert, key) = copy_pem(d, cert, key);
        // The pre-login process chroots here: it must exist and not be writable.
        let empty = d.join("empty");
        fs::create_dir(&empty).expect("mkdir empty");
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o555)).expect("chmod empty");
        let addr = free_addr();
        // local_enable: vsftpd refuses to run with both local and anonymous logins disabled;
        // the empty allow list (userlist_deny=NO) then refuses every USER.
        let users = d.join("users");
        fs::write(&users, "").expect("write users");
        let conf = format!(
            "listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
ssl_enable={ssl}
rsa_cert_file={cert}
rsa_private_key_file={key}
seccomp_sandbox=NO
secure_chroot_dir={empty}
userlist_enable=YES
userlist_deny=NO
userlist_file={users}
xferlog_enable=NO
syslog_enable=NO
",
            port = addr.port(),
            ssl = if tls { "YES" } else { "NO" },
            cert = cert.display(),
            key = key.display(),
            empty = empty.display(),
            users = users.display(),
        );
        let conf = write_config(d, "vsftpd.conf", &conf);
        let mut cmd = Command::new("/usr/sbin/vsftpd");
        cmd.arg(&conf);
        let mut daemon = Daemon::spawn("vsftpd", "vsftpd", dir, cmd, Vec::new());
        daemon.wait_ready(&[addr]).await;
        Self { addr, daemon }
    }
}

/// Prosody (XMPP) with client-to-server STARTTLS only.
pub struct Prosody {
    /// Its c2s listener.
    pub addr: SocketAddr,
    daemon: Daemon,
}

impl Prosody {
    /// Starts prosody (package prosody) with one VirtualHost `domain` using `cert` and `key`.
    pub async fn start(cert: &Path, key: &Path, domain: &str) -> Self {
        assert!(
            domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "unusable XMPP domain {domain:?}"
        );
        let dir = daemon_dir("prosody");
        let d = dir.path();
        let (cert, key) = copy_pem(d, cert, key);
        for sub in ["data", "certs"] {
            fs::create_dir(d.join(sub)).expect("mkdir");
        }
        let addr = free_addr();
        let conf = format!(
            "daemonize = false
run_as_root = true
pidfile = {pid}
data_path = {data}
certificates = {certs}
plugin_paths = {{}}
modules_enabled = {{ \"tls\"; \"saslauth\"; }}
modules_disabled = {{ \"s2s\"; \"offline\"; }}
interfaces = {{ \"127.0.0.1\" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
component_ports = {{}}
storage = \"internal\"
log = {{ {{ levels = {{ min = \"info\" }}, to = \"file\", filename = {log} }} }}
VirtualHost \"{domain}\"
    ssl = {{ certificate = {cert}; key = {key}; }}
",
            pid = quoted(&d.join("prosody.pid")),
            data = quoted(&d.join("data")),
            certs = quoted(&d.join("certs")),
            port = addr.port(),
            log = quoted(&d.join("prosody.log")),
            cert = quoted(&cert),
            key = quoted(&key),
        );
        let conf = write_config(d, "prosody.cfg.lua", &conf);
        let mut cmd = Command::new("/usr/bin/prosody");
        cmd.arg("-F").arg("--config").arg(&conf);
        let log = d.join("prosody.log");
        let mut daemon = Daemon::spawn("prosody", "prosody", dir, cmd, vec![log.clone()]);
        daemon.wait_ready(&[addr]).await;
        // Prosody listens before it loads the host's certificate, and keeps running (without
        // offering STARTTLS) if that fails: wait for the load, then look for errors.
        let text = daemon.wait_log(&log, "Certificates loaded").await;
        assert!(
            !text.contains("\terror\t"),
            "prosody logged errors\n{}",
            daemon.output()
        );
        Self { addr, daemon }
    }
}

/// nginx serving HTTPS on several ports, each from its own certificate files in
/// `certs/<n>.crt` and `certs/<n>.key` under its directory: the files a deploy hook replaces,
/// followed by `reload_argv()`.
pub struct NginxHttps {
    /// One address per site.
    pub addrs: Vec<SocketAddr>,
    /// The directory holding `certs/`.
    pub certs: PathBuf,
    conf: PathBuf,
    prefix: PathBuf,
    daemon: Daemon,
}

impl NginxHttps {
    /// Starts nginx (package nginx) with `sites` HTTPS sites, each first serving `cert`
    /// (chain PEM) and `key`.
    pub async fn start(sites: usize, cert: &Path, key: &Path) -> Self {
        let dir = daemon_dir("nginx-https");
        let d = dir.path().to_path_buf();
        let certs = d.join("certs");
        fs::create_dir(&certs).expect("certs dir");
        let mut addrs = Vec::new();
        let mut servers = String::new();
        for n in 0..sites {
            let addr = free_addr();
            let (crt, k) = (
                certs.join(format!("{n}.crt")),
                certs.join(format!("{n}.key")),
            );
            fs::copy(cert, &crt).expect("copy cert");
            fs::copy(key, &k).expect("copy key");
            fs::set_permissions(&k, fs::Permissions::from_mode(0o600)).expect("chmod key");
            servers.push_str(&format!(
                "    server {{ listen {addr} ssl; ssl_certificate {}; ssl_certificate_key {}; return 200 \"site {n}\\n\"; }}\n",
                quoted(&crt),
                quoted(&k)
            ));
            addrs.push(addr);
        }
        let conf = format!(
            "daemon off;
pid {pid};
error_log {error_log};
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    ssl_protocols TLSv1.2 TLSv1.3;
{servers}}}
",
            pid = quoted(&d.join("nginx.pid")),
            error_log = quoted(&d.join("error.log")),
        );
        let conf = write_config(&d, "nginx.conf", &conf);
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-p")
            .arg(&d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf);
        let logs = vec![d.join("error.log")];
        let mut daemon = Daemon::spawn("nginx", "nginx", dir, cmd, logs);
        daemon.wait_ready(&addrs).await;
        Self {
            addrs,
            certs,
            conf,
            prefix: d,
            daemon,
        }
    }

    /// The argv that makes this nginx reload its certificates (for a hook's grant).
    pub fn reload_argv(&self) -> Vec<String> {
        [
            "/usr/sbin/nginx",
            "-p",
            self.prefix.to_str().expect("UTF-8"),
            "-e",
            self.prefix.join("error.log").to_str().expect("UTF-8"),
            "-c",
            self.conf.to_str().expect("UTF-8"),
            "-s",
            "reload",
        ]
        .map(String::from)
        .to_vec()
    }
}
