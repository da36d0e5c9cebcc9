//! Bench mode: many connections echoing as fast as they can, every byte verified, latency in
//! an HDR histogram.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use udsecho_proto::Frame;

use crate::error::{ClientError, preview};
use crate::session::{self, io};
use crate::target::Target;

/// What `bench` is told to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Connections open at once.
    pub connections: usize,
    /// How long to measure.
    pub duration: Duration,
    /// Payload bytes per message.
    pub size: usize,
    /// Frames instead of raw bytes.
    pub framed: bool,
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
    /// `raw` or `framed`.
    pub mode: &'static str,
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
    let socket = target.to_string();
    let pipeline = options.pipeline.max(1);

    // Connect everything first (a bounded number at a time, so the server's backlog keeps
    // up), so that the measured window holds only echo traffic.
    let connect_slots = Arc::new(Semaphore::new(256));
    let mut connecting = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let target = target.clone();
        let slots = connect_slots.clone();
        let timeout = options.timeout;
        connecting.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            target.connect(timeout).await
        }));
    }
    let mut streams = Vec::with_capacity(options.connections);
    for task in connecting {
        let stream = task
            .await
            .map_err(|e| io(&socket, "connecting", std::io::Error::other(e)))??;
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
            socket: socket.clone(),
            payload,
            deadline,
            timeout: options.timeout,
            done: done.clone(),
            failed: failed.clone(),
            latencies: latencies.clone(),
        };
        let framed = options.framed;
        workers.push(tokio::spawn(async move {
            match (framed, pipeline) {
                (false, 1) => worker.raw_ping_pong(stream).await,
                (false, depth) => worker.raw_pipelined(stream, depth).await,
                (true, depth) => worker.framed(stream, depth).await,
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
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(io(&socket, "benchmark task", std::io::Error::other(e)));
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

/// One connection's share of the benchmark.
struct Worker {
    socket: String,
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

    fn mismatch(&self, index: u64, echo: &[u8]) -> ClientError {
        self.failed.store(true, Ordering::Relaxed);
        ClientError::Mismatch {
            socket: self.socket.clone(),
            index,
            sent: preview(&self.payload),
            received: preview(echo),
        }
    }

    fn fail(&self, what: &'static str, e: std::io::Error) -> ClientError {
        self.failed.store(true, Ordering::Relaxed);
        session::transport(&self.socket, what, e, || ClientError::ClosedEarly {
            socket: self.socket.clone(),
            detail: "in the middle of the benchmark".to_owned(),
        })
    }

    async fn within<T>(&self, fut: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no echo within --timeout",
                ))
            })
    }

    async fn raw_ping_pong(self, mut stream: UnixStream) -> Result<(), ClientError> {
        let mut hist = Latencies::new(self.latencies.clone());
        let mut echo = vec![0u8; self.payload.len()];
        let mut n = 0;
        while self.running() {
            let sent_at = Instant::now();
            self.within(stream.write_all(&self.payload))
                .await
                .map_err(|e| self.fail("sending", e))?;
            self.within(stream.read_exact(&mut echo))
                .await
                .map_err(|e| self.fail("receiving", e))?;
            hist.record(sent_at.elapsed());
            n += 1;
            if echo[..] != self.payload[..] {
                return Err(self.mismatch(n, &echo));
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        hist.flush();
        Ok(())
    }

    async fn raw_pipelined(self, stream: UnixStream, depth: usize) -> Result<(), ClientError> {
        let (mut rd, mut wr) = stream.into_split();
        let credits = Arc::new(Semaphore::new(depth));
        let in_flight = Arc::new(Mutex::new(VecDeque::with_capacity(depth)));
        let writer = {
            let credits = credits.clone();
            let in_flight = in_flight.clone();
            let payload = self.payload.clone();
            let deadline = self.deadline;
            let failed = self.failed.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                    let Ok(credit) = credits.acquire().await else {
                        break;
                    };
                    credit.forget();
                    in_flight
                        .lock()
                        .expect("never poisoned")
                        .push_back(Instant::now());
                    wr.write_all(&payload).await?;
                    sent += 1;
                }
                wr.shutdown().await?;
                Ok::<u64, std::io::Error>(sent)
            })
        };
        let mut hist = Latencies::new(self.latencies.clone());
        let mut echo = vec![0u8; self.payload.len()];
        let mut n = 0;
        loop {
            match self.within(rd.read_exact(&mut echo)).await {
                Ok(_) => {}
                // The writer half-closed after its last message; the count check below
                // tells whether every echo came in.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(self.fail("receiving", e)),
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
            .map_err(|e| io(&self.socket, "sending", std::io::Error::other(e)))?
            .map_err(|e| self.fail("sending", e))?;
        if sent != n {
            return Err(ClientError::ClosedEarly {
                socket: self.socket.clone(),
                detail: format!("{sent} messages sent, {n} echoed"),
            });
        }
        hist.flush();
        Ok(())
    }

    async fn framed(self, stream: UnixStream, depth: usize) -> Result<(), ClientError> {
        let framed = session::open(stream, &self.socket).await?;
        let (mut sink, mut frames) = framed.split();
        let mut hist = Latencies::new(self.latencies.clone());
        let mut in_flight = VecDeque::with_capacity(depth);
        let mut n = 0;
        loop {
            // Top up to `depth` frames in flight, in one write.
            let mut queued = false;
            while in_flight.len() < depth && self.running() {
                sink.feed(Frame::Data(self.payload.clone()))
                    .await
                    .map_err(|e| session::protocol(&self.socket, e))?;
                in_flight.push_back(Instant::now());
                queued = true;
            }
            if queued {
                sink.flush()
                    .await
                    .map_err(|e| session::protocol(&self.socket, e))?;
            }
            if in_flight.is_empty() {
                break;
            }
            let frame = tokio::time::timeout(self.timeout, frames.next())
                .await
                .map_err(|_| {
                    self.fail(
                        "receiving",
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no echo within --timeout",
                        ),
                    )
                })?;
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
                Some(Ok(other)) => return Err(session::unexpected(&self.socket, other)),
                Some(Err(e)) => return Err(session::protocol(&self.socket, e)),
                None => {
                    return Err(self.fail("receiving", std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        let _ = sink
            .send(Frame::Goodbye(udsecho_proto::Goodbye::new(
                udsecho_proto::GoodbyeReason::Done,
            )))
            .await;
        hist.flush();
        Ok(())
    }
}

/// Whether a progress bar makes sense: only when a person watches stdout.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
