//! The proxy's recording: every event of every proxied connection (open, each read's bytes
//! with their descriptors, EOF, errors, close), written by one thread to the files asked for
//! (`--record FILE.jsonl`, `--pcap FILE.pcapng`; the formats are docs/proxy.md's).
//!
//! Nothing recorded is lost: connections hand their events to the writer through a bounded
//! channel and wait for room when it is full, so a proxy that records runs at the speed of
//! the disk rather than drop an event. The channel's bound is also what bounds the memory
//! the recording takes ([`QUEUED`] events of at most one read each).
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the [`Recorder`] handle, the [`Event`]s, the writer thread |
//! | `jsonl.rs` | one JSON object a line |
//! | `pcapng.rs` | packets for Wireshark: each connection a synthetic TCP stream or UDP flow |
//! | `frames.rs` | udsecho frames found in a framed session's reads |
//! | `file.rs` | opening the files: a FIFO waited for, one file never given to two formats |
//! | `buffers.rs` | the copies of reads waiting for the writer, in reused buffers |

mod buffers;
mod file;
pub(crate) mod frames;
mod jsonl;
mod pcapng;

use std::fmt;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::frames::FrameNote;
use crate::config::SocketType;
use crate::descriptors::Identity;

/// Events waiting for the writer before connections have to wait for it.
const QUEUED: usize = 1024;

/// How long the writer sleeps when it finds the queue empty, while events keep coming.
const NAP: Duration = Duration::from_millis(1);

/// Naps in a row with nothing new before the writer flushes and parks until woken.
const NAPS_BEFORE_PARKING: u32 = 20;

/// While events keep coming, the files are flushed at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Each file's write buffer: small events go to the kernel together, in writes this large; an
/// event this large or larger (a 64 KiB read is an 87 KB line) is one write of its own, not
/// copied into the buffer first.
const BUFFER: usize = 64 * 1024;

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the client (the peer that connected to us) to the upstream.
    ToUpstream,
    /// From the upstream back to the client.
    ToClient,
}

impl Dir {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dir::ToUpstream => "to_upstream",
            Dir::ToClient => "to_client",
        }
    }
}

/// Who connected, from `SO_PEERCRED` when the connection was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// 0: unknown (the peer is in a pid namespace the proxy cannot see).
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `/proc/PID/comm`, if the process is still there to ask.
    pub(crate) command: Option<String>,
}

impl Credentials {
    /// The credentials of the peer of `fd`, if the kernel gives them (through
    /// `udsecho-unix`, which keeps a pid of 0 — a peer in another pid namespace — as 0 here).
    pub(crate) fn of(fd: impl std::os::fd::AsFd) -> Option<Credentials> {
        let cred = udsecho_unix::credentials::of_peer(&fd).ok()?;
        let pid = cred.pid.get().unwrap_or(0);
        let command = (pid != 0)
            .then(|| std::fs::read(format!("/proc/{pid}/comm")).ok())
            .flatten()
            .map(|comm| String::from_utf8_lossy(comm.trim_ascii_end()).into_owned());
        Some(Credentials {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            command,
        })
    }
}

/// Something that happened on a proxied connection.
#[derive(Debug)]
pub(crate) struct Event {
    /// When it happened (the recording's `t` counts from the recorder's start).
    pub(crate) at: Instant,
    /// The connection, as the server's logs number it.
    pub(crate) conn: u64,
    pub(crate) what: What,
}

/// What happened.
#[derive(Debug)]
pub(crate) enum What {
    /// A client connected and the proxy reached the upstream (or tried: an `Error` and a
    /// `Close` follow at once when it could not).
    Open {
        peer: Option<Credentials>,
        /// The listening socket, as the logs name it.
        socket: Arc<str>,
        /// The upstream, as `--upstream` gave it.
        upstream: Arc<str>,
    },
    /// One read: its bytes and the descriptors that came with them, as they were forwarded.
    Data {
        dir: Dir,
        bytes: Bytes,
        fds: Vec<Identity>,
        /// udsecho frames this read completed (a framed session only).
        frames: Vec<FrameNote>,
    },
    /// The sender of `dir` shut down its side; the proxy passed the half-close on.
    Eof { dir: Dir },
    /// Something failed: the upstream could not be reached, a side reset, descriptors were
    /// truncated. `dir`: the direction it happened in, if one.
    Error { dir: Option<Dir>, message: String },
    /// The connection is over; what went each way in all.
    Close { to_upstream: u64, to_client: u64 },
}

/// Why the recording could not start.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot {op}: {source}")]
pub struct RecordError {
    /// The file asked for.
    pub path: PathBuf,
    /// What failed.
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

/// Where events go: a handle connections clone; the writer thread behind it stops at
/// [`Recorder::finish`].
#[derive(Clone)]
pub struct Recorder {
    /// Connections wait here for room.
    queue: mpsc::Sender<Message>,
    /// Where the copies of reads are made.
    buffers: buffers::Buffers,
    /// Cancelled when the shutdown is forced: nobody waits for the writer any more.
    abandoned: CancellationToken,
    /// Events not recorded because the recording was abandoned.
    lost: Arc<AtomicU64>,
    /// Resolves when the writer thread has written and flushed everything: awaited once, by
    /// `finish` (not a join: a writer blocked in `write` for good must not hold the runtime's
    /// shutdown, as a blocking task would).
    written: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    /// The files, for messages.
    files: Arc<str>,
}

impl fmt::Display for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.files)
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

enum Message {
    Event(Event),
    /// Everything sent before this is written: flush and stop.
    Stop,
}

/// One output format.
trait Sink: Send {
    /// Writes one event; `t` is its time in seconds since the recording began.
    fn write(&mut self, t: f64, event: &Event) -> io::Result<()>;
    /// Pushes what is buffered to the file (the queue ran dry, or the end).
    fn flush(&mut self) -> io::Result<()>;
    /// Which file, for messages.
    fn name(&self) -> &Path;
}

impl Recorder {
    /// Creates (or truncates) the files asked for — `jsonl` (`--record`), `pcap` (`--pcap`,
    /// packets for connections of `kind`) — and starts the writer thread. A FIFO nobody reads
    /// yet is waited for: race this against the shutdown.
    pub async fn start(
        jsonl: Option<&Path>,
        pcap: Option<&Path>,
        kind: SocketType,
    ) -> Result<Recorder, RecordError> {
        let failed = |path: &Path, op, source| RecordError {
            path: path.to_owned(),
            op,
            source,
        };
        let shared = |path: &Path| {
            let why = "--record writes this file: give each its own";
            failed(path, "start the capture", io::Error::other(why))
        };
        // Both there already: refused before either is truncated (or a FIFO waited for).
        if let (Some(jsonl), Some(pcap)) = (jsonl, pcap)
            && file::same(jsonl, pcap)
        {
            return Err(shared(pcap));
        }
        let create = async |path: &Path| {
            let opened = file::create(path)
                .await
                .map_err(|e| failed(path, "create the recording", e))?;
            Ok::<_, RecordError>(BufWriter::with_capacity(BUFFER, opened))
        };
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let mut recorded = None;
        if let Some(path) = jsonl {
            let out = create(path).await?;
            recorded = file::identity_of(out.get_ref());
            sinks.push(Box::new(jsonl::Jsonl::new(out, path)));
        }
        let wall = SystemTime::now();
        if let Some(path) = pcap {
            if file::names(path, recorded) {
                return Err(shared(path));
            }
            let sink = pcapng::Pcapng::new(create(path).await?, path, kind, wall)
                .map_err(|e| failed(path, "start the capture", e))?;
            sinks.push(Box::new(sink));
        }
        let files: Vec<String> = sinks
            .iter()
            .map(|s| s.name().display().to_string())
            .collect();
        let files = Arc::from(files.join(" and "));
        let (queue, events) = mpsc::channel(QUEUED);
        let start = Instant::now();
        let (done, written) = oneshot::channel();
        std::thread::Builder::new()
            .name("udsecho-record".to_owned())
            .spawn(move || {
                write_all(events, sinks, start);
                let _ = done.send(());
            })
            .map_err(|e| failed(Path::new(&*files), "start the recording thread", e))?;
        Ok(Recorder {
            queue,
            buffers: buffers::Buffers::default(),
            abandoned: CancellationToken::new(),
            lost: Arc::new(AtomicU64::new(0)),
            written: Arc::new(Mutex::new(Some(written))),
            files,
        })
    }

    /// Records `what` for connection `conn`, now; waits while the writer is behind, until the
    /// recording is [abandoned](Recorder::abandon).
    pub(crate) async fn record(&self, conn: u64, what: What) {
        let event = Event {
            at: Instant::now(),
            conn,
            what,
        };
        // The queue is closed only after `finish`, when no connection is left.
        tokio::select! {
            biased;
            _ = self.queue.send(Message::Event(event)) => {}
            () = self.abandoned.cancelled() => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A copy of a read's `bytes` for an event (the read's buffer is the connection's).
    pub(crate) fn copy(&self, bytes: &[u8]) -> Bytes {
        self.buffers.copy(bytes)
    }

    /// A buffer of `len` bytes to read into and then [`lend`](Recorder::lend), instead of
    /// having the read copied.
    pub(crate) fn buffer(&self, len: usize) -> Vec<u8> {
        self.buffers.buffer(len)
    }

    /// The first `len` bytes of `buf` (from [`buffer`](Recorder::buffer)), shared between the
    /// event and whoever forwards them; `buf` is left empty (a short read is copied instead,
    /// and `buf` kept).
    pub(crate) fn lend(&self, buf: &mut Vec<u8>, len: usize) -> Bytes {
        self.buffers.lend(buf, len)
    }

    /// Stops waiting for the writer: for a forced shutdown (a second signal, SIGQUIT, the
    /// drain's timeout), so a file that takes no more writes (a FIFO nobody reads, a stalled
    /// network file system) cannot hold the proxy. What was not yet queued is not recorded.
    pub(crate) fn abandon(&self) {
        self.abandoned.cancel();
    }

    /// Writes out everything recorded and stops the writer; for the end of the server, once
    /// every connection has ended. Waits until the files are flushed, or until the recording
    /// is abandoned (then says so).
    pub(crate) async fn finish(&self) {
        let stopped = async {
            let _ = self.queue.send(Message::Stop).await;
            let written = self.written.lock().ok().and_then(|mut w| w.take());
            if let Some(written) = written {
                let _ = written.await;
            }
        };
        let waiting = self.queue.max_capacity() - self.queue.capacity();
        if waiting > 0 {
            tracing::info!(
                "writing the recording to {}: {waiting} events queued (a second signal \
                 abandons them)",
                self.files
            );
        }
        tokio::select! {
            biased;
            () = stopped => {
                tracing::debug!("recording written to {}", self.files);
                self.warn_lost();
            }
            () = self.abandoned.cancelled() => {
                tracing::warn!(
                    "recording to {}: abandoned at the forced shutdown; events still queued \
                     are not written, and the file may end in part of a line",
                    self.files
                );
                self.warn_lost();
            }
        }
    }

    fn warn_lost(&self) {
        let lost = self.lost.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                "recording to {}: {lost} events not recorded (the shutdown was forced while \
                 their connections waited for the writer)",
                self.files
            );
        }
    }
}

/// The writer thread: events in order. A file that fails (disk full) is reported once and
/// dropped; the others, and the proxy, go on.
///
/// Waking a parked thread is a system call for whoever sends, and a busy proxy would pay it
/// for nearly every event (the writer keeps up, finds the queue empty, parks): so while events
/// keep coming the writer naps [`NAP`] when the queue is empty, with no waker for senders to
/// call, and parks only after [`NAPS_BEFORE_PARKING`] naps with nothing new. It flushes when
/// it parks and at least every [`FLUSH_EVERY`] in between, so `tail -f` is at most that far
/// behind.
fn write_all(mut events: mpsc::Receiver<Message>, mut sinks: Vec<Box<dyn Sink>>, start: Instant) {
    let fail = |sink: &dyn Sink, e: io::Error| {
        tracing::warn!(
            "recording to {}: {e}; nothing more is written there",
            sink.name().display()
        );
    };
    let flush = |sinks: &mut Vec<Box<dyn Sink>>| {
        sinks.retain_mut(|sink| match sink.flush() {
            Ok(()) => true,
            Err(e) => {
                fail(sink.as_ref(), e);
                false
            }
        });
    };
    let mut naps = 0;
    let mut flushed = Instant::now();
    loop {
        let message = match events.try_recv() {
            Ok(message) => message,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) if naps < NAPS_BEFORE_PARKING => {
                if flushed.elapsed() >= FLUSH_EVERY {
                    flush(&mut sinks);
                    flushed = Instant::now();
                }
                naps += 1;
                std::thread::sleep(NAP);
                continue;
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                flush(&mut sinks);
                flushed = Instant::now();
                match events.blocking_recv() {
                    Some(message) => message,
                    None => break,
                }
            }
        };
        naps = 0;
        let Message::Event(event) = message else {
            break;
        };
        let t = event.at.saturating_duration_since(start).as_micros() as f64 / 1e6;
        sinks.retain_mut(|sink| match sink.write(t, &event) {
            Ok(()) => true,
            Err(e) => {
                fail(sink.as_ref(), e);
                false
            }
        });
    }
    flush(&mut sinks);
}
