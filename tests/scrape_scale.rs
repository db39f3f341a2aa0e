//! The scrape at fleet scale, against the real `serve`: gzip by `Accept-Encoding`, the lean
//! metrics that keep every shipped alert's series, and `[server] shard` splitting the targets
//! between instances.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;

use tlsward::schedule::Shard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::daemon::{Endpoints, ready, start};
use crate::util::exposition::{Exposition, Format, parse_or_panic};

/// An answer's status, headers (lowercase names) and raw body bytes.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when the answer says it is gzip.
    fn decoded(&self) -> String {
        let bytes = if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(self.body.as_slice())
                .read_to_end(&mut out)
                .expect("a valid gzip stream");
            out
        } else {
            self.body.clone()
        };
        String::from_utf8(bytes).expect("UTF-8")
    }
}

/// `GET path` with extra headers; the body kept as bytes (it may be gzip).
async fn get_raw(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "answers are sent whole, with a length"
    );
    Raw {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Every series of an exposition: its name and its sorted labels.
fn series(e: &Exposition) -> BTreeSet<(String, Vec<(String, String)>)> {
    e.samples
        .iter()
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.sort();
            (s.name.clone(), labels)
        })
        .collect()
}

/// The series that carry a `target` label.
fn per_target(e: &Exposition) -> usize {
    e.samples
        .iter()
        .filter(|s| s.label("target").is_some())
        .count()
}

/// Every `tlsward_*` name the shipped alerting rules read.
fn alert_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["tlsward.rules.yml", "backup.rules.yml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("alerts")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("tlsward_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_answers_decode_to_the_plain_series_and_q0_refuses_it() {
    let e = Endpoints::start().await;
    let d = start(&e.write(&e.config(""))).await;
    ready(d.addr).await;

    let plain = get_raw(d.addr, "/metrics", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    let plain_text = plain.decoded();
    let plain_series = series(&parse_or_panic(Format::Text, &plain_text));

    // As Prometheus asks, and with weights.
    for accept in ["gzip", "br;q=1.0, gzip;q=0.5", "identity, *;q=0.1"] {
        let gz = get_raw(d.addr, "/metrics", &[("Accept-Encoding", accept)]).await;
        assert_eq!(gz.status, 200, "{accept}");
        assert_eq!(gz.header("content-encoding"), Some("gzip"), "{accept}");
        assert_eq!(gz.header("vary"), Some("accept-encoding"));
        assert_eq!(
            gz.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(
            gz.header("content-length"),
            Some(gz.body.len().to_string().as_str()),
            "the length is the compressed one"
        );
        let text = gz.decoded();
        if accept == "gzip" {
            println!(
                "/metrics of 3 targets: {} bytes plain, {} gzip ({:.1}x)",
                text.len(),
                gz.body.len(),
                text.len() as f64 / gz.body.len() as f64
            );
            assert!(gz.body.len() * 3 < text.len(), "gzip pays off");
        }
        // Values move between scrapes (durations, timestamps); the series do not.
        assert_eq!(
            series(&parse_or_panic(Format::Text, &text)),
            plain_series,
            "{accept}"
        );
    }
    let om = get_raw(
        d.addr,
        "/metrics",
        &[
            ("Accept-Encoding", "gzip"),
            ("Accept", "application/openmetrics-text; version=1.0.0"),
        ],
    )
    .await;
    assert_eq!(om.header("content-encoding"), Some("gzip"));
    parse_or_panic(Format::OpenMetrics, &om.decoded());

    for refuse in ["gzip;q=0", "deflate, br", "*;q=0", "gzip;q=0, *"] {
        let r = get_raw(d.addr, "/metrics", &[("Accept-Encoding", refuse)]).await;
        assert_eq!(r.header("content-encoding"), None, "{refuse}");
        assert_eq!(
            series(&parse_or_panic(Format::Text, &r.decoded())),
            plain_series,
            "{refuse}"
        );
    }

    let api_plain = get_raw(d.addr, "/api/targets", &[]).await;
    let api_gz = get_raw(d.addr, "/api/targets", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(api_plain.header("content-encoding"), None);
    assert_eq!(api_gz.header("content-encoding"), Some("gzip"));
    assert_eq!(api_gz.header("content-type"), Some("application/json"));
    let names = |r: &Raw| -> BTreeSet<String> {
        let v: serde_json::Value = serde_json::from_str(&r.decoded()).expect("JSON");
        v.as_array()
            .expect("a list")
            .iter()
            .map(|t| t["target"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&api_gz), names(&api_plain));
    assert_eq!(names(&api_gz).len(), 3);

    // Small answers are left alone: health, and errors.
    let healthy = get_raw(d.addr, "/-/healthy", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(healthy.header("content-encoding"), None);
    assert_eq!(healthy.decoded(), "Healthy\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn lean_metrics_keep_every_series_the_alerts_read_with_fewer_per_target() {
    let e = Endpoints::start().await;
    let full = start(&e.write(&e.config(""))).await;
    ready(full.addr).await;
    let full_body = get_raw(full.addr, "/metrics", &[]).await.decoded();
    drop(full);
    let lean = start(&e.write(&e.config("[server]\nmetrics = \"lean\"\n"))).await;
    ready(lean.addr).await;
    let lean_body = get_raw(lean.addr, "/metrics", &[]).await.decoded();
    let (full_e, lean_e) = (
        parse_or_panic(Format::Text, &full_body),
        parse_or_panic(Format::Text, &lean_body),
    );

    let good = format!("good.test:{}", e.good.addr.port());
    let of = |e: &Exposition, target: &str| e.with_label("target", target).len();
    let (full_good, lean_good) = (of(&full_e, &good), of(&lean_e, &good));
    let (full_all, lean_all) = (per_target(&full_e), per_target(&lean_e));
    println!(
        "series per target: full {full_good} (healthy target), {:.1} (mean of 3: good, expired, wrong name); lean {lean_good} (healthy), {:.1} (mean)",
        full_all as f64 / 3.0,
        lean_all as f64 / 3.0
    );
    // A healthy target: success, timestamp, interval, not-after, not-before; nothing else.
    assert_eq!(lean_good, 5, "{lean_body}");
    assert!(lean_good * 3 < full_good, "{full_good} vs {lean_good}");
    assert!(lean_all * 2 < full_all, "{full_all} vs {lean_all}");

    // Every name the shipped alerts read that full mode exports, lean exports too.
    let names =
        |e: &Exposition| -> BTreeSet<String> { e.samples.iter().map(|s| s.name.clone()).collect() };
    let (full_names, lean_names) = (names(&full_e), names(&lean_e));
    let alerts = alert_metric_names();
    let needed: BTreeSet<&String> = alerts.intersection(&full_names).collect();
    for name in [
        "tlsward_probe_success",
        "tlsward_probe_failure_info",
        "tlsward_cert_not_after_timestamp_seconds",
        "tlsward_cert_not_before_timestamp_seconds",
        "tlsward_check_ok",
        "tlsward_probe_timestamp_seconds",
        "tlsward_probe_interval_seconds",
    ] {
        assert!(
            needed.contains(&name.to_owned()),
            "{name} is read by the alerts"
        );
    }
    for name in &needed {
        assert!(lean_names.contains(*name), "{name} is missing in lean mode");
    }
    // The alerts' own failing series are the same in both modes.
    let failing = |e: &Exposition| -> BTreeSet<(String, Vec<(String, String)>)> {
        series(e)
            .into_iter()
            .filter(|(n, _)| n == "tlsward_probe_failure_info")
            .chain(
                e.samples
                    .iter()
                    .filter(|s| s.name == "tlsward_check_ok" && s.value == 0.0)
                    .map(|s| {
                        let mut l = s.labels.clone();
                        l.sort();
                        (s.name.clone(), l)
                    }),
            )
            .collect()
    };
    assert!(!failing(&full_e).is_empty());
    assert_eq!(failing(&lean_e), failing(&full_e));
    assert!(
        lean_e
            .named("tlsward_check_ok")
            .iter()
            .all(|s| s.value == 0.0),
        "lean exports only failed checks"
    );
    // What lean leaves to /api/targets and /probe.
    for gone in [
        "tlsward_probe_duration_seconds",
        "tlsward_chain_earliest_not_after_timestamp_seconds",
        "tlsward_cert_info",
        "tlsward_tls_version_info",
    ] {
        assert!(full_names.contains(gone), "{gone}");
        assert!(!lean_names.contains(gone), "{gone}");
    }
    // The daemon's own families stay.
    assert_eq!(
        full_names
            .iter()
            .filter(|n| n.starts_with("tlsward_scheduler_"))
            .collect::<Vec<_>>(),
        lean_names
            .iter()
            .filter(|n| n.starts_with("tlsward_scheduler_"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn four_shards_of_one_config_probe_every_target_exactly_once() {
    let e = Endpoints::start().await;
    // Nine more targets on ports nothing listens on: they fail fast, and are shown all the
    // same.
    let mut extra = String::new();
    for i in 0..9 {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        extra.push_str(&format!(
            "[[target]]\naddress = \"closed{i}.test:{closed}\"\nprofile = \"test\"\nconnect_to = [\"127.0.0.1\"]\n\n"
        ));
    }
    let all: BTreeSet<String> = {
        let path = e.write(&format!("{}\n{extra}", e.config("")));
        tlsward::config::load(&path)
            .unwrap()
            .targets
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    };
    assert_eq!(all.len(), 12);
    let mut seen: Vec<String> = Vec::new();
    for k in 1..=4 {
        let text = format!(
            "{}\n{extra}",
            e.config(&format!("[server]\nshard = \"{k}/4\"\n"))
        );
        let path = e.dir.path().join(format!("shard{k}.toml"));
        std::fs::write(&path, text).unwrap();
        let config = tlsward::config::load(&path).unwrap();
        assert_eq!(config.shard, Some(Shard::new(k, 4).unwrap()));
        let d = start(&path).await;
        ready(d.addr).await;
        let m = parse_or_panic(
            Format::Text,
            &get_raw(d.addr, "/metrics", &[]).await.decoded(),
        );
        let mine: BTreeSet<String> = m
            .named("tlsward_probe_success")
            .iter()
            .filter_map(|s| s.label("target").map(str::to_owned))
            .collect();
        // Exactly the targets the hash gives this shard.
        let expected: BTreeSet<String> = config
            .targets
            .iter()
            .filter(|t| Shard::of(4, &t.name, &t.profile) == k)
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(mine, expected, "shard {k}/4");
        println!("shard {k}/4: {} of {} targets", mine.len(), all.len());
        seen.extend(mine);
    }
    let union: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), union.len(), "no target in two shards: {seen:?}");
    assert_eq!(union, all, "every target in one shard");
}
