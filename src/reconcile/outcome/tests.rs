//! The outcome's JSON: the same bytes as the journal has always had, read back tolerantly.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::hooks::{HookFailure, HostCall, Written};

/// A hook run that wrote a file, made a call and then failed.
fn failed_run() -> HookRun {
    let mut run = HookRun::failed("pem", HookFailure::Hook("no \u{1b}[2J reload".into()));
    run.calls.push(HostCall {
        function: "write-file",
        args: "/etc/x.crt".into(),
        outcome: "ok".into(),
    });
    run.written.push(Written {
        path: "/etc/x.crt".into(),
        root: "/etc".into(),
        previous: Some("/etc/x.crt.tlsward-prev".into()),
    });
    run
}

fn served() -> Vec<Served> {
    vec![
        Served {
            address: Some("127.0.0.1:443".into()),
            status: "ok".into(),
            reason: None,
            sha256: Some("aa".into()),
        },
        Served {
            address: None,
            status: "critical".into(),
            reason: Some("connect_refused".into()),
            sha256: None,
        },
    ]
}

#[test]
fn a_rolled_back_deployment_renders_the_json_the_journal_always_had() {
    let run = failed_run();
    let undone = crate::hooks::Rollback {
        restored: vec![PathBuf::from("/etc/x.crt")],
        removed: vec![],
        commands: vec![(vec!["systemctl".into(), "reload".into()], 0)],
        errors: vec![],
    };
    // The detail as `deploy.rs` wrote it with `json!` before the types.
    let before = json!({
        "deployment": 7,
        "endpoint": "lb",
        "version": 3,
        "sha256": "bb",
        "hook": {
            "name": run.hook,
            "result": { "error": run.outcome.as_ref().unwrap_err().to_string(), "reason": run.reason() },
            "calls": run.calls,
            "written": run.written,
            "timings": run.timings,
        },
        "error": "the hook failed: no \u{1b}[2J reload",
        "rollback": json!(undone),
        "after_rollback": [
            { "address": "127.0.0.1:443", "status": "ok", "reason": null, "sha256": "aa" },
            { "address": null, "status": "critical", "reason": "connect_refused", "sha256": null },
        ],
    });
    let outcome = Outcome {
        deployment: Some(7),
        endpoint: Some("lb".into()),
        version: Some(3),
        sha256: Some("bb".into()),
        hook: Some(HookReport::of(&run)),
        error: Some("the hook failed: no \u{1b}[2J reload".into()),
        rollback: Some(Rollback::undone(undone)),
        after_rollback: Some(served()),
        ..Outcome::default()
    };
    assert_eq!(outcome.to_json().to_string(), before.to_string());
    // Read back, it is the same outcome.
    assert_eq!(Outcome::from_json(&before), outcome);
}

#[test]
fn verified_redeployed_and_skipped_outcomes_render_as_before() {
    let verification = Verification {
        attempts: 2,
        seconds: 1.5,
        served: served(),
        other: Map::new(),
    };
    let verified = Outcome {
        deployment: Some(1),
        verification: Some(verification.clone()),
        ..Outcome::default()
    };
    let served_json = json!(served());
    assert_eq!(
        verified.to_json(),
        json!({ "deployment": 1, "verification": { "attempts": 2, "seconds": 1.5, "served": served_json } })
    );
    let redeployed = Rollback::Redeployed(Box::new(Redeploy {
        redeployed_version: Some(2),
        sha256: Some("aa".into()),
        hook: None,
        verification: Some(verification),
        errors: Some(vec![
            "the endpoint does not serve the previous version either".into(),
        ]),
    }));
    let json = serde_json::to_value(&redeployed).unwrap();
    assert_eq!(json["redeployed_version"], 2);
    assert_eq!(json["verification"]["served"][0]["sha256"], "aa");
    assert_eq!(
        serde_json::from_value::<Rollback>(json).unwrap(),
        redeployed
    );
    let unreadable = Rollback::Redeployed(Box::new(Redeploy {
        errors: Some(vec!["version 9 is not in the store".into()]),
        ..Redeploy::default()
    }));
    assert_eq!(
        serde_json::to_value(&unreadable).unwrap(),
        json!({ "errors": ["version 9 is not in the store"] })
    );
    let skipped = json!({ "skipped": "nothing to put back" });
    assert_eq!(
        serde_json::from_value::<Rollback>(skipped.clone()).unwrap(),
        Rollback::Skipped {
            skipped: "nothing to put back".into()
        }
    );
    assert_eq!(Outcome::error("x").to_json(), json!({ "error": "x" }));
}

#[test]
fn older_or_unknown_details_are_read_without_loss() {
    // Fields this build does not know, and a partial rollback record.
    let detail = json!({
        "error": "the endpoint did not serve it",
        "rollback": { "restored": ["/etc/x.crt"] },
        "added_later": { "x": 1 },
    });
    let outcome = Outcome::from_json(&detail);
    assert_eq!(
        outcome.error.as_deref(),
        Some("the endpoint did not serve it")
    );
    assert!(matches!(outcome.rollback, Some(Rollback::Undone(_))));
    assert_eq!(outcome.to_json(), detail);
    // A rollback of another shape is kept as it was.
    let odd = json!({ "rollback": { "restored": 5, "why": "?" } });
    let outcome = Outcome::from_json(&odd);
    assert!(matches!(outcome.rollback, Some(Rollback::Other(_))));
    assert_eq!(outcome.to_json(), odd);
    // A detail that does not fit the types at all is kept whole.
    let broken = json!({ "hook": "not a hook record", "error": 3 });
    let outcome = Outcome::from_json(&broken);
    assert_eq!(outcome.hook, None);
    assert_eq!(outcome.to_json(), broken);
    assert_eq!(Outcome::from_json(&Value::Null).to_json(), json!({}));
}
