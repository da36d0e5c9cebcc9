//! Handing a descriptor to tokio's reactor, for exactly the readiness asked for.
//!
//! The one place that calls the deprecated `AsyncFd::with_interest`: deprecated because a
//! registered descriptor could be closed behind the runtime's back through `get_mut`; its
//! replacement is `unsafe`, which this workspace forbids. Here each `AsyncFd` owns its
//! `OwnedFd`, and no code calls `get_mut` on it or replaces it, so the descriptor stays open
//! exactly as long as it is registered. A stream connection is registered for readability
//! only (a peer reading our echo then wakes nobody), and for the priority readiness of an
//! out-of-band byte, until its first echo backs up.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` for readability and writability.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    register_for(fd, Interest::READABLE | Interest::WRITABLE)
}

/// Registers `fd` for the given readiness only.
#[allow(deprecated)]
pub(crate) fn register_for(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}
