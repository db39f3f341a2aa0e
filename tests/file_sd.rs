//! `tlsward serve` with file_sd target files: a rewritten file is picked up without a
//! SIGHUP, and a broken rewrite keeps the targets the last good one gave.

use std::path::Path;

use crate::util::daemon::{Endpoints, ready, start};
use crate::util::exposition::{Format, metric, parse_or_panic};
use crate::util::http::get;
use crate::util::wait::eventually;

/// Writes `text` to `path` as a CMDB export should: whole, renamed into place.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The `team` label of `target`'s `tlsward_probe_success` series in `body`, when it has one.
fn team_of(body: &str, target: &str) -> Option<String> {
    let x = parse_or_panic(Format::Text, body);
    let samples = x.with_label("target", target);
    samples
        .iter()
        .find(|s| s.name == "tlsward_probe_success")
        .map(|s| s.label("team").unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_file_sd_file_is_reloaded_and_a_broken_one_keeps_the_targets() {
    let e = Endpoints::start().await;
    let sd = e.dir.path().join("sd.json");
    let (first, second) = (
        format!("127.0.0.1:{}", e.good.addr.port()),
        format!("127.0.0.1:{}", e.expired.addr.port()),
    );
    replace(
        &sd,
        &format!(r#"[{{"targets": ["{first}"], "labels": {{"profile": "test", "team": "a"}}}}]"#),
    );
    let path = e.write(&format!(
        "file_sd = [\"sd.json\"]\nfile_sd_refresh = \"1s\"\n{}",
        e.config("")
    ));
    let d = start(&path).await;
    ready(d.addr).await;
    let addr = d.addr;
    eventually(30, "the first file_sd target in /metrics", || {
        let first = first.clone();
        async move { team_of(&get(addr, "/metrics").await.body, &first).as_deref() == Some("a") }
    })
    .await;

    // A second group with another target and label: picked up by the poll, no SIGHUP.
    replace(
        &sd,
        &format!(
            r#"[{{"targets": ["{first}"], "labels": {{"profile": "test", "team": "a"}}}},
                {{"targets": ["{second}"], "labels": {{"profile": "test", "team": "b"}}}}]"#
        ),
    );
    eventually(30, "the second file_sd target in /metrics", || {
        let second = second.clone();
        async move { team_of(&get(addr, "/metrics").await.body, &second).as_deref() == Some("b") }
    })
    .await;

    // A broken rewrite is rejected as a bad config on reload is: both targets stay.
    replace(&sd, r#"[{"targets": ["#);
    eventually(30, "the broken file_sd file rejected", || async move {
        metric(
            &get(addr, "/metrics").await.body,
            "tlsward_config_last_reload_successful",
            &[],
        ) == Some(0.0)
    })
    .await;
    let m = get(addr, "/metrics").await.body;
    assert_eq!(team_of(&m, &first).as_deref(), Some("a"), "{m}");
    assert_eq!(team_of(&m, &second).as_deref(), Some("b"), "{m}");
    // The configured targets are still there too.
    let good = format!("good.test:{}", e.good.addr.port());
    assert!(team_of(&m, &good).is_some(), "{m}");

    // Fixed again, without the first target: its series go.
    replace(
        &sd,
        &format!(r#"[{{"targets": ["{second}"], "labels": {{"profile": "test", "team": "c"}}}}]"#),
    );
    eventually(30, "the fixed file_sd file applied", || {
        let (first, second) = (first.clone(), second.clone());
        async move {
            let m = get(addr, "/metrics").await.body;
            metric(&m, "tlsward_config_last_reload_successful", &[]) == Some(1.0)
                && team_of(&m, &first).is_none()
                && team_of(&m, &second).as_deref() == Some("c")
        }
    })
    .await;
    assert!(!d.is_finished());
}
