//! `tlsward serve` with `[acme]`: the certificate is issued from a real Pebble, stored sealed,
//! renewed when due, and drift is reported for an endpoint that serves a foreign certificate,
//! the latest version, then a stale one.

use std::time::Duration;

use crate::util::cli::open_store;
use crate::util::exposition::{Format, assert_metric, metric, parse_or_panic};
use crate::util::http::get;
use crate::util::pebble::Pebble;
use crate::util::wait::{EVERY, eventually, within};
use crate::util::{TestCa, TlsServer, real_now};

#[tokio::test(flavor = "multi_thread")]
async fn serve_issues_renews_and_reports_drift() {
    let http01_port = crate::util::unique_port();
    // 20-second certificates renewed at half their lifetime: a renewal within the test.
    let pebble = Pebble::start(http01_port, 20).await;
    let dir = pebble.dir.path();
    std::fs::write(
        dir.join("acme-root.pem"),
        crate::util::pem(&pebble.issuing_root().await),
    )
    .unwrap();
    // The endpoint starts out serving a certificate tlsward never issued.
    let old = TestCa::root_at("Old CA", real_now())
        .leaf(&["site.tlsward.test"])
        .build();
    let endpoint = TlsServer::leaf(&old).start().await;
    let target = format!("site.tlsward.test:{}", endpoint.addr.port());
    let config = format!(
        r#"
[store]
path = "state/tlsward.db"
key_file = "state/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"
renew_fraction = 0.5

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]

[profile.site]
ca_files = ["acme-root.pem"]
system_roots = false

[[target]]
address = "{target}"
profile = "site"
interval = "1s"
connect_to = ["127.0.0.1"]

[[endpoint]]
certificate = "site"
target = "{target}"
"#,
        directory = pebble.directory,
        ca = pebble.tls_ca_file.display(),
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;

    // The endpoint's name defaults to its target.
    let drift = |reason: &'static str| {
        let target = target.clone();
        move || {
            let target = target.clone();
            async move {
                let labels = [
                    ("endpoint", target.as_str()),
                    ("certificate", "site"),
                    ("reason", reason),
                ];
                let m = get(addr, "/metrics").await.body;
                metric(&m, "tlsward_endpoint_drift_reason_info", &labels) == Some(1.0)
            }
        }
    };
    eventually(30, "issuance and foreign drift", drift("foreign")).await;
    let m = get(addr, "/metrics").await.body;
    // The remediation families (counters, histograms, drift infos) are well formed too.
    parse_or_panic(Format::Text, &m);
    assert!(
        metric(
            &m,
            "tlsward_certificate_not_after_timestamp_seconds",
            &[("certificate", "site")]
        )
        .is_some(),
        "{m}"
    );
    assert_metric(
        &m,
        "tlsward_acme_orders_total",
        &[("result", "valid"), ("reason", "none")],
        1.0,
    );

    // Deploy the issued version by hand: drift clears.
    let store = open_store(&dir.join("state"));
    let v1 = store.latest("site").unwrap().unwrap();
    let deploy = |v: &tlsward::store::Version| {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(v.chain_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = store.version_key(v.id).unwrap();
        endpoint.swap(
            chain,
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.expose().to_vec().into()),
        );
    };
    deploy(&v1);
    eventually(10, "drift to clear", || {
        let target = target.clone();
        async move {
            let m = get(addr, "/metrics").await.body;
            let labels = [("endpoint", target.as_str()), ("certificate", "site")];
            metric(&m, "tlsward_endpoint_drift", &labels) == Some(0.0)
        }
    })
    .await;

    // At half its lifetime the certificate is renewed; the endpoint now serves a stale one.
    eventually(40, "the renewal", || {
        let store = &store;
        async move { store.versions("site").unwrap().len() >= 2 }
    })
    .await;
    eventually(10, "stale drift", drift("stale")).await;
    assert_eq!(
        store.endpoints().unwrap(),
        [tlsward::store::EndpointRow {
            name: target.clone(),
            certificate: "site".to_owned(),
            target: target.clone()
        }]
    );
    let kinds: Vec<String> = store
        .journal_entries(Some("site"))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        &kinds[..6],
        [
            "order.started",
            "order.finalizing",
            "version.stored",
            "order.started",
            "order.finalizing",
            "version.stored"
        ],
        "{kinds:?}"
    );
    drop(daemon);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The reconciler with ARI (Pebble 2.6): it reads the CA's window for the issued version,
/// records the point chosen inside it (never later than the lifetime fraction), and the
/// renewal order names the version it replaces.
#[tokio::test(flavor = "multi_thread")]
async fn serve_renews_inside_the_ari_window_with_replaces() {
    let http01_port = crate::util::unique_port();
    let pebble = Pebble::start_ari(http01_port, 20).await;
    let dir = pebble.dir.path();
    // An endpoint for the certificate, deployed by hand with the first version below.
    let placeholder = TestCa::root_at("Placeholder", real_now())
        .leaf(&["ari.tlsward.test"])
        .build();
    let endpoint = TlsServer::leaf(&placeholder).start().await;
    let target = format!("ari.tlsward.test:{}", endpoint.addr.port());
    let config = format!(
        "[store]\npath = \"state/tlsward.db\"\nkey_file = \"state/store.key\"\n\n[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nhttp01_listen = \"127.0.0.1:{http01_port}\"\nrenew_fraction = 0.5\n\n[[certificate]]\nname = \"ari\"\ndomains = [\"ari.tlsward.test\"]\n\n[profile.any]\nsystem_roots = false\nca_files = [\"{}\"]\n\n[[target]]\naddress = \"{target}\"\nprofile = \"any\"\ninterval = \"1s\"\nconnect_to = [\"127.0.0.1\"]\n\n[[endpoint]]\ncertificate = \"ari\"\ntarget = \"{target}\"\n",
        pebble.directory,
        pebble.tls_ca_file.display(),
        pebble.tls_ca_file.display()
    );
    let path = dir.join("tlsward.toml");
    std::fs::write(&path, config).unwrap();
    let daemon = crate::util::daemon::start(&path).await;
    let metrics_addr = daemon.addr;
    // Wait for the daemon to create the store before opening it here too.
    eventually(10, "the store", || async {
        dir.join("state/store.key").exists()
    })
    .await;
    let store = open_store(&dir.join("state"));
    let first = within(Duration::from_secs(10), EVERY, || {
        assert!(!daemon.is_finished(), "the daemon stopped");
        std::future::ready(store.latest("ari").unwrap())
    })
    .await
    .unwrap_or_else(|| {
        let journal = store.journal_entries(None).unwrap();
        panic!(
            "no first version; daemon finished: {}; journal: {journal:?}",
            daemon.is_finished()
        )
    });
    {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(first.chain_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = store.version_key(first.id).unwrap();
        endpoint.swap(
            chain,
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.expose().to_vec().into()),
        );
    }
    eventually(40, "a renewal", || {
        let store = &store;
        async move { store.versions("ari").unwrap().len() >= 2 }
    })
    .await;
    let versions = store.versions("ari").unwrap();
    let v1 = versions.last().unwrap();
    let (start, end) = v1.ari_window.expect("the window was recorded");
    let renew_at = v1.renew_at.expect("a point was chosen");
    let fallback = tlsward::reconcile::renewal_time(v1.not_before, v1.not_after, 0.5);
    assert!(
        renew_at <= fallback && renew_at <= end && renew_at >= start.min(v1.not_before),
        "{start}..{end}: {renew_at}, fallback {fallback}"
    );
    let journal = store.journal_entries(Some("ari")).unwrap();
    assert!(
        journal.iter().any(|e| e.kind == "ari.window"),
        "{journal:?}"
    );
    let renewal = journal
        .iter()
        .filter(|e| e.kind == "order.started")
        .nth(1)
        .unwrap();
    assert_eq!(renewal.detail["replaces"].as_str(), v1.ari_id.as_deref());
    // The endpoint still serves the first version: drift says stale.
    let addr = metrics_addr;
    let stale = [
        ("endpoint", target.as_str()),
        ("certificate", "ari"),
        ("reason", "stale"),
    ];
    eventually(10, "stale drift after the ARI renewal", || async {
        let m = get(addr, "/metrics").await.body;
        metric(&m, "tlsward_endpoint_drift_reason_info", &stale) == Some(1.0)
    })
    .await;
    // The CA's window for the certificate the endpoint actually serves is reported too.
    let served = [("endpoint", target.as_str()), ("certificate", "ari")];
    eventually(20, "the served certificate's ARI window", || async {
        let m = get(addr, "/metrics").await.body;
        metric(
            &m,
            "tlsward_endpoint_ari_window_start_timestamp_seconds",
            &served,
        )
        .is_some()
    })
    .await;
    drop(daemon);
}
