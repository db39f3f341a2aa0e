//! Waiting for what a test cannot be told about: polls with a generous deadline, never a
//! bet on speed, and a panic naming what was awaited.

use std::time::Duration;

/// Polls `f` every 100 ms until it returns true, for up to `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
