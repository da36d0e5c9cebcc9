//! Descriptors passed with each message (`--fd`, `SCM_RIGHTS`): the set the command line names
//! ([`Passing`], opened or taken once at startup, from [`FdSpec`]s), what comes back
//! ([`Returned`], kept in an [`Inbox`] by the reads), and `send`'s check that what comes back
//! is what went out ([`FdCheck`]): the same open file descriptions, in the order sent, as many
//! as sent. The system calls are udsecho-unix's (`udsecho_unix::passing`).
//!
//! What comes back and is not kept is closed aside (`aside.rs`): it may be the last reference
//! to a file whose close waits. Over a stream, `send` checks what comes back as each read
//! brings it and stops at the first descriptor that cannot be one it sent, and the pipe closes
//! what comes back as it comes: nothing waits for a frame to complete.
//!
//! What comes back is compared as a sequence, not by byte position: a stream `recvmsg` stops
//! after the chunk that carries descriptors, and the server returns descriptors on the first
//! bytes of the echo of the read that brought them, which may hold the end of the message
//! before. Both rules keep the order, so the n-th descriptor back must be the n-th sent, and
//! once a message's echo is whole, its descriptors must have come.

mod aside;
mod check;
mod passing;
mod returned;
mod spec;

pub use udsecho_unix::passing::MAX_FDS;

pub(crate) use self::aside::close_aside;
pub(crate) use self::check::FdCheck;
pub use self::passing::Passing;
pub(crate) use self::passing::send;
pub(crate) use self::returned::{Inbox, Returned, recv};
pub use self::spec::{FdError, FdSpec};
