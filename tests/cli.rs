//! `tlsward probe` and `tlsward verify` run as a user runs them: the real binary, real
//! servers on loopback, certificates made relative to the wall clock (the binary's clock).

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::util::cli::open_store;
use crate::util::{TestCa, TlsServer, pem_chain, real_now};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn tlsward(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(args)
        .env_remove("TLSWARD_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tlsward");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A good and an expired endpoint under one private root, and the root as a PEM file.
struct Fixture {
    good: TlsServer,
    expired: TlsServer,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let root = TestCa::root_at("CLI Root", real_now());
        let int = root.intermediate("CLI Int");
        let good = TlsServer::leaf(&int.leaf(&["good.test"]).build())
            .start()
            .await;
        let expired = TlsServer::leaf(&int.leaf(&["expired.test"]).valid(-30.0, -2.0).build())
            .start()
            .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
        Self { good, expired, dir }
    }

    fn ca(&self) -> String {
        self.dir.path().join("root.pem").display().to_string()
    }

    fn good(&self) -> String {
        format!("good.test:{}", self.good.addr.port())
    }

    fn expired(&self) -> String {
        format!("expired.test:{}", self.expired.addr.port())
    }

    /// The options that point the names at the servers and trust only the test root.
    fn base_args(&self) -> Vec<String> {
        vec![
            "probe".into(),
            "--no-system-roots".into(),
            "--ca-file".into(),
            self.ca(),
            "--resolve".into(),
            format!("good.test:{}:127.0.0.1", self.good.addr.port()),
            "--resolve".into(),
            format!("expired.test:{}:127.0.0.1", self.expired.addr.port()),
        ]
    }

    async fn probe(&self, extra: &[&str], stdin: Option<&str>) -> Run {
        let mut args = self.base_args();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tlsward(&refs, stdin).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_follows_the_contract_and_input_order() {
    let f = Fixture::new().await;
    let run = f
        .probe(&["-o", "json", &f.expired(), &f.good()], None)
        .await;
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let (expired, good) = (&arr[0], &arr[1]);
    assert_eq!(expired["target"], f.expired());
    assert_eq!(expired["status"], "critical");
    assert_eq!(expired["reason"], "cert_expired");
    assert_eq!(
        expired["leaf"]["dns_names"][0], "expired.test",
        "leaf reported despite failure"
    );
    assert_eq!(good["status"], "ok");
    assert_eq!(good["reason"], Value::Null);
    assert_eq!(good["error"], Value::Null);
    assert_eq!(good["server_name"], "good.test");
    assert_eq!(good["address"], format!("127.0.0.1:{}", f.good.addr.port()));
    assert_eq!(good["tls"]["version"], "TLSv1.3");
    assert!(
        good["tls"]["cipher_suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS13_")
    );
    for key in [
        "chain",
        "hostname",
        "expiry",
        "validity_window",
        "key_strength",
        "signature_algorithm",
    ] {
        assert_eq!(good["checks"][key]["ok"], true, "{key}");
    }
    let leaf = &good["leaf"];
    for key in [
        "subject",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "days_left",
        "dns_names",
        "ip_addresses",
        "sha256",
        "public_key",
        "signature_algorithm",
    ] {
        assert!(!leaf[key].is_null(), "leaf.{key} missing");
    }
    assert_eq!(leaf["public_key"], "ECDSA P-256");
    assert_eq!(leaf["signature_algorithm"], "ecdsa-with-SHA256");
    assert!(leaf["not_after"].as_str().unwrap().ends_with('Z'));
    assert_eq!(leaf["sha256"].as_str().unwrap().len(), 64);
    let days = leaf["days_left"].as_f64().unwrap();
    assert!((days - 80.0).abs() < 0.1, "days_left {days}");
    assert_eq!(good["chain"].as_array().unwrap().len(), 2);
    assert!(good["duration_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_streams_one_object_per_line() {
    let f = Fixture::new().await;
    let run = f
        .probe(&["-o", "jsonl", &f.good(), &f.expired(), &f.good()], None)
        .await;
    assert_eq!(run.code, 2);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let critical = lines.iter().filter(|v| v["status"] == "critical").count();
    assert_eq!(critical, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn table_output_with_and_without_colour() {
    let f = Fixture::new().await;
    let plain = f
        .probe(
            &["-o", "table", "--color", "never", &f.good(), &f.expired()],
            None,
        )
        .await;
    assert_eq!(plain.code, 2);
    let mut lines = plain.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("STATUS") && header.contains("TARGET") && header.contains("REASON"),
        "{header}"
    );
    let good = lines.next().unwrap();
    assert!(
        good.starts_with("ok ") && good.contains(&f.good()),
        "{good}"
    );
    let bad = lines.next().unwrap();
    assert!(
        bad.starts_with("critical") && bad.contains("cert_expired"),
        "{bad}"
    );
    assert!(!plain.stdout.contains('\x1b'));
    let coloured = f
        .probe(&["-o", "table", "--color", "always", &f.good()], None)
        .await;
    assert!(coloured.stdout.contains("\x1b["), "{:?}", coloured.stdout);
    assert_eq!(coloured.code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_follow_the_monitoring_plugin_convention() {
    let f = Fixture::new().await;
    assert_eq!(f.probe(&["-o", "json", &f.good()], None).await.code, 0);
    // 80 days left: a warning when warnings start at 100 days.
    let warn = f
        .probe(&["-o", "json", "--warn-days", "100", &f.good()], None)
        .await;
    assert_eq!(warn.code, 1);
    let v: Value = serde_json::from_str(&warn.stdout).unwrap();
    assert_eq!(v[0]["reason"], "cert_expiring");
    // The same as a share of its 90-day lifetime: all of it left is still under 100%.
    let share = f
        .probe(&["-o", "json", "--warn", "95%", &f.good()], None)
        .await;
    assert_eq!(share.code, 1, "{}", share.stderr);
    let v: Value = serde_json::from_str(&share.stdout).unwrap();
    let detail = v[0]["checks"]["expiry"]["detail"].as_str().unwrap();
    assert!(detail.contains("95% of its 90-day lifetime"), "{detail}");
    let bad = f.probe(&["--warn", "5%", &f.good()], None).await;
    assert_eq!(bad.code, 3);
    assert!(
        bad.stderr.contains("comes before the warning"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        f.probe(&["-o", "json", &f.good(), &f.expired()], None)
            .await
            .code,
        2
    );
    let usage = f.probe(&["-o", "json", "not a target!"], None).await;
    assert_eq!(usage.code, 3);
    assert!(usage.stderr.contains("invalid target"), "{}", usage.stderr);
    let clap = tlsward(&["probe", "--no-such-flag"], None).await;
    assert_eq!(clap.code, 3);
    let half_mtls = tlsward(&["probe", "--client-cert", "x.pem", "a.test"], None).await;
    assert_eq!(half_mtls.code, 3, "{}", half_mtls.stderr);
    assert_eq!(tlsward(&["--version"], None).await.code, 0);
}

/// Durations too large for any deadline are refused where they are parsed, with a message,
/// instead of overflowing a clock later.
#[tokio::test(flavor = "multi_thread")]
async fn huge_durations_are_usage_errors() {
    for t in ["500000000000y", "367d"] {
        let run = tlsward(&["probe", "--timeout", t, "127.0.0.1:1"], None).await;
        assert_eq!(run.code, 3, "{t}: {}", run.stderr);
        assert!(
            run.stderr.contains("must be at most 366d") || run.stderr.contains("too large"),
            "{t}: {}",
            run.stderr
        );
    }
}

/// Read-only commands never create a store or its key: with neither there, `cert list`
/// says so and leaves the directory as it was; `store init` makes a store for a key that
/// came first, and a store whose database was lost is not silently started over.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_never_recreates_a_lost_store_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tlsward.toml");
    std::fs::write(
        &cfg,
        "[store]\npath = \"state/tlsward.db\"\nkey_file = \"state/store.key\"\n\n\
         [acme]\ndirectory = \"https://127.0.0.1:1/dir\"\n\n\
         [[certificate]]\nname = \"www\"\ndomains = [\"www.tlsward.test\"]\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let list = tlsward(&["cert", "list", "--config", cfg], None).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("never issued"), "{}", list.stdout);
    assert!(
        !tmp.path().join("state").exists(),
        "cert list created files"
    );

    // A key provisioned first (e.g. from a secrets manager): serve would refuse, init creates.
    let key = age_identity();
    std::fs::create_dir(tmp.path().join("state")).unwrap();
    let key_path = tmp.path().join("state/store.key");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .unwrap();
        std::io::Write::write_all(&mut f, key.as_bytes()).unwrap();
    }
    let list = tlsward(&["cert", "list", "--config", cfg], None).await;
    assert_eq!(list.code, 3);
    assert!(
        list.stderr.contains("database is missing"),
        "{}",
        list.stderr
    );
    let init = tlsward(&["store", "init", "--config", cfg], None).await;
    assert_eq!(init.code, 0, "{}", init.stderr);
    let list = tlsward(&["cert", "list", "--config", cfg], None).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("never issued"), "{}", list.stdout);
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        key,
        "the key is untouched"
    );
}

/// A fresh age identity, as `age-keygen` writes it.
fn age_identity() -> String {
    // Made through the store itself: a throwaway store's key file is a valid identity.
    let tmp = tempfile::tempdir().unwrap();
    drop(
        tlsward::store::Store::open(
            &tmp.path().join("x.db"),
            &tlsward::store::KeySource::File(tmp.path().join("x.key")),
        )
        .unwrap(),
    );
    std::fs::read_to_string(tmp.path().join("x.key")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_file_with_comments_and_stdin() {
    let f = Fixture::new().await;
    let list = format!(
        "# endpoints\n\n{}   # the good one\n  {}\n",
        f.good(),
        f.expired()
    );
    let path = f.dir.path().join("targets.txt");
    std::fs::write(&path, &list).unwrap();
    let from_file = f
        .probe(
            &["-o", "json", "--targets-file", path.to_str().unwrap()],
            None,
        )
        .await;
    let v: Value = serde_json::from_str(&from_file.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["target"], f.good());
    let from_stdin = f
        .probe(&["-o", "json", "--targets-file", "-"], Some(&list))
        .await;
    assert_eq!(from_stdin.code, 2);
    let v: Value = serde_json::from_str(&from_stdin.stdout).unwrap();
    assert_eq!(v[1]["target"], f.expired());

    std::fs::write(&path, "good.test\nbad target here\n").unwrap();
    let bad = f
        .probe(&["--targets-file", path.to_str().unwrap()], None)
        .await;
    assert_eq!(bad.code, 3);
    assert!(bad.stderr.contains("targets.txt:2"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_override_verifies_the_given_name() {
    let f = Fixture::new().await;
    let target = format!("127.0.0.1:{}", f.good.addr.port());
    let run = tlsward(
        &[
            "probe",
            "-o",
            "json",
            "--no-system-roots",
            "--ca-file",
            &f.ca(),
            "--sni",
            "good.test",
            &target,
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["server_name"], "good.test");
    // Without --sni the IP is verified against the IP SANs, which this leaf lacks.
    let run = tlsward(
        &[
            "probe",
            "-o",
            "json",
            "--no-system-roots",
            "--ca-file",
            &f.ca(),
            &target,
        ],
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["reason"], "hostname_mismatch");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_a_chain_file_offline() {
    let root = TestCa::root_at("Verify Root", real_now());
    let int = root.intermediate("Verify Int");
    let leaf = int.leaf(&["files.test"]).valid(-1.0, 30.0).build();
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain.pem");
    let ca = dir.path().join("root.pem");
    std::fs::write(&chain, pem_chain(&leaf.chain)).unwrap();
    std::fs::write(&ca, root.pem()).unwrap();
    let (chain, ca) = (chain.to_str().unwrap(), ca.to_str().unwrap());
    let base = [
        "verify",
        "--chain",
        chain,
        "--ca-file",
        ca,
        "--no-system-roots",
        "-o",
        "json",
    ];

    let ok = tlsward(&[&base[..], &["--name", "files.test"]].concat(), None).await;
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    let v: Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["chain"].as_array().unwrap().len(), 2);

    let later = (real_now() + time::Duration::days(40))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expired = tlsward(
        &[&base[..], &["--name", "files.test", "--at", &later]].concat(),
        None,
    )
    .await;
    assert_eq!(expired.code, 2);
    let v: Value = serde_json::from_str(&expired.stdout).unwrap();
    assert_eq!(v["reason"], "cert_expired");

    let wrong = tlsward(&[&base[..], &["--name", "other.test"]].concat(), None).await;
    let v: Value = serde_json::from_str(&wrong.stdout).unwrap();
    assert_eq!(v["reason"], "hostname_mismatch");

    let bad_time = tlsward(
        &[&base[..], &["--name", "files.test", "--at", "yesterday"]].concat(),
        None,
    )
    .await;
    assert_eq!(bad_time.code, 3);
    let missing = tlsward(
        &["verify", "--chain", "/nonexistent.pem", "--name", "x.test"],
        None,
    )
    .await;
    assert_eq!(missing.code, 3);
    assert!(
        missing.stderr.contains("/nonexistent.pem"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_addresses_finds_the_stale_backend() {
    // One name, two backends on the same port: 127.0.0.1 serves the renewed certificate,
    // 127.0.0.2 still serves the old one.
    let root = TestCa::root_at("LB Root", real_now());
    let fresh = root.leaf(&["lb.test"]).valid(-1.0, 90.0).build();
    let stale = root.leaf(&["lb.test"]).valid(-85.0, 5.0).build();
    let a = TlsServer::leaf(&fresh).start_on("127.0.0.1:0").await;
    let port = a.addr.port();
    let b = TlsServer::leaf(&stale)
        .start_on(&format!("127.0.0.2:{port}"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
    let ca = dir.path().join("root.pem").display().to_string();
    let resolve = format!("lb.test:{port}:127.0.0.1,127.0.0.2");
    let target = format!("lb.test:{port}");
    let args = [
        "probe",
        "-o",
        "json",
        "--no-system-roots",
        "--ca-file",
        &ca,
        "--resolve",
        &resolve,
    ];

    let each = tlsward(&[&args[..], &["--all-addresses", &target]].concat(), None).await;
    assert_eq!(each.code, 2, "{}", each.stderr);
    let v: Value = serde_json::from_str(&each.stdout).unwrap();
    let reports = v.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["address"], a.addr.to_string());
    assert_eq!(reports[0]["status"], "ok");
    assert_eq!(reports[1]["address"], b.addr.to_string());
    assert_eq!(reports[1]["status"], "critical");
    assert_eq!(reports[1]["reason"], "cert_expiring");
    assert_ne!(reports[0]["leaf"]["sha256"], reports[1]["leaf"]["sha256"]);

    // Without --all-addresses only the first address is probed, and the stale one hides.
    let first = tlsward(&[&args[..], &[target.as_str()]].concat(), None).await;
    assert_eq!(first.code, 0);
    let v: Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_addresses_resolves_real_names() {
    let root = TestCa::root_at("Local Root", real_now());
    let server = TlsServer::leaf(&root.leaf(&["localhost"]).build())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
    let ca = dir.path().join("root.pem").display().to_string();
    let target = format!("localhost:{}", server.addr.port());
    let run = tlsward(
        &[
            "probe",
            "-o",
            "jsonl",
            "--no-system-roots",
            "--ca-file",
            &ca,
            "--all-addresses",
            &target,
        ],
        None,
    )
    .await;
    let reports: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The system resolver decides how many addresses localhost has; the IPv4 one serves.
    let v4 = reports
        .iter()
        .find(|r| r["address"] == server.addr.to_string())
        .expect("127.0.0.1 probed");
    assert_eq!(v4["status"], "ok");
    assert!(reports.iter().all(|r| r["target"] == target));
}

#[tokio::test]
async fn deploy_list_shows_the_queue_with_windows_and_approve_lets_one_run() {
    use tlsward::secret::Secret;
    use tlsward::store::{CertificateRow, NewVersion};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tlsward.toml");
    // A window that is never open "now" for more than a minute a week, and one with none.
    std::fs::write(
        &cfg,
        "[store]\npath = \"tlsward.db\"\nkey_file = \"store.key\"\n\n\
         [acme]\ndirectory = \"https://127.0.0.1:1/dir\"\n\n\
         [[certificate]]\nname = \"www\"\ndomains = [\"www.tlsward.test\"]\n\n\
         [[target]]\naddress = \"127.0.0.1:8443\"\n[[target]]\naddress = \"127.0.0.1:8444\"\n\n\
         [[endpoint]]\nname = \"lb\"\ncertificate = \"www\"\ntarget = \"127.0.0.1:8443\"\nwindow = \"sunday\"\n\n\
         [[endpoint]]\nname = \"mail\"\ncertificate = \"www\"\ntarget = \"127.0.0.1:8444\"\n\n\
         [window.sunday]\ndays = [\"sun\"]\nstart = \"03:00\"\nduration = \"1m\"\ntz = \"Europe/Berlin\"\n",
    )
    .unwrap();
    let store = open_store(tmp.path());
    let row = CertificateRow {
        name: "www".into(),
        domains: vec!["www.tlsward.test".into()],
        key_type: "ecdsa-p256".into(),
    };
    store.upsert_certificate(&row, 1).unwrap();
    let order = store.begin_order("www", None, 2).unwrap();
    let key = Secret::new(b"not a real key".to_vec());
    let version = NewVersion {
        certificate: "www",
        serial: "01",
        sha256: "0123456789abcdef",
        not_before: 2,
        not_after: 100,
        chain_pem: "PEM",
        key: &key,
        ari_id: None,
    };
    let v = store.complete_order(order, &version, 3).unwrap().id;
    let lb = store.queue_deployment("lb", v, "renewed", None, 4).unwrap();
    let mail = store
        .queue_deployment("mail", v, "renewed", None, 4)
        .unwrap();
    drop(store);

    let config = cfg.to_str().unwrap();
    let list = tlsward(&["deploy", "list", "--config", config], None).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{out}"))
            .to_owned()
    };
    let lb_row = line(&list.stdout, "lb");
    assert!(
        lb_row.contains("01234567") && lb_row.contains("waiting"),
        "{lb_row}"
    );
    assert!(lb_row.contains("sunday"), "{lb_row}");
    // The next opening is a Sunday at 03:00 Berlin time: 01:00 or 02:00 UTC.
    // (or "now (open)" during the one minute a week it is open).
    if !lb_row.ends_with("now (open)") {
        let opens = lb_row.split_whitespace().last().unwrap();
        let at = time::OffsetDateTime::parse(opens, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{opens}: {e}"));
        assert_eq!(at.weekday(), time::Weekday::Sunday, "{lb_row}");
        assert!(matches!(at.hour(), 1 | 2) && at.minute() == 0, "{lb_row}");
    }
    assert!(line(&list.stdout, "mail").ends_with("now (no window)"));

    let approve = tlsward(
        &["deploy", "approve", &lb.to_string(), "--config", config],
        None,
    )
    .await;
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    assert!(
        approve.stdout.contains("approved deployment"),
        "{}",
        approve.stdout
    );
    // Approving twice, or an unknown id, is a clear error.
    let again = tlsward(
        &["deploy", "approve", &lb.to_string(), "--config", config],
        None,
    )
    .await;
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("is approved, not waiting"),
        "{}",
        again.stderr
    );
    let unknown = tlsward(&["deploy", "approve", "999", "--config", config], None).await;
    assert!(
        unknown.stderr.contains("no queued deployment 999"),
        "{}",
        unknown.stderr
    );
    let list = tlsward(&["deploy", "list", "--config", config], None).await;
    assert!(
        line(&list.stdout, "lb").ends_with("now (approved)"),
        "{}",
        list.stdout
    );
    assert!(line(&list.stdout, "mail").contains(&mail.to_string()));
}
