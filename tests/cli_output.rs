//! What operators read, from the real binary: logs without colour codes off a terminal,
//! `serve`'s start and reload lines, the probe table at a fixed width with its summary,
//! `deploy list` and `deploy show -o json`, `--resolve` mistakes, and what a rollback of a
//! hook that only talked to a device says (`hook run --rollback`, `deploy run-now`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cert_export::{Ran, Stored};
use crate::util::appliance::{Appliance, ApplianceMode};
use crate::util::daemon::Endpoints;
use crate::util::http::{get, request};
use crate::util::wait::eventually;
use crate::util::{TestCa, TlsServer, pem_chain, real_now};

async fn tlsward(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(args)
        .env_remove("TLSWARD_LOG")
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run tlsward");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// The probe table

/// A good endpoint whose issuer has a long name, one that expires soon and an expired one.
struct Three {
    good: TlsServer,
    soon: TlsServer,
    expired: TlsServer,
    dir: tempfile::TempDir,
}

const LONG_ISSUER: &str = "Output Intermediate CA for Rather Long Issuer Names, Example Org";

impl Three {
    async fn start() -> Self {
        let root = TestCa::root_at("Output Root", real_now());
        let int = root.intermediate(LONG_ISSUER);
        let good = TlsServer::leaf(&int.leaf(&["good.test"]).valid(-10.0, 80.0).build())
            .start()
            .await;
        // 90 days long, 20 left: under a third of its life, over a sixth: a warning.
        let soon = TlsServer::leaf(&int.leaf(&["soon.test"]).valid(-70.0, 20.0).build())
            .start()
            .await;
        let expired = TlsServer::leaf(&int.leaf(&["expired.test"]).valid(-30.0, -2.0).build())
            .start()
            .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
        Self {
            good,
            soon,
            expired,
            dir,
        }
    }

    async fn probe(&self, extra: &[&str], env: &[(&str, &str)]) -> Ran {
        let ca = self.dir.path().join("root.pem");
        let mut args: Vec<String> = vec![
            "probe".into(),
            "--no-system-roots".into(),
            "--ca-file".into(),
            ca.display().to_string(),
        ];
        for (name, s) in [
            ("good.test", &self.good),
            ("soon.test", &self.soon),
            ("expired.test", &self.expired),
        ] {
            let port = s.addr.port();
            args.push("--resolve".into());
            args.push(format!("{name}:{port}:127.0.0.1"));
            args.push(format!("{name}:{port}"));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tlsward(&refs, env).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_table_fits_the_terminal_width_and_ends_with_a_summary() {
    let t = Three::start().await;
    let table = ["-o", "table", "--color", "never"];

    // As wide as the content when nothing says how wide the terminal is (stdout is a pipe).
    let wide = t.probe(&table, &[]).await;
    assert_eq!(wide.code, Some(2), "{wide:?}");
    let lines: Vec<&str> = wide.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", wide.stdout);
    assert!(lines[1].contains(LONG_ISSUER), "{}", wide.stdout);
    assert!(lines[0].contains("NOT AFTER") && lines[0].contains("ADDRESS"));
    assert_eq!(lines[4], "1 ok, 1 warning, 1 critical");

    // 80 columns: every line fits, long cells end with an ellipsis, nothing wraps.
    let narrow = t.probe(&table, &[("COLUMNS", "80")]).await;
    assert_eq!(narrow.code, Some(2), "{narrow:?}");
    let lines: Vec<&str> = narrow.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", narrow.stdout);
    for line in &lines {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line:?}",
            line.chars().count()
        );
    }
    // NOT AFTER and ISSUER give way; targets, addresses and the reason's label stay whole.
    let header = lines[0];
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["STATUS", "TARGET", "ADDRESS", "DAYS", "REASON"],
        "{}",
        narrow.stdout
    );
    assert!(
        !narrow.stdout.contains("Output Intermediate"),
        "{}",
        narrow.stdout
    );
    let good = lines.iter().find(|l| l.starts_with("ok ")).unwrap();
    assert!(
        good.contains(&format!("good.test:{}", t.good.addr.port())),
        "{good}"
    );
    let expired = lines.iter().find(|l| l.starts_with("critical")).unwrap();
    assert!(
        expired.contains(&format!("expired.test:{}", t.expired.addr.port()))
            && expired.contains("cert_expired: ")
            && expired.ends_with('…'),
        "{expired}"
    );
    assert!(lines.iter().any(|l| l.starts_with("warning")));
    assert_eq!(lines[4], "1 ok, 1 warning, 1 critical");

    // 40 columns: columns go, the status, target and reason stay.
    let tiny = t.probe(&table, &[("COLUMNS", "40")]).await;
    let lines: Vec<&str> = tiny.stdout.lines().collect();
    for line in &lines {
        assert!(line.chars().count() <= 40, "{line:?}");
    }
    assert!(
        lines[0].starts_with("STATUS")
            && lines[0].contains("TARGET")
            && lines[0].contains("REASON")
            && !lines[0].contains("NOT AFTER")
            && !lines[0].contains("ADDRESS"),
        "{}",
        tiny.stdout
    );

    // JSON has no summary: the whole output parses.
    let json = t.probe(&["-o", "json"], &[("COLUMNS", "80")]).await;
    let all: Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    assert!(
        all[0]["leaf"]["issuer"]
            .as_str()
            .is_some_and(|i| i.contains(LONG_ISSUER)),
        "{all}"
    );
}

// ---------------------------------------------------------------------------------------
// Logs

/// `tlsward serve` as a child with its stderr collected.
struct Serving {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Serving {
    async fn start(config: &std::path::Path, global: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(global)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env_remove("TLSWARD_LOG")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tlsward serve");
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The first log line containing `text`, waiting up to 30 s for it.
    async fn line(&self, text: &str) -> String {
        let log = self.log.clone();
        eventually(30, text, || {
            let log = log.clone();
            async move { log.lock().unwrap().contains(text) }
        })
        .await;
        self.log()
            .lines()
            .find(|l| l.contains(text))
            .unwrap()
            .to_owned()
    }

    /// The address in the start line's `listen=` field.
    async fn addr(&self) -> SocketAddr {
        let start = self.line("tlsward serving").await;
        let plain = anstream::adapter::strip_str(&start).to_string();
        let field = plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap_or_else(|| panic!("no listen= in {start:?}"));
        field.parse().unwrap_or_else(|e| panic!("{field}: {e}"))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_its_start_and_reloads_at_the_default_level_without_colour_off_a_terminal() {
    let e = Endpoints::start().await;
    let config = e.write(&e.config("[server]\nstate_dir = \"state\"\n"));
    // stderr is a pipe, as under systemd or with `2> file`: no colour codes, whatever the
    // terminal type.
    let serving = Serving::start(&config, &[]).await;
    let addr = serving.addr().await;
    let start = serving.line("tlsward serving").await;
    for field in [
        format!("version={}", env!("CARGO_PKG_VERSION")),
        format!("listen={addr}"),
        "targets=3".to_owned(),
        " INFO ".to_owned(),
    ] {
        assert!(start.contains(&field), "{field:?} missing from {start:?}");
    }
    assert_eq!(get(addr, "/-/healthy").await.status, 200);
    let reload = request(addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    let reloaded = serving.line("config reloaded").await;
    assert!(
        reloaded.contains(" INFO ") && reloaded.contains("targets=3"),
        "{reloaded}"
    );
    let log = serving.log();
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log:\n{log:?}"
    );
    drop(serving);

    // --color always is obeyed even off a terminal.
    let coloured = Serving::start(&config, &["--color", "always"]).await;
    coloured.addr().await;
    assert!(coloured.log().contains("\x1b["), "{:?}", coloured.log());
}

/// Runs `tlsward ARGS` with stdout and stderr on a terminal (a pseudo-terminal from
/// `script`), debug logs on, and returns what the terminal showed.
async fn on_a_terminal(args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_tlsward");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{bin} {args}"), "/dev/null"])
        .env("TLSWARD_LOG", "debug")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("script (util-linux) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn color_never_keeps_logs_plain_on_a_terminal() {
    // A refused connection: one debug line at least ("tlsward starting"), JSON on stdout
    // (never coloured), so any escape code is the log's.
    let port = crate::util::unique_port();
    let auto = on_a_terminal(&format!("probe -o json 127.0.0.1:{port}")).await;
    assert!(auto.contains("tlsward starting"), "{auto:?}");
    assert!(
        auto.contains("\x1b["),
        "a terminal gets colour by default: {auto:?}"
    );
    let never = on_a_terminal(&format!("--color never probe -o json 127.0.0.1:{port}")).await;
    assert!(never.contains("tlsward starting"), "{never:?}");
    assert!(!never.contains('\x1b'), "{never:?}");
}

// ---------------------------------------------------------------------------------------
// deploy list and show

#[tokio::test(flavor = "multi_thread")]
async fn deploy_list_lines_up_and_deploy_show_json_is_only_json() {
    let s = Stored::new(
        "[[target]]\naddress = \"127.0.0.1:8443\"\n[[target]]\naddress = \"127.0.0.1:8444\"\n\n\
         [[endpoint]]\nname = \"web\"\ncertificate = \"www\"\ntarget = \"127.0.0.1:8443\"\n\n\
         [[endpoint]]\nname = \"a-rather-long-endpoint-name\"\ncertificate = \"www\"\ntarget = \"127.0.0.1:8444\"\n",
    );
    let store = tlsward::store::Store::open_existing(
        &s.path("tlsward.db"),
        &tlsward::store::KeySource::File(s.path("store.key")),
    )
    .unwrap();
    let web = store
        .queue_deployment("web", s.version, "renewed", None, 4)
        .unwrap();
    let long = store
        .queue_deployment("a-rather-long-endpoint-name", s.version, "foreign", None, 4)
        .unwrap();
    assert!(
        store
            .claim_deployment(web, &serde_json::json!({}), 5)
            .unwrap()
    );
    let detail = serde_json::json!({ "error": "the endpoint did not serve it", "rollback": { "restored": ["/etc/x.crt"] } });
    assert!(
        store
            .set_deployment_state(web, tlsward::store::DeploymentState::RolledBack, &detail, 6)
            .unwrap()
    );
    drop(store);
    let config = s.config.to_str().unwrap();

    let list = tlsward(&["deploy", "list", "--all", "--config", config], &[]).await;
    assert_eq!(list.code, Some(0), "{list:?}");
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    // Every column starts where its header does, in every row.
    let header = lines[0];
    for name in [
        "ENDPOINT",
        "SHA256",
        "STATE",
        "REASON",
        "WINDOW",
        "WINDOW OPENS",
    ] {
        let at = header
            .match_indices(name)
            .map(|(i, _)| i)
            .find(|i| *i == 0 || header.as_bytes()[i - 1] == b' ')
            .unwrap();
        for row in &lines[1..] {
            let b = row.as_bytes();
            assert!(
                b.len() > at && b[at - 1] == b' ' && b[at] != b' ',
                "{name} at {at} in\n{}",
                list.stdout
            );
        }
    }
    assert!(
        list.stdout.contains("rolled_back") && list.stdout.contains("a-rather-long-endpoint-name")
    );

    let show = tlsward(
        &[
            "deploy",
            "show",
            &web.to_string(),
            "-o",
            "json",
            "--config",
            config,
        ],
        &[],
    )
    .await;
    assert_eq!(show.code, Some(0), "{show:?}");
    let v: Value =
        serde_json::from_str(&show.stdout).unwrap_or_else(|e| panic!("{e}: {}", show.stdout));
    assert_eq!(v["id"], web);
    assert_eq!(v["endpoint"], "web");
    assert_eq!(v["state"], "rolled_back");
    assert_eq!(v["reason"], "renewed");
    assert_eq!(v["version"], s.version);
    assert_eq!(v["detail"], detail);
    assert!(v["sha256"].as_str().is_some_and(|h| h.len() == 64), "{v}");
    // The text form stays for people.
    let text = tlsward(
        &["deploy", "show", &long.to_string(), "--config", config],
        &[],
    )
    .await;
    assert!(
        text.stdout.starts_with(&format!(
            "deployment {long} to a-rather-long-endpoint-name: waiting (foreign)\n"
        )),
        "{}",
        text.stdout
    );
}

// ---------------------------------------------------------------------------------------
// --resolve

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_resolve_is_called_invalid_resolve() {
    let run = tlsward(&["probe", "--resolve", "good.test:443", "good.test"], &[]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains(
            "invalid --resolve \"good.test:443\": missing address (expected NAME:PORT:ADDR)"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("invalid target"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// Device hooks: nothing to undo on this host

const TOKEN: &str = "output-token";

/// An appliance whose API is trusted through `api-ca.pem` in `dir`, and the data CA of its
/// TLS listener (`data-ca.pem`), which serves a leaf for www.tlsward.test.
async fn appliance(dir: &std::path::Path, mode: ApplianceMode) -> Appliance {
    let api_ca = TestCa::root_at("Output Appliance API CA", real_now());
    let data_ca = TestCa::root_at("Output Appliance Data CA", real_now());
    std::fs::write(dir.join("api-ca.pem"), api_ca.pem()).unwrap();
    std::fs::write(dir.join("data-ca.pem"), data_ca.pem()).unwrap();
    Appliance::start(
        &api_ca.leaf(&["127.0.0.1"]).build(),
        TlsServer::leaf(&data_ca.leaf(&["www.tlsward.test"]).build()),
        TOKEN,
        mode,
    )
    .await
}

fn hook_toml(a: &Appliance) -> String {
    format!(
        "[hook.appliance]\ncomponent = \"{component}\"\nhttp_hosts = [\"127.0.0.1:{api}\"]\n\
         http_ca_file = \"api-ca.pem\"\nkey_access = true\n\n\
         [hook.appliance.settings]\nurl = \"https://127.0.0.1:{api}\"\ntoken = \"{TOKEN}\"\n\
         password = \"upload-pass\"\npoll_interval = \"0.05\"\n",
        component = crate::util::hooks::component("http-appliance").display(),
        api = a.api_port(),
    )
}

/// A state directory kept between runs, so the compiled Python hook is reused.
fn state_dir() -> String {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cli-output-state")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn hook_run_rollback_of_a_device_hook_says_there_is_nothing_to_undo_here() {
    let dir = tempfile::tempdir().unwrap();
    let a = appliance(dir.path(), ApplianceMode::Honest).await;
    let config = dir.path().join("tlsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"{}\"\n\n{}",
            state_dir(),
            hook_toml(&a)
        ),
    )
    .unwrap();
    let root = TestCa::root_at("Output Bundle Root", real_now());
    let leaf = root
        .intermediate("Output Bundle Int")
        .leaf(&["www.tlsward.test"])
        .build();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("cert.pem"), pem_chain(&leaf.chain)).unwrap();
    std::fs::write(
        bundle.join("key.pem"),
        ::pem::encode(&::pem::Pem::new(
            "PRIVATE KEY",
            leaf.key.secret_der().to_vec(),
        )),
    )
    .unwrap();
    let run = tlsward(
        &[
            "hook",
            "run",
            "appliance",
            "--config",
            config.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            "--rollback",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("  http(POST https://127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("result: ok: activated certificate"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            "  rollback: nothing to undo on this host: the hook only made HTTP calls; a device \
             is rolled back by deploying the previous version to it (a failed deployment does \
             that itself)\n"
        ),
        "{}",
        run.stdout
    );
    // The appliance kept what the run activated: a rollback here does not touch it.
    assert_eq!(a.active_sha256(), tlsward::cert::sha256_hex(leaf.der()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_deployment_to_a_device_is_not_a_failed_rollback() {
    let s_dir = state_dir();
    // The store's version is uploaded; the appliance refuses to activate it and keeps serving
    // its own certificate, which is valid: nothing was broken, and there is nothing to put back.
    let tmp = tempfile::tempdir().unwrap();
    let a = appliance(tmp.path(), ApplianceMode::RejectActivation).await;
    let port = a.data_port();
    let s = Stored::with_state_dir(
        &s_dir,
        &format!(
            "{hook}\n[profile.appliance]\nca_files = [\"data-ca.pem\"]\nsystem_roots = false\n\n\
             [[target]]\naddress = \"www.tlsward.test:{port}\"\nprofile = \"appliance\"\nconnect_to = [\"127.0.0.1\"]\n\n\
             [[endpoint]]\nname = \"lb\"\ncertificate = \"www\"\ntarget = \"www.tlsward.test:{port}\"\nhook = \"appliance\"\n",
            hook = hook_toml(&a),
        ),
    );
    for f in ["api-ca.pem", "data-ca.pem"] {
        std::fs::copy(tmp.path().join(f), s.path(f)).unwrap();
    }
    let run = s.tlsward(&["deploy", "run-now", "lb"], &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains(
            "  rollback: none: no earlier version was verified on this endpoint: nothing to put back\n"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("\"status\":\"ok\""), "{}", run.stdout);
    assert!(
        run.stdout.trim_end().ends_with(": failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("nothing to roll back")
            && run.stderr.contains("it still serves a valid certificate")
            && run.stderr.contains(" WARN "),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("rollback failed") && !run.stderr.contains("may be broken"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    let served = a.serving_sha256();
    assert_ne!(served, tlsward::cert::sha256_hex(s.leaf.der()));
}

// ---------------------------------------------------------------------------------------
// /probe of any target

/// The value of `probe_timeout_seconds` in a /probe answer.
fn probe_timeout(body: &str) -> f64 {
    crate::util::exposition::metric(body, "probe_timeout_seconds", &[])
        .unwrap_or_else(|| panic!("no probe_timeout_seconds in\n{body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_of_an_unconfigured_target_uses_the_defaults_timeout() {
    // [defaults] timeout = "3s"; the shipped https profile sets none (10 s built in).
    let e = Endpoints::start().await;
    let config = e.write(&e.config("[server]\nprobe_targets = \"any\"\nstate_dir = \"state\"\n"));
    let d = crate::util::daemon::start(&config).await;
    let closed = crate::util::unique_port();
    for profile in ["", "&profile=https", "&profile=test"] {
        let r = get(
            d.addr,
            &format!("/probe?target=127.0.0.1:{closed}{profile}"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        crate::util::exposition::assert_metric(&r.body, "probe_success", &[], 0.0);
        assert_eq!(probe_timeout(&r.body), 3.0, "{profile}: {}", r.body);
    }
    // A shorter scrape timeout still wins over it.
    let r = request(
        d.addr,
        "GET",
        &format!("/probe?target=127.0.0.1:{closed}"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "2")],
        None,
    )
    .await;
    assert_eq!(probe_timeout(&r.body), 1.5, "{}", r.body);
}
