//! The binary as a shell runs it against a config file, and the sealed store a config's
//! daemon or CLI keeps, opened beside them as an operator's second process would.

use std::path::Path;
use std::process::{Command, Output};

use tlsward::store::{KeySource, Store};

/// Runs `tlsward <args> --config <config>` to completion.
pub fn tlsward_blocking(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run tlsward")
}

/// [`tlsward_blocking`] off the runtime's threads (the CLI may wait for a daemon that runs
/// in this process for a while).
pub async fn tlsward(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlsward"));
    cmd.args(args).arg("--config").arg(config);
    tokio::task::spawn_blocking(move || cmd.output().expect("run tlsward"))
        .await
        .expect("the CLI's thread")
}

/// The store in `dir` as the configs here name it: `tlsward.db` sealed by `store.key`.
pub fn open_store(dir: &Path) -> Store {
    Store::open(
        &dir.join("tlsward.db"),
        &KeySource::File(dir.join("store.key")),
    )
    .unwrap_or_else(|e| panic!("the store in {}: {e}", dir.display()))
}
