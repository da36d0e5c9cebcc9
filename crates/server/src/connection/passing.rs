//! [`Passing`]: what a peer has passed that has not gone back yet — the descriptors held until
//! an echo carries them, and the peer's wait for room in the process's descriptor tally.
//!
//! Most peers never pass a descriptor: for them this is one empty pointer, and nothing is
//! allocated until the first descriptor comes.

use std::io;
use std::task::{Context, Poll};

use super::plan::{Breach, End};
use crate::descriptors::{self, MAX_PER_READ, Passed, Waiter};
use crate::echo_log;

/// A peer's passed descriptors (none until it passes any).
#[derive(Debug, Default)]
pub(crate) struct Passing(Option<Box<Held>>);

/// The state of a peer that has passed descriptors.
#[derive(Debug, Default)]
struct Held {
    /// Descriptors from the last read(s), held until the next bytes written carry them back:
    /// at most one message's worth ([`MAX_PER_READ`]), and no read happens while the echo
    /// that carries them is pending.
    fds: Passed,
    /// Near the process's descriptor limit, this peer is not read until as many as it passed
    /// last fit again (other connections are read as ever).
    room: Waiter,
    /// How many descriptors the last read that brought any brought (1 for a truncation).
    last: usize,
}

/// No descriptors held.
static NOTHING_HELD: Passed = Passed::none();

impl Passing {
    /// Whether the peer has ever passed descriptors (or had some truncated).
    pub(crate) fn ever(&self) -> bool {
        self.0.is_some()
    }

    /// Descriptors waiting for bytes to carry them back.
    pub(crate) fn held(&self) -> &Passed {
        self.0.as_ref().map_or(&NOTHING_HELD, |held| &held.fds)
    }

    /// How many descriptors the next read may take: what the process can spare, and no more
    /// than one message's worth with those already held.
    pub(crate) fn room(&self) -> usize {
        descriptors::room().min(MAX_PER_READ - self.held().len())
    }

    /// Ready once there is room in the process's descriptor tally for as many descriptors as
    /// the peer passed last (at once for a peer that never passed any).
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(held) => held.room.poll_room(cx, held.last),
            None => Poll::Ready(()),
        }
    }

    /// Holds what a read brought until an echo carries it back; returns what it is, for the
    /// `-v` line (only when `-v` is on).
    pub(crate) fn hold(&mut self, fds: Passed, truncated: bool) -> Option<String> {
        if fds.is_empty() && !truncated {
            return None;
        }
        let note = (echo_log::enabled() && !fds.is_empty()).then(|| fds.describe());
        let held = self.0.get_or_insert_with(Box::default);
        held.last = fds.len().max(1);
        held.fds.append(fds);
        note
    }

    /// Bytes went out carrying the held descriptors (or, for a peeked message that stays
    /// queued, did not: ours were copies): the kernel has its own references now.
    pub(crate) fn carried(&mut self) {
        if let Some(held) = &mut self.0 {
            held.fds.returned();
        }
    }

    /// The kernel refused the held descriptors (`Passed::refused`): they are closed with a
    /// log line, and `true` says to send the bytes again without them.
    pub(crate) fn refused(&mut self, e: rustix::io::Errno) -> bool {
        self.0.as_mut().is_some_and(|held| held.fds.refused(e))
    }

    /// A send failed. If it carried descriptors, say so.
    pub(crate) fn send_failed(&mut self, e: io::Error) -> io::Error {
        self.lose(&format!("sending them back failed: {e}"));
        e
    }

    /// Closes the held descriptors unreturned, saying why.
    pub(crate) fn lose(&mut self, why: &str) {
        if let Some(held) = &mut self.0 {
            held.fds.lose(why);
        }
    }
}

/// A read whose descriptors the kernel closed because they did not fit (`MSG_CTRUNC`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Truncation {
    /// What the read could take.
    pub(crate) room: usize,
    /// What the connection held before it.
    pub(crate) held: usize,
}

impl Truncation {
    /// The connection ends with an error saying why, and a log line.
    pub(crate) fn end(self) -> End {
        let Truncation { room, held } = self;
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
        End::Truncated(Box::new(Breach {
            code: udsecho_proto::ErrorCode::DescriptorsTruncated,
            message,
        }))
    }
}
