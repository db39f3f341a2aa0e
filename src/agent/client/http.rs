//! The agent's HTTPS client for the center's agent API: one connection per call (a long
//! poll holds it for up to a minute, so there is little to reuse), under a deadline that
//! covers connect, handshake, request and the whole answer, with the answer's body capped
//! at [`MAX_BODY`]. Errors name the call and the status, and show the center's message
//! escaped; they never hold the request's body (a token, a CSR).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent::protocol::MAX_BODY;

/// How long connecting and the TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary call (not the long poll) may take in all.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the center failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The server's URL is not `https://HOST:PORT`.
    #[error("{0}")]
    Url(String),
    /// TCP, TLS (a refused certificate: the pin) or HTTP failed.
    #[error("cannot reach the center at {url}: {why}")]
    Connect {
        /// The server.
        url: String,
        /// What failed.
        why: String,
    },
    /// The deadline passed.
    #[error("{path}: no answer from the center within {0:?}", .timeout)]
    Timeout {
        /// The call.
        path: String,
        /// Its deadline.
        timeout: Duration,
    },
    /// The center answered with an error status.
    #[error("{path}: the center answered {status}: {message}")]
    Status {
        /// The call.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The center's `error`, escaped and capped.
        message: String,
    },
    /// The answer is over [`MAX_BODY`] or not the JSON expected.
    #[error("{path}: {why}")]
    Body {
        /// The call.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

impl CallError {
    /// The HTTP status, when the center answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one center.
#[derive(Clone)]
pub struct Client {
    url: String,
    host: String,
    port: u16,
    name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Splits `https://HOST:PORT` (a trailing `/` allowed) into its host and port.
pub fn parse_url(url: &str) -> Result<(String, u16), CallError> {
    let bad =
        |why: &str| CallError::Url(format!("--server {url:?}: {why} (use https://HOST:PORT)"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("not https"));
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(bad("it has a path"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    Ok((host, port))
}

impl Client {
    /// A client of the center at `url` with `tls` (the pinned verifier, or the identity).
    pub fn new(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, CallError> {
        let (host, port) = parse_url(url)?;
        let name = ServerName::try_from(host.clone())
            .map_err(|_| CallError::Url(format!("--server {url:?}: not a host name")))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port,
            name,
            tls,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET path`, its JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let body = self.call(Method::GET, path, None, timeout).await?;
        decode(path, &body)
    }

    /// `POST path` with `body` as JSON; the answer's bytes (empty for 202 and 204).
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::Body {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        self.call(Method::POST, path, Some(json), timeout).await
    }

    /// One call under `timeout`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        match tokio::time::timeout(timeout, self.exchange(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout {
                path: path.to_owned(),
                timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, CallError> {
        let connect = |why: String| CallError::Connect {
            url: self.url.clone(),
            why,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| connect(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| connect(e.to_string()))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(self.name.clone(), tcp),
        )
        .await
        .map_err(|_| connect(format!("no TLS handshake within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| connect(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority)
            .header(
                http::header::USER_AGENT,
                concat!("tlsward-agent/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| connect(e.to_string()))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| connect(e.to_string()))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Body {
                    path: path.to_owned(),
                    why: format!("the answer could not be read or is over {MAX_BODY} bytes: {e}"),
                })?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(status_error(path, status, &bytes))
            }
        }
        .await;
        driver.abort();
        result
    }
}

fn status_error(path: &str, status: StatusCode, body: &[u8]) -> CallError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
    CallError::Status {
        path: path.to_owned(),
        status: status.as_u16(),
        message: crate::escape::visible_within(&message, 300).into_owned(),
    }
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| CallError::Body {
        path: path.to_owned(),
        why: format!("not the answer expected: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_host_and_port() {
        assert_eq!(
            parse_url("https://center.test:8443").unwrap(),
            ("center.test".into(), 8443)
        );
        assert_eq!(parse_url("https://[::1]:9/").unwrap(), ("::1".into(), 9));
        assert_eq!(
            parse_url("https://10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 443)
        );
        for bad in ["http://c:1", "c:1", "https://c:1/v1", "https://"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_error_answer_is_shown_escaped() {
        let e = status_error(
            "/v1/enroll",
            StatusCode::UNAUTHORIZED,
            br#"{"error":"the token was used\u001b[31m"}"#,
        );
        assert_eq!(e.status(), Some(401));
        let shown = e.to_string();
        assert!(!shown.contains('\u{1b}'), "{shown}");
        assert!(shown.contains("the token was used"), "{shown}");
    }
}
