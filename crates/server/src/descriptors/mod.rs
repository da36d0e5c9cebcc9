//! Descriptors passed with the bytes (`SCM_RIGHTS`): taken with a read, sent back with the
//! first bytes written after it, and counted so the server never runs out of its own.
//!
//! Every read in every socket type is a `recvmsg` with room for one message's descriptors
//! ([`MAX_PER_READ`], the kernel's `SCM_MAX_FD`): a plain `recv` would make the kernel close
//! them. What a read brings is a [`Passed`]: counted in a process-wide tally until the echo
//! carries it out (our copies close once the kernel holds its own in the reply) or the
//! connection ends without one (closed with a log line, never silently).
//!
//! The tally is what keeps descriptor-passing peers from starving everyone else of
//! descriptors: [`room`] is how many a read may take now (the limit less what connections and
//! held descriptors use, less a reserve for accepting and for the server's own), and a
//! connection that passes descriptors waits for room ([`Waiter`]) rather than reading into a
//! truncation. A read that the kernel still truncates (`MSG_CTRUNC`: the control buffer was
//! smaller than what came, or the process hit its limit while taking them) is reported, and
//! its connection ended, by the caller.

//!
//! | file | holds |
//! |---|---|
//! | `tally.rs` | the process-wide count, [`room`], [`Counted`] connections, the [`Waiter`] for room |
//! | `passed.rs` | [`Passed`]: one read's descriptors, and how they are let go |
//! | `aside.rs` | [`close_aside`]: closing away from the serving threads |
//! | `describe.rs` | the `-v` note, and what one descriptor is ([`identify`]) |
//! | `cmsg.rs` | the `recvmsg`/`sendmsg` themselves |

mod aside;
mod cmsg;
mod describe;
mod passed;
mod tally;

pub(crate) use self::aside::close_aside;
pub(crate) use self::cmsg::{Received, recv, recv_from, send};
pub(crate) use self::describe::Identity;
pub(crate) use self::passed::Passed;
pub(crate) use self::tally::{Counted, Waiter, count_own, limit, open_now, room};

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`), and so the most one read
/// can bring: a stream read stops after the first chunk that carries any.
pub(crate) const MAX_PER_READ: usize = udsecho_unix::passing::MAX_FDS;
