//! One peer, from accept to close. Where each part lives:
//!
//! | file | holds |
//! |---|---|
//! | `handler.rs` | the [`Handler`](handler::Handler): the connection's protocol, how much input is left, its timers, and its loop (read into the scratch buffer, ask the protocol, have the peer write, the drain) |
//! | `peer.rs` | the [`Peer`](peer::Peer): the socket and everything that crosses it — reads with their descriptors, writes that carry them back, the backlog, the half-close, the close |
//! | `ending.rs` | the last words: Goodbye, Error, the half-close, the linger |
//! | `settings.rs`, `scratch.rs` | what a connection needs of the server's configuration; the thread's read buffer |
//! | `input.rs` | how much input is left (open, draining, finishing a frame, EOF, drained) |
//! | `plan.rs` | what the protocols answer the handler: a `Plan` per chunk, a `Breach`, and how a connection `End`s (a leaf) |
//! | `detect.rs`, `raw.rs`, `framed.rs` | the stream protocols, as state machines over chunks: no socket, no buffer |
//!
//! A server with faults (`crate::fault`) gives each handler its connection's
//! `fault::Active`, which the handler calls between the protocol's `Plan` and the peer's
//! write, before each read, and at the end.
//!
//! A seqpacket connection runs the same handler with its own protocol (`Messages`: each
//! message back whole), so the drain, the idle timeout and backpressure exist once.
//!
//! Invariants:
//! - **Nothing lost**: every byte read is either echoed (raw, Data frames, bytes held while
//!   detecting) or is a control frame the protocol consumes; at shutdown the bytes already
//!   queued in the socket are read and echoed before the close.
//! - **Memory does not depend on the peer**: reads land in a per-thread scratch buffer and are
//!   echoed from it at once; a connection keeps only what the socket would not take yet (at
//!   most one read), a partial header or detection prefix (inline, 8 bytes), or one control
//!   frame being collected (at most [`udsecho_proto::MAX_CONTROL_FRAME`]). An idle connection,
//!   and one stalled in a header or in the middle of a 4 GiB frame, holds no buffer at all.
//! - **Backpressure**: while an echo is pending nothing more is read, so a peer that does not
//!   read stops being read from.

mod detect;
mod ending;
mod framed;
mod handler;
mod input;
mod passing;
mod peer;
mod plan;
mod raw;
mod scratch;
mod settings;

pub(crate) use self::handler::serve;
pub(crate) use self::peer::{Kind, Peer};
pub(crate) use self::plan::{End, Faulted};
pub(crate) use self::settings::Settings;
