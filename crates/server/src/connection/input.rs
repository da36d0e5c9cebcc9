//! How much of a peer's input is left to read: one small state for every protocol and socket
//! type, which the handler consults before each read. A leaf: it knows counts, not sockets.

/// How much of the peer's input is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Read as long as the peer sends.
    Open,
    /// Shutdown began: read at most `left` more bytes, what was queued at that moment, so a
    /// peer that keeps writing cannot stretch the drain. (u32: what a socket buffer holds;
    /// "unknown" reads up to 4 GiB, as good as everything. Kept small: it is in every
    /// connection's handler.)
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
    /// The drain of a connection with `queued` bytes in its socket.
    pub(crate) fn draining(queued: usize) -> Input {
        Input::Draining {
            left: u32::try_from(queued).unwrap_or(u32::MAX),
        }
    }

    /// The drain budget is spent (or the socket is empty), `to_boundary` bytes before the
    /// output is at a frame boundary: finish that frame, or stop reading.
    pub(crate) fn drain_spent(to_boundary: usize) -> Input {
        match to_boundary {
            0 => Input::Drained,
            // A Data frame's length is a u32, so what is left of one is too.
            left => Input::Finishing {
                left: u32::try_from(left).unwrap_or(u32::MAX),
            },
        }
    }

    /// How many bytes the next read may take, with a buffer of `buffer` bytes.
    pub(crate) fn cap(self, buffer: usize) -> usize {
        match self {
            Input::Open => buffer,
            Input::Draining { left } | Input::Finishing { left } => {
                usize::try_from(left).unwrap_or(usize::MAX).min(buffer)
            }
            Input::Eof | Input::Drained => 0,
        }
    }

    /// Whether reads take what is queued without waiting for readiness.
    pub(crate) fn is_draining(self) -> bool {
        matches!(self, Input::Draining { .. })
    }

    /// Whether a budget is being spent (draining, or finishing a frame).
    pub(crate) fn is_budgeted(self) -> bool {
        matches!(self, Input::Draining { .. } | Input::Finishing { .. })
    }

    /// `n` bytes were read.
    pub(crate) fn consumed(&mut self, n: usize) {
        if let Input::Draining { left } | Input::Finishing { left } = self {
            *left = left.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_reads_what_was_queued_and_no_more() {
        let mut input = Input::draining(10);
        assert_eq!(input.cap(64), 10);
        input.consumed(4);
        assert_eq!(input.cap(64), 6);
        input.consumed(6);
        assert_eq!(input.cap(64), 0);
    }

    #[test]
    fn a_spent_drain_inside_a_frame_finishes_the_frame() {
        assert_eq!(Input::drain_spent(0), Input::Drained);
        let mut input = Input::drain_spent(3);
        assert_eq!(input.cap(64), 3);
        input.consumed(3);
        assert_eq!(input.cap(64), 0);
    }

    #[test]
    fn an_unknown_queue_drains_as_much_as_a_u32_says() {
        assert_eq!(
            Input::draining(usize::MAX),
            Input::Draining { left: u32::MAX }
        );
        assert_eq!(Input::Open.cap(64 * 1024), 64 * 1024);
        assert_eq!(Input::Eof.cap(64), 0);
    }
}
