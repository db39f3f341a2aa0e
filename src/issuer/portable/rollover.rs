//! The account key change (RFC 8555 §7.3.5), made so that a crash at any moment leaves the
//! key the CA knows in the store.
//!
//! instant-acme's `update_key` makes the new key inside the request, so the key could only be
//! stored after the CA's answer, and a crash in between would lose the account. Here the new
//! key is made first and sealed as the store's pending key, then the key-change JWS is built
//! and sent over the same HTTP client as instant-acme's; only once the CA has said yes does
//! the pending key become the account's (the old one retired). A refusal drops the pending
//! key; no answer keeps it, and the next rollover first asks the CA (`onlyReturnExisting`)
//! whether it has the pending key, and settles on that.

use bytes::Bytes;
use http::Request;
use http::header::CONTENT_TYPE;
use instant_acme::{AccountCredentials, BodyWrapper, HttpClient};
use serde_json::{Value, json};

use super::keys::{jws, key_pair, new_key, public_jwk};
use super::{AccountError, ImportedKey, KeyOrigin, confirm_with_ca, credentials_key, thumbprint};
use crate::clock::{Clock, unix_seconds as unix};
use crate::issuer::{AcmeSettings, https_client};
use crate::store::{AccountChange, PendingEnd, Secret, Store};

/// What a key rollover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollover {
    /// The account (unchanged).
    pub account_url: String,
    /// The thumbprint of the key replaced (kept retired in the store).
    pub old_thumbprint: String,
    /// The thumbprint of the new key.
    pub new_thumbprint: String,
    /// Whether this finished an interrupted rollover (the CA had its pending key) instead of
    /// changing the key anew.
    pub resumed: bool,
}

/// Changes the account key of `settings`' directory at the CA (RFC 8555 §7.3.5) and stores
/// the new key, the old one retired, journaled (`account.rollover_started`, then
/// `account.rollover`, or `account.rollover_refused` when the CA says no). A pending key an
/// interrupted rollover left is settled first: when the CA has it, that finishes the
/// rollover ([`Rollover::resumed`]); otherwise it is dropped (`account.rollover_abandoned`).
pub async fn rollover(
    settings: &AcmeSettings,
    store: &Store,
    clock: &dyn Clock,
) -> Result<Rollover, AccountError> {
    let directory = &settings.directory;
    let no_account = || AccountError::NoAccount(directory.clone());
    let row = store.account_row(directory)?.ok_or_else(no_account)?;
    let url = &row.account_url;
    let current = store.account(directory)?.ok_or_else(no_account)?;
    let old = credentials_key(&current)?;
    let old_thumbprint = thumbprint(&old)?;
    if let Some(pending) = store.pending_account_key(directory)? {
        let new = credentials_key(&pending)?;
        let new_thumbprint = thumbprint(&new)?;
        let detail = json!({
            "directory": directory,
            "account": url,
            "old_thumbprint": old_thumbprint,
            "thumbprint": new_thumbprint,
            "settled": true,
        });
        let asked = ImportedKey {
            pkcs8: new,
            origin: KeyOrigin::Export,
            account_url: Some(url.clone()),
            directory: Some(directory.clone()),
        };
        match confirm_with_ca(settings, &asked).await {
            Ok(_) => {
                store.replace_account(
                    directory,
                    url,
                    &pending,
                    AccountChange::RolledOver,
                    &detail,
                    unix(clock),
                )?;
                tracing::warn!(directory = %directory, account = %url, thumbprint = %new_thumbprint, "finished an interrupted ACME account key rollover: the CA has the new key");
                return Ok(Rollover {
                    account_url: url.clone(),
                    old_thumbprint,
                    new_thumbprint,
                    resumed: true,
                });
            }
            Err(AccountError::UnknownToCa(_)) => {
                store.end_account_rollover(
                    directory,
                    PendingEnd::Abandoned,
                    &detail,
                    unix(clock),
                )?;
                tracing::warn!(directory = %directory, account = %url, "dropped the pending key of an interrupted rollover: the CA does not have it");
            }
            Err(e) => return Err(e),
        }
    }

    let new = new_key()?;
    let new_thumbprint = thumbprint(&new)?;
    let new_creds = credentials(url, directory, &new)?;
    let detail = json!({
        "directory": directory,
        "account": url,
        "old_thumbprint": old_thumbprint,
        "thumbprint": new_thumbprint,
    });
    store.begin_account_rollover(directory, &new_creds, &detail, unix(clock))?;
    let http = https_client(settings.ca_file.as_deref()).map_err(AccountError::Ca)?;
    match key_change(&*http, directory, url, &old, &new).await {
        Ok(()) => {}
        Err(Unsent::NotChanged(e)) => {
            let mut refused = detail.clone();
            refused["problem"] = Value::String(e.to_string());
            store.end_account_rollover(directory, PendingEnd::Refused, &refused, unix(clock))?;
            return Err(e);
        }
        Err(Unsent::Unknown(e)) => {
            return Err(AccountError::Ca(format!(
                "{e}; whether the CA changed the key is unknown: the new key is kept pending, \
                 and the next `tlsward acme account rollover` asks the CA which key it has"
            )));
        }
    }
    store
        .replace_account(
            directory,
            url,
            &new_creds,
            AccountChange::RolledOver,
            &detail,
            unix(clock),
        )
        .map_err(AccountError::RolloverNotStored)?;
    tracing::info!(directory = %directory, account = %url, old_thumbprint = %old_thumbprint, thumbprint = %new_thumbprint, "ACME account key rolled over");
    Ok(Rollover {
        account_url: url.clone(),
        old_thumbprint,
        new_thumbprint,
        resumed: false,
    })
}

/// Credentials in instant-acme's form (what `Issuer::connect` reads back).
fn credentials(url: &str, directory: &str, pkcs8: &Secret) -> Result<Secret, AccountError> {
    use base64::Engine;
    let key = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pkcs8.expose()),
    );
    let creds = Secret::new(
        format!(
            r#"{{"id":{},"key_pkcs8":"{}","directory":{}}}"#,
            Value::from(url),
            key.as_str(),
            Value::from(directory)
        )
        .into_bytes(),
    );
    let _readable: AccountCredentials = serde_json::from_slice(creds.expose())
        .map_err(|e| AccountError::Key(format!("new credentials: {e}")))?;
    Ok(creds)
}

/// Why the key change did not happen, or may have.
enum Unsent {
    /// The CA did not change the key: it refused, or was never asked.
    NotChanged(AccountError),
    /// The request may have reached the CA: no answer, or a server error.
    Unknown(AccountError),
}

/// Sends the key change: the inner JWS signed by the new key (its `jwk`, no nonce), naming
/// the account and the old key, inside the outer JWS signed by the account's key (RFC 8555
/// §7.3.5). A `badNonce` answer is retried with the nonce it carries.
async fn key_change(
    http: &dyn HttpClient,
    directory: &str,
    account: &str,
    old: &Secret,
    new: &Secret,
) -> Result<(), Unsent> {
    let not = Unsent::NotChanged;
    let (old, new) = (
        key_pair(old.expose()).map_err(not)?,
        key_pair(new.expose()).map_err(not)?,
    );
    let (dir, _, _) = send(http, Request::get(directory), None)
        .await
        .map_err(|e| not(ca(format!("the directory: {e}"))))?;
    let dir: Value = serde_json::from_slice(&dir).unwrap_or_default();
    let url_of = |name: &str| {
        dir.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| not(ca(format!("the directory has no {name}"))))
    };
    let (key_change, new_nonce) = (url_of("keyChange")?, url_of("newNonce")?);
    let (_, _, nonce) = send(http, Request::head(&new_nonce), None)
        .await
        .map_err(|e| not(ca(format!("a nonce: {e}"))))?;
    let mut nonce = nonce.ok_or_else(|| not(ca("no Replay-Nonce from newNonce".into())))?;
    let jwk = |pair| -> Result<Value, Unsent> {
        let text = public_jwk(pair).map_err(not)?;
        serde_json::from_str(&text).map_err(|e| not(ca(e.to_string())))
    };
    let inner = jws(
        &new,
        &json!({ "alg": "ES256", "jwk": jwk(&new)?, "url": key_change }),
        json!({ "account": account, "oldKey": jwk(&old)? })
            .to_string()
            .as_bytes(),
    )
    .map_err(not)?
    .to_string();
    for _ in 0..3 {
        let outer = jws(
            &old,
            &json!({ "alg": "ES256", "kid": account, "nonce": nonce, "url": key_change }),
            inner.as_bytes(),
        )
        .map_err(not)?;
        let (body, status, next) = send(
            http,
            Request::post(&key_change).header(CONTENT_TYPE, "application/jose+json"),
            Some(outer.to_string().into_bytes()),
        )
        .await
        .map_err(|e| Unsent::Unknown(ca(e)))?;
        if status.is_success() {
            return Ok(());
        }
        let problem: Value = serde_json::from_slice(&body).unwrap_or_default();
        let kind = problem["type"].as_str().unwrap_or("");
        let detail = problem["detail"].as_str().unwrap_or("");
        let refused = ca(format!(
            "the CA refused the key change ({status}): {detail} ({kind})"
        ));
        if status.is_server_error() {
            return Err(Unsent::Unknown(refused));
        }
        match next {
            Some(n) if kind.ends_with(":badNonce") => nonce = n,
            _ => return Err(not(refused)),
        }
    }
    Err(not(ca("the CA refused every nonce".into())))
}

fn ca(message: String) -> AccountError {
    AccountError::Ca(super::visible(&message))
}

/// One request: the body (at most what the CA sends; instant-acme reads it whole too), the
/// status and the `Replay-Nonce`.
async fn send(
    http: &dyn HttpClient,
    request: http::request::Builder,
    body: Option<Vec<u8>>,
) -> Result<(Bytes, http::StatusCode, Option<String>), String> {
    let body = body.map_or_else(BodyWrapper::default, BodyWrapper::from);
    let request = request.body(body).map_err(|e| e.to_string())?;
    let rsp = http.request(request).await.map_err(|e| e.to_string())?;
    let nonce = rsp
        .parts
        .headers
        .get("replay-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = rsp.parts.status;
    let mut body = rsp.body;
    let bytes = body.into_bytes().await.map_err(|e| e.to_string())?;
    Ok((bytes, status, nonce))
}
