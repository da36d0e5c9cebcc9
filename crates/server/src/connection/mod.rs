//! One peer, from accept to close: a [`Handler`] reads chunks, lets the connection's protocol
//! (detecting, raw or framed) say what goes back, and writes it, until the peer leaves, breaks
//! a rule, goes idle, or the server shuts down.
//!
//! Invariants:
//! - **Nothing lost**: every byte read is either echoed (raw, Data frames, bytes held while
//!   detecting) or is a control frame the protocol consumes; at shutdown the bytes already
//!   queued in the socket are read and echoed before the close.
//! - **Memory does not depend on the peer**: reads land in a per-thread scratch buffer and are
//!   echoed from it at once; a connection keeps only what the socket would not take yet (at
//!   most one read), a partial header or detection prefix (inline, 8 bytes), or one control
//!   frame being collected (at most [`udsecho_proto::MAX_CONTROL_FRAME`]). An idle connection, and one
//!   stalled in a header or in the middle of a 4 GiB frame, holds no buffer at all.
//! - **Backpressure**: while an echo is pending nothing more is read, so a peer that does not
//!   read stops being read from.

mod detect;
pub(crate) mod echo_log;
mod framed;
mod raw;
pub(crate) mod seqpacket;

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use udsecho_proto::{ErrorCode, GoodbyeReason, ProtoError};

use self::detect::{Detector, Verdict};
use self::framed::Session;
use crate::config::Mode;
use crate::shutdown::Shutdown;

/// Sends never raise SIGPIPE (a peer that left is an error, not a signal) and never block.
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL.union(SendFlags::DONTWAIT);

/// Size of the per-thread scratch buffer reads land in.
const SCRATCH_LEN: usize = 64 * 1024;
/// Reads per wake-up before giving the other connections on this thread a turn.
const READS_PER_TURN: usize = 16;
/// After our last frame (Error, Goodbye): how long, and how much, late input is read and
/// dropped before closing, so the peer is not reset before it reads that frame.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// What a connection needs from the server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) max_frame: u32,
    pub(crate) idle_timeout: Option<Duration>,
    /// Our name in the Hello answer.
    pub(crate) agent: &'static str,
}

/// How a connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed (or said Goodbye) and got everything back.
    PeerDone,
    /// The server shut down and the connection was drained.
    Drained,
    /// Nothing moved for `--idle-timeout`.
    Idle,
    /// The peer broke the protocol and got an Error frame.
    Breach,
    /// The shutdown timeout passed (or a second signal came) before it was drained.
    Cut,
}

/// What to send back for one chunk of input: `before`, then the chunk's bytes in `echo`; and
/// whether the session ends with this chunk (the bytes after the ending frame are dropped).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) before: Before,
    pub(crate) echo: Range<usize>,
    pub(crate) ending: Option<Ending>,
}

/// Bytes that go out before a chunk's echo.
#[derive(Debug, Default)]
pub(crate) enum Before {
    #[default]
    Nothing,
    /// Bytes held from earlier chunks (a detection prefix, a split header).
    Held { bytes: [u8; 8], len: u8 },
    /// A reply the protocol made (our Hello).
    Reply(Bytes),
}

impl Before {
    /// Holds up to 8 bytes inline.
    pub(crate) fn held(held: &[u8]) -> Before {
        let mut bytes = [0; 8];
        bytes[..held.len()].copy_from_slice(held);
        Before::Held {
            bytes,
            len: held.len() as u8,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Before::Nothing => &[],
            Before::Held { bytes, len } => &bytes[..usize::from(*len)],
            Before::Reply(bytes) => bytes,
        }
    }
}

/// Why a framed session ends before its input does.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The peer said Goodbye: answer it, then close.
    PeerGoodbye,
    /// The peer sent an Error: it is leaving; so do we, without a word.
    PeerError,
    /// The peer broke a rule: Error frame, then close. Boxed: rare, and it would make every
    /// `Plan` and the connection's future larger.
    Breach(Box<Breach>),
}

/// A broken protocol rule, as the Error frame will state it.
#[derive(Debug)]
pub(crate) struct Breach {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl From<ProtoError> for Breach {
    fn from(e: ProtoError) -> Self {
        Breach {
            code: e.code().unwrap_or(ErrorCode::Malformed),
            message: e.to_string(),
        }
    }
}

/// How the connection's bytes are read.
#[derive(Debug)]
enum Protocol {
    /// Auto or forced-framed mode, before the first bytes decide.
    Detecting(Detector),
    Raw,
    Framed(Session),
}

impl Protocol {
    /// Bytes that must still be read before the output is at a frame boundary: nonzero only
    /// inside a Data frame whose first bytes have already been echoed.
    fn bytes_to_boundary(&self) -> usize {
        match self {
            Protocol::Framed(session) => session.bytes_to_boundary(),
            _ => 0,
        }
    }
}

/// How much of the peer's input is left: one type for every protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Read as long as the peer sends.
    Open,
    /// Shutdown began: read at most `left` more bytes, what was queued at that moment, so a
    /// peer that keeps writing cannot stretch the drain.
    Draining { left: usize },
    /// Drained, but inside a Data frame already partly echoed: read exactly its `left`
    /// remaining bytes (waiting for them if need be; `--shutdown-timeout` bounds that), so the
    /// Goodbye lands on a frame boundary.
    Finishing { left: usize },
    /// The peer half-closed.
    Eof,
    /// Everything due at shutdown has been read.
    Drained,
}

impl Input {
    /// How many bytes the next read may take.
    fn cap(self, scratch: usize) -> usize {
        match self {
            Input::Open => scratch,
            Input::Draining { left } | Input::Finishing { left } => left.min(scratch),
            Input::Eof | Input::Drained => 0,
        }
    }

    fn consumed(&mut self, n: usize) {
        if let Input::Draining { left } | Input::Finishing { left } = self {
            *left -= n;
        }
    }
}

/// What a burst of reads ended on.
enum Burst {
    /// The socket is empty (or the input is over): wait.
    Empty,
    /// The socket would not take the whole echo; it is in `pending`.
    Backlogged,
    /// Read for a full turn: let other connections run, then go on.
    Busy,
    /// The protocol ended the session.
    Ended(Ending),
}

/// How the reading phase ended.
enum Exit {
    /// Nothing more to say: the connection is over (cut by a forced shutdown).
    Done(End),
    /// Say the last word, if any, and close.
    Finish(Finish),
}

/// The ways a connection ends that take some writing (and so some waiting).
enum Finish {
    /// The peer half-closed and everything it sent was echoed.
    PeerDone,
    /// Everything due at shutdown was echoed.
    Drained,
    /// Nothing moved for `--idle-timeout`.
    Idle,
    /// The protocol ended the session.
    Ending(Ending),
}

/// Owns one connection: its socket, its slot, what the server said, and the state of its echo.
///
/// The reading phase is a hand-written poll loop ([`Handler::poll_serve`]) rather than an
/// `async fn`: then the task holds the handler and nothing else, which is what makes an idle
/// connection cheap. The endings (last frame, linger) are `async` and boxed when they start.
#[derive(Debug)]
pub(crate) struct Handler {
    /// The peer's socket. The handler owns it: dropping the handler closes the connection.
    /// It is registered for readability only, so the peer reading our echo (which frees our
    /// send buffer) wakes nobody; writability is added for the rest of the connection's life
    /// the first time an echo backs up (`watching_writes`).
    /// Always present: taken out only for the moment `watch_writes` re-registers it.
    stream: Option<AsyncFd<OwnedFd>>,
    /// Whether `stream` is registered for writability too.
    watching_writes: bool,
    /// The server's settings, shared read-only by every connection.
    settings: Arc<Settings>,
    /// The server's shutdown, to watch its next stage.
    shutdown: Shutdown,
    /// Resolves at the next shutdown stage that concerns this connection: the graceful one
    /// while input is open (begin the drain), then the forced one (stop at once). One
    /// registered waiter for the connection's life, not one per read.
    stage: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The idle and detection-pause deadline, made on first need. It may fire early (it is
    /// not moved on every byte); the real deadline is checked when it does.
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's slot under `--max-connections`, given back when the handler drops.
    _slot: OwnedSemaphorePermit,
    /// How bytes are read: detecting, raw or framed, with that protocol's state.
    protocol: Protocol,
    /// How much input is left.
    input: Input,
    /// Echo bytes the socket would not take yet. While not empty, nothing is read. Empty and
    /// unallocated while the peer keeps up.
    pending: BytesMut,
    /// The last sign of life for `--idle-timeout`: any byte (raw), a complete frame (framed:
    /// a frame trickled one byte at a time does not count), a byte of a backlog written out.
    active_at: Instant,
}

/// Serves one peer to the end, holding `slot` meanwhile, and logs how it ended.
pub(crate) fn serve(
    socket: OwnedFd,
    settings: Arc<Settings>,
    shutdown: &Shutdown,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + use<> {
    let protocol = match settings.mode {
        Mode::Raw => Protocol::Raw,
        Mode::Auto | Mode::Framed => Protocol::Detecting(Detector::new()),
    };
    let mut handler = match crate::listener::register_for(socket, Interest::READABLE) {
        Ok(stream) => Some(Handler {
            stream: Some(stream),
            watching_writes: false,
            settings,
            shutdown: shutdown.clone(),
            stage: Box::pin(shutdown.begun_owned()),
            timer: None,
            _slot: slot,
            protocol,
            input: Input::Open,
            pending: BytesMut::new(),
            active_at: Instant::now(),
        }),
        Err(e) => {
            tracing::debug!("closed: registering the socket: {e}");
            None
        }
    };
    // The handler is captured and used in place, never rebound, so the task's future holds
    // one copy of it.
    async move {
        if let Some(handler) = &mut handler {
            handler.run().await;
        }
    }
}

/// What the deadline says, when there is nothing else to do.
enum Due {
    /// Not yet: the timer is armed; wait.
    NotYet,
    /// Something changed (the detection pause decided "raw"): go round again.
    Again,
    /// The connection ends this way.
    Exit(Exit),
}

impl Handler {
    /// Serves the connection to the end and logs how it ended.
    async fn run(&mut self) {
        tracing::debug!("open");
        let exit = std::future::poll_fn(|cx| self.poll_serve(cx)).await;
        let result = match exit {
            Ok(Exit::Done(end)) => Ok(end),
            Ok(Exit::Finish(how)) => Box::pin(self.finish(how)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(End::Breach) => tracing::debug!("closed after a protocol error"),
            Ok(End::Cut) => tracing::debug!("cut: shutdown timeout"),
            Ok(end) => tracing::debug!(?end, "closed"),
            Err(e) => tracing::debug!("closed: {e}"),
        }
    }

    /// The reading phase: flush, wait, read and echo, until an exit.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Exit>> {
        loop {
            if self.stage.as_mut().poll(cx).is_ready() {
                if self.shutdown.is_forced() {
                    return Poll::Ready(Ok(Exit::Done(End::Cut)));
                }
                if self.input == Input::Open {
                    self.begin_drain();
                }
                self.stage.set(self.shutdown.forced_owned());
                continue;
            }
            if !self.pending.is_empty() && self.poll_flush(cx)?.is_pending() {
                match self.poll_deadline(cx)? {
                    Due::NotYet => return Poll::Pending,
                    Due::Again => continue,
                    Due::Exit(exit) => return Poll::Ready(Ok(exit)),
                }
            }
            match self.input {
                Input::Eof => return Poll::Ready(Ok(Exit::Finish(Finish::PeerDone))),
                Input::Drained => return Poll::Ready(Ok(Exit::Finish(Finish::Drained))),
                Input::Open | Input::Finishing { .. } => {
                    let ready = match self.socket().poll_read_ready(cx) {
                        Poll::Ready(Ok(mut ready)) => {
                            // Readiness is cleared by the read that finds the queue empty.
                            ready.retain_ready();
                            true
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => false,
                    };
                    if !ready {
                        match self.poll_deadline(cx)? {
                            Due::NotYet => return Poll::Pending,
                            Due::Again => continue,
                            Due::Exit(exit) => return Poll::Ready(Ok(exit)),
                        }
                    }
                }
                // Draining reads what is already queued: no waiting.
                Input::Draining { .. } => {}
            }
            match self.read_burst()? {
                Burst::Empty | Burst::Backlogged => {}
                Burst::Busy => {
                    // Give the other connections on this thread a turn, then come back.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Burst::Ended(ending) => {
                    return Poll::Ready(Ok(Exit::Finish(Finish::Ending(ending))));
                }
            }
        }
    }

    /// Checks the idle and detection-pause deadline; if it is still ahead, arms the timer.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<Due> {
        loop {
            let Some(deadline) = self.deadline() else {
                return Ok(Due::NotYet);
            };
            if Instant::now() >= deadline {
                if !self.prefix_expired() {
                    // Bytes held while detecting are the peer's data: they go out first
                    // (an idle timeout shorter than the detection pause must not eat them).
                    if let Some(ending) = self.decide_raw()? {
                        return Ok(Due::Exit(Exit::Finish(Finish::Ending(ending))));
                    }
                    return Ok(Due::Exit(Exit::Finish(Finish::Idle)));
                }
                // A strict prefix of the preamble, then silence: raw after all.
                return Ok(match self.decide_raw()? {
                    Some(ending) => Due::Exit(Exit::Finish(Finish::Ending(ending))),
                    None => Due::Again,
                });
            }
            // The timer may be behind the deadline (activity moved it): it fires early and is
            // moved then, rather than on every byte.
            let timer = match &mut self.timer {
                Some(timer) => {
                    if timer.is_elapsed() || timer.deadline() > deadline {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => self
                    .timer
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(Due::NotYet);
            }
        }
    }

    /// A sign of life for `--idle-timeout`; without one, nothing reads the clock on the echo
    /// path.
    fn alive(&mut self) {
        if self.settings.idle_timeout.is_some() {
            self.active_at = Instant::now();
        }
    }

    /// The earliest of the detection pause and the idle deadline.
    fn deadline(&self) -> Option<Instant> {
        let idle = self.settings.idle_timeout.map(|t| self.active_at + t);
        let pause = match &self.protocol {
            Protocol::Detecting(d) if self.settings.mode == Mode::Auto => d.deadline,
            _ => None,
        };
        match (idle, pause) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn prefix_expired(&self) -> bool {
        match &self.protocol {
            Protocol::Detecting(d) if self.settings.mode == Mode::Auto => {
                d.deadline.is_some_and(|at| at <= Instant::now())
            }
            _ => false,
        }
    }

    /// Shutdown began: read what is queued in the socket now, and no more.
    fn begin_drain(&mut self) {
        let queued = rustix::io::ioctl_fionread(self.socket().get_ref())
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            // If the kernel will not say, read until the socket is empty.
            .unwrap_or(usize::MAX);
        self.input = Input::Draining { left: queued };
    }

    /// The drain budget is spent (or the socket is empty): finish the frame in progress, if
    /// any, then stop reading.
    fn drain_spent(&mut self) {
        self.input = match self.protocol.bytes_to_boundary() {
            0 => Input::Drained,
            left => Input::Finishing { left },
        };
    }

    /// Reads and echoes until the socket is empty, an echo backs up, the session ends, or a
    /// turn's worth is done. All of it happens without yielding, so the thread's scratch
    /// buffer is never held across an `.await`.
    fn read_burst(&mut self) -> io::Result<Burst> {
        SCRATCH.with_borrow_mut(|scratch| {
            for _ in 0..READS_PER_TURN {
                let cap = self.input.cap(scratch.len());
                if cap == 0 {
                    if matches!(self.input, Input::Draining { .. } | Input::Finishing { .. }) {
                        self.drain_spent();
                    }
                    return Ok(Burst::Empty);
                }
                let mut recv = |fd: &OwnedFd| {
                    rustix::net::recv(fd, &mut scratch[..cap], RecvFlags::DONTWAIT)
                        .map(|(n, _)| n)
                        .map_err(io::Error::from)
                };
                // While draining, read whatever the runtime believes: what FIONREAD counted is
                // in the socket even if its readiness event has not been seen yet. Otherwise
                // through `try_io`, which clears readiness on EAGAIN without losing an event
                // that arrives meanwhile.
                let received = if matches!(self.input, Input::Draining { .. }) {
                    recv(self.socket().get_ref())
                } else {
                    self.socket().try_io(Interest::READABLE, recv)
                };
                let n = match received {
                    Ok(0) => {
                        self.input = Input::Eof;
                        // A detection prefix still held is raw data (forced framed: a breach).
                        return self
                            .decide_raw()
                            .map(|e| e.map_or(Burst::Empty, Burst::Ended));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if matches!(self.input, Input::Draining { .. }) {
                            // Everything queued at the signal has been read.
                            self.drain_spent();
                        }
                        return Ok(Burst::Empty);
                    }
                    Err(e) => return Err(e),
                };
                self.input.consumed(n);
                let chunk = &scratch[..n];
                let plan = self.plan(chunk);
                self.send(chunk, &plan)?;
                if let Some(ending) = plan.ending {
                    return Ok(Burst::Ended(ending));
                }
                // A short read does not prove the queue empty (a read stops at a chunk that
                // carries descriptors, or at an out-of-band mark), so readiness is cleared
                // only by the read that returns EAGAIN.
                if !self.pending.is_empty() {
                    return Ok(Burst::Backlogged);
                }
            }
            Ok(Burst::Busy)
        })
    }

    /// What goes back for `chunk`, from the protocol (which may change on the way: detection
    /// hands over to raw or framed within the chunk that decides).
    fn plan(&mut self, chunk: &[u8]) -> Plan {
        let logging = echo_log::enabled();
        match &mut self.protocol {
            Protocol::Raw => {
                self.alive();
                if logging {
                    echo_log::log(&[chunk]);
                }
                raw::feed(chunk.len(), Before::Nothing)
            }
            Protocol::Framed(session) => {
                let mut payloads = logging.then(Vec::new);
                let fed = session.feed(chunk, payloads.as_mut());
                if fed.frames > 0 {
                    self.alive();
                }
                for range in payloads.unwrap_or_default() {
                    echo_log::log(&[&chunk[range]]);
                }
                fed.plan
            }
            Protocol::Detecting(detector) => {
                let verdict = detector.feed(chunk);
                self.alive();
                match verdict {
                    Verdict::Undecided => Plan::default(),
                    Verdict::Raw { held } => match self.settings.mode {
                        Mode::Framed => Plan {
                            ending: Some(Ending::Breach(Box::new(not_framed()))),
                            ..Plan::default()
                        },
                        _ => {
                            self.protocol = Protocol::Raw;
                            if logging {
                                echo_log::log(&[held.as_slice(), chunk]);
                            }
                            raw::feed(chunk.len(), held)
                        }
                    },
                    Verdict::Framed { at } => {
                        let session = Session::new(self.settings.max_frame, self.settings.agent);
                        self.protocol = Protocol::Framed(session);
                        let mut plan = self.plan(&chunk[at..]);
                        plan.echo = plan.echo.start + at..plan.echo.end + at;
                        plan
                    }
                }
            }
        }
    }

    /// Detection gives up (pause, EOF, shutdown) with bytes held: they are raw data, echoed
    /// now (forced framed mode: a breach). With nothing held there is nothing to decide.
    fn decide_raw(&mut self) -> io::Result<Option<Ending>> {
        let Protocol::Detecting(detector) = &self.protocol else {
            return Ok(None);
        };
        let held = detector.give_up();
        if held.as_slice().is_empty() {
            return Ok(None);
        }
        if self.settings.mode == Mode::Framed {
            return Ok(Some(Ending::Breach(Box::new(not_framed()))));
        }
        if echo_log::enabled() {
            echo_log::log(&[held.as_slice()]);
        }
        self.protocol = Protocol::Raw;
        self.send(&[], &raw::feed(0, held))?;
        Ok(None)
    }

    /// Writes what `plan` says for `chunk` as far as the socket takes it; the rest goes to
    /// `pending`. Called only while `pending` is empty.
    fn send(&mut self, chunk: &[u8], plan: &Plan) -> io::Result<()> {
        let before = plan.before.as_slice();
        let echo = &chunk[plan.echo.clone()];
        if before.is_empty() && echo.is_empty() {
            return Ok(());
        }
        // Straight to the kernel, no readiness needed: EAGAIN only means "keep the rest".
        let fd = self.socket().get_ref();
        let sent = if before.is_empty() {
            rustix::net::send(fd, echo, SEND_FLAGS)
        } else {
            rustix::net::sendmsg(
                fd,
                &[IoSlice::new(before), IoSlice::new(echo)],
                &mut rustix::net::SendAncillaryBuffer::default(),
                SEND_FLAGS,
            )
        };
        let written = match sent {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) => 0,
            Err(e) => return Err(e.into()),
        };
        if written < before.len() {
            self.pending.extend_from_slice(&before[written..]);
            self.pending.extend_from_slice(echo);
        } else if written - before.len() < echo.len() {
            self.pending
                .extend_from_slice(&echo[written - before.len()..]);
        }
        Ok(())
    }

    /// Writes `pending` out as far as the socket takes it; every byte written is a sign of
    /// life. Ready once everything is out.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.watching_writes {
            self.watch_writes()?;
        }
        while !self.pending.is_empty() {
            let mut ready = ready!(self.socket().poll_write_ready(cx))?;
            let pending = &self.pending;
            match ready.try_io(|fd| {
                rustix::net::send(fd.get_ref(), pending, SEND_FLAGS).map_err(io::Error::from)
            }) {
                Ok(written) => {
                    self.pending.advance(written?);
                    self.alive();
                }
                Err(_would_block) => {}
            }
        }
        // Give back the memory a slow reader made us hold.
        self.pending = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Registers the socket for writability too: an echo has backed up, so this peer reads
    /// slower than it writes, and will likely do so again. The same descriptor is registered
    /// again (no `dup`: it must work when descriptors have run out).
    fn watch_writes(&mut self) -> io::Result<()> {
        let fd = self
            .stream
            .take()
            .expect("the socket is present outside watch_writes")
            .into_inner();
        self.stream = Some(crate::listener::register_for(
            fd,
            Interest::READABLE | Interest::WRITABLE,
        )?);
        self.watching_writes = true;
        Ok(())
    }

    /// The registered socket.
    fn socket(&self) -> &AsyncFd<OwnedFd> {
        self.stream
            .as_ref()
            .expect("the socket is present outside watch_writes")
    }

    /// Writes `pending` out, waiting at most `--idle-timeout` (if set): `false` if the peer
    /// would not take it in time.
    async fn flush(&mut self) -> io::Result<bool> {
        let limit = self.settings.idle_timeout;
        let flush = std::future::poll_fn(|cx| self.poll_flush(cx));
        match limit {
            Some(limit) => match tokio::time::timeout(limit, flush).await {
                Ok(flushed) => flushed.map(|()| true),
                Err(_elapsed) => Ok(false),
            },
            None => flush.await.map(|()| true),
        }
    }

    /// The last words, cut short if a forced shutdown comes first.
    async fn finish(&mut self, how: Finish) -> io::Result<End> {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.forced() => Ok(End::Cut),
            end = self.last_words(how) => end,
        }
    }

    async fn last_words(&mut self, how: Finish) -> io::Result<End> {
        match how {
            Finish::PeerDone => self.peer_done().await,
            Finish::Drained => self.drained().await,
            Finish::Idle => self.idle().await,
            Finish::Ending(ending) => self.end(ending).await,
        }
    }

    /// The peer half-closed: everything it sent has been answered; close.
    async fn peer_done(&mut self) -> io::Result<End> {
        if self.protocol.bytes_to_boundary() > 0 {
            tracing::debug!("the peer closed in the middle of a Data frame");
        }
        self.close().await;
        Ok(End::PeerDone)
    }

    /// Everything due at shutdown has been echoed: close (raw), or say Goodbye (framed).
    async fn drained(&mut self) -> io::Result<End> {
        // A detection prefix still held is the last of a raw peer's input.
        if let Some(ending) = self.decide_raw()? {
            return Box::pin(self.end(ending)).await;
        }
        if !self.flush().await? {
            return Box::pin(self.idle()).await;
        }
        if let Protocol::Framed(_) = self.protocol {
            framed::goodbye(GoodbyeReason::Shutdown, &mut self.pending);
            self.last_word().await?;
        } else {
            self.close().await;
        }
        Ok(End::Drained)
    }

    /// Nothing moved for `--idle-timeout`. A framed peer gets Goodbye unless that would land
    /// inside a frame.
    async fn idle(&mut self) -> io::Result<End> {
        match &self.protocol {
            // With an echo still pending (the peer stopped reading) or a Data frame half
            // echoed, a Goodbye would land inside a frame: just close.
            Protocol::Framed(session)
                if session.bytes_to_boundary() == 0 && self.pending.is_empty() =>
            {
                framed::goodbye(GoodbyeReason::IdleTimeout, &mut self.pending);
                self.last_word().await?;
            }
            _ => {
                // What was read is still owed: a moment to write it, if the peer reads.
                if !self.pending.is_empty() {
                    let limit = LINGER;
                    let _ =
                        tokio::time::timeout(limit, std::future::poll_fn(|cx| self.poll_flush(cx)))
                            .await;
                }
                self.close().await;
            }
        }
        Ok(End::Idle)
    }

    /// The protocol ended the session.
    async fn end(&mut self, ending: Ending) -> io::Result<End> {
        if !self.flush().await? {
            return Box::pin(self.idle()).await;
        }
        match ending {
            Ending::PeerGoodbye => {
                framed::goodbye(GoodbyeReason::Done, &mut self.pending);
                self.last_word().await?;
                Ok(End::PeerDone)
            }
            Ending::PeerError => {
                self.close().await;
                Ok(End::PeerDone)
            }
            Ending::Breach(breach) => {
                tracing::debug!(code = ?breach.code, "protocol error: {}", breach.message);
                framed::error_frame(&breach, &mut self.pending);
                self.last_word().await?;
                Ok(End::Breach)
            }
        }
    }

    /// Sends our last frame (in `pending`), shuts down our side, and lingers.
    async fn last_word(&mut self) -> io::Result<()> {
        if !self.flush().await? {
            return Ok(());
        }
        self.close().await;
        self.linger().await;
        Ok(())
    }

    /// Shuts down the write side: the peer sees EOF after the last byte we sent. The peer may
    /// be gone already; it has everything we could give it.
    async fn close(&mut self) {
        let _ = rustix::net::shutdown(self.socket().get_ref(), rustix::net::Shutdown::Write);
    }

    /// After our last frame: read and drop what the peer still sends, for a moment. Closing a
    /// Unix socket with unread input resets the peer, which could hide that frame from a
    /// client still writing.
    async fn linger(&mut self) {
        let discard = async {
            let mut total = 0;
            while total < LINGER_BYTES {
                let Ok(mut ready) = self.socket().readable().await else {
                    return;
                };
                let read = SCRATCH.with_borrow_mut(|scratch| {
                    ready.try_io(|fd| {
                        rustix::net::recv(fd.get_ref(), &mut scratch[..], RecvFlags::DONTWAIT)
                            .map(|(n, _)| n)
                            .map_err(io::Error::from)
                    })
                });
                let read = match read {
                    Ok(read) => read,
                    Err(_would_block) => continue,
                };
                match read {
                    Ok(0) => return,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }
}

/// A forced-framed server's answer to a connection without the preamble.
fn not_framed() -> Breach {
    Breach {
        code: ErrorCode::UnexpectedFrame,
        message: "this server speaks framed mode only and the connection did not open with the \
                  udsecho preamble"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    /// What an idle connection costs is mostly its task: the handler and the future around it.
    /// (The rest: tokio's per-socket `ScheduledIo`, 256 bytes, and the boxed shutdown waiter.)
    #[tokio::test]
    async fn a_connection_future_is_little_more_than_its_handler() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = OwnedFd::from(a);
        let settings = Arc::new(Settings {
            mode: Mode::Auto,
            max_frame: 1024,
            idle_timeout: None,
            agent: "t",
        });
        let slot = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = serve(a, settings, &Shutdown::new(), slot);
        let (task, handler) = (std::mem::size_of_val(&task), std::mem::size_of::<Handler>());
        assert!(handler <= 224, "the handler is {handler} bytes");
        assert!(
            task <= handler + 64,
            "the task's future is {task} bytes for a {handler}-byte handler"
        );
    }

    use tokio::io::AsyncReadExt;
    use udsecho_proto::{Frame, FrameCodec, Hello, PREAMBLE};

    fn settings(mode: Mode, idle_timeout: Option<Duration>) -> Arc<Settings> {
        Arc::new(Settings {
            mode,
            max_frame: 1 << 20,
            idle_timeout,
            agent: "udsecho/test",
        })
    }

    /// A handler on one end of a socket pair, running as a task; the other end is the peer's.
    fn start(settings: Arc<Settings>) -> (UnixStream, tokio::task::JoinHandle<()>, Shutdown) {
        let (server, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let (server, peer) = (OwnedFd::from(server), UnixStream::from_std(peer).unwrap());
        let shutdown = Shutdown::new();
        let slot = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = tokio::spawn(serve(server, settings, &shutdown, slot));
        (peer, task, shutdown)
    }

    async fn read_all(peer: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        peer.read_to_end(&mut out).await.unwrap();
        out
    }

    fn framed_hello() -> Vec<u8> {
        let mut out = BytesMut::from(&PREAMBLE[..]);
        Frame::Hello(Hello::new(1 << 20, "t"))
            .encode(&mut out, u32::MAX)
            .unwrap();
        out.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        use tokio_util::codec::Decoder;
        let mut buf = BytesMut::from(bytes);
        let mut codec = FrameCodec::with_max_frame(u32::MAX);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[tokio::test(start_paused = true)]
    async fn a_preamble_prefix_then_the_pause_is_raw_and_comes_back() {
        let (mut peer, _task, _shutdown) = start(settings(Mode::Auto, None));
        peer.write_all(b"\0UDS").await.unwrap();
        let started = Instant::now();
        let mut echo = [0u8; 4];
        peer.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"\0UDS");
        assert_eq!(started.elapsed(), udsecho_proto::PREFIX_PAUSE);
        peer.write_all(b" and more").await.unwrap();
        peer.shutdown().await.unwrap();
        assert_eq!(read_all(&mut peer).await, b" and more");
    }

    /// An idle timeout shorter than the detection pause still echoes what detection held.
    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_during_detection_still_echoes_the_held_bytes() {
        let (mut peer, task, _shutdown) =
            start(settings(Mode::Auto, Some(Duration::from_millis(100))));
        peer.write_all(b"\0U").await.unwrap();
        assert_eq!(read_all(&mut peer).await, b"\0U");
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_framed_peer_gets_goodbye_idle_timeout() {
        let (mut peer, _task, _shutdown) =
            start(settings(Mode::Auto, Some(Duration::from_secs(30))));
        peer.write_all(&framed_hello()).await.unwrap();
        let started = Instant::now();
        let frames = decode_all(&read_all(&mut peer).await);
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert!(matches!(frames[0], Frame::Hello(_)), "{frames:?}");
        assert!(
            matches!(&frames[1], Frame::Goodbye(g) if g.reason == GoodbyeReason::IdleTimeout),
            "{frames:?}"
        );
    }

    /// A frame trickled a byte at a time is not a sign of life: only complete frames are.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_frame_does_not_hold_off_the_idle_timeout() {
        let idle = Duration::from_secs(1);
        let (mut peer, task, _shutdown) = start(settings(Mode::Auto, Some(idle)));
        peer.write_all(&framed_hello()).await.unwrap();
        let mut hello = [0u8; 64];
        let _ = peer.read(&mut hello).await.unwrap();
        // A Data frame of 100 payload bytes, then one byte every 200 ms.
        peer.write_all(&[0, 0, 0, 101, 1]).await.unwrap();
        let started = Instant::now();
        while !task.is_finished() && started.elapsed() < Duration::from_secs(10) {
            let _ = peer.write_all(b"x").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(task.is_finished(), "still open after 10 s of trickle");
        assert!(
            started.elapsed() <= idle + Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }

    /// Raw mode has no frames: a person typing one key at a time is alive.
    #[tokio::test(start_paused = true)]
    async fn raw_typing_keeps_a_connection_alive() {
        let (mut peer, task, _shutdown) = start(settings(Mode::Raw, Some(Duration::from_secs(1))));
        for _ in 0..20 {
            peer.write_all(b"k").await.unwrap();
            let mut echo = [0u8; 1];
            peer.read_exact(&mut echo).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            read_all(&mut peer).await.is_empty(),
            "closed after a second of silence"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_mid_frame_finishes_that_frame_then_says_goodbye() {
        let (mut peer, task, shutdown) = start(settings(Mode::Auto, None));
        let mut input = framed_hello();
        input.extend_from_slice(&[0, 0, 0, 11, 1]);
        input.extend_from_slice(b"half");
        peer.write_all(&input).await.unwrap();
        // Let the server read (and echo) the first half, then begin the shutdown.
        tokio::time::sleep(Duration::from_millis(10)).await;
        shutdown.begin();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!task.is_finished(), "it waits for the rest of the frame");
        peer.write_all(b" frame").await.unwrap();
        let frames = decode_all(&read_all(&mut peer).await);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[1], Frame::Data(Bytes::from_static(b"half frame")));
        assert!(matches!(&frames[2], Frame::Goodbye(g) if g.reason == GoodbyeReason::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forced_shutdown_cuts_a_peer_that_never_reads() {
        let (mut peer, task, shutdown) = start(settings(Mode::Raw, None));
        let block = vec![7u8; 64 * 1024];
        // Fill both socket buffers: the server is stuck writing an echo nobody reads.
        while tokio::time::timeout(Duration::from_millis(50), peer.write_all(&block))
            .await
            .is_ok()
        {}
        shutdown.begin();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!task.is_finished(), "the drain waits for the reader");
        shutdown.force();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("cut at once")
            .unwrap();
    }
}
