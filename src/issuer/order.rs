//! One issuance: resuming what a crash left pending, placing the order (with ARI's
//! `replaces`), answering HTTP-01 and DNS-01 challenges, finalizing with a fresh key sealed
//! first, and storing the chain as the order's version.

use std::time::Duration;

use instant_acme::{
    AuthorizationStatus, ChallengeStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
};
use rustls_pki_types::pem::PemObject;
use tracing::{info, warn};

use super::{
    CertificateSpec, ChallengeKind, IssueError, Issuer, KeyType, Resumption, certificate_id, unix,
};
use crate::cert::CertFacts;
use crate::clock::Clock;
use crate::secret::Secret;
use crate::store::{CertificateRow, NewVersion, Store, Version};

impl Issuer {
    /// Orders a certificate for `spec`, answers its challenges, and stores the new version
    /// with its key sealed. Every step is journaled; a failure keeps the CA's problem document.
    ///
    /// Orders of `spec` a crash left pending are resumed first ([`Self::resume`]): when one
    /// yields the newest version, that is the issuance and no new order is placed; while the
    /// CA cannot say what became of one, no new order is placed either (the CA may have
    /// issued it: ordering again would spend its duplicate-certificate limit).
    ///
    /// `replaces` is the ARI identifier of the version this one renews: sent as the order's
    /// `replaces` (RFC 9773 §5) when the CA offers ARI. A CA that refuses the replacement
    /// gets the order again without it, journaled as `order.replaces_refused`.
    pub async fn issue(
        &self,
        spec: &CertificateSpec,
        store: &Store,
        clock: &dyn Clock,
        replaces: Option<&str>,
    ) -> Result<Version, IssueError> {
        let row = CertificateRow {
            name: spec.name.clone(),
            domains: spec.domains.clone(),
            key_type: spec.key_type.as_str().to_owned(),
        };
        store.upsert_certificate(&row, unix(clock))?;
        let pending = store.pending_orders(Some(&spec.name))?;
        if !pending.is_empty() {
            let before = store.latest(&spec.name)?.map(|v| v.id);
            let resumed = self
                .resume_certificate(&spec.name, Some(spec), pending, store, clock)
                .await?;
            if let Some(latest) = store.latest(&spec.name)?
                && Some(latest.id) != before
                && resumed.iter().any(|r| r.stored() == Some(latest.id))
            {
                return Ok(latest);
            }
            for r in resumed {
                if let Resumption::Kept(e) | Resumption::Failed(e) = r.outcome {
                    return Err(e);
                }
            }
        }
        // `replaces` means nothing to a CA without ARI: it is neither sent nor recorded.
        let replaces = replaces.filter(|_| self.ari);
        let order_id = store.begin_order(&spec.name, replaces, unix(clock))?;
        let mut order = match self.place(spec, order_id, store, clock, replaces).await {
            Ok(order) => order,
            Err(e) => {
                let e = e.with_retry_after(self.retry_after.take(clock));
                store.fail_order(order_id, &spec.name, &e.document(), unix(clock))?;
                return Err(e);
            }
        };
        match self
            .run(spec, order_id, &mut order, false, store, clock)
            .await?
        {
            Resumption::Stored(v) => Ok(v),
            Resumption::Failed(e) | Resumption::Kept(e) => Err(e),
            Resumption::Abandoned(r) => Err(IssueError::Invalid(r.as_str().to_owned())),
        }
    }

    /// The CA's suggested renewal window for a certificate (RFC 9773 §4.2), with how long to
    /// wait before asking again (its Retry-After). `None` when the CA has no ARI.
    pub async fn renewal_window(
        &self,
        ari_id: &str,
    ) -> Result<Option<(i64, i64, Duration)>, IssueError> {
        let cid = certificate_id(ari_id)?;
        match self.account.renewal_info(&cid).await {
            Ok((info, retry)) => Ok(Some((
                info.suggested_window.start.unix_timestamp(),
                info.suggested_window.end.unix_timestamp(),
                retry,
            ))),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Places a new order for `spec` and records its URL. A renewal names the version it
    /// replaces; when the CA refuses that, the order goes again without `replaces`.
    async fn place(
        &self,
        spec: &CertificateSpec,
        order_id: i64,
        store: &Store,
        clock: &dyn Clock,
        replaces: Option<&str>,
    ) -> Result<Order, IssueError> {
        let identifiers: Vec<Identifier> = spec
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let profile = self.profile_for(spec);
        let plain = || {
            let new = NewOrder::new(&identifiers);
            match profile {
                Some(p) => new.profile(p),
                None => new,
            }
        };
        let order = match replaces {
            Some(id) => {
                let with = plain().replaces(certificate_id(id)?);
                match self.account.new_order(&with).await {
                    // A CA without ARI does not know `replaces` (RFC 9773 §5): order plainly.
                    Err(instant_acme::Error::Unsupported(_)) => {
                        self.account.new_order(&plain()).await?
                    }
                    // The CA will not take this order as a replacement: the identified
                    // certificate is unknown to it or already replaced, or it disagrees about
                    // the identifier (Pebble 2.6 looks a serial up by its bytes without the
                    // leading zero DER gives a serial with the high bit set, so it never finds
                    // such certificates). The renewal still has to happen: order plainly.
                    // A rate limit is not about `replaces` and is not worked around.
                    Err(e @ instant_acme::Error::Api(_)) => {
                        let refused = IssueError::from(e);
                        if refused.reason() == "rate_limited" {
                            return Err(refused);
                        }
                        self.retry_after.take(clock);
                        tracing::warn!(certificate = %spec.name, replaces = id, error = %refused, "the CA refused the order as a replacement; ordering without replaces");
                        store.drop_order_replaces(
                            order_id,
                            &spec.name,
                            &refused.document(),
                            unix(clock),
                        )?;
                        self.account.new_order(&plain()).await?
                    }
                    other => other?,
                }
            }
            None => self.account.new_order(&plain()).await?,
        };
        store.set_order_url(order_id, &self.settings.directory, order.url())?;
        Ok(order)
    }

    /// Takes an order from where it stands to a stored version: answers its pending
    /// authorizations, finalizes it once ready, downloads the chain and stores it.
    ///
    /// The key for the CSR is sealed into the order before finalize is sent (or, when the
    /// order already has one, that one is used): once the CA may have issued, the key is
    /// never lost. `sealed` says whether the order has a key already. From then on, a
    /// [transient](IssueError::is_transient) error (network, timeout, store, a CA server
    /// error) keeps the order pending, for [`Self::resume`] to ask the CA again instead of
    /// ordering anew; only the CA's verdict (an invalid order, a refused finalize) or a
    /// certificate that cannot be used fails it.
    pub(super) async fn run(
        &self,
        spec: &CertificateSpec,
        order_id: i64,
        order: &mut Order,
        mut sealed: bool,
        store: &Store,
        clock: &dyn Clock,
    ) -> Result<Resumption, IssueError> {
        let result = match self
            .finish(spec, order_id, order, &mut sealed, store, clock)
            .await
        {
            Ok((chain, key)) => {
                self.store_version(&spec.name, order_id, &chain, &key, store, clock)
            }
            Err(e) => Err(e),
        };
        let e = match result {
            Ok(v) => return Ok(Resumption::Stored(v)),
            Err(e) => e.with_retry_after(self.retry_after.take(clock)),
        };
        if sealed && e.is_transient() && order.state().status != OrderStatus::Invalid {
            warn!(certificate = %spec.name, order = order_id, error = %e, "the order is interrupted after finalize; it stays pending and is resumed before any new order");
            return Ok(Resumption::Kept(e));
        }
        store.fail_order(order_id, &spec.name, &e.document(), unix(clock))?;
        Ok(Resumption::Failed(e))
    }

    /// Answers what is pending, finalizes, and polls for the chain; returns it with its key.
    async fn finish(
        &self,
        spec: &CertificateSpec,
        order_id: i64,
        order: &mut Order,
        sealed: &mut bool,
        store: &Store,
        clock: &dyn Clock,
    ) -> Result<(String, OrderKey), IssueError> {
        let mut tokens = Vec::new();
        let mut records: Vec<(String, String)> = Vec::new();
        let result = async {
            if order.state().status == OrderStatus::Pending {
                self.answer(spec, order, &mut tokens, &mut records, clock)
                    .await?;
                match order.poll_ready(&self.settings.retry).await? {
                    OrderStatus::Ready => {}
                    other => return Err(IssueError::Invalid(format!("{other:?}").to_lowercase())),
                }
            }
            let key = match (order.state().status, &spec.agent_key) {
                // key = "agent": the agent's CSR, kept until the version is stored.
                (OrderStatus::Ready, Some(agent)) => {
                    let csr = agent_csr(spec, agent, store)?;
                    *sealed = true;
                    order.finalize_csr(&csr).await?;
                    OrderKey::Agent {
                        agent: agent.clone(),
                        csr,
                    }
                }
                (OrderStatus::Processing | OrderStatus::Valid, Some(agent)) => OrderKey::Agent {
                    agent: agent.clone(),
                    csr: agent_csr(spec, agent, store)?,
                },
                (OrderStatus::Ready, None) => {
                    let key = match store.order_key(order_id)? {
                        Some(key) => key,
                        None => {
                            let key = new_key(spec.key_type)?;
                            store.seal_order_key(order_id, &spec.name, &key, unix(clock))?;
                            key
                        }
                    };
                    *sealed = true;
                    order.finalize_csr(&csr(spec, &key)?).await?;
                    OrderKey::Central(key)
                }
                (OrderStatus::Processing | OrderStatus::Valid, None) => {
                    OrderKey::Central(store.order_key(order_id)?.ok_or_else(|| {
                        IssueError::BadCertificate("no key is stored with the order".into())
                    })?)
                }
                (other, _) => return Err(IssueError::Invalid(format!("{other:?}").to_lowercase())),
            };
            let chain = order.poll_certificate(&self.settings.retry).await?;
            Ok((chain, key))
        }
        .await;
        for t in tokens {
            self.responder.remove(&t);
        }
        if let Some(dns) = &self.settings.dns01 {
            for (owner, value) in records {
                if let Err(e) = dns.remove_txt(&owner, &value, clock).await {
                    tracing::warn!(record = %owner, error = %e, "could not remove a DNS-01 record");
                }
            }
        }
        result
    }

    /// Publishes the response to each pending authorization's challenge and tells the CA,
    /// unless it is already validating it (an order resumed after a crash).
    async fn answer(
        &self,
        spec: &CertificateSpec,
        order: &mut Order,
        tokens: &mut Vec<String>,
        records: &mut Vec<(String, String)>,
        clock: &dyn Clock,
    ) -> Result<(), IssueError> {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(IssueError::Invalid(format!("authorization {other:?}"))),
            }
            let ident = authz.identifier();
            let domain = match ident.identifier {
                Identifier::Dns(d) => d.clone(),
                other => format!("{other:?}"),
            };
            match spec.challenge {
                ChallengeKind::Http01 => {
                    let mut challenge = authz
                        .challenge(ChallengeType::Http01)
                        .ok_or(IssueError::NoChallenge(domain))?;
                    let ka = challenge.key_authorization();
                    self.responder.insert(&challenge.token, ka.as_str());
                    tokens.push(challenge.token.clone());
                    if challenge.status == ChallengeStatus::Pending {
                        challenge.set_ready().await?;
                    }
                }
                ChallengeKind::Dns01 => {
                    let dns = self.settings.dns01.as_ref().ok_or_else(|| {
                        IssueError::Dns("no [acme.dns01] server configured".into())
                    })?;
                    let mut challenge = authz
                        .challenge(ChallengeType::Dns01)
                        .ok_or(IssueError::NoChallenge(domain.clone()))?;
                    // A wildcard's authorization carries the base name (RFC 8555 §7.1.3).
                    let owner = format!("_acme-challenge.{domain}");
                    let value = challenge.key_authorization().dns_value();
                    dns.add_txt(&owner, &value, clock).await?;
                    records.push((owner, value));
                    if challenge.status == ChallengeStatus::Pending {
                        challenge.set_ready().await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the chain the CA sent against the order's key and stores it as the order's
    /// version, completing the order.
    fn store_version(
        &self,
        certificate: &str,
        order_id: i64,
        chain_pem: &str,
        key: &OrderKey,
        store: &Store,
        clock: &dyn Clock,
    ) -> Result<Version, IssueError> {
        let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| IssueError::BadCertificate("the CA sent no certificate".into()))?;
        let facts =
            CertFacts::parse(&leaf).map_err(|e| IssueError::BadCertificate(e.to_string()))?;
        let matches = match key {
            OrderKey::Central(key) => key_matches(key, &leaf),
            OrderKey::Agent { csr, .. } => csr_key_matches(csr, &leaf),
        };
        if !matches {
            return Err(IssueError::BadCertificate(
                "the certificate is not for the order's key".into(),
            ));
        }
        let ari_id = facts.ari_id();
        let none = Secret::new(Vec::new());
        let version = NewVersion {
            certificate,
            serial: &facts.serial,
            sha256: &facts.sha256,
            not_before: facts.not_before.unix_timestamp(),
            not_after: facts.not_after.unix_timestamp(),
            chain_pem,
            key: match key {
                OrderKey::Central(key) => key,
                OrderKey::Agent { .. } => &none,
            },
            ari_id: ari_id.as_deref(),
        };
        let stored = match key {
            OrderKey::Central(_) => store.complete_order(order_id, &version, unix(clock))?,
            OrderKey::Agent { agent, .. } => {
                store.complete_agent_order(order_id, &version, agent, unix(clock))?
            }
        };
        info!(certificate = %certificate, serial = %facts.serial, not_after = %crate::cert::rfc3339(facts.not_after), "certificate issued");
        Ok(stored)
    }
}

/// What an order's CSR is made from: the center's key, or an agent's CSR.
enum OrderKey {
    /// The center's key (PKCS#8 DER), sealed with the order and then the version.
    Central(Secret),
    /// `key = "agent"`: the CSR (DER) `agent` sent; its key never leaves the agent.
    Agent {
        /// The agent.
        agent: String,
        /// Its CSR.
        csr: Vec<u8>,
    },
}

/// The CSR `agent` sent for `spec` (kept in the store), checked again against the names and
/// key type: a certificate edited since the CSR came is not ordered with it.
fn agent_csr(spec: &CertificateSpec, agent: &str, store: &Store) -> Result<Vec<u8>, IssueError> {
    let kept = store
        .agent_csr(&spec.name)?
        .filter(|c| c.agent == agent)
        .ok_or_else(|| IssueError::Client(format!("no CSR from agent {agent} is kept")))?;
    if !spec.domains.is_empty() {
        super::check_csr(&kept.csr_der, &spec.domains, spec.key_type)
            .map_err(IssueError::Client)?;
    }
    Ok(kept.csr_der)
}

/// Whether `leaf` certifies the key of the request `csr` (DER).
fn csr_key_matches(csr: &[u8], leaf: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    let Some(want) = super::agent_csr::csr_public_key(csr) else {
        return false;
    };
    x509_parser::certificate::X509Certificate::from_der(leaf)
        .is_ok_and(|(_, cert)| cert.public_key().subject_public_key.data.as_ref() == want)
}

/// A new private key of this type, as PKCS#8 DER.
fn new_key(key_type: KeyType) -> Result<Secret, IssueError> {
    let alg = match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
    };
    let key = rcgen::KeyPair::generate_for(alg).map_err(|e| IssueError::Client(e.to_string()))?;
    Ok(Secret::new(key.serialize_der()))
}

/// A CSR (DER) for `spec`'s names, signed with `key` (PKCS#8 DER).
fn csr(spec: &CertificateSpec, key: &Secret) -> Result<Vec<u8>, IssueError> {
    let key = rcgen::KeyPair::try_from(key.expose())
        .map_err(|e| IssueError::Client(format!("the order's key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(spec.domains.clone())
        .map_err(|e| IssueError::Client(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| IssueError::Client(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// Whether `leaf` certifies the public half of `key` (PKCS#8 DER).
fn key_matches(key: &Secret, leaf: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok(pair) = rcgen::KeyPair::try_from(key.expose()) else {
        return false;
    };
    x509_parser::certificate::X509Certificate::from_der(leaf).is_ok_and(|(_, cert)| {
        cert.public_key().subject_public_key.data.as_ref() == pair.public_key_raw()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_for_the_key_it_certifies_only() {
        let key = new_key(KeyType::EcdsaP256).unwrap();
        let other = new_key(KeyType::EcdsaP256).unwrap();
        let pair = rcgen::KeyPair::try_from(key.expose()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["k.test".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        assert!(key_matches(&key, cert.der()));
        assert!(!key_matches(&other, cert.der()));
        assert!(!key_matches(&key, b"not a certificate"));
    }
}
