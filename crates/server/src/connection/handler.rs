//! The [`Handler`]: one stream connection's loop. It reads chunks into the thread's scratch
//! buffer, asks the connection's protocol (detecting, raw or framed) for a [`Plan`], and writes
//! the echo straight from the scratch buffer; only what the socket will not take is kept
//! (`pending`), and nothing more is read until it is written. Each turn of the loop is a
//! [`Step`]; when the reading phase stops, [`Last`] says what is left to say, and [`endings`]
//! says it.

mod endings;

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::detect::{Detector, Verdict};
use super::framed::Session;
use super::plan::{Before, Breach, End, Ending, Plan};
use super::{SCRATCH, Settings, raw};
use crate::config::Mode;
use crate::descriptors::{self, Counted, MAX_PER_READ, Passed, Waiter};
use crate::echo_log;
use crate::shutdown::Shutdown;

/// Sends never raise SIGPIPE (a peer that left is an error, not a signal) and never block.
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL.union(SendFlags::DONTWAIT);

/// Reads per wake-up before giving the other connections on this thread a turn.
const READS_PER_TURN: usize = 16;

/// What a stream connection is registered for to read: readability, and the out-of-band
/// byte's priority readiness ([`Handler::may_stop_short`]).
const READS: Interest = Interest::READABLE.add(Interest::PRIORITY);

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
    Draining { left: u32 },
    /// Drained, but inside a Data frame already partly echoed: read exactly its `left`
    /// remaining bytes (waiting for them if need be; `--shutdown-timeout` bounds that), so the
    /// Goodbye lands on a frame boundary.
    Finishing { left: u32 },
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
            Input::Draining { left } | Input::Finishing { left } => {
                usize::try_from(left).unwrap_or(usize::MAX).min(scratch)
            }
            Input::Eof | Input::Drained => 0,
        }
    }

    fn consumed(&mut self, n: usize) {
        if let Input::Draining { left } | Input::Finishing { left } = self {
            // `n` is at most `cap`, which is at most `left`.
            *left -= u32::try_from(n).unwrap_or(*left);
        }
    }
}

/// Where the reading phase goes next: what every part of the loop answers.
enum Step {
    /// Nothing to do until a wake-up (readiness, the timer, the shutdown).
    Wait,
    /// Something changed (bytes read and echoed, a stage passed, detection decided): go round
    /// again at once.
    Again,
    /// A turn's worth of reads is done: let the other connections on this thread run first.
    Yield,
    /// The reading phase is over, this way.
    Stop(Last),
}

/// How the reading phase ended, and so what is left to say before the close.
#[derive(Debug)]
enum Last {
    /// A forced shutdown: nothing more, close now.
    Cut,
    /// The peer half-closed and everything it sent was echoed.
    PeerDone,
    /// Everything due at shutdown was echoed.
    Drained,
    /// Nothing moved for `--idle-timeout`.
    Idle,
    /// The protocol ended the session.
    Session(Ending),
}

/// A connection that passes descriptors: what it passed that has not gone back yet, and its
/// wait for room to take more. Allocated the first time the peer passes any.
#[derive(Debug, Default)]
struct Passing {
    /// Descriptors from the last read(s), held until the next bytes written carry them back:
    /// at most one message's worth ([`MAX_PER_READ`]), and no read happens while the echo
    /// that carries them is pending.
    held: Passed,
    /// Near the process's descriptor limit, this connection is not read until as many as it
    /// passed last fit again (other connections are read as ever).
    room: Waiter,
    /// How many descriptors the last read that brought any brought.
    last: usize,
}

/// No descriptors held.
static NOTHING_HELD: Passed = Passed::none();

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
    /// Descriptors the peer passed (none for most peers: no allocation until one comes).
    passing: Option<Box<Passing>>,
    /// The connection's share of the process's descriptors, counted while it lives.
    _counted: Counted,
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
    // An out-of-band byte is read in its place, so it is echoed like any other (without
    // this the kernel leaves it out of the stream and a plain read never sees it).
    if let Err(e) = rustix::net::sockopt::set_socket_oobinline(&socket, true) {
        tracing::debug!("SO_OOBINLINE: {e}");
    }
    // No credentials on stream reads: a connection inherits `SO_PASSCRED` from a listener
    // handed over with it (systemd's `PassCredentials=`), and credentials nobody reads would
    // take control-buffer room and split reads where the writer changes. Per connection, not
    // once on the listener: the flag is copied when the peer connects, so connections queued
    // before a change to the listener (the one that started a socket-activated server) keep it.
    if let Err(e) = rustix::net::sockopt::set_socket_passcred(&socket, false) {
        tracing::debug!("SO_PASSCRED: {e}");
    }
    let mut handler = match crate::registration::register_for(socket, READS) {
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
            passing: None,
            _counted: Counted::new(),
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

impl Handler {
    /// Serves the connection to the end, logs how it ended, and closes it.
    async fn run(&mut self) {
        tracing::debug!("open");
        let last = std::future::poll_fn(|cx| self.poll_serve(cx)).await;
        let result = match last {
            Ok(Last::Cut) => Ok(End::Cut),
            Ok(last) => Box::pin(self.finish(last)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(End::Breach) => tracing::debug!("closed after a protocol error"),
            Ok(End::Cut) => tracing::debug!("cut: shutdown timeout"),
            Ok(end) => tracing::debug!(?end, "closed"),
            Err(e) => tracing::debug!("closed: {e}"),
        }
        self.close_socket();
    }

    /// The reading phase: step until a step stops it.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Last>> {
        loop {
            match self.step(cx)? {
                Step::Wait => return Poll::Pending,
                Step::Again => {}
                Step::Yield => {
                    // Give the other connections on this thread a turn, then come back.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Stop(last) => return Poll::Ready(Ok(last)),
            }
        }
    }

    /// One step of the reading phase: follow the shutdown, flush, wait, read and echo.
    fn step(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        if self.stage.as_mut().poll(cx).is_ready() {
            if self.shutdown.is_forced() {
                return Ok(Step::Stop(Last::Cut));
            }
            if self.input == Input::Open {
                self.begin_drain();
            }
            self.stage.set(self.shutdown.forced_owned());
            return Ok(Step::Again);
        }
        if !self.pending.is_empty() && self.poll_flush(cx)?.is_pending() {
            return self.poll_deadline(cx);
        }
        match self.input {
            Input::Eof => return Ok(Step::Stop(Last::PeerDone)),
            Input::Drained => return Ok(Step::Stop(Last::Drained)),
            Input::Open | Input::Finishing { .. } => match self.socket().poll_read_ready(cx) {
                // Readiness is cleared by the read that finds the queue empty.
                Poll::Ready(ready) => ready?.retain_ready(),
                Poll::Pending => return self.poll_deadline(cx),
            },
            // Draining reads what is already queued: no waiting.
            Input::Draining { .. } => {}
        }
        // Not while draining: what was queued at the signal is read with the room there is.
        if let Some(passing) = &mut self.passing
            && self.input == Input::Open
            && passing.room.poll_room(cx, passing.last).is_pending()
        {
            return self.poll_deadline(cx);
        }
        self.read_burst()
    }

    /// Checks the idle and detection-pause deadline; if it is still ahead, arms the timer.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        loop {
            let Some(deadline) = self.deadline() else {
                return Ok(Step::Wait);
            };
            if Instant::now() >= deadline {
                if !self.prefix_expired() {
                    // Bytes held while detecting are the peer's data: they go out first
                    // (an idle timeout shorter than the detection pause must not eat them).
                    if let Some(ending) = self.decide_raw()? {
                        return Ok(Step::Stop(Last::Session(ending)));
                    }
                    return Ok(Step::Stop(Last::Idle));
                }
                // A strict prefix of the preamble, then silence: raw after all.
                return Ok(match self.decide_raw()? {
                    Some(ending) => Step::Stop(Last::Session(ending)),
                    None => Step::Again,
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
                return Ok(Step::Wait);
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
        self.input = Input::Draining {
            // u32: what a socket buffer holds; "unknown" (usize::MAX) reads up to 4 GiB, as
            // good as everything. Kept small: it is in every connection's handler.
            left: u32::try_from(super::queued(self.socket().get_ref())).unwrap_or(u32::MAX),
        };
    }

    /// The drain budget is spent (or the socket is empty): finish the frame in progress, if
    /// any, then stop reading.
    fn drain_spent(&mut self) {
        self.input = match self.protocol.bytes_to_boundary() {
            0 => Input::Drained,
            // A Data frame's length is a u32, so what is left of one is too.
            left => Input::Finishing {
                left: u32::try_from(left).unwrap_or(u32::MAX),
            },
        };
    }

    /// Reads and echoes until the socket is empty, an echo backs up, the session ends, or a
    /// turn's worth is done. All of it happens without yielding, so the thread's scratch
    /// buffer is never held across an `.await`.
    fn read_burst(&mut self) -> io::Result<Step> {
        SCRATCH.with_borrow_mut(|scratch| {
            for _ in 0..READS_PER_TURN {
                let cap = self.input.cap(scratch.len());
                if cap == 0 {
                    if matches!(self.input, Input::Draining { .. } | Input::Finishing { .. }) {
                        self.drain_spent();
                    }
                    return Ok(Step::Again);
                }
                let room = self.room();
                let held_before = self.held().len();
                // Always `recvmsg` with room for descriptors: a plain `recv` would make the
                // kernel close any the peer passed.
                let mut recv = |fd: &OwnedFd| {
                    descriptors::recv(
                        fd.as_fd(),
                        &mut scratch[..cap],
                        RecvFlags::DONTWAIT,
                        room,
                        false,
                    )
                    .map_err(io::Error::from)
                };
                // While draining, read whatever the runtime believes: what FIONREAD counted is
                // in the socket even if its readiness event has not been seen yet. Otherwise
                // through `try_io`, which clears readiness on EAGAIN without losing an event
                // that arrives meanwhile (it clears only what was seen before the read).
                let mut short = None;
                let received = if matches!(self.input, Input::Draining { .. }) {
                    recv(self.socket().get_ref())
                } else {
                    let may_stop_short = self.may_stop_short();
                    self.socket().try_io(Interest::READABLE, |fd| {
                        let got = recv(fd)?;
                        if !may_stop_short && got.emptied(cap) {
                            // The read that found the queue empty: readiness is cleared as
                            // for EAGAIN, saving the read that would return it.
                            short = Some(got);
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        Ok(got)
                    })
                };
                let emptied = short.is_some();
                let received = match short {
                    Some(got) => Ok(got),
                    None => received,
                };
                let got = match received {
                    Ok(got) if got.len == 0 => {
                        self.input = Input::Eof;
                        // A detection prefix still held is raw data (forced framed: a breach).
                        return self.decide_raw().map(|ending| match ending {
                            Some(ending) => Step::Stop(Last::Session(ending)),
                            None => Step::Again,
                        });
                    }
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if matches!(self.input, Input::Draining { .. }) {
                            // Everything queued at the signal has been read.
                            self.drain_spent();
                        }
                        return Ok(Step::Again);
                    }
                    Err(e) => return Err(e),
                };
                let n = got.len;
                self.input.consumed(n);
                let mut note = None;
                if !got.fds.is_empty() {
                    if echo_log::enabled() {
                        // What this read brought, not everything still held.
                        note = Some(got.fds.describe());
                    }
                    let passing = self.passing.get_or_insert_with(Box::default);
                    passing.last = got.fds.len();
                    passing.held.append(got.fds);
                }
                let chunk = &scratch[..n];
                let plan = self.plan(chunk, &mut note);
                if let Some(note) = note {
                    // Nothing of this read was shown (a control frame, a held prefix).
                    echo_log::log_with(&[], Some(&note));
                }
                self.send(chunk, &plan)?;
                if got.truncated {
                    let ending = self.truncated(room, held_before);
                    return Ok(Step::Stop(Last::Session(plan.ending.unwrap_or(ending))));
                }
                if let Some(ending) = plan.ending {
                    return Ok(Step::Stop(Last::Session(ending)));
                }
                if emptied || !self.pending.is_empty() {
                    return Ok(Step::Again);
                }
            }
            Ok(Step::Yield)
        })
    }

    /// What goes back for `chunk`, from the protocol (which may change on the way: detection
    /// hands over to raw or framed within the chunk that decides).
    /// `note` says what descriptors came with the read, for the first `echo:` line.
    fn plan(&mut self, chunk: &[u8], note: &mut Option<String>) -> Plan {
        let logging = echo_log::enabled();
        match &mut self.protocol {
            Protocol::Raw => {
                self.alive();
                if logging {
                    echo_log::log_with(&[chunk], note.take().as_deref());
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
                    echo_log::log_with(&[&chunk[range]], note.take().as_deref());
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
                            ending: Some(Ending::Breach(Box::new(Breach::not_framed()))),
                            ..Plan::default()
                        },
                        _ => {
                            self.protocol = Protocol::Raw;
                            if logging {
                                echo_log::log_with(
                                    &[held.as_slice(), chunk],
                                    note.take().as_deref(),
                                );
                            }
                            raw::feed(chunk.len(), held)
                        }
                    },
                    Verdict::Framed { at } => {
                        let session = Session::new(self.settings.max_frame, self.settings.agent);
                        self.protocol = Protocol::Framed(session);
                        let mut plan = self.plan(&chunk[at..], note);
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
            return Ok(Some(Ending::Breach(Box::new(Breach::not_framed()))));
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
        // Descriptors held go with the first bytes written.
        let fd = self.socket().get_ref().as_fd();
        let both = [IoSlice::new(before), IoSlice::new(echo)];
        let slices = if before.is_empty() {
            &both[1..]
        } else {
            &both[..]
        };
        let mut sent = descriptors::send(fd, slices, self.held(), SEND_FLAGS, None);
        if let Err(e) = sent
            && self.refused(e)
        {
            let fd = self.socket().get_ref().as_fd();
            sent = descriptors::send(fd, slices, self.held(), SEND_FLAGS, None);
        }
        let written = match sent {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) => 0,
            Err(e) => return Err(self.send_failed(e.into())),
        };
        if written > 0 {
            self.carried();
        }
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
            let (pending, held) = (&self.pending, self.held());
            match ready.try_io(|fd| {
                descriptors::send(
                    fd.get_ref().as_fd(),
                    &[IoSlice::new(pending)],
                    held,
                    SEND_FLAGS,
                    None,
                )
                .map_err(io::Error::from)
            }) {
                Ok(Ok(written)) => {
                    self.pending.advance(written);
                    self.carried();
                    self.alive();
                }
                Ok(Err(e))
                    if e.raw_os_error()
                        .map(rustix::io::Errno::from_raw_os_error)
                        .is_some_and(|e| self.refused(e)) => {}
                Ok(Err(e)) => return Poll::Ready(Err(self.send_failed(e))),
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
        self.stream = Some(crate::registration::register_for(
            fd,
            READS | Interest::WRITABLE,
        )?);
        self.watching_writes = true;
        Ok(())
    }

    /// Closes the socket: away from this thread when input is still queued, or the peer has
    /// passed descriptors, since what is queued may carry some whose last close could wait
    /// (`descriptors::close_aside`).
    fn close_socket(&mut self) {
        if let Some(stream) = self.stream.take()
            && (self.passing.is_some() || super::queued(stream.get_ref()) > 0)
        {
            descriptors::close_aside(vec![stream.into_inner()]);
        }
    }

    /// Whether a short read may stop before the end of what is queued for a reason the read
    /// itself does not show: an out-of-band byte waits (a read stops at its mark, and the
    /// kernel reports the byte as priority readiness), or the peer half-closed (its EOF is
    /// read anyway). Then readiness is cleared only by the read that returns EAGAIN.
    fn may_stop_short(&self) -> bool {
        // `try_io` calls the closure only if priority (or read-closed) readiness is set.
        self.socket().try_io(Interest::PRIORITY, |_| Ok(())).is_ok()
    }

    /// Descriptors waiting for bytes to carry them back.
    fn held(&self) -> &Passed {
        self.passing.as_ref().map_or(&NOTHING_HELD, |p| &p.held)
    }

    /// Bytes went out, carrying the held descriptors: the kernel has its own references now.
    fn carried(&mut self) {
        if let Some(passing) = &mut self.passing {
            passing.held.sent();
        }
    }

    /// How many descriptors the next read may take: what the process can spare, and no more
    /// than one message's worth with those already held.
    fn room(&self) -> usize {
        descriptors::room().min(MAX_PER_READ - self.held().len())
    }

    /// The kernel refused the held descriptors (`Passed::refused`): they are closed with a
    /// log line, and `true` says to send the bytes again without them.
    fn refused(&mut self, e: rustix::io::Errno) -> bool {
        self.passing.as_mut().is_some_and(|p| p.held.refused(e))
    }

    /// A send failed. If it carried descriptors, say so.
    fn send_failed(&mut self, e: io::Error) -> io::Error {
        if let Some(passing) = &mut self.passing {
            let why = format!("sending them back failed: {e}");
            passing.held.lose(&why);
        }
        e
    }

    /// The kernel closed descriptors the peer passed with the last read (`MSG_CTRUNC`): the
    /// connection ends with an error saying why, and a log line.
    /// `room` is what the read could take; `held` what the connection held before it.
    fn truncated(&self, room: usize, held: usize) -> Ending {
        let why = if held > 0 && room == MAX_PER_READ - held {
            format!(
                "it already held {held} waiting for an echo to carry them, and a connection \
                 holds at most {MAX_PER_READ}"
            )
        } else if room < MAX_PER_READ {
            format!("it had room for {room} more (near its descriptor limit)")
        } else {
            "it reached its descriptor limit while taking them".to_owned()
        };
        let message =
            format!("the server could not take the descriptors passed with this data: {why}");
        tracing::warn!("{message}; ending the connection");
        Ending::Truncated(Box::new(Breach {
            code: udsecho_proto::ErrorCode::DescriptorsTruncated,
            message,
        }))
    }

    /// The registered socket.
    fn socket(&self) -> &AsyncFd<OwnedFd> {
        self.stream
            .as_ref()
            .expect("the socket is present outside watch_writes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;
    use udsecho_proto::GoodbyeReason;

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
        // 216: one word more (224) took the task's allocation past what 10,000 idle
        // connections may cost (memory.rs: 1,135 bytes each against 1,024).
        assert!(handler <= 216, "the handler is {handler} bytes");
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
