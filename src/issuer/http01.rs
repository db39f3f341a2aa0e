//! The built-in HTTP-01 responder (RFC 8555 §8.3): serves key authorizations under
//! `/.well-known/acme-challenge/TOKEN` on a configurable address, so a load balancer can route
//! that path of every name to the central tlsward.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

use crate::listen::Limits;

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

    /// Serves on `listener` with the default [`Limits`] until `shutdown` completes (a
    /// [`Shutdown`](crate::shutdown::Shutdown) fires, or any future ends).
    pub async fn serve(self, listener: TcpListener, shutdown: impl IntoFuture<Output = ()>) {
        self.serve_with(listener, Limits::new(), shutdown).await;
    }

    /// Serves on `listener` under `limits` (the connection cap and deadlines of `serve`'s
    /// HTTP listeners) until `shutdown` completes (the daemon's
    /// [`Shutdown`](crate::shutdown::Shutdown) fires).
    pub async fn serve_with(
        self,
        listener: TcpListener,
        limits: Limits,
        shutdown: impl IntoFuture<Output = ()>,
    ) {
        let handler = move |req: hyper::Request<hyper::body::Incoming>| {
            let answer = self.answer(req.uri().path());
            async move {
                let mut rsp = match answer {
                    Some(ka) => Response::new(Full::new(Bytes::from(ka))),
                    None => {
                        let mut r =
                            Response::new(Full::new(Bytes::from_static(b"no such challenge\n")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    }
                };
                rsp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/octet-stream"),
                );
                rsp
            }
        };
        crate::listen::serve(listener, limits, None, handler, shutdown.into_future()).await;
    }
}
