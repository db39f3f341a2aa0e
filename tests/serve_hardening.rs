//! `tlsward serve` against hostile HTTP clients: slowloris and idle connections, more
//! connections than descriptors, password floods, `/probe` as an open prober, hostile
//! scrape-timeout headers. Every assertion is about behaviour; deadlines are generous.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use crate::util::daemon::Endpoints;
use crate::util::exposition::{assert_metric, metric};
use crate::util::http::{Response, get, request};
use crate::util::wait::{eventually, within};
use crate::util::{TestCa, real_now};

/// Far more than any of these steps needs, even on a loaded machine.
const GENEROUS: Duration = Duration::from_secs(90);

/// Lets this test process hold the many connections these tests open.
fn enough_descriptors() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
}

async fn start(path: &std::path::Path) -> crate::util::daemon::Daemon {
    enough_descriptors();
    crate::util::daemon::start(path).await
}

fn basic(scheme: &str, user: &str, password: &str) -> String {
    format!(
        "{scheme} {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// When the good endpoint of [`Endpoints`] (`target`) was last probed, by the scrape `body`.
fn probed_at(body: &str, target: &str) -> Option<f64> {
    let labels = [("target", target), ("profile", "test"), ("env", "test")];
    metric(body, "tlsward_probe_timestamp_seconds", &labels)
}

/// The statuses in a scheduled target's history, from `/api/targets`.
fn history(api: &Response, target_prefix: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    let target = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"].as_str().unwrap().starts_with(target_prefix))
        .expect("the target is scheduled");
    target["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether the server has closed `s` (end of stream or reset), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Waits until the server closes `s`, reading (and discarding) whatever it sends.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(mut s: S) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Sends a request head one byte every 200 ms, never finishing it, until the server closes
/// the connection.
async fn trickle(mut s: TcpStream) {
    if s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .await
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 64];
    loop {
        if s.write_all(b"a").await.is_err() {
            return;
        }
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            return;
        }
    }
}

/// One request on a kept-alive connection; the status of its answer.
async fn keep_alive_get(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: tlsward\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the answer");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_silent_clients_are_closed_while_kept_alive_scrapes_outlive_the_head_timeout() {
    let e = Endpoints::start().await;
    let d =
        start(&e.write(&e.config("[server]\nheader_timeout = \"1s\"\nidle_timeout = \"20s\"\n")))
            .await;
    let addr = d.addr;
    eventually(30, "/-/healthy", || async move {
        get(addr, "/-/healthy").await.status == 200
    })
    .await;

    // 100 connections that send nothing, 100 that send a head one byte at a time for ever.
    let mut clients = JoinSet::new();
    for i in 0..200 {
        let s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            clients.spawn(until_closed(s));
        } else {
            clients.spawn(trickle(s));
        }
    }

    // A kept-alive client waits longer than the head timeout between two requests: the
    // idle timeout, not the head timeout, applies between requests.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    assert_eq!(keep_alive_get(&mut kept, "/-/healthy").await, 200);
    sleep(Duration::from_secs(3)).await;
    assert_eq!(keep_alive_get(&mut kept, "/metrics").await, 200);

    timeout(GENEROUS, async {
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("every silent and slow client is closed by the server");
    // Then the idle kept-alive connection is closed too.
    timeout(GENEROUS, until_closed(kept))
        .await
        .expect("an idle kept-alive connection is closed after the idle timeout");
    assert_eq!(get(addr, "/-/healthy").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_must_finish_within_the_head_timeout() {
    let e = Endpoints::start().await;
    let web_ca = TestCa::root_at("Web Root", real_now());
    let (cert, key) = web_ca
        .leaf(&["127.0.0.1"])
        .build()
        .write_pem(e.dir.path(), "web");
    let d = start(&e.write(&e.config(&format!(
        "[server]\nheader_timeout = \"1s\"\n[server.web]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ))))
    .await;
    let addr = d.addr;
    let root = Some(&web_ca.cert);
    eventually(30, "HTTPS /-/healthy", || async move {
        request(addr, "GET", "/-/healthy", &[], root).await.status == 200
    })
    .await;
    let mut clients = JoinSet::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            // The first bytes of a ClientHello record, and nothing more.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        clients.spawn(until_closed(s));
    }
    timeout(GENEROUS, async {
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("every unfinished handshake is closed by the server");
    assert_eq!(
        request(addr, "GET", "/-/healthy", &[], root).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_beyond_the_descriptor_limit_cannot_starve_health_checks_or_probes() {
    enough_descriptors();
    let e = Endpoints::start().await;
    // Long timeouts: only the connection cap can make room here.
    let path = e.write(&e.config("[server]\nheader_timeout = \"10m\"\nidle_timeout = \"10m\"\n"));
    let port = crate::util::unique_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The real binary under a limit of 256 open files (soft and hard), fewer than the
    // connections below: the cap becomes an eighth of it.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tlsward"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &addr.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::util::daemon::answering(addr, "/-/ready").await;
    let good = format!("good.test:{}", e.good.addr.port());
    let stamp = good.clone();
    let before = probed_at(&get(addr, "/metrics").await.body, &stamp).expect("probed");

    // 300 connections, each holding half a request head.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    for _ in 0..5 {
        let r = timeout(GENEROUS, get(addr, "/-/healthy"))
            .await
            .expect("/-/healthy answers while idle connections fill the cap");
        assert_eq!(r.status, 200);
    }
    // Older idle connections were closed to make room: at most the cap (256 / 8) and the
    // connections still being evicted remain open.
    let evicted = within(GENEROUS, Duration::from_millis(200), || {
        held.retain(|s| !closed_by_server(s));
        std::future::ready(held.len() <= 64)
    })
    .await;
    assert!(
        evicted.is_some(),
        "{} idle connections still open",
        held.len()
    );
    // Probes went on: a probe finished after the flood began, and none failed.
    let stamp2 = stamp.clone();
    eventually(60, "a probe after the flood", || {
        let stamp = stamp2.clone();
        async move { probed_at(&get(addr, "/metrics").await.body, &stamp).is_some_and(|t| t > before) }
    })
    .await;
    let m = get(addr, "/metrics").await.body;
    let labels = [
        ("target", good.as_str()),
        ("profile", "test"),
        ("env", "test"),
    ];
    assert_metric(&m, "tlsward_probe_success", &labels, 1.0);
    let statuses = history(&get(addr, "/api/targets").await, "good.test");
    assert!(
        statuses.iter().all(|s| s == "ok"),
        "no probe of the good endpoint failed: {statuses:?}"
    );
    drop(held);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_raises_its_soft_open_files_limit_to_the_hard_one() {
    let e = Endpoints::start().await;
    let path = e.write(&e.config(""));
    let port = crate::util::unique_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 200 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tlsward"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &addr.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::util::daemon::answering(addr, "/-/healthy").await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "200", "{line}");
    assert_eq!(soft, hard, "{line}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_wrong_passwords_does_not_stop_scrapes_or_probes() {
    let e = Endpoints::start().await;
    // A real cost, so that verifications take time (and would stall async workers).
    let hash = bcrypt::hash("s3cret", 8).unwrap();
    let token_sha = tlsward::cert::sha256_hex(b"t0ken");
    let d = start(&e.write(&e.config(&format!(
        "[server.web]\nbasic_auth_users = {{ prom = \"{hash}\" }}\nbearer_token_sha256 = [\"{token_sha}\"]\n"
    ))))
    .await;
    let addr = d.addr;
    let good_auth = basic("Basic", "prom", "s3cret");
    let auth = good_auth.clone();
    eventually(30, "authorized /-/ready", || {
        let auth = auth.clone();
        async move {
            request(addr, "GET", "/-/ready", &[("Authorization", &auth)], None)
                .await
                .status
                == 200
        }
    })
    .await;
    let good = format!("good.test:{}", e.good.addr.port());
    let stamp = good.clone();
    let scrape = |auth: String| async move {
        request(addr, "GET", "/metrics", &[("Authorization", &auth)], None).await
    };
    let before = probed_at(&scrape(good_auth.clone()).await.body, &stamp).expect("probed");

    // 32 clients guessing without pause, half for the known user, half for unknown ones.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for i in 0..32 {
        let stop = stop.clone();
        flood.spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = if i % 2 == 0 {
                    "prom".to_owned()
                } else {
                    format!("user{i}")
                };
                let guess = basic("Basic", &user, &format!("guess{n}"));
                n += 1;
                statuses.push(
                    request(addr, "GET", "/metrics", &[("Authorization", &guess)], None)
                        .await
                        .status,
                );
            }
            statuses
        });
    }

    // During the flood: authorized scrapes answer, whatever the scheme's case, and probes
    // keep finishing.
    let auth = good_auth.clone();
    let stamp2 = stamp.clone();
    eventually(60, "a probe during the flood", || {
        let (auth, stamp) = (auth.clone(), stamp2.clone());
        async move {
            let r = request(addr, "GET", "/metrics", &[("Authorization", &auth)], None).await;
            assert_eq!(r.status, 200, "an authorized scrape during the flood");
            probed_at(&r.body, &stamp).is_some_and(|t| t > before)
        }
    })
    .await;
    for header in [
        basic("basic", "prom", "s3cret"),
        basic("BASIC", "prom", "s3cret"),
        "bearer t0ken".into(),
        "Bearer t0ken".into(),
    ] {
        let r = timeout(GENEROUS, scrape(header.clone()))
            .await
            .expect("answered");
        assert_eq!(r.status, 200, "{header}");
    }
    let probe = timeout(
        GENEROUS,
        request(
            addr,
            "GET",
            &format!("/probe?target={good}&profile=test"),
            &[("Authorization", &good_auth)],
            None,
        ),
    )
    .await
    .expect("answered");
    assert_metric(&probe.body, "probe_success", &[], 1.0);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    while let Some(statuses) = flood.join_next().await {
        for status in statuses.unwrap() {
            assert!(status == 401 || status == 429, "a guess got {status}");
            answered += 1;
        }
    }
    assert!(answered >= 32);
    let api = request(
        addr,
        "GET",
        "/api/targets",
        &[("Authorization", &good_auth)],
        None,
    )
    .await;
    let statuses = history(&api, "good.test");
    assert!(
        statuses.iter().all(|s| s == "ok"),
        "no probe of the good endpoint failed: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_only_reaches_what_probe_targets_allows() {
    let e = Endpoints::start().await;
    // A server whose certificate carries 127.0.0.1, for probes by address.
    let ip_ca = TestCa::root_at("Probe Root", real_now());
    let by_ip = crate::util::TlsServer::leaf(&ip_ca.leaf(&["127.0.0.1"]).build())
        .start()
        .await;
    std::fs::write(
        e.dir.path().join("ca.pem"),
        format!("{}{}", e.root.pem(), ip_ca.pem()),
    )
    .unwrap();
    let path = e.write(&e.config(""));
    let d = start(&path).await;
    let addr = d.addr;
    let good = format!("good.test:{}", e.good.addr.port());
    let ip_target = format!("127.0.0.1:{}", by_ip.addr.port());

    // The default, "configured": a configured target with its own settings (connect_to),
    // with or without naming its profile.
    for path in [
        format!("/probe?target={good}&profile=test"),
        format!("/probe?target={good}"),
    ] {
        let r = get(addr, &path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_metric(&r.body, "probe_success", &[], 1.0);
    }
    // Anything else is refused, saying which setting allows it.
    for path in [
        format!("/probe?target={ip_target}&profile=test"),
        format!("/probe?target={good}&profile=https"),
        "/probe?target=169.254.169.254:80".to_owned(),
    ] {
        let r = get(addr, &path).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(
            r.body.contains(
                "is not a configured target, and [server] probe_targets = \"configured\""
            ),
            "{}",
            r.body
        );
    }

    // Hostile scrape-timeout headers: bounded, never a panic; the connection task lives on.
    let huge = request(
        addr,
        "GET",
        &format!("/probe?target={good}&debug=true"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1e300")],
        None,
    )
    .await;
    assert_eq!(huge.status, 200, "{}", huge.body);
    assert!(
        huge.body.contains("(timeout 3s)"),
        "the target's timeout caps it: {}",
        huge.body
    );
    for bad in ["NaN", "-1", "inf", "0"] {
        let r = request(
            addr,
            "GET",
            &format!("/probe?target={good}"),
            &[("X-Prometheus-Scrape-Timeout-Seconds", bad)],
            None,
        )
        .await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.body.contains("must be a positive number of seconds"),
            "{}",
            r.body
        );
    }

    // A list: CIDRs are checked against the address (or every address a name resolves to),
    // name patterns against the name. Reloaded without a restart.
    let reload = |probe_targets: &str| {
        std::fs::write(
            &path,
            e.config(&format!("[server]\nprobe_targets = {probe_targets}\n")),
        )
        .unwrap();
        async move {
            let r = request(addr, "POST", "/-/reload", &[], None).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    let local = format!("localhost:{}", by_ip.addr.port());
    reload(r#"["127.0.0.0/8", "::1/128"]"#).await;
    let r = get(addr, &format!("/probe?target={ip_target}&profile=test")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_metric(&r.body, "probe_success", &[], 1.0);
    assert_eq!(
        get(addr, &format!("/probe?target={local}&profile=test"))
            .await
            .status,
        200
    );
    let r = get(addr, "/probe?target=10.1.2.3:443&profile=test").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("is not allowed by [server] probe_targets = [\"127.0.0.0/8\", \"::1/128\"]: the address 10.1.2.3 is in no CIDR of the list"),
        "{}",
        r.body
    );

    // A name pattern with a CIDR: the name passes, but it resolves outside the CIDR.
    reload(r#"["localhost", "192.0.2.0/24"]"#).await;
    let r = get(addr, &format!("/probe?target={local}&profile=test")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("the name resolves to "), "{}", r.body);
    assert!(
        r.body.contains("which is in no CIDR of the list"),
        "{}",
        r.body
    );
    let r = get(addr, "/probe?target=other.test:443&profile=test").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("the name matches no name pattern"),
        "{}",
        r.body
    );
    // Names alone trust their DNS.
    reload(r#"["localhost"]"#).await;
    assert_eq!(
        get(addr, &format!("/probe?target={local}&profile=test"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(addr, &format!("/probe?target={ip_target}&profile=test"))
            .await
            .status,
        403
    );

    // "any": the blackbox multi-target pattern.
    reload("\"any\"").await;
    let r = get(addr, &format!("/probe?target={ip_target}&profile=test")).await;
    assert_metric(&r.body, "probe_success", &[], 1.0);
}
