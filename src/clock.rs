//! The only reader of wall-clock time.
//!
//! Everything that needs "now" takes a [`Clock`], so tests can pin and move time with a
//! [`TestClock`] instead of sleeping or building certificates around the real date. Monotonic
//! measurements (durations, timeouts) use `tokio::time::Instant`, which is not wall time and
//! is not covered here. `clippy.toml` forbids `SystemTime::now` everywhere else.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// `clock`'s time as whole seconds since the Unix epoch (0 before it), as the store and
/// metrics record instants.
pub fn unix_seconds(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one permitted reader of wall time
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until a test moves it.
#[derive(Debug)]
pub struct TestClock {
    now: Mutex<SystemTime>,
}

impl TestClock {
    /// A clock showing `at`.
    pub fn at(at: SystemTime) -> Self {
        Self {
            now: Mutex::new(at),
        }
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_moves_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = TestClock::at(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(clock.now(), start + Duration::from_secs(86_400));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }
}
