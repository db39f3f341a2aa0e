//! The host side of a run: the functions a hook imports, each checked against its grant
//! before it touches anything, and the record of what the run did (for the journal, for
//! `tlsward hook run`, and for rollback).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tracing::{debug, error, info, warn};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::beneath;
use super::bindings::tlsward::hook::host::Host;
use super::bindings::tlsward::hook::types::{
    self, CertFormat, CommandOutput, HookError, HttpRequest, HttpResponse, LogLevel,
};
use super::convert::{self, Format, Material};
use super::grant::{Grant, Refusal, check_mode};
use crate::secret::Secret;

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

/// The certificate a run deploys, as the host holds it.
pub(crate) struct Cert {
    pub(crate) leaf_der: Vec<u8>,
    pub(crate) chain_der: Vec<Vec<u8>>,
    pub(crate) key: Option<Secret>,
    pub(crate) alias: String,
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

fn format_of(f: CertFormat) -> Format {
    match f {
        CertFormat::PemCert => Format::PemCert,
        CertFormat::PemChain => Format::PemChain,
        CertFormat::PemFullchain => Format::PemFullchain,
        CertFormat::PemKey => Format::PemKey,
        CertFormat::PemCombined => Format::PemCombined,
        CertFormat::DerCert => Format::DerCert,
        CertFormat::DerKey => Format::DerKey,
        CertFormat::Pkcs12 => Format::Pkcs12,
        CertFormat::Pkcs12Legacy => Format::Pkcs12Legacy,
        CertFormat::Jks => Format::Jks,
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

    fn convert_bytes(
        &self,
        format: Format,
        password: Option<&str>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, HookError> {
        self.remaining()?;
        let m = Material {
            leaf_der: &self.cert.leaf_der,
            chain_der: &self.cert.chain_der,
            key_pkcs8_der: self.cert.key.as_ref().map(Secret::expose),
            alias: &self.cert.alias,
        };
        convert::convert(format, &m, password, self.cert.now_unix_ms)
            .map_err(|e| HookError::InvalidArgument(e.to_string()))
    }

    /// Writes `data` to `path` atomically, beneath the grant, keeping the previous file.
    /// The path is resolved from a handle on the granted directory, never through a
    /// symbolic link ([`beneath`]).
    fn write(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        holds_key: bool,
    ) -> Result<(), HookError> {
        self.remaining()?;
        let clean = self.grant.check_write_path(path)?;
        check_mode(mode, holds_key)?;
        if data.len() > MAX_WRITE {
            return Err(HookError::InvalidArgument(format!(
                "{} bytes is over the {MAX_WRITE}-byte limit",
                data.len()
            )));
        }
        let (root, rel) = self.grant.write_root(&clean).ok_or_else(|| {
            HookError::InvalidArgument(format!("{} names no file", clean.display()))
        })?;
        let first_write = !self.rec().written.iter().any(|w| w.path == clean);
        let replaced = beneath::replace(
            root,
            rel,
            data,
            mode,
            first_write.then_some(PREVIOUS_SUFFIX),
        );
        if let Some(previous) = replaced.previous {
            self.rec().written.push(Written {
                path: clean.clone(),
                root: root.to_path_buf(),
                previous,
            });
        }
        replaced.result.map_err(|e| match e {
            beneath::Error::LinkOnTheWay(link) => HookError::AccessDenied(format!(
                "{} passes through a symbolic link ({}); hooks write through real \
                 directories beneath write_paths only",
                clean.display(),
                link.display()
            )),
            beneath::Error::LinkAtTheEnd(_) => HookError::AccessDenied(format!(
                "{} is a symbolic link; hooks replace regular files only",
                clean.display()
            )),
            beneath::Error::NotADirectory(_)
            | beneath::Error::NotAFile(_)
            | beneath::Error::BadPath(_) => HookError::InvalidArgument(e.to_string()),
            beneath::Error::Io(..) => HookError::Failed(e.to_string()),
        })
    }

    fn command(&mut self, argv: &[String]) -> Result<CommandOutput, HookError> {
        self.grant.check_command(argv)?;
        let left = self.remaining()?;
        let out = run_command(&self.rt, argv, left)?;
        self.rec().commands.push(argv.to_vec());
        Ok(out)
    }

    fn https(&mut self, req: HttpRequest) -> Result<HttpResponse, HookError> {
        let uri = self.grant.check_url(&req.url)?;
        let left = self.remaining()?;
        let (tls, verifier) = super::pin::HookVerifier::client_config(
            self.grant.http_ca_file.as_deref(),
            &self.grant.http_pin_sha256,
        )
        .map_err(HookError::Failed)?;
        let pinned = !self.grant.http_pin_sha256.is_empty();
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HookError::InvalidArgument(format!("bad method {:?}", req.method)))?;
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("host") {
                return Err(HookError::InvalidArgument(
                    "the Host header is set from the URL".into(),
                ));
            }
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| HookError::InvalidArgument(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
        self.rt.block_on(async move {
            let exchange = async {
                let rsp = client.request(request).await.map_err(|e| {
                    HookError::Failed(match verifier.refused() {
                        Some(r) => refused_message(&r, pinned),
                        None => format!("request failed: {}", chain(&e)),
                    })
                })?;
                let status = rsp.status().as_u16();
                let headers = rsp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = Limited::new(rsp.into_body(), MAX_HTTP_BODY)
                    .collect()
                    .await
                    .map_err(|e| HookError::Failed(format!("response body: {e}")))?
                    .to_bytes()
                    .to_vec();
                Ok(HttpResponse {
                    status,
                    headers,
                    body,
                })
            };
            tokio::time::timeout(left, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(HookError::Timeout(
                        "the request outlived the hook's deadline".into(),
                    ))
                })
        })
    }
}

/// Why the server's certificate was refused, with its fingerprint to compare and pin.
fn refused_message(r: &super::pin::Refused, pinned: bool) -> String {
    if pinned {
        format!(
            "the server's certificate (sha256 {}) is not one of http_pin_sha256",
            r.sha256
        )
    } else {
        format!(
            "the server's certificate was refused: {}; its sha256 is {}: if that is the \
             appliance's own certificate (checked out of band), pin it with \
             http_pin_sha256 = [\"{}\"], or give its CA in http_ca_file",
            describe(&r.error),
            r.sha256,
            r.sha256
        )
    }
}

/// A certificate refusal in words, naming the case a self-signed appliance hits.
fn describe(e: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) = e
        && let Some(w) = o.0.downcast_ref::<webpki::Error>()
    {
        return match w {
            webpki::Error::CaUsedAsEndEntity => "it is a CA certificate, not a server's \
                (CaUsedAsEndEntity; `openssl req -x509` makes self-signed certificates so)"
                .to_owned(),
            other => format!("invalid peer certificate: {other:?}"),
        };
    }
    e.to_string()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn truncate(bytes: &[u8]) -> String {
    let cut = bytes.len().min(MAX_COMMAND_OUTPUT);
    let mut s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if bytes.len() > cut {
        s.push_str(&format!("\n[{} more bytes dropped]", bytes.len() - cut));
    }
    s
}

/// Runs `argv` with no shell, an empty environment (but [`COMMAND_PATH`]), stdin closed,
/// killed when `limit` passes.
pub(crate) fn run_command(
    rt: &tokio::runtime::Handle,
    argv: &[String],
    limit: Duration,
) -> Result<CommandOutput, HookError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HookError::InvalidArgument("empty argv".into()))?;
    // Checked at config load too; here for grants built in code and for rollback's re-runs.
    if !program.starts_with('/') {
        return Err(HookError::InvalidArgument(format!(
            "{program:?} is not an absolute path"
        )));
    }
    rt.block_on(async {
        let child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", COMMAND_PATH)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HookError::Failed(format!("cannot start {program}: {e}")))?;
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(CommandOutput {
                exit_code: out.status.code().unwrap_or(-1),
                stdout: truncate(&out.stdout),
                stderr: truncate(&out.stderr),
            }),
            Ok(Err(e)) => Err(HookError::Failed(format!("{program}: {e}"))),
            Err(_) => Err(HookError::Timeout(format!(
                "{argv:?} was still running after {} and was killed",
                humantime::format_duration(Duration::from_millis(limit.as_millis() as u64))
            ))),
        }
    })
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

/// What undoing a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rollback {
    /// Files put back from their previous version.
    pub restored: Vec<PathBuf>,
    /// Files the run created, removed.
    pub removed: Vec<PathBuf>,
    /// Commands re-run (the reload), with their exit code.
    pub commands: Vec<(Vec<String>, i32)>,
    /// What could not be undone.
    pub errors: Vec<String>,
}

impl Rollback {
    /// Whether everything was undone.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Puts back the files a run wrote, newest first, then re-runs the commands it ran (once
/// each, in order), so a service reloads the previous files.
pub(crate) fn roll_back(
    rt: &tokio::runtime::Handle,
    written: &[Written],
    commands: &[Vec<String>],
    limit: Duration,
) -> Rollback {
    let mut out = Rollback::default();
    for w in written.iter().rev() {
        let Ok(rel) = w.path.strip_prefix(&w.root) else {
            out.errors.push(format!(
                "{}: not beneath {}",
                w.path.display(),
                w.root.display()
            ));
            continue;
        };
        let previous = w.previous.as_deref().and_then(Path::file_name);
        match beneath::restore(&w.root, rel, previous) {
            Ok(beneath::Restored::Renamed) => out.restored.push(w.path.clone()),
            Ok(beneath::Restored::Removed) => out.removed.push(w.path.clone()),
            Ok(beneath::Restored::Absent) => {}
            Err(e) if e.is_link() => {
                let e = format!(
                    "{}: not put back: {e} (replaced since the hook wrote it; rollback goes \
                     through real directories only)",
                    w.path.display()
                );
                warn!(error = %e, "rollback refused");
                out.errors.push(e);
            }
            Err(e) => out.errors.push(format!("{}: {e}", w.path.display())),
        }
    }
    let deadline = Instant::now() + limit;
    let mut seen: Vec<&Vec<String>> = Vec::new();
    for argv in commands {
        if seen.contains(&argv) {
            continue;
        }
        seen.push(argv);
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match run_command(rt, argv, left) {
            Ok(o) => {
                if o.exit_code != 0 {
                    out.errors.push(format!(
                        "{argv:?} exited {}: {}",
                        o.exit_code,
                        o.stderr.trim()
                    ));
                }
                out.commands.push((argv.clone(), o.exit_code));
            }
            Err(e) => out.errors.push(format!("{argv:?}: {}", render_error(&e))),
        }
    }
    out
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

    #[test]
    fn programs_run_only_by_absolute_path() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for argv in [["bin/true"], ["true"]] {
            let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
            let e = run_command(rt.handle(), &argv, Duration::from_secs(60)).unwrap_err();
            assert!(
                matches!(&e, HookError::InvalidArgument(m) if m.contains("is not an absolute path")),
                "{e:?}"
            );
        }
        let ok = run_command(
            rt.handle(),
            &["/bin/true".to_owned()],
            Duration::from_secs(60),
        );
        assert_eq!(ok.map(|o| o.exit_code).ok(), Some(0));
    }
}
