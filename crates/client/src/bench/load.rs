//! What one benchmark connection is to do ([`Load`]): the payload it sends, until when, how
//! long each echo may take, and the thread's [`Tally`] it counts into; with the errors a
//! connection's loop reports. The task loops (`worker`) and the epoll loop (`pingpong`) both
//! drive a connection from one of these.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::echoes::Echoes;
use super::tally::Tally;
use crate::error::ErrorKind;
use crate::session;

/// One connection's share of the benchmark.
#[derive(Debug)]
pub(super) struct Load {
    /// What each message carries (different per connection, so a crossed echo is caught).
    pub(super) payload: Bytes,
    /// When to stop sending.
    pub(super) deadline: Instant,
    /// How long each message may take to come back (`--timeout`).
    pub(super) timeout: Duration,
    /// This thread's count and latencies.
    pub(super) tally: Rc<Tally>,
}

impl Load {
    /// Whether to send another message.
    pub(super) fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Counts a verified round trip sent at `sent_at`.
    pub(super) fn record(&self, sent_at: Instant) {
        self.tally.record(sent_at.elapsed());
    }

    /// An echo that differs from the payload; an Error frame instead means a server in
    /// framed-only mode.
    pub(super) fn mismatch(&self, index: u64, echo: &[u8]) -> ErrorKind {
        if session::is_framed_refusal(echo) {
            ErrorKind::FramedOnlyServer
        } else {
            ErrorKind::mismatch(index, &self.payload, echo)
        }
    }

    /// A transport failure while `doing`.
    pub(super) fn broken(&self, doing: &'static str, e: std::io::Error) -> ErrorKind {
        session::transport(doing, e, || {
            ErrorKind::closed_early("in the middle of the benchmark")
        })
    }

    /// `--timeout` passed while `waiting`.
    pub(super) fn late(&self, waiting: &str) -> ErrorKind {
        ErrorKind::timed_out(waiting, self.timeout)
    }

    /// The server closed with `echoes` in the middle of a message: an Error frame there
    /// means a framed-only server, anything else a server that hung up.
    pub(super) fn cut_off(&self, echoes: &Echoes) -> ErrorKind {
        if session::is_framed_refusal(echoes.partial()) {
            ErrorKind::FramedOnlyServer
        } else {
            self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into())
        }
    }
}
