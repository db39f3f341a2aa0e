//! The `tlsward` binary: parse arguments, set up logging, run, map to an exit code.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use tlsward::cli::{self, Cli, EXIT_UNKNOWN};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; every usage error is "unknown" (3).
            return if e.use_stderr() {
                ExitCode::from(EXIT_UNKNOWN)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("TLSWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter)
        .init();
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), "tlsward starting");

    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", cli::render_error(&e));
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

/// A closed stdout (`tlsward probe ... | head`) is a quiet success.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = c
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| {
                c.downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}
