use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::slot::{Closed, Deadline, Phase, Slot};
use super::table::{Admission, Table};
use super::*;

#[test]
fn each_phase_has_its_deadline() {
    let limits = Limits::new()
        .with_header_timeout(Duration::from_secs(3))
        .with_idle_timeout(Duration::from_secs(60));
    let t = Instant::now();
    let table = [
        (
            Phase::Head(t),
            Deadline::At(t + Duration::from_secs(3), Closed::HeaderTimeout),
        ),
        (
            Phase::Idle(t),
            Deadline::At(t + Duration::from_secs(60), Closed::IdleTimeout),
        ),
        (Phase::Busy, Deadline::Never),
        (Phase::Evicted, Deadline::Now(Closed::Evicted)),
    ];
    for (phase, expected) in table {
        assert_eq!(phase.deadline(&limits), expected, "{phase:?}");
    }
    // A deadline past what an Instant can hold never fires instead of overflowing.
    let huge = Limits::new().with_header_timeout(Duration::MAX);
    assert_eq!(Phase::Head(t).deadline(&huge), Deadline::Never);
    assert_eq!(Limits::new().with_max_connections(0).max_connections(), 1);
}

#[test]
fn a_full_table_evicts_the_longest_waiting_and_never_a_busy_connection() {
    let table = Arc::new(Table::new(3));
    let t = Instant::now();
    let at = |s: u64| t + Duration::from_secs(s);
    let admit = |now| match table.admit(now) {
        Admission::Admitted(a) => a,
        Admission::Full => panic!("full"),
        Admission::Draining => panic!("draining"),
    };
    let served = admit(at(0));
    let busy = admit(at(1));
    let fresh = admit(at(2));
    // `served` answered a request and is idle again; `busy` is answering one now.
    drop(BusyGuard::start(served.slot.clone()));
    let _answering = BusyGuard::start(busy.slot.clone());
    assert!(matches!(served.slot.phase(), Phase::Idle(_)));

    // Full: the connection that never completed a request makes room first, although
    // the served one has waited longer.
    let newest = admit(at(3));
    assert_eq!(fresh.slot.phase(), Phase::Evicted);
    assert!(matches!(served.slot.phase(), Phase::Idle(_)));
    assert_eq!(
        table.len(),
        4,
        "the evicted one lingers until its task ends"
    );
    drop(fresh);
    assert_eq!(table.len(), 3);

    // Then the never-served newest, then the served one; the busy one never.
    let _a = admit(at(4));
    assert_eq!(newest.slot.phase(), Phase::Evicted);
    drop(newest);
    let b = admit(at(5));
    assert_eq!(_a.slot.phase(), Phase::Evicted);
    drop(_a);
    let _busy_b = BusyGuard::start(b.slot.clone());
    let c = admit(at(6));
    assert_eq!(served.slot.phase(), Phase::Evicted);
    drop(served);
    let _busy_c = BusyGuard::start(c.slot.clone());
    assert_eq!(busy.slot.phase(), Phase::Busy);
    // Every slot is answering a request: a new connection gets none.
    assert!(matches!(table.admit(at(7)), Admission::Full));
    assert_eq!(table.len(), 3);
}

#[test]
fn evictions_still_closing_are_bounded() {
    let table = Arc::new(Table::new(1));
    let mut lingering = Vec::new();
    // Each admission evicts the previous connection, whose task has not ended yet.
    for _ in 0..=EVICTION_SLACK {
        match table.admit(Instant::now()) {
            Admission::Admitted(a) => lingering.push(a),
            _ => panic!("room while fewer than the slack are closing"),
        }
    }
    assert!(matches!(table.admit(Instant::now()), Admission::Draining));
    lingering.remove(0);
    assert!(matches!(
        table.admit(Instant::now()),
        Admission::Admitted(_)
    ));
}

#[test]
fn evicted_connections_stay_evicted_and_bytes_start_a_head() {
    let table = Arc::new(Table::new(1));
    let Admission::Admitted(first) = table.admit(Instant::now()) else {
        panic!("an empty table has room");
    };
    drop(BusyGuard::start(first.slot.clone()));
    assert!(matches!(first.slot.phase(), Phase::Idle(_)));
    first.slot.bytes_arrived();
    assert!(matches!(first.slot.phase(), Phase::Head(_)));
    let _second = table.admit(Instant::now());
    assert_eq!(first.slot.phase(), Phase::Evicted);
    // A request that starts on an evicted connection does not save it.
    drop(BusyGuard::start(first.slot.clone()));
    first.slot.bytes_arrived();
    assert_eq!(first.slot.phase(), Phase::Evicted);
}

#[tokio::test]
async fn a_response_the_client_never_reads_fails_after_the_stall_limit() {
    let slot = Arc::new(Slot::new(Instant::now()));
    let (ours, theirs) = tokio::io::duplex(64);
    let mut tracked = Tracked::new(ours, slot.clone(), Duration::from_millis(200));
    // Nobody reads: the write stalls once 64 bytes are buffered, and then fails.
    let stalled = tokio::time::timeout(Duration::from_secs(60), tracked.write_all(&[b'x'; 4096]))
        .await
        .expect("the stall limit ends the write, not the test's deadline");
    assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);
    drop(theirs);

    // A reader that keeps up lets a write of any size through.
    let (ours, mut theirs2) = tokio::io::duplex(64);
    let mut tracked = Tracked::new(ours, slot.clone(), Duration::from_millis(200));
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        theirs2.read_to_end(&mut all).await.unwrap();
        all.len()
    });
    tracked.write_all(&[b'y'; 4096]).await.unwrap();
    tracked.shutdown().await.unwrap();
    drop(tracked);
    assert_eq!(reader.await.unwrap(), 4096);

    // Bytes read through the wrapper wake an idle connection into a new head.
    slot.set(|_| Phase::Idle(Instant::now()));
    let (ours, mut peer) = tokio::io::duplex(64);
    let mut tracked = Tracked::new(ours, slot.clone(), Duration::from_secs(1));
    peer.write_all(b"GET").await.unwrap();
    let mut buf = [0u8; 3];
    tracked.read_exact(&mut buf).await.unwrap();
    assert!(matches!(slot.phase(), Phase::Head(_)));
}
