//! A real Pebble ACME server (Debian's pebble and pebble-challtestsrv) on free loopback ports,
//! with its own HTTPS certificate made at test time, killed by pid on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{TestCa, real_now};

fn free_port() -> u16 {
    crate::util::unique_port()
}

fn free_udp_and_tcp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running Pebble plus challtestsrv (its DNS), in a temp dir.
pub struct Pebble {
    pub directory: String,
    pub mgmt: SocketAddr,
    /// The CA that signed Pebble's own HTTPS certificate (trust it to talk ACME).
    pub tls_ca: TestCa,
    pub tls_ca_file: PathBuf,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` (where tlsward's responder listens),
    /// issuing certificates valid for `validity_secs`.
    pub async fn start(http_port: u16, validity_secs: u64) -> Self {
        Self::start_with(Path::new("/usr/bin"), http_port, validity_secs, None).await
    }

    /// Pebble resolving names (DNS-01 TXT lookups included) through `dns_port` instead of
    /// challtestsrv.
    pub async fn start_with_dns(http_port: u16, dns_port: u16) -> Self {
        Self::start_full(Path::new("/usr/bin"), http_port, 3600, None, Some(dns_port)).await
    }

    /// Pebble requiring external account binding with this key id and base64url HMAC key.
    pub async fn start_eab(http_port: u16, kid: &str, hmac_b64url: &str) -> Self {
        Self::start_with(
            Path::new("/usr/bin"),
            http_port,
            3600,
            Some((kid, hmac_b64url)),
        )
        .await
    }

    /// Pebble 2.6 (Debian 13), which has ARI; `scripts/test` unpacks it into
    /// `$TLSWARD_PEBBLE_ARI_DIR` (default /var/cache/tlsward/pebble-2.6).
    pub async fn start_ari(http_port: u16, validity_secs: u64) -> Self {
        let dir = std::env::var("TLSWARD_PEBBLE_ARI_DIR")
            .unwrap_or_else(|_| "/var/cache/tlsward/pebble-2.6".into());
        let bin = Path::new(&dir).join("usr/bin");
        assert!(
            bin.join("pebble").exists(),
            "{} has no pebble 2.6: run scripts/test, which fetches it",
            bin.display()
        );
        Self::start_with(&bin, http_port, validity_secs, None).await
    }

    /// Pebble from Debian sid (2.10 or later), which offers ACME profiles: `default` (90 days)
    /// and `shortlived` (6 days). `scripts/test` unpacks it into `$TLSWARD_PEBBLE_PROFILES_DIR`.
    pub async fn start_profiles(http_port: u16) -> Self {
        let dir = std::env::var("TLSWARD_PEBBLE_PROFILES_DIR")
            .unwrap_or_else(|_| "/var/cache/tlsward/pebble-sid".into());
        let bin = Path::new(&dir).join("usr/bin");
        assert!(
            bin.join("pebble").exists(),
            "{} has no pebble from sid: run scripts/test, which fetches it",
            bin.display()
        );
        Self::start_full(&bin, http_port, 0, None, None).await
    }

    async fn start_with(
        bin: &Path,
        http_port: u16,
        validity_secs: u64,
        eab: Option<(&str, &str)>,
    ) -> Self {
        Self::start_full(bin, http_port, validity_secs, eab, None).await
    }

    /// Starts Pebble, trying again with fresh ports when one was taken meanwhile (ports are
    /// picked by binding port 0 and releasing it, so another process may grab one first).
    async fn start_full(
        bin: &Path,
        http_port: u16,
        validity_secs: u64,
        eab: Option<(&str, &str)>,
        dns_override: Option<u16>,
    ) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(bin, http_port, validity_secs, eab, dns_override).await {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    async fn try_start(
        bin: &Path,
        http_port: u16,
        validity_secs: u64,
        eab: Option<(&str, &str)>,
        dns_override: Option<u16>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let tls_ca = TestCa::root_at("Pebble TLS CA", real_now());
        let leaf = tls_ca
            .leaf(&["localhost", "127.0.0.1"])
            .valid(-1.0, 365.0)
            .build();
        leaf.write_pem(dir.path(), "pebble");
        let tls_ca_file = dir.path().join("tls-ca.pem");
        std::fs::write(&tls_ca_file, tls_ca.pem()).unwrap();
        let (acme, mgmt, tls, dns, cts) = (
            free_port(),
            free_port(),
            free_port(),
            free_udp_and_tcp_port(),
            free_port(),
        );
        // A validity of 0 asks for the profiles of sid's Pebble instead of one fixed period.
        let profiles = validity_secs == 0;
        let validity = if profiles {
            r#""profiles":{"default":{"description":"90 days","validityPeriod":7776000},"shortlived":{"description":"6 days","validityPeriod":518400}}"#.to_owned()
        } else {
            format!(r#""certificateValidityPeriod":{validity_secs}"#)
        };
        let config = format!(
            r#"{{"pebble":{{"listenAddress":"127.0.0.1:{acme}","managementListenAddress":"127.0.0.1:{mgmt}","certificate":"pebble.pem","privateKey":"pebble.key","httpPort":{http_port},"tlsPort":{tls},"ocspResponderURL":"","externalAccountBindingRequired":{eab_required},{eab_keys}{validity}}}}}"#,
            eab_required = eab.is_some(),
            eab_keys = eab
                .map(|(kid, key)| format!(r#""externalAccountMACKeys":{{"{kid}":"{key}"}},"#))
                .unwrap_or_default(),
        );
        std::fs::write(dir.path().join("pebble-config.json"), config).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let ari = bin != Path::new("/usr/bin");
        let mut cts_cmd = Command::new(bin.join("pebble-challtestsrv"));
        if ari {
            // 2.6 adds a DNS-over-HTTPS listener on all interfaces unless told otherwise.
            cts_cmd.args(["-doh", ""]);
        }
        let cts_child = cts_cmd
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args([
                // sid's challtestsrv renamed -dns01 to -dnsserver.
                if profiles { "-dnsserver" } else { "-dns01" },
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{cts}"),
            ])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(log("cts.log"))
            .stderr(Stdio::from(log("cts.err")))
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) must be installed");
        let pebble_child = Command::new(bin.join("pebble"))
            .current_dir(dir.path())
            .args([
                "-config",
                "pebble-config.json",
                "-strict=false",
                "-dnsserver",
                &format!("127.0.0.1:{}", dns_override.unwrap_or(dns)),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::from(log("pebble.err")))
            .spawn()
            .expect("pebble (Debian package pebble) must be installed");
        let pebble = Self {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            mgmt: format!("127.0.0.1:{mgmt}").parse().unwrap(),
            tls_ca,
            tls_ca_file,
            children: vec![cts_child, pebble_child],
            dir,
        };
        for port in [acme, mgmt, cts] {
            wait_port(port, pebble.dir.path()).await?;
        }
        Ok(pebble)
    }

    /// The serial of every certificate Pebble issued, from its log ("Issued certificate
    /// serial S for order O"), as Pebble writes them: lowercase hex without leading zeros.
    pub fn issued_serials(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("pebble.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split("Issued certificate serial ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(normal_serial)
            .collect()
    }

    /// The root Pebble issues under (generated anew at every start), as DER.
    pub async fn issuing_root(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let r =
            crate::util::http::request(self.mgmt, "GET", "/roots/0", &[], Some(&self.tls_ca.cert))
                .await;
        assert_eq!(r.status, 200, "{}", r.body);
        rustls::pki_types::CertificateDer::from_pem_slice(r.body.as_bytes()).unwrap()
    }
}

/// A serial in hex as Pebble writes it (no leading zero bytes), whatever the form given (the
/// store keeps the DER content bytes, with the leading zero a high bit needs).
pub fn normal_serial(hex: &str) -> String {
    let hex = hex.to_ascii_lowercase();
    let mut s = hex.as_str();
    while s.len() > 2 && s.starts_with("00") {
        s = &s[2..];
    }
    s.to_owned()
}

/// Whether something listens on the loopback `port` within ten seconds.
async fn listening(port: u16) -> bool {
    crate::util::wait::within(
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await
    .is_some()
}

async fn wait_port(port: u16, dir: &Path) -> Result<(), String> {
    if listening(port).await {
        return Ok(());
    }
    let logs: String = ["pebble.log", "pebble.err", "cts.log", "cts.err"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(dir.join(f)).unwrap_or_default()
            )
        })
        .collect();
    Err(format!("pebble did not listen on {port}:\n{logs}"))
}

/// BIND 9 from Debian, authoritative for `tlsward.test` on a free loopback port, accepting
/// RFC 2136 updates signed with a TSIG key (hmac-sha256). Killed by pid on drop.
pub struct Bind {
    pub port: u16,
    pub secret: Vec<u8>,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bind {
    pub async fn start() -> Self {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_udp_and_tcp_port();
        let secret: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
  directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
}};
key "tlsward" {{ algorithm hmac-sha256; secret "{b64}"; }};
zone "tlsward.test" {{ type primary; file "{d}/tlsward.test.zone"; allow-update {{ key "tlsward"; }}; }};
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tlsward.test.zone"),
            "$TTL 60\n@ IN SOA ns.tlsward.test. hostmaster.tlsward.test. 1 60 60 600 60\n@ IN NS ns.tlsward.test.\nns IN A 127.0.0.1\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("named (Debian package bind9) must be installed");
        let bind = Self {
            port,
            secret,
            child,
            dir,
        };
        if listening(port).await {
            return bind;
        }
        panic!(
            "named did not listen:\n{}",
            std::fs::read_to_string(bind.dir.path().join("named.log")).unwrap_or_default()
        );
    }
}
