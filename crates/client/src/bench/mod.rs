//! Bench mode: many connections echoing as fast as they can, every byte verified, latency in
//! an HDR histogram. Over seqpacket and datagram each echo must come back as one message
//! equal to the one sent.
//!
//! The connections are spread over `--threads` threads the way the server spreads its own
//! (thread-per-core): each thread (`shard`) is a current-thread tokio runtime with its own
//! epoll set, connects its share (connection `i` on thread `i % N`) and drives it: `worker`,
//! one task per connection, or `pingpong`, one epoll loop for raw ping-pong. Each connection
//! gets a `Load` (what to send, until when, its thread's `tally`); the raw loops check what
//! comes back with `Echoes`. Nothing crosses threads on the data path: each
//! thread counts its round trips and records their latencies in a histogram of its own,
//! merged here once every thread is done. Between threads there is only the start signal,
//! a flag that the first failure or Ctrl-C sets (so they all stop), and each thread's count
//! for the progress bar and the `--interval` lines, published every 100 ms.

mod blocking;
mod echoes;
mod load;
mod pingpong;
mod shard;
mod tally;
mod worker;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::error::{ClientError, ErrorKind};
use crate::target::{Target, Transport};

/// What `bench` is told to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Connections open at once (at least 1).
    pub connections: usize,
    /// Threads to spread them over, each with its own runtime (at least 1; never more than
    /// `connections` are used). [`default_threads`] is what the command line uses.
    pub threads: usize,
    /// How long to measure.
    pub duration: Duration,
    /// Payload bytes per message.
    pub size: usize,
    /// A raw or framed stream, seqpacket or datagram.
    pub transport: Transport,
    /// Messages in flight per connection (1 = ping-pong).
    pub pipeline: usize,
    /// Limit for connecting and for any single echo.
    pub timeout: Duration,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Each connection a client that blocks in `read` for each echo, on a thread of its own
    /// (raw stream ping-pong; `threads` should equal `connections`).
    pub blocking: bool,
    /// How long the client polls its sockets after the last event before it sleeps (raw
    /// stream ping-pong; zero: it sleeps at once).
    pub busy_poll: Duration,
    /// Print the rates of each interval this long on stderr (`--interval`; at least
    /// [`COUNTED_EVERY`]).
    pub interval: Option<Duration>,
}

/// How often each thread publishes its count: the resolution of the progress bar and of
/// the `--interval` lines.
pub const COUNTED_EVERY: Duration = Duration::from_millis(100);

/// The result, as printed and as `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `raw` or `framed` (seqpacket and datagram are raw).
    pub mode: &'static str,
    /// `stream`, `seqpacket` or `datagram`.
    pub socket_type: &'static str,
    /// Connections used.
    pub connections: usize,
    /// Threads the connections were spread over.
    pub threads: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Whether each connection was a client blocking in `read` for each echo.
    pub blocking: bool,
    /// How long the client polled after its last event before sleeping, in µs (0: it did not).
    pub busy_poll_us: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// Measured time, in seconds.
    pub seconds: f64,
    /// Messages sent and echoed intact.
    pub round_trips: u64,
    /// Round trips per second.
    pub round_trips_per_sec: f64,
    /// Echoed payload (round trips × size), in megabytes (10^6) per second; as much again
    /// went to the server.
    pub mb_per_sec: f64,
    /// Whether the run was stopped early (Ctrl-C): the figures are for the time it ran.
    pub interrupted: bool,
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

/// How many threads `bench` uses when `--threads` is not given: every core the process was
/// given, or half the machine when it was given all of it — the rule the server uses for its
/// own threads ([`udsecho_unix::threads::default_threads`]).
///
/// A Unix socket's server is always on the same machine: a generator busy on every core
/// would take the cores the server under test needs (on 2 cores, one each). When the cores
/// were chosen (`taskset`, a cpuset), they were chosen for the generator: it uses them all.
pub fn default_threads() -> usize {
    udsecho_unix::threads::default_threads()
}

/// What every thread shares: whether to stop before the deadline.
#[derive(Debug)]
struct Shared {
    /// Set by the first thread whose connection fails, so that the others stop.
    failed: AtomicBool,
    /// Set when the run is stopped early (Ctrl-C): every thread stops and reports what it
    /// counted.
    stopped: AtomicBool,
}

impl Shared {
    /// Whether the threads go on (neither a failure nor a stop).
    fn going_on(&self) -> bool {
        !self.failed.load(Ordering::Relaxed) && !self.stopped.load(Ordering::Relaxed)
    }
}

/// Runs the benchmark against `target` until its duration has passed, or until `stop`
/// resolves (Ctrl-C): then every thread stops within [`COUNTED_EVERY`] and the report is of
/// what was measured so far ([`BenchReport::interrupted`]).
pub async fn run(
    target: &Target,
    options: &BenchOptions,
    stop: impl Future<Output = ()>,
) -> Result<BenchReport, ClientError> {
    let connections = options.connections.max(1);
    let threads = options.threads.clamp(1, connections);
    let pipeline = options.pipeline.max(1);
    let shared = Arc::new(Shared {
        failed: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
    });

    // Every thread connects its share first (a bounded number at a time, so the server's
    // backlog keeps up), so that the measured window holds only echo traffic.
    let mut shards = Vec::with_capacity(threads);
    for index in 0..threads {
        let plan = shard::Plan {
            index,
            threads,
            connections,
            pipeline,
            target: target.clone(),
            options: options.clone(),
            shared: shared.clone(),
        };
        shards.push(shard::spawn(plan)?);
    }
    let mut first_error = None;
    for shard in &mut shards {
        if let Err(e) = shard.connected().await {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        // Dropping the shards tells their threads to close their connections and end.
        return Err(e);
    }

    let start = Instant::now();
    let deadline = start + options.duration;
    for shard in &mut shards {
        shard.start(deadline);
    }
    let counts: Vec<Arc<AtomicU64>> = shards.iter().map(shard::Handle::progress).collect();
    let done = move || -> u64 { counts.iter().map(|c| c.load(Ordering::Relaxed)).sum() };
    let progress = options.progress.then(|| progress_bar(options.duration));
    let ticker = progress.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COUNTED_EVERY);
            loop {
                tick.tick().await;
                let elapsed = start.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                let rate = done() as f64 / elapsed.as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.0} round trips/s"));
            }
        })
    });
    let lines = options
        .interval
        .map(|every| tokio::spawn(interval_lines(every, start, options.size, done)));

    let collect = async {
        let mut merged = tally::histogram();
        let mut round_trips = 0;
        let mut first_error = None;
        for shard in shards {
            match shard.finished().await {
                Ok(tally) => {
                    round_trips += tally.round_trips;
                    // Same bounds everywhere, so adding cannot fail.
                    let _ = merged.add(&tally.latencies);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        (merged, round_trips, first_error)
    };
    tokio::pin!(collect, stop);
    let mut interrupted = false;
    let (merged, round_trips, first_error) = tokio::select! {
        collected = &mut collect => collected,
        () = &mut stop => {
            interrupted = true;
            shared.stopped.store(true, Ordering::Relaxed);
            collect.await
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    for task in [ticker, lines].into_iter().flatten() {
        task.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let us = |q: f64| merged.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchReport {
        mode: if options.transport.is_framed() {
            "framed"
        } else {
            "raw"
        },
        socket_type: options.transport.socket_type().name(),
        connections,
        threads,
        pipeline,
        blocking: options.blocking,
        busy_poll_us: u64::try_from(options.busy_poll.as_micros()).unwrap_or(u64::MAX),
        size: options.size,
        seconds,
        round_trips,
        round_trips_per_sec: round_trips as f64 / seconds,
        mb_per_sec: (round_trips as f64 * options.size as f64) / seconds / 1e6,
        interrupted,
        latency_us: Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: merged.max() as f64 / 1000.0,
            mean: merged.mean() / 1000.0,
        },
    })
}

/// A benchmark thread that ended without saying how (it cannot, short of a bug).
fn thread_lost(target: &Target) -> ClientError {
    ErrorKind::Io {
        doing: "running the benchmark",
        source: std::io::Error::other("a benchmark thread stopped unexpectedly"),
    }
    .at(target)
}

/// The progress bar: time elapsed of the duration asked for (`-d 4s`: `/4s`; indicatif's own
/// `{duration}` is an estimate from the rate of progress, which read `0s/5s` there).
fn progress_bar(duration: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    let template = format!(
        "{{spinner}} [{{bar:30}}] {{elapsed}}/{} {{msg}}",
        humantime::format_duration(duration)
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `--interval`: every `every`, one line on stderr with the round trips/s and MB/s of that
/// interval (from the counts the threads publish every [`COUNTED_EVERY`]). A stderr nobody
/// reads drops the lines.
async fn interval_lines(every: Duration, start: Instant, size: usize, done: impl Fn() -> u64) {
    let mut tick = tokio::time::interval_at(start + every, every);
    let (mut last_at, mut last_count) = (start, 0);
    for k in 1u32.. {
        let now = tick.tick().await;
        let count = done();
        let seconds = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let rate = (count - last_count) as f64 / seconds;
        let line = format!(
            "{}s: {rate:.0} round trips/s, {:.1} MB/s",
            seconds_text(every * k),
            rate * size as f64 / 1e6
        );
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        (last_at, last_count) = (now, count);
    }
}

/// `0.25`, `1`, `2.5`: seconds to the millisecond, without trailing zeros.
fn seconds_text(at: Duration) -> String {
    let text = format!("{:.3}", at.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Whether a progress bar makes sense: only when a person watches stdout.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
