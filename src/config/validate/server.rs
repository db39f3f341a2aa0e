//! `[server]` keys for the HTTP listeners: their limits, which targets `/probe` may probe,
//! what `/metrics` exports, this instance's shard of the targets, and `[server.web]` (TLS and
//! who may ask).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::Validator;
use crate::config::DEFAULT_LISTEN;
use crate::config::raw::{RawConfig, RawProbeTargets, RawServer};
use crate::exporter::{Allowlist, MetricsMode, ProbeTargets, WebConfig};
use crate::listen::Limits;
use crate::schedule::{FirstRound, Shard};

/// The largest `max_connections` accepted.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// The range of `header_timeout` and `idle_timeout`.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

impl Validator<'_, '_> {
    /// `listen`: the exporter's address (IP:PORT).
    pub(super) fn listen(&mut self, s: &RawServer) -> Option<SocketAddr> {
        match &s.listen {
            Some(l) => l
                .get_ref()
                .parse()
                .map_err(|_| {
                    self.p
                        .at(l, "server.listen", "expected IP:PORT, e.g. 127.0.0.1:9219")
                })
                .ok(),
            None => DEFAULT_LISTEN.parse().ok(),
        }
    }

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

    /// `metrics`: `"full"` (the default) or `"lean"`.
    pub(super) fn metrics_mode(&mut self, s: &RawServer) -> MetricsMode {
        let Some(v) = &s.metrics else {
            return MetricsMode::Full;
        };
        if let Some(mode) = MetricsMode::ALL
            .into_iter()
            .find(|m| m.as_str() == v.get_ref())
        {
            return mode;
        }
        let words: Vec<String> = MetricsMode::ALL
            .iter()
            .map(|m| format!("{:?}", m.as_str()))
            .collect();
        self.p.at(
            v,
            "server.metrics",
            format!("{:?} is not {}", v.get_ref(), words.join(" or ")),
        );
        MetricsMode::Full
    }

    /// `first_round`: `"spread"` (the default) or `"now"`.
    pub(super) fn first_round(&mut self, s: &RawServer) -> FirstRound {
        let Some(v) = &s.first_round else {
            return FirstRound::Spread;
        };
        if let Some(mode) = FirstRound::ALL
            .into_iter()
            .find(|m| m.as_str() == v.get_ref())
        {
            return mode;
        }
        let words: Vec<String> = FirstRound::ALL
            .iter()
            .map(|m| format!("{:?}", m.as_str()))
            .collect();
        self.p.at(
            v,
            "server.first_round",
            format!("{:?} is not {}", v.get_ref(), words.join(" or ")),
        );
        FirstRound::Spread
    }

    /// `shard`: `"K/N"`, this instance's shard K of N.
    pub(super) fn shard(&mut self, s: &RawServer) -> Option<Shard> {
        let v = s.shard.as_ref()?;
        Shard::parse(v.get_ref())
            .map_err(|e| self.p.at(v, "server.shard", e))
            .ok()
    }

    pub(super) fn web(&mut self, raw: &RawConfig) -> Option<WebConfig> {
        let w = &raw.server.web;
        let mut ok = true;
        let tls = match (&w.tls_cert_file, &w.tls_key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((
                self.base.join(c.get_ref()),
                self.base.join(k.get_ref()),
                c.span(),
            )),
            (Some(v), None) | (None, Some(v)) => {
                self.p.at(
                    v,
                    "server.web",
                    "tls_cert_file and tls_key_file go together",
                );
                ok = false;
                None
            }
        };
        let mut users = BTreeMap::new();
        for (user, hash) in &w.basic_auth_users {
            let h = hash.get_ref();
            if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
                || h.len() != 60
            {
                self.p.at(
                    hash,
                    &format!("server.web.basic_auth_users.{user}"),
                    "must be a bcrypt hash ($2b$...), never a plain password",
                );
                ok = false;
            } else {
                users.insert(user.clone(), h.clone());
            }
        }
        let mut tokens = Vec::new();
        for t in &w.bearer_token_sha256 {
            match decode_sha256(t.get_ref()) {
                Some(d) => tokens.push(d),
                None => {
                    self.p.at(
                        t,
                        "server.web.bearer_token_sha256",
                        "must be 64 hex digits (the SHA-256 of the token)",
                    );
                    ok = false;
                }
            }
        }
        let mut web = WebConfig::open();
        web.basic_auth_users = users;
        web.bearer_token_sha256 = tokens;
        if let Some((cert, key, span)) = tls {
            match crate::exporter::load_server_tls(&cert, &key) {
                Ok(cfg) => web.tls = Some(cfg),
                Err(e) => {
                    self.p.add(Some(span), "server.web.tls_cert_file", e);
                    ok = false;
                }
            }
        }
        ok.then_some(web)
    }
}

fn decode_sha256(digits: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}
