//! The shipped alert rules and Alertmanager example, checked by the real tools from Debian:
//! `promtool check rules`, `promtool test rules` (firing and not firing cases, two instances,
//! /probe series, other jobs), `amtool check-config`, and a running Alertmanager that is sent
//! the alerts one broken certificate raises and says which of them its inhibitions silence.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::wait::{EVERY, within_blocking};

/// The job matcher every selector in the rules carries.
const JOBS: &str = r#"job=~"tlsward|tlsward-.+""#;

fn alerts_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts")
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(alerts_dir())
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian packages prometheus, prometheus-alertmanager) must be installed: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_are_valid() {
    let out = run("promtool", &["check", "rules", "tlsward.rules.yml"]);
    assert!(out.contains("SUCCESS: 20 rules found"), "{out}");
}

#[test]
fn rule_unit_tests_pass() {
    let out = run("promtool", &["test", "rules", "tests/tlsward.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `TlsAgentDown` and `TlsAgentIdentityExpiring` fire for the agent that is down or whose
/// identity runs out, and stay quiet for the others, before their `for`, and for other jobs.
#[test]
fn agent_alerts_fire_and_stay_quiet_under_promtool() {
    let out = run("promtool", &["check", "rules", "agents.rules.yml"]);
    assert!(out.contains("SUCCESS: 2 rules found"), "{out}");
    let out = run("promtool", &["test", "rules", "tests/agents.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `TlsRolloutHalted` fires at once for a halted rollout, and stays quiet for running or
/// complete ones, after a resume, and for other jobs.
#[test]
fn the_rollout_halt_alert_fires_and_stays_quiet_under_promtool() {
    let out = run("promtool", &["check", "rules", "rollout.rules.yml"]);
    assert!(out.contains("SUCCESS: 1 rules found"), "{out}");
    let out = run("promtool", &["test", "rules", "tests/rollout.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alertmanager_example_is_valid() {
    let out = run("amtool", &["check-config", "alertmanager.example.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every `expr:` of a rules file, block scalars joined into one string.
fn rule_exprs(text: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if rest.trim() != "|" {
            out.push(rest.trim().to_owned());
            continue;
        }
        let mut expr = String::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line)) {
            expr.push_str(lines[i].trim());
            expr.push('\n');
            i += 1;
        }
        out.push(expr);
    }
    out
}

/// Each metric selector of a PromQL expression (a `tlsward_*` or `up` name outside strings and
/// braces) with what follows it in braces, or `None` when it has no braces.
fn selectors(expr: &str) -> Vec<(String, Option<String>)> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if ident(c) && (i == 0 || !ident(b[i - 1])) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let name = &expr[start..i];
                if name.starts_with("tlsward_") || name == "up" {
                    let braces = (b.get(i) == Some(&b'{')).then(|| {
                        let end = expr[i..].find('}').map_or(expr.len(), |e| i + e + 1);
                        let inner = expr[i + 1..end - 1].to_owned();
                        i = end;
                        inner
                    });
                    out.push((name.to_owned(), braces));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Every series a rule reads is one of tlsward's jobs', so other exporters' series with the
/// same names (and other jobs' `up`) never raise tlsward's alerts.
#[test]
fn every_rule_selector_is_scoped_to_the_tlsward_jobs() {
    let text = std::fs::read_to_string(alerts_dir().join("tlsward.rules.yml")).unwrap();
    let exprs = rule_exprs(&text);
    assert_eq!(exprs.len(), 20, "{exprs:#?}");
    let mut seen = 0;
    for expr in &exprs {
        let sel = selectors(expr);
        assert!(!sel.is_empty(), "no selector found in {expr}");
        for (name, braces) in sel {
            assert!(
                braces.as_deref().is_some_and(|b| b.contains(JOBS)),
                "{name} in {expr:?} is not scoped with {JOBS}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 40, "{seen} selectors checked");
    // The checker itself finds an unscoped selector.
    assert_eq!(
        selectors(r#"a_b(tlsward_x{job=~"tlsward_y"}[5m]) / tlsward_z and up"#),
        vec![
            (
                "tlsward_x".to_owned(),
                Some(r#"job=~"tlsward_y""#.to_owned())
            ),
            ("tlsward_z".to_owned(), None),
            ("up".to_owned(), None),
        ]
    );
}

/// A child process killed by pid on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 exchange (so the answer is never chunked): status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The alerts the rules raise in one bad moment, each `inhibited` or `active` as the example's
/// inhibitions must leave it. Labels are the ones the rules produce: the scrape's `job` and
/// `instance` (`a` and `b` stand for an HA pair's two instances, `probe:HOST` for a /probe
/// scrape of HOST), the series' labels and the rule's `severity`.
const INHIBITION_CASES: &[&str] = &[
    // x.test expired, as instance a sees it: one page, for the expiry.
    "active a alertname=TlsCertificateExpired severity=critical target=x.test:443 profile=https",
    "inhibited a alertname=TlsChainInvalid severity=critical target=x.test:443 profile=https check=chain",
    "inhibited a alertname=TlsProbeFailing severity=critical target=x.test:443 profile=https reason=cert_expired",
    // Instance b cannot reach x.test at all: its own page, not covered by a's expiry.
    "active b alertname=TlsProbeFailing severity=critical target=x.test:443 profile=https reason=connect_timeout",
    // y.test serves another name: the mismatch pages; its failure and its warning are silenced.
    "active a alertname=TlsHostnameMismatch severity=critical target=y.test:443 profile=https check=hostname",
    "inhibited a alertname=TlsProbeFailing severity=critical target=y.test:443 profile=https reason=hostname_mismatch",
    "inhibited a alertname=TlsCertificateExpiringSoon severity=warning target=y.test:443 profile=https",
    // v.test expires within the critical threshold: the expiry pages, not the failure.
    "active a alertname=TlsCertificateExpiringCritical severity=critical target=v.test:443 profile=https",
    "inhibited a alertname=TlsProbeFailing severity=critical target=v.test:443 profile=https reason=cert_expiring",
    // A failure no specific rule covers (it silences the target's staleness warning), and a
    // lone warning.
    "active a alertname=TlsProbeFailing severity=critical target=z.test:443 profile=https reason=connect_refused",
    "inhibited a alertname=TlsTargetNotProbedRecently severity=warning target=z.test:443 profile=https",
    "active a alertname=TlsCertificateLifetimeLow severity=warning target=w.test:443 profile=https",
    // A target probed at every address: each address on its own.
    "active a alertname=TlsHostnameMismatch severity=critical target=dual.test:443 profile=https address=2001:db8::1 check=hostname",
    "inhibited a alertname=TlsProbeFailing severity=critical target=dual.test:443 profile=https address=2001:db8::1 reason=hostname_mismatch",
    "active a alertname=TlsProbeFailing severity=critical target=dual.test:443 profile=https address=192.0.2.1 reason=handshake_timeout",
    // /probe alerts (no target, profile or address): the instance names the target, and one
    // target's expiry silences neither another target's failure nor its warning.
    "active probe:p1.test:443 alertname=TlsCertificateExpired severity=critical",
    "inhibited probe:p1.test:443 alertname=TlsProbeFailing severity=critical reason=cert_expired",
    "inhibited probe:p1.test:443 alertname=TlsWeakKeyOrSignature severity=warning check=key_strength",
    "active probe:p2.test:443 alertname=TlsProbeFailing severity=critical reason=connect_refused",
    "active probe:p3.test:443 alertname=TlsCertificateExpiringSoon severity=warning",
    // Critical alerts without a target silence no warning without one.
    "active a alertname=TlswardDown severity=critical",
    "active a alertname=TlswardReloadFailed severity=warning",
    "active a alertname=TlsManagedCertificateExpiring severity=critical certificate=api",
    "active a alertname=TlsAcmeOrdersFailing severity=warning result=failed reason=rate_limited",
    "active a alertname=TlsHookSandboxViolation severity=warning hook=nginx result=failed reason=access_denied",
    // Deployments: a failed rollback covers its endpoint, a failed deployment its drift.
    "active a alertname=TlsDeploymentRollbackFailed severity=critical endpoint=lb1:443 result=failed",
    "inhibited a alertname=TlsDeploymentFailed severity=warning endpoint=lb1:443 certificate=www",
    "active a alertname=TlsEndpointDrift severity=warning endpoint=lb2:443 certificate=www",
    "active a alertname=TlsDeploymentFailed severity=warning endpoint=lb3:443 certificate=www",
    "inhibited a alertname=TlsEndpointDrift severity=warning endpoint=lb3:443 certificate=www",
];

/// The label set of one [`INHIBITION_CASES`] line, and whether it must be inhibited.
fn case_labels(line: &str) -> (BTreeMap<String, String>, bool) {
    let mut words = line.split_whitespace();
    let inhibited = match words.next().unwrap() {
        "inhibited" => true,
        "active" => false,
        other => panic!("{other:?}: inhibited or active"),
    };
    let (job, instance) = match words.next().unwrap() {
        "a" => ("tlsward", "a:9219"),
        "b" => ("tlsward", "b:9219"),
        other => ("tlsward-probe", other.strip_prefix("probe:").unwrap()),
    };
    let mut l = BTreeMap::from([
        ("job".to_owned(), job.to_owned()),
        ("instance".to_owned(), instance.to_owned()),
    ]);
    for w in words {
        let (k, v) = w.split_once('=').unwrap();
        l.insert(k.to_owned(), v.to_owned());
    }
    (l, inhibited)
}

/// The example's inhibitions, in a running Alertmanager: sent the alerts above, it must mark
/// exactly the expected ones as inhibited.
#[test]
fn alertmanager_example_inhibits_only_the_covered_alerts() {
    let dir = tempfile::tempdir().unwrap();
    // The receivers point at a listener this test holds (it never answers; nothing is sent
    // before group_wait anyway).
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let example = std::fs::read_to_string(alerts_dir().join("alertmanager.example.yml")).unwrap();
    assert!(example.contains("http://127.0.0.1:9095/"));
    let config = example.replace(
        "http://127.0.0.1:9095/",
        &format!("http://{}/", sink.local_addr().unwrap()),
    );
    std::fs::write(dir.path().join("am.yml"), config).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], crate::util::unique_port()));
    let _am = Proc(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package prometheus-alertmanager) must be installed"),
    );
    let ready = within_blocking(Duration::from_secs(60), EVERY, || {
        http(addr, "GET", "/-/ready", "").filter(|(s, _)| *s == 200)
    });
    assert!(ready.is_some(), "Alertmanager did not become ready");

    let expected: BTreeMap<_, _> = INHIBITION_CASES
        .iter()
        .map(|line| case_labels(line))
        .collect();
    assert_eq!(expected.len(), INHIBITION_CASES.len(), "a case is repeated");
    let body: Vec<Value> = expected.keys().map(|l| json!({ "labels": l })).collect();
    let (status, answer) = http(
        addr,
        "POST",
        "/api/v2/alerts",
        &Value::from(body).to_string(),
    )
    .expect("POST /api/v2/alerts");
    assert_eq!(status, 200, "{answer}");

    let state = || -> BTreeMap<BTreeMap<String, String>, bool> {
        let Some((200, body)) = http(addr, "GET", "/api/v2/alerts", "") else {
            return BTreeMap::new();
        };
        let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        alerts
            .iter()
            .map(|a| {
                let l = serde_json::from_value(a["labels"].clone()).unwrap();
                let inhibited = a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|by| !by.is_empty());
                (l, inhibited)
            })
            .collect()
    };
    // Inhibitions only ever add up as the sources are seen: wait for the expected state, then
    // make sure it holds.
    within_blocking(Duration::from_secs(30), EVERY, || {
        (state() == expected).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = state();
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(l, inhibited)| got.get(*l) != Some(inhibited))
        .map(|(l, inhibited)| {
            format!(
                "{l:?}: expected {}, got {:?}",
                if *inhibited { "inhibited" } else { "active" },
                got.get(l)
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(got.len(), expected.len(), "{got:#?}");
}
