//! The [`Handler`]: one connection's loop, from its first read to its last word. It owns the
//! connection's protocol (detecting, raw, framed, or seqpacket messages), how much input is
//! left ([`Input`]), and the idle and detection-pause timers; the socket itself is the
//! [`Peer`]'s, which it calls down to and never the other way round.
//!
//! Each turn it reads into the thread's scratch buffer, asks the protocol for a [`Plan`], and
//! has the peer write the echo straight from the scratch buffer; while the peer has an echo
//! backed up, nothing more is read. Each turn of the loop answers one [`Step`]; when reading
//! stops, the [`End`] says what is left to say, and [`ending`] says it.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::detect::{Detector, Verdict};
use super::ending::{self, Output};
use super::framed::Session;
use super::input::Input;
use super::peer::{Kind, Peeked, Peer, Sent};
use super::plan::{Before, Breach, End, Plan};
use super::raw;
use super::scratch::SCRATCH;
use super::settings::Settings;
use crate::busy_poll;
use crate::config::Mode;
use crate::echo_log;
use crate::fault::{Active, Fate, Turn};
use crate::shutdown::{Shutdown, Stage};

/// Reads per wake-up before giving the other connections on this thread a turn.
const READS_PER_TURN: usize = 16;

/// Seqpacket messages echoed per wake-up before the other connections get a turn.
const MESSAGES_PER_TURN: usize = 64;

/// How the connection's input is read and answered.
#[derive(Debug)]
enum Protocol {
    /// Auto or forced-framed mode, before the first bytes decide.
    Detecting(Detector),
    Raw,
    Framed(Session),
    /// A seqpacket peer: each message back whole, no framing, no detection.
    Messages,
}

impl Protocol {
    /// Where the output stands for a last frame of ours.
    fn output(&self) -> Output {
        match self {
            Protocol::Framed(session) if session.bytes_to_boundary() > 0 => Output::MidFrame,
            Protocol::Framed(_) => Output::AtBoundary,
            _ => Output::Unframed,
        }
    }

    /// Bytes that must still be read before the output is at a frame boundary: nonzero only
    /// inside a Data frame whose first bytes have already been echoed.
    fn bytes_to_boundary(&self) -> usize {
        match self {
            Protocol::Framed(session) => session.bytes_to_boundary(),
            _ => 0,
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
    Stop(End),
}

/// Owns one connection: its peer socket, its slot, what the server said, and the state of its
/// input.
///
/// The reading phase is a hand-written poll loop ([`Handler::poll_serve`]) rather than an
/// `async fn`: then the task holds the handler and nothing else, which is what makes an idle
/// connection cheap. The endings (last frame, linger) are `async` and boxed when they start.
#[derive(Debug)]
pub(crate) struct Handler {
    /// The socket and what crosses it. Dropping the handler closes the connection.
    peer: Peer,
    /// The server's settings, shared read-only by every connection.
    settings: Arc<Settings>,
    /// The server's shutdown, to watch its next stage.
    shutdown: Shutdown,
    /// Wakes the connection at the next shutdown stage that concerns it: the graceful one
    /// (begin the drain), then the forced one (stop at once). Polled once per stage, to
    /// register the task's waker; every turn reads the stage itself from one atomic.
    stage: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether `stage` has registered the waker for the next stage.
    armed: bool,
    /// The shutdown stage this connection has acted on.
    seen: Stage,
    /// The idle and detection-pause deadline, made on first need. It may fire early (it is
    /// not moved on every byte); the real deadline is checked when it does.
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's slot under `--max-connections`, given back when the handler drops.
    _slot: OwnedSemaphorePermit,
    /// How input is read and answered, with that protocol's state.
    protocol: Protocol,
    /// How much input is left.
    input: Input,
    /// The last sign of life for `--idle-timeout`: any byte (raw), a message (seqpacket), a
    /// complete frame (framed: a frame trickled one byte at a time does not count), a byte of
    /// a backlog written out.
    active_at: Instant,
    /// The connection's faults: `None` on a server without `--fault` or `--control`, so
    /// the data path checks one `Option` and allocates nothing.
    faults: Option<Box<Active>>,
}

/// Serves one peer on a stream or seqpacket connection to the end, holding `slot` meanwhile,
/// and logs how it ended.
pub(crate) fn serve(
    socket: OwnedFd,
    kind: Kind,
    conn: u64,
    settings: Arc<Settings>,
    shutdown: &Shutdown,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + use<> {
    let protocol = match (kind, settings.mode) {
        (Kind::Seqpacket, _) => Protocol::Messages,
        (Kind::Stream, Mode::Raw) => Protocol::Raw,
        (Kind::Stream, Mode::Auto | Mode::Framed) => Protocol::Detecting(Detector::new()),
    };
    let faults = settings
        .faults
        .as_ref()
        .map(|table| Active::new(table, conn));
    let mut handler = match Peer::new(socket, kind) {
        Ok(peer) => Some(Handler {
            peer,
            settings,
            shutdown: shutdown.clone(),
            stage: Box::pin(shutdown.begun_owned()),
            armed: false,
            seen: Stage::Serving,
            timer: None,
            _slot: slot,
            protocol,
            input: Input::Open,
            active_at: Instant::now(),
            faults,
        }),
        Err(e) => {
            tracing::debug!("closed: setting up the socket: {e}");
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
    /// Serves the connection to the end and logs how it ended. The socket closes when the
    /// handler drops.
    async fn run(&mut self) {
        tracing::debug!("open");
        let ended = match std::future::poll_fn(|cx| self.poll_serve(cx)).await {
            // A detection prefix still held is the last of a raw peer's input.
            Ok(End::Drained) => self.decide_raw().map(|e| e.unwrap_or(End::Drained)),
            ended => ended,
        };
        if let Some(faults) = &mut self.faults {
            // A stop that did not wait for the held echo (idle, a protocol error): it goes
            // out with the last words, unshaped, but not lost.
            let held = faults.take_held();
            self.peer.last_frame().extend_from_slice(&held);
        }
        let result = match ended {
            Ok(end) => {
                let output = self.protocol.output();
                let idle = self.settings.idle_timeout;
                let slow_close = self.faults.as_ref().and_then(|f| f.slow_close());
                let finish = ending::finish(
                    &mut self.peer,
                    end,
                    output,
                    idle,
                    slow_close,
                    &self.shutdown,
                );
                Box::pin(finish).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(end) => tracing::debug!("closed: {}", end.name()),
            Err(e) => tracing::debug!("closed: {e}"),
        }
    }

    /// The reading phase: step until a step stops it.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<End>> {
        loop {
            match self.step(cx)? {
                Step::Wait => return Poll::Pending,
                Step::Again => {}
                Step::Yield => {
                    // Give the other connections on this thread a turn, then come back.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Stop(end) => return Poll::Ready(Ok(end)),
            }
        }
    }

    /// One step of the reading phase: follow the shutdown, flush, wait, read and echo.
    fn step(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        if !self.armed {
            // Registered before the stage is read, so no stage is missed.
            let _ = self.stage.as_mut().poll(cx);
            self.armed = true;
        }
        let stage = self.shutdown.stage();
        if stage > self.seen {
            if stage == Stage::Immediate {
                return Ok(Step::Stop(End::Cut));
            }
            self.seen = stage;
            if let Some(faults) = &mut self.faults {
                faults.lift();
            }
            if self.input == Input::Open {
                self.input = Input::draining(self.peer.queued());
            }
            self.stage.set(self.shutdown.forced_owned());
            self.armed = false;
            return Ok(Step::Again);
        }
        if self.peer.backed_up() {
            match self.peer.poll_flush(cx)? {
                Poll::Ready(moved) => {
                    if moved {
                        self.alive();
                    }
                }
                Poll::Pending => return self.poll_deadline(cx),
            }
        }
        if let Some(faults) = &mut self.faults {
            match faults.poll_turn(cx, &mut self.peer)? {
                Turn::Read => {}
                Turn::Again => return Ok(Step::Again),
                Turn::Wait => return self.poll_deadline(cx),
                Turn::Stop(end) => return Ok(Step::Stop(end)),
            }
        }
        match self.input {
            // A peer that half-closes does not make a silent server (`timeout`) answer.
            Input::Eof if self.faults.as_ref().is_some_and(|f| f.silent()) => {
                return self.poll_deadline(cx);
            }
            Input::Eof => return Ok(Step::Stop(End::PeerDone)),
            Input::Drained => return Ok(Step::Stop(End::Drained)),
            Input::Open | Input::Finishing { .. } => match self.peer.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return self.poll_deadline(cx),
            },
            // Draining reads what is already queued: no waiting.
            Input::Draining { .. } => {}
        }
        // Not while draining: what was queued at the signal is read with the room there is.
        if self.input == Input::Open && self.peer.poll_room(cx).is_pending() {
            return self.poll_deadline(cx);
        }
        match self.protocol {
            Protocol::Messages => self.echo_messages(),
            _ => self.read_burst(),
        }
    }

    /// Checks the idle and detection-pause deadline; if it is still ahead, arms the timer.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        loop {
            let Some(deadline) = self.deadline() else {
                return Ok(Step::Wait);
            };
            if Instant::now() >= deadline {
                let paused = self.prefix_expired();
                // Bytes held while detecting are the peer's data: they go out first (an idle
                // timeout shorter than the detection pause must not eat them).
                return Ok(match self.decide_raw()? {
                    Some(end) => Step::Stop(end),
                    // A strict prefix of the preamble, then silence: raw after all.
                    None if paused => Step::Again,
                    None => Step::Stop(End::Idle),
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

    /// The drain budget is spent (or the socket is empty): finish the frame in progress, if
    /// any, then stop reading.
    fn drain_spent(&mut self) -> Step {
        self.input = Input::drain_spent(self.protocol.bytes_to_boundary());
        Step::Again
    }

    /// Reads and echoes stream input until the socket is empty, an echo backs up, the session
    /// ends, or a turn's worth is done. All of it happens without yielding, so the thread's
    /// scratch buffer is never held across an `.await`.
    fn read_burst(&mut self) -> io::Result<Step> {
        SCRATCH.with_borrow_mut(|scratch| {
            for _ in 0..READS_PER_TURN {
                let mut cap = self.input.cap(scratch.len());
                if let Some(faults) = &self.faults {
                    cap = faults.read_cap(cap);
                }
                if cap == 0 {
                    if self.input.is_budgeted() {
                        return Ok(self.drain_spent());
                    }
                    return Ok(Step::Again);
                }
                let read = match self
                    .peer
                    .read(&mut scratch[..cap], self.input.is_draining())
                {
                    Ok(read) => read,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.input.is_draining() {
                            // Everything queued at the signal has been read.
                            return Ok(self.drain_spent());
                        }
                        return Ok(Step::Again);
                    }
                    Err(e) => return Err(e),
                };
                if read.len == 0 {
                    self.input = Input::Eof;
                    // A detection prefix still held is raw data (forced framed: a breach).
                    return Ok(self.decide_raw()?.map_or(Step::Again, Step::Stop));
                }
                self.input.consumed(read.len);
                busy_poll::worked();
                let mut note = read.note;
                let chunk = &scratch[..read.len];
                let plan = self.plan(chunk, &mut note);
                if let Some(note) = note {
                    // Nothing of this read was shown (a control frame, a held prefix).
                    echo_log::log_with(&[], Some(&note));
                }
                let (before, echo) = (plan.before.as_slice(), &chunk[plan.echo.clone()]);
                let mut ending = plan.ending.or_else(|| read.truncated.map(|t| t.end()));
                match &mut self.faults {
                    None => self.peer.write(before, echo)?,
                    Some(faults) => {
                        faults.consumed(read.len);
                        let unframed = matches!(self.protocol, Protocol::Raw);
                        let cut = faults.echo(&mut self.peer, before, echo, unframed);
                        if let Some(end) = ending.take().or(cut) {
                            // Said once the held echo is out.
                            faults.defer(end);
                        }
                        if faults.holds() {
                            return Ok(Step::Again);
                        }
                    }
                }
                if let Some(end) = ending {
                    return Ok(Step::Stop(end));
                }
                if read.emptied || self.peer.backed_up() {
                    return Ok(Step::Again);
                }
            }
            Ok(Step::Yield)
        })
    }

    /// Echoes seqpacket messages, each whole, until the queue is empty, an echo backs up (the
    /// message stays queued), or a turn's worth is done.
    fn echo_messages(&mut self) -> io::Result<Step> {
        SCRATCH.with_borrow_mut(|scratch| {
            for _ in 0..MESSAGES_PER_TURN {
                // The drain's budget counts bytes (what the kernel says is queued), and an
                // empty message has none: once it is spent, only empty messages are still
                // taken (those queued at the signal; a peer sending empty ones without end
                // is stopped by `--shutdown-timeout`).
                let spent = self.input.is_budgeted() && self.input.cap(usize::MAX) == 0;
                let draining = self.input.is_draining();
                let (len, truncated, note) = match self.peer.peek_message(scratch, draining)? {
                    Peeked::Message {
                        len,
                        truncated,
                        note,
                    } if !spent || len == 0 => (len, truncated, note),
                    // Past the drain's budget: sent after the signal.
                    Peeked::Message { .. } => {
                        if let Some(faults) = &mut self.faults {
                            reordered(faults, &mut self.peer)?;
                        }
                        return Ok(self.drain_spent());
                    }
                    // A silent server (`timeout`) does not answer the end either.
                    Peeked::Eof if self.faults.as_ref().is_some_and(|f| f.silent()) => {
                        return Ok(Step::Wait);
                    }
                    Peeked::Eof => {
                        if let Some(faults) = &mut self.faults {
                            reordered(faults, &mut self.peer)?;
                        }
                        return Ok(Step::Stop(End::PeerDone));
                    }
                    // Draining: an empty queue means everything sent before the signal is back.
                    Peeked::Empty if draining => {
                        if let Some(faults) = &mut self.faults {
                            reordered(faults, &mut self.peer)?;
                        }
                        return Ok(self.drain_spent());
                    }
                    Peeked::Empty => return Ok(Step::Again),
                };
                let whole;
                let message: &[u8] = if len <= scratch.len() {
                    &scratch[..len]
                } else {
                    whole = self.peer.peek_whole(len)?;
                    &whole
                };
                // `stopped`: a fault stops reading after this message (`stop_reading`).
                let (refused, stopped) = match &mut self.faults {
                    None => match self.peer.send_message(message)? {
                        Sent::Echoed { refused } => (refused, false),
                        Sent::Blocked => return Ok(Step::Again),
                    },
                    Some(faults) => match faulty_message(faults, &mut self.peer, message)? {
                        Some(refused) => {
                            faults.consumed(len);
                            (refused, faults.stopped())
                        }
                        None => return Ok(Step::Again),
                    },
                };
                if echo_log::enabled() {
                    echo_log::log_with(&[message], note.as_deref());
                }
                // Echoed: now off the queue.
                self.peer.take_message(refused)?;
                self.input.consumed(len);
                busy_poll::worked();
                self.alive();
                if let Some(truncation) = truncated {
                    return Ok(Step::Stop(truncation.end()));
                }
                if stopped {
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
            Protocol::Raw | Protocol::Messages => {
                self.alive();
                if logging {
                    echo_log::log_with(&[chunk], note.take().as_deref());
                }
                raw::feed(chunk.len(), Before::Nothing)
            }
            Protocol::Framed(session) => {
                let mut payloads = logging.then(Vec::new);
                let stop = self.faults.as_ref().and_then(|f| f.frames_left());
                let agent = self.settings.agent;
                let mut fed = session.feed_until(chunk, payloads.as_mut(), stop, agent);
                if let Some(faults) = &mut self.faults
                    && let Some(end) = faults.frames_done(fed.data, fed.stopped)
                {
                    fed.plan.ending = fed.plan.ending.or(Some(end));
                }
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
                    Verdict::Raw { .. } if self.settings.mode == Mode::Framed => Plan {
                        ending: Some(End::Breach(Box::new(Breach::not_framed()))),
                        ..Plan::default()
                    },
                    Verdict::Raw { held } => {
                        self.protocol = Protocol::Raw;
                        if logging {
                            echo_log::log_with(&[held.as_slice(), chunk], note.take().as_deref());
                        }
                        raw::feed(chunk.len(), held)
                    }
                    Verdict::Framed { at } => {
                        let session = Session::new(self.settings.max_frame);
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
    fn decide_raw(&mut self) -> io::Result<Option<End>> {
        let Protocol::Detecting(detector) = &self.protocol else {
            return Ok(None);
        };
        let held = detector.give_up();
        if held.as_slice().is_empty() {
            return Ok(None);
        }
        if self.settings.mode == Mode::Framed {
            return Ok(Some(End::Breach(Box::new(Breach::not_framed()))));
        }
        if echo_log::enabled() {
            echo_log::log(&[held.as_slice()]);
        }
        self.protocol = Protocol::Raw;
        self.peer.write(held.as_slice(), &[])?;
        Ok(None)
    }
}
/// Echoes a seqpacket message as the connection's faults have it: dropped, held back for
/// reordering, cut, answered, or sent twice. `Some(refused)` once it may be taken off the
/// queue (`refused`: its descriptors did not go back); `None`: the socket would not take
/// it, so it stays queued.
fn faulty_message(
    faults: &mut Active,
    peer: &mut Peer,
    message: &[u8],
) -> io::Result<Option<bool>> {
    let fate = faults.message(message.len());
    let withheld = matches!(fate, Fate::Echo { .. } | Fate::Answer(_)) && faults.descriptors(peer);
    let (out, times): (&[u8], u8) = match fate {
        Fate::Drop => {
            peer.lose_held("a fault dropped the message");
            return Ok(Some(true));
        }
        Fate::Hold => {
            faults.hold_message(message);
            peer.lose_held("a fault reordered the message");
            return Ok(Some(true));
        }
        Fate::Echo { len, times } => (&message[..len], times),
        Fate::Answer(answer) => {
            return Ok(match peer.send_message(&answer)? {
                Sent::Echoed { refused } => {
                    reordered(faults, peer)?;
                    Some(refused || withheld)
                }
                Sent::Blocked => None,
            });
        }
    };
    let refused = match peer.send_message(out)? {
        Sent::Echoed { refused } => refused,
        Sent::Blocked => return Ok(None),
    };
    if times > 1 {
        // A duplicate the socket will not take is not sent: the original went out.
        let _ = peer.send_message(out)?;
    }
    reordered(faults, peer)?;
    Ok(Some(refused || withheld))
}

/// Sends the message a `reorder` fault held back, now that the one after it is out (or the
/// input has ended). One the socket will not take now is held again.
fn reordered(faults: &mut Active, peer: &mut Peer) -> io::Result<()> {
    if let Some(message) = faults.take_reordered()
        && peer.send_message(&message)? == Sent::Blocked
    {
        faults.hold_message(&message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
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
            faults: None,
            proxy: None,
        });
        let slot = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = serve(a, Kind::Stream, 1, settings, &Shutdown::new(), slot);
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
            faults: None,
            proxy: None,
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
        let task = tokio::spawn(serve(server, Kind::Stream, 1, settings, &shutdown, slot));
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
