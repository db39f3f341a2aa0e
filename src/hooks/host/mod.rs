//! The host side of a run: the functions a hook imports, each checked against its grant
//! before it touches anything, and the record of what the run did (for the journal, for
//! `tlsward hook run`, and for rollback).
//!
//! Here: the run's state, the record, and the `Host` impl that checks and records every
//! call; the calls themselves by group: `files.rs` (certificates converted and files written
//! beneath the grant), `http.rs`, `command.rs`, and `rollback.rs` (undoing a run).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod command;
mod files;
mod http;
mod rollback;

pub(crate) use command::run_command;
use files::format_of;
pub use rollback::Rollback;
pub(crate) use rollback::roll_back;

use super::Material;
use super::bindings::tlsward::hook::host::Host;
use super::bindings::tlsward::hook::types::{
    self, CertFormat, CommandOutput, HookError, HttpRequest, HttpResponse, LogLevel,
};
use super::grant::{Grant, Refusal};

/// The `PATH` commands run with; the rest of the environment is empty.
pub const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Captured command output kept per stream.
pub const MAX_COMMAND_OUTPUT: usize = 64 << 10;
/// The largest HTTP response body a hook receives.
pub const MAX_HTTP_BODY: usize = 1 << 20;
/// The largest file a hook may write.
pub const MAX_WRITE: usize = 64 << 20;
/// Log bytes kept per run; beyond it, lines are counted and dropped.
pub const MAX_LOG: usize = 64 << 10;
/// The longest text from a hook kept whole: its summary or error, one log line, one host
/// call's arguments or outcome; beyond it the text is cut and says how much was dropped.
pub const MAX_MESSAGE: usize = 4 << 10;
/// Host calls recorded per run; later ones are counted, and one last entry says how many.
pub const MAX_CALLS: usize = 1000;
/// The suffix of the previous version of a file a hook replaced.
pub const PREVIOUS_SUFFIX: &str = ".tlsward-prev";

/// One host call, as `tlsward hook run` prints it and the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostCall {
    /// The function; `dropped` for the one entry counting calls beyond [`MAX_CALLS`].
    pub function: &'static str,
    /// Its arguments, rendered without secrets.
    pub args: String,
    /// `ok`, `ok: <summary>` or the error.
    pub outcome: String,
}

/// A file a run wrote, with where its previous content went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// The file.
    pub path: PathBuf,
    /// The granted directory it lies beneath: rollback resolves `path` from it again,
    /// through the same directories and never through a symbolic link.
    pub root: PathBuf,
    /// The previous file, kept as `<path>.tlsward-prev`; `None` when there was none.
    pub previous: Option<PathBuf>,
}

/// The certificate a run deploys, as the host holds it: the caller's material, shared, and
/// what this run converts it with.
pub(crate) struct Cert {
    pub(crate) material: Arc<Material>,
    /// The keystore alias (JKS) or friendlyName (PKCS#12): the `alias` setting, or the
    /// endpoint's name.
    pub(crate) alias: String,
    /// The JKS entry's creation date: the run's start.
    pub(crate) now_unix_ms: i64,
}

/// Caps the guest's memory across all its linear memories together (wasmtime's
/// `StoreLimits` caps each memory separately, so a component with several could exceed it).
pub(crate) struct MemoryCap {
    pub(crate) cap: usize,
    pub(crate) used: usize,
    pub(crate) refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used - current.min(self.used) + desired;
        if after > self.cap {
            self.refused = true;
            return Ok(false);
        }
        self.used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// Everything one run's Store holds.
pub(crate) struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) hook: String,
    pub(crate) endpoint: String,
    pub(crate) grant: Arc<Grant>,
    pub(crate) cert: Cert,
    pub(crate) deadline: Instant,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) record: Arc<Mutex<Record>>,
}

/// What a run did, shared with the caller: it stays readable when a guest blocked in a host
/// call past its deadline is abandoned.
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) calls: Vec<HostCall>,
    pub(crate) calls_dropped: usize,
    pub(crate) written: Vec<Written>,
    pub(crate) commands: Vec<Vec<String>>,
    pub(crate) log_bytes: usize,
    pub(crate) denied: bool,
}

// === impl Record ===

impl Record {
    /// Keeps a call (its texts capped by the caller) while fewer than [`MAX_CALLS`] are kept.
    fn push(&mut self, call: HostCall) {
        if self.calls.len() < MAX_CALLS {
            self.calls.push(call);
        } else {
            self.calls_dropped += 1;
        }
    }

    /// The calls kept, then one entry for those dropped, if any.
    pub(crate) fn take_calls(&mut self) -> Vec<HostCall> {
        let mut calls = std::mem::take(&mut self.calls);
        if self.calls_dropped > 0 {
            calls.push(HostCall {
                function: "dropped",
                args: String::new(),
                outcome: format!(
                    "{} more host calls not recorded (the first {MAX_CALLS} are kept)",
                    std::mem::take(&mut self.calls_dropped)
                ),
            });
        }
        calls
    }
}

/// `text` cut to [`MAX_MESSAGE`] bytes (at a character boundary), saying how much was
/// dropped.
pub(crate) fn capped(mut text: String) -> String {
    if text.len() <= MAX_MESSAGE {
        return text;
    }
    let mut cut = MAX_MESSAGE;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!(" [{dropped} more bytes dropped]"));
    text
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl From<Refusal> for HookError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::AccessDenied(m) => Self::AccessDenied(m),
            Refusal::InvalidArgument(m) => Self::InvalidArgument(m),
        }
    }
}

/// The error as the guest and the journal see it: `tag: message`.
pub(crate) fn render_error(e: &HookError) -> String {
    match e {
        HookError::AccessDenied(m) => format!("access-denied: {m}"),
        HookError::InvalidArgument(m) => format!("invalid-argument: {m}"),
        HookError::Failed(m) => format!("failed: {m}"),
        HookError::Timeout(m) => format!("timeout: {m}"),
    }
}

impl State {
    fn rec(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record<T>(
        &mut self,
        function: &'static str,
        args: String,
        result: Result<T, HookError>,
        summary: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T, HookError> {
        let outcome = match &result {
            Ok(v) => summary(v).map_or_else(|| "ok".to_owned(), |s| format!("ok: {s}")),
            Err(e) => {
                if matches!(e, HookError::AccessDenied(_)) {
                    self.rec().denied = true;
                    warn!(hook = %self.hook, endpoint = %self.endpoint, function, error = %render_error(e), "hook refused");
                }
                render_error(e)
            }
        };
        let call = HostCall {
            function,
            args: capped(args),
            outcome: capped(outcome),
        };
        debug!(hook = %self.hook, function, args = %call.args, outcome = %call.outcome, "host call");
        self.rec().push(call);
        result
    }

    fn remaining(&self) -> Result<Duration, HookError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(HookError::Timeout("the hook's deadline has passed".into()))
        } else {
            Ok(left)
        }
    }
}

impl Host for State {
    fn log(&mut self, level: LogLevel, message: String) {
        let message = capped(message);
        let (before, after) = {
            let mut rec = self.rec();
            let before = rec.log_bytes;
            rec.log_bytes = before.saturating_add(message.len());
            (before, rec.log_bytes)
        };
        if after > MAX_LOG {
            if before <= MAX_LOG {
                warn!(hook = %self.hook, endpoint = %self.endpoint, "hook log over {MAX_LOG} bytes: the rest of this run's log is dropped");
            }
            return;
        }
        let (hook, endpoint) = (&self.hook, &self.endpoint);
        match level {
            LogLevel::Debug => debug!(hook = %hook, endpoint = %endpoint, "{message}"),
            LogLevel::Info => info!(hook = %hook, endpoint = %endpoint, "{message}"),
            LogLevel::Warn => warn!(hook = %hook, endpoint = %endpoint, "{message}"),
            LogLevel::Error => error!(hook = %hook, endpoint = %endpoint, "{message}"),
        }
        let level = format!("{level:?}").to_lowercase();
        self.rec().push(HostCall {
            function: "log",
            args: level,
            outcome: message,
        });
    }

    fn write_cert(
        &mut self,
        format: CertFormat,
        path: String,
        mode: u32,
        password: Option<String>,
    ) -> Result<(), HookError> {
        let f = format_of(format);
        let args = format!("{}, {path}, {mode:04o}{}", f.name(), pw(&password));
        let result = self
            .convert_bytes(f, password.as_deref())
            .and_then(|data| self.write(&path, &data, mode, f.holds_key()));
        self.record("write-cert", args, result, |()| None)
    }

    fn convert(
        &mut self,
        format: CertFormat,
        password: Option<String>,
    ) -> Result<Vec<u8>, HookError> {
        let f = format_of(format);
        let args = format!("{}{}", f.name(), pw(&password));
        let result = if f.holds_key() {
            self.grant
                .check_key_access(f.name())
                .map_err(HookError::from)
        } else {
            Ok(())
        }
        .and_then(|()| self.convert_bytes(f, password.as_deref()))
        .map(|z| z.to_vec());
        self.record("convert", args, result, |b| {
            Some(format!("{} bytes", b.len()))
        })
    }

    fn write_file(&mut self, path: String, data: Vec<u8>, mode: u32) -> Result<(), HookError> {
        let args = format!("{path}, {} bytes, {mode:04o}", data.len());
        // Bytes from the guest may hold a key (with key_access); be strict when they look so.
        let holds_key = data.windows(11).any(|w| w == b"PRIVATE KEY");
        let result = self.write(&path, &data, mode, holds_key);
        self.record("write-file", args, result, |()| None)
    }

    fn run_command(&mut self, argv: Vec<String>) -> Result<CommandOutput, HookError> {
        let args = format!("{argv:?}");
        let result = self.command(&argv);
        self.record("run-command", args, result, |o| {
            Some(format!("exit {}", o.exit_code))
        })
    }

    fn http(&mut self, request: HttpRequest) -> Result<HttpResponse, HookError> {
        let args = format!(
            "{} {}, {} bytes",
            request.method,
            request.url,
            request.body.len()
        );
        let result = self.https(request);
        self.record("http", args, result, |r| {
            Some(format!("{} ({} bytes)", r.status, r.body.len()))
        })
    }
}

fn pw(password: &Option<String>) -> &'static str {
    if password.is_some() {
        ", password ****"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_capped_at_a_character_boundary() {
        assert_eq!(capped("short".into()), "short");
        let exact = "x".repeat(MAX_MESSAGE);
        assert_eq!(capped(exact.clone()), exact);
        // A 3-byte character straddles the cap: cut before it.
        let text = format!("{}€tail", "x".repeat(MAX_MESSAGE - 1));
        let kept = capped(text.clone());
        assert_eq!(
            kept,
            format!(
                "{} [{} more bytes dropped]",
                "x".repeat(MAX_MESSAGE - 1),
                text.len() - (MAX_MESSAGE - 1)
            )
        );
    }
}
