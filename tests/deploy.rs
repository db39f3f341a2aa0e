//! Window-gated deployments end to end: a real nginx serves an old certificate; `tlsward
//! serve` issues a new one from Pebble, queues a deployment that waits for its change window
//! (the test moves the clock), runs the stock `pem-files` hook, which writes the files and
//! reloads nginx through its grant, and the re-probe confirms nginx serves the new
//! fingerprint. A second endpoint's reload is broken on purpose: verification fails, the
//! old files come back, nginx still serves a valid certificate, and nothing retries.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tlsward::clock::TestClock;
use tlsward::store::{KeySource, Store};

use crate::util::cli::{open_store, tlsward as cli};
use crate::util::exposition::{Series, series};
use crate::util::http::{get, request};
use crate::util::pebble::Pebble;
use crate::util::servers::NginxHttps;
use crate::util::wait::{EVERY, eventually, within};
use crate::util::{TestCa, real_now};

/// Pebble and the CA files the configs trust: its issuing root (`acme-root.pem`) and an
/// "Old CA" (`old-root.pem`) whose certificates the endpoints serve before tlsward deploys.
struct Acme {
    pebble: Pebble,
    http01_port: u16,
    old_ca: TestCa,
}

impl Acme {
    /// Pebble issuing certificates valid for `validity_secs`.
    async fn start(validity_secs: u64) -> Self {
        let http01_port = crate::util::unique_port();
        let pebble = Pebble::start(http01_port, validity_secs).await;
        let old_ca = TestCa::root_at("Old CA", real_now());
        let dir = pebble.dir.path();
        let root = crate::util::pem(&pebble.issuing_root().await);
        std::fs::write(dir.join("acme-root.pem"), root).unwrap();
        std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
        Self {
            pebble,
            http01_port,
            old_ca,
        }
    }

    /// Where the config, the store and the CA files go.
    fn dir(&self) -> &std::path::Path {
        self.pebble.dir.path()
    }

    /// What every config here shares: the state and store, `[acme]` (plus `acme_extra`
    /// lines), `[deploy]`, the certificate `name` for `name.tlsward.test`, a profile `name`
    /// trusting both CAs, and a target probed every second on 127.0.0.1 per address.
    fn config_head(
        &self,
        name: &str,
        addresses: &[String],
        acme_extra: &str,
        deploy: &str,
    ) -> String {
        let mut head = format!(
            r#"
[server]
state_dir = "{state_dir}"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{port}"
{acme_extra}

[deploy]
{deploy}

[[certificate]]
name = "{name}"
domains = ["{name}.tlsward.test"]

[profile.{name}]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false
"#,
            state_dir = daemon_state_dir().display(),
            directory = self.pebble.directory,
            ca = self.pebble.tls_ca_file.display(),
            port = self.http01_port,
        );
        for address in addresses {
            head.push_str(&format!(
                "\n[[target]]\naddress = \"{address}\"\nprofile = \"{name}\"\ninterval = \"1s\"\nconnect_to = [\"127.0.0.1\"]\n"
            ));
        }
        head
    }
}

/// The daemons' state directory: only their compiled-hook cache lives there (the stores are
/// per test), kept in the target directory so later runs skip compiling the Python hooks.
fn daemon_state_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-daemon-state")
}

/// Waits for a series on /metrics; on a timeout, shows the deployment series and the
/// journal, so a failure says where the deployment stopped.
async fn wait_metric(
    addr: std::net::SocketAddr,
    secs: u64,
    what: &str,
    want: Series<'_>,
    store_dir: &std::path::Path,
) {
    let seen = within(Duration::from_secs(secs), EVERY, || async move {
        want.in_body(&get(addr, "/metrics").await.body)
    })
    .await;
    if seen.is_some() {
        return;
    }
    let metrics = get(addr, "/metrics").await.body;
    let relevant: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("deploy") || l.contains("hook_runs") || l.contains("drift"))
        .collect();
    let journal = Store::open(
        &store_dir.join("state/tlsward.db"),
        &KeySource::File(store_dir.join("state/store.key")),
    )
    .and_then(|s| s.journal_entries(None))
    .map(|j| {
        j.iter()
            .map(|e| format!("{} {} {}", e.at, e.kind, e.detail))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_else(|e| e.to_string());
    panic!(
        "timed out waiting for {what} ({want:?})\n--- metrics ---\n{}\n--- journal ---\n{journal}",
        relevant.join("\n")
    );
}

fn sha256_served(addr: std::net::SocketAddr, name: &str) -> String {
    // The live certificate, read by openssl as an outside observer would.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername {name} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_gated_deployment_reaches_nginx_and_a_broken_reload_rolls_back() {
    let acme = Acme::start(30 * 86_400).await;
    let dir = acme.dir();
    // nginx starts out serving a certificate from another CA, trusted too: valid but foreign.
    let old_ca = &acme.old_ca;
    let old = old_ca.leaf(&["site.tlsward.test"]).build();
    let old_dir = tempfile::tempdir().unwrap();
    let (old_cert, old_key) = old.write_pem(old_dir.path(), "old");
    let nginx = NginxHttps::start(2, &old_cert, &old_key).await;
    let old_sha = tlsward::cert::sha256_hex(old.der());
    let [web, web2] = [nginx.addrs[0], nginx.addrs[1]];
    assert_eq!(sha256_served(web, "site.tlsward.test"), old_sha);

    // A daily one-hour window that opens two hours from now (UTC), so it is closed now.
    let now = real_now();
    let opens = (now.hour() + 2) % 24;
    let reload = nginx.reload_argv();
    let certs = nginx.certs.display().to_string();
    let head = acme.config_head(
        "site",
        &[
            format!("site.tlsward.test:{}", web.port()),
            format!("site.tlsward.test:{}", web2.port()),
        ],
        "",
        // Generous for web, which must pass; web2, which must fail, spends it whole.
        "verify_timeout = \"20s\"\nverify_interval = \"500ms\"\nemergency_days = 1",
    );
    let config = format!(
        r#"{head}
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

[hook.nginx-broken]
component = "{pem_files}"
write_paths = ["{certs}"]
commands = [["/bin/true"]]
timeout = "60s"

[hook.nginx-broken.settings]
reload = "/bin/true"

[[endpoint]]
name = "web"
certificate = "site"
target = "site.tlsward.test:{p1}"
window = "nightly"
hook = "nginx"
settings = {{ fullchain_path = "{certs}/0.crt", key_path = "{certs}/0.key" }}

[[endpoint]]
name = "web2"
certificate = "site"
target = "site.tlsward.test:{p2}"
hook = "nginx-broken"
settings = {{ fullchain_path = "{certs}/1.crt", key_path = "{certs}/1.key" }}
"#,
        p1 = web.port(),
        p2 = web2.port(),
        pem_files = crate::util::hooks::component("pem-files").display(),
        reload_str = reload.join(" "),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let clock = Arc::new(TestClock::at(SystemTime::from(now)));
    let daemon = crate::util::daemon::start_with_clock(&path, clock.clone()).await;
    let addr = daemon.addr;

    // Issued, queued for web (window closed); web2 has no window: deployed at once, and its
    // broken reload fails verification, so its files are rolled back.
    wait_metric(
        addr,
        180,
        "web's deployment waiting for its window",
        series(
            "tlsward_deployments_pending",
            &[("endpoint", "web"), ("state", "waiting")],
            1.0,
        ),
        dir,
    )
    .await;
    wait_metric(
        addr,
        180,
        "web2's deployment rolled back",
        series(
            "tlsward_deployments_total",
            &[("endpoint", "web2"), ("result", "rolled_back")],
            1.0,
        ),
        dir,
    )
    .await;
    let store = open_store(&dir.join("state"));
    let new_sha = store.latest("site").unwrap().unwrap().sha256;
    assert_ne!(new_sha, old_sha);
    // web still serves the old certificate: its window has not opened.
    assert_eq!(sha256_served(web, "site.tlsward.test"), old_sha);
    // web2: the old files are back and nginx serves the old, still valid, certificate.
    assert_eq!(
        std::fs::read(nginx.certs.join("1.crt")).unwrap(),
        std::fs::read(&old_cert).unwrap()
    );
    assert_eq!(
        std::fs::read(nginx.certs.join("1.key")).unwrap(),
        std::fs::read(&old_key).unwrap()
    );
    assert_eq!(sha256_served(web2, "site.tlsward.test"), old_sha);
    let m = get(addr, "/metrics").await.body;
    for series in [
        series(
            "tlsward_deployment_failed",
            &[("endpoint", "web2"), ("certificate", "site")],
            1.0,
        ),
        series(
            "tlsward_deployment_verification_failures_total",
            &[("endpoint", "web2")],
            1.0,
        ),
        series(
            "tlsward_deployment_rollbacks_total",
            &[("endpoint", "web2"), ("result", "restored")],
            1.0,
        ),
        series(
            "tlsward_hook_runs_total",
            &[
                ("hook", "nginx-broken"),
                ("result", "ok"),
                ("reason", "none"),
            ],
            1.0,
        ),
        series(
            "tlsward_deployment_failed",
            &[("endpoint", "web"), ("certificate", "site")],
            0.0,
        ),
    ] {
        series.assert_in(&m);
    }

    // `deploy list` (the real CLI, on the same store) shows web waiting for "nightly".
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["deploy", "list", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let web_line = list
        .lines()
        .find(|l| l.contains(" web ") && l.contains("waiting"))
        .unwrap_or_else(|| panic!("no waiting web deployment in\n{list}"));
    assert!(web_line.contains("nightly"), "{web_line}");

    // Move the clock into the window and wake the reconciler (a reload does).
    let this_hour = now
        .replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap();
    clock.set(SystemTime::from(
        this_hour + time::Duration::hours(2) + time::Duration::minutes(1),
    ));
    let r = request(addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_metric(
        addr,
        180,
        "web's deployment verified",
        series(
            "tlsward_deployments_total",
            &[("endpoint", "web"), ("result", "verified")],
            1.0,
        ),
        dir,
    )
    .await;
    assert_eq!(sha256_served(web, "site.tlsward.test"), new_sha);
    wait_metric(
        addr,
        60,
        "web's drift to clear",
        series(
            "tlsward_endpoint_drift",
            &[("endpoint", "web"), ("certificate", "site")],
            0.0,
        ),
        dir,
    )
    .await;

    // The journal of the window-gated deployment, in order.
    let journal = store.journal_entries(Some("site")).unwrap();
    let web_steps: Vec<&tlsward::store::JournalEntry> = journal
        .iter()
        .filter(|e| e.kind.starts_with("deployment."))
        .filter(|e| {
            e.detail["endpoint"] == "web" || e.detail["detail"]["endpoint"] == "web" || {
                let id = e.detail["deployment"].as_i64();
                store
                    .all_deployments()
                    .unwrap()
                    .iter()
                    .any(|d| Some(d.id) == id && d.endpoint == "web")
            }
        })
        .collect();
    for e in &web_steps {
        eprintln!("journal {} {} {}", e.at, e.kind, e.detail);
    }
    let kinds: Vec<&str> = web_steps.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "deployment.queued",
            "deployment.running",
            "deployment.verified"
        ]
    );
    assert_eq!(web_steps[1].detail["detail"]["trigger"], "window_open");
    let verified = &web_steps[2].detail["detail"];
    let calls: Vec<&str> = verified["hook"]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["function"].as_str().unwrap())
        .collect();
    assert_eq!(
        calls,
        ["write-cert", "write-cert", "run-command"],
        "{verified}"
    );
    assert_eq!(
        verified["verification"]["served"][0]["sha256"],
        new_sha.as_str()
    );

    // Nothing retries web2 by itself: after another pass it still has one deployment.
    let r = request(addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let web2: Vec<_> = store
        .all_deployments()
        .unwrap()
        .into_iter()
        .filter(|d| d.endpoint == "web2")
        .collect();
    assert_eq!(web2.len(), 1, "{web2:?}");
    assert_eq!(web2[0].state.as_str(), "rolled_back");
    // `deploy show` tells an operator what happened.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["deploy", "show", &web2[0].id.to_string(), "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    for text in [
        "to web2: rolled_back (foreign)",
        "the endpoint did not serve the new certificate within 20s",
        "\"restored\"",
        "1.crt.tlsward-prev",
    ] {
        assert!(shown.contains(text), "{text:?} missing from\n{shown}");
    }

    drop(daemon);
}

/// An appliance that cannot run ACME, through its REST API (the stand-in) and the stock
/// `http-appliance` hook: one endpoint whose certificate expires within `emergency_days`
/// deploys at once despite its closed window; another waits until an operator runs
/// `tlsward deploy run-now` from the shell.
#[tokio::test(flavor = "multi_thread")]
async fn an_emergency_skips_the_window_and_run_now_deploys_from_the_shell() {
    use crate::util::TlsServer;
    use crate::util::appliance::{Appliance, ApplianceMode};

    let acme = Acme::start(30 * 86_400).await;
    let (dir, old_ca) = (acme.dir(), &acme.old_ca);
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    std::fs::write(dir.join("api-ca.pem"), api_ca.pem()).unwrap();
    let api_leaf = api_ca.leaf(&["127.0.0.1"]).build();
    // "urgent" serves a certificate with half a day left; "manual" one with 60 days.
    let urgent = Appliance::start(
        &api_leaf,
        TlsServer::leaf(&old_ca.leaf(&["app.tlsward.test"]).valid(-10.0, 0.5).build()),
        "tok-urgent",
        ApplianceMode::Honest,
    )
    .await;
    let manual = Appliance::start(
        &api_leaf,
        TlsServer::leaf(
            &old_ca
                .leaf(&["app.tlsward.test"])
                .valid(-10.0, 60.0)
                .build(),
        ),
        "tok-manual",
        ApplianceMode::Honest,
    )
    .await;
    let now = real_now();
    let head = acme.config_head(
        "app",
        &[
            format!("app.tlsward.test:{}", urgent.data_port()),
            format!("app.tlsward.test:{}", manual.data_port()),
        ],
        "",
        "verify_timeout = \"20s\"\nverify_interval = \"500ms\"\nemergency_days = 2",
    );
    let config = format!(
        r#"{head}
[window.nightly]
days = ["daily"]
start = "{opens:02}:00"
duration = "1h"

[hook.appliance]
component = "{component}"
http_hosts = ["127.0.0.1:{urgent_api}", "127.0.0.1:{manual_api}"]
http_ca_file = "api-ca.pem"
key_access = true
timeout = "60s"

[hook.appliance.settings]
password = "pfx-pass"
poll_interval = "0.2"

[[endpoint]]
name = "urgent"
certificate = "app"
target = "app.tlsward.test:{urgent_port}"
window = "nightly"
hook = "appliance"
settings = {{ url = "https://127.0.0.1:{urgent_api}", token = "tok-urgent" }}

[[endpoint]]
name = "manual"
certificate = "app"
target = "app.tlsward.test:{manual_port}"
window = "nightly"
hook = "appliance"
settings = {{ url = "https://127.0.0.1:{manual_api}", token = "tok-manual" }}
"#,
        opens = (now.hour() + 2) % 24,
        urgent_port = urgent.data_port(),
        manual_port = manual.data_port(),
        urgent_api = urgent.api_port(),
        manual_api = manual.api_port(),
        component = crate::util::hooks::component("http-appliance").display(),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let clock = Arc::new(TestClock::at(SystemTime::from(now)));
    let daemon = crate::util::daemon::start_with_clock(&path, clock).await;
    let addr = daemon.addr;
    wait_metric(
        addr,
        180,
        "the urgent deployment verified",
        series(
            "tlsward_deployments_total",
            &[("endpoint", "urgent"), ("result", "verified")],
            1.0,
        ),
        dir,
    )
    .await;
    wait_metric(
        addr,
        60,
        "the manual deployment waiting",
        series(
            "tlsward_deployments_pending",
            &[("endpoint", "manual"), ("state", "waiting")],
            1.0,
        ),
        dir,
    )
    .await;
    let store = open_store(&dir.join("state"));
    let new_sha = store.latest("app").unwrap().unwrap().sha256;
    assert_eq!(urgent.serving_sha256(), new_sha);
    let uploads = urgent.uploads();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].passphrase_ok, Some(true));
    let running = store
        .journal_entries(Some("app"))
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "deployment.running")
        .unwrap();
    assert_eq!(running.detail["detail"]["trigger"], "emergency");
    assert!(
        running.detail["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("within emergency_days"),
        "{}",
        running.detail
    );
    assert_ne!(manual.serving_sha256(), new_sha);

    // The operator deploys the waiting one now, from the shell, while the daemon runs.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["deploy", "run-now", "manual", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("http(POST https://127.0.0.1:"), "{text}");
    assert!(text.contains(": verified"), "{text}");
    assert_eq!(manual.serving_sha256(), new_sha);
    let running: Vec<_> = store
        .journal_entries(Some("app"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "deployment.running")
        .collect();
    assert_eq!(running.len(), 2);
    assert_eq!(running[1].detail["detail"]["trigger"], "run_now");
    // Run again with nothing left to do: the finished deployment is not claimable.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(["deploy", "run-now"])
        .arg(
            store
                .all_deployments()
                .unwrap()
                .last()
                .unwrap()
                .id
                .to_string(),
        )
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no queued deployment"),
        "{out:?}"
    );
    drop(daemon);
}

/// An appliance that says "done" but keeps serving the old certificate is caught by the
/// re-probe; as nothing on this host changed, the rollback puts the version last verified
/// there back through the same hook, and checks the appliance serves it.
#[tokio::test(flavor = "multi_thread")]
async fn a_lying_appliance_is_caught_and_the_previous_version_put_back() {
    use crate::util::TlsServer;
    use crate::util::appliance::{Appliance, ApplianceMode};

    // Hour-long certificates: nothing renews by itself during the test; v2 is ordered by the
    // test, through the daemon, once the appliance has started lying. (With a natural renewal
    // a loaded machine could reach v2 before the test had switched the appliance.)
    let acme = Acme::start(3600).await;
    let (dir, old_ca) = (acme.dir(), &acme.old_ca);
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    std::fs::write(dir.join("api-ca.pem"), api_ca.pem()).unwrap();
    let appliance = Appliance::start(
        &api_ca.leaf(&["127.0.0.1"]).build(),
        TlsServer::leaf(&old_ca.leaf(&["lb.tlsward.test"]).build()),
        "tok",
        ApplianceMode::Honest,
    )
    .await;
    let head = acme.config_head(
        "lb",
        &[format!("lb.tlsward.test:{}", appliance.data_port())],
        "",
        // Long enough for v1 and the rollback, which must pass; v2's failure takes all of it.
        "verify_timeout = \"10s\"\nverify_interval = \"250ms\"\nemergency_days = 0",
    );
    let config = format!(
        r#"{head}
[hook.appliance]
component = "{component}"
http_hosts = ["127.0.0.1:{api}"]
http_ca_file = "api-ca.pem"
key_access = true
timeout = "60s"

[hook.appliance.settings]
url = "https://127.0.0.1:{api}"
token = "tok"
password = "pfx-pass"
poll_interval = "0.1"

[[endpoint]]
name = "lb"
certificate = "lb"
target = "lb.tlsward.test:{port}"
hook = "appliance"
"#,
        port = appliance.data_port(),
        api = appliance.api_port(),
        component = crate::util::hooks::component("http-appliance").display(),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    wait_metric(
        addr,
        120,
        "v1 deployed",
        series(
            "tlsward_deployments_total",
            &[("endpoint", "lb"), ("result", "verified")],
            1.0,
        ),
        dir,
    )
    .await;
    let store = open_store(&dir.join("state"));
    let v1 = store.latest("lb").unwrap().unwrap();
    assert_eq!(store.versions("lb").unwrap().len(), 1);
    assert_eq!(appliance.serving_sha256(), v1.sha256);
    // From now on the appliance claims success without activating anything.
    appliance.set_mode(ApplianceMode::Lying);
    // v2, ordered by the daemon's reconciler (the CLI asks it over the control socket).
    let out = crate::util::cli::tlsward(&["cert", "issue", "--force", "lb"], &path).await;
    assert!(
        out.status.success(),
        "cert issue --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_metric(
        addr,
        150,
        "v2's deployment rolled back",
        series(
            "tlsward_deployments_total",
            &[("endpoint", "lb"), ("result", "rolled_back")],
            1.0,
        ),
        dir,
    )
    .await;
    let v2 = store.latest("lb").unwrap().unwrap();
    assert_ne!(v2.id, v1.id);
    // The appliance claims v2 is active, but the probe saw v1 all along.
    assert_eq!(appliance.serving_sha256(), v1.sha256);
    let m = get(addr, "/metrics").await.body;
    for series in [
        series(
            "tlsward_deployment_verification_failures_total",
            &[("endpoint", "lb")],
            1.0,
        ),
        series(
            "tlsward_deployment_rollbacks_total",
            &[("endpoint", "lb"), ("result", "restored")],
            1.0,
        ),
        series(
            "tlsward_deployment_failed",
            &[("endpoint", "lb"), ("certificate", "lb")],
            1.0,
        ),
    ] {
        series.assert_in(&m);
    }
    let failed = store
        .all_deployments()
        .unwrap()
        .into_iter()
        .find(|d| d.state.as_str() == "rolled_back")
        .unwrap();
    assert_eq!(failed.version, v2.id);
    let detail = store.deployment_detail(failed.id).unwrap();
    assert_eq!(detail["rollback"]["redeployed_version"], v1.id);
    assert_eq!(
        detail["rollback"]["verification"]["served"][0]["sha256"],
        v1.sha256.as_str()
    );
    // v2 and its rollback both uploaded: v1, v2, v1 again.
    let uploads: Vec<Option<String>> = appliance.uploads().into_iter().map(|u| u.sha256).collect();
    assert_eq!(
        uploads,
        [
            Some(v1.sha256.clone()),
            Some(v2.sha256.clone()),
            Some(v1.sha256.clone())
        ]
    );
    drop(daemon);
}

/// `deploy approve` and `deploy run-now` from the shell while the daemon runs go through its
/// control socket: the daemon runs them with its own deployer, so its `/metrics` count them,
/// and a rollback that fails there is what `TlsDeploymentRollbackFailed` sees.
#[tokio::test(flavor = "multi_thread")]
async fn approve_and_run_now_from_the_shell_go_through_the_daemon() {
    use crate::util::TlsServer;
    use crate::util::appliance::{Appliance, ApplianceMode};

    let acme = Acme::start(30 * 86_400).await;
    let (dir, old_ca) = (acme.dir(), &acme.old_ca);
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    std::fs::write(dir.join("api-ca.pem"), api_ca.pem()).unwrap();
    let api_leaf = api_ca.leaf(&["127.0.0.1"]).build();
    let old = || TlsServer::leaf(&old_ca.leaf(&["app.tlsward.test"]).build());
    let honest = Appliance::start(&api_leaf, old(), "tok-h", ApplianceMode::Honest).await;
    // Says "done" and keeps serving the old certificate; nothing was verified there before,
    // so there is nothing to put back: the rollback fails.
    let liar = Appliance::start(&api_leaf, old(), "tok-l", ApplianceMode::Lying).await;
    let now = real_now();
    let head = acme.config_head(
        "app",
        &[
            format!("app.tlsward.test:{}", honest.data_port()),
            format!("app.tlsward.test:{}", liar.data_port()),
        ],
        "",
        "verify_timeout = \"3s\"\nverify_interval = \"250ms\"\nemergency_days = 0",
    );
    let config = format!(
        r#"{head}
[window.nightly]
days = ["daily"]
start = "{opens:02}:00"
duration = "1h"

[hook.appliance]
component = "{component}"
http_hosts = ["127.0.0.1:{honest_api}", "127.0.0.1:{liar_api}"]
http_ca_file = "api-ca.pem"
key_access = true
timeout = "60s"

[hook.appliance.settings]
password = "pfx-pass"
poll_interval = "0.1"

[[endpoint]]
name = "honest"
certificate = "app"
target = "app.tlsward.test:{honest_port}"
window = "nightly"
hook = "appliance"
settings = {{ url = "https://127.0.0.1:{honest_api}", token = "tok-h" }}

[[endpoint]]
name = "liar"
certificate = "app"
target = "app.tlsward.test:{liar_port}"
window = "nightly"
hook = "appliance"
settings = {{ url = "https://127.0.0.1:{liar_api}", token = "tok-l" }}
"#,
        opens = (now.hour() + 2) % 24,
        honest_port = honest.data_port(),
        liar_port = liar.data_port(),
        honest_api = honest.api_port(),
        liar_api = liar.api_port(),
        component = crate::util::hooks::component("http-appliance").display(),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let clock = Arc::new(TestClock::at(SystemTime::from(now)));
    let daemon = crate::util::daemon::start_with_clock(&path, clock).await;
    let addr = daemon.addr;
    for endpoint in ["honest", "liar"] {
        wait_metric(
            addr,
            60,
            "both deployments waiting for their window",
            series(
                "tlsward_deployments_pending",
                &[("endpoint", endpoint), ("state", "waiting")],
                1.0,
            ),
            dir,
        )
        .await;
    }
    let store = open_store(&dir.join("state"));
    let waiting = |endpoint: &str| {
        store
            .open_deployments()
            .unwrap()
            .into_iter()
            .find(|d| d.endpoint == endpoint)
            .unwrap()
            .id
    };
    let new_sha = store.latest("app").unwrap().unwrap().sha256;

    // Approved through the daemon, which runs it at once.
    let id = waiting("honest").to_string();
    let out = cli(&["deploy", "approve", &id], &path).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("approving through the running daemon"),
        "{stderr}"
    );
    assert!(stdout.contains("the daemon runs it now"), "{stdout}");
    wait_metric(
        addr,
        60,
        "the approved deployment verified",
        series(
            "tlsward_deployments_total",
            &[("endpoint", "honest"), ("result", "verified")],
            1.0,
        ),
        dir,
    )
    .await;
    assert_eq!(honest.serving_sha256(), new_sha);

    // Run now through the daemon: the liar's verification fails, and no version was ever
    // verified there, so there is nothing to put back: it ends failed, not as a failed
    // rollback (the liar still serves its own, valid certificate).
    let out = cli(&["deploy", "run-now", "liar"], &path).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("deploying through the running daemon"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with("running deployment ")
            && stdout.contains(" to liar with hook appliance"),
        "{stdout}"
    );
    assert!(stdout.contains("http(POST https://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("nothing to put back"), "{stdout}");
    assert!(stdout.trim_end().ends_with(": failed"), "{stdout}");
    // The daemon's own counters moved: these are what the alerts read.
    let m = get(addr, "/metrics").await.body;
    for series in [
        series(
            "tlsward_deployments_total",
            &[("endpoint", "liar"), ("result", "failed")],
            1.0,
        ),
        series(
            "tlsward_deployment_rollbacks_total",
            &[("endpoint", "liar"), ("result", "failed")],
            0.0,
        ),
        series(
            "tlsward_deployment_verification_failures_total",
            &[("endpoint", "liar")],
            1.0,
        ),
        series(
            "tlsward_deployment_failed",
            &[("endpoint", "liar"), ("certificate", "app")],
            1.0,
        ),
        series(
            "tlsward_deployments_total",
            &[("endpoint", "honest"), ("result", "verified")],
            1.0,
        ),
    ] {
        series.assert_in(&m);
    }
    // The journal names who asked, with the uid the daemon saw.
    let journal = store.journal_entries(Some("app")).unwrap();
    let uid = u64::from(rustix::process::geteuid().as_raw());
    let approved = journal
        .iter()
        .find(|e| e.kind == "deployment.approved")
        .unwrap();
    assert_eq!(approved.detail["detail"]["uid"], uid, "{}", approved.detail);
    let run_now = journal
        .iter()
        .find(|e| e.kind == "deployment.running" && e.detail["detail"]["trigger"] == "run_now")
        .unwrap();
    assert_eq!(run_now.detail["detail"]["uid"], uid, "{}", run_now.detail);

    // Refusals come back as errors, exit 3, and change nothing.
    let out = cli(&["deploy", "approve", &id], &path).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("no queued deployment {id}")),
        "{out:?}"
    );
    drop(daemon);
}

/// An appliance reset to its old certificate after a verified deployment: the regression is
/// queued again (`regressed`), but only once the wait since the verification has passed (1 h,
/// then 2 h), and deployed again; each hold is journaled.
#[tokio::test(flavor = "multi_thread")]
async fn an_appliance_reset_to_its_old_certificate_is_deployed_again_with_backoff() {
    use crate::util::TlsServer;
    use crate::util::appliance::{Appliance, ApplianceMode};

    let acme = Acme::start(30 * 86_400).await;
    let (dir, old_ca) = (acme.dir(), &acme.old_ca);
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    std::fs::write(dir.join("api-ca.pem"), api_ca.pem()).unwrap();
    let old = old_ca.leaf(&["lb.tlsward.test"]).build();
    let appliance = Appliance::start(
        &api_ca.leaf(&["127.0.0.1"]).build(),
        TlsServer::leaf(&old),
        "tok",
        ApplianceMode::Honest,
    )
    .await;
    let head = acme.config_head(
        "lb",
        &[format!("lb.tlsward.test:{}", appliance.data_port())],
        "",
        "verify_timeout = \"10s\"\nverify_interval = \"250ms\"\nemergency_days = 0",
    );
    let config = format!(
        r#"{head}
[hook.appliance]
component = "{component}"
http_hosts = ["127.0.0.1:{api}"]
http_ca_file = "api-ca.pem"
key_access = true

[hook.appliance.settings]
url = "https://127.0.0.1:{api}"
token = "tok"
password = "pfx-pass"
poll_interval = "0.1"

[[endpoint]]
name = "lb"
certificate = "lb"
target = "lb.tlsward.test:{port}"
hook = "appliance"
"#,
        port = appliance.data_port(),
        api = appliance.api_port(),
        component = crate::util::hooks::component("http-appliance").display(),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let clock = Arc::new(TestClock::at(SystemTime::from(real_now())));
    let daemon = crate::util::daemon::start_with_clock(&path, clock.clone()).await;
    let addr = daemon.addr;
    let verified = |n: u32| {
        series(
            "tlsward_deployments_total",
            &[("endpoint", "lb"), ("result", "verified")],
            f64::from(n),
        )
    };
    wait_metric(addr, 60, "the first deployment", verified(1), dir).await;
    let store = open_store(&dir.join("state"));
    let latest = store.latest("lb").unwrap().unwrap();
    assert_eq!(appliance.serving_sha256(), latest.sha256);

    let mut verified_at = store.all_deployments().unwrap()[0].updated_at;
    for (round, wait_hours) in [(0u32, 1i64), (1, 2)] {
        // The appliance is reset: it serves its old certificate again.
        appliance
            .data_plane()
            .swap(old.chain.clone(), old.key.clone_key());
        wait_metric(
            addr,
            20,
            "the drift after the reset",
            series(
                "tlsward_endpoint_drift",
                &[("endpoint", "lb"), ("certificate", "lb")],
                1.0,
            ),
            dir,
        )
        .await;
        // Wake the reconciler (a reload does): the regression is seen and held.
        let r = request(addr, "POST", "/-/reload", &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let held = eventually(
            20,
            &format!("round {round}: a held regression journaled"),
            || {
                let store = &store;
                async move {
                    store
                        .journal_entries(Some("lb"))
                        .unwrap()
                        .into_iter()
                        .find(|e| {
                            e.kind == "deployment.regression"
                                && e.detail["action"] == "held"
                                && e.detail["requeues"] == round
                        })
                }
            },
        )
        .await;
        assert_eq!(
            held.detail["requeue_at"],
            verified_at + wait_hours * 3600,
            "{}",
            held.detail
        );
        assert_eq!(
            held.detail["served"][0],
            tlsward::cert::sha256_hex(&old.chain[0])
        );
        assert!(store.open_deployments().unwrap().is_empty());

        // Once the wait has passed, it is queued again as a regression and deployed.
        clock.advance(Duration::from_secs(wait_hours as u64 * 3600));
        let r = request(addr, "POST", "/-/reload", &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        wait_metric(addr, 60, "the redeployment", verified(round + 2), dir).await;
        assert_eq!(appliance.serving_sha256(), latest.sha256);
        let all = store.all_deployments().unwrap();
        let last = all.last().unwrap();
        assert_eq!(
            (last.reason.as_str(), last.state.as_str()),
            ("regressed", "verified")
        );
        assert_eq!(last.version, latest.id);
        verified_at = last.updated_at;
    }
    let queued: Vec<String> = store
        .journal_entries(Some("lb"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "deployment.queued")
        .map(|e| e.detail["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(queued, ["foreign", "regressed", "regressed"]);
    // `deploy list --all` shows why.
    let out = cli(&["deploy", "list", "--all"], &path).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(" regressed ")
            .count(),
        2,
        "{out:?}"
    );
    drop(daemon);
}
