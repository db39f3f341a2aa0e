//! `[server]` keys for the HTTP listeners: their limits and which targets `/probe` may probe.

use std::time::Duration;

use super::Validator;
use crate::config::raw::{RawProbeTargets, RawServer};
use crate::exporter::{Allowlist, ProbeTargets};
use crate::listen::Limits;

/// The largest `max_connections` accepted.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// The range of `header_timeout` and `idle_timeout`.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

impl Validator<'_, '_> {
    /// `max_connections`, `header_timeout`, `idle_timeout`; a bad value is reported and the
    /// default kept.
    pub(super) fn http_limits(&mut self, s: &RawServer) -> Limits {
        let mut limits = Limits::new();
        if let Some(n) = &s.max_connections {
            match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_CONNECTIONS).contains(n.get_ref()) => {
                    limits = limits.with_max_connections(v);
                }
                _ => self.p.at(
                    n,
                    "server.max_connections",
                    format!("{} is outside 1..={MAX_CONNECTIONS}", n.get_ref()),
                ),
            }
        }
        if let Some(d) = self.bounded(s.header_timeout.as_ref(), "server.header_timeout") {
            limits = limits.with_header_timeout(d);
        }
        if let Some(d) = self.bounded(s.idle_timeout.as_ref(), "server.idle_timeout") {
            limits = limits.with_idle_timeout(d);
        }
        limits
    }

    /// A duration within [`TIMEOUT_RANGE`].
    fn bounded(&mut self, v: Option<&toml::Spanned<String>>, key: &str) -> Option<Duration> {
        let v = v?;
        let d = self.duration(Some(v), key)?;
        let (min, max) = TIMEOUT_RANGE;
        if (min..=max).contains(&d) {
            Some(d)
        } else {
            self.p
                .at(v, key, format!("{} is outside 100ms..=1h", v.get_ref()));
            None
        }
    }

    /// `probe_targets`: `"configured"` (the default), `"any"`, or a list of name patterns
    /// and CIDRs, each bad entry reported.
    pub(super) fn probe_targets(&mut self, s: &RawServer) -> ProbeTargets {
        let Some(v) = &s.probe_targets else {
            return ProbeTargets::Configured;
        };
        let key = "server.probe_targets";
        match v.get_ref() {
            RawProbeTargets::Word(w) if w == "configured" => ProbeTargets::Configured,
            RawProbeTargets::Word(w) if w == "any" => ProbeTargets::Any,
            RawProbeTargets::Word(w) => {
                self.p.at(
                    v,
                    key,
                    format!(
                        "{w:?} is not \"configured\" or \"any\" (or a list of name patterns and CIDRs, e.g. [\"*.example.org\", \"10.0.0.0/8\"])"
                    ),
                );
                ProbeTargets::Configured
            }
            RawProbeTargets::List(entries) => match Allowlist::parse(entries) {
                Ok(list) => ProbeTargets::Only(list),
                Err(problems) => {
                    for problem in problems {
                        self.p.at(v, key, problem);
                    }
                    ProbeTargets::Configured
                }
            },
        }
    }
}
