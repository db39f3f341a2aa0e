//! `/metrics` as a stream: the registry is encoded on a blocking thread into chunks of
//! [`CHUNK`] bytes that go to the connection through a queue of [`QUEUE`] chunks, so a
//! scrape holds at most a few chunks in memory whatever the fleet's size, and an encoder
//! whose client reads slowly waits for it.
//!
//! Where it may wait matters: prometheus-client families hold their lock while they encode,
//! and the target collector reads the results under their lock. So the encoder never waits
//! by default (its buffer just grows, by the few kilobytes of the daemon's own families);
//! it waits only inside [`waiting_allowed`], which the target collector enters to write
//! samples it has copied out of the results, with no lock held. A client that goes away
//! closes the queue, and the next write fails, which stops the encoding.
//!
//! The chain per scrape: prometheus-client's OpenMetrics text, converted a line at a time to
//! the text format unless OpenMetrics was asked for, gzip-compressed a chunk at a time when
//! gzip was asked for. The bytes are those of the whole-body encoding.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use hyper::body::{Body, Frame};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::gzip::LEVEL;
use super::text::TextConverter;

/// The size of the chunks handed to the connection (before compression).
pub(crate) const CHUNK: usize = 64 * 1024;
/// Chunks queued between the encoder and the connection.
pub(crate) const QUEUE: usize = 2;

thread_local! {
    /// Whether the encoding on this thread may wait for its client now.
    static MAY_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` allowing the stream encoded on this thread to wait for its client, which it does
/// whenever a chunk is full. Only for code that holds no lock others wait for.
pub(crate) fn waiting_allowed<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAY_WAIT.set(self.0);
        }
    }
    let _restore = Restore(MAY_WAIT.replace(true));
    f()
}

/// Why a stream ended early.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StreamError {
    /// A collector failed.
    #[error("encoding metrics failed: {0}")]
    Encoding(String),
    /// The encoder ended without finishing (it panicked).
    #[error("encoding metrics stopped before the end")]
    Stopped,
}

/// One piece of the body, and whether it is the last.
#[derive(Debug)]
pub(crate) struct Piece {
    pub(crate) bytes: Bytes,
    pub(crate) last: bool,
    /// The uncompressed bytes it holds (all of `bytes` without gzip).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the tests of backpressure")
    )]
    pub(crate) plain: usize,
}

/// What the encoder sends to the connection.
pub(crate) type Message = Result<Piece, StreamError>;

/// How far an encoding got, for tests.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Uncompressed bytes of the answer encoded so far (sent or buffered).
    pub(crate) encoded: AtomicUsize,
}

/// What the encoder writes into: converts, buffers, compresses and sends.
struct Sink {
    text: Option<TextConverter>,
    plain: String,
    gzip: Option<GzEncoder<Vec<u8>>>,
    tx: mpsc::Sender<Message>,
    progress: Arc<Progress>,
}

// === impl Sink ===

impl Sink {
    /// Sends what is buffered (compressed first, with gzip). A piece is sent even when the
    /// compressor gave no output for it yet, so the queue holds the encoder back by
    /// uncompressed chunks, whatever the compression ratio.
    fn flush(&mut self, last: bool) -> Result<(), fmt::Error> {
        let plain = self.plain.len();
        let bytes = match &mut self.gzip {
            Some(gz) => {
                // Writing into a Vec cannot fail.
                gz.write_all(self.plain.as_bytes())
                    .map_err(|_| fmt::Error)?;
                self.plain.clear();
                if last {
                    gz.try_finish().map_err(|_| fmt::Error)?;
                }
                Bytes::from(std::mem::take(gz.get_mut()))
            }
            None => Bytes::from(std::mem::take(&mut self.plain).into_bytes()),
        };
        self.tx
            .blocking_send(Ok(Piece { bytes, last, plain }))
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.tx.is_closed() {
            return Err(fmt::Error);
        }
        let before = self.plain.len();
        match &mut self.text {
            Some(conv) => conv.push(s, &mut self.plain),
            None => self.plain.push_str(s),
        }
        let added = self.plain.len() - before;
        self.progress.encoded.fetch_add(added, Ordering::Relaxed);
        if self.plain.len() >= CHUNK && MAY_WAIT.get() {
            self.flush(false)?;
        }
        Ok(())
    }
}

/// Encodes `registry` (OpenMetrics with `# EOF`, or the text format) into `tx`, gzipped when
/// `gzip`; waits for the receiver as the module says. Call on a thread that may block. A
/// collector's failure is sent as the last message; a closed receiver just ends it.
pub(crate) fn produce(
    registry: &Registry,
    openmetrics: bool,
    gzip: bool,
    tx: mpsc::Sender<Message>,
    progress: Arc<Progress>,
) {
    produce_with(!openmetrics, gzip, tx, progress, |mut sink| {
        prometheus_client::encoding::text::encode(&mut sink, registry)
    });
}

/// Runs `encode` into `tx` as [`produce`] does for a registry: converted from OpenMetrics to
/// the text format when `text`, gzipped when `gzip`, waiting for the receiver only inside
/// [`waiting_allowed`]. Call on a thread that may block.
pub(crate) fn produce_with(
    text: bool,
    gzip: bool,
    tx: mpsc::Sender<Message>,
    progress: Arc<Progress>,
    encode: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result,
) {
    MAY_WAIT.set(false);
    let mut sink = Sink {
        text: text.then(TextConverter::default),
        plain: String::with_capacity(CHUNK + CHUNK / 4),
        gzip: gzip.then(|| GzEncoder::new(Vec::with_capacity(CHUNK / 4), LEVEL)),
        tx: tx.clone(),
        progress,
    };
    let encoded = encode(&mut sink);
    let done = encoded.and_then(|()| {
        if let Some(mut conv) = sink.text.take() {
            let before = sink.plain.len();
            conv.finish(&mut sink.plain);
            let added = sink.plain.len() - before;
            sink.progress.encoded.fetch_add(added, Ordering::Relaxed);
        }
        sink.flush(true)
    });
    if let Err(e) = done
        && !tx.is_closed()
    {
        let _ = tx.blocking_send(Err(StreamError::Encoding(e.to_string())));
    }
}

/// A response body fed by [`produce`]: the first piece (already received), then the rest.
#[derive(Debug)]
pub(crate) struct MetricsBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Message>,
    done: bool,
}

// === impl MetricsBody ===

impl MetricsBody {
    /// The body that sends `first` and then what `rx` brings until a last piece.
    pub(crate) fn new(first: Bytes, rx: mpsc::Receiver<Message>) -> Self {
        Self {
            first: (!first.is_empty()).then_some(first),
            rx,
            done: false,
        }
    }
}

impl Body for MetricsBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            return match self.rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(piece))) => {
                    self.done = piece.last;
                    if piece.bytes.is_empty() {
                        if piece.last {
                            return Poll::Ready(None);
                        }
                        // All of it still inside the compressor.
                        continue;
                    }
                    Poll::Ready(Some(Ok(Frame::data(piece.bytes))))
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    self.done = true;
                    Poll::Ready(Some(Err(StreamError::Stopped)))
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::mpsc as std_mpsc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::cert::{ChainFacts, TrustStore};
    use crate::clock::{Clock, TestClock};
    use crate::exporter::metrics::{ModeSwitch, WholeTargetCollector};
    use crate::exporter::text::openmetrics_to_text;
    use crate::exporter::{ExporterState, MetricsMode, ProbeProfiles, WebConfig};
    use crate::probe::{Module, ProbeFailure, ProbeReport, Prober, Target, TlsInfo};
    use crate::schedule::{FirstRound, Results, ScheduleMetrics, Scheduler, TargetSpec};
    use crate::shutdown::Shutdown;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn now() -> SystemTime {
        UNIX_EPOCH + NOW
    }

    /// A served chain for `name`, trusted, analysed as for `verified_as`.
    fn facts(name: &str, verified_as: &str) -> ChainFacts {
        crate::cert::fixtures::self_signed(name, verified_as, now())
    }

    /// `n` scheduled targets in `results`: a third unreachable, a third valid, a third
    /// with a name mismatch; labels that need escaping; every fifth probed per address.
    fn fleet(n: usize) -> Arc<Results> {
        let ok = facts("ok.fleet.test", "ok.fleet.test");
        let mismatch = facts("x.fleet.test", "other.fleet.test");
        let prober = Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty()))));
        let specs: Vec<TargetSpec> = (0..n)
            .map(|i| {
                let name = format!("h{i}.fleet.invalid:443");
                TargetSpec {
                    name: name.as_str().into(),
                    profile: if i % 2 == 0 { "default" } else { "strict" }.into(),
                    target: name.parse().unwrap(),
                    interval: Duration::from_secs(60 + (i % 3) as u64),
                    prober: prober.clone(),
                    labels: vec![("team".into(), format!("t\"{}\\\n", i % 7))],
                    all_addresses: i % 5 == 0,
                }
            })
            .collect();
        let results = Arc::new(Results::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Registered, then stopped before any loop runs: nothing is probed.
            let mut reg = Registry::default();
            let clock: Arc<dyn Clock> = Arc::new(TestClock::at(now()));
            let s = Scheduler::new(
                results.clone(),
                ScheduleMetrics::register(&mut reg),
                clock,
                Shutdown::new(),
            );
            s.apply(specs.clone(), 1, FirstRound::Spread);
            s.stop();
        });
        for (i, spec) in specs.iter().enumerate() {
            let t: Target = spec.name.parse().unwrap();
            let mut r = ProbeReport::unreached(
                &t,
                Duration::from_micros(1500 + i as u64),
                ProbeFailure::ConnectRefused,
            );
            if i % 3 != 0 {
                r.address = Some(([127, 0, 0, (i % 250) as u8 + 1], 443).into());
                r.tls = Some(TlsInfo {
                    version: "TLSv1.3".into(),
                    cipher_suite: "TLS13_AES_128_GCM_SHA256".into(),
                    alpn: None,
                });
                r.outcome = Ok(if i % 3 == 1 { &ok } else { &mismatch }.clone());
            }
            results.update(&spec.key(), vec![r], now());
        }
        results
    }

    /// The daemon's exporter state over `results`, in `mode`.
    fn state(results: &Arc<Results>, mode: MetricsMode) -> Arc<ExporterState> {
        let mut reg = Registry::default();
        ScheduleMetrics::register(reg.sub_registry_with_prefix("tlsward"));
        let (reload, _) = mpsc::channel(1);
        let state = ExporterState::new(
            reg,
            results.clone(),
            ProbeProfiles::default(),
            WebConfig::open(),
            reload,
            Arc::new(TestClock::at(now())),
        );
        state.set_metrics(mode);
        Arc::new(state)
    }

    /// The same registry with the whole-body target collector, encoded whole (OpenMetrics).
    fn oracle(results: &Arc<Results>, mode: MetricsMode) -> String {
        let mut reg = Registry::default();
        let sub = reg.sub_registry_with_prefix("tlsward");
        ScheduleMetrics::register(sub);
        let switch = ModeSwitch::default();
        switch.set(mode);
        sub.register_collector(Box::new(WholeTargetCollector {
            results: results.clone(),
            mode: switch,
        }));
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        om
    }

    /// Every piece [`produce`] sends, joined, and how many pieces there were.
    fn streamed(registry: &Registry, openmetrics: bool, gzip: bool) -> (Vec<u8>, usize) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        std::thread::scope(|s| {
            s.spawn(|| produce(registry, openmetrics, gzip, tx, Arc::default()));
            let (mut out, mut pieces) = (Vec::new(), 0);
            while let Some(m) = rx.blocking_recv() {
                let piece = m.unwrap();
                out.extend_from_slice(&piece.bytes);
                pieces += 1;
                if piece.last {
                    break;
                }
            }
            assert!(rx.blocking_recv().is_none(), "nothing after the last piece");
            (out, pieces)
        })
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_streamed_scrape_of_20000_targets_is_byte_for_byte_the_whole_body_encoding() {
        let results = fleet(20_000);
        for mode in MetricsMode::ALL {
            let expected = oracle(&results, mode);
            let lines = expected
                .lines()
                .filter(|l| l.starts_with("tlsward_probe_success{"))
                .count();
            assert_eq!(lines, 20_000, "{mode:?}: one success series per target");
            assert!(expected.contains("tlsward_probe_failure_info{"));
            assert!(expected.contains("team=\"t\\\"3\\\\"), "labels escaped");
            assert!(expected.ends_with("# EOF\n"));
            let text = openmetrics_to_text(&expected);
            let state = state(&results, mode);

            let (om, pieces) = streamed(&state.registry, true, false);
            assert!(pieces > expected.len() / CHUNK / 2, "{pieces} pieces");
            assert!(om == expected.as_bytes(), "{mode:?}: OpenMetrics differs");
            let (plain, _) = streamed(&state.registry, false, false);
            assert!(plain == text.as_bytes(), "{mode:?}: text format differs");
            let (gz, _) = streamed(&state.registry, false, true);
            assert!(gz.len() * 4 < text.len(), "gzip pays off");
            assert!(
                gunzip(&gz) == text.as_bytes(),
                "{mode:?}: gzip text differs"
            );
            if mode == MetricsMode::Full {
                let (gz, _) = streamed(&state.registry, true, true);
                assert!(
                    gunzip(&gz) == expected.as_bytes(),
                    "gzip OpenMetrics differs"
                );
            }
        }
    }

    #[test]
    fn a_slow_client_holds_the_encoder_back_without_blocking_probes_and_leaving_stops_it() {
        let results = fleet(20_000);
        let state = state(&results, MetricsMode::Full);
        let key = results.with(|m| m.keys().nth(10_000).cloned().unwrap());
        // Ahead of the client: the queued pieces and the one being filled, each at most a
        // chunk and a batch's samples.
        let bound = 2 * (QUEUE + 1) * CHUNK;
        for gzip in [false, true] {
            let progress = Arc::new(Progress::default());
            let (tx, mut rx) = mpsc::channel(QUEUE);
            let (ended_tx, ended) = std_mpsc::channel();
            let (registry_state, p) = (state.clone(), progress.clone());
            std::thread::spawn(move || {
                produce(&registry_state.registry, false, gzip, tx, p);
                let _ = ended_tx.send(());
            });
            let mut read = 0;
            for _ in 0..3 {
                let piece = rx.blocking_recv().unwrap().unwrap();
                assert!(!piece.last);
                read += piece.plain;
            }
            // The client stops reading; give an encoder that does not wait time to run ahead.
            std::thread::sleep(Duration::from_millis(500));
            let encoded = progress.encoded.load(Ordering::Relaxed);
            assert!(
                encoded <= read + bound,
                "gzip {gzip}: {encoded} bytes encoded for {read} read"
            );
            // Probes record their results meanwhile.
            let (done_tx, done) = std_mpsc::channel();
            let (r, k) = (results.clone(), key.clone());
            std::thread::spawn(move || {
                let t: Target = k.0.parse().unwrap();
                let report =
                    ProbeReport::unreached(&t, Duration::ZERO, ProbeFailure::ConnectRefused);
                r.update(&k, vec![report], now());
                let _ = done_tx.send(());
            });
            done.recv_timeout(Duration::from_secs(60))
                .expect("a probe records its result while a scrape is stalled");
            // The client goes away: the encoder stops without encoding the rest.
            drop(rx);
            ended
                .recv_timeout(Duration::from_secs(60))
                .expect("the encoder stops when its client leaves");
            let encoded = progress.encoded.load(Ordering::Relaxed);
            assert!(
                encoded <= read + bound + 2 * CHUNK,
                "gzip {gzip}: {encoded} bytes encoded in all, of a body of over 20 MB"
            );
        }
    }

    /// A chunked HTTP/1.1 body, de-chunked.
    fn dechunk(mut body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a chunk size");
            let size =
                usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap(), 16).unwrap();
            body = &body[end + 2..];
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&body[..size]);
            assert_eq!(&body[size..size + 2], b"\r\n");
            body = &body[size + 2..];
        }
    }

    #[test]
    fn a_large_scrape_is_sent_chunked_over_http_and_decodes_to_the_whole_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let results = fleet(20_000);
        let expected = openmetrics_to_text(&oracle(&results, MetricsMode::Full));
        let state = state(&results, MetricsMode::Full);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let raw = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = Shutdown::new();
            tokio::spawn(crate::exporter::serve(
                listener,
                state,
                None,
                crate::listen::Limits::new(),
                shutdown.clone(),
            ));
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
            );
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            tcp.read_to_end(&mut raw).await.unwrap();
            shutdown.trigger();
            raw
        });
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
        assert!(head.contains("\r\nvary: accept-encoding"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        let body = gunzip(&dechunk(&raw[split + 4..]));
        assert!(
            body == expected.as_bytes(),
            "the body differs from the whole encoding"
        );
    }
}
