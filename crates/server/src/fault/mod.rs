//! Faults on demand: a peer that misbehaves when asked to, for testing the program on the
//! other end of the socket (a client's timeouts, its short reads, a close mid-message...).
//!
//! | file | holds |
//! |---|---|
//! | (`udsecho-fault`) | the grammar, shared with the client: one `--fault` value parsed into a [`FaultSpec`] |
//! | `table.rs` | the server's faults ([`Faults`]): what `--fault` gave and the control socket changed, with a generation number a connection reads in one atomic load, and which connections a fault hits (seeded) |
//! | `effects.rs` | what the faults hitting a connection or a datagram add up to, and their seeded draws (jitter, the message faults, the next canned answer) |
//! | `active.rs` | one connection's faults ([`Active`]): the merged effects, the echo held back for a delay, a rate or slices, and the counters the faults count with |
//! | `datagrams.rs` | a datagram socket's faults ([`Datagrams`]): per datagram, dropped, held back, cut, answered or sent twice; a share of senders, by address |
//! | `control.rs` | the control socket: `add`, `remove`, `list`, `clear`, one line each |
//!
//! The handler calls down into [`Active`] at four points, and only when the server has faults
//! at all (`--fault` or `--control`; otherwise the connection holds `None` and each turn
//! costs one `Option` check): before a read (held echo due? reading stopped? a deadline?),
//! the read's size, between the protocol's `Plan` and the peer's write, and at the end
//! (a slow close). A connection's faults are its own: the counters, the held echo and the
//! random draws (jitter, loss) are per connection, so one connection's fault never touches
//! another's bytes.
//!
//! The datagram loop calls down into [`Datagrams`] where it answers a datagram (with the
//! same `Option` check, per datagram, when the server has no faults).
//!
//! When the graceful shutdown begins, a connection's faults are lifted: what it holds goes
//! out at once and the drain runs as without faults, so SIGTERM still drains and exits
//! within `--shutdown-timeout`. The same for the datagram socket: a datagram held back is
//! answered, and the queued ones are answered as without faults.

mod active;
mod control;
mod datagrams;
mod effects;
mod table;

pub(crate) use self::active::{Active, Turn};
pub use self::control::Control;
pub(crate) use self::control::serve_control;
pub(crate) use self::datagrams::{Datagrams, sender_of};
pub(crate) use self::effects::{Draws, Effects, Fate};
pub use self::table::Faults;
pub use udsecho_fault::{Answer, Fault, FaultError, FaultSpec};
