//! The deadline planner's table tests. Expected instants were worked out independently of
//! jiff, with Python's `zoneinfo` over the same IANA rules (2027: Europe/Berlin springs
//! forward on 28 March and falls back on 31 October, America/New_York on 14 March and
//! 7 November).

use time::OffsetDateTime;
use time::macros::datetime;

use super::*;

const DAY: i64 = 86_400;
const THIRD: f64 = 1.0 / 3.0;

/// (notBefore, notAfter), or an ARI window's (start, end).
type Life = (i64, i64);
/// A window's days, start and zone.
type Def<'a> = (&'a [&'a str], &'a str, &'a str);

fn window(days: &[&str], start: &str, tz: &str) -> Window {
    let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
    Window::parse("w", &days, start, Duration::from_secs(3600), tz).unwrap()
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// The deadline with one endpoint behind `w`.
fn one(deadline: i64, w: &Window) -> i64 {
    let e = [EndpointWindow {
        name: "e",
        window: Some(w),
    }];
    deploy_deadline(deadline, &e, Duration::ZERO).at
}

#[test]
fn a_versions_deadline_is_the_earlier_of_the_lifetime_fraction_and_the_ari_end() {
    #[rustfmt::skip]
    let table: &[(Life, Option<Life>, i64)] = &[
        // 6, 47 and 90 days, no ARI: a third of the lifetime left.
        ((0, 6 * DAY), None, 4 * DAY),
        ((0, 47 * DAY), None, 47 * DAY - (47 * DAY) / 3),
        ((0, 90 * DAY), None, 60 * DAY),
        // A window ending before the fraction decides; one ending after it does not.
        ((0, 90 * DAY), Some((50 * DAY, 55 * DAY)), 55 * DAY),
        ((0, 90 * DAY), Some((58 * DAY, 80 * DAY)), 60 * DAY),
        // A window already over (a revocation): its end, in the past.
        ((0, 6 * DAY), Some((0, DAY)), DAY),
    ];
    for &(life, ari, want) in table {
        assert_eq!(version_deadline(life, THIRD, ari), want, "{life:?} {ari:?}");
    }
}

/// Weekly and daily windows whose last openings before the deadline straddle a clock
/// change: the new version must exist when the second-to-last one opens.
#[test]
fn the_second_to_last_opening_before_the_deadline_across_daylight_saving() {
    // 90 days from 31 January 2027: the deadline is 1 April, after Berlin's spring change.
    let d90 = version_deadline(
        (
            ts(datetime!(2027-01-31 00:00 UTC)),
            ts(datetime!(2027-05-01 00:00 UTC)),
        ),
        THIRD,
        None,
    );
    assert_eq!(d90, ts(datetime!(2027-04-01 00:00 UTC)));
    // 47 days from 28 September 2027 12:00: the deadline is 29 October 20:00, just before
    // Berlin's autumn change.
    let d47 = version_deadline(
        (
            ts(datetime!(2027-09-28 12:00 UTC)),
            ts(datetime!(2027-11-14 12:00 UTC)),
        ),
        THIRD,
        None,
    );
    assert_eq!(d47, ts(datetime!(2027-10-29 20:00 UTC)));
    // 6 days from 24 March 2027: the deadline is 28 March, the day Berlin springs forward.
    let d6 = version_deadline(
        (
            ts(datetime!(2027-03-24 00:00 UTC)),
            ts(datetime!(2027-03-30 00:00 UTC)),
        ),
        THIRD,
        None,
    );
    assert_eq!(d6, ts(datetime!(2027-03-28 00:00 UTC)));

    #[rustfmt::skip]
    let table: &[(&str, i64, Def<'_>, OffsetDateTime)] = &[
        // The last Sunday opening (28 March) is in the gap, so opens at 03:30 CEST = 01:30
        // UTC; the one before (21 March, CET) is also 01:30 UTC.
        ("90d weekly sun 02:30 Berlin", d90, (&["sun"], "02:30", "Europe/Berlin"), datetime!(2027-03-21 01:30 UTC)),
        ("90d weekly sat 02:00 Berlin", d90, (&["sat"], "02:00", "Europe/Berlin"), datetime!(2027-03-20 01:00 UTC)),
        // Daily 01:00 CEST is 23:00 UTC the day before; two of them before 1 April 00:00.
        ("90d daily 01:00 Berlin", d90, (&["daily"], "01:00", "Europe/Berlin"), datetime!(2027-03-30 23:00 UTC)),
        // Still summer time (CEST, UTC+2) on 17 and 24 October.
        ("47d weekly sun 02:30 Berlin", d47, (&["sun"], "02:30", "Europe/Berlin"), datetime!(2027-10-17 00:30 UTC)),
        ("47d daily 01:30 New York", d47, (&["daily"], "01:30", "America/New_York"), datetime!(2027-10-28 05:30 UTC)),
        // 6 days: a daily window fits twice; a weekly one only fits before the version
        // was even issued, which means renew at once.
        ("6d daily 02:00 Berlin", d6, (&["daily"], "02:00", "Europe/Berlin"), datetime!(2027-03-26 01:00 UTC)),
        ("6d weekly sat 02:00 Berlin", d6, (&["sat"], "02:00", "Europe/Berlin"), datetime!(2027-03-20 01:00 UTC)),
        // New York falls back on 7 November: 01:30 happens twice and the window opens at the
        // first (EDT, 05:30 UTC); the next day's 01:30 is EST (06:30 UTC).
        ("daily 01:30 New York, fall back", ts(datetime!(2027-11-09 00:00 UTC)), (&["daily"], "01:30", "America/New_York"), datetime!(2027-11-07 05:30 UTC)),
        ("weekly sun 01:30 New York, fall back", ts(datetime!(2027-11-08 00:00 UTC)), (&["sun"], "01:30", "America/New_York"), datetime!(2027-10-31 05:30 UTC)),
        // New York springs forward on 14 March: 02:30 does not exist and the opening is at
        // 03:30 EDT (07:30 UTC), the same instant as 02:30 EST the week before.
        ("weekly sun 02:30 New York, spring forward", ts(datetime!(2027-03-15 00:00 UTC)), (&["sun"], "02:30", "America/New_York"), datetime!(2027-03-07 07:30 UTC)),
    ];
    for &(what, deadline, (days, start, tz), want) in table {
        assert_eq!(one(deadline, &window(days, start, tz)), ts(want), "{what}");
    }
    assert!(
        one(d6, &window(&["sat"], "02:00", "Europe/Berlin")) < ts(datetime!(2027-03-24 00:00 UTC))
    );
}

#[test]
fn ten_endpoints_the_tightest_window_sets_the_deadline() {
    let d90 = ts(datetime!(2027-04-01 00:00 UTC));
    #[rustfmt::skip]
    let table: &[(&str, Option<Def<'_>>, OffsetDateTime)] = &[
        ("api", None, datetime!(2027-04-01 00:00 UTC)),
        ("db", Some((&["daily"], "01:00", "Europe/Berlin")), datetime!(2027-03-30 23:00 UTC)),
        ("cache", Some((&["daily"], "23:00", "UTC")), datetime!(2027-03-30 23:00 UTC)),
        ("office", Some((&["weekdays"], "09:00", "America/New_York")), datetime!(2027-03-30 13:00 UTC)),
        ("batch", Some((&["weekend"], "22:00", "UTC")), datetime!(2027-03-27 22:00 UTC)),
        ("tokyo", Some((&["wed"], "12:00", "Asia/Tokyo")), datetime!(2027-03-24 03:00 UTC)),
        ("sydney", Some((&["mon"], "03:00", "Australia/Sydney")), datetime!(2027-03-21 16:00 UTC)),
        ("legacy", Some((&["sat"], "02:00", "Europe/Berlin")), datetime!(2027-03-20 01:00 UTC)),
        ("mail", Some((&["sun"], "02:30", "Europe/Berlin")), datetime!(2027-03-21 01:30 UTC)),
        ("lb", Some((&["tue", "thu"], "04:00", "Europe/Berlin")), datetime!(2027-03-25 03:00 UTC)),
    ];
    let windows: Vec<Option<Window>> = table
        .iter()
        .map(|(_, w, _)| w.map(|(days, start, tz)| window(days, start, tz)))
        .collect();
    let endpoints: Vec<EndpointWindow<'_>> = table
        .iter()
        .zip(&windows)
        .map(|((name, _, _), w)| EndpointWindow {
            name,
            window: w.as_ref(),
        })
        .collect();
    for (e, (name, _, want)) in endpoints.iter().zip(table) {
        let alone = deploy_deadline(d90, std::slice::from_ref(e), Duration::ZERO);
        assert_eq!(alone.at, ts(*want), "{name}");
    }
    let all = deploy_deadline(d90, &endpoints, Duration::ZERO);
    assert_eq!(
        all,
        DeployDeadline {
            at: ts(datetime!(2027-03-20 01:00 UTC)),
            set_by: Some("legacy".into()),
        }
    );
    assert_eq!(all.renew_by(), Some(all.at));
    // A rollout taking five days moves every last chance back to 27 March 00:00 UTC: the
    // Saturday window's last two openings before it are 20 and 13 March.
    let slow = deploy_deadline(d90, &endpoints, Duration::from_secs(5 * DAY as u64));
    assert_eq!(slow.at, ts(datetime!(2027-03-13 01:00 UTC)));
    assert_eq!(slow.set_by.as_deref(), Some("legacy"));
}

#[test]
fn without_windows_the_renewal_is_unchanged() {
    let api = [
        EndpointWindow {
            name: "api",
            window: None,
        },
        EndpointWindow {
            name: "db",
            window: None,
        },
    ];
    let d = deploy_deadline(60 * DAY, &api, Duration::ZERO);
    assert_eq!(
        d,
        DeployDeadline {
            at: 60 * DAY,
            set_by: None
        }
    );
    assert_eq!(d.renew_by(), None);
    assert_eq!(
        deploy_deadline(60 * DAY, &[], Duration::ZERO).renew_by(),
        None
    );
    // The rollout's time still counts towards the exported deadline.
    assert_eq!(
        deploy_deadline(60 * DAY, &api, Duration::from_secs(3600)).at,
        60 * DAY - 3600
    );
}

/// Planned this way, the window opens at least twice between the deadline found and the
/// version's own deadline, and the deadline is the latest with that property: checked by
/// walking forward with `next_open` for a year of issuance times, against 47- and 90-day
/// lifetimes and a weekly window through both of Berlin's clock changes.
#[test]
fn planned_deadlines_leave_two_openings_and_are_the_latest_that_do() {
    let weekly = window(&["sat"], "02:30", "Europe/Berlin");
    let daily = window(&["daily"], "02:30", "America/New_York");
    let opens_in = |w: &Window, from: i64, to: i64| {
        let mut n = 0;
        let mut t = OffsetDateTime::from_unix_timestamp(from).unwrap();
        loop {
            let o = w.next_open(t);
            let start = o.start.unix_timestamp();
            if start >= to {
                return n;
            }
            if start >= from {
                n += 1;
            }
            t = o.end;
        }
    };
    let start = ts(datetime!(2027-01-01 00:00 UTC));
    for step in 0..(365 * 24 / 7) {
        let nb = start + step * 7 * 3600;
        for days in [47, 90] {
            let deadline = version_deadline((nb, nb + days * DAY), THIRD, None);
            for w in [&weekly, &daily] {
                let at = one(deadline, w);
                assert!(opens_in(w, at, deadline) >= OPENINGS, "{nb} {days}d");
                assert!(
                    opens_in(w, at + 1, deadline) < OPENINGS,
                    "{nb} {days}d: not the latest"
                );
            }
        }
    }
}

#[test]
fn an_endpoint_whose_window_never_opens_before_the_emergency_margin_is_reported() {
    // Wednesday 2027-03-24 00:00 UTC; a 6-day certificate served, expiring 30 March.
    let now = ts(datetime!(2027-03-24 00:00 UTC));
    let expiry = ts(datetime!(2027-03-30 00:00 UTC));
    let monday = window(&["mon"], "02:00", "Europe/Berlin");
    let saturday = window(&["sat"], "02:00", "Europe/Berlin");
    let daily = window(&["daily"], "02:00", "Europe/Berlin");
    #[rustfmt::skip]
    let table: &[(&str, Option<&Window>, f64, bool)] = &[
        // Next Monday (29 March 00:00 UTC) is after expiry minus 3 days (27 March 00:00).
        ("monday", Some(&monday), 3.0, false),
        // Saturday 27 March 02:00 CET is 01:00 UTC: one hour too late for 3 days...
        ("saturday", Some(&saturday), 3.0, false),
        // ...and in time for 2 days.
        ("saturday, 2 days", Some(&saturday), 2.0, true),
        ("daily", Some(&daily), 3.0, true),
        ("no window", None, 3.0, true),
        // Inside the margin already: no window comes before it, whatever the window.
        ("daily, 6 days", Some(&daily), 6.0, false),
        ("no window, 6 days", None, 6.0, true),
    ];
    for &(what, w, days, want) in table {
        assert_eq!(window_before_expiry(w, now, expiry, days), want, "{what}");
    }
    // A window open now counts when now is before the margin.
    let open_now = window(&["wed"], "00:30", "Europe/Berlin");
    assert!(open_now.is_open(OffsetDateTime::from_unix_timestamp(now).unwrap()));
    assert!(window_before_expiry(Some(&open_now), now, expiry, 3.0));
    // Nonsense instants from a hostile certificate do not panic.
    assert!(!window_before_expiry(Some(&daily), i64::MAX, i64::MIN, 3.0));
    assert_eq!(one(i64::MAX, &daily), i64::MAX);
}

#[test]
fn the_planner_renews_at_the_earlier_of_its_usual_time_and_the_deploy_deadline() {
    let life = (0, 90 * DAY);
    let windowed = |at| DeployDeadline {
        at,
        set_by: Some("legacy".into()),
    };
    let open = DeployDeadline {
        at: 10 * DAY,
        set_by: None,
    };
    #[rustfmt::skip]
    let table: &[(Option<i64>, &DeployDeadline, Option<i64>)] = &[
        // No windows: exactly as before, ARI point or none (the plan's fraction then).
        (None, &open, None),
        (Some(50 * DAY), &open, Some(50 * DAY)),
        // A window whose deadline comes first pulls the renewal forward...
        (None, &windowed(45 * DAY), Some(45 * DAY)),
        (Some(50 * DAY), &windowed(45 * DAY), Some(45 * DAY)),
        // ...and one that comes later changes nothing.
        (None, &windowed(70 * DAY), Some(60 * DAY)),
        (Some(50 * DAY), &windowed(55 * DAY), Some(50 * DAY)),
    ];
    for &(renew_at, deadline, want) in table {
        assert_eq!(
            planned_renewal(renew_at, life, 0, THIRD, deadline),
            want,
            "{renew_at:?} {deadline:?}"
        );
    }
    // A deadline that passed before the version existed: renewing at once would not help
    // (the next version misses it alike), so the usual time stands.
    let passed = windowed(DAY - 1);
    assert_eq!(planned_renewal(None, life, DAY, THIRD, &passed), None);
    assert_eq!(
        planned_renewal(Some(50 * DAY), life, DAY, THIRD, &passed),
        Some(50 * DAY)
    );
    assert_eq!(
        planned_renewal(None, life, DAY, THIRD, &windowed(DAY)),
        Some(DAY)
    );
    // Through the planner: the version is ordered at the deploy deadline, not at 60 days.
    let state = |now_renew_at| super::super::CertState {
        name: "site".into(),
        latest: Some(life),
        retry_after: None,
        renew_at: now_renew_at,
    };
    let at = planned_renewal(None, life, 0, THIRD, &windowed(45 * DAY));
    let p = super::super::plan(&[state(at)], 44 * DAY, THIRD);
    assert_eq!((p.orders.len(), p.next), (0, Some(45 * DAY)));
    assert_eq!(
        super::super::plan(&[state(at)], 45 * DAY, THIRD)
            .orders
            .len(),
        1
    );
}
