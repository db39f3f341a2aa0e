//! Which targets `/probe` may probe (`[server] probe_targets`): pure rules over the requested
//! name and the addresses it resolves to.
//!
//! Name patterns are matched against the requested name, CIDRs against every address the
//! name resolves to (an IP literal is its own address, and is matched by CIDRs only). When a
//! list has both kinds, a name must pass both: `["*.example.org", "10.0.0.0/8"]` allows names
//! under example.org that resolve only into 10.0.0.0/8, and IP literals in 10.0.0.0/8. A list
//! of names only trusts those names' DNS: add a CIDR to pin where they may point.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use rustls_pki_types::DnsName;

use crate::probe::Host;

/// Which targets `/probe` may probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProbeTargets {
    /// Only targets in the config, each with a profile it is configured with (the default).
    #[default]
    Configured,
    /// Any host and port: the blackbox_exporter multi-target pattern, for deployments where
    /// everyone who can reach `/probe` may make tlsward connect anywhere.
    Any,
    /// Targets the allowlist admits.
    Only(Allowlist),
}

impl fmt::Display for ProbeTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Configured => f.write_str("\"configured\""),
            Self::Any => f.write_str("\"any\""),
            Self::Only(list) => write!(f, "{list}"),
        }
    }
}

/// A name pattern: `www.example.org`, `*.example.org` (any name below it, at any depth, not
/// the name itself), either with an optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    /// Lowercase, without the `*.` of a wildcard.
    name: String,
    wildcard: bool,
    port: Option<u16>,
}

impl NamePattern {
    fn matches(&self, name: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_end_matches('.');
        if self.wildcard {
            name.len() > self.name.len() + 1
                && name
                    .get(name.len() - self.name.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(&self.name))
                && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
        } else {
            name.eq_ignore_ascii_case(&self.name)
        }
    }
}

/// Name patterns and CIDRs, as written in `probe_targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<String>,
    names: Vec<NamePattern>,
    nets: Vec<IpNet>,
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.entries)
    }
}

/// Why a target may not be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The name matches no name pattern.
    Name,
    /// An IP literal outside every CIDR (or a list without CIDRs).
    Address(IpAddr),
    /// The name resolves (also) to an address outside every CIDR.
    ResolvesOutside(IpAddr),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name => f.write_str("the name matches no name pattern"),
            Self::Address(ip) => write!(f, "the address {ip} is in no CIDR of the list"),
            Self::ResolvesOutside(ip) => {
                write!(
                    f,
                    "the name resolves to {ip}, which is in no CIDR of the list"
                )
            }
        }
    }
}

/// Strips IPv4-mapped IPv6 (`::ffff:127.0.0.1`) to the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Allowlist {
    /// Parses the entries of a list; the error lists every entry that is not a name pattern,
    /// an IP address or a CIDR, each with why.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut list = Self {
            entries: entries.to_vec(),
            names: Vec::new(),
            nets: Vec::new(),
        };
        let mut problems = Vec::new();
        for entry in entries {
            match parse_entry(entry) {
                Ok(Rule::Name(p)) => list.names.push(p),
                Ok(Rule::Net(n)) => list.nets.push(n),
                Err(why) => problems.push(format!("{entry:?}: {why}")),
            }
        }
        if entries.is_empty() {
            problems.push(
                "an empty list allows nothing; use \"configured\" to allow only the configured targets"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(list)
        } else {
            Err(problems)
        }
    }

    /// Whether the addresses of a name must be checked (the list has CIDRs).
    pub fn checks_addresses(&self) -> bool {
        !self.nets.is_empty()
    }

    fn in_nets(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Checks what can be checked before resolving: an IP literal completely, a name against
    /// the name patterns.
    pub fn check_request(&self, host: &Host, port: u16) -> Result<(), Refusal> {
        match host {
            Host::Ip(ip) if self.in_nets(*ip) => Ok(()),
            Host::Ip(ip) => Err(Refusal::Address(*ip)),
            Host::Name(name) => {
                if self.names.is_empty() || self.names.iter().any(|p| p.matches(name, port)) {
                    Ok(())
                } else {
                    Err(Refusal::Name)
                }
            }
        }
    }

    /// Checks every address a name resolved to (when the list has CIDRs).
    pub fn check_addresses(&self, addrs: &[SocketAddr]) -> Result<(), Refusal> {
        if self.nets.is_empty() {
            return Ok(());
        }
        match addrs.iter().find(|a| !self.in_nets(a.ip())) {
            Some(outside) => Err(Refusal::ResolvesOutside(outside.ip())),
            None => Ok(()),
        }
    }
}

enum Rule {
    Name(NamePattern),
    Net(IpNet),
}

fn parse_entry(entry: &str) -> Result<Rule, String> {
    let s = entry.trim();
    if s.contains('/') {
        let net: IpNet = s
            .parse()
            .map_err(|_| "is not a CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)".to_owned())?;
        if net.addr() != net.network() {
            return Err(format!(
                "has bits set past the prefix length; write {}",
                net.trunc()
            ));
        }
        return Ok(Rule::Net(net));
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let ip = canonical(ip);
        return Ok(Rule::Net(IpNet::from(ip)));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))?;
            (h, Some(port))
        }
        None => (s, None),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let (name, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest.to_owned(), true),
        None => (host.clone(), false),
    };
    if name.contains('*') {
        return Err("a wildcard may only be the whole first label (*.example.org)".into());
    }
    if name.parse::<IpAddr>().is_ok() || DnsName::try_from(name.as_str()).is_err() {
        return Err(
            "is not a host name pattern, an IP address or a CIDR (e.g. \"*.example.org\", \"db.example.org:5432\", \"10.0.0.0/8\")"
                .into(),
        );
    }
    Ok(Rule::Name(NamePattern {
        name,
        wildcard,
        port,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| SocketAddr::new(a.parse().unwrap(), 443))
            .collect()
    }

    #[test]
    fn name_patterns_match_the_requested_name_and_port() {
        let l = list(&["*.example.org", "db.example.net:5432", "Exact.Example.COM."]);
        let table: &[(&str, u16, bool)] = &[
            ("www.example.org", 443, true),
            ("a.b.example.org", 8443, true),
            ("WWW.EXAMPLE.ORG.", 443, true),
            ("example.org", 443, false),
            ("evilexample.org", 443, false),
            ("example.org.evil.test", 443, false),
            ("db.example.net", 5432, true),
            ("db.example.net", 443, false),
            ("exact.example.com", 25, true),
            ("www.exact.example.com", 443, false),
        ];
        for (n, port, ok) in table {
            assert_eq!(l.check_request(&name(n), *port).is_ok(), *ok, "{n}:{port}");
        }
        // No CIDR: IP literals are refused and names are not resolved for checking.
        assert_eq!(
            l.check_request(&ip("127.0.0.1"), 443),
            Err(Refusal::Address("127.0.0.1".parse().unwrap()))
        );
        assert!(!l.checks_addresses());
    }

    #[test]
    fn cidrs_match_ip_literals_and_every_resolved_address() {
        let l = list(&["10.0.0.0/8", "::1/128", "192.0.2.7"]);
        for ok in ["10.1.2.3", "::1", "192.0.2.7", "::ffff:10.9.9.9"] {
            assert_eq!(l.check_request(&ip(ok), 443), Ok(()), "{ok}");
        }
        for bad in ["127.0.0.1", "11.0.0.1", "192.0.2.8", "::2"] {
            assert!(l.check_request(&ip(bad), 443).is_err(), "{bad}");
        }
        // Without name patterns any name passes the name check; its addresses decide.
        assert_eq!(l.check_request(&name("anything.test"), 443), Ok(()));
        assert!(l.checks_addresses());
        assert_eq!(l.check_addresses(&addrs(&["10.0.0.1", "::1"])), Ok(()));
        assert_eq!(
            l.check_addresses(&addrs(&["10.0.0.1", "127.0.0.1"])),
            Err(Refusal::ResolvesOutside("127.0.0.1".parse().unwrap())),
            "one address outside is enough to refuse"
        );
    }

    #[test]
    fn a_name_pattern_with_a_cidr_refuses_a_name_pointing_elsewhere() {
        let l = list(&["*.example.org", "192.0.2.0/24"]);
        assert_eq!(l.check_request(&name("www.example.org"), 443), Ok(()));
        assert_eq!(l.check_addresses(&addrs(&["192.0.2.10"])), Ok(()));
        // evil.example.org passes the name, but it resolves to loopback.
        assert_eq!(l.check_request(&name("evil.example.org"), 443), Ok(()));
        assert!(l.check_addresses(&addrs(&["127.0.0.1"])).is_err());
        assert_eq!(
            l.check_request(&name("www.other.test"), 443),
            Err(Refusal::Name)
        );
        assert_eq!(l.check_request(&ip("192.0.2.1"), 443), Ok(()));
    }

    #[test]
    fn bad_entries_are_each_reported() {
        let bad: Vec<String> = [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "a.*.org",
            "www.example.org:0",
            "not a name",
            "*",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            Allowlist::parse(&bad).unwrap_err(),
            [
                r#""10.0.0.1/8": has bits set past the prefix length; write 10.0.0.0/8"#,
                r#""10.0.0.0/33": is not a CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)"#,
                r#""a.*.org": a wildcard may only be the whole first label (*.example.org)"#,
                r#""www.example.org:0": "0" is not a port (1-65535)"#,
                r#""not a name": is not a host name pattern, an IP address or a CIDR (e.g. "*.example.org", "db.example.org:5432", "10.0.0.0/8")"#,
                r#""*": a wildcard may only be the whole first label (*.example.org)"#,
            ]
        );
        assert!(Allowlist::parse(&[]).is_err());
    }
}
