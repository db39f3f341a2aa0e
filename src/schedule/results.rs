//! The in-memory results of scheduled probing: per target its last round and a short
//! history, read by the exporter, the reconciler and the API.
//!
//! Memory here grows with the number of targets, so what is kept per target is compact
//! ([`Observation`]): the status, the reason, the checks as bits, and the certificates as
//! [`Cert`]s shared by every target that serves the same one (a fleet's intermediates, a
//! wildcard behind many names), their subject and issuer strings shared again between
//! certificates. The full report of a round is kept only when it saw a certificate that was
//! not ok, for the explanations `/api/targets` shows; `/probe` gives a full report on demand.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use super::{TargetKey, TargetSpec};
use crate::cert::{CertFacts, CheckKind, KeyKind, OcspStaple, Status};
use crate::probe::{ProbeReport, TlsInfo};

/// Successes kept per target in the history.
pub const HISTORY_OK: usize = 10;
/// Failures kept per target in the history: longer than successes, as they are what an
/// operator comes looking for.
pub const HISTORY_FAILED: usize = 50;

/// One certificate as the results keep it, shared by every target that serves it.
#[derive(Debug, PartialEq, Eq)]
pub struct Cert {
    /// SHA-256 of the DER.
    sha256: [u8; 32],
    /// The subject (RFC 4514-style), shared between certificates.
    pub subject: Arc<str>,
    /// The issuer, same form, shared between certificates.
    pub issuer: Arc<str>,
    /// The serial number as lowercase hex, as encoded.
    pub serial: Box<str>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// DNS names from the subjectAltName extension.
    pub dns_names: Box<[Box<str>]>,
    /// IP addresses from the subjectAltName extension.
    pub ip_addresses: Box<[IpAddr]>,
    /// The public key type and size.
    pub public_key: KeyKind,
    /// The signature algorithm's name, shared between certificates.
    pub signature_algorithm: Arc<str>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// The certificate's ARI identifier (RFC 9773 §4.1), when it names its issuer's key.
    pub ari_id: Option<Box<str>>,
}

// === impl Cert ===

impl Cert {
    /// The fingerprint as lowercase hex, as [`CertFacts::sha256`] writes it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Whether this is the certificate with the fingerprint `hex` (lowercase or not).
    pub fn has_sha256(&self, digits: &str) -> bool {
        decode_sha256(digits).is_some_and(|b| b == self.sha256)
    }
}

/// Which checks ran and which of them failed, one bit per [`CheckKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checks {
    ran: u16,
    failed: u16,
}

// === impl Checks ===

impl Checks {
    fn of(checks: &[crate::cert::Check]) -> Self {
        let mut out = Self::default();
        for c in checks {
            let bit = 1 << (c.kind as u16);
            out.ran |= bit;
            if !c.ok() {
                out.failed |= bit;
            }
        }
        out
    }

    /// Every check that ran, in report order, with whether it passed.
    pub fn iter(self) -> impl Iterator<Item = (CheckKind, bool)> {
        CheckKind::ALL.into_iter().filter_map(move |k| {
            let bit = 1 << (k as u16);
            (self.ran & bit != 0).then_some((k, self.failed & bit == 0))
        })
    }

    /// Whether `kind` passed, when it ran.
    pub fn passed(self, kind: CheckKind) -> Option<bool> {
        self.iter().find(|(k, _)| *k == kind).map(|(_, ok)| ok)
    }
}

/// What the results keep of one probe report.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The address that was connected to, once known.
    pub address: Option<SocketAddr>,
    /// ok / warning / critical / unknown.
    pub status: Status,
    /// The stable reason label, `None` when everything passed.
    pub reason: Option<&'static str>,
    /// Wall time of the probe.
    pub duration: Duration,
    /// What the handshake negotiated, shared between reports.
    pub tls: Option<Arc<TlsInfo>>,
    /// The served leaf, when the probe saw a certificate.
    pub leaf: Option<Arc<Cert>>,
    /// Every presented certificate that could be parsed, leaf first.
    pub chain: Box<[Arc<Cert>]>,
    /// The earliest notAfter among the presented certificates other than roots, Unix seconds.
    pub earliest_not_after: Option<i64>,
    /// The checks' verdicts.
    pub checks: Checks,
    /// The stapled OCSP response, when there was one.
    pub ocsp: Option<Box<OcspStaple>>,
    /// Why the probe saw no certificate, when it saw none.
    pub error: Option<Arc<str>>,
}

// === impl Observation ===

impl Observation {
    /// The compact form of `report`, sharing certificates through `interner`.
    pub fn of(report: &ProbeReport, interner: &Interner) -> Self {
        let facts = report.outcome.as_ref().ok();
        let mut shared = interner.lock();
        let chain: Box<[Arc<Cert>]> = facts
            .map(|f| f.chain.iter().map(|c| shared.cert(c)).collect())
            .unwrap_or_default();
        let leaf = facts.map(|f| match chain.first() {
            Some(first) if first.has_sha256(&f.leaf.sha256) => first.clone(),
            _ => shared.cert(&f.leaf),
        });
        Self {
            address: report.address,
            status: report.status(),
            reason: report.reason(),
            duration: report.duration,
            tls: report.tls.as_ref().map(|t| shared.tls(t)),
            leaf,
            chain,
            earliest_not_after: facts.map(|f| f.earliest_not_after.unix_timestamp()),
            checks: facts.map(|f| Checks::of(&f.checks)).unwrap_or_default(),
            ocsp: facts.and_then(|f| f.ocsp.clone()).map(Box::new),
            // Shared: a fleet's unreachable targets mostly fail with the same few texts.
            error: report
                .outcome
                .as_ref()
                .err()
                .map(|e| shared.string(&e.to_string())),
        }
    }

    /// 1 when the probe saw a certificate and no check is critical.
    pub fn success(&self) -> bool {
        matches!(self.status, Status::Ok | Status::Warning)
    }
}

/// Shares certificates and strings between the observations of many targets.
///
/// A value is dropped from the tables once no observation holds it (looked at when a table
/// has doubled since the last look), so an endpoint that serves a new certificate at every
/// probe costs only what its current one does.
#[derive(Debug, Default)]
pub struct Interner(Mutex<Tables>);

#[derive(Debug, Default)]
struct Tables {
    certs: HashMap<[u8; 32], Arc<Cert>>,
    certs_kept: usize,
    strings: HashSet<Arc<str>>,
    strings_kept: usize,
    tls: Vec<Arc<TlsInfo>>,
}

/// Distinct handshake outcomes shared; past this (a server's choices are bounded by what the
/// prober offers, so only a misbehaving one gets here) each report keeps its own.
const MAX_SHARED_TLS: usize = 64;

// === impl Interner ===

impl Interner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many certificates and strings are shared right now (for tests and benchmarks).
    pub fn sizes(&self) -> (usize, usize) {
        let t = self.lock();
        (t.certs.len(), t.strings.len())
    }
}

/// A table is looked through for entries only it holds once it has grown by this many (and
/// doubled) since the last look.
const PRUNE_SLACK: usize = 1024;

impl Tables {
    fn cert(&mut self, c: &CertFacts) -> Arc<Cert> {
        let Some(sha256) = decode_sha256(&c.sha256) else {
            // Not from the prober (which always writes 64 hex digits): kept, not shared.
            return Arc::new(self.build(c, [0; 32]));
        };
        if let Some(cert) = self.certs.get(&sha256) {
            return cert.clone();
        }
        let cert = Arc::new(self.build(c, sha256));
        if self.certs.len() >= 2 * self.certs_kept + PRUNE_SLACK {
            self.certs.retain(|_, v| Arc::strong_count(v) > 1);
            self.certs_kept = self.certs.len();
        }
        self.certs.insert(sha256, cert.clone());
        cert
    }

    fn build(&mut self, c: &CertFacts, sha256: [u8; 32]) -> Cert {
        Cert {
            sha256,
            subject: self.string(&c.subject),
            issuer: self.string(&c.issuer),
            serial: c.serial.as_str().into(),
            not_before: c.not_before.unix_timestamp(),
            not_after: c.not_after.unix_timestamp(),
            dns_names: c.dns_names.iter().map(|n| n.as_str().into()).collect(),
            ip_addresses: c.ip_addresses.iter().copied().collect(),
            public_key: c.public_key,
            signature_algorithm: self.string(&c.signature_algorithm),
            is_ca: c.is_ca,
            ari_id: c.ari_id().map(String::into_boxed_str),
        }
    }

    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        if self.strings.len() >= 2 * self.strings_kept + PRUNE_SLACK {
            self.strings.retain(|v| Arc::strong_count(v) > 1);
            self.strings_kept = self.strings.len();
        }
        self.strings.insert(shared.clone());
        shared
    }

    fn tls(&mut self, t: &TlsInfo) -> Arc<TlsInfo> {
        if let Some(shared) = self.tls.iter().find(|s| ***s == *t) {
            return shared.clone();
        }
        let shared = Arc::new(t.clone());
        if self.tls.len() < MAX_SHARED_TLS {
            self.tls.push(shared.clone());
        }
        shared
    }
}

fn decode_sha256(digits: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// Every reason label, by its position: history entries keep the position.
fn reasons() -> &'static [&'static str] {
    static REASONS: OnceLock<Vec<&'static str>> = OnceLock::new();
    REASONS.get_or_init(|| ProbeReport::reasons().collect())
}

/// One entry of a target's history, in 24 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// When the probe finished, milliseconds since the Unix epoch.
    at_ms: u64,
    /// The served leaf, when one was seen.
    leaf: Option<Arc<Cert>>,
    /// How long it took, microseconds (saturating at about 71 minutes).
    duration_us: u32,
    /// Its status.
    status: Status,
    /// 1 + the position of its reason in [`reasons`], 0 for none.
    reason: u8,
    /// The position of the address in the target's [`TargetState::addresses`], or
    /// [`NO_ADDRESS`].
    address: u8,
}

const NO_ADDRESS: u8 = u8::MAX;

// === impl HistoryEntry ===

impl HistoryEntry {
    /// When the probe finished.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }

    /// Its status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Its reason label.
    pub fn reason(&self) -> Option<&'static str> {
        reasons()
            .get(usize::from(self.reason).checked_sub(1)?)
            .copied()
    }

    /// The served leaf's fingerprint, when one was seen.
    pub fn sha256(&self) -> Option<String> {
        self.leaf.as_ref().map(|c| c.sha256_hex())
    }

    /// How long it took.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.duration_us))
    }
}

/// The latest results of one target.
#[derive(Debug, Clone)]
pub struct TargetState {
    /// The target as configured.
    pub spec: Arc<TargetSpec>,
    /// The last round (one observation per address with `all_addresses`).
    pub last: Box<[Observation]>,
    /// The last round's full reports, kept only when it saw a certificate that was not ok
    /// (for the checks' explanations; a probe that saw none is told by its observation).
    pub full: Option<Box<[ProbeReport]>>,
    /// When the last round finished.
    pub last_at: Option<SystemTime>,
    /// Recent results, newest last; failures are kept longer than successes.
    history: VecDeque<HistoryEntry>,
    /// The addresses the history names (a few: one per address of the target).
    addresses: Vec<SocketAddr>,
}

// === impl TargetState ===

impl TargetState {
    fn new(spec: Arc<TargetSpec>) -> Self {
        Self {
            spec,
            last: Box::default(),
            full: None,
            last_at: None,
            history: VecDeque::new(),
            addresses: Vec::new(),
        }
    }

    /// Recent results, newest last, each with the address it probed.
    pub fn history(&self) -> impl Iterator<Item = (&HistoryEntry, Option<SocketAddr>)> {
        self.history
            .iter()
            .map(|e| (e, self.addresses.get(usize::from(e.address)).copied()))
    }

    fn address_index(&mut self, addr: Option<SocketAddr>) -> u8 {
        let Some(addr) = addr else {
            return NO_ADDRESS;
        };
        if let Some(i) = self.addresses.iter().position(|a| *a == addr) {
            return i as u8;
        }
        if self.addresses.len() < usize::from(NO_ADDRESS) {
            self.addresses.push(addr);
            return (self.addresses.len() - 1) as u8;
        }
        NO_ADDRESS
    }

    fn record(&mut self, reports: Vec<ProbeReport>, last: Box<[Observation]>, at: SystemTime) {
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if self.history.capacity() == 0 {
            // Room for a healthy target's history and the entry that pushes one out.
            self.history.reserve_exact(HISTORY_OK + last.len());
        }
        for o in &last {
            let reason = o
                .reason
                .and_then(|r| reasons().iter().position(|k| *k == r))
                .map_or(0, |i| u8::try_from(i + 1).unwrap_or(0));
            let address = self.address_index(o.address);
            self.history.push_back(HistoryEntry {
                at_ms,
                leaf: o.leaf.clone(),
                duration_us: u32::try_from(o.duration.as_micros()).unwrap_or(u32::MAX),
                status: o.status,
                reason,
                address,
            });
        }
        let ok = |e: &HistoryEntry| e.status == Status::Ok;
        while self.history.iter().filter(|e| ok(e)).count() > HISTORY_OK {
            let pos = self.history.iter().position(ok).expect("counted");
            self.history.remove(pos);
        }
        while self.history.iter().filter(|e| !ok(e)).count() > HISTORY_FAILED {
            let pos = self.history.iter().position(|e| !ok(e)).expect("counted");
            self.history.remove(pos);
        }
        let explained = last
            .iter()
            .all(|o| o.status == Status::Ok || o.leaf.is_none());
        self.full = (!explained).then(|| reports.into_boxed_slice());
        self.last = last;
        self.last_at = Some(at);
    }
}

/// The latest state of every scheduled target, keyed by (target, profile).
#[derive(Debug, Default)]
pub struct Results {
    inner: RwLock<BTreeMap<TargetKey, TargetState>>,
    interner: Interner,
}

// === impl Results ===

impl Results {
    /// A snapshot of every target's state, in key order.
    pub fn snapshot(&self) -> Vec<TargetState> {
        self.with(|m| m.values().cloned().collect())
    }

    /// Runs `f` over the states without cloning them.
    pub fn with<R>(&self, f: impl FnOnce(&BTreeMap<TargetKey, TargetState>) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` over the next `n` states after `cursor` (the last key done, `None` to start),
    /// in key order, under one read lock, and moves the cursor on. Returns whether there
    /// may be more: a long walk this way never holds the lock probes record under for long.
    pub fn batch(
        &self,
        cursor: &mut Option<TargetKey>,
        n: usize,
        mut f: impl FnMut(&TargetState),
    ) -> bool {
        self.with(|map| {
            let range = match cursor.as_ref() {
                None => map.range::<TargetKey, _>(..),
                Some(key) => map.range::<TargetKey, _>((
                    std::ops::Bound::Excluded(key),
                    std::ops::Bound::Unbounded,
                )),
            };
            let mut seen = 0;
            for (key, state) in range.take(n) {
                f(state);
                seen += 1;
                *cursor = Some(key.clone());
            }
            seen == n
        })
    }

    /// Whether every target has been probed at least once.
    pub fn all_probed(&self) -> bool {
        self.with(|m| m.values().all(|s| s.last_at.is_some()))
    }

    /// What the results share between targets.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// Records a round of reports for `key` (the scheduler's, or a deployment's verification).
    pub fn update(&self, key: &TargetKey, reports: Vec<ProbeReport>, at: SystemTime) {
        // Compacted before the lock is taken: readers wait only for the swap.
        let last: Box<[Observation]> = reports
            .iter()
            .map(|r| Observation::of(r, &self.interner))
            .collect();
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = map.get_mut(key) {
            state.record(reports, last, at);
        }
    }

    /// Keeps the states of targets still configured, adds new ones, drops the rest.
    pub(crate) fn replace(&self, specs: &[Arc<TargetSpec>]) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        // Collected, not inserted one by one: a map built from all its entries at once packs
        // its nodes full, where insertion leaves them about half empty (a tenth of a
        // target's memory at fleet scale). Probes only update entries, so it stays packed.
        let next: BTreeMap<_, _> = specs
            .iter()
            .map(|spec| {
                let key = spec.key();
                let state = match map.remove(&key) {
                    Some(mut s) => {
                        s.spec = spec.clone();
                        s
                    }
                    None => TargetState::new(spec.clone()),
                };
                (key, state)
            })
            .collect();
        *map = next;
    }
}

/// Seconds since the Unix epoch as a time, for JSON.
pub fn unix_time(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{ChainFacts, TrustStore};
    use crate::probe::{Module, ProbeFailure, Prober, Target};

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn spec(name: &str) -> Arc<TargetSpec> {
        Arc::new(TargetSpec {
            name: name.into(),
            profile: "https".into(),
            target: name.parse().unwrap(),
            interval: Duration::from_secs(60),
            prober: Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty())))),
            labels: vec![],
            all_addresses: false,
        })
    }

    /// A served self-signed chain for `name`, trusted, analysed as for `verified_as`.
    fn facts(name: &str, verified_as: &str) -> ChainFacts {
        crate::cert::fixtures::self_signed(name, verified_as, UNIX_EPOCH + NOW)
    }

    fn report(target: &str, outcome: Result<ChainFacts, ProbeFailure>) -> ProbeReport {
        let t: Target = target.parse().unwrap();
        let mut r = ProbeReport::unreached(&t, Duration::from_millis(3), ProbeFailure::Closed);
        r.address = Some(([127, 0, 0, 1], 443).into());
        r.outcome = outcome;
        r
    }

    fn results(names: &[&str]) -> Results {
        let r = Results::default();
        let specs: Vec<_> = names.iter().map(|n| spec(n)).collect();
        r.replace(&specs);
        r
    }

    fn key(name: &str) -> TargetKey {
        (name.into(), "https".into())
    }

    fn state(r: &Results, name: &str) -> TargetState {
        r.with(|m| m[&key(name)].clone())
    }

    #[test]
    fn an_observation_keeps_what_the_report_says() {
        let f = facts("a.test", "other.test");
        let rep = report("a.test:443", Ok(f.clone()));
        let o = Observation::of(&rep, &Interner::default());
        assert_eq!(o.status, rep.status());
        assert_eq!(o.reason, rep.reason());
        assert_eq!(o.reason, Some("hostname_mismatch"));
        let leaf = o.leaf.as_ref().unwrap();
        assert_eq!(leaf.sha256_hex(), f.leaf.sha256);
        assert!(leaf.has_sha256(&f.leaf.sha256.to_uppercase()));
        assert!(!leaf.has_sha256(&"0".repeat(64)));
        assert_eq!(&*leaf.subject, f.leaf.subject);
        assert_eq!(&*leaf.serial, f.leaf.serial);
        assert_eq!(leaf.not_after, f.leaf.not_after.unix_timestamp());
        assert_eq!(leaf.dns_names.len(), 1);
        assert_eq!(&*leaf.dns_names[0], "a.test");
        assert_eq!(leaf.ari_id.as_deref(), f.leaf.ari_id().as_deref());
        // The leaf is the chain's first certificate, shared, not a second copy.
        assert!(Arc::ptr_eq(leaf, &o.chain[0]));
        let checks: Vec<(CheckKind, bool)> = o.checks.iter().collect();
        let want: Vec<(CheckKind, bool)> = f.checks.iter().map(|c| (c.kind, c.ok())).collect();
        assert_eq!(checks, want);
        assert_eq!(o.checks.passed(CheckKind::Hostname), Some(false));
        assert_eq!(o.checks.passed(CheckKind::Chain), Some(true));
        // Added by the prober after the handshake, not by the analysis.
        assert_eq!(o.checks.passed(CheckKind::Handshake), None);
        let refused = Observation::of(
            &report("a.test:443", Err(ProbeFailure::ConnectRefused)),
            &Interner::default(),
        );
        assert_eq!(refused.reason, Some("connect_refused"));
        assert!(refused.leaf.is_none() && refused.chain.is_empty());
        assert_eq!(refused.checks.iter().count(), 0);
    }

    #[test]
    fn targets_serving_one_certificate_share_it_and_its_strings() {
        let f = facts("shared.test", "shared.test");
        let names: Vec<String> = (0..50).map(|i| format!("h{i}.test:443")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = results(&refs);
        for n in &names {
            r.update(&key(n), vec![report(n, Ok(f.clone()))], UNIX_EPOCH + NOW);
        }
        let first = state(&r, &names[0]).last[0].leaf.clone().unwrap();
        for n in &names {
            let s = state(&r, n);
            assert!(Arc::ptr_eq(s.last[0].leaf.as_ref().unwrap(), &first), "{n}");
        }
        // One certificate; its subject and issuer are the same string (self-signed), and the
        // signature algorithm's name.
        assert_eq!(r.interner().sizes(), (1, 2));
        assert!(Arc::ptr_eq(&first.subject, &first.issuer));
    }

    #[test]
    fn certificates_no_target_serves_any_more_are_dropped() {
        let r = results(&["rotating.test:443"]);
        // A server that presents a new certificate at every probe.
        let certs: Vec<ChainFacts> = (0..40)
            .map(|i| facts(&format!("c{i}.test"), &format!("c{i}.test")))
            .collect();
        for round in 0..(3 * PRUNE_SLACK) {
            let mut f = certs[round % certs.len()].clone();
            // Distinct fingerprints beyond the 40 real ones: the table sees a new one each
            // round, as with a server that makes a certificate per connection.
            f.leaf.sha256 = format!("{round:064x}");
            f.chain[0].sha256 = f.leaf.sha256.clone();
            r.update(
                &key("rotating.test:443"),
                vec![report("rotating.test:443", Ok(f))],
                UNIX_EPOCH + NOW,
            );
        }
        let (certs_kept, strings_kept) = r.interner().sizes();
        // Only the history's ten and what arrived since the last look stay.
        assert!(certs_kept <= 2 * HISTORY_OK + PRUNE_SLACK, "{certs_kept}");
        assert!(
            strings_kept <= 2 * (HISTORY_OK + 1) + PRUNE_SLACK,
            "{strings_kept}"
        );
    }

    #[test]
    fn the_full_report_is_kept_only_when_a_round_is_not_ok() {
        let r = results(&["a.test:443"]);
        let at = UNIX_EPOCH + NOW;
        r.update(
            &key("a.test:443"),
            vec![report("a.test:443", Ok(facts("a.test", "a.test")))],
            at,
        );
        let s = state(&r, "a.test:443");
        assert_eq!(s.last[0].status, Status::Ok);
        assert!(s.full.is_none());
        let bad = report("a.test:443", Ok(facts("a.test", "b.test")));
        r.update(&key("a.test:443"), vec![bad.clone()], at);
        let s = state(&r, "a.test:443");
        assert_eq!(s.full.as_deref(), Some(&[bad][..]));
        r.update(
            &key("a.test:443"),
            vec![report("a.test:443", Err(ProbeFailure::ConnectRefused))],
            at,
        );
        // A probe that saw no certificate is told in full by its observation.
        let s = state(&r, "a.test:443");
        assert!(s.full.is_none());
        assert_eq!(
            s.last[0].error.as_deref(),
            Some(ProbeFailure::ConnectRefused.to_string().as_str())
        );
        // A target not (or no longer) scheduled records nothing.
        r.update(
            &key("gone.test:443"),
            vec![report("gone.test:443", Err(ProbeFailure::Closed))],
            at,
        );
        assert!(r.with(|m| !m.contains_key(&key("gone.test:443"))));
    }

    #[test]
    fn history_entries_are_small_and_read_back_what_was_recorded() {
        assert_eq!(size_of::<HistoryEntry>(), 24);
        let r = results(&["a.test:443"]);
        let at = UNIX_EPOCH + NOW + Duration::from_millis(250);
        let f = facts("a.test", "a.test");
        let mut ok = report("a.test:443", Ok(f.clone()));
        ok.duration = Duration::from_micros(12_345);
        let mut refused = report("a.test:443", Err(ProbeFailure::ConnectRefused));
        refused.address = Some(([127, 0, 0, 2], 8443).into());
        r.update(&key("a.test:443"), vec![ok], at);
        r.update(
            &key("a.test:443"),
            vec![refused],
            at + Duration::from_secs(60),
        );
        let s = state(&r, "a.test:443");
        let h: Vec<_> = s.history().collect();
        assert_eq!(h.len(), 2);
        let (e, addr) = &h[0];
        assert_eq!(e.at(), at);
        assert_eq!(e.status(), Status::Ok);
        assert_eq!(e.reason(), None);
        assert_eq!(e.sha256().as_deref(), Some(f.leaf.sha256.as_str()));
        assert_eq!(e.duration(), Duration::from_micros(12_345));
        assert_eq!(*addr, Some(([127, 0, 0, 1], 443).into()));
        let (e, addr) = &h[1];
        assert_eq!(e.status(), Status::Critical);
        assert_eq!(e.reason(), Some("connect_refused"));
        assert_eq!(e.sha256(), None);
        assert_eq!(*addr, Some(([127, 0, 0, 2], 8443).into()));
    }

    #[test]
    fn history_keeps_failures_longer_than_successes() {
        let r = results(&["a.test:443"]);
        let f = facts("a.test", "a.test");
        for i in 0..200 {
            let outcome = if i % 4 == 0 {
                Err(ProbeFailure::ConnectRefused)
            } else {
                Ok(f.clone())
            };
            r.update(
                &key("a.test:443"),
                vec![report("a.test:443", outcome)],
                UNIX_EPOCH + NOW,
            );
        }
        let s = state(&r, "a.test:443");
        let ok = s
            .history()
            .filter(|(e, _)| e.status() == Status::Ok)
            .count();
        let failed = s.history().count() - ok;
        assert_eq!((ok, failed), (HISTORY_OK, HISTORY_FAILED));
    }
}
