//! What the faults hitting one connection (or one datagram) add up to — [`Effects`] — and
//! the draws they make from the seed ([`Draws`]): jitter, the message faults'
//! probabilities, the next line of a file of answers. Shared by a connection's faults
//! (`active.rs`) and the datagram socket's (`datagrams.rs`), so a message fault means the
//! same on both.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand::rngs::ChaCha8Rng;

use crate::connection::Faulted;
use udsecho_fault::{Answer, Fault, FaultSpec};

/// A message is held back for reordering only if it fits here: memory must not follow the
/// message sizes a peer sends.
pub(crate) const MAX_REORDERED: usize = 64 * 1024;

/// What becomes of one message (seqpacket) or datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Echo its first `len` bytes, `times` times.
    Echo { len: usize, times: u8 },
    /// Answer it with these bytes instead (`answer`, `answer_file`).
    Answer(Bytes),
    /// No echo: take it off the queue (seqpacket), or let it go (datagram).
    Drop,
    /// Keep a copy and echo it after the next one.
    Hold,
}

/// The merged effects of the faults hitting a connection or a datagram (a later fault of a
/// kind replaces an earlier one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Effects {
    pub(crate) latency: Option<(Duration, Duration)>,
    pub(crate) rate: Option<u64>,
    pub(crate) slice: Option<(usize, Duration)>,
    pub(crate) stop_reading: Option<u64>,
    pub(crate) limit_data: Option<u64>,
    pub(crate) silent: Option<Option<Duration>>,
    pub(crate) reset: Option<Duration>,
    pub(crate) slow_close: Option<Duration>,
    pub(crate) corrupt: Option<u64>,
    pub(crate) answer: Option<Answer>,
    pub(crate) frames_end: Option<(u32, Faulted)>,
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) reorder: f64,
    pub(crate) truncate: Option<usize>,
    pub(crate) withhold_fds: bool,
    pub(crate) extra_fd: bool,
}

impl Effects {
    pub(crate) fn of(hits: &[Arc<FaultSpec>]) -> Effects {
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

/// The random draws of one connection (or of the datagram socket), from its own ChaCha8
/// stream of the seed, and the place in a file of answers.
#[derive(Debug)]
pub(crate) struct Draws {
    rng: ChaCha8Rng,
    /// The next line of a file of answers.
    next_answer: usize,
}

impl Draws {
    pub(crate) fn new(rng: ChaCha8Rng) -> Draws {
        Draws {
            rng,
            next_answer: 0,
        }
    }

    /// What becomes of the next message, `len` bytes long. `may_hold`: no message is held
    /// back already (one at a time).
    pub(crate) fn message(&mut self, effects: &Effects, len: usize, may_hold: bool) -> Fate {
        if effects.silent.is_some() || self.draw(effects.loss) {
            return Fate::Drop;
        }
        if may_hold && len <= MAX_REORDERED && self.draw(effects.reorder) {
            return Fate::Hold;
        }
        if let Some(answer) = &effects.answer {
            return Fate::Answer(self.answer(answer));
        }
        let times = if self.draw(effects.duplicate) { 2 } else { 1 };
        Fate::Echo {
            len: effects.truncate.map_or(len, |t| t.min(len)),
            times,
        }
    }

    /// The next canned answer: the same bytes, or the file's next line.
    pub(super) fn answer(&mut self, answer: &Answer) -> Bytes {
        match answer {
            Answer::Fixed(bytes) => bytes.clone(),
            Answer::Lines { lines, .. } => {
                let line = lines[self.next_answer % lines.len()].clone();
                self.next_answer = self.next_answer.wrapping_add(1);
                line
            }
        }
    }

    /// `delay`, plus or minus up to `jitter`, uniformly; never below zero.
    pub(crate) fn jittered(&mut self, delay: Duration, jitter: Duration) -> Duration {
        let jitter = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 4);
        if jitter == 0 {
            return delay;
        }
        let offset = self.rng.next_u64() % (2 * jitter + 1);
        let delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX / 4);
        Duration::from_nanos((delay + offset).saturating_sub(jitter))
    }

    /// True with probability `p`, from the stream (nothing drawn when `p` is 0).
    fn draw(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits: a uniform double in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }
}

/// The descriptor an `extra_fd` fault adds to an echo: `/dev/null`, read-only, opened for it
/// (`None`, with a `-vv` line, if it cannot be).
pub(super) fn extra_descriptor() -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags, open};
    open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .inspect_err(|e| tracing::debug!("extra_fd: opening /dev/null: {e}"))
        .ok()
}
