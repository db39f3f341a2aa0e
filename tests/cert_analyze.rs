//! The pure `cert::analyze`, without sockets: a table of chains made by the test CA (and the
//! static SHA-1 and RSA-1024 fixtures rcgen cannot make), each row pinning the status, the
//! report's reason and every failed check with its own reason, so a change in any check or
//! in the precedence between them shows up as one row.

use std::time::SystemTime;

use tlsward::cert::{
    CertError, CertificateDer, CheckKind, Policy, Reason, ServerName, Status, TrustStore, analyze,
    sha256_hex,
};

use crate::util::{Leaf, TestCa, fixture_chain, fixture_time, fixture_trust, rsa_key, test_time};

/// One chain as a server would present it, the name asked for, and what analysis must find.
struct Row {
    name: &'static str,
    chain: Vec<CertificateDer<'static>>,
    host: &'static str,
    trust: TrustStore,
    now: SystemTime,
    status: Status,
    reason: Option<Reason>,
    /// Every failed check, in report order, with its reason.
    failed: Vec<(CheckKind, Reason)>,
}

impl Row {
    /// A row judged at the test clock that passes unless `expect` says otherwise.
    fn new(name: &'static str, chain: Vec<CertificateDer<'static>>, host: &'static str) -> Self {
        Self {
            name,
            chain,
            host,
            trust: TrustStore::empty(),
            now: test_time(),
            status: Status::Ok,
            reason: None,
            failed: Vec::new(),
        }
    }

    fn trust(mut self, trust: TrustStore) -> Self {
        self.trust = trust;
        self
    }

    fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }

    /// The report's status and reason, and the failed checks.
    fn expect(mut self, status: Status, reason: Reason, failed: &[(CheckKind, Reason)]) -> Self {
        self.status = status;
        self.reason = Some(reason);
        self.failed = failed.to_vec();
        self
    }
}

/// A self-signed leaf (not a CA) for `name`, valid around the test clock.
fn self_signed(name: &str) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = crate::util::test_now() - time::Duration::days(1);
    params.not_after = crate::util::test_now() + time::Duration::days(30);
    params.self_signed(&key).unwrap().der().clone()
}

fn chain(leaf: &Leaf) -> Vec<CertificateDer<'static>> {
    leaf.chain.clone()
}

fn rows() -> Vec<Row> {
    use CheckKind as K;
    use Reason as R;
    use Status::{Critical, Warning};

    let root = TestCa::root("Analyze Root");
    let int = root.intermediate("Analyze Int");
    let trusted = || root.trust();
    let leaf = |names: &[&str]| int.leaf(names).build();
    let valid = |from: f64, to: f64| chain(&int.leaf(&["a.test"]).valid(from, to).build());

    let wildcard = chain(&leaf(&["*.wild.test"]));
    let old_int = root.intermediate_valid("Analyze Old Int", -400, -1);
    let deep_a = root.intermediate("Analyze Int A");
    let deep_b = deep_a.intermediate("Analyze Int B");
    let deep = deep_b.leaf(&["a.test"]).build();
    let stranger = TestCa::root("Analyze Stranger");
    let strangers = stranger.intermediate("Analyze Stranger Int");

    vec![
        Row::new("valid chain", chain(&leaf(&["a.test"])), "a.test").trust(trusted()),
        Row::new(
            "an RSA-2048 leaf",
            chain(&int.leaf(&["a.test"]).key(rsa_key()).build()),
            "a.test",
        )
        .trust(trusted()),
        Row::new("an IP SAN", chain(&leaf(&["127.0.0.1"])), "127.0.0.1").trust(trusted()),
        Row::new("a long chain", chain(&deep), "a.test").trust(trusted()),
        // Expiry and validity.
        Row::new("expired leaf", valid(-60.0, -1.0), "a.test")
            .trust(trusted())
            .expect(
                Critical,
                R::CertExpired,
                &[(K::Chain, R::CertExpired), (K::Expiry, R::CertExpired)],
            ),
        Row::new(
            "expired a second ago",
            valid(-60.0, -1.0 / 86_400.0),
            "a.test",
        )
        .trust(trusted())
        .expect(
            Critical,
            R::CertExpired,
            &[(K::Chain, R::CertExpired), (K::Expiry, R::CertExpired)],
        ),
        Row::new("not yet valid", valid(1.0, 90.0), "a.test")
            .trust(trusted())
            .expect(
                Critical,
                R::CertNotYetValid,
                &[
                    (K::Chain, R::CertNotYetValid),
                    (K::ValidityWindow, R::CertNotYetValid),
                ],
            ),
        Row::new("90 days, 2 left", valid(-88.0, 2.0), "a.test")
            .trust(trusted())
            .expect(Critical, R::CertExpiring, &[(K::Expiry, R::CertExpiring)]),
        Row::new("90 days, 10 left", valid(-80.0, 10.0), "a.test")
            .trust(trusted())
            .expect(Warning, R::CertExpiring, &[(K::Expiry, R::CertExpiring)]),
        Row::new("90 days, 40 left", valid(-50.0, 40.0), "a.test").trust(trusted()),
        Row::new(
            "expired intermediate",
            chain(&old_int.leaf(&["a.test"]).build()),
            "a.test",
        )
        .trust(trusted())
        .expect(
            Critical,
            R::IntermediateExpired,
            &[(K::Chain, R::IntermediateExpired)],
        ),
        // Names (RFC 6125 §6.4.3: a wildcard covers exactly one label).
        Row::new("wrong host", chain(&leaf(&["other.test"])), "a.test")
            .trust(trusted())
            .expect(
                Critical,
                R::HostnameMismatch,
                &[(K::Hostname, R::HostnameMismatch)],
            ),
        Row::new("wildcard, one label", wildcard.clone(), "a.wild.test").trust(trusted()),
        Row::new("wildcard, two labels", wildcard.clone(), "a.b.wild.test")
            .trust(trusted())
            .expect(
                Critical,
                R::HostnameMismatch,
                &[(K::Hostname, R::HostnameMismatch)],
            ),
        Row::new("wildcard, bare domain", wildcard, "wild.test")
            .trust(trusted())
            .expect(
                Critical,
                R::HostnameMismatch,
                &[(K::Hostname, R::HostnameMismatch)],
            ),
        Row::new(
            "name only in the CN",
            chain(&int.leaf(&["a.test"]).cn_only().build()),
            "a.test",
        )
        .trust(trusted())
        .expect(
            Critical,
            R::HostnameMismatch,
            &[(K::Hostname, R::HostnameMismatch)],
        ),
        Row::new(
            "an IP not in the SANs",
            chain(&leaf(&["127.0.0.1"])),
            "127.0.0.2",
        )
        .trust(trusted())
        .expect(
            Critical,
            R::HostnameMismatch,
            &[(K::Hostname, R::HostnameMismatch)],
        ),
        // Trust.
        Row::new("self-signed leaf", vec![self_signed("a.test")], "a.test")
            .trust(trusted())
            .expect(Critical, R::SelfSigned, &[(K::Chain, R::SelfSigned)]),
        Row::new(
            "untrusted root",
            chain(&strangers.leaf(&["a.test"]).build()),
            "a.test",
        )
        .trust(trusted())
        .expect(Critical, R::UnknownIssuer, &[(K::Chain, R::UnknownIssuer)]),
        Row::new(
            "missing intermediate",
            chain(&leaf(&["a.test"]))[..1].to_vec(),
            "a.test",
        )
        .trust(trusted())
        .expect(
            Critical,
            R::IncompleteChain,
            &[(K::Chain, R::IncompleteChain)],
        ),
        // Order and membership.
        Row::new(
            "intermediates out of order",
            vec![
                deep.chain[0].clone(),
                deep.chain[2].clone(),
                deep.chain[1].clone(),
            ],
            "a.test",
        )
        .trust(trusted())
        .expect(
            Warning,
            R::ChainMisordered,
            &[(K::ChainOrder, R::ChainMisordered)],
        ),
        Row::new(
            "an unrelated certificate",
            [chain(&leaf(&["a.test"])), vec![stranger.cert.clone()]].concat(),
            "a.test",
        )
        .trust(trusted())
        .expect(
            Warning,
            R::ChainExtraCerts,
            &[(K::ChainOrder, R::ChainExtraCerts)],
        ),
        // Keys and signatures (static fixtures: rcgen makes neither).
        Row::new(
            "RSA-1024 leaf",
            fixture_chain("certs/rsa1024-leaf.pem"),
            "rsa1024.test",
        )
        .trust(fixture_trust())
        .at(fixture_time())
        .expect(Critical, R::WeakKey, &[(K::KeyStrength, R::WeakKey)]),
        Row::new(
            "SHA-1 signed leaf",
            fixture_chain("certs/sha1-leaf.pem"),
            "sha1.test",
        )
        .trust(fixture_trust())
        .at(fixture_time())
        .expect(
            Critical,
            R::WeakSignature,
            &[
                (K::Chain, R::WeakSignature),
                (K::SignatureAlgorithm, R::WeakSignature),
            ],
        ),
    ]
}

#[test]
fn analyze_finds_each_reason_in_a_table_of_chains() {
    let mut wrong = Vec::new();
    for row in rows() {
        let name = ServerName::try_from(row.host).unwrap().to_owned();
        let facts = analyze(&row.chain, &name, None, &row.trust, &Policy::new(), row.now)
            .unwrap_or_else(|e| panic!("{}: {e}", row.name));
        let failed: Vec<(CheckKind, Reason)> = facts
            .checks
            .iter()
            .filter_map(|c| c.finding.as_ref().map(|f| (c.kind, f.reason)))
            .collect();
        let got = (facts.status(), facts.reason(), failed);
        let want = (row.status, row.reason, row.failed);
        if got != want {
            wrong.push(format!(
                "{}:\n  expected {want:?}\n  actual   {got:?}\n  checks {:#?}",
                row.name, facts.checks
            ));
        }
        // The leaf is reported whatever the verdict.
        assert_eq!(facts.leaf.sha256, sha256_hex(&row.chain[0]), "{}", row.name);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn an_empty_chain_or_an_unparsable_leaf_is_an_error_not_a_verdict() {
    let name = ServerName::try_from("a.test").unwrap();
    let trust = TrustStore::empty();
    let at = |chain: &[CertificateDer<'_>]| {
        analyze(chain, &name, None, &trust, &Policy::new(), test_time())
    };
    assert_eq!(at(&[]), Err(CertError::Empty));
    // A DER SEQUENCE holding one INTEGER: well-formed DER, not a certificate.
    let garbage = CertificateDer::from(b"\x30\x03\x02\x01\x00".to_vec());
    let got = at(&[garbage]);
    assert!(matches!(got, Err(CertError::Malformed(_))), "{got:?}");
}

#[test]
fn the_earliest_expiry_counts_intermediates_but_not_the_root() {
    let root = TestCa::root("Analyze Root");
    // An intermediate that ends before its leaf: the chain's earliest notAfter is its.
    let int = root.intermediate_valid("Analyze Short Int", -100, 30);
    let leaf = int.leaf(&["a.test"]).valid(-10.0, 80.0).build();
    let name = ServerName::try_from("a.test").unwrap();
    let mut sent = leaf.chain.clone();
    sent.push(root.cert.clone());
    let facts = analyze(
        &sent,
        &name,
        None,
        &root.trust(),
        &Policy::new(),
        test_time(),
    )
    .unwrap();
    let int_end = crate::util::test_now() + time::Duration::days(30);
    assert_eq!(facts.earliest_not_after, int_end);
    assert!((facts.days_left - 80.0).abs() < 0.01, "{}", facts.days_left);
}
