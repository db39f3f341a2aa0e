//! Probes that survive their own bugs: each round (`round.rs`) is polled under
//! [`std::panic::catch_unwind`], and a panic in it (a bug in tlsward, triggered by whatever
//! the peer sent) becomes that probe's [`ProbeFailure::Internal`] report, logged once here.
//! The caller's loop or batch goes on.
//!
//! Caught inline, not in a task of its own: a probe already runs inside its caller's task,
//! and a second task per probe (an allocation, a schedule and a wake-up through the runtime)
//! was about 11,000 instructions of every probe. Asserting unwind safety is sound here: a
//! probe that panicked is never polled again but dropped, and what it shares with others
//! (the prober's configuration, the trust store) it only reads. It is dropped with the
//! future that waits for it, so no probe outlives the loop that wanted it.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::Poll;

use tokio::time::Instant;
use tracing::error;

use super::{ProbeFailure, ProbeReport, Target, escape_prefix};

/// The most characters of a panic message kept in the report (it may quote peer bytes).
const PANIC_MESSAGE_MAX: usize = 200;

/// Runs `probe` and turns its panic into one `internal_error` report for `target`. Takes the
/// probe pinned where the caller holds it, so its state is not in this future a second time.
pub(crate) async fn caught<F>(target: &Target, mut probe: Pin<&mut F>) -> Vec<ProbeReport>
where
    F: Future<Output = Vec<ProbeReport>>,
{
    let start = Instant::now();
    let outcome = std::future::poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| probe.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(reports)) => Poll::Ready(Ok(reports)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;
    let why = match outcome {
        Ok(reports) if !reports.is_empty() => return reports,
        Ok(_) => "the probe returned no report".to_owned(),
        Err(payload) => format!("the probe panicked: {}", panic_message(&*payload)),
    };
    error!(target = %target, error = %why, "probe failed inside tlsward; reported as internal_error");
    vec![ProbeReport::unreached(
        target,
        start.elapsed(),
        ProbeFailure::Internal(why),
    )]
}

/// A panic's message (a `&str` or `String` payload), escaped and capped.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    match text {
        Some(t) => escape_prefix(t.as_bytes(), PANIC_MESSAGE_MAX),
        None => "(no message)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cert::{Status, TrustStore};
    use crate::clock::SystemClock;
    use crate::probe::{Module, Prober, Round};

    fn target() -> Target {
        "hostile.test:993".parse().unwrap()
    }

    #[tokio::test]
    async fn a_panicking_probe_becomes_an_internal_error_report() {
        let reports = caught(
            &target(),
            std::pin::pin!(async {
                let peer = String::from_utf8_lossy(b"tw1 \xff\x1b]0;x\x07OK").into_owned();
                let _ = &peer[..5]; // inside the replacement character: the old IMAP panic
                Vec::new()
            }),
        )
        .await;
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.target, "hostile.test:993");
        assert_eq!(r.status(), Status::Unknown);
        assert_eq!(r.reason(), Some("internal_error"));
        let Err(ProbeFailure::Internal(why)) = &r.outcome else {
            panic!("{:?}", r.outcome);
        };
        assert!(
            why.starts_with("the probe panicked: \"")
                && why.contains("byte index 5 is not a char boundary"),
            "{why}"
        );
        assert!(
            !why.contains('\u{1b}') && why.contains(r"\x1b]0;x\x07OK"),
            "peer bytes quoted by the panic are escaped: {why}"
        );
        assert!(why.len() <= PANIC_MESSAGE_MAX + 30, "{why}");
        assert!(
            r.error()
                .unwrap()
                .starts_with("internal error: the probe panicked")
        );
    }

    #[tokio::test]
    async fn a_panic_with_a_formatted_message_or_none() {
        let r = caught(&target(), std::pin::pin!(async { panic!("bad {}", 42) })).await;
        assert_eq!(
            r[0].outcome,
            Err(ProbeFailure::Internal(
                "the probe panicked: \"bad 42\"".into()
            ))
        );
        let r = caught(
            &target(),
            std::pin::pin!(async { std::panic::panic_any(7_u8) }),
        )
        .await;
        assert_eq!(
            r[0].outcome,
            Err(ProbeFailure::Internal(
                "the probe panicked: (no message)".into()
            ))
        );
    }

    #[tokio::test]
    async fn a_real_probe_passes_through_and_the_next_one_still_runs() {
        // A closed loopback port: a real probe, which must come back unchanged.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let prober = Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty()))));
        let t: Target = format!("127.0.0.1:{port}").parse().unwrap();
        let panicked = caught(&t, std::pin::pin!(async { panic!("first") })).await;
        assert_eq!(panicked[0].reason(), Some("internal_error"));
        let reports = prober
            .clone()
            .round(&t, Arc::new(SystemClock), Round::First)
            .await;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].reason(), Some("connect_refused"));
        assert_eq!(reports[0].status(), Status::Critical);
        let one = prober
            .round(
                &t,
                Arc::new(SystemClock),
                Round::FirstWithin(Duration::from_secs(5)),
            )
            .await;
        assert_eq!(one[0].reason(), Some("connect_refused"));
    }

    #[tokio::test]
    async fn the_probe_is_dropped_when_the_caller_stops_waiting() {
        /// Sets its flag when the probe's future is dropped.
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        // As `Prober::round` holds it: the probe pinned inside the future that waits.
        let waiting = async move {
            let probe = std::pin::pin!(async move {
                let _guard = guard;
                std::future::pending::<Vec<ProbeReport>>().await
            });
            caught(&target(), probe).await
        };
        tokio::select! {
            biased;
            _ = waiting => unreachable!("the probe never ends"),
            () = tokio::task::yield_now() => {}
        }
        // The caller gave up: the probe, which would wait forever, must be dropped.
        for _ in 0..1000 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the abandoned probe is still alive");
    }
}
