//! Probing a test server the way every probe test does: by name, at the test clock, with its
//! addresses pinned, and the verdict and facts asserted with the report shown on failure.

use std::sync::Arc;
use std::time::Duration;

use tlsward::cert::{ChainFacts, Policy, Status, TrustStore};
use tlsward::clock::TestClock;
use tlsward::probe::{Module, ProbeReport, Prober, Target};

use crate::util::{TlsServer, test_time};

/// Probes `name` (as SNI and for verification) on the server's address at the test clock.
pub async fn probe_with(
    server: &TlsServer,
    name: &str,
    trust: TrustStore,
    policy: Policy,
) -> ProbeReport {
    let mut module = Module::new(Arc::new(trust));
    module.policy = policy;
    module.timeout = Duration::from_secs(5);
    let mut target: Target = format!("{name}:{}", server.addr.port())
        .parse()
        .expect("target");
    target.connect_to = vec![server.addr];
    Prober::new(module)
        .probe(&target, &TestClock::at(test_time()))
        .await
}

pub async fn probe(server: &TlsServer, name: &str, trust: TrustStore) -> ProbeReport {
    probe_with(server, name, trust, Policy::new()).await
}

/// The certificate facts, which every test here expects (the server always sends a chain).
pub fn facts(r: &ProbeReport) -> &ChainFacts {
    r.outcome.as_ref().unwrap_or_else(|e| {
        panic!(
            "expected certificate facts for {}, got failure {e:?}",
            r.target
        )
    })
}

#[track_caller]
pub fn assert_verdict(r: &ProbeReport, status: Status, reason: Option<&str>) {
    assert_eq!(
        (r.status(), r.reason()),
        (status, reason),
        "{}: error={:?}\nchecks={:#?}",
        r.target,
        r.error(),
        r.outcome.as_ref().map(|f| &f.checks)
    );
}
