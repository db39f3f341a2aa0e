use std::path::Path;

use super::protocol::{Line, ReplyBody, RequestBody, parse_reply, parse_request};
use super::*;
use crate::reconcile::Outcome;
use crate::store::DeploymentState;

#[test]
fn only_the_daemons_user_and_root_may_control_it() {
    assert!(peer_allowed(1000, 1000));
    assert!(peer_allowed(0, 1000));
    assert!(peer_allowed(0, 0));
    assert!(!peer_allowed(1001, 1000));
    assert!(!peer_allowed(1000, 0));
    assert!(!peer_allowed(65534, 1000));
}

#[test]
fn the_socket_sits_beside_the_store() {
    assert_eq!(
        socket_path(Path::new("/var/lib/tlsward/tlsward.db")),
        Path::new("/var/lib/tlsward/tlsward.db.sock")
    );
    assert_eq!(socket_path(Path::new("state/x")), Path::new("state/x.sock"));
}

#[test]
fn requests_are_versioned_lines_and_strangers_are_refused() {
    let line = serde_json::to_vec(&Line {
        v: VERSION,
        body: RequestBody {
            request: &Request::CertIssue {
                name: "www".into(),
                force: true,
            },
        },
    })
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&line),
        r#"{"v":1,"request":{"cert_issue":{"name":"www","force":true}}}"#
    );
    assert_eq!(
        parse_request(&line),
        Ok(Request::CertIssue {
            name: "www".into(),
            force: true
        })
    );
    let refused = |line: &str| match parse_request(line.as_bytes()) {
        Err(Reply::Error { kind, message }) => {
            assert_eq!(kind, "bad_request", "{line}");
            message
        }
        other => panic!("{line}: {other:?}"),
    };
    assert!(refused(r#"{"v":2,"request":{"ping":{}}}"#).contains("version 2"));
    assert!(refused(r#"{"request":{"cert_issue":{"name":"a","force":true}}}"#).contains("v"));
    refused(r#"{"v":1,"request":{"shell":{"cmd":"rm -rf /"}}}"#);
    refused(r#"{"v":1,"request":{"cert_issue":{"name":"a","force":true,"x":1}}}"#);
    refused(r#"{"v":1,"request":{"deploy_approve":{"id":"1","by":"me"}}}"#);
    refused("\u{1b}[31m not json");
    refused("");
}

#[test]
fn replies_round_trip_and_other_versions_are_refused() {
    let reply = Reply::Deployed {
        deployment: 3,
        endpoint: "lb".into(),
        hook: "appliance".into(),
        state: DeploymentState::RolledBack,
        detail: Box::new(Outcome::error("x")),
    };
    let line = serde_json::to_vec(&Line {
        v: VERSION,
        body: ReplyBody { reply: &reply },
    })
    .unwrap();
    assert_eq!(parse_reply(&line).unwrap(), reply);
    assert!(matches!(
        parse_reply(br#"{"v":9,"reply":{"progress":"x"}}"#),
        Err(ControlError::Protocol(m)) if m.contains("version 9")
    ));
    assert!(parse_reply(b"garbage").is_err());
}
