//! Probes against real TLS servers (tokio-rustls on 127.0.0.1:0) serving chains made by the
//! test CA, judged at the test clock. Each test asserts the status, the reason and the facts
//! that matter, and that the leaf is reported even when verification fails.

use std::sync::Arc;
use std::time::Duration;

use tlsward::cert::{CheckKind, Policy, Status};
use tlsward::clock::TestClock;
use tlsward::probe::{Module, ProbeReport, Prober, Target};

use crate::util::probe::{assert_verdict, facts, probe, probe_with};
use crate::util::{Leaf, TestCa, TlsServer, rsa_key, test_time};

fn check_ok(r: &ProbeReport, kind: CheckKind) -> bool {
    facts(r)
        .check(kind)
        .unwrap_or_else(|| panic!("no {kind:?} check"))
        .ok()
}

async fn serve(leaf: &Leaf) -> TlsServer {
    TlsServer::leaf(leaf).start().await
}

#[tokio::test]
async fn good_ecdsa_chain_is_ok() {
    let root = TestCa::root("Test Root");
    let int = root.intermediate("Test Int");
    let leaf = int.leaf(&["good.test"]).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "good.test", root.trust()).await;
    assert_verdict(&r, Status::Ok, None);
    let f = facts(&r);
    assert_eq!(f.leaf.dns_names, ["good.test"]);
    assert_eq!(f.leaf.subject, "CN=good.test");
    assert_eq!(f.leaf.issuer, "CN=Test Int");
    assert_eq!(f.leaf.public_key.to_string(), "ECDSA P-256");
    assert_eq!(f.chain.len(), 2);
    assert!(
        (f.days_left - 80.0).abs() < 0.01,
        "days_left {}",
        f.days_left
    );
    assert_eq!(r.tls.as_ref().unwrap().version, "TLSv1.3");
    assert_eq!(r.address, Some(server.addr));
    assert!(f.checks.iter().all(|c| c.ok()));
}

#[tokio::test]
async fn good_rsa_chain_is_ok() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["rsa.test"]).key(rsa_key()).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "rsa.test", root.trust()).await;
    assert_verdict(&r, Status::Ok, None);
    assert_eq!(facts(&r).leaf.public_key.to_string(), "RSA 2048");
}

#[tokio::test]
async fn expired_leaf_is_critical_and_still_reported() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["expired.test"]).valid(-90.0, -1.5).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "expired.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("cert_expired"));
    let f = facts(&r);
    assert_eq!(f.leaf.dns_names, ["expired.test"]);
    assert!((f.days_left + 1.5).abs() < 0.01);
    assert!(!check_ok(&r, CheckKind::Chain));
    assert!(!check_ok(&r, CheckKind::Expiry));
    assert!(check_ok(&r, CheckKind::Hostname));
}

#[tokio::test]
async fn not_yet_valid_leaf_is_critical() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["future.test"]).valid(2.0, 60.0).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "future.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("cert_not_yet_valid"));
    assert!(!check_ok(&r, CheckKind::ValidityWindow));
}

#[tokio::test]
async fn expiring_in_five_days_warns_or_is_critical_by_threshold() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["soon.test"]).valid(-60.0, 5.0).build();
    let server = serve(&leaf).await;
    // Below --warn-days 21 but above --crit-days 3: a warning.
    let policy = Policy::new().with_crit_days(3.0);
    let r = probe_with(&server, "soon.test", root.trust(), policy).await;
    assert_verdict(&r, Status::Warning, Some("cert_expiring"));
    assert!(
        r.error().unwrap().contains("expires in 5.0 days"),
        "{:?}",
        r.error()
    );
    // With the default --crit-days 7 the same certificate is critical.
    let r = probe(&server, "soon.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("cert_expiring"));
    // Fractional thresholds: 4.5 days warns no more.
    let policy = Policy::new().with_warn_days(4.5).with_crit_days(1.0);
    let r = probe_with(&server, "soon.test", root.trust(), policy).await;
    assert_verdict(&r, Status::Ok, None);
}

#[tokio::test]
async fn wrong_host_is_a_hostname_mismatch() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["good.test", "www.good.test"]).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "other.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("hostname_mismatch"));
    let err = r.error().unwrap();
    assert!(
        err.contains("other.test") && err.contains("www.good.test"),
        "{err}"
    );
    assert!(check_ok(&r, CheckKind::Chain));
    assert_eq!(facts(&r).leaf.dns_names, ["good.test", "www.good.test"]);
}

#[tokio::test]
async fn wildcard_covers_exactly_one_label() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["*.wild.test"]).build();
    let server = serve(&leaf).await;
    assert_verdict(
        &probe(&server, "a.wild.test", root.trust()).await,
        Status::Ok,
        None,
    );
    let deep = probe(&server, "a.b.wild.test", root.trust()).await;
    assert_verdict(&deep, Status::Critical, Some("hostname_mismatch"));
    let bare = probe(&server, "wild.test", root.trust()).await;
    assert_verdict(&bare, Status::Critical, Some("hostname_mismatch"));
}

#[tokio::test]
async fn self_signed_leaf_is_reported_as_such() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["selfsigned.test".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "selfsigned.test");
    params.not_before = crate::util::test_now() - time::Duration::days(1);
    params.not_after = crate::util::test_now() + time::Duration::days(30);
    let cert = params.self_signed(&key).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = TlsServer::serve(vec![cert.der().clone()], der)
        .start()
        .await;
    let r = probe(
        &server,
        "selfsigned.test",
        TestCa::root("Unrelated Root").trust(),
    )
    .await;
    assert_verdict(&r, Status::Critical, Some("self_signed"));
    assert!(check_ok(&r, CheckKind::Hostname));
    assert!(facts(&r).leaf.self_issued);
}

#[tokio::test]
async fn unknown_root_is_unknown_issuer() {
    let root = TestCa::root("Private Root");
    let int = root.intermediate("Private Int");
    let leaf = int.leaf(&["private.test"]).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "private.test", TestCa::root("Other Root").trust()).await;
    assert_verdict(&r, Status::Critical, Some("unknown_issuer"));
    assert!(
        r.error().unwrap().contains("CN=Private Root"),
        "{:?}",
        r.error()
    );
    assert_eq!(facts(&r).chain.len(), 2);
}

#[tokio::test]
async fn leaf_without_intermediate_is_an_incomplete_chain() {
    let root = TestCa::root("Test Root");
    let int = root.intermediate("Test Int");
    let leaf = int.leaf(&["incomplete.test"]).build();
    let server = TlsServer::serve(vec![leaf.der().clone()], leaf.key.clone_key())
        .start()
        .await;
    let r = probe(&server, "incomplete.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("incomplete_chain"));
    assert!(
        r.error().unwrap().contains("CN=Test Int"),
        "{:?}",
        r.error()
    );
    assert_eq!(facts(&r).chain.len(), 1);
}

#[tokio::test]
async fn long_chain_validates() {
    let root = TestCa::root("Test Root");
    let mut ca = root.intermediate("Int 1");
    for i in 2..=4 {
        ca = ca.intermediate(&format!("Int {i}"));
    }
    let leaf = ca.leaf(&["long.test"]).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "long.test", root.trust()).await;
    assert_verdict(&r, Status::Ok, None);
    let f = facts(&r);
    assert_eq!(f.chain.len(), 5);
    assert_eq!(f.chain[4].subject, "CN=Int 1");
    assert!(
        f.check(CheckKind::Chain)
            .unwrap()
            .detail
            .as_deref()
            .unwrap()
            .contains("4 intermediate")
    );
}

#[tokio::test]
async fn chain_in_wrong_order_warns_but_validates() {
    let root = TestCa::root("Test Root");
    let int1 = root.intermediate("Int 1");
    let int2 = int1.intermediate("Int 2");
    let leaf = int2.leaf(&["order.test"]).build();
    // leaf, Int 1, Int 2 instead of leaf, Int 2, Int 1.
    let chain = vec![
        leaf.chain[0].clone(),
        leaf.chain[2].clone(),
        leaf.chain[1].clone(),
    ];
    let server = TlsServer::serve(chain, leaf.key.clone_key()).start().await;
    let r = probe(&server, "order.test", root.trust()).await;
    assert_verdict(&r, Status::Warning, Some("chain_misordered"));
    assert!(check_ok(&r, CheckKind::Chain));
    assert!(r.error().unwrap().contains("#1, #3, #2"), "{:?}", r.error());
}

#[tokio::test]
async fn extra_unrelated_certificate_warns() {
    let root = TestCa::root("Test Root");
    let int = root.intermediate("Test Int");
    let leaf = int.leaf(&["extra.test"]).build();
    let stranger = TestCa::root("Stranger Root").intermediate("Stranger Int");
    let mut chain = leaf.chain.clone();
    chain.push(stranger.cert.clone());
    let server = TlsServer::serve(chain, leaf.key.clone_key()).start().await;
    let r = probe(&server, "extra.test", root.trust()).await;
    assert_verdict(&r, Status::Warning, Some("chain_extra_certs"));
    assert!(
        r.error().unwrap().contains("CN=Stranger Int"),
        "{:?}",
        r.error()
    );
}

#[tokio::test]
async fn ip_target_is_verified_against_ip_sans() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["127.0.0.1"]).build();
    let server = serve(&leaf).await;
    let mut module = Module::new(Arc::new(root.trust()));
    module.timeout = Duration::from_secs(5);
    let prober = Prober::new(module);
    let clock = TestClock::at(test_time());
    let target: Target = server.addr.to_string().parse().unwrap();
    let r = prober.probe(&target, &clock).await;
    assert_verdict(&r, Status::Ok, None);
    assert_eq!(
        facts(&r).leaf.ip_addresses,
        ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(r.server_name, "127.0.0.1");

    let other_ip = root.leaf(&["127.0.0.2"]).build();
    let server = serve(&other_ip).await;
    let target: Target = server.addr.to_string().parse().unwrap();
    let r = prober.probe(&target, &clock).await;
    assert_verdict(&r, Status::Critical, Some("hostname_mismatch"));
}

#[tokio::test]
async fn ipv6_targets_connect_and_verify_ip_sans() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["::1", "v6.test"]).build();
    let server = TlsServer::leaf(&leaf).start_on("[::1]:0").await;
    let mut module = Module::new(Arc::new(root.trust()));
    module.timeout = Duration::from_secs(5);
    let prober = Prober::new(module);
    let clock = TestClock::at(test_time());
    let target: Target = format!("[::1]:{}", server.addr.port()).parse().unwrap();
    let r = prober.probe(&target, &clock).await;
    assert_verdict(&r, Status::Ok, None);
    assert_eq!(r.target, format!("[::1]:{}", server.addr.port()));
    assert_eq!(r.server_name, "::1");
    assert_eq!(
        facts(&r).leaf.ip_addresses,
        ["::1".parse::<std::net::IpAddr>().unwrap()]
    );
    // A name sent to the v6 address with --resolve semantics.
    let r = probe(&server, "v6.test", root.trust()).await;
    assert_verdict(&r, Status::Ok, None);
    assert!(r.address.unwrap().is_ipv6());
}

#[tokio::test]
async fn idn_a_label_names_match() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["xn--bcher-kva.test"]).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "xn--bcher-kva.test", root.trust()).await;
    assert_verdict(&r, Status::Ok, None);
    assert_eq!(facts(&r).leaf.dns_names, ["xn--bcher-kva.test"]);
}

#[tokio::test]
async fn cn_only_certificate_fails_hostname() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["cnonly.test"]).cn_only().build();
    let server = serve(&leaf).await;
    let r = probe(&server, "cnonly.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("hostname_mismatch"));
    assert!(
        r.error().unwrap().contains("no subjectAltName"),
        "{:?}",
        r.error()
    );
    assert_eq!(facts(&r).leaf.subject, "CN=cnonly.test");
    assert!(check_ok(&r, CheckKind::Chain));
}

#[tokio::test]
async fn expired_intermediate_is_named() {
    let root = TestCa::root("Test Root");
    let int = root.intermediate_valid("Old Int", -400, -3);
    let leaf = int.leaf(&["oldint.test"]).build();
    let server = serve(&leaf).await;
    let r = probe(&server, "oldint.test", root.trust()).await;
    assert_verdict(&r, Status::Critical, Some("intermediate_expired"));
    assert!(r.error().unwrap().contains("CN=Old Int"), "{:?}", r.error());
    assert!(check_ok(&r, CheckKind::Expiry), "the leaf itself is fine");
}

#[tokio::test]
async fn sessions_are_never_resumed() {
    let root = TestCa::root("Test Root");
    let leaf = root.leaf(&["resume.test"]).build();
    let server = serve(&leaf).await;
    let mut module = Module::new(Arc::new(root.trust()));
    module.timeout = Duration::from_secs(5);
    let prober = Prober::new(module);
    let clock = TestClock::at(test_time());
    let mut target: Target = format!("resume.test:{}", server.addr.port())
        .parse()
        .unwrap();
    target.connect_to = vec![server.addr];
    for _ in 0..3 {
        let r = prober.probe(&target, &clock).await;
        // A resumed handshake would carry no certificate and yield no facts.
        assert_verdict(&r, Status::Ok, None);
        assert_eq!(facts(&r).chain.len(), 1);
    }
}

/// Expiry thresholds follow the certificate's lifetime by default (warning at a third left,
/// critical at a sixth, never later than 21 and 7 days): a fresh 6-day certificate is fine,
/// a 47-day one warns only past its renewal point, and long ones keep the fixed days. Each
/// certificate is served once and probed at several moments of its life by moving the clock.
#[tokio::test]
async fn expiry_thresholds_follow_the_lifetime_of_6_47_90_and_398_day_certificates() {
    let root = TestCa::root("Test Root");
    // (lifetime, [(days left, expected status)])
    let cases: &[(f64, &[(f64, Status)])] = &[
        (
            6.0,
            &[
                (5.9, Status::Ok),
                (2.1, Status::Ok),
                (1.9, Status::Warning),
                (0.9, Status::Critical),
            ],
        ),
        (
            47.0,
            &[
                (40.0, Status::Ok),
                (16.0, Status::Ok),
                (15.0, Status::Warning),
                (7.5, Status::Warning),
                (6.5, Status::Critical),
            ],
        ),
        (
            90.0,
            &[
                (80.0, Status::Ok),
                (22.0, Status::Ok),
                (20.0, Status::Warning),
                (6.5, Status::Critical),
            ],
        ),
        (
            398.0,
            &[
                (300.0, Status::Ok),
                (22.0, Status::Ok),
                (20.0, Status::Warning),
                (6.5, Status::Critical),
            ],
        ),
    ];
    for (lifetime, points) in cases {
        let name = format!("life{lifetime}.test");
        let leaf = root.leaf(&[&name]).valid(0.0, *lifetime).build();
        let server = serve(&leaf).await;
        for (left, want) in *points {
            let mut module = Module::new(Arc::new(root.trust()));
            module.timeout = Duration::from_secs(5);
            let mut target: Target = format!("{name}:{}", server.addr.port()).parse().unwrap();
            target.connect_to = vec![server.addr];
            let at = test_time() + Duration::from_secs_f64((lifetime - left) * 86_400.0);
            let r = Prober::new(module).probe(&target, &TestClock::at(at)).await;
            assert_eq!(
                r.status(),
                *want,
                "{lifetime}-day certificate with {left} days left: {:?}",
                r.error()
            );
            let detail = facts(&r)
                .check(CheckKind::Expiry)
                .and_then(|c| c.detail.clone())
                .unwrap_or_default();
            if *lifetime == 47.0 && *want == Status::Warning {
                assert!(
                    detail.contains("warning below 15.7 days, 33.3% of its 47-day lifetime"),
                    "{detail}"
                );
            }
            if *lifetime == 398.0 && *want == Status::Critical {
                assert!(detail.contains("critical below 7 days"), "{detail}");
            }
        }
    }
}
