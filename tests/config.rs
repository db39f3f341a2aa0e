//! Config validation: every problem at once with file, line and key, from a table of
//! fixtures; every shipped profile loads; the example config validates.

use std::path::Path;

use tlsward::config::{SHIPPED_PROFILES, load};

use crate::util::fixture;

/// The problems of a fixture, with its directory stripped from the file names.
fn problems(name: &str) -> Vec<String> {
    let path = fixture(&format!("config/{name}"));
    let dir = format!("{}/", path.parent().unwrap().display());
    let err = load(&path).expect_err("the fixture is invalid");
    err.problems.iter().map(|p| p.replace(&dir, "")).collect()
}

#[test]
fn invalid_configs_report_every_problem_with_file_line_and_key() {
    let table: &[(&str, &[&str])] = &[
        (
            "invalid-unknown-profile.toml",
            &[
                r#"invalid-unknown-profile.toml:6: target[1].profile: unknown profile "htps" (did you mean "https"?)"#,
            ],
        ),
        (
            "invalid-unknown-key.toml",
            &[
                "invalid-unknown-key.toml:5: target[0].adress: unknown field `adress`, expected one of `address`, `profile`, `interval`, `timeout`, `server_name`, `connect_to`, `all_addresses`, `warn_days`, `crit_days`, `warn`, `crit`, `labels`; `address` is then missing (checking stopped here: fix this to see any further problems)",
            ],
        ),
        (
            "invalid-type.toml",
            &[
                "invalid-type.toml:5: defaults.concurrency: invalid type: string \"many\", expected i64",
            ],
        ),
        (
            // Unknown keys and wrong types do not hide each other, nor the checks after them.
            "invalid-shape-many.toml",
            &[
                "invalid-shape-many.toml:2: server.listn: unknown field `listn`, expected one of `listen`, `state_dir`, `max_connections`, `header_timeout`, `idle_timeout`, `probe_targets`, `metrics`, `shard`, `first_round`, `web`",
                "invalid-shape-many.toml:4: defualts: unknown field `defualts`, expected one of `server`, `defaults`, `targets_files`, `file_sd`, `file_sd_refresh`, `profiles_dir`, `target`, `profile`, `store`, `acme`, `certificate`, `endpoint`, `window`, `hook`, `deploy`, `backup`, `agents`",
                "invalid-shape-many.toml:8: defaults.timeout: invalid type: integer `5`, expected a string",
                "invalid-shape-many.toml:13: target[0].labels.team: invalid type: integer `1`, expected a string",
                "invalid-shape-many.toml:14: target[0].profil: unknown field `profil`, expected one of `address`, `profile`, `interval`, `timeout`, `server_name`, `connect_to`, `all_addresses`, `warn_days`, `crit_days`, `warn`, `crit`, `labels`",
                r#"invalid-shape-many.toml:17: target[1].address: invalid target "www.example.org:99999": "99999" is not a port (1-65535)"#,
            ],
        ),
        (
            // Every mistake of an endpoint at once; a profile whose CA file is missing is
            // reported for that, never as an unknown profile where it is used.
            "invalid-endpoints.toml",
            &[
                "invalid-endpoints.toml:6: profile.corp.ca_files: missing.pem: No such file or directory (os error 2)",
                r#"invalid-endpoints.toml:16: endpoint[0].certificate: unknown certificate "www" (did you mean "web"?)"#,
                "invalid-endpoints.toml:17: endpoint[0].target: no [[target]] has address zzz:443; add one so it is probed",
                r#"invalid-endpoints.toml:18: endpoint[0].window: unknown window "nope""#,
                r#"invalid-endpoints.toml:19: endpoint[0].hook: unknown hook "nohook""#,
            ],
        ),
        (
            "invalid-endpoint-no-acme.toml",
            &[
                "invalid-endpoint-no-acme.toml:5: endpoint[0]: endpoints are bound to managed certificates, which need an [acme] section",
            ],
        ),
        (
            "invalid-durations.toml",
            &[
                r#"invalid-durations.toml:2: defaults.interval: "500000000000y": must be at most 366d"#,
                r#"invalid-durations.toml:3: defaults.timeout: "400days": must be at most 366d"#,
                r#"invalid-durations.toml:7: target[0].interval: "1y 2d": must be at most 366d"#,
            ],
        ),
        (
            "invalid-profile.toml",
            &[
                r#"invalid-profile.toml:2: profile.corp.protocol: unknown protocol "smtps" (expected one of tls, smtp, imap, pop3, ftp, ldap, postgres, xmpp)"#,
                "invalid-profile.toml:5: profile.mtls: client_cert and client_key go together",
            ],
        ),
        (
            "invalid-many.toml",
            &[
                "invalid-many.toml:2: server.listen: expected IP:PORT, e.g. 127.0.0.1:9219",
                "invalid-many.toml:5: server.web.basic_auth_users.admin: must be a bcrypt hash ($2b$...), never a plain password",
                r#"invalid-many.toml:8: defaults.interval: "soon": expected number at 0 (use e.g. 500ms, 10s, 5m)"#,
                "invalid-many.toml:9: defaults.concurrency: must be between 1 and 100000",
                "invalid-many.toml:10: defaults.crit_days: the critical threshold 30d comes before the warning threshold 21d,33.3% for a 398-day certificate (30.0 > 21.0 days left)",
                r#"invalid-many.toml:13: target[0].address: invalid target "www.example.org:99999": "99999" is not a port (1-65535)"#,
                r#"invalid-many.toml:17: target[1].labels: "target" is reserved by tlsward"#,
                r#"invalid-many.toml:17: target[1].labels: "team-name" is not a valid Prometheus label name"#,
                r#"invalid-many.toml:20: target[2].address: www.example.org:443 with profile "https" is already target[1]"#,
                r#"invalid-many.toml:25: target[3].connect_to: "not-an-ip" is not an IP address"#,
                r#"invalid-many.toml:26: target[3].timeout: "0s": must be greater than zero"#,
            ],
        ),
        (
            "invalid-server.toml",
            &[
                "invalid-server.toml:2: server.max_connections: 0 is outside 1..=1000000",
                "invalid-server.toml:3: server.header_timeout: 2h is outside 100ms..=1h",
                "invalid-server.toml:4: server.idle_timeout: 50ms is outside 100ms..=1h",
                r#"invalid-server.toml:5: server.probe_targets: "10.0.0.1/8": has bits set past the prefix length; write 10.0.0.0/8"#,
                r#"invalid-server.toml:5: server.probe_targets: "a.*.example.org": a wildcard may only be the whole first label (*.example.org)"#,
                r#"invalid-server.toml:6: server.metrics: "slim" is not "full" or "lean""#,
                "invalid-server.toml:7: server.shard: the shard 5 is outside 1..=4",
                r#"invalid-server.toml:8: server.first_round: "soon" is not "spread" or "now""#,
            ],
        ),
        (
            "invalid-windows.toml",
            &[
                r#"invalid-windows.toml:14: endpoint[0].window: unknown window "weekend-nigth" (did you mean "weekend-night"?)"#,
                "invalid-windows.toml:17: window.weekend-night.days: `sonday` is not a weekday (use mon, tue, wed, thu, fri, sat, sun, weekdays, weekend or daily)",
                "invalid-windows.toml:24: window.nightly.start: `24:30` is not a time of day (use HH:MM, 24-hour)",
                r#"invalid-windows.toml:30: window.far.duration: 8days is longer than a week; use days = ["daily"] with a shorter duration"#,
                "invalid-windows.toml:31: window.far.tz: `Europe/Atlantis` is not a known time zone (use an IANA name such as Europe/Berlin or UTC)",
                "invalid-windows.toml:37: window.mars.tz: `Mars/Olympus_Mons` is not a known time zone (use an IANA name such as Europe/Berlin or UTC)",
            ],
        ),
        (
            "invalid-rollout.toml",
            &[
                r#"invalid-rollout.toml:12: certificate[0].rollout.canary: "web-1" is not an endpoint of certificate "www" (did you mean "web"?)"#,
                r#"invalid-rollout.toml:12: certificate[0].rollout.canary: "wbe" is not an endpoint of certificate "www" (did you mean "web"?)"#,
                r#"invalid-rollout.toml:13: certificate[0].rollout.batch: must be a number of endpoints (1 or more) or a percentage from "1%" to "100%""#,
                r#"invalid-rollout.toml:14: certificate[0].rollout.pause: "ten minutes": expected number at 0 (use e.g. 500ms, 10s, 5m)"#,
                "invalid-rollout.toml:15: certificate[0].rollout.failure_budget: must be a number of failed endpoints, 0 or more",
                "invalid-rollout.toml:22: certificate[1].rollout.canary: must be 0 or more",
                r#"invalid-rollout.toml:23: certificate[1].rollout.batch: must be a number of endpoints (1 or more) or a percentage from "1%" to "100%""#,
            ],
        ),
        (
            "invalid-hooks.toml",
            &[
                r#"invalid-hooks.toml:14: endpoint[0].hook: unknown hook "ngnix" (did you mean "nginx"?)"#,
                r#"invalid-hooks.toml:20: endpoint[1].settings.key_path: settings without a hook: add hook = "NAME""#,
                "invalid-hooks.toml:23: hook.nginx.component: no-such-hook.wasm is not a file (build the stock hooks with scripts/build-hooks)",
                r#"invalid-hooks.toml:24: hook.nginx.write_paths: "/etc/nginx/../ssl" contains '..'"#,
                r#"invalid-hooks.toml:24: hook.nginx.write_paths: "certs" is not an absolute path"#,
                r#"invalid-hooks.toml:25: hook.nginx.commands: "nginx" is not an absolute path (write the program's full path, e.g. "/usr/sbin/nginx")"#,
                "invalid-hooks.toml:25: hook.nginx.commands: an empty argv",
                r#"invalid-hooks.toml:26: hook.nginx.http_hosts: "LB1.example.net:443" is not a lowercase host:port (e.g. "lb1.example.net:443")"#,
                r#"invalid-hooks.toml:26: hook.nginx.http_hosts: "lb2.example.net" is not a lowercase host:port (e.g. "lb1.example.net:443")"#,
                "invalid-hooks.toml:27: hook.nginx.memory_mb: 8 MiB is outside 16..=4096 MiB",
                "invalid-hooks.toml:28: hook.nginx.timeout: 2h is outside 1s..=1h",
                "invalid-hooks.toml:32: hook.bad-ca.http_ca_file: missing-ca.pem: No such file or directory (os error 2)",
                r#"invalid-hooks.toml:35: deploy.verify_interval: "0s": must be greater than zero"#,
                "invalid-hooks.toml:36: deploy.emergency_days: must be a number of days, 0 or more",
                r#"invalid-hooks.toml:40: hook.wide.write_paths: "/" grants the whole file system; name the directories the hook writes in (e.g. "/etc/nginx/certs")"#,
                r#"invalid-hooks.toml:41: hook.wide.commands: "bin/true" is not an absolute path (write the program's full path, e.g. "/usr/sbin/nginx")"#,
                "invalid-hooks.toml:42: hook.wide.memory_mb: 17592186044544 MiB is outside 16..=4096 MiB",
                "invalid-hooks.toml:45: hook.native.component: not a WebAssembly component (it starts with ELF: a native executable or library)",
                "invalid-hooks.toml:48: hook.core.component: not a WebAssembly component (it is a core WebAssembly module of version 1; make it a component with `wasm-tools component new`, or build it with scripts/build-hooks)",
            ],
        ),
        (
            // `[agents]` key by key, agent names, a hook for each agent endpoint, and
            // key = "agent" only for one agent endpoint's own certificate.
            "invalid-agents.toml",
            &[
                r#"invalid-agents.toml:2: agents.listen: expected IP:PORT, e.g. 10.0.0.1:8443"#,
                r#"invalid-agents.toml:3: agents.names[1]: "not a name" is not a DNS name or an IP address"#,
                "invalid-agents.toml:4: agents.identity_lifetime: must be at least 1h",
                "invalid-agents.toml:5: agents.max_connections: 0 is outside 1..=1000000",
                r#"invalid-agents.toml:16: certificate[0].key: key = "agent" needs exactly one endpoint with agent = "NAME" using this certificate (2 endpoints use it); a shared certificate keeps its central key, sealed to each agent"#,
                r#"invalid-agents.toml:21: certificate[1].key: key = "agent" needs exactly one endpoint with agent = "NAME" using this certificate (no endpoint uses it); a shared certificate keeps its central key, sealed to each agent"#,
                r#"invalid-agents.toml:26: certificate[2].key: "mine" is not a key mode (the only one is "agent"; leave key out for a central key)"#,
                r#"invalid-agents.toml:44: endpoint[1].agent: "-bad name" is not an agent name (letters, digits, '.', '_', '-', at most 63, starting with a letter or digit)"#,
                r#"invalid-agents.toml:51: endpoint[2].hook: an agent endpoint needs hook = "NAME" (a hook in the agent's config)"#,
            ],
        ),
        (
            "invalid-agents-no-acme.toml",
            &[
                "invalid-agents-no-acme.toml:1: agents: the agent API deploys managed certificates, which need an [acme] section",
            ],
        ),
        (
            "invalid-agent-endpoint-no-agents.toml",
            &[
                "invalid-agent-endpoint-no-agents.toml:15: endpoint[0].agent: agent endpoints need an [agents] section (the agent API)",
            ],
        ),
    ];
    for (name, expected) in table {
        assert_eq!(problems(name), *expected, "{name}");
    }
}

#[test]
fn a_valid_config_becomes_module_settings() {
    let config = load(&fixture("config/valid-full.toml")).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:19219");
    assert_eq!(config.concurrency, 10);
    assert_eq!(config.first_round, tlsward::schedule::FirstRound::Now);
    assert_eq!(config.targets.len(), 3);
    let mx = &config.targets[0];
    assert_eq!(
        (&*mx.name, &*mx.profile),
        ("mx.example.org:25", "corp-smtp")
    );
    assert_eq!(mx.labels, [("team".to_owned(), "mail".to_owned())]);
    assert_eq!(mx.interval.as_secs(), 120);
    assert_eq!(mx.prober.module().protocol, tlsward::probe::Protocol::Smtp);
    assert_eq!(mx.prober.module().timeout.as_secs(), 5);
    // The defaults' warn_days (30.5) win over the profile's own (10).
    assert_eq!(
        mx.prober.module().policy.warn(),
        tlsward::cert::Threshold::days(30.5)
    );
    let v6 = &config.targets[1];
    assert!(v6.all_addresses);
    assert_eq!(v6.target.server_name.as_deref(), Some("v6.example.org"));
    let db = &config.targets[2];
    assert_eq!(db.target.connect_to.len(), 2);
    assert_eq!(db.target.connect_to[1].to_string(), "[2001:db8::2]:5432");
    assert_eq!(config.default_profile, "https");
    assert!(config.profiles.contains_key("corp-smtp"));
}

#[test]
fn every_shipped_profile_file_is_built_in_and_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| e.path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut built_in: Vec<String> = SHIPPED_PROFILES
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    built_in.sort();
    assert_eq!(
        files, built_in,
        "probes/ and SHIPPED_PROFILES must list the same profiles"
    );
    // Loading them from the folder as a profiles_dir validates each file on its own too.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!("profiles_dir = {:?}\n", dir.display().to_string()),
    )
    .unwrap();
    let config = load(&cfg).unwrap();
    for name in &files {
        assert!(config.profiles.contains_key(name), "{name}");
    }
    assert_eq!(
        config.profiles["smtp-starttls"].module().protocol,
        tlsward::probe::Protocol::Smtp
    );
    assert_eq!(
        config.profiles["postgres"].module().protocol,
        tlsward::probe::Protocol::Postgres
    );
}

#[test]
fn the_example_config_validates() {
    // scripts/run makes demo/ca.pem; here a stand-in CA file is enough for validation.
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tlsward.example.toml");
    std::fs::copy(&example, tmp.path().join("tlsward.toml")).unwrap();
    std::fs::create_dir(tmp.path().join("demo")).unwrap();
    let ca = crate::util::TestCa::root("Demo");
    std::fs::write(tmp.path().join("demo/ca.pem"), ca.pem()).unwrap();
    let config = load(&tmp.path().join("tlsward.toml")).unwrap();
    assert_eq!(config.targets.len(), 2);
    assert_eq!(config.listen.to_string(), "127.0.0.1:9219");
}

#[test]
fn the_example_issuance_section_validates_with_its_change_window() {
    // Uncomment the example's ACME section (everything after its heading) and load it.
    let tmp = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tlsward.example.toml"))
            .unwrap();
    let (head, tail) = example.split_once("# Issuing and renewing").unwrap();
    let tail: String = tail
        .lines()
        .skip(1)
        .map(|l| {
            format!(
                "{}\n",
                l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#'))
            )
        })
        .collect();
    std::fs::write(tmp.path().join("tlsward.toml"), format!("{head}{tail}")).unwrap();
    std::fs::create_dir(tmp.path().join("demo")).unwrap();
    let ca = crate::util::TestCa::root("Demo");
    std::fs::write(tmp.path().join("demo/ca.pem"), ca.pem()).unwrap();
    std::fs::create_dir_all(tmp.path().join("hooks/dist")).unwrap();
    std::os::unix::fs::symlink(
        crate::util::hooks::component("pem-files"),
        tmp.path().join("hooks/dist/pem-files.wasm"),
    )
    .unwrap();
    // The endpoints' targets must be probed too.
    let mut text = std::fs::read_to_string(tmp.path().join("tlsward.toml")).unwrap();
    text.push_str("\n[[target]]\naddress = \"www.example.org:443\"\n");
    text.push_str("\n[[target]]\naddress = \"app.example.org:443\"\n");
    std::fs::write(tmp.path().join("tlsward.toml"), text).unwrap();
    let config = load(&tmp.path().join("tlsward.toml")).unwrap();
    let hook = &config.hooks["nginx"];
    assert_eq!(hook.grant.write_paths, [Path::new("/etc/nginx/certs")]);
    assert_eq!(hook.grant.commands.len(), 2);
    assert_eq!(hook.settings["reload"], "/usr/sbin/nginx -s reload");
    let remediation = config.remediation.expect("the [acme] section is on");
    assert_eq!(remediation.endpoints[0].hook.as_deref(), Some("nginx"));
    assert_eq!(
        remediation.endpoints[0].settings["key_path"],
        "/etc/nginx/certs/www.key"
    );
    assert_eq!(remediation.deploy.emergency_days, 3.0);
    let window = remediation.endpoints[0]
        .window
        .as_ref()
        .expect("the endpoint is bound to its window");
    assert_eq!(window.name(), "weekend-night");
    // The agent endpoint: its hook is the agent's, and its certificate's key is that agent's.
    let app = &remediation.endpoints[1];
    assert_eq!(
        (app.agent.as_deref(), app.hook.as_deref()),
        (Some("app-01"), Some("nginx"))
    );
    assert_eq!(
        remediation.certificates[1].agent_key.as_deref(),
        Some("app-01")
    );
    assert_eq!(remediation.certificates[0].agent_key, None);
    let agents = config.agents.expect("the [agents] section is on");
    assert_eq!(agents.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(agents.identity_lifetime.as_secs(), 30 * 86_400);
    assert_eq!(agents.max_connections, 4096);
    assert_eq!(&agents.names[..3], ["localhost", "127.0.0.1", "::1"]);
    // Saturday 2026-11-28 02:30 in Berlin (CET, UTC+1) is inside; Friday's is not.
    assert!(window.is_open(time::macros::datetime!(2026-11-28 01:30 UTC)));
    assert!(!window.is_open(time::macros::datetime!(2026-11-27 01:30 UTC)));
}

#[test]
fn targets_files_are_globbed_and_checked_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("targets")).unwrap();
    std::fs::write(
        tmp.path().join("targets/web.txt"),
        "# web\nwww.example.org\napi.example.org:8443 # api\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("targets/bad.txt"),
        "ok.example.org\nnot a target\n",
    )
    .unwrap();
    let cfg = tmp.path().join("t.toml");
    std::fs::write(&cfg, "targets_files = [\"targets/*.txt\"]\n").unwrap();
    let err = load(&cfg).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
    assert!(err.problems[0].ends_with(r#"targets/bad.txt:2: invalid target "not a target": "not a target" is not a valid host name"#), "{:?}", err.problems);
    std::fs::remove_file(tmp.path().join("targets/bad.txt")).unwrap();
    let config = load(&cfg).unwrap();
    let names: Vec<&str> = config.targets.iter().map(|t| &*t.name).collect();
    assert_eq!(names, ["www.example.org:443", "api.example.org:8443"]);
}

/// Files a config names are read only when they are regular files of a bounded size, and
/// their content never comes back in an error: /dev/zero, a FIFO with no writer (which
/// would hang a blocking read) and a file of secrets are each refused with a clear line.
#[test]
fn files_named_in_a_config_are_bounded_and_never_echoed() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.txt");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        tmp.path().join("shadow.txt"),
        "root:$y$j9T$SALTSALTSALT$HASHHASHHASHHASHHASH:20000:0:99999:7:::\n\
         daemon:*:20000:0:99999:7:::\n",
    )
    .unwrap();
    let cfg = tmp.path().join("t.toml");
    std::fs::write(
        &cfg,
        "targets_files = [\"/dev/zero\", \"fifo.txt\", \"shadow.txt\"]\n\n\
         [profile.corp]\nprotocol = \"tls\"\nca_files = [\"/dev/zero\"]\n\n\
         [acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\nca_file = \"no-such-ca.pem\"\n\
         http01_listen = \"127.0.0.1:5002\"\n",
    )
    .unwrap();
    // On a thread, so that a hang (a blocking open of the FIFO) fails the test instead of
    // stalling the suite; the deadline is far beyond what loading takes.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = cfg.clone();
    std::thread::spawn(move || tx.send(load(&path).map(|_| ())).unwrap());
    let err = rx
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("loading the config returned")
        .expect_err("the config is invalid");
    let text = err.problems.join("\n");
    let dir = format!("{}/", tmp.path().display());
    let text = text.replace(&dir, "");
    assert!(
        text.contains(
            "t.toml:1: targets_files: /dev/zero: is a character device, not a regular file"
        ),
        "{text}"
    );
    assert!(
        text.contains("t.toml:1: targets_files: fifo.txt: is a FIFO, not a regular file"),
        "{text}"
    );
    assert!(text.contains("/dev/zero: is a character device"), "{text}");
    assert!(
        text.contains("acme.ca_file: no-such-ca.pem: No such file or directory"),
        "{text}"
    );
    assert!(text.contains("shadow.txt:1: invalid target"), "{text}");
    assert!(text.contains("shadow.txt:2: invalid target"), "{text}");
    // A short escaped prefix at most: never the rest of the line.
    assert!(!text.contains("HASH"), "echoed:\n{text}");
    for line in text.lines() {
        assert!(line.chars().count() < 120, "{line}");
    }
}
