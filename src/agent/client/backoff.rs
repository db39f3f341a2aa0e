//! How long the agent waits after a failed call to the center: exponential, with full
//! jitter, between [`MIN_DELAY`] and [`MAX_DELAY`], so a fleet whose center went away does
//! not come back at it in step, and no failure ever turns into a hot loop. Pure: the random
//! source is passed in.

use std::time::Duration;

/// The shortest wait after a failure (and the base of the exponent).
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// The longest wait after any number of failures.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The failures in a row, and the delay before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff drawing its jitter from `rng` (seeded in tests).
    pub fn new(rng: fastrand::Rng) -> Self {
        Self { failures: 0, rng }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; the wait before the next attempt: uniformly drawn from
    /// [`MIN_DELAY`] up to `MIN_DELAY * 2^failures`, capped at [`MAX_DELAY`].
    pub fn failed(&mut self) -> Duration {
        let ceiling = ceiling(self.failures);
        self.failures = self.failures.saturating_add(1);
        let lo = MIN_DELAY.as_millis() as u64;
        let hi = ceiling.as_millis() as u64;
        Duration::from_millis(self.rng.u64(lo..=hi))
    }

    /// Records a success: the next failure starts from the bottom again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// The largest wait after `failures` earlier failures in a row.
fn ceiling(failures: u32) -> Duration {
    let factor = 1u64.checked_shl(failures.min(32)).unwrap_or(u64::MAX);
    MIN_DELAY
        .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_below_a_second_never_above_the_cap_and_growing() {
        let mut b = Backoff::new(fastrand::Rng::with_seed(7));
        let mut max_seen = Duration::ZERO;
        for i in 0..200u32 {
            let d = b.failed();
            assert!(d >= MIN_DELAY, "attempt {i}: {d:?}");
            assert!(d <= MAX_DELAY, "attempt {i}: {d:?}");
            assert!(d <= ceiling(i), "attempt {i}: {d:?}");
            max_seen = max_seen.max(d);
        }
        assert_eq!(b.failures(), 200);
        // Full jitter over [1 s, 60 s] for 190 draws reaches well above half the cap.
        assert!(max_seen > MAX_DELAY / 2, "{max_seen:?}");
    }

    #[test]
    fn the_ceiling_doubles_to_the_cap_and_a_success_resets_it() {
        let ceilings: Vec<u64> = (0..8).map(|n| ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(ceiling(u32::MAX), MAX_DELAY);
        let mut b = Backoff::new(fastrand::Rng::with_seed(1));
        for _ in 0..10 {
            b.failed();
        }
        b.succeeded();
        assert_eq!(b.failures(), 0);
        // After a reset the first wait is exactly the floor again.
        assert_eq!(b.failed(), MIN_DELAY);
    }

    #[test]
    fn the_same_seed_draws_the_same_waits() {
        let draw = |seed| {
            let mut b = Backoff::new(fastrand::Rng::with_seed(seed));
            (0..10).map(|_| b.failed()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
