//! The real thing: Debian's Prometheus scrapes a running `tlsward serve` that probes local
//! endpoints (good, expired, wrong host), loads alerts/ as rule files, and is asked through
//! its HTTP API whether the metrics arrived, which alerts fire, and whether every query in
//! dashboards/ parses and returns data. `promtool check metrics` lints the scraped output.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::serve::{Endpoints, eventually};
use crate::util::http::get;

/// A child process killed by pid on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::util::unique_port()))
}

/// An instant query; returns the result vector.
async fn query(prom: SocketAddr, expr: &str) -> Vec<Value> {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", expr)
        .finish();
    // Prometheus may answer 503 for a moment while it is busy (seen right after start-up);
    // only a lasting failure, or a query it rejects, fails the test.
    let mut r = get(prom, &format!("/api/v1/query?{q}")).await;
    for _ in 0..50 {
        if r.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = get(prom, &format!("/api/v1/query?{q}")).await;
    }
    let v: Value =
        serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{expr}: {} {}", r.status, r.body));
    assert_eq!(v["status"], "success", "{expr}: {}", r.body);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Firing alerts as (alertname, target) pairs.
async fn firing(prom: SocketAddr) -> Vec<(String, String)> {
    let r = get(prom, "/api/v1/alerts").await;
    // A momentary 503 reads as "nothing yet"; the callers poll.
    let Ok(v) = serde_json::from_str::<Value>(&r.body) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = v["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["labels"]["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every `expr` in a Grafana dashboard, with its panel title.
fn dashboard_queries(file: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_alerts_fire_and_dashboards_query() {
    let e = Endpoints::start().await;
    let config = e.write(&e.config(""));
    let tw_addr = free_addr();
    let _tlsward = Proc(
        Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &tw_addr.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The shipped rules, with every `for:` shortened so alerts fire within the test.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("alerts/tlsward.rules.yml")).unwrap();
    let fast: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                format!("{}for: 0s", &l[..l.len() - l.trim_start().len()])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = e.dir.path();
    std::fs::write(dir.join("rules.yml"), fast).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: tlsward\n    static_configs:\n      - targets: ['{tw_addr}']\n"
        ),
    )
    .unwrap();
    let prom_addr = free_addr();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed"),
    );

    // The metrics arrive: three targets with their success.
    eventually(60, "tlsward_probe_success in Prometheus", || async move {
        tokio::net::TcpStream::connect(prom_addr).await.is_ok()
            && query(prom_addr, "tlsward_probe_success").await.len() == 3
    })
    .await;
    let good = format!("good.test:{}", e.good.addr.port());
    let expired = format!("expired.test:{}", e.expired.addr.port());
    let wrong = format!("wrong.test:{}", e.wrong.addr.port());
    let ok = query(
        prom_addr,
        &format!("tlsward_probe_success{{target=\"{good}\"}}"),
    )
    .await;
    assert_eq!(ok[0]["value"][1], "1");
    assert_eq!(
        query(prom_addr, "up{job=\"tlsward\"}").await[0]["value"][1],
        "1"
    );

    // The expected alerts fire for the bad endpoints, none for the good one.
    let expected: Vec<(String, String)> = {
        let mut v: Vec<(String, String)> = [
            ("TlsCertificateExpired", &expired),
            ("TlsChainInvalid", &expired),
            ("TlsProbeFailing", &expired),
            ("TlsHostnameMismatch", &wrong),
            ("TlsProbeFailing", &wrong),
        ]
        .iter()
        .map(|(a, t)| ((*a).to_owned(), (*t).clone()))
        .collect();
        v.sort();
        v
    };
    let exp = expected.clone();
    eventually(30, "the expected alerts to fire", || {
        let exp = exp.clone();
        async move { firing(prom_addr).await == exp }
    })
    .await;
    assert!(
        firing(prom_addr).await.iter().all(|(_, t)| *t != good),
        "no alert for the good endpoint"
    );

    // Every dashboard query parses and returns data (the endpoint dashboard for the expired
    // target, which has every kind of series; the overview for all targets). Rates need a
    // few scrapes first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut checked = 0;
    for (file, target) in [
        ("dashboards/overview.json", ".*".to_owned()),
        ("dashboards/endpoint.json", expired.clone()),
    ] {
        for (title, expr) in dashboard_queries(&root.join(file)) {
            let expr = expr
                .replace("$target", &target)
                .replace("$__rate_interval", "30s");
            let result = query(prom_addr, &expr).await;
            assert!(
                !result.is_empty(),
                "{file}: panel {title:?}: no data for {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} queries checked");

    // promtool's linter accepts the scraped exposition.
    let metrics = get(tw_addr, "/metrics").await.body;
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics:\n{text}"
    );
}
