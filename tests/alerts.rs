//! The shipped alert rules and Alertmanager example, checked by the real tools from Debian:
//! `promtool check rules`, `promtool test rules` (firing and not firing cases) and
//! `amtool check-config`.

use std::path::Path;
use std::process::Command;

fn run(tool: &str, args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts");
    let out = Command::new(tool)
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian packages prometheus, prometheus-alertmanager) must be installed: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_are_valid() {
    let out = run("promtool", &["check", "rules", "tlsward.rules.yml"]);
    assert!(out.contains("SUCCESS: 20 rules found"), "{out}");
}

#[test]
fn rule_unit_tests_pass() {
    let out = run("promtool", &["test", "rules", "tests/tlsward.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alertmanager_example_is_valid() {
    let out = run("amtool", &["check-config", "alertmanager.example.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}
