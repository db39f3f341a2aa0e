use std::time::Duration;

use super::*;

fn policy(canary: Canary, batch: BatchSize, pause_secs: u64, budget: u32) -> RolloutPolicy {
    RolloutPolicy {
        canary,
        batch,
        pause: Duration::from_secs(pause_secs),
        failure_budget: budget,
    }
}

const TEN: [&str; 10] = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];

#[test]
fn stages_put_canaries_first_then_batches_by_name() {
    let named = policy(
        Canary::Names(vec!["e7".into(), "nope".into()]),
        BatchSize::Count(3),
        0,
        0,
    );
    let mut shuffled = TEN;
    shuffled.reverse();
    let got = stages(&named, &shuffled);
    assert_eq!(
        got,
        vec![
            (Stage::Canary, vec!["e7"]),
            (Stage::Batch(1), vec!["e0", "e1", "e2"]),
            (Stage::Batch(2), vec!["e3", "e4", "e5"]),
            (Stage::Batch(3), vec!["e6", "e8", "e9"]),
        ]
    );
    let counted = policy(Canary::Count(2), BatchSize::Percent(50), 0, 0);
    assert_eq!(
        stages(&counted, &TEN),
        vec![
            (Stage::Canary, vec!["e0", "e1"]),
            (Stage::Batch(1), vec!["e2", "e3", "e4", "e5"]),
            (Stage::Batch(2), vec!["e6", "e7", "e8", "e9"]),
        ]
    );
    // 1% of nine rounds up to one endpoint per batch; no canaries means no canary stage.
    let tiny = policy(Canary::Count(0), BatchSize::Percent(1), 0, 0);
    assert_eq!(stages(&tiny, &TEN[..3]).len(), 3);
    assert_eq!(stages(&tiny, &TEN[..3])[0].0, Stage::Batch(1));
    assert!(stages(&tiny, &[]).is_empty());
}

#[test]
fn rollout_time_is_one_pause_between_each_two_stages() {
    let p = policy(Canary::Count(1), BatchSize::Count(3), 600, 0);
    // Canary + 3 batches of the nine others = 4 stages, 3 pauses.
    assert_eq!(p.rollout_time(10), Duration::from_secs(1800));
    assert_eq!(p.rollout_time(1), Duration::ZERO);
    assert_eq!(RolloutPolicy::default().rollout_time(10), Duration::ZERO);
}

/// Slots for TEN from a compact string: `.` unknown, `s` in sync, `w` waiting, `a` active,
/// `v` verified at 100, `f` failed at 100.
fn slots(s: &str) -> Vec<(&'static str, Slot)> {
    TEN.iter()
        .zip(s.chars())
        .map(|(n, c)| {
            let slot = match c {
                '.' => Slot::Unknown,
                's' => Slot::InSync,
                'w' => Slot::Waiting,
                'a' => Slot::Active,
                'v' => Slot::Verified(100),
                'f' => Slot::Failed(100),
                other => panic!("bad slot {other}"),
            };
            (*n, slot)
        })
        .collect()
}

#[test]
fn decisions_follow_stages_pauses_budget_and_stored_state() {
    use RolloutState::{Aborted, Complete, Halted, Running};
    // Canary e0, then batches of three, a 60 s pause, a budget of one failure.
    let p = policy(Canary::Count(1), BatchSize::Count(3), 60, 1);
    // (slots, stored, emergency, now) -> (state, stage, start, held count, pause_until)
    type Want = (
        RolloutState,
        Option<Stage>,
        &'static [&'static str],
        usize,
        Option<i64>,
    );
    let table: &[(&str, Option<RolloutState>, bool, i64, Want)] = &[
        // Only the canary may start; nine held.
        (
            "wwwwwwwwww",
            None,
            false,
            0,
            (Running, Some(Stage::Canary), &["e0"], 9, None),
        ),
        // The canary runs: nothing else starts.
        (
            "awwwwwwwww",
            None,
            false,
            10,
            (Running, Some(Stage::Canary), &[], 9, None),
        ),
        // Verified at 100: batch 1 waits for the pause (until 160).
        (
            "vwwwwwwwww",
            None,
            false,
            120,
            (Running, Some(Stage::Batch(1)), &[], 9, Some(160)),
        ),
        // An emergency skips the pause.
        (
            "vwwwwwwwww",
            None,
            true,
            120,
            (Running, Some(Stage::Batch(1)), &["e1", "e2", "e3"], 6, None),
        ),
        // After the pause, batch 1 starts.
        (
            "vwwwwwwwww",
            None,
            false,
            160,
            (Running, Some(Stage::Batch(1)), &["e1", "e2", "e3"], 6, None),
        ),
        // One failure inside the budget: batch 1 counts as done, batch 2 after its pause.
        (
            "vvfvwwwwww",
            None,
            false,
            200,
            (Running, Some(Stage::Batch(2)), &["e4", "e5", "e6"], 3, None),
        ),
        // A second failure is over the budget: halted, every waiting one held.
        (
            "vvfvfawwww",
            None,
            false,
            200,
            (Halted, Some(Stage::Batch(2)), &[], 4, None),
        ),
        // Even an emergency does not lift a halt.
        (
            "vvfvfawwww",
            None,
            true,
            200,
            (Halted, Some(Stage::Batch(2)), &[], 4, None),
        ),
        // A stored halt holds, though the failures are now re-queued (a resume sets Running).
        (
            "vvwvwwwwww",
            Some(Halted),
            false,
            200,
            (Halted, Some(Stage::Batch(1)), &[], 7, None),
        ),
        (
            "vvwvwwwwww",
            Some(Running),
            false,
            200,
            (Running, Some(Stage::Batch(1)), &["e2"], 6, None),
        ),
        (
            "vwwwwwwwww",
            Some(Aborted),
            false,
            999,
            (Aborted, Some(Stage::Batch(1)), &[], 9, None),
        ),
        // An unknown endpoint keeps its stage open: the next one waits.
        (
            "v.vvwwwwww",
            None,
            false,
            999,
            (Running, Some(Stage::Batch(1)), &[], 6, None),
        ),
        // In sync endpoints are done without a pause of their own.
        (
            "ssssssssss",
            None,
            false,
            0,
            (Complete, Some(Stage::Batch(3)), &[], 0, None),
        ),
        (
            "vvvvvvvvvf",
            None,
            false,
            999,
            (Complete, Some(Stage::Batch(3)), &[], 0, None),
        ),
        // Once complete, a regression queued again is not held.
        (
            "vvvvwvvvvv",
            Some(Complete),
            false,
            999,
            (Complete, Some(Stage::Batch(2)), &["e4"], 0, None),
        ),
    ];
    for (i, (s, stored, emergency, now, want)) in table.iter().enumerate() {
        let members = slots(s);
        let v = decide(&p, &members, *stored, *emergency, *now);
        let got: Want = (v.state, v.stage, &[], v.held.len(), v.pause_until);
        assert_eq!(
            (got.0, got.1, v.start.as_slice(), got.3, got.4),
            (want.0, want.1, want.2, want.3, want.4),
            "row {i}: {s} {stored:?} emergency={emergency} now={now}"
        );
    }
}

#[test]
fn the_verdict_counts_done_stages_and_names_failures() {
    let p = policy(Canary::Count(1), BatchSize::Count(3), 0, 5);
    let v = decide(&p, &slots("vfvvwwwwww"), None, false, 100);
    assert_eq!(v.done_stages, 2);
    assert_eq!(v.failed, ["e1"]);
    assert!(v.stage_open);
    assert_eq!(v.stage.map(Stage::number), Some(2));
    let none = decide(&p, &[], None, false, 0);
    assert_eq!((none.state, none.stage), (RolloutState::Complete, None));
}
