//! The `http` call: HTTPS only, to granted URLs, with the server's certificate checked by CA
//! or pinned fingerprint, bounded in body size and by the run's deadline.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use super::{MAX_HTTP_BODY, State};
use crate::hooks::bindings::tlsward::hook::types::{HookError, HttpRequest, HttpResponse};
use crate::hooks::pin;

impl State {
    pub(super) fn https(&mut self, req: HttpRequest) -> Result<HttpResponse, HookError> {
        let uri = self.grant.check_url(&req.url)?;
        let left = self.remaining()?;
        let (tls, verifier) = pin::HookVerifier::client_config(
            self.grant.http_ca_file.as_deref(),
            &self.grant.http_pin_sha256,
        )
        .map_err(HookError::Failed)?;
        let pinned = !self.grant.http_pin_sha256.is_empty();
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HookError::InvalidArgument(format!("bad method {:?}", req.method)))?;
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("host") {
                return Err(HookError::InvalidArgument(
                    "the Host header is set from the URL".into(),
                ));
            }
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| HookError::InvalidArgument(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
        self.rt.block_on(async move {
            let exchange = async {
                let rsp = client.request(request).await.map_err(|e| {
                    HookError::Failed(match verifier.refused() {
                        Some(r) => refused_message(&r, pinned),
                        None => format!("request failed: {}", chain(&e)),
                    })
                })?;
                let status = rsp.status().as_u16();
                let headers = rsp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = Limited::new(rsp.into_body(), MAX_HTTP_BODY)
                    .collect()
                    .await
                    .map_err(|e| HookError::Failed(format!("response body: {e}")))?
                    .to_bytes()
                    .to_vec();
                Ok(HttpResponse {
                    status,
                    headers,
                    body,
                })
            };
            tokio::time::timeout(left, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(HookError::Timeout(
                        "the request outlived the hook's deadline".into(),
                    ))
                })
        })
    }
}

/// Why the server's certificate was refused, with its fingerprint to compare and pin.
fn refused_message(r: &pin::Refused, pinned: bool) -> String {
    if pinned {
        format!(
            "the server's certificate (sha256 {}) is not one of http_pin_sha256",
            r.sha256
        )
    } else {
        format!(
            "the server's certificate was refused: {}; its sha256 is {}: if that is the \
             appliance's own certificate (checked out of band), pin it with \
             http_pin_sha256 = [\"{}\"], or give its CA in http_ca_file",
            describe(&r.error),
            r.sha256,
            r.sha256
        )
    }
}

/// A certificate refusal in words, naming the case a self-signed appliance hits.
fn describe(e: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) = e
        && let Some(w) = o.0.downcast_ref::<webpki::Error>()
    {
        return match w {
            webpki::Error::CaUsedAsEndEntity => "it is a CA certificate, not a server's \
                (CaUsedAsEndEntity; `openssl req -x509` makes self-signed certificates so)"
                .to_owned(),
            other => format!("invalid peer certificate: {other:?}"),
        };
    }
    e.to_string()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
