//! Network namespaces for the agent tests: one Linux bridge in the root namespace per test
//! and one namespace per agent, joined to it by a veth pair, so an agent and its nginx run
//! on their own host address and the center reaches them over a (virtual) network.
//!
//! Names and the subnet come from a *slot* (0..SLOTS) held by an exclusive lock on
//! `/run/tlsward-netns/SLOT.lock` for the bridge's life: tests in this process and in other
//! processes each get their own slot, and whatever carries a free slot's names is a leftover
//! of a dead run (a SIGKILLed test binary never ran its Drop), removed before it is reused.
//!
//! Slot S: bridge `twbS` at 10.231.S.1/24; namespace `twS-K` (K = 0, 1, ...) with `eth0` at
//! 10.231.S.(10+K)/24 and `lo` up; its host end is `twvS-K` on the bridge; its own hosts file
//! in `/etc/netns/twS-K/`. Everything is deleted on Drop (after a panic too): the processes
//! inside each namespace, the namespaces, their hosts files, the veths and the bridge.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::util::wait::within;

/// How many bridges may exist at once (on this machine, over all test processes).
const SLOTS: u8 = 64;

/// The second octet of every test subnet: 10.231.S.0/24.
const OCTET: u8 = 231;

/// Runs `ip ARGS`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("/usr/sbin/ip")
        .args(args)
        .output()
        .expect("run ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip ARGS`, ignoring failure (cleanup of what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("/usr/sbin/ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The pids of the processes inside namespace `ns` (`ip netns pids`).
fn pids_in(ns: &str) -> Vec<u32> {
    Command::new("/usr/sbin/ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process inside `ns` (only ever a namespace this fixture made, so only
/// processes a test started there) and waits briefly until none is left.
fn kill_all_in(ns: &str) {
    for _ in 0..50 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes every namespace and link that slot `slot`'s names could have.
fn remove_slot(slot: u8) {
    let prefix = format!("tw{slot}-");
    let listing = Command::new("/usr/sbin/ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in listing.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name
            .strip_prefix(&prefix)
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        {
            kill_all_in(name);
            ip_quiet(&["netns", "del", name]);
        }
    }
    if let Ok(dirs) = fs::read_dir("/etc/netns") {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if name
                .strip_prefix(&prefix)
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            {
                let _ = fs::remove_dir_all(d.path());
            }
        }
    }
    let links = Command::new("/usr/sbin/ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let veth = format!("twv{slot}-");
    for line in links.lines() {
        // "12: twv3-0@if11: <...>"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or_default();
        if name.starts_with(&veth) {
            ip_quiet(&["link", "del", name]);
        }
    }
    ip_quiet(&["link", "del", &format!("twb{slot}")]);
}

/// A bridge in the root namespace with its subnet; namespaces hang off it.
pub struct Bridge {
    slot: u8,
    name: String,
    /// Holds the slot: the lock is released when the file closes (after Drop removed all).
    _lock: File,
    next: std::sync::Mutex<u8>,
}

impl Bridge {
    /// Takes a free slot, removes any leftovers of its names, and creates the bridge at
    /// 10.231.S.1/24, up.
    pub fn new() -> Arc<Self> {
        (0..SLOTS)
            .find_map(Self::in_slot)
            .unwrap_or_else(|| panic!("all {SLOTS} network slots are taken (/run/tlsward-netns)"))
    }

    /// The bridge of slot `slot`, or `None` when another bridge (in any process) holds it.
    pub fn in_slot(slot: u8) -> Option<Arc<Self>> {
        let dir = Path::new("/run/tlsward-netns");
        fs::create_dir_all(dir).expect("create /run/tlsward-netns");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{slot}.lock")))
            .expect("open a slot lock");
        file.try_lock().ok()?;
        // The slot was free: whatever has its names is a dead run's.
        remove_slot(slot);
        let name = format!("twb{slot}");
        let bridge = Arc::new(Self {
            slot,
            name,
            _lock: file,
            next: std::sync::Mutex::new(0),
        });
        ip(&["link", "add", &bridge.name, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", bridge.gateway()),
            "dev",
            &bridge.name,
        ]);
        ip(&["link", "set", &bridge.name, "up"]);
        Some(bridge)
    }

    /// Its slot (the S of its names and subnet).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The bridge's own address in the root namespace (where the center listens).
    pub fn gateway(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, OCTET, self.slot, 1))
    }

    /// A new namespace on this bridge, with its address 10.231.S.(10+K).
    pub fn namespace(self: &Arc<Self>) -> Namespace {
        let k = {
            let mut next = self.next.lock().unwrap();
            let k = *next;
            *next += 1;
            k
        };
        assert!(k < 200, "too many namespaces on one bridge");
        let name = format!("tw{}-{k}", self.slot);
        let host = format!("twv{}-{k}", self.slot);
        let peer = format!("twp{}-{k}", self.slot);
        let addr = Ipv4Addr::new(10, OCTET, self.slot, 10 + k);
        // Made first, so Drop removes whatever follows even if a step below fails.
        let ns = Namespace {
            name: name.clone(),
            host: host.clone(),
            addr: IpAddr::V4(addr),
            bridge: Arc::clone(self),
        };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &host, "master", &self.name]);
        ip(&["link", "set", &host, "up"]);
        ip(&["link", "set", &peer, "netns", &name]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["link", "set", &peer, "name", "eth0"]);
        inside(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        ns
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // The namespaces hold an Arc to the bridge, so they are gone already; this also
        // catches a namespace whose creation panicked half way.
        remove_slot(self.slot);
    }
}

/// A network namespace the test made, with one address on the bridge.
pub struct Namespace {
    /// Its name for `ip netns exec`.
    pub name: String,
    host: String,
    /// Its address on the bridge (eth0 inside).
    pub addr: IpAddr,
    bridge: Arc<Bridge>,
}

impl Namespace {
    /// `program ARGS...` to be run inside this namespace (`ip netns exec NS program`), as a
    /// tokio Command killed on drop once spawned. `ip` execs the program after entering the
    /// namespace, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("/usr/sbin/ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .kill_on_drop(true);
        cmd
    }

    /// [`Namespace::command`] as a std Command (not killed on drop: the caller kills it).
    pub fn std_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("/usr/sbin/ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// The bridge this namespace hangs off.
    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    /// Names resolved inside this namespace, as a host's own DNS would: `ip netns exec`
    /// bind-mounts `/etc/netns/NS/hosts` over `/etc/hosts` for what it runs (so processes
    /// started after this call see it). Each pair is an address and its names.
    pub fn hosts(&self, entries: &[(IpAddr, &[&str])]) {
        let dir = Path::new("/etc/netns").join(&self.name);
        fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (ip, names) in entries {
            text.push_str(&format!("{ip} {}\n", names.join(" ")));
        }
        fs::write(dir.join("hosts"), text).expect("write the namespace's hosts file");
    }

    /// The TCP and UDP sockets listening inside this namespace (`ss -Hltnup`).
    pub fn listening_sockets(&self) -> Vec<Listening> {
        listening_sockets(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        ip_quiet(&["netns", "del", &self.name]);
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
        // Deleting the namespace deletes its veth end and with it the pair; this is for a
        // namespace whose setup stopped half way.
        ip_quiet(&["link", "del", &self.host]);
    }
}

/// One listening socket, as `ss -Hltnup` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The local address and port, as ss prints it (`10.231.3.10:443`, `*:53`, `[::]:80`).
    pub local: String,
    /// The owning processes' names (`nginx`), from ss's `users:((...))` column.
    pub processes: Vec<String>,
}

/// The listening TCP and UDP sockets in namespace `ns`, with their processes.
pub fn listening_sockets(ns: &str) -> Vec<Listening> {
    let out = Command::new("/usr/sbin/ip")
        .args(["netns", "exec", ns, "ss", "-Hltnup"])
        .output()
        .expect("run ss in the namespace");
    assert!(
        out.status.success(),
        "ss in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // tcp LISTEN 0 511 10.231.3.10:443 0.0.0.0:* users:(("nginx",pid=1,fd=6),...)
            let fields: Vec<&str> = line.split_whitespace().collect();
            let protocol = (*fields.first()?).to_owned();
            let local = (*fields.get(4)?).to_owned();
            let processes = line
                .split("((\"")
                .skip(1)
                .chain(line.split("),(\"").skip(1))
                .filter_map(|s| s.split('"').next())
                .map(str::to_owned)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            Some(Listening {
                protocol,
                local,
                processes,
            })
        })
        .collect()
}

/// A Debian nginx inside a namespace, serving HTTPS on the namespace's address from
/// `certs/site.crt` and `certs/site.key` (the files an agent's pem-files hook writes), killed
/// and reaped on drop.
pub struct NginxNs {
    /// Where it listens: the namespace's address, `port`.
    pub addr: SocketAddr,
    /// The directory holding the served `site.crt` and `site.key`.
    pub certs: PathBuf,
    prefix: PathBuf,
    conf: PathBuf,
    ns: String,
    child: Child,
    _dir: TempDir,
}

impl NginxNs {
    /// Starts nginx in `ns` on port `port`, first serving `cert` (chain PEM) and `key`.
    pub async fn start(ns: &Namespace, port: u16, cert: &Path, key: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tlsward-nginx-ns-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let certs = d.join("certs");
        fs::create_dir(&certs).expect("certs dir");
        let (crt, k) = (certs.join("site.crt"), certs.join("site.key"));
        fs::copy(cert, &crt).expect("copy cert");
        fs::copy(key, &k).expect("copy key");
        fs::set_permissions(&k, fs::Permissions::from_mode(0o600)).expect("chmod key");
        let addr = SocketAddr::new(ns.addr, port);
        let conf = d.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{ listen {addr} ssl; ssl_certificate {crt}; ssl_certificate_key {k}; return 200 \"ok\\n\"; }}
}}
",
                d = d.display(),
                crt = crt.display(),
                k = k.display(),
            ),
        )
        .expect("write nginx.conf");
        let log = File::create(d.join("stderr.log")).expect("stderr log");
        let child = ns
            .std_command("/usr/sbin/nginx")
            .arg("-p")
            .arg(&d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nginx (package nginx)");
        let mut nginx = Self {
            addr,
            certs,
            prefix: d,
            conf,
            ns: ns.name.clone(),
            child,
            _dir: dir,
        };
        let up = within(Duration::from_secs(20), Duration::from_millis(50), || {
            let exited = nginx.child.try_wait().ok().flatten().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                tokio::net::TcpStream::connect(addr)
                    .await
                    .is_ok()
                    .then_some(true)
            }
        })
        .await;
        if up != Some(true) {
            panic!(
                "nginx in {} did not listen on {addr}: {}{}",
                nginx.ns,
                fs::read_to_string(nginx.prefix.join("stderr.log")).unwrap_or_default(),
                fs::read_to_string(nginx.prefix.join("error.log")).unwrap_or_default()
            );
        }
        nginx
    }

    /// The served chain file.
    pub fn cert_path(&self) -> PathBuf {
        self.certs.join("site.crt")
    }

    /// The served key file.
    pub fn key_path(&self) -> PathBuf {
        self.certs.join("site.key")
    }

    /// The argv that makes this nginx reload its certificates (for a hook's grant); run by
    /// the agent inside the namespace.
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

impl Drop for NginxNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
