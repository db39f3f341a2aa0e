//! One round of probing a target, the one way every caller probes: the scheduler's loops,
//! deployment verification, `/probe` and the CLI. A round catches its own panic (see
//! `caught.rs`), so a bug in one probe is that round's `internal_error` report, and covers
//! the first address, or every address one after another, as [`Round`] says.

use std::sync::Arc;
use std::time::Duration;

use super::caught::caught;
use super::{ProbeReport, Prober, Target};
use crate::clock::Clock;

/// How much of a target one round covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// One connection, to the first address, within the module's timeout.
    First,
    /// One connection, to the first address, within this budget instead of the module's
    /// timeout (`/probe`, under Prometheus's scrape timeout).
    FirstWithin(Duration),
    /// Every address the name resolves to (or every pinned address), one after another in
    /// that order, each within the module's timeout; a name that does not resolve gives one
    /// report saying so.
    EachAddress,
}

impl Round {
    /// [`Self::EachAddress`] when `all_addresses` (a target's `all_addresses` setting or the
    /// CLI's `--all-addresses`), else [`Self::First`].
    pub const fn of(all_addresses: bool) -> Self {
        if all_addresses {
            Self::EachAddress
        } else {
            Self::First
        }
    }
}

impl Prober {
    /// Probes `target` for one round: a panic anywhere in it gives one
    /// report with reason `internal_error` and status unknown instead of unwinding into the
    /// caller. Never fails, and never returns an empty list.
    pub async fn round(
        self: Arc<Self>,
        target: &Target,
        clock: Arc<dyn Clock>,
        round: Round,
    ) -> Vec<ProbeReport> {
        let probe = std::pin::pin!(async {
            match round {
                Round::First => vec![self.probe(target, clock.as_ref()).await],
                Round::FirstWithin(budget) => {
                    vec![self.probe_within(target, clock.as_ref(), budget).await]
                }
                Round::EachAddress => self.probe_each_address(target, clock.as_ref()).await,
            }
        });
        caught(target, probe).await
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::cert::{Status, TrustStore};
    use crate::clock::SystemClock;
    use crate::probe::Module;

    /// Two loopback addresses on a port nothing listens on.
    fn closed_pair() -> Vec<SocketAddr> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 2], port)),
        ]
    }

    #[tokio::test]
    async fn a_round_covers_the_first_address_or_each_in_order() {
        let prober = Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty()))));
        let addrs = closed_pair();
        let mut t: Target = "pair.test:443".parse().unwrap();
        t.connect_to = addrs.clone();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let each = prober
            .clone()
            .round(&t, clock.clone(), Round::of(true))
            .await;
        let seen: Vec<Option<SocketAddr>> = each.iter().map(|r| r.address).collect();
        assert_eq!(seen, [Some(addrs[0]), Some(addrs[1])]);
        for r in &each {
            assert_eq!(r.reason(), Some("connect_refused"), "{r:?}");
            assert_eq!(r.status(), Status::Critical);
        }
        for round in [Round::of(false), Round::FirstWithin(Duration::from_secs(5))] {
            let one = prober.clone().round(&t, clock.clone(), round).await;
            assert_eq!(one.len(), 1, "{round:?}");
            assert_eq!(one[0].address, Some(addrs[0]), "{round:?}");
            assert_eq!(one[0].reason(), Some("connect_refused"), "{round:?}");
        }
    }

    /// Every probe in flight holds its round's future (the concurrency limit's worth of them,
    /// moved into a task each): the paths few probes take (STARTTLS, the legacy read, a
    /// client certificate) are boxed, and the panic guard does not hold the probe twice.
    /// 3.9 KB (debug or release), 11.3 KB before.
    #[test]
    fn a_rounds_future_stays_small() {
        let prober = Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty()))));
        let t: Target = "127.0.0.1:1".parse().unwrap();
        let round = prober.round(&t, Arc::new(SystemClock), Round::EachAddress);
        let size = size_of_val(&round);
        assert!(size <= 6_144, "{size} bytes");
    }
}
