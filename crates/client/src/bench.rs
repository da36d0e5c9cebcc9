//! Bench mode: many connections echoing as fast as they can, every byte verified, latency in
//! an HDR histogram. Over seqpacket and datagram each echo must come back as one message
//! equal to the one sent.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use udsecho_proto::Frame;

use crate::error::{ClientError, ErrorKind, preview};
use crate::message::{MessageSocket, Received};
use crate::session;
use crate::target::{SocketType, Target};

/// What `bench` is told to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Connections open at once (at least 1).
    pub connections: usize,
    /// How long to measure.
    pub duration: Duration,
    /// Payload bytes per message.
    pub size: usize,
    /// Frames instead of raw bytes (stream only).
    pub framed: bool,
    /// Stream, seqpacket or datagram.
    pub socket_type: SocketType,
    /// Messages in flight per connection (1 = ping-pong).
    pub pipeline: usize,
    /// Limit for connecting and for any single echo.
    pub timeout: Duration,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

/// The result, as printed and as `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `raw` or `framed` (seqpacket and datagram are raw).
    pub mode: &'static str,
    /// `stream`, `seqpacket` or `datagram`.
    pub socket_type: &'static str,
    /// Connections used.
    pub connections: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Measured time, in seconds.
    pub seconds: f64,
    /// Messages sent and echoed intact.
    pub round_trips: u64,
    /// Round trips per second.
    pub round_trips_per_sec: f64,
    /// Echoed payload, in megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// Latency from send to echo, in microseconds.
    pub latency_us: Latency,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest seen.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// A connection's latency samples, batched into the shared histogram. One histogram per
/// connection would cost ~300 KiB each (10,000 connections: 3 GiB); a batch costs 1 KiB.
struct Latencies {
    batch: Vec<u64>,
    shared: Arc<Mutex<Histogram<u64>>>,
}

impl Latencies {
    const BATCH: usize = 128;

    fn new(shared: Arc<Mutex<Histogram<u64>>>) -> Self {
        Latencies {
            batch: Vec::with_capacity(Self::BATCH),
            shared,
        }
    }

    fn record(&mut self, latency: Duration) {
        self.batch.push(nanos(latency));
        if self.batch.len() == Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut hist = self.shared.lock().expect("never poisoned");
        for sample in self.batch.drain(..) {
            // Out-of-range samples (over 100 s) are dropped, not fatal.
            let _ = hist.record(sample);
        }
    }
}

impl Drop for Latencies {
    fn drop(&mut self) {
        self.flush();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Runs the benchmark against `target`.
pub async fn run(target: &Target, options: &BenchOptions) -> Result<BenchReport, ClientError> {
    let pipeline = options.pipeline.max(1);
    let task_failed = |e: tokio::task::JoinError| {
        ErrorKind::Io {
            doing: "running the benchmark",
            source: std::io::Error::other(e),
        }
        .at(target)
    };

    // Connect everything first (a bounded number at a time, so the server's backlog keeps
    // up), so that the measured window holds only echo traffic.
    let connect_slots = Arc::new(Semaphore::new(256));
    let mut connecting = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let target = target.clone();
        let slots = connect_slots.clone();
        let timeout = options.timeout;
        let kind = options.socket_type;
        connecting.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            match kind {
                SocketType::Stream => target.connect(timeout).await.map(Connection::Stream),
                _ => target
                    .connect_messages(kind, timeout)
                    .await
                    .map(Connection::Messages),
            }
        }));
    }
    let mut streams = Vec::with_capacity(options.connections);
    for task in connecting {
        let stream = task.await.map_err(task_failed)??;
        streams.push(stream);
    }

    let latencies = Arc::new(Mutex::new(histogram()));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + options.duration;
    let progress = options.progress.then(|| progress_bar(options.duration));
    let mut workers = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        let payload = Bytes::from(udsecho_payload(options.size, i as u64));
        let worker = Worker {
            payload,
            deadline,
            timeout: options.timeout,
            done: done.clone(),
            failed: failed.clone(),
            latencies: latencies.clone(),
        };
        let framed = options.framed;
        workers.push(tokio::spawn(async move {
            match (stream, framed, pipeline) {
                (Connection::Stream(stream), false, 1) => worker.raw_ping_pong(stream).await,
                (Connection::Stream(stream), false, depth) => {
                    worker.raw_pipelined(stream, depth).await
                }
                (Connection::Stream(stream), true, depth) => worker.framed(stream, depth).await,
                (Connection::Messages(socket), _, depth) => worker.messages(socket, depth).await,
            }
        }));
    }

    let ticker = progress.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let elapsed = start.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                let rate = done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.0} round trips/s"));
            }
        })
    });

    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.at(target));
            }
            Err(e) => {
                first_error.get_or_insert(task_failed(e));
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let merged = histogram_of(&latencies);
    let round_trips = merged.len();
    let us = |q: f64| merged.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchReport {
        mode: if options.framed { "framed" } else { "raw" },
        socket_type: options.socket_type.name(),
        connections: options.connections,
        pipeline,
        size: options.size,
        seconds,
        round_trips,
        round_trips_per_sec: round_trips as f64 / seconds,
        mb_per_sec: (round_trips as f64 * options.size as f64) / seconds / 1e6,
        latency_us: Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: merged.max() as f64 / 1000.0,
            mean: merged.mean() / 1000.0,
        },
    })
}

fn histogram_of(shared: &Mutex<Histogram<u64>>) -> Histogram<u64> {
    shared.lock().expect("never poisoned").clone()
}

fn progress_bar(duration: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{duration} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A payload whose bytes differ per connection, so a crossed echo is caught.
fn udsecho_payload(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// One benchmark connection.
enum Connection {
    Stream(UnixStream),
    /// Seqpacket, or a connected datagram socket.
    Messages(MessageSocket),
}

/// One connection's share of the benchmark.
struct Worker {
    payload: Bytes,
    deadline: Instant,
    timeout: Duration,
    /// Round trips done by every worker, for the progress bar.
    done: Arc<AtomicU64>,
    /// Set by the first worker that fails, so the others stop early.
    failed: Arc<AtomicBool>,
    /// Where every worker's latency samples end up.
    latencies: Arc<Mutex<Histogram<u64>>>,
}

impl Worker {
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.failed.load(Ordering::Relaxed)
    }

    /// Marks the benchmark failed (the other workers stop) and returns `kind`.
    fn fail(&self, kind: ErrorKind) -> ErrorKind {
        self.failed.store(true, Ordering::Relaxed);
        kind
    }

    /// An echo that differs from the payload; an Error frame instead means a server in
    /// framed-only mode.
    fn mismatch(&self, index: u64, echo: &[u8]) -> ErrorKind {
        self.fail(if session::is_framed_refusal(echo) {
            ErrorKind::FramedOnlyServer
        } else {
            ErrorKind::Mismatch {
                index,
                sent: preview(&self.payload),
                received: preview(echo),
            }
        })
    }

    /// A transport failure while `doing`.
    fn broken(&self, doing: &'static str, e: std::io::Error) -> ErrorKind {
        self.fail(session::transport(doing, e, || {
            ErrorKind::closed_early("in the middle of the benchmark")
        }))
    }

    fn late(&self, waiting: &str) -> ErrorKind {
        self.fail(ErrorKind::timed_out(waiting, self.timeout))
    }

    /// Reads one echo into `echo`; `Ok(false)` when the server closed before its first
    /// byte. A short echo cut off by a close is checked for an Error frame (a framed-only
    /// server) before it counts as the server hanging up.
    async fn read_echo(
        &self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
        echo: &mut [u8],
        index: u64,
    ) -> Result<bool, ErrorKind> {
        let mut filled = 0;
        while filled < echo.len() {
            let read = tokio::time::timeout(self.timeout, stream.read(&mut echo[filled..]))
                .await
                .map_err(|_| self.late(&format!("waiting for the echo of message {index}")))?;
            match read {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(n) if n > 0 => filled += n,
                _ if session::is_framed_refusal(&echo[..filled]) => {
                    return Err(self.fail(ErrorKind::FramedOnlyServer));
                }
                Ok(_) => {
                    return Err(self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
                }
                Err(e) => return Err(self.broken("receiving", e)),
            }
        }
        Ok(true)
    }

    async fn raw_ping_pong(self, mut stream: UnixStream) -> Result<(), ErrorKind> {
        let mut hist = Latencies::new(self.latencies.clone());
        let mut echo = vec![0u8; self.payload.len()];
        let mut n = 0;
        while self.running() {
            n += 1;
            let sent_at = Instant::now();
            tokio::time::timeout(self.timeout, stream.write_all(&self.payload))
                .await
                .map_err(|_| self.late(&format!("sending message {n}")))?
                .map_err(|e| self.broken("sending", e))?;
            if !self.read_echo(&mut stream, &mut echo, n).await? {
                return Err(self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
            }
            hist.record(sent_at.elapsed());
            if echo[..] != self.payload[..] {
                return Err(self.mismatch(n, &echo));
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        hist.flush();
        Ok(())
    }

    async fn raw_pipelined(self, stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
        let (mut rd, mut wr) = stream.into_split();
        let credits = Arc::new(Semaphore::new(depth));
        let in_flight = Arc::new(Mutex::new(VecDeque::with_capacity(depth)));
        let writer = {
            let credits = credits.clone();
            let in_flight = in_flight.clone();
            let payload = self.payload.clone();
            let deadline = self.deadline;
            let failed = self.failed.clone();
            let timeout = self.timeout;
            tokio::spawn(async move {
                let mut sent = 0u64;
                let write = async {
                    while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                        let Ok(credit) = credits.acquire().await else {
                            break;
                        };
                        credit.forget();
                        in_flight
                            .lock()
                            .expect("never poisoned")
                            .push_back(Instant::now());
                        tokio::time::timeout(timeout, wr.write_all(&payload))
                            .await
                            .map_err(|_| std::io::ErrorKind::TimedOut)??;
                        sent += 1;
                    }
                    wr.shutdown().await
                };
                write.await.map(|()| sent)
            })
        };
        let mut hist = Latencies::new(self.latencies.clone());
        let mut echo = vec![0u8; self.payload.len()];
        let mut n = 0;
        loop {
            // The writer half-closes after its last message, so the server's EOF after the
            // last echo is the normal end; the count check below tells whether every echo
            // came in.
            if !self.read_echo(&mut rd, &mut echo, n + 1).await? {
                break;
            }
            let sent_at = in_flight.lock().expect("never poisoned").pop_front();
            if let Some(at) = sent_at {
                hist.record(at.elapsed());
            }
            n += 1;
            if echo[..] != self.payload[..] {
                return Err(self.mismatch(n, &echo));
            }
            self.done.fetch_add(1, Ordering::Relaxed);
            credits.add_permits(1);
        }
        let sent = writer
            .await
            .map_err(|e| {
                self.fail(ErrorKind::Io {
                    doing: "sending",
                    source: std::io::Error::other(e),
                })
            })?
            .map_err(|e| self.broken("sending", e))?;
        if sent != n {
            return Err(self.fail(ErrorKind::closed_early(format!(
                "{sent} messages sent, {n} echoed"
            ))));
        }
        hist.flush();
        Ok(())
    }

    async fn framed(self, stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
        let mut server = session::open(stream, self.timeout)
            .await
            .map_err(|e| self.fail(e))?;
        let mut hist = Latencies::new(self.latencies.clone());
        let mut in_flight = VecDeque::with_capacity(depth);
        let mut n = 0;
        loop {
            // Top up to `depth` frames in flight, in one write.
            let mut queued = false;
            while in_flight.len() < depth && self.running() {
                server
                    .feed(Frame::Data(self.payload.clone()))
                    .await
                    .map_err(|e| self.fail(session::protocol(e)))?;
                in_flight.push_back(Instant::now());
                queued = true;
            }
            if queued {
                tokio::time::timeout(self.timeout, server.flush())
                    .await
                    .map_err(|_| self.late(&format!("sending message {}", n + 1)))?
                    .map_err(|e| self.fail(session::protocol(e)))?;
            }
            if in_flight.is_empty() {
                break;
            }
            let frame = tokio::time::timeout(self.timeout, server.next())
                .await
                .map_err(|_| self.late(&format!("waiting for the echo of message {}", n + 1)))?;
            match frame {
                Some(Ok(Frame::Data(echo))) => {
                    if let Some(at) = in_flight.pop_front() {
                        hist.record(at.elapsed());
                    }
                    n += 1;
                    if echo != self.payload {
                        return Err(self.mismatch(n, &echo));
                    }
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(other)) => return Err(self.fail(session::unexpected(other))),
                Some(Err(e)) => return Err(self.fail(session::protocol(e))),
                None => {
                    return Err(self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        let bye = Frame::Goodbye(udsecho_proto::Goodbye::new(
            udsecho_proto::GoodbyeReason::Done,
        ));
        let _ = tokio::time::timeout(self.timeout, server.send(bye)).await;
        hist.flush();
        Ok(())
    }
}

impl Worker {
    /// Seqpacket or datagram: up to `depth` messages in flight, each reply one message
    /// that must equal the payload, each due within `timeout` of its sending. Sending and
    /// receiving are raced, so a full queue on one side never stalls the other.
    async fn messages(self, socket: MessageSocket, depth: usize) -> Result<(), ErrorKind> {
        let mut hist = Latencies::new(self.latencies.clone());
        let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(depth);
        // Room for a longer reply, so that it shows as a mismatch rather than truncated.
        let mut echo = vec![0u8; self.payload.len() + 1];
        let mut n = 0u64;
        let gone = |n: u64| {
            socket.gone(format!(
                "in the middle of the benchmark, after {n} round trips"
            ))
        };
        loop {
            let sending = in_flight.len() < depth && self.running();
            if !sending && in_flight.is_empty() {
                break;
            }
            let due = in_flight.front().map(|&at| at + self.timeout);
            let late = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                sent = socket.send(&self.payload), if sending => {
                    sent.map_err(|e| {
                        self.fail(socket.send_failure(self.payload.len(), e, || gone(n)))
                    })?;
                    in_flight.push_back(Instant::now());
                }
                got = socket.recv(&mut echo) => {
                    let len = match got {
                        Ok(Received::Message(len)) => len,
                        Ok(Received::Truncated { len }) => len,
                        Ok(Received::Closed) => return Err(self.fail(gone(n))),
                        Err(e) => return Err(self.fail(socket.failure("receiving", e, || gone(n)))),
                    };
                    let Some(sent_at) = in_flight.pop_front() else {
                        // A reply to nothing we sent.
                        return Err(self.mismatch(n + 1, &echo[..len.min(echo.len())]));
                    };
                    hist.record(sent_at.elapsed());
                    n += 1;
                    if len != self.payload.len() || echo[..len] != self.payload[..] {
                        return Err(self.mismatch(n, &echo[..len.min(echo.len())]));
                    }
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                () = late => {
                    let lossy = match socket.kind() {
                        SocketType::Datagram => " (datagrams can be dropped)",
                        _ => "",
                    };
                    return Err(self.late(&format!("waiting for the echo of message {}{lossy}", n + 1)));
                }
            }
        }
        let _ = socket.shutdown_write();
        hist.flush();
        Ok(())
    }
}

/// Whether a progress bar makes sense: only when a person watches stdout.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
