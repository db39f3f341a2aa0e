//! Staged rollouts end to end (`[certificate.rollout]`): one certificate from Pebble, one
//! real nginx per endpoint, the stock `pem-files` hook. A canary whose reload is
//! broken halts the rollout with the others still serving the old certificate and their
//! deployments `halted`; fixed and `tlsward rollout resume`d, it rolls through. A good
//! version goes canary, then batches of three, each only after the one before is verified
//! and the pause (the test clock moves) has passed. A failure inside the budget continues;
//! one more halts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tlsward::clock::TestClock;
use tlsward::store::{JournalEntry, Store};

use crate::util::cli::{open_store, tlsward as cli};
use crate::util::exposition::metric;
use crate::util::http::{get, request};
use crate::util::pebble::Pebble;
use crate::util::servers::NginxHttps;
use crate::util::wait::eventually;
use crate::util::{TestCa, real_now};

/// Pebble, `n` nginx servers (one per endpoint, as separate hosts would be: a batch's
/// reloads do not race on one server's files) all serving a certificate from an "Old CA",
/// and the files the configs name.
struct Fleet {
    pebble: Pebble,
    http01_port: u16,
    nginx: Vec<NginxHttps>,
    /// Each endpoint's address.
    addrs: Vec<std::net::SocketAddr>,
    old_sha: String,
    /// Keeps the old certificate's files.
    _old: tempfile::TempDir,
    /// Where the broken hook writes: nginx never reads it, so whatever reloads nginx (the
    /// good hooks of other endpoints share it), a broken endpoint never serves the new
    /// version.
    unread: tempfile::TempDir,
}

impl Fleet {
    async fn start(n: usize) -> Self {
        let http01_port = crate::util::unique_port();
        let pebble = Pebble::start(http01_port, 30 * 86_400).await;
        let old_ca = TestCa::root_at("Old CA", real_now());
        let dir = pebble.dir.path();
        let root = crate::util::pem(&pebble.issuing_root().await);
        std::fs::write(dir.join("acme-root.pem"), root).unwrap();
        std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
        let old = old_ca.leaf(&["site.tlsward.test"]).build();
        let old_dir = tempfile::tempdir().unwrap();
        let (cert, key) = old.write_pem(old_dir.path(), "old");
        let mut nginx = Vec::with_capacity(n);
        for _ in 0..n {
            nginx.push(NginxHttps::start(1, &cert, &key).await);
        }
        let addrs = nginx.iter().map(|x| x.addrs[0]).collect();
        // The broken hook's files start as the old ones, as nginx's do.
        let unread = tempfile::tempdir().unwrap();
        for i in 0..n {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(&cert, unread.path().join(format!("{i}.crt"))).unwrap();
            let k = unread.path().join(format!("{i}.key"));
            std::fs::copy(&key, &k).unwrap();
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Self {
            pebble,
            http01_port,
            nginx,
            addrs,
            old_sha: tlsward::cert::sha256_hex(old.der()),
            _old: old_dir,
            unread,
        }
    }

    fn dir(&self) -> &Path {
        self.pebble.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("tlsward.toml")
    }

    /// Endpoint names: `e0`, `e1`, ... (sorted by name as the rollout sorts them).
    fn name(i: usize) -> String {
        format!("e{i}")
    }

    /// Writes the config: every site an endpoint of certificate "site" with `rollout`
    /// (the `[certificate.rollout]` body); the sites in `broken` deploy with a hook that
    /// writes where nginx does not read and reloads nothing, so their verification fails
    /// and the files are rolled back.
    fn write_config(&self, rollout: &str, broken: &[usize]) -> PathBuf {
        let unread = self.unread.path().display().to_string();
        let mut config = format!(
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

[deploy]
verify_timeout = "15s"
verify_interval = "500ms"
emergency_days = 1

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]

[certificate.rollout]
{rollout}

[profile.site]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false

[hook.broken]
component = "{pem_files}"
write_paths = ["{unread}"]
commands = [["/bin/true"]]
timeout = "60s"

[hook.broken.settings]
reload = "/bin/true"
"#,
            state_dir = daemon_state_dir().display(),
            directory = self.pebble.directory,
            ca = self.pebble.tls_ca_file.display(),
            port = self.http01_port,
            pem_files = crate::util::hooks::component("pem-files").display(),
        );
        for (i, (addr, nginx)) in self.addrs.iter().zip(&self.nginx).enumerate() {
            let certs = nginx.certs.display().to_string();
            let reload = nginx.reload_argv();
            let (hook, dir, site) = if broken.contains(&i) {
                ("broken".to_owned(), &unread, i)
            } else {
                (format!("nginx-{i}"), &certs, 0)
            };
            config.push_str(&format!(
                r#"
[hook.nginx-{i}]
component = "{pem_files}"
write_paths = ["{certs}"]
commands = [{reload:?}]
timeout = "60s"

[hook.nginx-{i}.settings]
reload = "{reload_str}"
"#,
                pem_files = crate::util::hooks::component("pem-files").display(),
                reload_str = reload.join(" "),
            ));
            config.push_str(&format!(
                r#"
[[target]]
address = "site.tlsward.test:{port}"
profile = "site"
interval = "1s"
connect_to = ["127.0.0.1"]

[[endpoint]]
name = "{name}"
certificate = "site"
target = "site.tlsward.test:{port}"
hook = "{hook}"
settings = {{ fullchain_path = "{dir}/{site}.crt", key_path = "{dir}/{site}.key" }}
"#,
                port = addr.port(),
                name = Self::name(i),
            ));
        }
        let path = self.config_path();
        std::fs::write(&path, config).unwrap();
        path
    }

    fn store(&self) -> Store {
        open_store(&self.dir().join("state"))
    }
}

/// The daemons' state directory (their compiled-hook cache), shared with the deploy tests.
fn daemon_state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-daemon-state")
}

/// The SHA-256 of the leaf served at `addr`, read by openssl as an outside observer would.
fn sha256_served(addr: std::net::SocketAddr) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername site.tlsward.test </dev/null 2>/dev/null \
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

/// The rollout journal of "site", for the eye (printed) and for assertions.
fn rollout_journal(store: &Store) -> Vec<JournalEntry> {
    store
        .journal_entries(Some("site"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("rollout."))
        .collect()
}

fn print_journal(store: &Store, what: &str) {
    for e in rollout_journal(store) {
        eprintln!("{what}: journal {} {} {}", e.at, e.kind, e.detail);
    }
}

/// Waits until the newest rollout of "site" is in `state`; on a timeout shows the journal.
async fn wait_state(fleet: &Fleet, addr: std::net::SocketAddr, state: &str, secs: u64) {
    let store = fleet.store();
    let seen = crate::util::wait::within(
        Duration::from_secs(secs),
        Duration::from_millis(200),
        || {
            let store = &store;
            async move {
                let body = get(addr, "/metrics").await.body;
                let by_metric = metric(
                    &body,
                    "tlsward_rollout_state_info",
                    &[("certificate", "site"), ("state", state)],
                ) == Some(1.0);
                let by_store = store
                    .latest_rollouts()
                    .unwrap()
                    .first()
                    .is_some_and(|r| r.state.as_str() == state);
                by_metric && by_store
            }
        },
    )
    .await;
    if seen.is_none() {
        let journal: Vec<String> = store
            .journal_entries(Some("site"))
            .unwrap()
            .iter()
            .map(|e| format!("{} {} {}", e.at, e.kind, e.detail))
            .collect();
        panic!(
            "timed out waiting for the rollout to be {state}\n--- journal ---\n{}",
            journal.join("\n")
        );
    }
}

/// Wakes the daemon's reconciler (a reload does).
async fn wake(addr: std::net::SocketAddr) {
    let r = request(addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The endpoint of each deployment id.
fn endpoint_of(store: &Store, id: Option<i64>) -> Option<String> {
    let id = id?;
    store
        .all_deployments()
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .map(|d| d.endpoint)
}

/// The stage numbers of the rollout entries of `kind`, in order.
fn batches(journal: &[JournalEntry], kind: &str) -> Vec<i64> {
    journal
        .iter()
        .filter(|e| e.kind == kind)
        .filter_map(|e| e.detail["batch"].as_i64())
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_halts_the_rollout_and_resume_rolls_it_through() {
    let fleet = Fleet::start(10).await;
    let path = fleet.write_config("canary = [\"e0\"]\nbatch = 3\nfailure_budget = 0", &[0]);
    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    wait_state(&fleet, addr, "halted", 240).await;
    // Another pass or two: nothing else starts.
    wake(addr).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = fleet.store();
    let latest = store.latest("site").unwrap().unwrap();
    for (i, site) in fleet.addrs.iter().enumerate() {
        assert_eq!(
            sha256_served(*site),
            fleet.old_sha,
            "e{i} must still serve the old certificate"
        );
        let d = store
            .deployment_of(&Fleet::name(i), latest.id)
            .unwrap()
            .unwrap();
        let want = if i == 0 { "rolled_back" } else { "waiting" };
        assert_eq!(d.state.as_str(), want, "e{i}: {d:?}");
    }
    let body = get(addr, "/metrics").await.body;
    for (state, n) in [("rolled_back", 1.0), ("waiting", 9.0), ("verified", 0.0)] {
        assert_eq!(
            metric(
                &body,
                "tlsward_rollout_endpoints",
                &[("certificate", "site"), ("state", state)]
            ),
            Some(n),
            "{state}"
        );
    }
    assert_eq!(
        metric(&body, "tlsward_rollout_batch", &[("certificate", "site")]),
        Some(0.0)
    );
    // What an operator sees: `rollout show` and `deploy list` say halted.
    let out = cli(&["rollout", "show", "site", "-o", "json"], &path).await;
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "halted", "{shown}");
    assert_eq!(shown["stages"][0]["endpoints"][0]["name"], "e0");
    assert_eq!(shown["stages"][1]["endpoints"][0]["state"], "halted");
    assert!(shown["reason"].as_str().unwrap().contains("e0"), "{shown}");
    let out = cli(&["deploy", "list"], &path).await;
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        list.lines().filter(|l| l.contains(" halted ")).count(),
        9,
        "{list}"
    );
    // An abort or resume of the wrong kind is refused; a resume before the fix would only
    // halt again, so fix the canary's hook first (a reload), then resume.
    fleet.write_config("canary = [\"e0\"]\nbatch = 3\nfailure_budget = 0", &[]);
    wake(addr).await;
    let out = cli(&["rollout", "resume", "site"], &path).await;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("queued again: e0"), "{said}");
    let out = cli(&["rollout", "resume", "site"], &path).await;
    assert!(!out.status.success(), "a second resume must be refused");
    wake(addr).await;
    wait_state(&fleet, addr, "complete", 300).await;
    for (i, site) in fleet.addrs.iter().enumerate() {
        assert_eq!(sha256_served(*site), latest.sha256, "e{i}");
    }
    print_journal(&store, "halted then resumed");
    let journal = rollout_journal(&store);
    let kinds: Vec<&str> = journal.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "rollout.canary",
            "rollout.halted",
            "rollout.resumed",
            "rollout.verified",
            "rollout.batch",
            "rollout.verified",
            "rollout.batch",
            "rollout.verified",
            "rollout.batch",
            "rollout.verified",
            "rollout.complete",
        ]
    );
    assert_eq!(names(&journal[1].detail["failed"]), ["e0"]);
    assert_eq!(journal[1].detail["held"].as_array().unwrap().len(), 9);
    assert_eq!(names(&journal[2].detail["requeued"]), ["e0"]);
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_of_three_start_after_the_previous_one_is_verified_and_the_pause() {
    let fleet = Fleet::start(10).await;
    let path = fleet.write_config("canary = 1\nbatch = 3\npause = \"1h\"", &[]);
    let clock = Arc::new(TestClock::at(SystemTime::from(real_now())));
    let daemon = crate::util::daemon::start_with_clock(&path, clock.clone()).await;
    let addr = daemon.addr;
    let store = fleet.store();
    // Batch N's verification is journaled; then the pause holds batch N+1 until the clock
    // moves past it.
    for batch in 0..=3_i64 {
        let seen =
            crate::util::wait::within(Duration::from_secs(300), Duration::from_millis(200), || {
                let store = &store;
                async move { batches(&rollout_journal(store), "rollout.verified").contains(&batch) }
            })
            .await;
        if seen.is_none() {
            let journal: Vec<String> = store
                .journal_entries(Some("site"))
                .unwrap()
                .iter()
                .map(|e| format!("{} {} {}", e.at, e.kind, e.detail))
                .collect();
            panic!("batch {batch} was never verified\n{}", journal.join("\n"));
        }
        if batch == 3 {
            break;
        }
        wake(addr).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            batches(&rollout_journal(&store), "rollout.batch")
                .last()
                .copied(),
            (batch > 0).then_some(batch),
            "batch {} started before the pause ended",
            batch + 1
        );
        let body = get(addr, "/metrics").await.body;
        assert_eq!(
            metric(&body, "tlsward_rollout_batch", &[("certificate", "site")]),
            Some(batch as f64)
        );
        clock.advance(Duration::from_secs(3600 + 60));
        wake(addr).await;
    }
    wait_state(&fleet, addr, "complete", 60).await;
    let latest = store.latest("site").unwrap().unwrap();
    for site in &fleet.addrs {
        assert_eq!(sha256_served(*site), latest.sha256);
    }
    print_journal(&store, "completed in batches");
    // The journal: canary, verified, batch 1, verified, ... complete.
    let journal = rollout_journal(&store);
    let steps: Vec<(&str, i64)> = journal
        .iter()
        .map(|e| (e.kind.as_str(), e.detail["batch"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(
        steps,
        [
            ("rollout.canary", 0),
            ("rollout.verified", 0),
            ("rollout.batch", 1),
            ("rollout.verified", 1),
            ("rollout.batch", 2),
            ("rollout.verified", 2),
            ("rollout.batch", 3),
            ("rollout.verified", 3),
            ("rollout.complete", -1),
        ]
    );
    assert_eq!(names(&journal[0].detail["endpoints"]), ["e0"]);
    assert_eq!(names(&journal[2].detail["endpoints"]), ["e1", "e2", "e3"]);
    assert_eq!(
        names(&journal[8 - 2].detail["endpoints"]),
        ["e7", "e8", "e9"]
    );
    // No deployment runs before its batch starts, and every deployment of a batch is
    // verified before the next batch starts, at least the pause later by the clock.
    let all = store.journal_entries(Some("site")).unwrap();
    let position = |id: i64| all.iter().position(|e| e.id == id).unwrap();
    for pair in journal.windows(2) {
        let [verified, next] = pair else {
            unreachable!()
        };
        if verified.kind != "rollout.verified" || next.kind != "rollout.batch" {
            continue;
        }
        assert!(
            next.at >= verified.at + 3600,
            "{} then {}",
            verified.detail,
            next.detail
        );
    }
    for start in journal
        .iter()
        .filter(|e| e.kind == "rollout.batch" || e.kind == "rollout.canary")
    {
        let started = position(start.id);
        for name in names(&start.detail["endpoints"]) {
            let running = all
                .iter()
                .position(|e| {
                    e.kind == "deployment.running"
                        && endpoint_of(&store, e.detail["deployment"].as_i64()).as_deref()
                            == Some(name.as_str())
                })
                .unwrap_or_else(|| panic!("{name} never ran"));
            assert!(running > started, "{name} ran before its batch started");
        }
        let batch = start.detail["batch"].as_i64().unwrap();
        if let Some(before) = journal
            .iter()
            .find(|e| e.kind == "rollout.verified" && e.detail["batch"].as_i64() == Some(batch - 1))
        {
            for name in names(&before.detail["endpoints"]) {
                let verified = all
                    .iter()
                    .position(|e| {
                        e.kind == "deployment.verified"
                            && endpoint_of(&store, e.detail["deployment"].as_i64()).as_deref()
                                == Some(name.as_str())
                    })
                    .unwrap();
                assert!(
                    verified < started,
                    "{name} was not verified before batch {batch}"
                );
            }
        }
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_inside_the_budget_continues_and_one_more_halts() {
    // Batches of two: [e0, e1] [e2, e3] [e4, e5]; e1 and e2 fail, the budget is one.
    let fleet = Fleet::start(6).await;
    let path = fleet.write_config("batch = 2\nfailure_budget = 1", &[1, 2]);
    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    wait_state(&fleet, addr, "halted", 300).await;
    wake(addr).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = fleet.store();
    let latest = store.latest("site").unwrap().unwrap();
    let state = |i: usize| {
        store
            .deployment_of(&Fleet::name(i), latest.id)
            .unwrap()
            .map(|d| d.state.as_str().to_owned())
    };
    eventually(60, "e3 verified", || async {
        state(3).as_deref() == Some("verified")
    })
    .await;
    let states: Vec<Option<String>> = (0..6).map(state).collect();
    assert_eq!(
        states,
        [
            "verified",
            "rolled_back",
            "rolled_back",
            "verified",
            "waiting",
            "waiting"
        ]
        .map(|s| Some(s.to_owned()))
    );
    for i in [4, 5] {
        assert_eq!(sha256_served(fleet.addrs[i]), fleet.old_sha, "e{i}");
    }
    print_journal(&store, "over the budget");
    let journal = rollout_journal(&store);
    let steps: Vec<(&str, i64)> = journal
        .iter()
        .map(|e| (e.kind.as_str(), e.detail["batch"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(
        steps,
        [
            ("rollout.batch", 1),
            ("rollout.verified", 1),
            ("rollout.batch", 2),
            ("rollout.halted", 2),
        ]
    );
    assert_eq!(names(&journal[1].detail["failed"]), ["e1"]);
    assert_eq!(names(&journal[3].detail["failed"]), ["e1", "e2"]);
    // Abort: the waiting ones fail as aborted, and nothing runs them.
    let out = cli(&["rollout", "abort", "site"], &path).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(state(4).as_deref(), Some("failed"));
    assert_eq!(
        store
            .deployment_detail(store.deployment_of("e5", latest.id).unwrap().unwrap().id)
            .unwrap()["error"],
        "aborted"
    );
    wake(addr).await;
    wait_state(&fleet, addr, "aborted", 30).await;
    assert_eq!(
        rollout_journal(&store)
            .last()
            .map(|e| e.kind.clone())
            .as_deref(),
        Some("rollout.aborted")
    );
    drop(daemon);
}

/// Agent endpoints follow the same stages: the agent's desired state carries only the
/// deployments the rollout lets go (a held one is not shown, so the agent cannot deploy it
/// in its window), and the next stage appears once the canary is verified.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_sees_only_the_deployments_its_rollout_lets_go() {
    use tlsward::agent::AgentBackend;
    use tlsward::store::{DeploymentState, NewVersion, Secret};

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::root("rollout agents CA");
    let leaf = ca.leaf(&["fleet.test"]).build();
    let mut config = format!(
        r#"
[server]
state_dir = "{state}"

[acme]
directory = "https://127.0.0.1:1/dir"
http01_listen = "127.0.0.1:0"

[[certificate]]
name = "fleet"
domains = ["fleet.test"]

[certificate.rollout]
canary = ["a1"]
batch = 1
"#,
        state = dir.path().display(),
    );
    for (i, name) in ["a1", "a2", "a3"].iter().enumerate() {
        config.push_str(&format!(
            "\n[[target]]\naddress = \"fleet.test:{port}\"\nconnect_to = [\"127.0.0.1\"]\n\n\
             [[endpoint]]\nname = \"{name}\"\ncertificate = \"fleet\"\ntarget = \"fleet.test:{port}\"\n",
            port = 40_001 + i,
        ));
    }
    let path = dir.path().join("tlsward.toml");
    std::fs::write(&path, &config).unwrap();
    let cfg = tlsward::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut desired = tlsward::daemon::desired(&cfg, cfg.remediation.as_ref().unwrap());
    for e in &mut desired.endpoints {
        e.agent = Some("web-01".into());
        e.hook = Some("nginx".into());
    }
    let store = Arc::new(open_store(&dir.path().join("state")));
    let now = || tlsward::clock::unix_seconds(&tlsward::clock::SystemClock);
    store
        .upsert_certificate(
            &tlsward::store::CertificateRow {
                name: "fleet".into(),
                domains: vec!["fleet.test".into()],
                key_type: "ecdsa-p256".into(),
            },
            now(),
        )
        .unwrap();
    let order = store.begin_order("fleet", None, now()).unwrap();
    let facts = tlsward::cert::CertFacts::parse(leaf.der()).unwrap();
    let key = Secret::new(leaf.key.secret_der().to_vec());
    let chain = crate::util::pem_chain(&leaf.chain);
    let v = store
        .complete_order(
            order,
            &NewVersion {
                certificate: "fleet",
                serial: &facts.serial,
                sha256: &facts.sha256,
                not_before: facts.not_before.unix_timestamp(),
                not_after: facts.not_after.unix_timestamp(),
                chain_pem: &chain,
                key: &key,
                ari_id: None,
            },
            now(),
        )
        .unwrap();
    let ids: Vec<i64> = ["a1", "a2", "a3"]
        .iter()
        .map(|n| {
            store
                .queue_deployment(n, v.id, "renewed", None, now())
                .unwrap()
        })
        .collect();
    let mut reg = prometheus_client::registry::Registry::with_prefix("tlsward");
    let reconciler = tlsward::reconcile::Reconciler::new(
        store.clone(),
        desired.clone(),
        tlsward::issuer::Http01Responder::new(),
        Arc::new(tlsward::schedule::Results::default()),
        Arc::new(tlsward::clock::SystemClock),
        Arc::new(tlsward::hooks::Hooks::new(None).unwrap()),
        &mut reg,
    );
    let shutdown = tlsward::shutdown::Shutdown::new();
    let run = tokio::spawn(reconciler.clone().run(shutdown.clone()));
    let backend: Arc<dyn AgentBackend> = reconciler.clone();
    // Which endpoints the agent is told to deploy.
    let shown = |backend: &Arc<dyn AgentBackend>| -> Vec<String> {
        backend
            .endpoints_of("web-01")
            .into_iter()
            .filter(|e| e.deployment.is_some())
            .map(|e| e.name)
            .collect()
    };
    eventually(30, "only the canary shown", || {
        let backend = &backend;
        async move { shown(backend) == ["a1"] }
    })
    .await;
    store
        .set_deployment_state(
            ids[0],
            DeploymentState::Verified,
            &serde_json::json!({}),
            now(),
        )
        .unwrap();
    reconciler.update(desired.clone());
    eventually(30, "batch 1 shown once the canary is verified", || {
        let backend = &backend;
        async move { shown(backend) == ["a2"] }
    })
    .await;
    let journal: Vec<String> = store
        .journal_entries(Some("fleet"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("rollout."))
        .map(|e| format!("{} {}", e.kind, e.detail["batch"]))
        .collect();
    assert_eq!(
        journal,
        ["rollout.canary 0", "rollout.verified 0", "rollout.batch 1"]
    );
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
}
