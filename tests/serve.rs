//! `tlsward serve` end to end: the daemon probing real TLS servers on a schedule, its HTTP
//! endpoints, reloads (HTTP and SIGHUP), and web protection (basic auth, bearer, TLS).

use std::time::Duration;

use tokio::net::TcpListener;

use crate::util::daemon::Endpoints;
use crate::util::daemon::{answering, free_addr, ready, serve_command, start};
use crate::util::exposition::{Format, assert_metric, format_of, metric, parse_or_panic};
use crate::util::http::{get, request};
use crate::util::wait::eventually;
use crate::util::{TestCa, TlsServer, real_now};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_every_target_in_both_formats() {
    let e = Endpoints::start().await;
    let d = start(&e.write(&e.config(""))).await;
    ready(d.addr).await;
    let m = get(d.addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (good, expired, wrong) = (
        format!("good.test:{}", e.good.addr.port()),
        format!("expired.test:{}", e.expired.addr.port()),
        format!("wrong.test:{}", e.wrong.addr.port()),
    );
    let good = [
        ("target", good.as_str()),
        ("profile", "test"),
        ("env", "test"),
    ];
    let expired = [("target", expired.as_str()), ("profile", "test")];
    let wrong = [("target", wrong.as_str()), ("profile", "test")];
    fn with<'a>(
        labels: &[(&'a str, &'a str)],
        more: (&'a str, &'a str),
    ) -> Vec<(&'a str, &'a str)> {
        let mut all = labels.to_vec();
        all.push(more);
        all
    }
    let body = &m.body;
    assert_metric(body, "tlsward_probe_success", &good, 1.0);
    assert_metric(body, "tlsward_probe_success", &expired, 0.0);
    assert_metric(
        body,
        "tlsward_probe_failure_info",
        &with(&expired, ("reason", "cert_expired")),
        1.0,
    );
    assert_metric(
        body,
        "tlsward_check_ok",
        &with(&wrong, ("check", "hostname")),
        0.0,
    );
    let x = parse_or_panic(Format::Text, body);
    assert!(
        x.named("tlsward_cert_info").iter().any(|s| {
            good.iter().all(|(k, v)| s.label(k) == Some(v))
                && s.label("subject") == Some("CN=good.test")
        }),
        "{body}"
    );
    assert_eq!(x.families["tlsward_cert_info"].kind, "gauge");
    assert_eq!(x.families["tlsward_probes_total"].kind, "counter");
    assert!(
        x.named("tlsward_build_info")
            .iter()
            .any(|s| s.label("version").is_some()),
        "{body}"
    );
    assert_metric(body, "tlsward_config_last_reload_successful", &[], 1.0);
    assert!(!body.contains("# EOF"));

    let om = request(
        d.addr,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        None,
    )
    .await;
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.body.trim_end().ends_with("# EOF"), "{}", om.body);
    let om = parse_or_panic(Format::OpenMetrics, &om.body);
    assert_eq!(om.families["tlsward_cert"].kind, "info");

    let api = get(d.addr, "/api/targets").await;
    let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    let targets = v.as_array().unwrap();
    assert_eq!(targets.len(), 3);
    let expired_json = targets
        .iter()
        .find(|t| t["target"].as_str().unwrap().starts_with("expired"))
        .unwrap();
    assert_eq!(expired_json["reports"][0]["reason"], "cert_expired");
    assert!(!expired_json["history"].as_array().unwrap().is_empty());
    assert_eq!(get(d.addr, "/-/healthy").await.status, 200);
    assert_eq!(get(d.addr, "/nope").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_endpoint_answers_blackbox_style() {
    let e = Endpoints::start().await;
    // The blackbox multi-target pattern: any target may be probed.
    let any = "[server]\nprobe_targets = \"any\"\n";
    let d = start(&e.write(&e.config(any))).await;
    // /probe resolves by DNS, so it probes the servers by IP with their IP-less certificates:
    // use a leaf that carries 127.0.0.1.
    let ip_leaf = TestCa::root_at("Probe Root", real_now());
    let server = TlsServer::leaf(&ip_leaf.leaf(&["127.0.0.1"]).build())
        .start()
        .await;
    std::fs::write(
        e.dir.path().join("ca.pem"),
        format!("{}{}", e.root.pem(), ip_leaf.pem()),
    )
    .unwrap();
    let d2 = start(&e.write(&e.config(any))).await;
    let path = format!(
        "/probe?target=127.0.0.1:{}&profile=test",
        server.addr.port()
    );
    let r = get(d2.addr, &path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_metric(&r.body, "probe_success", &[], 1.0);
    assert!(metric(&r.body, "probe_duration_seconds", &[]).is_some());
    assert!(metric(&r.body, "probe_ssl_earliest_cert_expiry", &[]).is_some());
    assert_metric(&r.body, "tlsward_probe_success", &[], 1.0);
    let x = parse_or_panic(format_of(&r.body), &r.body);
    assert!(
        x.samples.iter().all(|s| s.label("target").is_none()),
        "no target label on /probe: {}",
        r.body
    );

    let debug = get(d2.addr, &format!("{path}&debug=true")).await;
    assert!(debug.body.contains("Probe of 127.0.0.1:"), "{}", debug.body);
    assert!(debug.body.contains("\"status\": \"ok\""), "{}", debug.body);

    assert_eq!(get(d2.addr, "/probe?target=bad%20target").await.status, 400);
    let unknown = get(d2.addr, "/probe?target=127.0.0.1:1&profile=htps").await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.body.contains("unknown profile"), "{}", unknown.body);
    drop(d);

    // A tarpit: the scrape timeout header bounds the probe (1.2 s minus the 0.5 s offset).
    let tarpit = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_addr = tarpit.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = tarpit.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let r = request(
        d2.addr,
        "GET",
        &format!("/probe?target={tarpit_addr}&profile=test"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1.2")],
        None,
    )
    .await;
    let took = started.elapsed();
    assert_metric(&r.body, "probe_success", &[], 0.0);
    assert_metric(&r.body, "probe_timeout_seconds", &[], 0.7);
    assert!(took < Duration::from_millis(1200), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_rejects_a_bad_config_and_applies_a_good_one() {
    let e = Endpoints::start().await;
    let path = e.write(&e.config(""));
    let d = start(&path).await;
    ready(d.addr).await;
    std::fs::write(
        &path,
        format!(
            "{}\n[[target]]\naddress = \"x.test:443\"\nprofile = \"htps\"\n",
            e.config("")
        ),
    )
    .unwrap();
    let r = request(d.addr, "POST", "/-/reload", &[], None).await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("unknown profile \"htps\""), "{}", r.body);
    let m = get(d.addr, "/metrics").await.body;
    assert_metric(&m, "tlsward_config_last_reload_successful", &[], 0.0);
    let expired = format!("expired.test:{}", e.expired.addr.port());
    assert!(
        metric(
            &m,
            "tlsward_probe_success",
            &[("target", &expired), ("profile", "test")]
        )
        .is_some(),
        "the old config keeps running"
    );

    // Drop the expired target: after a good reload its series are gone.
    let text = format!(
        "[defaults]\ninterval = \"1s\"\n[profile.test]\nca_files = [\"ca.pem\"]\nsystem_roots = false\n{}",
        Endpoints::target("good.test", &e.good, "")
    );
    std::fs::write(&path, text).unwrap();
    assert_eq!(
        request(d.addr, "POST", "/-/reload", &[], None).await.status,
        200
    );
    let m = get(d.addr, "/metrics").await.body;
    assert_metric(&m, "tlsward_config_last_reload_successful", &[], 1.0);
    assert!(
        parse_or_panic(Format::Text, &m)
            .with_label("target", &expired)
            .is_empty(),
        "{m}"
    );
    assert_eq!(get(d.addr, "/-/reload").await.status, 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn web_protection_with_basic_auth_bearer_and_tls() {
    let e = Endpoints::start().await;
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let token_sha = tlsward::cert::sha256_hex(b"t0ken");
    // The web server's own certificate, for 127.0.0.1.
    let web_ca = TestCa::root_at("Web Root", real_now());
    let web_leaf = web_ca.leaf(&["127.0.0.1"]).build();
    let (cert, key) = web_leaf.write_pem(e.dir.path(), "web");
    let web = format!(
        "[server.web]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nbasic_auth_users = {{ prom = \"{hash}\" }}\nbearer_token_sha256 = [\"{token_sha}\"]\n",
        cert.display(),
        key.display()
    );
    let d = start(&e.write(&e.config(&web))).await;
    let root = Some(&web_ca.cert);
    let anonymous = request(d.addr, "GET", "/metrics", &[], root).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    use base64::Engine;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prom:s3cret")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prom:wrong")
    );
    assert_eq!(
        request(d.addr, "GET", "/metrics", &[("Authorization", &good)], root)
            .await
            .status,
        200
    );
    assert_eq!(
        request(d.addr, "GET", "/metrics", &[("Authorization", &bad)], root)
            .await
            .status,
        401
    );
    assert_eq!(
        request(
            d.addr,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer t0ken")],
            root
        )
        .await
        .status,
        200
    );
    assert_eq!(
        request(
            d.addr,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer nope")],
            root
        )
        .await
        .status,
        401
    );
    // Liveness and readiness answer without credentials (load balancers and orchestrators
    // send none); everything else stays behind them.
    assert_eq!(
        request(d.addr, "GET", "/-/healthy", &[], root).await.status,
        200
    );
    eventually(15, "/-/ready without credentials", || async {
        request(d.addr, "GET", "/-/ready", &[], root).await.status == 200
    })
    .await;
    for (method, path) in [
        ("GET", "/probe?target=good.test:1"),
        ("GET", "/api/targets"),
        ("GET", "/"),
        ("POST", "/-/reload"),
        ("POST", "/-/healthy"),
    ] {
        let r = request(d.addr, method, path, &[], root).await;
        assert_eq!(r.status, 401, "{method} {path} without credentials");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_and_reloads_on_sighup() {
    let e = Endpoints::start().await;
    let path = e.write(&e.config(""));
    let addr = free_addr();
    let mut child = serve_command(&path, addr).spawn().unwrap();
    answering(addr, "/-/ready").await;
    let wrong = format!("wrong.test:{}", e.wrong.addr.port());
    let wrong_probed = |body: &str| {
        !parse_or_panic(Format::Text, body)
            .with_label("target", &wrong)
            .is_empty()
    };
    assert!(wrong_probed(&get(addr, "/metrics").await.body));
    let text = format!(
        "[defaults]\ninterval = \"1s\"\n[profile.test]\nca_files = [\"ca.pem\"]\nsystem_roots = false\n{}",
        Endpoints::target("good.test", &e.good, "")
    );
    std::fs::write(&path, text).unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(10, "the reload by SIGHUP", || async move {
        !wrong_probed(&get(addr, "/metrics").await.body)
    })
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
