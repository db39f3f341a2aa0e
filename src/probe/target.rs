//! What to probe: a host and port, parsed from the forms users type.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use rustls_pki_types::{DnsName, ServerName};

/// The default port when a target names none.
pub const DEFAULT_PORT: u16 = 443;

/// A host: a DNS name (ASCII, lowercase) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, in A-label form for IDNs.
    Name(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One endpoint to probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Where to connect (unless [`Self::connect_to`] overrides the addresses).
    pub host: Host,
    /// The TCP port.
    pub port: u16,
    /// The name to send as SNI and to verify, when it differs from the host.
    pub server_name: Option<String>,
    /// Connect to these addresses instead of resolving the host (like curl's `--resolve`).
    /// A probe uses the first; probing every address uses each.
    pub connect_to: Vec<SocketAddr>,
}

/// A target string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {input}: {why}")]
pub struct TargetError {
    input: String,
    why: String,
}

impl TargetError {
    /// `input` is shown as a short escaped excerpt: targets come from files too, and an
    /// error must not echo a whole line of whatever file was named.
    fn new(input: &str, why: impl Into<String>) -> Self {
        Self {
            input: excerpt(input),
            why: why.into(),
        }
    }
}

impl Target {
    /// A target for `host` on `port` with no overrides.
    pub fn new(host: Host, port: u16) -> Self {
        Self {
            host,
            port,
            server_name: None,
            connect_to: Vec::new(),
        }
    }

    /// The name that is verified and sent as SNI: the override, else the host.
    pub fn verify_name(&self) -> String {
        match (&self.server_name, &self.host) {
            (Some(n), _) => n.clone(),
            (None, Host::Name(n)) => n.clone(),
            (None, Host::Ip(ip)) => ip.to_string(),
        }
    }

    /// The name as rustls and webpki want it: a DNS name, or an IP address (no SNI is sent
    /// for those, per RFC 6066 §3).
    pub fn server_name(&self) -> Result<ServerName<'static>, TargetError> {
        if let (None, Host::Ip(ip)) = (&self.server_name, &self.host) {
            return Ok(ServerName::IpAddress((*ip).into()));
        }
        let name = self.verify_name();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        DnsName::try_from(name.clone())
            .map(ServerName::DnsName)
            .map_err(|_| TargetError::new(&name, "not a valid DNS name"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for Target {
    type Err = TargetError;

    /// Accepts `host`, `host:port`, `1.2.3.4:port`, `[v6]:port`, `[v6]`, a bare IPv6 address,
    /// and `https://host[:port][/path]`. The port defaults to 443.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let s = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
            Some((scheme, _)) => {
                return Err(TargetError::new(
                    input,
                    format!("unsupported scheme {}", excerpt(scheme)),
                ));
            }
            None => s,
        };
        let s = s.split('/').next().unwrap_or_default();
        if s.is_empty() {
            return Err(TargetError::new(input, "empty host"));
        }
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            // `::1:8443` is a valid address, but more likely `::1` with a port: when the part
            // before the last colon is a complete address and the last group reads as a
            // port, ask for brackets instead of guessing.
            if let Some((addr, last)) = s.rsplit_once(':')
                && addr.parse::<Ipv6Addr>().is_ok()
                && parse_port(last).is_some()
                && last.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(TargetError::new(
                    input,
                    format!(
                        "an IPv6 address with a port needs brackets: write [{addr}]:{last} \
                         (or [{s}] for the address {ip} on port 443)"
                    ),
                ));
            }
            return Ok(Self::new(Host::Ip(IpAddr::V6(ip)), DEFAULT_PORT));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| TargetError::new(input, "missing ']' after IPv6 address"))?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| {
                TargetError::new(input, format!("{} is not an IPv6 address", excerpt(ip)))
            })?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| TargetError::new(input, "expected ':' after ']'"))?,
                ),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (h, p) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            (parse_host(input, h)?, p)
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => parse_port(p).ok_or_else(|| {
                TargetError::new(input, format!("{} is not a port (1-65535)", excerpt(p)))
            })?,
        };
        Ok(Self::new(host, port))
    }
}

/// Input echoed in an error: quoted, escaped, at most 24 characters.
fn excerpt(s: &str) -> String {
    crate::files::excerpt(s, 24)
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

/// A host that is not in brackets: IPv4 or a DNS name.
fn parse_host(input: &str, h: &str) -> Result<Host, TargetError> {
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if !h.is_ascii() {
        return Err(TargetError::new(
            input,
            "internationalized names must be written in A-label form (xn--...)",
        ));
    }
    let name = h.trim_end_matches('.').to_ascii_lowercase();
    DnsName::try_from(name.as_str())
        .map_err(|_| TargetError::new(input, format!("{} is not a valid host name", excerpt(h))))?;
    Ok(Host::Name(name))
}

/// A curl-style `NAME:PORT:ADDR[,ADDR...]` override: connect to ADDR when probing NAME on
/// PORT (with several addresses, as if DNS had returned them in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// The host name it applies to (lowercase).
    pub name: String,
    /// The port it applies to.
    pub port: u16,
    /// Where to connect instead.
    pub addrs: Vec<IpAddr>,
}

/// A `--resolve NAME:PORT:ADDR` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --resolve {input}: {why} (expected NAME:PORT:ADDR)")]
pub struct ResolveError {
    input: String,
    why: &'static str,
}

impl FromStr for Resolve {
    type Err = ResolveError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |why| ResolveError {
            input: excerpt(input),
            why,
        };
        let (name, rest) = input.split_once(':').ok_or_else(|| bad("missing port"))?;
        let (port, addr) = rest.split_once(':').ok_or_else(|| bad("missing address"))?;
        let port = parse_port(port).ok_or_else(|| bad("bad port"))?;
        let addrs = addr
            .split(',')
            .map(|a| {
                a.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
            })
            .collect::<Result<Vec<IpAddr>, _>>()
            .map_err(|_| bad("bad address"))?;
        Ok(Self {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            port,
            addrs,
        })
    }
}

impl Resolve {
    /// Applies this override to `target` if it names the same host and port.
    pub fn apply(&self, target: &mut Target) {
        if target.port == self.port && matches!(&target.host, Host::Name(n) if *n == self.name) {
            target.connect_to = self
                .addrs
                .iter()
                .map(|a| SocketAddr::new(*a, self.port))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_forms_users_type() {
        assert_eq!(
            t("good.test"),
            Target::new(Host::Name("good.test".into()), 443)
        );
        assert_eq!(
            t("Good.Test:8443"),
            Target::new(Host::Name("good.test".into()), 8443)
        );
        assert_eq!(
            t("127.0.0.1:993").host,
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            t("[::1]:8443"),
            Target::new(Host::Ip("::1".parse().unwrap()), 8443)
        );
        assert_eq!(t("[::1]").port, 443);
        assert_eq!(t("::1").host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            t("https://example.org/path?q"),
            Target::new(Host::Name("example.org".into()), 443)
        );
        assert_eq!(
            t("xn--bcher-kva.test:443").to_string(),
            "xn--bcher-kva.test:443"
        );
        assert_eq!(t("[::1]:8443").to_string(), "[::1]:8443");
    }

    #[test]
    fn rejects_bad_targets_with_a_reason() {
        for bad in [
            "",
            "host:0",
            "host:99999",
            "[::1",
            "bücher.test",
            "smtp://x",
            "bad_host!:1",
            "[zz]:1",
        ] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.to_string().contains("invalid target"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unbracketed_ipv6_address_with_a_port_is_refused_with_a_hint() {
        let err = "::1:8443".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("write [::1]:8443"), "{err}");
        assert!("2001:db8::1:443".parse::<Target>().is_err());
        // Unambiguous bare addresses still work.
        for ok in [
            "::1",
            "2001:db8::1",
            "fe80::1",
            "::ffff:192.0.2.1",
            "1:2:3:4:5:6:7:8",
        ] {
            let t = t(ok);
            assert_eq!(
                (t.host, t.port),
                (Host::Ip(ok.parse().unwrap()), 443),
                "{ok}"
            );
        }
        assert_eq!(t("[::1:8443]").host, Host::Ip("::1:8443".parse().unwrap()));
    }

    #[test]
    fn errors_echo_only_a_short_escaped_excerpt_of_the_input() {
        let line = format!(
            "root:$y$j9T$abcdefghijklmnopqrstuvwxyz0123456789\x1b]0;x\x07{}:",
            "z".repeat(500)
        );
        let err = line.parse::<Target>().unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
        assert!(!err.contains("mnopq") && !err.contains('\x1b'), "{err}");
    }

    #[test]
    fn resolve_applies_only_to_its_name_and_port() {
        let r: Resolve = "good.test:443:127.0.0.1".parse().unwrap();
        let mut hit = t("good.test");
        r.apply(&mut hit);
        assert_eq!(hit.connect_to, ["127.0.0.1:443".parse().unwrap()]);
        let mut miss = t("good.test:8443");
        r.apply(&mut miss);
        assert!(miss.connect_to.is_empty());
        let v6: Resolve = "a.test:8443:[::1]".parse().unwrap();
        assert_eq!(v6.addrs, ["::1".parse::<IpAddr>().unwrap()]);
        let many: Resolve = "lb.test:443:127.0.0.1,[::1]".parse().unwrap();
        assert_eq!(many.addrs.len(), 2);
    }

    #[test]
    fn a_malformed_resolve_is_called_a_resolve_not_a_target() {
        for (bad, why) in [
            ("good.test", "missing port"),
            ("good.test:443", "missing address"),
            ("good.test:http:127.0.0.1", "bad port"),
            ("good.test:443:localhost", "bad address"),
        ] {
            let err = bad.parse::<Resolve>().unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid --resolve {bad:?}: {why} (expected NAME:PORT:ADDR)")
            );
        }
        let hostile = format!("a\x1b[2J:{}", "9".repeat(100));
        let err = hostile.parse::<Resolve>().unwrap_err().to_string();
        assert!(!err.contains('\x1b') && err.len() < 120, "{err}");
    }

    #[test]
    fn ip_targets_verify_against_ip_sans() {
        assert!(matches!(
            t("127.0.0.1:1").server_name().unwrap(),
            ServerName::IpAddress(_)
        ));
        let mut named = t("127.0.0.1:1");
        named.server_name = Some("good.test".into());
        assert!(matches!(
            named.server_name().unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
