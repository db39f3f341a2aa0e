//! x509-limbo conformance: every testcase of the C2SP/x509-limbo path-validation suite that
//! `tlsward verify` can express runs through the real binary, as a user would run it.
//!
//! Data: `../shared/conformance/x509-limbo.json` beside the clone (release 2023-12-02, 135
//! `SERVER` testcases; see the README.md there). It is read in place, never copied into the
//! project, and the test fails when it is missing.
//!
//! Only path validation is judged: tlsward accepts a chain when the JSON's `checks.chain.ok`
//! and `checks.hostname.ok` are both true (expiry, order, key strength... are policy). The test
//! pins the exact number of agreeing cases and the exact set of disagreeing ones, each with the
//! reason rustls-webpki 0.103 differs, so a regression or an improvement fails until this file
//! is updated. `cargo test --test tests limbo -- --nocapture` prints the summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Cases whose verdict agrees with x509-limbo's expected result.
const AGREED: usize = 87;

/// Every case where tlsward's verdict differs from x509-limbo's, and why (one line each).
#[rustfmt::skip]
const DISAGREED: &[(&str, &str)] = &[
    ("pathlen::validation-ignores-pathlen-in-leaf", "webpki rejects any cA=TRUE leaf (CaUsedAsEndEntity)"),
    ("pathlen::self-issued-certs-pathlen", "webpki counts self-issued intermediates against pathLen; reported as bad signature (webpki's error ranking)"),
    ("rfc5280::aki::critical-aki", "critical AKI is on the root; webpki reads only an anchor's subject, SPKI and name constraints"),
    ("rfc5280::aki::leaf-missing-aki", "webpki chains by issuer name and never requires AKI"),
    ("rfc5280::aki::intermediate-missing-aki", "webpki chains by issuer name and never requires AKI"),
    ("rfc5280::aki::cross-signed-root-missing-aki", "pedantic-rfc5280; the cert is a trust anchor, whose extensions webpki ignores"),
    ("rfc5280::nc::permitted-dns-match-noncritical", "rfc5280-incompatible-with-webpki: webpki ignores NameConstraints criticality (CABF allows it)"),
    ("rfc5280::nc::permitted-dn-match", "name-constraint-dn: webpki rejects all directoryName constraints (webpki#19); leaf has no example.com SAN either"),
    ("rfc5280::nc::permitted-self-issued", "webpki applies name constraints to self-issued intermediates; reported as bad signature (error ranking)"),
    ("rfc5280::nc::not-allowed-in-ee-noncritical", "webpki ignores NameConstraints in an end-entity cert"),
    ("rfc5280::nc::not-allowed-in-ee-critical", "webpki ignores NameConstraints in an end-entity cert (it is a known extension)"),
    ("rfc5280::san::noncritical-with-empty-subject", "webpki does not check SAN criticality against the subject"),
    ("rfc5280::serial::too-long", "pedantic-serial-number: webpki deliberately enforces no serial-number rules (too long)"),
    ("rfc5280::serial::zero", "pedantic-serial-number: webpki deliberately enforces no serial-number rules (zero)"),
    ("rfc5280::ski::critical-ski", "critical SKI is on the root; webpki ignores a trust anchor's extensions"),
    ("rfc5280::ski::root-missing-ski", "webpki never requires SKI, and ignores a trust anchor's extensions"),
    ("rfc5280::ski::intermediate-missing-ski", "webpki chains by issuer name and never requires SKI"),
    ("rfc5280::validity::expired-root", "webpki does not check a trust anchor's validity period"),
    ("rfc5280::ee-empty-issuer", "the empty issuer is the root's (not the EE's); webpki ignores an anchor's issuer"),
    ("rfc5280::ca-empty-subject", "webpki matches names bytewise and allows an empty CA subject"),
    ("rfc5280::unknown-critical-extension-root", "the unknown critical extension is on the root; webpki ignores anchor extensions"),
    ("rfc5280::root-missing-basic-constraints", "webpki does not check a trust anchor's basicConstraints"),
    ("rfc5280::root-non-critical-basic-constraints", "webpki does not check a trust anchor's basicConstraints"),
    ("rfc5280::root-inconsistent-ca-extensions", "webpki does not check a trust anchor's keyUsage or basicConstraints"),
    ("rfc5280::leaf-ku-keycertsign", "webpki does not check the leaf's keyUsage against cA=FALSE"),
    ("webpki::aki::root-with-aki-missing-keyidentifier", "CABF root profile; webpki ignores a trust anchor's AKI"),
    ("webpki::aki::root-with-aki-authoritycertissuer", "CABF root profile; webpki ignores a trust anchor's AKI"),
    ("webpki::aki::root-with-aki-authoritycertserialnumber", "CABF root profile; webpki ignores a trust anchor's AKI"),
    ("webpki::aki::root-with-aki-all-fields", "CABF root profile; webpki ignores a trust anchor's AKI"),
    ("webpki::aki::root-with-aki-ski-mismatch", "CABF root profile; webpki ignores a trust anchor's AKI and SKI"),
    ("webpki::eku::ee-anyeku", "pedantic-webpki-eku: serverAuth is present, and webpki does not forbid anyExtendedKeyUsage beside it"),
    ("webpki::eku::ee-critical-eku", "pedantic-webpki-eku: webpki accepts a critical EKU"),
    ("webpki::eku::ee-without-eku", "pedantic-webpki-eku: webpki's server_auth() only requires serverAuth if an EKU is present"),
    ("webpki::eku::root-has-eku", "pedantic-webpki-eku: webpki ignores a trust anchor's EKU"),
    ("webpki::nc::intermediate-permitted-excluded-subtrees-both-null", "CABF profile; webpki accepts NameConstraints with neither subtree"),
    ("webpki::nc::intermediate-permitted-excluded-subtrees-both-empty-sequences", "CABF profile; webpki accepts empty NameConstraints subtrees"),
    ("webpki::san::san-critical-with-nonempty-subject", "CABF profile; webpki does not check SAN criticality"),
    ("webpki::malformed-aia", "webpki does not parse AuthorityInfoAccess (non-critical, ignored)"),
    ("webpki::forbidden-p192-spki-leaf", "pedantic-webpki: path validation never uses the leaf's key (tlsward flags it as weak_key policy)"),
    ("webpki::forbidden-dsa-spki-leaf", "pedantic-webpki: path validation never uses the leaf's key (tlsward flags it as weak_key policy)"),
    ("webpki::forbidden-signature-algorithm-in-leaf", "pedantic-webpki: the DSA key is the leaf's own, unused by path validation (weak_key policy)"),
];

/// webpki accepts at most this many intermediates, so a `max_chain_depth` at least this large
/// constrains nothing and the case is still expressible.
const WEBPKI_MAX_INTERMEDIATES: u64 = 6;

/// The x509-limbo data: `$TLSWARD_LIMBO_JSON`, else `shared/conformance/` beside the clone,
/// else the machine's `/work/shared/conformance/` (a clone may live anywhere).
fn load() -> Value {
    let candidates: Vec<std::path::PathBuf> = std::env::var_os("TLSWARD_LIMBO_JSON")
        .map(Into::into)
        .into_iter()
        .chain([
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/x509-limbo.json"),
            "/work/shared/conformance/x509-limbo.json".into(),
        ])
        .collect();
    let text = candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| {
            panic!(
                "cannot read the x509-limbo data at any of {candidates:?}; \
                 set TLSWARD_LIMBO_JSON to its path"
            )
        });
    let data: Value = serde_json::from_str(&text).expect("x509-limbo.json is valid JSON");
    assert_eq!(data["version"], 1, "unexpected x509-limbo schema version");
    data
}

/// Why `tlsward verify` cannot express a testcase, or `None` when it can.
fn skip_reason(tc: &Value) -> Option<&'static str> {
    let non_empty = |key: &str| tc[key].as_array().is_some_and(|a| !a.is_empty());
    let eku: Vec<&str> = strs(&tc["extended_key_usage"]).collect();
    if tc["validation_kind"] != "SERVER" {
        Some("validation_kind is not SERVER")
    } else if !matches!(
        tc["expected_peer_name"]["kind"].as_str(),
        Some("DNS" | "IP")
    ) {
        Some("no DNS or IP expected_peer_name")
    } else if non_empty("signature_algorithms") {
        Some("signature_algorithms constraint")
    } else if non_empty("key_usage") {
        Some("key_usage constraint")
    } else if !eku.is_empty() && eku != ["serverAuth"] {
        Some("extended_key_usage other than serverAuth")
    } else if tc["max_chain_depth"]
        .as_u64()
        .is_some_and(|d| d < WEBPKI_MAX_INTERMEDIATES)
    {
        Some("max_chain_depth tighter than webpki's own limit")
    } else {
        None
    }
}

/// The strings of a JSON array (none when it is null).
fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// PEM strings concatenated, each on its own lines.
fn pem_bundle<'a>(certs: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for pem in certs {
        out.push_str(pem);
        if !pem.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Runs `tlsward verify` in `dir` on a testcase: whether tlsward accepts it, and what it said.
fn run_tlsward(tc: &Value, dir: &Path) -> (bool, String) {
    let leaf = tc["peer_certificate"].as_str().expect("peer_certificate");
    let chain = std::iter::once(leaf).chain(strs(&tc["untrusted_intermediates"]));
    std::fs::write(dir.join("chain.pem"), pem_bundle(chain)).expect("write chain");
    std::fs::write(dir.join("ca.pem"), pem_bundle(strs(&tc["trusted_certs"]))).expect("write CA");
    let name = tc["expected_peer_name"]["value"]
        .as_str()
        .expect("peer name");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlsward"));
    cmd.current_dir(dir)
        .args(["verify", "--chain", "chain.pem", "--name", name]);
    cmd.args([
        "--ca-file",
        "ca.pem",
        "--no-system-roots",
        "--output",
        "json",
    ]);
    if let Some(at) = tc["validation_time"].as_str() {
        cmd.args(["--at", at]);
    }
    let out = cmd.output().expect("run tlsward");
    let Ok(mut report) = serde_json::from_slice::<Value>(&out.stdout) else {
        // No report at all (e.g. an unusable CA file): tlsward refused the chain.
        let stderr = String::from_utf8_lossy(&out.stderr);
        return (false, format!("{}: {}", out.status, stderr.trim()));
    };
    if report.is_array() {
        report = report[0].take();
    }
    let checks = &report["checks"];
    let ok = checks["chain"]["ok"] == true && checks["hostname"]["ok"] == true;
    let (chain, host) = (&checks["chain"]["detail"], &checks["hostname"]["detail"]);
    (ok, format!("chain: {chain}; hostname: {host}"))
}

#[test]
fn x509_limbo_conformance() {
    let data = load();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    // Per feature ("-" for none): cases run, and disagreements.
    let mut features: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut agreed = 0;
    let mut disagreed: BTreeMap<String, String> = BTreeMap::new();
    for tc in data["testcases"].as_array().expect("testcases") {
        if let Some(reason) = skip_reason(tc) {
            *skipped.entry(reason).or_default() += 1;
            continue;
        }
        let id = tc["id"].as_str().expect("id").to_owned();
        let expect_success = match tc["expected_result"].as_str() {
            Some("SUCCESS") => true,
            Some("FAILURE") => false,
            other => panic!("{id}: unexpected expected_result {other:?}"),
        };
        let (accepted, detail) = run_tlsward(tc, dir.path());
        let agrees = accepted == expect_success;
        let mut tags: Vec<&str> = strs(&tc["features"]).collect();
        if tags.is_empty() {
            tags.push("-");
        }
        for tag in tags {
            let slot = features.entry(tag).or_default();
            slot.0 += 1;
            slot.1 += usize::from(!agrees);
        }
        if agrees {
            agreed += 1;
        } else {
            let verdict = if accepted { "accepted" } else { "rejected" };
            let expected = if expect_success { "SUCCESS" } else { "FAILURE" };
            disagreed.insert(
                id,
                format!("expected {expected}, tlsward {verdict} ({detail})"),
            );
        }
    }

    println!(
        "x509-limbo: {agreed} agree, {} disagree, {} skipped",
        disagreed.len(),
        skipped.values().sum::<usize>()
    );
    for (reason, n) in &skipped {
        println!("  skipped {n:>3}: {reason}");
    }
    for (feature, (run, off)) in &features {
        println!("  feature {feature}: {run} run, {off} disagree");
    }
    let known: BTreeMap<&str, &str> = DISAGREED.iter().copied().collect();
    for (id, what) in &disagreed {
        println!(
            "  disagree {id}: {what}\n      why: {}",
            known.get(id.as_str()).unwrap_or(&"NOT LISTED")
        );
    }

    let unexpected: Vec<&str> = disagreed
        .keys()
        .map(String::as_str)
        .filter(|id| !known.contains_key(id))
        .collect();
    let now_agree: Vec<&str> = known
        .keys()
        .copied()
        .filter(|id| !disagreed.contains_key(*id))
        .collect();
    assert_eq!(
        known.len(),
        DISAGREED.len(),
        "DISAGREED lists a testcase twice"
    );
    assert!(
        unexpected.is_empty(),
        "new disagreements (see above): {unexpected:?}"
    );
    assert!(
        now_agree.is_empty(),
        "listed, but agree now or no longer run: {now_agree:?}"
    );
    assert_eq!(
        agreed, AGREED,
        "the number of agreeing cases changed; update AGREED"
    );
}
