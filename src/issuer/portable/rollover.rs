//! The account key change (RFC 8555 §7.3.5).

use instant_acme::{Account, AccountCredentials};
use serde_json::json;

use super::{AccountError, credentials_key, thumbprint};
use crate::clock::{Clock, unix_seconds as unix};
use crate::issuer::{AcmeSettings, https_client};
use crate::store::{AccountChange, Secret, Store};

/// What a key rollover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollover {
    /// The account (unchanged).
    pub account_url: String,
    /// The thumbprint of the key replaced (kept retired in the store).
    pub old_thumbprint: String,
    /// The thumbprint of the new key.
    pub new_thumbprint: String,
}

/// Changes the account key of `settings`' directory at the CA (RFC 8555 §7.3.5) and stores
/// the new key, the old one retired, journaled as `account.rollover`.
///
/// instant-acme makes the new key inside the key-change request, so it can only be stored
/// once the CA has answered: a crash in between leaves an account whose key is lost (the
/// error [`AccountError::RolloverNotStored`] says so when the store refuses).
pub async fn rollover(
    settings: &AcmeSettings,
    store: &Store,
    clock: &dyn Clock,
) -> Result<Rollover, AccountError> {
    let directory = &settings.directory;
    let no_account = || AccountError::NoAccount(directory.clone());
    let row = store.account_row(directory)?.ok_or_else(no_account)?;
    let stored = store.account(directory)?.ok_or_else(no_account)?;
    let old_thumbprint = thumbprint(&credentials_key(&stored)?)?;
    let creds: AccountCredentials = serde_json::from_slice(stored.expose())
        .map_err(|e| AccountError::Key(format!("the stored credentials: {e}")))?;
    let http = https_client(settings.ca_file.as_deref()).map_err(AccountError::Ca)?;
    let mut account = Account::builder_with_http(http)
        .from_credentials(creds)
        .await?;
    let new = account.update_key().await?;
    let new = Secret::new(serde_json::to_vec(&new).map_err(|e| AccountError::Ca(e.to_string()))?);
    let new_thumbprint = account.key_thumbprint().to_owned();
    let detail = json!({
        "directory": directory,
        "account": row.account_url,
        "old_thumbprint": old_thumbprint,
        "thumbprint": new_thumbprint,
    });
    store
        .replace_account(
            directory,
            account.id(),
            &new,
            AccountChange::RolledOver,
            &detail,
            unix(clock),
        )
        .map_err(AccountError::RolloverNotStored)?;
    tracing::info!(directory = %directory, account = %account.id(), old_thumbprint = %old_thumbprint, thumbprint = %new_thumbprint, "ACME account key rolled over");
    Ok(Rollover {
        account_url: account.id().to_owned(),
        old_thumbprint,
        new_thumbprint,
    })
}
