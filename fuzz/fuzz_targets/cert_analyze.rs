//! Fuzzes the certificate analysis (src/cert) with hostile chains and OCSP staples: it must
//! return a verdict or an error, never panic, whatever the bytes.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tlsward::cert::{self, CertificateDer, Policy, ServerName, TrustStore};

fuzz_target!(|data: &[u8]| {
    // Layout: [n_certs][len_hi][len_lo] cert ... , the rest is an OCSP staple.
    let Some((&count, mut rest)) = data.split_first() else { return };
    let mut chain = Vec::new();
    for _ in 0..(count % 6) + 1 {
        if rest.len() < 2 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        chain.push(CertificateDer::from(rest[2..2 + len].to_vec()));
        rest = &rest[2 + len..];
    }
    // The last certificate doubles as a trust anchor, so path building gets exercised.
    let mut trust = TrustStore::empty();
    if let Some(last) = chain.last() {
        trust.add_all([last], cert::Origin::Private);
    }
    let name = ServerName::try_from("fuzz.test").expect("valid name");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let ocsp = (!rest.is_empty()).then_some(rest);
    if let Ok(facts) = cert::analyze(&chain, &name, ocsp, &trust, &Policy::new(), now) {
        let _ = facts.status();
        let _ = facts.reason();
    }
    for der in &chain {
        let _ = cert::CertFacts::parse(der);
    }
});
