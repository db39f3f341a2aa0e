//! The real thing: Debian's Prometheus scrapes a running `tlsward serve` that probes local
//! endpoints (good, expired, wrong host) and, with `[acme]`, has issued a certificate from
//! Pebble and deployed it with the stock `pem-files` hook (one endpoint verified on nginx,
//! one rolled back, one waiting for its window), loads alerts/ as rule files, and is asked
//! through its HTTP API whether the metrics arrived, whether every rule evaluates, which
//! alerts fire, and whether every query in dashboards/ parses and returns data. tlsward is scraped as an
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

use crate::util::daemon::Endpoints;
use crate::util::exposition::{Format, parse_or_panic};
use crate::util::http::get;
use crate::util::pebble::Pebble;
use crate::util::servers::NginxHttps;
use crate::util::wait::eventually;
use crate::util::{TestCa, TlsServer, real_now};

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

/// One firing alert: alertname, job, instance, target (empty for /probe series) and
/// endpoint (for the automation's alerts).
type Firing = (String, String, String, String, String);

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
                label(a, "endpoint"),
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

/// Every `expr` in a Grafana dashboard, with its panel title and legend (rows, which only
/// group panels, have none).
fn dashboard_queries(file: &Path) -> Vec<(String, String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
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
        .replace("$__rate_interval", "30s")
        .replace("$__range", "1h");
    assert!(
        !out.contains('$'),
        "a template variable the test does not fill in: {expr}"
    );
    out
}

/// The automation's side: Pebble, and three endpoints of one managed certificate that first
/// serve a certificate from an "Old CA" (trusted, valid, foreign): `web` on nginx, deployed
/// and reloaded by `pem-files` (verified); `web2`, whose hook writes files no server reads
/// (verification fails, the files are rolled back); `web3`, waiting for a window that is
/// closed.
struct Automation {
    pebble: Pebble,
    http01_port: u16,
    nginx: NginxHttps,
    web2: TlsServer,
    web3: TlsServer,
    /// Where `web2`'s and `web3`'s hook writes.
    files: tempfile::TempDir,
}

impl Automation {
    /// Starts it all, with the CA files the config names written into `dir`.
    async fn start(dir: &Path) -> Self {
        let http01_port = crate::util::unique_port();
        let pebble = Pebble::start(http01_port, 30 * 86_400).await;
        let root = crate::util::pem(&pebble.issuing_root().await);
        std::fs::write(dir.join("acme-root.pem"), root).unwrap();
        let old_ca = TestCa::root_at("Old CA", real_now());
        std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
        let old = old_ca
            .leaf(&["site.tlsward.test"])
            .valid(-10.0, 80.0)
            .build();
        let files = tempfile::tempdir().unwrap();
        let (cert, key) = old.write_pem(files.path(), "old");
        let nginx = NginxHttps::start(1, &cert, &key).await;
        for name in ["web2", "web3"] {
            std::fs::copy(&cert, files.path().join(format!("{name}.crt"))).unwrap();
            std::fs::copy(&key, files.path().join(format!("{name}.key"))).unwrap();
        }
        Self {
            pebble,
            http01_port,
            nginx,
            web2: TlsServer::leaf(&old).start().await,
            web3: TlsServer::leaf(&old).start().await,
            files,
        }
    }

    fn target(&self, endpoint: &str) -> String {
        let port = match endpoint {
            "web" => self.nginx.addrs[0].port(),
            "web2" => self.web2.addr.port(),
            _ => self.web3.addr.port(),
        };
        format!("site.tlsward.test:{port}")
    }

    /// `[server]` (with `/probe` open to any address, for the blackbox-style job), the store,
    /// `[acme]`, the certificate, hooks, endpoints and their targets.
    fn config(&self) -> String {
        let reload = self.nginx.reload_argv();
        let files = self.files.path().display();
        // A daily one-hour window that opens two hours from now (UTC): closed now.
        let opens = (real_now().hour() + 2) % 24;
        let mut out = format!(
            r#"
[server]
probe_targets = "any"
state_dir = "{state_dir}"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[deploy]
verify_timeout = "5s"
verify_interval = "500ms"

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]

# One batch of every endpoint, web2's failure inside the budget: deployments run as without
# a policy, and the rollout's series are there for the dashboard.
[certificate.rollout]
batch = "100%"
failure_budget = 3

[profile.site]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false

[window.nightly]
days = ["daily"]
start = "{opens:02}:00"
duration = "1h"

[hook.nginx]
component = "{pem_files}"
write_paths = ["{certs}"]
commands = [{reload:?}]
timeout = "60s"

[hook.nginx.settings]
reload = "{reload_str}"

[hook.unread]
component = "{pem_files}"
write_paths = ["{files}"]
commands = [["/bin/true"]]
timeout = "60s"

[hook.unread.settings]
reload = "/bin/true"

[[endpoint]]
name = "web"
certificate = "site"
target = "{web}"
hook = "nginx"
settings = {{ fullchain_path = "{certs}/0.crt", key_path = "{certs}/0.key" }}

[[endpoint]]
name = "web2"
certificate = "site"
target = "{web2}"
hook = "unread"
settings = {{ fullchain_path = "{files}/web2.crt", key_path = "{files}/web2.key" }}

[[endpoint]]
name = "web3"
certificate = "site"
target = "{web3}"
window = "nightly"
hook = "unread"
settings = {{ fullchain_path = "{files}/web3.crt", key_path = "{files}/web3.key" }}
"#,
            // Shared with tests/deploy.rs: the compiled hooks are cached there.
            state_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("deploy-daemon-state")
                .display(),
            directory = self.pebble.directory,
            ca = self.pebble.tls_ca_file.display(),
            http01_port = self.http01_port,
            pem_files = crate::util::hooks::component("pem-files").display(),
            certs = self.nginx.certs.display(),
            reload_str = reload.join(" "),
            web = self.target("web"),
            web2 = self.target("web2"),
            web3 = self.target("web3"),
        );
        for endpoint in ["web", "web2", "web3"] {
            out.push_str(&format!(
                "\n[[target]]\naddress = \"{}\"\nprofile = \"site\"\ninterval = \"1s\"\nconnect_to = [\"127.0.0.1\"]\n",
                self.target(endpoint)
            ));
        }
        out
    }
}

/// The value of the series `name` with exactly these `labels` in tlsward's exposition.
fn series(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_or_panic(Format::Text, body)
        .named(name)
        .into_iter()
        .find(|s| {
            s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == Some(v))
        })
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_alerts_fire_and_dashboards_query() {
    let e = Endpoints::start().await;
    let automation = Automation::start(e.dir.path()).await;
    // The agent API too, with one agent enrolled below: the dashboard's agents row.
    let agents_addr = free_addr();
    let config = e.write(&e.config(&format!(
        "{}\n[agents]\nlisten = \"{agents_addr}\"\n",
        automation.config()
    )));
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

    // Issued and deployed: web verified (and in sync once probed), web2 rolled back, web3
    // waiting for its window. The first run compiles the hook, which takes a while.
    eventually(
        600,
        "the deployments to web, web2 and web3",
        || async move {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::net::TcpStream::connect(tw_addr).await?;
                Ok::<_, std::io::Error>(get(tw_addr, "/metrics").await.body)
            })
            .await
            else {
                return false;
            };
            let deployed = |endpoint, result| {
                series(
                    &m,
                    "tlsward_deployments_total",
                    &[("endpoint", endpoint), ("result", result)],
                ) == Some(1.0)
            };
            deployed("web", "verified")
                && deployed("web2", "rolled_back")
                && series(
                    &m,
                    "tlsward_deployments_pending",
                    &[("endpoint", "web3"), ("state", "waiting")],
                ) == Some(1.0)
                && series(
                    &m,
                    "tlsward_endpoint_drift",
                    &[("endpoint", "web"), ("certificate", "site")],
                ) == Some(0.0)
        },
    )
    .await;

    // One agent, enrolled by the real CLI (it need not run: enrollment records when it was
    // seen, its identity's expiry and its version).
    // Blocking calls: the test's runtime has other threads, and serve is its own process.
    let created = Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["agent", "token", "create", "web-01", "-o", "json", "-c"])
        .arg(&config)
        .env_remove("TLSWARD_LOG")
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "agent token create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let agent_state = dir.join("agent-state");
    let enrolled = Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["agent", "enroll", "--server"])
        .arg(format!("https://{agents_addr}"))
        .arg(format!("--token={}", created["token"].as_str().unwrap()))
        .args(["--ca-sha256", created["ca_sha256"].as_str().unwrap()])
        .arg("--state-dir")
        .arg(&agent_state)
        .env_remove("TLSWARD_LOG")
        .output()
        .unwrap();
    assert!(
        enrolled.status.success(),
        "agent enroll: {}",
        String::from_utf8_lossy(&enrolled.stderr)
    );

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
            && query(prom_addr, "tlsward_probe_success").await.len() == 15
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
        let mut deployed: Vec<Firing> = Vec::new();
        let mut add = |alert: &str, job: &str, instance: &str, target: &str| {
            v.push((
                alert.into(),
                job.into(),
                instance.into(),
                target.into(),
                String::new(),
            ));
        };
        for instance in ["a", "b"] {
            add("TlsCertificateExpired", "tlsward", instance, &expired);
            add("TlsChainInvalid", "tlsward", instance, &expired);
            add("TlsProbeFailing", "tlsward", instance, &expired);
            add("TlsHostnameMismatch", "tlsward", instance, &wrong);
            add("TlsProbeFailing", "tlsward", instance, &wrong);
            // The automation's: web2 (rolled back) and web3 (waiting) serve the old
            // certificate; web2's deployment failed.
            for (alert, endpoint) in [
                ("TlsEndpointDrift", "web2"),
                ("TlsEndpointDrift", "web3"),
                ("TlsDeploymentFailed", "web2"),
            ] {
                deployed.push((
                    alert.to_owned(),
                    "tlsward".to_owned(),
                    instance.to_owned(),
                    String::new(),
                    endpoint.to_owned(),
                ));
            }
        }
        // By address, no certificate covers the name asked for.
        add("TlsCertificateExpired", "tlsward-probe", &probed[0], "");
        add("TlsChainInvalid", "tlsward-probe", &probed[0], "");
        add("TlsHostnameMismatch", "tlsward-probe", &probed[0], "");
        add("TlsProbeFailing", "tlsward-probe", &probed[0], "");
        add("TlsHostnameMismatch", "tlsward-probe", &probed[1], "");
        add("TlsProbeFailing", "tlsward-probe", &probed[1], "");
        add("TlsProbeFailing", "tlsward-probe", &probed[2], "");
        v.extend(deployed);
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
    let mut automation_status = Vec::new();
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
            if title == "Deployments pending by state" {
                for s in &result {
                    automation_status.push((
                        format!("{title} {}", s["metric"]["state"].as_str().unwrap()),
                        s["value"][1].as_str().unwrap().to_owned(),
                    ));
                }
            }
            if title == "Failed deployments" || title == "Drifting endpoints" {
                automation_status.push((
                    title.clone(),
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
    assert!(checked >= 32, "{checked} queries checked");
    // Each target counted once, though both instances probe it: good, web, web2 and web3
    // are ok; expired and wrong are critical.
    status.sort();
    assert_eq!(
        status,
        [
            ("Endpoints OK", "4"),
            ("Endpoints by status critical", "2"),
            ("Endpoints by status ok", "4"),
            ("Endpoints by status warning", "0"),
            ("Endpoints failing", "2"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Each endpoint counted once too: web3 waits; web2 failed; web2 and web3 drift.
    automation_status.sort();
    assert_eq!(
        automation_status,
        [
            ("Deployments pending by state approved", "0"),
            ("Deployments pending by state installed", "0"),
            ("Deployments pending by state running", "0"),
            ("Deployments pending by state waiting", "1"),
            ("Drifting endpoints", "2"),
            ("Failed deployments", "1"),
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
