//! Renewals planned from change windows, pure: the latest time a certificate's next version
//! must exist so that every endpoint's change window still opens twice (one try and one
//! retry) before the certificate it replaces reaches its deadline, and which endpoints have
//! no window at all before their served certificate expires.
//!
//! The deadline of a version is the earlier of the end of the CA's ARI window for it
//! (RFC 9773 §4.2) and the lifetime fraction ([`renewal_time`]). Without windows a renewal
//! at the usual time is deployed at once; with a weekly window the new version has to exist
//! up to two weeks earlier, or the endpoint's last chance falls after the deadline. The
//! emergency override (`[deploy] emergency_days`) skips windows, but only once the served
//! certificate is that close to expiry: an endpoint whose window never opens before then is
//! reported, for an alert, since it will only ever be deployed to in an emergency.
//!
//! Nothing here reads the clock, the store or the config: callers pass `now` and the inputs.

use std::time::Duration;

use time::OffsetDateTime;

use super::renewal_time;
use super::window::Window;

/// How long a rollout's batches and pauses take once the new version reaches the first
/// endpoint, for a certificate without a rollout policy: nothing, as every endpoint's
/// deployment is independent. With `[certificate.rollout]` it is the policy's pauses
/// ([`RolloutPolicy::rollout_time`](super::RolloutPolicy::rollout_time)).
pub const ROLLOUT_TIME: Duration = Duration::ZERO;

/// How many times each endpoint's window must open between the new version's existence
/// and the deadline: one try and one retry.
pub const OPENINGS: usize = 2;

/// The deadline of a version with `(not_before, not_after)`: the earlier of the lifetime
/// `fraction` left ([`renewal_time`]) and the end of the CA's ARI window, when it has one.
pub fn version_deadline(
    (not_before, not_after): (i64, i64),
    fraction: f64,
    ari_window: Option<(i64, i64)>,
) -> i64 {
    let by_lifetime = renewal_time(not_before, not_after, fraction);
    ari_window.map_or(by_lifetime, |(_, end)| end.min(by_lifetime))
}

/// One endpoint of a certificate, as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointWindow<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its change window; `None` deploys at once (always open).
    pub window: Option<&'a Window>,
}

/// The latest time a certificate's next version must exist, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployDeadline {
    /// The latest time the next version must exist (unix seconds); may lie in the past,
    /// which means at once.
    pub at: i64,
    /// The endpoint whose window sets [`Self::at`] (the first one listed on a tie); `None`
    /// when none has a window and the deadline is the version's own, less the rollout.
    pub set_by: Option<String>,
}

impl DeployDeadline {
    /// The time the planner issues by at the latest: [`Self::at`] when some endpoint has a
    /// window; `None` otherwise, so certificates without windows renew as they always did.
    pub fn renew_by(&self) -> Option<i64> {
        self.set_by.as_ref().map(|_| self.at)
    }
}

/// The renewal time the planner uses for a version with `(not_before, not_after)`, which
/// exists since `since` (the later of its notBefore and when it was stored): the point
/// chosen in the CA's window (`renew_at`) or else the lifetime `fraction`, but no later
/// than `deadline`'s [`DeployDeadline::renew_by`]. Without windows it is `renew_at`
/// unchanged, so the planner behaves as before. A deadline that had passed before the
/// version existed (a weekly window and a 6-day lifetime) cannot be met by renewing
/// earlier, as the next version would miss it the same way: ordering again at once would
/// only repeat, so the usual time stands and the exported deadline shows it in the past.
pub fn planned_renewal(
    renew_at: Option<i64>,
    (not_before, not_after): (i64, i64),
    since: i64,
    fraction: f64,
    deadline: &DeployDeadline,
) -> Option<i64> {
    let Some(by) = deadline.renew_by().filter(|by| *by >= since) else {
        return renew_at;
    };
    let usual = renew_at.unwrap_or_else(|| renewal_time(not_before, not_after, fraction));
    Some(usual.min(by))
}

/// The latest time the next version must exist so that every endpoint's window opens
/// [`OPENINGS`] times before `deadline` (unix seconds, the version's [`version_deadline`])
/// less `rollout_time`, the time a rollout's batches and pauses take after the new version
/// reaches an endpoint (zero without a rollout policy). An opening counts when
/// it starts before that: the new version must exist when the earlier of the last two
/// openings starts.
pub fn deploy_deadline(
    deadline: i64,
    endpoints: &[EndpointWindow<'_>],
    rollout_time: Duration,
) -> DeployDeadline {
    let rollout = i64::try_from(rollout_time.as_secs()).unwrap_or(i64::MAX);
    let last_chance = deadline.saturating_sub(rollout);
    let mut out = DeployDeadline {
        at: last_chance,
        set_by: None,
    };
    for e in endpoints {
        let Some(window) = e.window else {
            continue;
        };
        let at = latest_start(window, last_chance);
        if out.set_by.is_none() || at < out.at {
            out = DeployDeadline {
                at,
                set_by: Some(e.name.to_owned()),
            };
        }
    }
    out
}

/// The start of the [`OPENINGS`]-th last opening of `window` before `until`, or `until`
/// itself for an instant `time` cannot represent (never from a real certificate).
fn latest_start(window: &Window, until: i64) -> i64 {
    let Ok(until_at) = OffsetDateTime::from_unix_timestamp(until) else {
        return until;
    };
    window
        .openings_before(until_at)
        .nth(OPENINGS - 1)
        .map_or(until, |o| o.start.unix_timestamp())
}

/// Whether `window` opens (or is open) at `now` or later but before the served certificate
/// expires (`expiry`, unix seconds) minus `emergency_days` (`[deploy] emergency_days`),
/// after which a deployment skips its window anyway. An endpoint without a window can
/// always deploy at once.
pub fn window_before_expiry(
    window: Option<&Window>,
    now: i64,
    expiry: i64,
    emergency_days: f64,
) -> bool {
    let Some(window) = window else {
        return true;
    };
    // The same margin the emergency override uses.
    let cutoff = expiry.saturating_sub((emergency_days * 86_400.0) as i64);
    let Ok(now_at) = OffsetDateTime::from_unix_timestamp(now) else {
        return false;
    };
    let first = window.next_open(now_at).start.unix_timestamp().max(now);
    first < cutoff
}

#[cfg(test)]
mod tests;
