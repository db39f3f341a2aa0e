//! Text a monitored endpoint chooses, against every place tlsward shows it: certificates
//! whose names carry exposition syntax (a CN that closes its label and forges a series),
//! backslashes, CR, ESC, C1 and bidi controls, invalid UTF-8 and a 60 KB subject; and a
//! STARTTLS greeting full of terminal escapes.
//!
//! - `/metrics` (both formats) and `/probe` are read by the strict parser of
//!   `util::exposition`, from the daemon in this process and from the real binary, whose
//!   scrape `promtool check metrics` must also accept;
//! - the `probe` and `verify` tables, run as the real binary under `--color always` and
//!   `never`, must put no escape of the peer's on the terminal and no row of its making.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::util::daemon::start;
use crate::util::exposition::{Exposition, Format, parse_or_panic};
use crate::util::http::{Response, get, request};
use crate::util::wait::eventually;
use crate::util::{TestCa, TlsServer, pem_chain, real_now};

/// A CN that closes its label value, ends the line and forges a series (and an end of
/// OpenMetrics), then carries the other characters a label value must survive.
const FORGING_CN: &str = "x\"} 1\ntlsward_probe_success{target=\"another:443\",profile=\"https\"} 1\n\
                          # EOF\n\\\"} back\\slash\r\ncr \x1b[31m esc \u{9b}c1 \u{202e}rtl";

/// The subject as a scraper reads it back: quotes and backslashes as sent, every control
/// and bidi character in its visible form.
const FORGING_SUBJECT: &str = r#"CN=x"} 1\ntlsward_probe_success{target="another:443",profile="https"} 1\n# EOF\n\"} back\slash\r\ncr \x1b[31m esc \u{9b}c1 \u{202e}rtl"#;

/// subjectAltNames with quotes, a backslash and a line feed (IA5String allows them all).
const SANS: [&str; 4] = [
    "forge.test",
    "q\"uote.test",
    "back\\slash.test",
    "line\nbreak.test",
];

/// The `dns_names` label those become.
const DNS_NAMES: &str = r#"forge.test,q"uote.test,back\slash.test,line\nbreak.test"#;

/// A configured label value with a quote, a backslash, a line feed and an ESC (TOML
/// escapes), and how it reads back.
const NOTE_TOML: &str = r#""a\"b\\c\nd\u001B""#;
const NOTE: &str = r#"a"b\c\nd\x1b"#;

/// Stands in for a CN that is not UTF-8 until the DER is patched.
const PLACEHOLDER: &[u8] = b"NOT-UTF8-PLACEHOLDER";

/// Three endpoints under one root: the forging CN, a 60 KB subject, a CN that is not UTF-8.
struct Hostile {
    forge: TlsServer,
    huge: TlsServer,
    broken: TlsServer,
    dir: tempfile::TempDir,
}

impl Hostile {
    async fn start() -> Self {
        let root = TestCa::root_at("Hostile Root", real_now());
        let forge = root.leaf(&SANS).cn(FORGING_CN).build();
        // 60,000 bytes of two-byte characters: a cap must cut on a character boundary.
        let huge = root.leaf(&["huge.test"]).cn(&"é".repeat(30_000)).build();
        let mut broken = root
            .leaf(&["broken.test"])
            .cn(std::str::from_utf8(PLACEHOLDER).unwrap())
            .build();
        broken.chain[0] = not_utf8(&broken.chain[0]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), root.pem()).unwrap();
        Self {
            forge: TlsServer::leaf(&forge).start().await,
            huge: TlsServer::leaf(&huge).start().await,
            broken: TlsServer::leaf(&broken).start().await,
            dir,
        }
    }

    fn target(name: &str, server: &TlsServer) -> String {
        format!("{name}:{}", server.addr.port())
    }

    /// The three configured target names.
    fn targets(&self) -> BTreeSet<String> {
        [
            Self::target("forge.test", &self.forge),
            Self::target("huge.test", &self.huge),
            Self::target("broken.test", &self.broken),
        ]
        .into()
    }

    /// Writes the config: the three targets every second, the first with a hostile label.
    fn config(&self) -> std::path::PathBuf {
        let target = |name: &str, server: &TlsServer, extra: &str| {
            format!(
                "[[target]]\naddress = \"{}\"\nprofile = \"test\"\nconnect_to = [\"127.0.0.1\"]\n{extra}\n",
                Self::target(name, server)
            )
        };
        let text = format!(
            "[server]\nprobe_targets = \"any\"\n\n[defaults]\ninterval = \"1s\"\ntimeout = \"5s\"\n\n[profile.test]\nprotocol = \"tls\"\n\
             ca_files = [\"ca.pem\"]\nsystem_roots = false\n\n{}{}{}",
            target(
                "forge.test",
                &self.forge,
                &format!("labels = {{ note = {NOTE_TOML} }}")
            ),
            target("huge.test", &self.huge, ""),
            target("broken.test", &self.broken, ""),
        );
        let path = self.dir.path().join("tlsward.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// `cert` with the placeholder in its CN replaced by bytes that are not UTF-8 (and would
/// end a label and a line if they were copied). The signature no longer matches: the
/// probe still sees and reports the certificate.
fn not_utf8(cert: &CertificateDer<'_>) -> CertificateDer<'static> {
    let mut der = cert.to_vec();
    let at = der
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER)
        .expect("placeholder in the DER");
    let mut evil = b"\xff\xfe\"} 1\n\x1b[2J\xc3".to_vec();
    evil.resize(PLACEHOLDER.len(), b'z');
    der[at..at + PLACEHOLDER.len()].copy_from_slice(&evil);
    CertificateDer::from(der)
}

async fn scrape(addr: SocketAddr, path: &str, format: Format) -> (Response, Exposition) {
    let accept = match format {
        Format::Text => "text/plain; version=0.0.4",
        Format::OpenMetrics => "application/openmetrics-text; version=1.0.0",
    };
    let r = request(addr, "GET", path, &[("Accept", accept)], None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let parsed = parse_or_panic(format, &r.body);
    (r, parsed)
}

/// Until every target's certificate is on /metrics.
async fn all_probed(addr: SocketAddr) {
    eventually(30, "a certificate for every target", || async move {
        get(addr, "/metrics")
            .await
            .body
            .matches("tlsward_cert_info{")
            .count()
            == 3
    })
    .await;
}

/// What /metrics must say, whatever the format: one series per configured target and
/// family, none forged, and the peer's text decoded to its visible, capped form.
fn assert_scrape(h: &Hostile, body: &str, x: &Exposition) {
    let targets = h.targets();
    let success = x.named("tlsward_probe_success");
    let seen: BTreeSet<String> = success
        .iter()
        .map(|s| s.label("target").unwrap().to_owned())
        .collect();
    assert_eq!(success.len(), 3, "{success:?}");
    assert_eq!(seen, targets);
    assert!(x.with_label("target", "another:443").is_empty());
    for s in &x.samples {
        if let Some(t) = s.label("target") {
            assert!(targets.contains(t), "a series for {t:?}: {s:?}");
        }
    }
    let info = x.named("tlsward_cert_info");
    assert_eq!(info.len(), 3, "{info:?}");
    let of = |name: &str| {
        let target = targets.iter().find(|t| t.starts_with(name)).unwrap();
        *info
            .iter()
            .find(|s| s.label("target") == Some(target))
            .unwrap()
    };

    let forge = of("forge.test");
    let keys: Vec<&str> = forge.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "target",
            "profile",
            "note",
            "subject",
            "issuer",
            "serial",
            "sha256",
            "dns_names"
        ]
    );
    assert_eq!(forge.label("subject"), Some(FORGING_SUBJECT));
    assert_eq!(forge.label("issuer"), Some("CN=Hostile Root"));
    assert_eq!(forge.label("dns_names"), Some(DNS_NAMES));
    assert_eq!(forge.label("note"), Some(NOTE));

    let huge = of("huge.test").label("subject").unwrap();
    assert!(huge.len() <= 1024, "{} bytes", huge.len());
    assert!(huge.starts_with("CN=éééé"), "{huge}");
    assert!(huge.ends_with("…[truncated, 60003 bytes]"), "{huge}");

    assert_eq!(
        of("broken.test").label("subject"),
        Some("<X509Error: Invalid X.509 name>")
    );
    // The 60 KB subject is nowhere in the body (it would be twice: subject and reason).
    assert!(body.len() < 40_000, "{} bytes", body.len());
}

/// What /probe must say about the forging endpoint: the blackbox series without labels, and
/// tlsward's own with the peer's text decoded.
fn assert_probe(x: &Exposition, subject: &str) {
    for name in [
        "probe_success",
        "tlsward_probe_success",
        "tlsward_cert_info",
    ] {
        assert_eq!(x.named(name).len(), 1, "{name}: {:?}", x.samples);
    }
    assert!(x.named("probe_success")[0].labels.is_empty());
    assert!(x.named("tlsward_probe_success")[0].labels.is_empty());
    assert!(x.samples.iter().all(|s| s.label("target").is_none()));
    assert_eq!(
        x.named("tlsward_cert_info")[0].label("subject"),
        Some(subject)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_certificates_forge_no_series_in_either_format() {
    let h = Hostile::start().await;
    let d = start(&h.config()).await;
    all_probed(d.addr).await;
    for format in [Format::Text, Format::OpenMetrics] {
        let (r, x) = scrape(d.addr, "/metrics", format).await;
        assert_scrape(&h, &r.body, &x);
    }
    for format in [Format::Text, Format::OpenMetrics] {
        let path = format!(
            "/probe?target=127.0.0.1:{}&profile=test",
            h.forge.addr.port()
        );
        let (_, x) = scrape(d.addr, &path, format).await;
        assert_probe(&x, FORGING_SUBJECT);
        let path = format!(
            "/probe?target=127.0.0.1:{}&profile=test",
            h.huge.addr.port()
        );
        let (r, x) = scrape(d.addr, &path, format).await;
        let subject = x.named("tlsward_cert_info")[0].label("subject").unwrap();
        assert!(subject.len() <= 1024 && subject.ends_with("…[truncated, 60003 bytes]"));
        assert!(r.body.len() < 20_000, "{} bytes", r.body.len());
    }
}

/// A child killed by pid on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_scraped_by_promtool_survives_hostile_certificates() {
    let h = Hostile::start().await;
    let addr: SocketAddr = ([127, 0, 0, 1], crate::util::unique_port()).into();
    let _serve = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["serve", "--config"])
            .arg(h.config())
            .args(["--listen", &addr.to_string()])
            .env_remove("TLSWARD_LOG")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    crate::util::daemon::answering(addr, "/-/ready").await;
    all_probed(addr).await;
    let (text, x) = scrape(addr, "/metrics", Format::Text).await;
    assert_scrape(&h, &text.body, &x);
    let (om, x) = scrape(addr, "/metrics", Format::OpenMetrics).await;
    assert_scrape(&h, &om.body, &x);

    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.body.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{}",
        text.body
    );
}

/// Names that would set the window title, clear the screen, forge a row and reverse the
/// text, were they printed raw.
const TERMINAL_CA: &str = "Evil \x1b]0;pwned\x07 CA \x1b[2J";
const TERMINAL_CN: &str =
    "evil.test\r\nok        forged.test:443  \x1b[2J\x1b]0;pwned\x07 \u{9b}2J \u{202e}lmth.exe";

/// A greeting that refuses STARTTLS in terminal escapes (the refusal is quoted in the table).
const TERMINAL_GREETING: &[u8] = b"554 \x1b]0;pwned\x07 \x1b[2J go\raway \xc2\x9b31m\r\n";

/// The real binary; stdout must be UTF-8.
async fn tlsward(args: &[String]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(args)
        .env_remove("TLSWARD_LOG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).expect("UTF-8 output"),
    )
}

/// `out` is a table of `rows` rows whose only escapes are tlsward's own colours (SGR
/// sequences, `ESC [ digits/; m`), with no raw CR and no C1 or bidi control; returns it with
/// the colours removed.
fn assert_terminal_safe(out: &str, rows: usize) -> String {
    let mut plain = String::new();
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        assert_eq!(chars.next(), Some('['), "an ESC that is not SGR in {out:?}");
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || *c == ';')
        {
            chars.next();
        }
        assert_eq!(chars.next(), Some('m'), "an ESC that is not SGR in {out:?}");
    }
    for c in plain.chars() {
        assert!(
            c == '\n' || !tlsward::escape::is_unsafe(c),
            "raw {c:?} in {plain:?}"
        );
    }
    assert!(!out.contains('\r'));
    assert!(plain.ends_with('\n'));
    assert_eq!(plain.lines().count(), rows + 1, "{plain}");
    plain
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_and_verify_tables_show_peer_escapes_visibly() {
    // The hostile issuer is in the ISSUER column of both rows; the second certificate has
    // no subjectAltName, so the REASON column quotes its hostile subject too.
    let root = TestCa::root_at(TERMINAL_CA, real_now());
    let leaf = root.leaf(&["evil.test"]).cn(TERMINAL_CN).build();
    let trusted = TlsServer::leaf(&leaf).start().await;
    let untrusted = TlsServer::leaf(&root.leaf(&["evil.test"]).cn(TERMINAL_CN).cn_only().build())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("root.pem");
    std::fs::write(&ca, root.pem()).unwrap();
    let chain = dir.path().join("chain.pem");
    std::fs::write(&chain, pem_chain(&leaf.chain)).unwrap();

    // An SMTP server that greets in escapes.
    let smtp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = smtp.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = smtp.accept().await {
            let _ = s.write_all(TERMINAL_GREETING).await;
            let mut line = String::new();
            let _ = BufReader::new(&mut s).read_line(&mut line).await;
        }
    });

    let ca = ca.display().to_string();
    for color in ["always", "never"] {
        let mut args: Vec<String> = [
            "probe",
            "--no-system-roots",
            "--ca-file",
            &ca,
            "-o",
            "table",
            "--color",
            color,
        ]
        .map(String::from)
        .to_vec();
        for server in [&trusted, &untrusted] {
            let port = server.addr.port();
            args.extend([
                "--resolve".into(),
                format!("evil.test:{port}:127.0.0.1"),
                format!("evil.test:{port}"),
            ]);
        }
        let (code, out) = tlsward(&args).await;
        assert_eq!(code, 2, "{out}");
        // Two rows, then the summary line.
        let plain = assert_terminal_safe(&out, 2 + 1);
        assert!(plain.ends_with(" critical\n"), "{plain}");
        assert!(
            plain.contains(r"Evil \x1b]0;pwned\x07 CA \x1b[2J"),
            "{plain}"
        );
        assert!(
            plain.contains(r"evil.test\r\nok        forged.test:443  \x1b[2J"),
            "{plain}"
        );
        assert!(plain.contains(r"\u{9b}2J \u{202e}lmth.exe"), "{plain}");
        if color == "never" {
            assert!(!out.contains('\x1b'));
        }

        let smtp_args: Vec<String> = [
            "probe",
            "--starttls",
            "smtp",
            "--timeout",
            "10s",
            "-o",
            "table",
            "--color",
            color,
            &smtp_addr.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let (code, out) = tlsward(&smtp_args).await;
        assert_eq!(code, 2, "{out}");
        let plain = assert_terminal_safe(&out, 1 + 1);
        assert!(plain.contains(r"\x1b]0;pwned\x07 \x1b[2J go"), "{plain}");
        assert!(plain.ends_with("0 ok, 0 warning, 1 critical\n"), "{plain}");

        let verify_args: Vec<String> = [
            "verify",
            "--chain",
            &chain.display().to_string(),
            "--name",
            "evil.test",
            "--no-system-roots",
            "--ca-file",
            &ca,
            "-o",
            "table",
            "--color",
            color,
        ]
        .map(String::from)
        .to_vec();
        let (_, out) = tlsward(&verify_args).await;
        let plain = assert_terminal_safe(&out, 1);
        assert!(
            plain.contains(r"Evil \x1b]0;pwned\x07 CA \x1b[2J"),
            "{plain}"
        );
    }
}
