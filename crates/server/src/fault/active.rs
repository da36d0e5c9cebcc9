//! [`Active`]: one connection's faults — the effects of the faults that hit it, merged, the
//! counters they count with, and the echo held back for a delay, a rate or slices.
//!
//! The handler calls down into it, never the other way round: [`Active::poll_turn`] before
//! each read (is held echo due? is reading stopped? has a fault's deadline come?),
//! [`Active::read_cap`] for the read's size, [`Active::echo`] in place of the peer's write,
//! [`Active::message`] for each seqpacket message, and [`Active::slow_close`] at the end.
//!
//! Memory stays bounded: an echo held back is at most one read's (the scratch buffer, 64 KiB),
//! and nothing more is read while it is held, so a peer that keeps sending meets the socket's
//! backpressure, exactly as with a peer that does not read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rand::Rng;
use rand::rngs::ChaCha8Rng;
use tokio::time::{Instant, Sleep};

use super::table::Faults;
use crate::connection::{End, Faulted, Peer};
use udsecho_fault::{Answer, Fault, FaultSpec};

/// A reordered message is held only if it fits here: a connection's memory must not follow
/// the message sizes its peer sends.
const MAX_REORDERED: usize = 64 * 1024;

/// What the handler does next, by the faults.
#[derive(Debug)]
pub(crate) enum Turn {
    /// Read as usual.
    Read,
    /// Bytes went out and the peer backed up: flush first.
    Again,
    /// Nothing to do until a wake-up (the fault's timer is armed if it has one).
    Wait,
    /// A fault ends the connection this way.
    Stop(End),
}

/// What becomes of one seqpacket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Echo its first `len` bytes, `times` times.
    Echo { len: usize, times: u8 },
    /// Answer it with these bytes instead (`answer`, `answer_file`).
    Answer(Bytes),
    /// Take it off the queue without an echo.
    Drop,
    /// Keep a copy, take it off the queue, and echo it after the next one.
    Hold,
}

/// The merged effects of the faults hitting a connection (a later fault of a kind replaces
/// an earlier one).
#[derive(Debug, Default)]
struct Effects {
    latency: Option<(Duration, Duration)>,
    rate: Option<u64>,
    slice: Option<(usize, Duration)>,
    stop_reading: Option<u64>,
    limit_data: Option<u64>,
    silent: Option<Option<Duration>>,
    reset: Option<Duration>,
    slow_close: Option<Duration>,
    corrupt: Option<u64>,
    answer: Option<Answer>,
    frames_end: Option<(u32, Faulted)>,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    truncate: Option<usize>,
    withhold_fds: bool,
    extra_fd: bool,
}

impl Effects {
    fn of(hits: &[Arc<FaultSpec>]) -> Effects {
        let mut e = Effects::default();
        for spec in hits {
            match &spec.fault {
                Fault::Latency { delay, jitter } => e.latency = Some((*delay, *jitter)),
                Fault::Bandwidth { bytes_per_sec } => e.rate = Some(*bytes_per_sec),
                Fault::Slicer { size, gap } => e.slice = Some((*size, *gap)),
                Fault::StopReading { after } => e.stop_reading = Some(*after),
                Fault::LimitData { bytes } => e.limit_data = Some(*bytes),
                Fault::Timeout { close_after } => e.silent = Some(*close_after),
                Fault::ResetPeer { after } => e.reset = Some(*after),
                Fault::SlowClose { delay } => e.slow_close = Some(*delay),
                Fault::Corrupt { offset } => e.corrupt = Some(*offset),
                Fault::Answer(answer) => e.answer = Some(answer.clone()),
                Fault::ErrorAfter { frames, code } => {
                    e.frames_end = Some((*frames, Faulted::Error(*code)));
                }
                Fault::GoodbyeAfter { frames } => e.frames_end = Some((*frames, Faulted::Goodbye)),
                Fault::Loss { probability } => e.loss = *probability,
                Fault::Duplicate { probability } => e.duplicate = *probability,
                Fault::Reorder { probability } => e.reorder = *probability,
                Fault::Truncate { len } => e.truncate = Some(*len),
                Fault::WithholdFds => e.withhold_fds = true,
                Fault::ExtraFd => e.extra_fd = true,
                // A client's fault: refused where a server's faults are parsed.
                Fault::HalfClose { .. } => {}
            }
        }
        e
    }
}

/// One connection's faults (see the module's doc). Boxed in the handler, and only on a
/// server that has faults.
#[derive(Debug)]
pub(crate) struct Active {
    /// The server's faults, to follow their changes.
    table: Arc<Faults>,
    /// The connection's number: which faults hit it is drawn from it.
    conn: u64,
    /// The generation of the table the effects were drawn from.
    generation: u64,
    /// The faults that hit, as drawn (to log a change).
    hits: Vec<Arc<FaultSpec>>,
    effects: Effects,
    /// When the connection took its current faults: their durations count from here.
    since: Instant,
    /// The connection's own random draws (jitter, loss...), replayed by the seed.
    rng: ChaCha8Rng,
    /// Bytes read from the peer, and echo bytes produced, since the connection opened.
    read: u64,
    echoed: u64,
    /// Data frames echoed since the connection opened.
    frames: u32,
    /// The next line of a file of answers.
    next_answer: usize,
    /// Echo held back (at most one read's worth, plus the answers it asked for).
    held: BytesMut,
    /// When the next bytes of `held` may go out.
    next_at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// How the connection ends once `held` is out.
    deferred: Option<End>,
    /// The drain began: no more faults.
    lifted: bool,
    /// A seqpacket message held back to go out after the next one.
    reordered: Option<Vec<u8>>,
}

impl Active {
    /// The faults of connection `conn` of a server with `table`.
    pub(crate) fn new(table: &Arc<Faults>, conn: u64) -> Box<Active> {
        Box::new(Active {
            table: table.clone(),
            conn,
            generation: u64::MAX,
            hits: Vec::new(),
            effects: Effects::default(),
            since: Instant::now(),
            rng: table.connection_rng(conn),
            read: 0,
            echoed: 0,
            frames: 0,
            next_answer: 0,
            held: BytesMut::new(),
            next_at: None,
            timer: None,
            deferred: None,
            lifted: false,
            reordered: None,
        })
        // The faults are drawn at the first turn, inside the connection's log span.
    }

    /// Follows the table: one atomic load when nothing changed.
    fn refresh(&mut self) {
        if self.lifted || self.table.generation() == self.generation {
            return;
        }
        let (generation, hits) = self.table.hitting(self.conn);
        self.generation = generation;
        let same = hits.len() == self.hits.len()
            && hits.iter().zip(&self.hits).all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
        if hits.is_empty() {
            tracing::debug!("fault: none");
        } else {
            let names: Vec<&str> = hits.iter().map(|s| s.text()).collect();
            tracing::debug!("fault: {}", names.join(" "));
        }
        self.effects = Effects::of(&hits);
        self.hits = hits;
        self.since = Instant::now();
    }

    /// The drain began: the faults stop, what is held goes out at once.
    pub(crate) fn lift(&mut self) {
        if !self.hits.is_empty() {
            tracing::debug!("fault: lifted for the drain");
        }
        self.lifted = true;
        self.effects = Effects::default();
        self.hits.clear();
        self.next_at = None;
    }

    /// Before a read: lets held echo out when it is due, and says whether to read.
    pub(crate) fn poll_turn(&mut self, cx: &mut Context<'_>, peer: &mut Peer) -> io::Result<Turn> {
        self.refresh();
        loop {
            let now = Instant::now();
            let mut wake = None;
            if let Some(after) = self.effects.reset {
                let at = self.since + after;
                if now >= at {
                    return Ok(Turn::Stop(End::Faulted(Faulted::Reset)));
                }
                wake = earliest(wake, at);
            }
            if let Some(Some(after)) = self.effects.silent {
                let at = self.since + after;
                if now >= at {
                    return Ok(Turn::Stop(End::Faulted(Faulted::TimedOut)));
                }
                wake = earliest(wake, at);
            }
            let mut read = false;
            if !self.held.is_empty() {
                match self.next_at {
                    Some(at) if at > now => wake = earliest(wake, at),
                    _ => {
                        self.release(peer, now)?;
                        if peer.backed_up() {
                            return Ok(Turn::Again);
                        }
                        continue;
                    }
                }
            } else if let Some(end) = self.deferred.take() {
                return Ok(Turn::Stop(end));
            } else {
                read = !self.stopped();
            }
            // The timer is armed for the earliest of held echo due and the deadlines, read
            // or not: a deadline comes whether or not the peer sends. Every `at` is ahead.
            if let Some(at) = wake {
                let timer = match &mut self.timer {
                    Some(timer) => {
                        timer.as_mut().reset(at);
                        timer
                    }
                    None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
                };
                if timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Ok(if read { Turn::Read } else { Turn::Wait });
        }
    }

    /// Whether reading has stopped for good (`stop_reading`, or an end waiting for held echo).
    fn stopped(&self) -> bool {
        self.deferred.is_some() || self.effects.stop_reading.is_some_and(|n| self.read >= n)
    }

    /// Whether the connection answers nothing (`timeout`): then not even the peer's
    /// half-close ends it.
    pub(crate) fn silent(&self) -> bool {
        self.effects.silent.is_some()
    }

    /// Whether echo is held back: nothing more is read until it is out.
    pub(crate) fn holds(&self) -> bool {
        !self.held.is_empty() || self.deferred.is_some()
    }

    /// How the connection ends once the held echo is out.
    pub(crate) fn defer(&mut self, end: End) {
        self.deferred = Some(end);
    }

    /// The longest the next read may be: up to where `stop_reading` stops.
    pub(crate) fn read_cap(&self, cap: usize) -> usize {
        match self.effects.stop_reading {
            Some(after) => usize::try_from(after.saturating_sub(self.read))
                .unwrap_or(usize::MAX)
                .min(cap),
            None => cap,
        }
    }

    /// `n` bytes were read.
    pub(crate) fn consumed(&mut self, n: usize) {
        self.read += n as u64;
    }

    /// How many more Data frames may be echoed before `error_after` / `goodbye_after` ends
    /// the session (a framed session stops feeding there).
    pub(crate) fn frames_left(&self) -> Option<u32> {
        self.effects
            .frames_end
            .map(|(n, _)| n.saturating_sub(self.frames))
    }

    /// `data` more Data frames were echoed, and the session stopped where
    /// [`Active::frames_left`] said (`stopped`): the end, if it did.
    pub(crate) fn frames_done(&mut self, data: u32, stopped: bool) -> Option<End> {
        self.frames = self.frames.saturating_add(data);
        match self.effects.frames_end {
            Some((_, end)) if stopped => Some(End::Faulted(end)),
            _ => None,
        }
    }

    /// In place of the peer's write: `before` then `echo`, as the faults make them (dropped,
    /// answered, corrupted, cut at `limit_data`), held until they are due. `unframed`: the
    /// bytes are raw data, so a canned answer may replace them.
    pub(crate) fn echo(
        &mut self,
        peer: &mut Peer,
        before: &[u8],
        echo: &[u8],
        unframed: bool,
    ) -> Option<End> {
        if self.effects.silent.is_some() {
            peer.lose_held("a timeout fault answers nothing");
            return None;
        }
        let _ = self.descriptors(peer);
        let start = self.held.len();
        match &self.effects.answer {
            Some(answer) if unframed => {
                let lines = before.iter().chain(echo).filter(|&&b| b == b'\n').count();
                for _ in 0..lines {
                    match answer {
                        Answer::Fixed(bytes) => self.held.extend_from_slice(bytes),
                        Answer::Lines { lines, .. } => {
                            self.held
                                .extend_from_slice(&lines[self.next_answer % lines.len()]);
                            self.next_answer = self.next_answer.wrapping_add(1);
                        }
                    }
                }
            }
            _ => {
                self.held.extend_from_slice(before);
                self.held.extend_from_slice(echo);
            }
        }
        let mut end = None;
        if let Some(limit) = self.effects.limit_data {
            let room = usize::try_from(limit.saturating_sub(self.echoed)).unwrap_or(usize::MAX);
            if self.held.len() - start >= room {
                self.held.truncate(start + room);
                end = Some(End::Faulted(Faulted::LimitData));
            }
        }
        let added = self.held.len() - start;
        if let Some(offset) = self.effects.corrupt
            && offset >= self.echoed
            && offset - self.echoed < added as u64
        {
            self.held[start + (offset - self.echoed) as usize] ^= 0xff;
        }
        self.echoed += added as u64;
        if start == 0
            && added > 0
            && let Some((delay, jitter)) = self.effects.latency
        {
            let due = Instant::now() + self.jittered(delay, jitter);
            self.next_at = Some(self.next_at.map_or(due, |at| at.max(due)));
        }
        end
    }

    /// What the next echo carries: none of the peer's descriptors (`withhold_fds`: `true`,
    /// so a seqpacket message's originals are taken and closed aside), or one more
    /// (`extra_fd`: `/dev/null`, opened for it).
    pub(crate) fn descriptors(&mut self, peer: &mut Peer) -> bool {
        if self.effects.withhold_fds {
            peer.lose_held("a withhold_fds fault");
        }
        if self.effects.extra_fd {
            match rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(fd) => peer.pass_extra(fd),
                Err(e) => tracing::debug!("extra_fd: opening /dev/null: {e}"),
            }
        }
        self.effects.withhold_fds
    }

    /// `delay`, plus or minus up to `jitter`, uniformly; never below zero.
    fn jittered(&mut self, delay: Duration, jitter: Duration) -> Duration {
        let jitter = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 4);
        if jitter == 0 {
            return delay;
        }
        let offset = self.rng.next_u64() % (2 * jitter + 1);
        let delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX / 4);
        Duration::from_nanos((delay + offset).saturating_sub(jitter))
    }

    /// Writes the next part of the held echo: all of it, a slice, or a rate's 20 ms worth.
    fn release(&mut self, peer: &mut Peer, now: Instant) -> io::Result<()> {
        let mut n = self.held.len();
        let mut gap = Duration::ZERO;
        if let Some((size, slice_gap)) = self.effects.slice {
            n = n.min(size);
            gap = slice_gap;
        }
        if let Some(rate) = self.effects.rate {
            let portion = usize::try_from(rate / 50).unwrap_or(usize::MAX).max(1);
            n = n.min(portion);
            gap = gap.max(Duration::from_secs_f64(n as f64 / rate as f64));
        }
        peer.write(&[], &self.held[..n])?;
        self.held.advance(n);
        if self.held.is_empty() {
            // Give back what a held echo took.
            self.held = BytesMut::new();
        }
        // Kept when the held echo is out, so the next echo keeps the gap and the rate too.
        self.next_at = Some(now + gap);
        Ok(())
    }

    /// Whatever is still held, for the last words (a stop that did not wait for it).
    pub(crate) fn take_held(&mut self) -> BytesMut {
        std::mem::take(&mut self.held)
    }

    /// How long to wait after the peer's half-close before our own.
    pub(crate) fn slow_close(&self) -> Option<Duration> {
        self.effects.slow_close
    }

    /// What becomes of the next seqpacket message, `len` bytes long.
    pub(crate) fn message(&mut self, len: usize) -> Fate {
        if self.effects.silent.is_some() || self.draw(self.effects.loss) {
            return Fate::Drop;
        }
        if self.reordered.is_none() && len <= MAX_REORDERED && self.draw(self.effects.reorder) {
            return Fate::Hold;
        }
        if let Some(answer) = &self.effects.answer {
            let bytes = match answer {
                Answer::Fixed(bytes) => bytes.clone(),
                Answer::Lines { lines, .. } => {
                    let line = lines[self.next_answer % lines.len()].clone();
                    self.next_answer = self.next_answer.wrapping_add(1);
                    line
                }
            };
            return Fate::Answer(bytes);
        }
        let times = if self.draw(self.effects.duplicate) {
            2
        } else {
            1
        };
        Fate::Echo {
            len: self.effects.truncate.map_or(len, |t| t.min(len)),
            times,
        }
    }

    /// Keeps a message to echo after the next one.
    pub(crate) fn hold_message(&mut self, message: &[u8]) {
        self.reordered = Some(message.to_vec());
    }

    /// The message held back, once the one after it is out.
    pub(crate) fn take_reordered(&mut self) -> Option<Vec<u8>> {
        self.reordered.take()
    }

    /// True with probability `p`, from the connection's stream.
    fn draw(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits: a uniform double in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}
