//! The outside consumers tests judge certificate files with: `openssl` and Java's `keytool`
//! (Debian packages openssl and default-jre-headless), run to completion with their output as
//! text and the command shown when an expectation fails.

use std::path::Path;
use std::process::{Command, Output};

/// Java's keytool, where default-jre-headless puts it.
pub const KEYTOOL: &str = "/usr/bin/keytool";

/// `openssl` with these arguments.
pub fn openssl(args: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    cmd
}

/// `keytool` with these arguments, speaking English.
pub fn keytool(args: &[&str]) -> Command {
    let mut cmd = Command::new(KEYTOOL);
    // English messages whatever the machine's locale, so assertions on the text hold.
    cmd.args(["-J-Duser.language=en", "-J-Duser.country=US"])
        .args(args);
    cmd
}

/// A finished command's output, as text.
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    shown: String,
}

/// Runs `cmd` to completion, whatever its exit status.
pub fn run(cmd: &mut Command) -> Run {
    let shown = format!("{cmd:?}");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {shown}: {e} (openssl and default-jre-headless must be installed)")
    });
    Run {
        success: status.success(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        shown,
    }
}

/// Runs `cmd`, which must succeed.
#[track_caller]
pub fn ok(cmd: &mut Command) -> Run {
    let out = run(cmd);
    assert!(
        out.success,
        "{} failed (exit {:?}):\nstdout:\n{}\nstderr:\n{}",
        out.shown, out.code, out.stdout, out.stderr
    );
    out
}

/// Runs `cmd`, which must fail; returns stdout and stderr together.
#[track_caller]
pub fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.success,
        "{} should have failed:\nstdout:\n{}\nstderr:\n{}",
        out.shown, out.stdout, out.stderr
    );
    format!("{}{}", out.stdout, out.stderr)
}

/// The certificates (DER) in openssl's PEM output, which has "Bag Attributes" text between.
pub fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .unwrap_or_else(|e| panic!("PEM in openssl output: {e}\n{text}"))
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

/// The public key of the certificate in `pem_file`, as `openssl x509 -pubkey` prints it.
pub fn cert_pubkey(pem_file: impl AsRef<Path>) -> String {
    let out = ok(openssl(&["x509", "-noout", "-pubkey", "-in"]).arg(pem_file.as_ref()));
    assert!(out.stdout.contains("BEGIN PUBLIC KEY"), "{}", out.stdout);
    out.stdout
}

/// The public key of the private key in `pem_file`, as `openssl pkey -pubout` prints it.
pub fn key_pubkey(pem_file: impl AsRef<Path>) -> String {
    let out = ok(openssl(&["pkey", "-pubout", "-in"]).arg(pem_file.as_ref()));
    assert!(out.stdout.contains("BEGIN PUBLIC KEY"), "{}", out.stdout);
    out.stdout
}
