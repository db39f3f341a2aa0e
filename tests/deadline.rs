//! Renewals planned from change windows, end to end: `serve` issues from a real Pebble (no
//! ARI, 30-day certificates), two endpoints behind a weekly window serve certificates from
//! another CA (rustls servers on loopback), and a test clock. The exported deploy deadline
//! comes one to two weeks before the lifetime-fraction renewal (the second-to-last weekly
//! opening before it); moving the clock just past it renews, long before the fraction; the
//! endpoint whose certificate expires before its window can open is reported by the window
//! gauge. The alert rule itself is checked by promtool.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tlsward::clock::TestClock;

use crate::util::cli::open_store;
use crate::util::exposition::metric;
use crate::util::http::{get, request};
use crate::util::pebble::Pebble;
use crate::util::wait::{EVERY, within};
use crate::util::{TestCa, TlsServer, real_now};

const DAY: i64 = 86_400;

/// Waits for `name{labels}` on /metrics, up to `secs`; panics with the body on a timeout.
async fn wait_value(
    addr: std::net::SocketAddr,
    secs: u64,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let seen = within(Duration::from_secs(secs), EVERY, || async move {
        metric(&get(addr, "/metrics").await.body, name, labels)
    })
    .await;
    if let Some(v) = seen {
        return v;
    }
    let body = get(addr, "/metrics").await.body;
    panic!("no {name}{labels:?} within {secs}s in\n{body}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_weekly_window_moves_the_renewal_forward_and_one_too_late_is_reported() {
    let http01_port = crate::util::unique_port();
    let pebble = Pebble::start(http01_port, 30 * 86_400).await;
    let dir = pebble.dir.path();
    let now = real_now();
    let old_ca = TestCa::root_at("Old CA", now);
    let root = crate::util::pem(&pebble.issuing_root().await);
    std::fs::write(dir.join("acme-root.pem"), root).unwrap();
    std::fs::write(dir.join("old-root.pem"), old_ca.pem()).unwrap();
    // web serves a certificate good for 60 days; legacy one that expires in 4 days.
    let fresh = old_ca
        .leaf(&["site.tlsward.test"])
        .valid(-1.0, 60.0)
        .build();
    let dying = old_ca.leaf(&["site.tlsward.test"]).valid(-1.0, 4.0).build();
    let web = TlsServer::leaf(&fresh).start().await;
    let legacy = TlsServer::leaf(&dying).start().await;
    // A weekly one-hour window at 00:00 UTC, three days from today: it opens two to three
    // days from now, after legacy's expiry minus emergency_days (one day from now).
    let opens = (now + time::Duration::days(3)).weekday();
    let day = opens.to_string().to_lowercase();
    let mut config = format!(
        r#"
[server]
state_dir = "{state}"

[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[deploy]
emergency_days = 3

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]

[profile.site]
ca_files = ["acme-root.pem", "old-root.pem"]
system_roots = false

[window.weekly]
days = ["{day}"]
start = "00:00"
duration = "1h"
tz = "UTC"
"#,
        state = dir.join("daemon-state").display(),
        directory = pebble.directory,
        ca = pebble.tls_ca_file.display(),
    );
    for (name, server) in [("web", &web), ("legacy", &legacy)] {
        let port = server.addr.port();
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
window = "weekly"
"#
        ));
    }
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let clock = Arc::new(TestClock::at(SystemTime::from(now)));
    let daemon = crate::util::daemon::start_with_clock(&path, clock.clone()).await;
    let addr = daemon.addr;

    let site = [("certificate", "site")];
    let deadline = wait_value(
        addr,
        180,
        "tlsward_certificate_deploy_deadline_timestamp_seconds",
        &site,
    )
    .await as i64;
    let renewal = metric(
        &get(addr, "/metrics").await.body,
        "tlsward_certificate_renewal_timestamp_seconds",
        &site,
    )
    .expect("the renewal gauge beside the deadline") as i64;
    let store = open_store(&dir.join("state"));
    let first = store.latest("site").unwrap().expect("issued");
    // No ARI: the renewal is where a third of the lifetime is left.
    let life = first.not_after - first.not_before;
    assert_eq!(
        renewal,
        first.not_after - (life as f64 / 3.0).round() as i64
    );
    // The second-to-last weekly opening before it: at 00:00 UTC on the window's weekday,
    // at least one and at most two weeks earlier.
    assert!(
        (renewal - 14 * DAY..renewal - 7 * DAY).contains(&deadline),
        "deadline {deadline}, renewal {renewal}"
    );
    assert_eq!(deadline % DAY, 0, "{deadline}");
    let at = time::OffsetDateTime::from_unix_timestamp(deadline).unwrap();
    assert_eq!(at.weekday(), opens, "{at}");

    // legacy's window never opens before its certificate's emergency margin; web's does.
    let gauge = "tlsward_endpoint_window_before_expiry";
    let legacy_labels = [("endpoint", "legacy"), ("certificate", "site")];
    let web_labels = [("endpoint", "web"), ("certificate", "site")];
    // Until the first probe the newest version's expiry stands in: wait for the probes.
    let settled = within(Duration::from_secs(60), EVERY, || async move {
        let body = get(addr, "/metrics").await.body;
        (metric(&body, gauge, &legacy_labels) == Some(0.0)).then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("legacy's window gauge never 0"));
    assert_eq!(metric(&settled, gauge, &web_labels), Some(1.0), "{settled}");

    // Just before the deadline nothing is ordered; just after it, a renewal, a week or
    // more before the lifetime fraction would have had one.
    clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs((deadline - 60) as u64));
    let r = request(addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        store.versions("site").unwrap().len(),
        1,
        "renewed before the deadline"
    );
    clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs((deadline + 60) as u64));
    let r = request(addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let renewed = within(Duration::from_secs(120), EVERY, || {
        let store = &store;
        async move { store.versions("site").ok().filter(|v| v.len() >= 2) }
    })
    .await
    .expect("renewed at the deploy deadline");
    assert_ne!(renewed[0].sha256, first.sha256);
    // The new version (issued at real time, the clock far ahead) has its own deadline in
    // the clock's past, before it existed: no order loop follows.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        store.versions("site").unwrap().len(),
        2,
        "renewed again and again"
    );
}

/// `TlsNoWindowBeforeExpiry` fires for a 0 that lasts, and stays quiet for 1, a brief 0 and
/// other jobs.
#[test]
fn the_no_window_alert_fires_and_stays_quiet_under_promtool() {
    let alerts = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts");
    for args in [
        &["check", "rules", "deadline.rules.yml"][..],
        &["test", "rules", "tests/deadline.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&alerts)
            .output()
            .expect("promtool (Debian package prometheus) is installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool {args:?}:\n{text}"
        );
    }
}
