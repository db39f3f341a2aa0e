//! Resuming the orders a crash left `pending` in the store (RFC 8555 §7.1.3, §7.4).
//!
//! A kill at any point of an issuance leaves its order pending, and the CA may be anywhere
//! with it: waiting for challenges, ready to finalize, or done with a certificate issued.
//! Ordering again would issue a second certificate (spending the CA's duplicate-certificate
//! rate limit) and leave the first one unstored. So before any new order, each pending order
//! is looked up by its URL and taken as far as it goes: a certificate the CA issued is
//! downloaded and stored with the key sealed into the order before finalize was sent; an
//! order that is ready is finalized with that key; one still pending has its challenges
//! answered; one that cannot complete is abandoned, with the reason, in the store and the
//! journal.
//!
//! Two processes never resume the same order at once: `serve` and `cert issue|renew` both
//! hold the HTTP-01 listener while they issue, so the second one refuses to start.

use std::collections::BTreeMap;
use std::time::Duration;

use instant_acme::{Order, OrderStatus};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{CertificateSpec, ChallengeKind, IssueError, Issuer, KeyType, unix};
use crate::clock::Clock;
use crate::store::{PendingOrder, Store, Version};

/// How long a pending order the CA cannot tell about (no answer, or no usable one) is kept
/// before it is abandoned as expired: the lifetime CAs give orders (Let's Encrypt: 7 days;
/// RFC 8555 §7.1.3 leaves it to the CA), after which none can complete.
pub const ORDER_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a pending order was abandoned. Declaration order is the order of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbandonReason {
    /// Interrupted before the CA answered the new-order request: there is no URL to resume
    /// from, and no certificate can have been issued for it (nothing was finalized).
    NoUrl,
    /// Placed with another ACME directory than the configured one.
    OtherDirectory,
    /// The CA does not know the order any more (404).
    NotFound,
    /// The CA cannot say what became of it (no answer, a server error) and it is older than
    /// [`ORDER_LIFETIME`].
    Expired,
    /// The CA says it is invalid: a challenge failed, or it expired (RFC 8555 §7.1.6).
    Invalid,
    /// The CA issued its certificate, but no key was stored with the order (placed by a
    /// tlsward from before keys were sealed ahead of finalize).
    KeyLost,
    /// Not finalized yet, and another order of the same certificate was resumed to its
    /// newest version, or is the one resumed instead (the newest).
    Superseded,
    /// Not finalized yet, and its certificate is no longer configured: its challenges
    /// cannot be answered.
    NotConfigured,
    /// Not finalized yet, and its names are no longer the certificate's configured names.
    NamesChanged,
}

impl AbandonReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::NoUrl,
        Self::OtherDirectory,
        Self::NotFound,
        Self::Expired,
        Self::Invalid,
        Self::KeyLost,
        Self::Superseded,
        Self::NotConfigured,
        Self::NamesChanged,
    ];

    /// The stable label, as kept in the store and the journal.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoUrl => "no_url",
            Self::OtherDirectory => "other_directory",
            Self::NotFound => "not_found",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::KeyLost => "key_lost",
            Self::Superseded => "superseded",
            Self::NotConfigured => "not_configured",
            Self::NamesChanged => "names_changed",
        }
    }
}

/// What resuming one pending order came to.
#[derive(Debug)]
pub enum Resumption {
    /// Its certificate was issued (before the crash, or now): it is stored, the order valid.
    Stored(Version),
    /// It cannot complete: marked `abandoned` in the store with this reason, journaled.
    Abandoned(AbandonReason),
    /// Finishing it failed as a new order can (a challenge failed): marked `failed`.
    Failed(IssueError),
    /// The CA could not say what became of it (no answer, a server error): it stays
    /// pending and is asked about again before any new order of its certificate.
    Kept(IssueError),
}

/// One pending order and what resuming it came to.
#[derive(Debug)]
pub struct Resumed {
    /// The order as the store had it.
    pub order: PendingOrder,
    /// The outcome.
    pub outcome: Resumption,
}

impl Resumed {
    /// The id of the version stored for it, if one was.
    pub fn stored(&self) -> Option<i64> {
        match &self.outcome {
            Resumption::Stored(v) => Some(v.id),
            _ => None,
        }
    }
}

/// What the CA says about a pending order.
enum Lookup {
    Found(Box<Order>),
    Gone(AbandonReason, Value),
    Unknown(IssueError),
}

impl Issuer {
    /// Resumes every pending order in the store, certificate by certificate (at start, before
    /// anything is ordered). `specs` are the configured certificates: the orders of one no
    /// longer configured are only downloaded when issued, and otherwise abandoned.
    pub async fn resume(
        &self,
        store: &Store,
        clock: &dyn Clock,
        specs: &[CertificateSpec],
    ) -> Result<Vec<Resumed>, IssueError> {
        let mut by_certificate: BTreeMap<String, Vec<PendingOrder>> = BTreeMap::new();
        for p in store.pending_orders(None)? {
            by_certificate
                .entry(p.certificate.clone())
                .or_default()
                .push(p);
        }
        let mut out = Vec::new();
        for (name, orders) in by_certificate {
            let spec = specs.iter().find(|s| s.name == name);
            out.extend(
                self.resume_certificate(&name, spec, orders, store, clock)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Resumes the pending `orders` of one certificate, oldest first: every certificate the
    /// CA issued is stored; then at most one order not yet finalized (the newest) is finished,
    /// and only when no version stored here is now the newest; the others are abandoned.
    pub(super) async fn resume_certificate(
        &self,
        name: &str,
        spec: Option<&CertificateSpec>,
        orders: Vec<PendingOrder>,
        store: &Store,
        clock: &dyn Clock,
    ) -> Result<Vec<Resumed>, IssueError> {
        // Downloading an issued certificate needs no names, key type or challenge: a
        // certificate no longer configured is stored under its name all the same.
        let unconfigured = CertificateSpec {
            name: name.to_owned(),
            domains: Vec::new(),
            key_type: KeyType::EcdsaP256,
            challenge: ChallengeKind::Http01,
            profile: None,
            agent_key: None,
        };
        let mut out = Vec::new();
        let mut open = Vec::new();
        for p in orders {
            let outcome = match self.look_up(&p, clock).await {
                Lookup::Gone(reason, detail) => abandon(store, clock, &p, reason, &detail)?,
                Lookup::Unknown(e) => Resumption::Kept(e),
                Lookup::Found(mut order) => match order.state().status {
                    OrderStatus::Invalid => {
                        let detail = order.state().error.clone().map_or(Value::Null, |p| {
                            IssueError::from(instant_acme::Error::Api(p)).document()
                        });
                        abandon(store, clock, &p, AbandonReason::Invalid, &detail)?
                    }
                    // A key = "agent" order's key is the agent's: its CSR is kept instead.
                    OrderStatus::Processing | OrderStatus::Valid
                        if !p.has_key && !agent_csr_kept(spec, store)? =>
                    {
                        let detail = json!({ "certificate_url": order.state().certificate });
                        abandon(store, clock, &p, AbandonReason::KeyLost, &detail)?
                    }
                    OrderStatus::Processing | OrderStatus::Valid => {
                        self.run(
                            spec.unwrap_or(&unconfigured),
                            p.id,
                            &mut order,
                            true,
                            store,
                            clock,
                        )
                        .await?
                    }
                    OrderStatus::Pending | OrderStatus::Ready => {
                        open.push((p, order));
                        continue;
                    }
                },
            };
            out.push(settle(store, clock, p, outcome)?);
        }
        let latest = store.latest(name)?.map(|v| v.id);
        let resumed_newest = latest.is_some() && out.iter().any(|r| r.stored() == latest);
        let chosen = match spec {
            Some(spec) if !resumed_newest => open.pop().map(|o| (spec, o)),
            _ => None,
        };
        for (p, _) in open {
            let reason = if spec.is_some() {
                AbandonReason::Superseded
            } else {
                AbandonReason::NotConfigured
            };
            let outcome = abandon(store, clock, &p, reason, &Value::Null)?;
            out.push(settle(store, clock, p, outcome)?);
        }
        if let Some((spec, (p, mut order))) = chosen {
            let outcome = match order_names(&mut order).await {
                Err(e) => Resumption::Kept(e),
                Ok(names) if names != sorted_names(&spec.domains) => {
                    let detail = json!({ "ordered": names, "configured": spec.domains });
                    abandon(store, clock, &p, AbandonReason::NamesChanged, &detail)?
                }
                Ok(_) => {
                    self.run(spec, p.id, &mut order, p.has_key, store, clock)
                        .await?
                }
            };
            out.push(settle(store, clock, p, outcome)?);
        }
        Ok(out)
    }

    /// Asks the CA for a pending order by its URL.
    async fn look_up(&self, p: &PendingOrder, clock: &dyn Clock) -> Lookup {
        let Some(url) = p.url.clone() else {
            return Lookup::Gone(AbandonReason::NoUrl, Value::Null);
        };
        if let Some(d) = p
            .directory
            .as_deref()
            .filter(|d| *d != self.settings.directory)
        {
            return Lookup::Gone(AbandonReason::OtherDirectory, json!({ "directory": d }));
        }
        self.status.clear();
        match self.account.order(url).await {
            Ok(order) => Lookup::Found(Box::new(order)),
            Err(e) => {
                let status = self.status.get();
                let e = IssueError::from(e).with_retry_after(self.retry_after.take(clock));
                if matches!(status, Some(404 | 410)) {
                    Lookup::Gone(AbandonReason::NotFound, e.document())
                } else {
                    Lookup::Unknown(e)
                }
            }
        }
    }
}

/// Marks `p` abandoned for `reason`.
fn abandon(
    store: &Store,
    clock: &dyn Clock,
    p: &PendingOrder,
    reason: AbandonReason,
    detail: &Value,
) -> Result<Resumption, IssueError> {
    store.abandon_order(p.id, &p.certificate, reason.as_str(), detail, unix(clock))?;
    Ok(Resumption::Abandoned(reason))
}

/// Gives up on an order the CA could not tell about once it is older than
/// [`ORDER_LIFETIME`], then reports the outcome.
fn settle(
    store: &Store,
    clock: &dyn Clock,
    p: PendingOrder,
    outcome: Resumption,
) -> Result<Resumed, IssueError> {
    let outcome = match outcome {
        Resumption::Kept(e)
            if unix(clock).saturating_sub(p.started_at) > ORDER_LIFETIME.as_secs() as i64 =>
        {
            abandon(store, clock, &p, AbandonReason::Expired, &e.document())?
        }
        other => other,
    };
    Ok(report(p, outcome))
}

/// Logs what resuming `order` came to, once, and pairs them.
fn report(order: PendingOrder, outcome: Resumption) -> Resumed {
    match &outcome {
        Resumption::Stored(v) => {
            info!(certificate = %order.certificate, order = order.id, serial = %v.serial, "interrupted order resumed; its certificate is stored");
        }
        Resumption::Abandoned(r) => {
            warn!(certificate = %order.certificate, order = order.id, reason = r.as_str(), "interrupted order abandoned");
        }
        Resumption::Failed(e) => {
            warn!(certificate = %order.certificate, order = order.id, error = %e, "interrupted order failed");
        }
        Resumption::Kept(e) => {
            warn!(certificate = %order.certificate, order = order.id, error = %e, "the CA cannot say what became of an interrupted order; it stays pending");
        }
    }
    Resumed { order, outcome }
}

/// The names an order is for, sorted and lowercase (wildcards as `*.name`).
async fn order_names(order: &mut Order) -> Result<Vec<String>, IssueError> {
    let mut names = Vec::new();
    let mut identifiers = order.identifiers();
    while let Some(id) = identifiers.next().await {
        names.push(id?.to_string());
    }
    Ok(sorted_names(&names))
}

fn sorted_names(names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `spec` has `key = "agent"` and the CSR its order was finalized with is kept.
fn agent_csr_kept(spec: Option<&CertificateSpec>, store: &Store) -> Result<bool, IssueError> {
    match spec {
        Some(s) if s.agent_key.is_some() => Ok(store.agent_csr(&s.name)?.is_some()),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_reasons_have_distinct_stable_labels() {
        let labels: std::collections::BTreeSet<&str> =
            AbandonReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), AbandonReason::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    #[test]
    fn names_compare_as_sets_whatever_their_case_and_order() {
        assert_eq!(
            sorted_names(&["B.test".into(), "a.test".into(), "b.test".into()]),
            ["a.test", "b.test"]
        );
    }
}
