//! The ACME account: loaded from the store or created (credentials sealed there), over the
//! recording HTTP client; whether the CA offers ARI; the profiles it offers.

use instant_acme::{Account, AccountCredentials, NewAccount};
use tracing::info;

use super::{
    AcmeSettings, CertificateSpec, Http01Responder, IssueError, Issuer, http, https_client, unix,
};
use crate::clock::Clock;
use crate::secret::Secret;
use crate::store::Store;

impl Issuer {
    /// The profiles the CA offers (its directory's `meta.profiles`).
    pub fn profiles(&self) -> Vec<String> {
        self.account.profiles().map(|p| p.name.to_owned()).collect()
    }

    /// The profile to send for `spec`: its own, when the CA offers it.
    pub(super) fn profile_for<'a>(&self, spec: &'a CertificateSpec) -> Option<&'a str> {
        let wanted = spec.profile.as_deref()?;
        if self.account.profiles().any(|p| p.name == wanted) {
            Some(wanted)
        } else {
            tracing::warn!(certificate = %spec.name, profile = wanted, "the CA does not offer this profile; ordering without one");
            None
        }
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
        let recording = http::Recording::new(http, retry_after.clone(), status.clone());
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
        retry_after.take(clock);
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
}
