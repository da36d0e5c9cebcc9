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

use bytes::{Buf, BytesMut};
use tokio::time::{Instant, Sleep};

use super::effects::{Draws, Effects, Fate, extra_descriptor};
use super::table::Faults;
use crate::connection::{End, Faulted, Peer};
use udsecho_fault::FaultSpec;

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
    /// The connection's own random draws (jitter, loss...), replayed by the seed, and its
    /// place in a file of answers.
    draws: Draws,
    /// Bytes read from the peer, and echo bytes produced, since the connection opened.
    read: u64,
    echoed: u64,
    /// Data frames echoed since the connection opened.
    frames: u32,
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
            draws: Draws::new(table.connection_rng(conn)),
            read: 0,
            echoed: 0,
            frames: 0,
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
            // Nothing is read until the reset: what the peer sends stays unread, so its
            // next read after the close is ECONNRESET.
            let resetting = self.effects.reset.is_some();
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
                read = !self.stopped() && !resetting;
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
    pub(crate) fn stopped(&self) -> bool {
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
                    let bytes = self.draws.answer(answer);
                    self.held.extend_from_slice(&bytes);
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
            let due = Instant::now() + self.draws.jittered(delay, jitter);
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
        if self.effects.extra_fd
            && let Some(fd) = extra_descriptor()
        {
            peer.pass_extra(fd);
        }
        self.effects.withhold_fds
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
        self.draws
            .message(&self.effects, len, self.reordered.is_none())
    }

    /// Keeps a message to echo after the next one.
    pub(crate) fn hold_message(&mut self, message: &[u8]) {
        self.reordered = Some(message.to_vec());
    }

    /// The message held back, once the one after it is out.
    pub(crate) fn take_reordered(&mut self) -> Option<Vec<u8>> {
        self.reordered.take()
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}
