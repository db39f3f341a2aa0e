//! The built-in HTTP-01 responder (RFC 8555 §8.3): serves key authorizations under
//! `/.well-known/acme-challenge/TOKEN` on a configurable address, so a load balancer can route
//! that path of every name to the central tlsward.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens being answered right now.
#[derive(Debug, Clone, Default)]
pub struct Http01Responder {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl Http01Responder {
    /// An empty responder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `token` with `key_authorization` until removed.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Stops answering `token`.
    pub fn remove(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }

    fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(PREFIX)?;
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let tcp = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
            };
            let me = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let me = me.clone();
                    async move {
                        let mut rsp = match me.answer(req.uri().path()) {
                            Some(ka) => Response::new(Full::new(Bytes::from(ka))),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::from_static(
                                    b"no such challenge\n",
                                )));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        rsp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/octet-stream"),
                        );
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }
}
