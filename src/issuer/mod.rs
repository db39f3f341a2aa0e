//! ACME issuance through instant-acme: the one place that holds the account and answers
//! challenges (RFC 8555).
//!
//! Owns: the ACME account (created once, credentials sealed in the store), orders for several
//! names, HTTP-01 through the built-in responder, keys and CSRs, and recording every order
//! and version in the store. Must not know probing, HTTP serving of metrics or deploy hooks.

mod dns01;
mod http;
mod http01;
mod portable;
mod resume;

use std::path::PathBuf;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use serde_json::{Value, json};
use tracing::{info, warn};

pub use dns01::{Dns01, Rfc2136Settings};
pub use http::https_client;
pub use http01::Http01Responder;
pub use portable::{
    AccountError, AccountSummary, Confirmed, ImportedKey, KeyOrigin, Rollover, account_summary,
    adopt, confirm_with_ca, export_account, parse_identities, parse_recipients, rollover,
    thumbprint,
};
pub use resume::{AbandonReason, ORDER_LIFETIME, Resumed, Resumption};

use rustls_pki_types::pem::PemObject;

use crate::cert::CertFacts;
use crate::clock::Clock;
use crate::store::{CertificateRow, NewVersion, Secret, Store, StoreError, Version};

/// Default polling of orders: quick first, backing off, for up to two minutes.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// How to reach the ACME server.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The directory URL.
    pub directory: String,
    /// Contact URIs (`mailto:...`).
    pub contact: Vec<String>,
    /// A PEM root to trust for a private ACME server (instead of the system's roots).
    pub ca_file: Option<PathBuf>,
    /// External account binding: key id and HMAC key (base64url).
    pub eab: Option<(String, Secret)>,
    /// How orders are polled.
    pub retry: RetryPolicy,
    /// Where DNS-01 challenges are published, for certificates that use DNS-01.
    pub dns01: Option<Dns01>,
}

/// How a certificate's names are proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeKind {
    /// HTTP-01 through tlsward's responder.
    #[default]
    Http01,
    /// DNS-01 through RFC 2136 updates (needed for wildcards).
    Dns01,
}

/// The key type of a managed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
}

impl KeyType {
    /// The stable name used in config and the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
        }
    }
}

/// A certificate tlsward manages.
#[derive(Debug, Clone)]
pub struct CertificateSpec {
    /// Its name in config and the store.
    pub name: String,
    /// The DNS names it covers.
    pub domains: Vec<String>,
    /// Its key type.
    pub key_type: KeyType,
    /// How its names are proven.
    pub challenge: ChallengeKind,
    /// The ACME profile to order with (e.g. `shortlived`), used when the CA offers it.
    pub profile: Option<String>,
}

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA answered with a problem document (RFC 7807).
    #[error("the CA refused: {detail} ({kind})")]
    Problem {
        /// The problem type URN.
        kind: String,
        /// Its explanation.
        detail: String,
        /// The whole document, as kept in the store.
        document: Value,
        /// How long the CA asked to wait (its `Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// The order did not become ready or valid in time.
    #[error("the order did not complete in time")]
    Timeout,
    /// The CA sent a certificate tlsward cannot use: no parsable leaf, or not for the key the
    /// order's CSR was made with.
    #[error("unusable certificate from the CA: {0}")]
    BadCertificate(String),
    /// The order became invalid (a challenge failed).
    #[error("the order became {0}")]
    Invalid(String),
    /// The CA offers no challenge tlsward can answer.
    #[error("no HTTP-01 challenge for {0}")]
    NoChallenge(String),
    /// Publishing a DNS-01 record failed.
    #[error("DNS update: {0}")]
    Dns(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else from the ACME client (network, TLS, JSON).
    #[error("ACME client: {0}")]
    Client(String),
}

impl IssueError {
    /// The stable reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Problem { kind, .. } if kind.ends_with(":rateLimited") => "rate_limited",
            Self::Problem { .. } => "ca_problem",
            Self::Timeout => "timeout",
            Self::BadCertificate(_) => "bad_certificate",
            Self::Invalid(_) => "challenge_failed",
            Self::NoChallenge(_) => "no_challenge",
            Self::Dns(_) => "dns_update",
            Self::Store(_) => "store",
            Self::Client(_) => "client",
        }
    }

    /// Whether the error says nothing about the order itself: no answer (network, timeout),
    /// the store failing, or the CA failing or asking to wait (a 5xx problem, a rate limit).
    /// Any other problem document is the CA's verdict.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout | Self::Client(_) | Self::Store(_) => true,
            Self::Problem { kind, document, .. } => {
                kind.ends_with(":rateLimited")
                    || kind.ends_with(":badNonce")
                    || document["status"].as_u64().is_some_and(|s| s >= 500)
            }
            Self::BadCertificate(_) | Self::Invalid(_) | Self::NoChallenge(_) | Self::Dns(_) => {
                false
            }
        }
    }

    /// How long to wait before trying again, when the CA said (rate limits).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Problem { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Attaches the `Retry-After` the HTTP layer saw to a problem answer.
    fn with_retry_after(mut self, seen: Option<Duration>) -> Self {
        if let (
            Self::Problem {
                retry_after,
                document,
                ..
            },
            Some(d),
        ) = (&mut self, seen)
        {
            *retry_after = Some(d);
            document["retry_after_seconds"] = json!(d.as_secs());
        }
        self
    }

    /// The document kept in the store for a failed order.
    pub fn document(&self) -> Value {
        match self {
            Self::Problem { document, .. } => document.clone(),
            other => json!({ "reason": other.reason(), "detail": other.to_string() }),
        }
    }
}

impl From<instant_acme::Error> for IssueError {
    fn from(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p) => {
                let subproblems: Vec<Value> = p
                    .subproblems
                    .iter()
                    .map(|s| json!({ "type": s.r#type, "detail": s.detail, "identifier": format!("{:?}", s.identifier) }))
                    .collect();
                let document = json!({ "type": p.r#type, "detail": p.detail, "status": p.status, "subproblems": subproblems });
                Self::Problem {
                    kind: p.r#type.clone().unwrap_or_default(),
                    detail: p.detail.clone().unwrap_or_default(),
                    document,
                    retry_after: None,
                }
            }
            instant_acme::Error::Timeout(_) => Self::Timeout,
            other => Self::Client(other.to_string()),
        }
    }
}

/// An ARI certificate identifier (`AKI.serial`, base64url) as instant-acme wants it.
fn certificate_id(id: &str) -> Result<instant_acme::CertificateIdentifier<'_>, IssueError> {
    let (aki, serial) = id
        .split_once('.')
        .ok_or_else(|| IssueError::Client(format!("ARI identifier {id:?} is not AKI.serial")))?;
    Ok(instant_acme::CertificateIdentifier {
        authority_key_identifier: std::borrow::Cow::Borrowed(aki),
        serial: std::borrow::Cow::Borrowed(serial),
    })
}

use crate::clock::unix_seconds as unix;

/// An ACME account ready to order.
pub struct Issuer {
    account: Account,
    settings: AcmeSettings,
    responder: Http01Responder,
    retry_after: http::RetryAfter,
    /// The status of the CA's last answer.
    status: http::LastStatus,
    /// Whether the CA's directory offers ARI (`renewalInfo`).
    ari: bool,
}

impl Issuer {
    /// The profiles the CA offers (its directory's `meta.profiles`).
    pub fn profiles(&self) -> Vec<String> {
        self.account.profiles().map(|p| p.name.to_owned()).collect()
    }

    /// The profile to send for `spec`: its own, when the CA offers it.
    fn profile_for<'a>(&self, spec: &'a CertificateSpec) -> Option<&'a str> {
        let wanted = spec.profile.as_deref()?;
        if self.account.profiles().any(|p| p.name == wanted) {
            Some(wanted)
        } else {
            tracing::warn!(certificate = %spec.name, profile = wanted, "the CA does not offer this profile; ordering without one");
            None
        }
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Loads the account for the directory from the store, or creates one and stores its
    /// credentials sealed.
    pub async fn connect(
        settings: AcmeSettings,
        store: &Store,
        responder: Http01Responder,
        clock: &dyn Clock,
    ) -> Result<Self, IssueError> {
        let http = https_client(settings.ca_file.as_deref()).map_err(IssueError::Client)?;
        Self::connect_with_http(settings, store, responder, clock, http).await
    }

    /// [`Self::connect`] over a given HTTP client (for tests that stand in for a CA's rate
    /// limiting, which Pebble does not have).
    pub async fn connect_with_http(
        settings: AcmeSettings,
        store: &Store,
        responder: Http01Responder,
        clock: &dyn Clock,
        http: Box<dyn instant_acme::HttpClient>,
    ) -> Result<Self, IssueError> {
        let retry_after = http::RetryAfter::default();
        let status = http::LastStatus::default();
        let recording = http::Recording::new(http, retry_after.clone(), status.clone(), || {
            crate::clock::SystemClock.now()
        });
        let client = std::sync::Mutex::new(Some(recording));
        let builder = || -> Result<instant_acme::AccountBuilder, instant_acme::Error> {
            let http = client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .expect("one account builder");
            Ok(Account::builder_with_http(Box::new(http)))
        };
        let account = match store.account(&settings.directory)? {
            Some(creds) => {
                let creds: AccountCredentials = serde_json::from_slice(creds.expose())
                    .map_err(|e| IssueError::Client(format!("stored account: {e}")))?;
                builder()?.from_credentials(creds).await?
            }
            None => {
                let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let eab = settings.eab.as_ref().map(|(kid, key)| {
                    instant_acme::ExternalAccountKey::new(kid.clone(), key.expose())
                });
                let (account, creds) = builder()?
                    .create(&new, settings.directory.clone(), eab.as_ref())
                    .await?;
                let sealed = Secret::new(
                    serde_json::to_vec(&creds).map_err(|e| IssueError::Client(e.to_string()))?,
                );
                store.save_account(&settings.directory, account.id(), &sealed, unix(clock))?;
                info!(directory = %settings.directory, account = %account.id(), "ACME account created");
                account
            }
        };
        // instant-acme answers `Unsupported` without a request when the directory has no
        // renewalInfo; otherwise this asks about a certificate that does not exist, which
        // the CA refuses, and that is enough to know.
        let probe = instant_acme::CertificateIdentifier {
            authority_key_identifier: std::borrow::Cow::Borrowed("AA"),
            serial: std::borrow::Cow::Borrowed("AA"),
        };
        let ari = !matches!(
            account.renewal_info(&probe).await,
            Err(instant_acme::Error::Unsupported(_))
        );
        retry_after.take();
        Ok(Self {
            account,
            settings,
            responder,
            retry_after,
            status,
            ari,
        })
    }

    /// Whether the CA offers ARI renewal windows (RFC 9773).
    pub fn offers_ari(&self) -> bool {
        self.ari
    }

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
                let e = e.with_retry_after(self.retry_after.take());
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
                        self.retry_after.take();
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
    async fn run(
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
            Err(e) => e.with_retry_after(self.retry_after.take()),
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
    ) -> Result<(String, Secret), IssueError> {
        let mut tokens = Vec::new();
        let mut records: Vec<(String, String)> = Vec::new();
        let result = async {
            if order.state().status == OrderStatus::Pending {
                self.answer(spec, order, &mut tokens, &mut records).await?;
                match order.poll_ready(&self.settings.retry).await? {
                    OrderStatus::Ready => {}
                    other => return Err(IssueError::Invalid(format!("{other:?}").to_lowercase())),
                }
            }
            let key = match order.state().status {
                OrderStatus::Ready => {
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
                    key
                }
                OrderStatus::Processing | OrderStatus::Valid => {
                    store.order_key(order_id)?.ok_or_else(|| {
                        IssueError::BadCertificate("no key is stored with the order".into())
                    })?
                }
                other => return Err(IssueError::Invalid(format!("{other:?}").to_lowercase())),
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
                if let Err(e) = dns.remove_txt(&owner, &value).await {
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
                    dns.add_txt(&owner, &value).await?;
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
        key: &Secret,
        store: &Store,
        clock: &dyn Clock,
    ) -> Result<Version, IssueError> {
        let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| IssueError::BadCertificate("the CA sent no certificate".into()))?;
        let facts =
            CertFacts::parse(&leaf).map_err(|e| IssueError::BadCertificate(e.to_string()))?;
        if !key_matches(key, &leaf) {
            return Err(IssueError::BadCertificate(
                "the certificate is not for the order's key".into(),
            ));
        }
        let ari_id = facts.ari_id();
        let version = NewVersion {
            certificate,
            serial: &facts.serial,
            sha256: &facts.sha256,
            not_before: facts.not_before.unix_timestamp(),
            not_after: facts.not_after.unix_timestamp(),
            chain_pem,
            key,
            ari_id: ari_id.as_deref(),
        };
        let id = store.complete_order(order_id, &version, unix(clock))?;
        info!(certificate = %certificate, serial = %facts.serial, not_after = %crate::cert::rfc3339(facts.not_after), "certificate issued");
        store
            .version_by_id(id)?
            .ok_or_else(|| IssueError::Client("stored version vanished".into()))
    }
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

    fn problem(kind: &str, status: u16) -> IssueError {
        IssueError::Problem {
            kind: kind.into(),
            detail: String::new(),
            document: json!({ "type": kind, "status": status }),
            retry_after: None,
        }
    }

    /// After finalize, only a transient error keeps an order pending for resumption.
    #[test]
    fn the_cas_verdict_is_final_and_a_failure_to_answer_is_not() {
        let transient = [
            IssueError::Timeout,
            IssueError::Client("connection reset".into()),
            problem("urn:ietf:params:acme:error:serverInternal", 500),
            problem("urn:ietf:params:acme:error:rateLimited", 429),
            problem("urn:ietf:params:acme:error:badNonce", 400),
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e}");
        }
        let verdicts = [
            problem("urn:ietf:params:acme:error:badCSR", 400),
            problem("urn:ietf:params:acme:error:orderNotReady", 403),
            IssueError::Invalid("invalid".into()),
            IssueError::BadCertificate("not for the order's key".into()),
        ];
        for e in &verdicts {
            assert!(!e.is_transient(), "{e}");
        }
    }

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
