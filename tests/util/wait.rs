//! Waiting for what a test cannot be told about. One polling loop for every test: a
//! generous deadline, never a bet on speed, and on a timeout a panic naming what was awaited
//! and how long the test waited.

use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] looks again.
pub const EVERY: Duration = Duration::from_millis(100);

/// What a polled condition gives back: `true`, or `Some(value)`, once it holds.
pub trait Awaited {
    /// What the wait returns once the condition holds.
    type Value;
    /// `Some` once the condition holds.
    fn ready(self) -> Option<Self::Value>;
}

impl Awaited for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Awaited for Option<T> {
    type Value = T;
    fn ready(self) -> Self {
        self
    }
}

/// Polls `f` every `every` until it holds (true, or `Some`), for up to `patience`; `None`
/// when the deadline passed first, for a caller that explains the timeout itself. `f` is
/// always tried at least once, and once more at the deadline.
pub async fn within<F, Fut>(
    patience: Duration,
    every: Duration,
    mut f: F,
) -> Option<<Fut::Output as Awaited>::Value>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Awaited,
{
    let deadline = Instant::now() + patience;
    loop {
        let last = Instant::now() >= deadline;
        if let Some(value) = f().await.ready() {
            return Some(value);
        }
        if last {
            return None;
        }
        tokio::time::sleep_until((Instant::now() + every).min(deadline)).await;
    }
}

/// Polls `f` every 100 ms until it holds (true, or `Some(value)`, which is returned), for up
/// to `secs` seconds; panics naming `what` when it never did.
#[track_caller]
pub fn eventually<F, Fut>(
    secs: u64,
    what: &str,
    f: F,
) -> impl Future<Output = <Fut::Output as Awaited>::Value>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Awaited,
{
    let caller = std::panic::Location::caller();
    async move {
        match within(Duration::from_secs(secs), EVERY, f).await {
            Some(value) => value,
            None => panic!("timed out after {secs} s waiting for {what} (at {caller})"),
        }
    }
}

/// [`within`] for a test without a runtime: `f` is a plain function, polled on a
/// current-thread runtime made for the wait.
pub fn within_blocking<T>(
    patience: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime for the wait")
        .block_on(within(patience, every, || std::future::ready(f())))
}
