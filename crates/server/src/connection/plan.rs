//! What the protocols tell the handler: for each chunk of input, a [`Plan`] (what goes back,
//! and whether the session ends with it), and how a connection [`End`]s.
//!
//! A leaf: the protocols (`detect`, `raw`, `framed`) and the handler meet here, and it imports
//! nothing from the crate.

use std::ops::Range;

use bytes::Bytes;
use udsecho_proto::{ErrorCode, ProtoError};

/// How a connection ends: what its reading phase or its protocol decided, and so what is
/// left to say before the close. One type from the protocol's verdict to the log line.
#[derive(Debug)]
pub(crate) enum End {
    /// A forced shutdown (`--shutdown-timeout` passed, a second signal, SIGQUIT): close now.
    /// The server logs which, once; each connection says `cut: forced shutdown`.
    Cut,
    /// The peer half-closed and everything it sent was echoed: close.
    PeerDone,
    /// Everything due at shutdown was echoed: close (raw), or Goodbye (framed).
    Drained,
    /// Nothing moved for `--idle-timeout`: Goodbye where a frame may start, else close.
    Idle,
    /// The peer said Goodbye: answer it, then close.
    PeerGoodbye,
    /// The peer sent an Error: it is leaving; so do we, without a word.
    PeerError,
    /// The peer broke a rule: Error frame, then close. Boxed: rare, and it would make every
    /// `Plan` and the connection's future larger.
    Breach(Box<Breach>),
    /// The peer passed descriptors the server could not take (`MSG_CTRUNC`): the kernel closed
    /// them. The bytes are echoed; then an Error frame where a frame may start (framed), and
    /// close.
    Truncated(Box<Breach>),
    /// A fault (`--fault`) ends the connection.
    Faulted(Faulted),
}

/// How a fault ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Faulted {
    /// Close once what is owed is out (`limit_data`).
    LimitData,
    /// Close, owing nothing (`timeout=DUR`).
    TimedOut,
    /// Close at once, without reading or flushing (`reset_peer`).
    Reset,
    /// Goodbye (Done), then close (`goodbye_after`).
    Goodbye,
    /// An Error frame with this code, then close (`error_after`).
    Error(u16),
}

impl End {
    /// The end's name in the `closed` log line.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            End::Cut => "cut: forced shutdown",
            End::PeerDone | End::PeerGoodbye | End::PeerError => "peer done",
            End::Drained => "drained",
            End::Idle => "idle timeout",
            End::Breach(_) | End::Truncated(_) => "protocol error",
            End::Faulted(Faulted::LimitData) => "fault: limit_data",
            End::Faulted(Faulted::TimedOut) => "fault: timeout",
            End::Faulted(Faulted::Reset) => "fault: reset_peer",
            End::Faulted(Faulted::Goodbye) => "fault: goodbye_after",
            End::Faulted(Faulted::Error(_)) => "fault: error_after",
        }
    }
}

/// What to send back for one chunk of input: `before`, then the chunk's bytes in `echo`; and
/// whether the session ends with this chunk (the bytes after the ending frame are dropped).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) before: Before,
    pub(crate) echo: Range<usize>,
    pub(crate) ending: Option<End>,
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

impl Breach {
    /// A forced-framed server's answer to a connection without the preamble.
    pub(crate) fn not_framed() -> Breach {
        Breach {
            code: ErrorCode::UnexpectedFrame,
            message: "this server speaks framed mode only and the connection did not open with \
                      the udsecho preamble"
                .to_owned(),
        }
    }
}
