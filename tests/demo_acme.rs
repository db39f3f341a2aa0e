//! `scripts/demo-acme --check`, the main job's loop, run for real with this build's binary:
//! Pebble issues, the pem-files hook deploys to nginx, and the re-probe verifies.

use std::process::Command;

#[test]
fn the_demo_issues_deploys_and_verifies_on_loopback() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/demo-acme"))
        .arg("--check")
        .env("TLSWARD_BIN", env!("CARGO_BIN_EXE_tlsward"))
        .env_remove("TLSWARD_LOG")
        .output()
        .expect("run scripts/demo-acme");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Before: a self-signed certificate; after: Pebble's, and the deployment verified.
    assert!(stdout.contains("self_signed"), "{stdout}");
    assert!(stdout.contains("CN=Pebble Intermediate CA"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("nginx") && l.contains("verified") && l.contains("foreign")),
        "{stdout}"
    );
    assert!(stdout.contains("verified by a re-probe"), "{stdout}");
}
