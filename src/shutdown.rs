//! The daemon's one shutdown signal: triggered once (SIGINT, SIGTERM, or a test), seen by the
//! exporter, the HTTP-01 responder, the reconciler and the scheduler, each of which stops
//! starting new work when it fires.
//!
//! Owns: the signal only. Knows nothing else; what each part does when it fires (listeners
//! stop accepting, probe loops end, the reconciler stops planning and its running
//! deployments are drained) lives with that part.
//!
//! A [`Shutdown`] is a cheap handle: clones share the one signal, and it cannot be
//! un-triggered. It is also [`IntoFuture`], so it can be passed where a plain shutdown
//! future is taken (`Http01Responder::serve`).

use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

/// One shutdown signal shared by every clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    // Holding the sender in every handle keeps the channel open while any handle lives, so
    // `wait` never sees it closed.
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Fires the signal; every [`wait`](Self::wait), past and future, returns. Triggering
    /// again does nothing.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Returns once the signal has fired (at once if it already has). Cancel-safe.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close under us.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

impl IntoFuture for Shutdown {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.wait().await })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_clone_sees_one_trigger_even_after_it_fired() {
        let s = Shutdown::new();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait().await })
        };
        assert!(!s.is_triggered());
        // Not fired: a wait does not return.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), s.wait())
                .await
                .is_err()
        );
        s.clone().trigger();
        assert!(s.is_triggered());
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("a waiter from before the trigger returns")
            .unwrap();
        // A wait that starts after the trigger returns at once, also as a future.
        tokio::time::timeout(Duration::from_secs(30), s.clone().into_future())
            .await
            .expect("a wait after the trigger returns");
        s.trigger();
        assert!(s.is_triggered());
    }
}
