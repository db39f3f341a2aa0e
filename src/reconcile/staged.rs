//! Staged rollouts, pure: a certificate's rollout policy (`[certificate.rollout]`: canaries,
//! batches, a pause between them and a failure budget), the stages it cuts the endpoints
//! into, and [`decide`], which says, from each endpoint's deployment of the new version,
//! which deployments may start now, which are held, the stage the rollout is at, and
//! whether it is halted (failures over the budget) or complete.
//!
//! The stages run in order: the canaries first, then the batches; a stage starts when
//! every endpoint of the stages before it is done (verified, failed inside the budget, or
//! already serving the version) and the pause since the last of them finished has passed.
//! An emergency (the served certificate close to expiry) skips the pause, never a halt: a
//! halted rollout waits for an operator (`tlsward rollout resume` or `abort`).
//!
//! Nothing here reads the clock, the store or the config: callers pass `now` and the inputs.

use std::time::Duration;

use crate::store::RolloutState;

/// The failure budget when `failure_budget` is not written: the first failure halts.
pub const DEFAULT_FAILURE_BUDGET: u32 = 0;

/// Which endpoints are the canaries (`canary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canary {
    /// These endpoints, by name.
    Names(Vec<String>),
    /// The first this many endpoints by name.
    Count(usize),
}

/// How many endpoints a batch holds (`batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// This many (at least one).
    Count(usize),
    /// This percentage (1 to 100) of the endpoints that are not canaries, rounded up.
    Percent(u8),
}

/// A certificate's rollout policy. Without one every endpoint's deployment is independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPolicy {
    /// The canaries, deployed and verified before anything else moves.
    pub canary: Canary,
    /// The size of each batch after the canaries.
    pub batch: BatchSize,
    /// How long to wait after a stage is done before the next one starts.
    pub pause: Duration,
    /// How many failed endpoints are tolerated; one more halts the rollout.
    pub failure_budget: u32,
}

impl Default for RolloutPolicy {
    /// No canaries, one batch of every endpoint, no pause, and
    /// [`DEFAULT_FAILURE_BUDGET`].
    fn default() -> Self {
        Self {
            canary: Canary::Count(0),
            batch: BatchSize::Percent(100),
            pause: Duration::ZERO,
            failure_budget: DEFAULT_FAILURE_BUDGET,
        }
    }
}

impl RolloutPolicy {
    /// How long the rollout's pauses take for `endpoints` endpoints: one pause between each
    /// two stages (the room the deadline planner leaves for the rollout).
    pub fn rollout_time(&self, endpoints: usize) -> Duration {
        let names: Vec<String> = (0..endpoints).map(|i| format!("{i:08}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let stages = stages(self, &refs).len();
        self.pause
            .saturating_mul(u32::try_from(stages.saturating_sub(1)).unwrap_or(u32::MAX))
    }
}

/// One endpoint's deployment of the new version, as [`decide`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Not known yet (not probed, or not queued yet): its stage is not done.
    Unknown,
    /// It serves the version already; nothing to deploy.
    InSync,
    /// Queued, not started.
    Waiting,
    /// Approved, running, or installed by its agent.
    Active,
    /// Verified at this time (unix seconds).
    Verified(i64),
    /// Failed or rolled back at this time (unix seconds).
    Failed(i64),
}

impl Slot {
    /// When the endpoint is done, `Some` with the time it finished (`None` for in sync).
    const fn done(self) -> Option<Option<i64>> {
        match self {
            Self::InSync => Some(None),
            Self::Verified(at) | Self::Failed(at) => Some(Some(at)),
            Self::Unknown | Self::Waiting | Self::Active => None,
        }
    }
}

/// A stage of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The canaries.
    Canary,
    /// Batch `n`, counted from 1.
    Batch(u32),
}

impl Stage {
    /// The stage's number: 0 for the canaries, `n` for batch `n` (`tlsward_rollout_batch`).
    pub const fn number(self) -> u32 {
        match self {
            Self::Canary => 0,
            Self::Batch(n) => n,
        }
    }
}

/// The stages `policy` cuts `names` (the certificate's endpoints) into, in order, each with
/// its endpoints sorted by name. Canaries named but not among `names` are ignored; an empty
/// canary stage is left out.
pub fn stages<'a>(policy: &RolloutPolicy, names: &[&'a str]) -> Vec<(Stage, Vec<&'a str>)> {
    let mut sorted: Vec<&'a str> = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let canaries: Vec<&'a str> = match &policy.canary {
        Canary::Names(list) => sorted
            .iter()
            .copied()
            .filter(|n| list.iter().any(|c| c == n))
            .collect(),
        Canary::Count(n) => sorted.iter().copied().take(*n).collect(),
    };
    let rest: Vec<&'a str> = sorted
        .iter()
        .copied()
        .filter(|n| !canaries.contains(n))
        .collect();
    let size = match policy.batch {
        BatchSize::Count(n) => n.max(1),
        BatchSize::Percent(p) => (rest.len() * usize::from(p.clamp(1, 100))).div_ceil(100),
    }
    .max(1);
    let mut out = Vec::new();
    if !canaries.is_empty() {
        out.push((Stage::Canary, canaries));
    }
    for (i, chunk) in rest.chunks(size).enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        out.push((Stage::Batch(n), chunk.to_vec()));
    }
    out
}

/// What [`decide`] says about a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// Where the rollout is.
    pub state: RolloutState,
    /// The stage it is at: the first one not done (the last one when complete); `None`
    /// when there are no endpoints.
    pub stage: Option<Stage>,
    /// Whether that stage may deploy now (it is the first, or its pause has passed).
    pub stage_open: bool,
    /// How many stages, from the first, are done.
    pub done_stages: usize,
    /// Waiting deployments that may start now (their windows permitting).
    pub start: Vec<&'a str>,
    /// Waiting deployments held by the rollout: later stages, a pause, or a halt.
    pub held: Vec<&'a str>,
    /// Endpoints whose deployment failed.
    pub failed: Vec<&'a str>,
    /// When the pause before the current stage ends, while it runs (unix seconds).
    pub pause_until: Option<i64>,
}

/// Decides a rollout: `members` are the certificate's endpoints with their deployment of the
/// new version; `stored` is the state stored for it (`None` before the first decision);
/// `emergency` when an endpoint's served certificate is close to expiry (skips pauses).
/// A stored halt or abort holds every waiting deployment whatever the failures are now,
/// and a stored `complete` holds none (a regression queued later runs as without a policy).
pub fn decide<'a>(
    policy: &RolloutPolicy,
    members: &[(&'a str, Slot)],
    stored: Option<RolloutState>,
    emergency: bool,
    now: i64,
) -> Verdict<'a> {
    let names: Vec<&'a str> = members.iter().map(|(n, _)| *n).collect();
    let stages = stages(policy, &names);
    let slot = |name: &str| {
        members
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Slot::Unknown, |(_, s)| *s)
    };
    let waiting = |list: &[&'a str]| -> Vec<&'a str> {
        list.iter()
            .copied()
            .filter(|n| slot(n) == Slot::Waiting)
            .collect()
    };
    let mut failed: Vec<&'a str> = names
        .iter()
        .copied()
        .filter(|n| matches!(slot(n), Slot::Failed(_)))
        .collect();
    failed.sort_unstable();
    let all: Vec<&'a str> = stages.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let mut out = Verdict {
        state: RolloutState::Running,
        stage: stages.last().map(|(s, _)| *s),
        stage_open: false,
        done_stages: 0,
        start: Vec::new(),
        held: Vec::new(),
        failed,
        pause_until: None,
    };
    // The stages done, and when the last of their deployments finished.
    let mut finished: Option<i64> = None;
    let mut current = None;
    for (i, (stage, list)) in stages.iter().enumerate() {
        let done: Option<Vec<Option<i64>>> = list.iter().map(|n| slot(n).done()).collect();
        match done {
            Some(times) => {
                finished = times.into_iter().flatten().chain(finished).max();
                out.done_stages = i + 1;
            }
            None => {
                current = Some(i);
                out.stage = Some(*stage);
                break;
            }
        }
    }
    let over_budget =
        out.failed.len() > usize::try_from(policy.failure_budget).unwrap_or(usize::MAX);
    match stored {
        Some(RolloutState::Complete) => {
            out.state = RolloutState::Complete;
            out.stage_open = true;
            out.start = waiting(&all);
            return out;
        }
        Some(s @ (RolloutState::Halted | RolloutState::Aborted)) => {
            out.state = s;
            out.held = waiting(&all);
            return out;
        }
        Some(RolloutState::Running) | None if over_budget => {
            out.state = RolloutState::Halted;
            out.held = waiting(&all);
            return out;
        }
        Some(RolloutState::Running) | None => {}
    }
    let Some(i) = current else {
        out.state = RolloutState::Complete;
        out.stage_open = true;
        return out;
    };
    let pause = i64::try_from(policy.pause.as_secs()).unwrap_or(i64::MAX);
    let until = finished.filter(|_| i > 0).map(|t| t.saturating_add(pause));
    out.stage_open = emergency || until.is_none_or(|u| now >= u);
    if out.stage_open {
        out.start = waiting(&stages[i].1);
    } else {
        out.pause_until = until;
    }
    let from = if out.stage_open { i + 1 } else { i };
    out.held = stages[from..]
        .iter()
        .flat_map(|(_, list)| waiting(list))
        .collect();
    out
}

#[cfg(test)]
mod tests;
