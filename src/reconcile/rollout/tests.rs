//! The queue rule's table tests.

use super::emergency_reason as emergency;
use super::{Decision, Drift, Previous, QueueReason, REGRESSION_REQUEUES, decide, regression_wait};

#[test]
fn the_queue_rule_queues_once_and_again_after_a_regression_with_backoff() {
    use Decision::{Capped, Held, Nothing, Queue};
    use Drift::{Foreign, InSync, Missing, Stale};
    const H: i64 = 3600;
    let now = 1_800_000_000;
    let verified = |ago: i64| Previous::Verified { at: now - ago };
    #[rustfmt::skip]
    let table: &[(&[Drift], Previous, u32, Decision)] = &[
        // In sync at every address: nothing, whatever the history.
        (&[InSync], Previous::Never, 0, Nothing),
        (&[InSync, InSync], verified(10), 3, Nothing),
        // Never queued there: queued, the reason from the worst address.
        (&[Stale], Previous::Never, 0, Queue(QueueReason::Renewed)),
        (&[InSync, Stale], Previous::Never, 0, Queue(QueueReason::Renewed)),
        (&[Stale, Foreign], Previous::Never, 0, Queue(QueueReason::Foreign)),
        (&[Missing], Previous::Never, 0, Queue(QueueReason::Unreachable)),
        (&[], Previous::Never, 0, Queue(QueueReason::Unreachable)),
        // Queued or running already; failed or rolled back: an operator decides.
        (&[Stale], Previous::Open, 0, Nothing),
        (&[Foreign], Previous::Failed, 0, Nothing),
        (&[Foreign], Previous::Failed, 2, Nothing),
        // Verified, and now another certificate: a regression, queued again once the
        // wait since the verification has passed (1 h, then 2 h, 4 h, ...).
        (&[Foreign], verified(2 * H), 0, Queue(QueueReason::Regressed)),
        (&[Stale], verified(H), 0, Queue(QueueReason::Regressed)),
        (&[InSync, Stale], verified(H), 0, Queue(QueueReason::Regressed)),
        (&[Foreign], verified(60), 0, Held { until: now - 60 + H, requeues: 0 }),
        (&[Foreign], verified(H), 1, Held { until: now + H, requeues: 1 }),
        (&[Foreign], verified(2 * H), 1, Queue(QueueReason::Regressed)),
        (&[Stale], verified(15 * H), 4, Held { until: now + H, requeues: 4 }),
        (&[Stale], verified(16 * H), 4, Queue(QueueReason::Regressed)),
        // At the cap: never again by itself, however long ago.
        (&[Stale], verified(1000 * H), REGRESSION_REQUEUES, Capped),
        (&[Stale], verified(1000 * H), REGRESSION_REQUEUES + 3, Capped),
        // An address that did not answer: an outage is not a regression.
        (&[Missing], verified(10 * H), 0, Nothing),
        (&[Foreign, Missing], verified(10 * H), 0, Nothing),
        (&[], verified(10 * H), 0, Nothing),
    ];
    for (i, (served, previous, requeues, want)) in table.iter().enumerate() {
        assert_eq!(
            decide(served, *previous, *requeues, now),
            *want,
            "row {i}: {served:?} {previous:?} {requeues}"
        );
    }
    // The waits double from one hour and do not overflow.
    let hours: Vec<u64> = (0..REGRESSION_REQUEUES)
        .map(|k| regression_wait(k).as_secs() / 3600)
        .collect();
    assert_eq!(hours, [1, 2, 4, 8, 16]);
    assert!(regression_wait(u32::MAX).as_secs() >= regression_wait(15).as_secs());
    let far = Previous::Verified { at: i64::MAX - 10 };
    assert!(matches!(decide(&[Stale], far, 0, now), Held { .. }));
}

#[test]
fn queue_reasons_have_stable_distinct_names() {
    let names: Vec<&str> = QueueReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "renewed",
            "foreign",
            "unreachable",
            "regressed",
            "manual",
            "resumed"
        ]
    );
}

#[test]
fn emergencies_are_near_expiry_or_an_ari_window_in_the_past() {
    let now = 1_800_000_000;
    let day = 86_400;
    // Expiring within the margin, or already expired.
    assert!(
        emergency(Some(now + day), None, now, 3.0)
            .unwrap()
            .contains("1.0 days")
    );
    assert!(emergency(Some(now - day), None, now, 3.0).is_some());
    // Outside the margin; a margin of zero never triggers before expiry.
    assert_eq!(emergency(Some(now + 4 * day), None, now, 3.0), None);
    assert_eq!(emergency(Some(now + 1), None, now, 0.0), None);
    // ARI: an open window is the usual renewal time, not an emergency; an ended one is.
    assert_eq!(
        emergency(Some(now + 30 * day), Some((now - day, now + day)), now, 3.0),
        None
    );
    assert!(
        emergency(
            Some(now + 30 * day),
            Some((now - 2 * day, now - day)),
            now,
            3.0
        )
        .unwrap()
        .contains("ARI")
    );
    // Nothing known about the endpoint: no emergency.
    assert_eq!(emergency(None, None, now, 3.0), None);
}
