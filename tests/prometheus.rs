//! The real thing: Debian's Prometheus scrapes a running `tlsward serve` that probes local
//! endpoints (good, expired, wrong host), loads alerts/ as rule files, and is asked through
//! its HTTP API whether the metrics arrived, whether every rule evaluates, which alerts fire,
//! and whether every query in dashboards/ parses and returns data. tlsward is scraped as an
//! HA pair would be (two instances of job `tlsward`, here the same daemon under two instance
//! labels) and through `/probe` in the blackbox_exporter style (job `tlsward-probe`, the
//! target as instance). `promtool check metrics` lints the scraped output.

use std::collections::BTreeMap;
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

/// One firing alert: alertname, job, instance and target (empty for /probe series).
type Firing = (String, String, String, String);

/// Firing alerts, sorted.
async fn firing(prom: SocketAddr) -> Vec<Firing> {
    let r = get(prom, "/api/v1/alerts").await;
    // A momentary 503 reads as "nothing yet"; the callers poll.
    let Ok(v) = serde_json::from_str::<Value>(&r.body) else {
        return Vec::new();
    };
    let label = |a: &Value, name: &str| a["labels"][name].as_str().unwrap_or("").to_owned();
    let mut out: Vec<Firing> = v["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (
                label(a, "alertname"),
                label(a, "job"),
                label(a, "instance"),
                label(a, "target"),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every rule's health, last error and last evaluation time, by name.
type RuleState = BTreeMap<String, (String, String, String)>;

async fn rule_state(prom: SocketAddr) -> RuleState {
    let r = get(prom, "/api/v1/rules").await;
    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
    let mut out = RuleState::new();
    for group in v["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let s = |k: &str| rule[k].as_str().unwrap_or("").to_owned();
            out.insert(
                s("name"),
                (s("health"), s("lastError"), s("lastEvaluation")),
            );
        }
    }
    out
}

/// The rules' state once every rule has been evaluated again since `before`.
async fn next_evaluation(prom: SocketAddr, before: &RuleState) -> RuleState {
    for _ in 0..300 {
        let now = rule_state(prom).await;
        if !now.is_empty()
            && now
                .iter()
                .all(|(name, (_, _, at))| before.get(name).is_none_or(|b| b.2 != *at))
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the rules were not evaluated again within 30 s");
}

/// A dashboard's `label_values(SELECTOR, LABEL)` template variables, as (name, selector,
/// label).
fn dashboard_variables(file: &Path) -> Vec<(String, String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for var in d["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let def = var["definition"].as_str().unwrap();
        let args = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{file:?}: {def}: not label_values(SELECTOR, LABEL)"));
        let (selector, label) = args.rsplit_once(',').unwrap();
        out.push((
            var["name"].as_str().unwrap().to_owned(),
            selector.trim().to_owned(),
            label.trim().to_owned(),
        ));
    }
    out
}

/// Every `expr` in a Grafana dashboard, with its panel title and legend.
fn dashboard_queries(file: &Path) -> Vec<(String, String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                t["legendFormat"].as_str().unwrap_or("").to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// Fills in a dashboard's template variables as Grafana would for the given values.
fn substitute(expr: &str, target: &str) -> String {
    let out = expr
        .replace("$job", "tlsward")
        .replace("$instance", "a|b")
        .replace("$target", target)
        .replace("$__rate_interval", "30s");
    assert!(
        !out.contains('$'),
        "a template variable the test does not fill in: {expr}"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_alerts_fire_and_dashboards_query() {
    let e = Endpoints::start().await;
    // /probe is scraped for arbitrary addresses: the blackbox pattern must be allowed.
    let config = e.write(&e.config("[server]\nprobe_targets = \"any\"\n"));
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

    // /probe targets by address (no name to resolve): the expired and wrong-name servers, and
    // a port bound but not listening, which refuses connections.
    let refused = tokio::net::TcpSocket::new_v4().unwrap();
    refused.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let probed = [
        e.expired.addr.to_string(),
        e.wrong.addr.to_string(),
        refused.local_addr().unwrap().to_string(),
    ];
    // job tlsward twice, as an HA pair's two instances (a and b) would be; job tlsward-probe
    // as blackbox_exporter's documented pattern, with the target as instance.
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n\
             scrape_configs:\n\
             \x20 - job_name: tlsward\n\
             \x20   static_configs:\n\
             \x20     - {{targets: ['{tw_addr}'], labels: {{instance: a}}}}\n\
             \x20     - {{targets: ['{tw_addr}'], labels: {{instance: b}}}}\n\
             \x20 - job_name: tlsward-probe\n\
             \x20   metrics_path: /probe\n\
             \x20   params: {{profile: [test]}}\n\
             \x20   static_configs:\n\
             \x20     - targets: ['{}', '{}', '{}']\n\
             \x20   relabel_configs:\n\
             \x20     - {{source_labels: [__address__], target_label: __param_target}}\n\
             \x20     - {{source_labels: [__param_target], target_label: instance}}\n\
             \x20     - {{target_label: __address__, replacement: '{tw_addr}'}}\n",
            probed[0], probed[1], probed[2],
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

    // The metrics arrive: three targets with their success on each of a and b, and the three
    // /probe answers.
    eventually(60, "tlsward_probe_success in Prometheus", || async move {
        tokio::net::TcpStream::connect(prom_addr).await.is_ok()
            && query(prom_addr, "tlsward_probe_success").await.len() == 9
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
    assert_eq!(ok.len(), 2);
    assert!(ok.iter().all(|s| s["value"][1] == "1"), "{ok:?}");
    let up = query(prom_addr, "up == 1").await;
    assert_eq!(up.len(), 5, "every scrape succeeds: {up:?}");

    // Every rule evaluates on these series: a join Prometheus refuses (many-to-many) shows
    // here as an error. Two more rounds of evaluation, as the first may have begun before the
    // last series arrived.
    let mut rules = rule_state(prom_addr).await;
    for _ in 0..2 {
        rules = next_evaluation(prom_addr, &rules).await;
    }
    assert_eq!(rules.len(), 20, "{rules:#?}");
    let broken: Vec<_> = rules.iter().filter(|(_, (h, _, _))| h != "ok").collect();
    assert!(
        broken.is_empty(),
        "rules that fail to evaluate: {broken:#?}"
    );

    // The expected alerts fire for the bad endpoints, on both instances and through /probe,
    // and none for the good one.
    let expected: Vec<Firing> = {
        let mut v: Vec<Firing> = Vec::new();
        let mut add = |alert: &str, job: &str, instance: &str, target: &str| {
            v.push((alert.into(), job.into(), instance.into(), target.into()));
        };
        for instance in ["a", "b"] {
            add("TlsCertificateExpired", "tlsward", instance, &expired);
            add("TlsChainInvalid", "tlsward", instance, &expired);
            add("TlsProbeFailing", "tlsward", instance, &expired);
            add("TlsHostnameMismatch", "tlsward", instance, &wrong);
            add("TlsProbeFailing", "tlsward", instance, &wrong);
        }
        // By address, no certificate covers the name asked for.
        add("TlsCertificateExpired", "tlsward-probe", &probed[0], "");
        add("TlsChainInvalid", "tlsward-probe", &probed[0], "");
        add("TlsHostnameMismatch", "tlsward-probe", &probed[0], "");
        add("TlsProbeFailing", "tlsward-probe", &probed[0], "");
        add("TlsHostnameMismatch", "tlsward-probe", &probed[1], "");
        add("TlsProbeFailing", "tlsward-probe", &probed[1], "");
        add("TlsProbeFailing", "tlsward-probe", &probed[2], "");
        v.sort();
        v
    };
    // Alerts fire over a few evaluations; a lasting difference fails with both lists.
    let mut fired = firing(prom_addr).await;
    for _ in 0..300 {
        if fired == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fired = firing(prom_addr).await;
    }
    assert_eq!(fired, expected, "firing alerts");
    assert!(
        firing(prom_addr).await.iter().all(|f| f.3 != good),
        "no alert for the good endpoint"
    );
    let reasons: Vec<String> = query(
        prom_addr,
        "ALERTS{alertname=\"TlsProbeFailing\",job=\"tlsward-probe\"}",
    )
    .await
    .iter()
    .map(|s| s["metric"]["reason"].as_str().unwrap_or("").to_owned())
    .collect();
    assert!(
        reasons.contains(&"connect_refused".to_owned()),
        "{reasons:?}"
    );

    // Every dashboard query parses and returns data (the endpoint dashboard for the expired
    // target, which has every kind of series; the overview for all targets), with the job
    // and both instances selected. Rates need a few scrapes first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut checked = 0;
    let mut status = Vec::new();
    for (file, target) in [
        ("dashboards/overview.json", ".*".to_owned()),
        ("dashboards/endpoint.json", expired.clone()),
    ] {
        for (title, legend, expr) in dashboard_queries(&root.join(file)) {
            assert!(
                expr.contains("job=~\"$job\"") && expr.contains("instance=~\"$instance\""),
                "{file}: panel {title:?} does not filter by job and instance: {expr}"
            );
            let expr = substitute(&expr, &target);
            let result = query(prom_addr, &expr).await;
            assert!(
                !result.is_empty(),
                "{file}: panel {title:?}: no data for {expr}"
            );
            if title == "Endpoints by status" || title.starts_with("Endpoints ") {
                status.push((
                    format!("{title} {legend}").trim().to_owned(),
                    result[0]["value"][1].as_str().unwrap().to_owned(),
                ));
            }
            checked += 1;
        }
        // The template variables offer what the queries need; the job variable only the
        // daemon's jobs (/probe series have no targets to pick).
        for (name, selector, label) in dashboard_variables(&root.join(file)) {
            let result = query(prom_addr, &substitute(&selector, &target)).await;
            let mut values: Vec<&str> = result
                .iter()
                .filter_map(|s| s["metric"][label.as_str()].as_str())
                .collect();
            values.sort_unstable();
            values.dedup();
            let want: &[&str] = match name.as_str() {
                "job" => &["tlsward"],
                "instance" => &["a", "b"],
                _ => &[],
            };
            assert!(
                !values.is_empty() && (want.is_empty() || values == want),
                "{file}: variable {name}: {values:?}"
            );
        }
    }
    assert!(checked >= 20, "{checked} queries checked");
    // Each target counted once, though both instances probe it: good is ok; expired and
    // wrong are critical.
    status.sort();
    assert_eq!(
        status,
        [
            ("Endpoints OK", "1"),
            ("Endpoints by status critical", "2"),
            ("Endpoints by status ok", "1"),
            ("Endpoints by status warning", "0"),
            ("Endpoints failing", "2"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

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
