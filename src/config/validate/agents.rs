//! `[agents]` (the agent API's listener, the names of its server certificate, the lifetime
//! of agents' identities, its connection cap), `[[endpoint]] agent` and
//! `[[certificate]] key = "agent"`.

use std::net::{IpAddr, SocketAddr};

use super::Validator;
use crate::config::raw::{RawConfig, RawEndpoint};
use crate::config::{
    AgentsSettings, DEFAULT_AGENT_CONNECTIONS, DEFAULT_IDENTITY_LIFETIME, MIN_IDENTITY_LIFETIME,
    is_agent_name,
};
use crate::issuer::CertificateSpec;

/// The largest `[agents] max_connections` accepted.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// The most names `[agents] names` may list.
const MAX_NAMES: usize = 100;

impl Validator<'_, '_> {
    /// `[agents]`, when present; it needs `[acme]` (agents deploy managed certificates).
    pub(super) fn agents(&mut self, raw: &RawConfig) -> Option<AgentsSettings> {
        let section = raw.agents.as_ref()?;
        let a = section.get_ref();
        if raw.acme.is_none() {
            self.p.at(
                section,
                "agents",
                "the agent API deploys managed certificates, which need an [acme] section",
            );
        }
        let listen: Option<SocketAddr> = a
            .listen
            .get_ref()
            .parse()
            .map_err(|_| {
                self.p.at(
                    &a.listen,
                    "agents.listen",
                    "expected IP:PORT, e.g. 10.0.0.1:8443",
                )
            })
            .ok();
        let names = match &a.names {
            Some(v) => {
                let list = v.get_ref();
                if list.is_empty() || list.len() > MAX_NAMES {
                    self.p.at(
                        v,
                        "agents.names",
                        format!("name 1 to {MAX_NAMES} DNS names or IP addresses"),
                    );
                }
                for (i, n) in list.iter().enumerate() {
                    if !is_san(n) {
                        self.p.at(
                            v,
                            &format!("agents.names[{i}]"),
                            format!(
                                "{:?} is not a DNS name or an IP address",
                                crate::escape::visible_within(n, 80)
                            ),
                        );
                    }
                }
                list.clone()
            }
            None => default_names(listen, &host_name()),
        };
        let identity_lifetime = match &a.identity_lifetime {
            Some(v) => match self.duration(Some(v), "agents.identity_lifetime") {
                Some(d) if d < MIN_IDENTITY_LIFETIME => {
                    self.p
                        .at(v, "agents.identity_lifetime", "must be at least 1h");
                    DEFAULT_IDENTITY_LIFETIME
                }
                Some(d) => d,
                None => DEFAULT_IDENTITY_LIFETIME,
            },
            None => DEFAULT_IDENTITY_LIFETIME,
        };
        let max_connections = match &a.max_connections {
            Some(n) if (1..=MAX_CONNECTIONS).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.p.at(
                    n,
                    "agents.max_connections",
                    format!("{} is outside 1..={MAX_CONNECTIONS}", n.get_ref()),
                );
                DEFAULT_AGENT_CONNECTIONS
            }
            None => DEFAULT_AGENT_CONNECTIONS,
        };
        Some(AgentsSettings {
            listen: listen?,
            names,
            identity_lifetime,
            max_connections,
        })
    }

    /// `[[endpoint]] agent`: a valid name, with `[agents]` configured. A problem clears `ok`.
    pub(super) fn endpoint_agent(
        &mut self,
        raw: &RawConfig,
        e: &RawEndpoint,
        key: &str,
        ok: &mut bool,
    ) -> Option<String> {
        let a = e.agent.as_ref()?;
        let name = a.get_ref();
        if !is_agent_name(name) {
            self.p.at(
                a,
                &format!("{key}.agent"),
                format!(
                    "{:?} is not an agent name (letters, digits, '.', '_', '-', at most 63, starting with a letter or digit)",
                    crate::escape::visible_within(name, 80)
                ),
            );
            *ok = false;
            return None;
        }
        if raw.agents.is_none() {
            self.p.at(
                a,
                &format!("{key}.agent"),
                "agent endpoints need an [agents] section (the agent API)",
            );
            *ok = false;
            return None;
        }
        Some(name.clone())
    }

    /// `[[certificate]] key = "agent"`: allowed only when exactly one endpoint uses the
    /// certificate and it has `agent`; that agent then holds the key.
    pub(super) fn agent_keys(&mut self, raw: &RawConfig, certificates: &mut [CertificateSpec]) {
        for (i, c) in raw.certificates.iter().enumerate() {
            let Some(k) = &c.key else {
                continue;
            };
            let key = format!("certificate[{i}].key");
            if k.get_ref() != "agent" {
                self.p.at(
                    k,
                    &key,
                    format!(
                        "{:?} is not a key mode (the only one is \"agent\"; leave key out for a central key)",
                        crate::escape::visible_within(k.get_ref(), 80)
                    ),
                );
                continue;
            }
            let users: Vec<&RawEndpoint> = raw
                .endpoints
                .iter()
                .filter(|e| e.certificate.get_ref() == c.name.get_ref())
                .collect();
            let agent = match users.as_slice() {
                [one] => one.agent.as_ref().map(|a| a.get_ref()),
                _ => None,
            };
            let Some(agent) = agent else {
                let found = match users.as_slice() {
                    [] => "no endpoint uses it".to_owned(),
                    [_] => "its endpoint has no agent".to_owned(),
                    many => format!("{} endpoints use it", many.len()),
                };
                self.p.at(
                    k,
                    &key,
                    format!(
                        "key = \"agent\" needs exactly one endpoint with agent = \"NAME\" using this certificate ({found}); a shared certificate keeps its central key, sealed to each agent"
                    ),
                );
                continue;
            };
            if let Some(spec) = certificates
                .iter_mut()
                .find(|s| s.name == *c.name.get_ref() && s.agent_key.is_none())
            {
                spec.agent_key = Some(agent.clone());
            }
        }
    }
}

/// Whether `name` can be a SAN of the agent API's certificate.
fn is_san(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok() || rustls_pki_types::DnsName::try_from(name).is_ok()
}

/// This host's name (`/proc/sys/kernel/hostname`), when it is a DNS name.
fn host_name() -> Option<String> {
    let text = crate::files::read_to_string(
        std::path::Path::new("/proc/sys/kernel/hostname"),
        crate::files::MAX_SECRET,
    )
    .ok()?;
    let name = text.trim().to_ascii_lowercase();
    (!name.is_empty() && rustls_pki_types::DnsName::try_from(name.as_str()).is_ok()).then_some(name)
}

/// The default SANs: `localhost`, `127.0.0.1`, `::1`, the host name, and the listen IP when
/// it is not unspecified.
fn default_names(listen: Option<SocketAddr>, host: &Option<String>) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(h) = host
        && !names.contains(h)
    {
        names.push(h.clone());
    }
    if let Some(l) = listen
        && !l.ip().is_unspecified()
        && !l.ip().is_loopback()
    {
        names.push(l.ip().to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_add_the_host_and_a_specific_listen_ip() {
        let l = "10.203.0.1:8443".parse().ok();
        assert_eq!(
            default_names(l, &Some("center".into())),
            ["localhost", "127.0.0.1", "::1", "center", "10.203.0.1"]
        );
        let any = "0.0.0.0:8443".parse().ok();
        assert_eq!(default_names(any, &None), ["localhost", "127.0.0.1", "::1"]);
    }

    #[test]
    fn agent_names_follow_the_rule() {
        for good in ["web-01", "a", "A.b_c-9", &"x".repeat(63)] {
            assert!(is_agent_name(good), "{good}");
        }
        for bad in [
            "",
            "-web",
            ".a",
            "web 01",
            "wéb",
            "a/b",
            &"x".repeat(64),
            "a\u{1b}",
        ] {
            assert!(!is_agent_name(bad), "{bad:?}");
        }
    }
}
