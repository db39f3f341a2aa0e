//! The HTTP client under instant-acme, wrapped to keep what instant-acme drops: the
//! `Retry-After` of an error answer (RFC 8555 §6.6: rate limits; RFC 9110 §10.2.3), so a
//! rate-limited order is retried when the CA says, not sooner; and the status of the last
//! answer, which instant-acme does not keep when the body is no problem document (a resumed
//! order the CA no longer has may come back as a bare 404).

use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use crate::clock::Clock;

/// The last `Retry-After` a CA sent with an error status, as it said it: the issuer turns it
/// into a delay with its own clock ([`Self::take`]), so this client reads no wall time.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryAfter(Arc<Mutex<Option<Hint>>>);

impl RetryAfter {
    /// Takes the recorded delay, if any, counted from `clock`'s now.
    pub(crate) fn take(&self, clock: &dyn Clock) -> Option<Duration> {
        let hint = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(hint.delay(clock.now()))
    }

    fn set(&self, hint: Hint) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(hint);
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// Wait this long.
    After(Duration),
    /// Wait until then.
    At(SystemTime),
}

impl Hint {
    /// How long to wait from `now` (nothing for a date already past).
    pub(crate) fn delay(self, now: SystemTime) -> Duration {
        match self {
            Self::After(d) => d,
            Self::At(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// The HTTP status of the last answer from the CA. The issuer's requests run one at a time,
/// so right after a failed request this is that request's status.
#[derive(Debug, Clone, Default)]
pub(crate) struct LastStatus(Arc<AtomicU16>);

impl LastStatus {
    /// The last status seen, if any answer came.
    pub(crate) fn get(&self) -> Option<u16> {
        Some(self.0.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// Forgets the last status (before a request whose answer is to be judged).
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Hint> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Hint::After(Duration::from_secs(secs)));
    }
    let at = time::PrimitiveDateTime::parse(
        value,
        time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ),
    )
    .ok()?
    .assume_utc();
    Some(Hint::At(SystemTime::from(at)))
}

/// Wraps an [`HttpClient`] and records `Retry-After` on 429 and 503 answers, and the status
/// of every answer.
pub(crate) struct Recording {
    inner: Box<dyn HttpClient>,
    retry_after: RetryAfter,
    status: LastStatus,
}

impl Recording {
    pub(crate) fn new(
        inner: Box<dyn HttpClient>,
        retry_after: RetryAfter,
        status: LastStatus,
    ) -> Self {
        Self {
            inner,
            retry_after,
            status,
        }
    }
}

impl HttpClient for Recording {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let (record, seen) = (self.retry_after.clone(), self.status.clone());
        Box::pin(async move {
            let rsp = fut.await?;
            let status = rsp.parts.status.as_u16();
            seen.0.store(status, Ordering::SeqCst);
            let retry = rsp
                .parts
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            if let (429 | 503, Some(hint)) = (status, retry) {
                record.set(hint);
            }
            Ok(rsp)
        })
    }
}

/// An HTTPS client for the CA: the system's roots, or only `ca_file`'s for a private CA.
pub fn https_client(ca_file: Option<&std::path::Path>) -> Result<Box<dyn HttpClient>, String> {
    let tls = tls_client_config(ca_file)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Box::new(
        Client::builder(TokioExecutor::new()).build::<_, BodyWrapper<Bytes>>(connector),
    ))
}

/// TLS settings for an HTTPS client: the system's roots, or only `ca_file`'s certificates
/// for a private CA (an ACME server, an appliance's API).
pub(crate) fn tls_client_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let roots = crate::files::root_store(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        let delay = |v: &str| parse_retry_after(v).map(|h| h.delay(now));
        assert_eq!(delay("120"), Some(Duration::from_secs(120)));
        // 1_784_000_060 = Tue, 14 Jul 2026 03:34:20 GMT
        assert_eq!(
            delay("Tue, 14 Jul 2026 03:34:20 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn a_recorded_date_is_counted_from_the_issuers_clock() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_060);
        let clock = crate::clock::TestClock::at(at - Duration::from_secs(90));
        let recorded = RetryAfter::default();
        recorded.set(Hint::At(at));
        assert_eq!(recorded.take(&clock), Some(Duration::from_secs(90)));
        assert_eq!(recorded.take(&clock), None, "taken once");
        recorded.set(Hint::At(at));
        clock.set(at + Duration::from_secs(5));
        assert_eq!(recorded.take(&clock), Some(Duration::ZERO), "a date past");
    }
}
