//! The `tlsward` binary: parse arguments, set up logging, run, map to an exit code.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use tlsward::cli::{self, Cli, ColorWhen, Command, EXIT_UNKNOWN};
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
    // A daemon logs its lifecycle (started, reloaded) by default; a command only its warnings.
    let default = match (cli.verbose, &cli.command) {
        (0, Command::Serve(_)) | (1, _) => "info",
        (0, _) => "warn",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("TLSWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(log_colour(cli.color))
        .with_env_filter(filter)
        .init();
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), "tlsward starting");
    std::panic::set_hook(Box::new(log_panic));

    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", cli::render_error(&e));
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

/// Whether log lines carry colour: with `--color auto` only on a terminal and without
/// `NO_COLOR`, so a log file or the journal never holds escape codes.
fn log_colour(when: ColorWhen) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

/// Reports a panic as one error event instead of std's raw line on stderr: a panic's message
/// may quote bytes from a peer (a reply sliced at the wrong index), which must not reach a
/// terminal unescaped. Inside a probe the event carries the probe's span (its target); the
/// probe itself becomes an `internal_error` report. `RUST_BACKTRACE=1` adds a backtrace.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let message: String = message
        .chars()
        .take(500)
        .flat_map(char::escape_debug)
        .collect();
    let location = info.location().map(ToString::to_string).unwrap_or_default();
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(%location, panic = %message, %backtrace, "a thread panicked");
    } else {
        tracing::error!(%location, panic = %message, "a thread panicked");
    }
}
