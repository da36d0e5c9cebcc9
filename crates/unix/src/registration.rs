//! Handing a descriptor to tokio's reactor, for exactly the readiness asked for.
//!
//! The one place that calls the deprecated `AsyncFd::with_interest`: deprecated (tokio 1.54,
//! tokio#8587) because a `T: AsRawFd` in general may not own its descriptor, or may return
//! another one later, so the registration could outlive it; the replacement,
//! `register_with_interest`, is `unsafe`, which the workspace forbids. Here each `AsyncFd`
//! owns an `OwnedFd`, which owns one open descriptor, always returns it, and closes it only on
//! drop, after the registration is gone; callers never replace it (no `get_mut`). So the
//! descriptor stays open exactly as long as it is registered.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` for readability and writability. Call it inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::OwnedFd;
///
/// let (a, b) = std::os::unix::net::UnixStream::pair()?;
/// a.set_nonblocking(true)?;
/// let a = udsecho_unix::registration::register(OwnedFd::from(a))?;
/// std::io::Write::write_all(&mut &b, b"x")?;
/// a.readable().await?.retain_ready();
/// # Ok(()) }
/// ```
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    register_for(fd, Interest::READABLE | Interest::WRITABLE)
}

/// Registers `fd` for the given readiness only (a connection that reads until its echo backs
/// up wakes nobody when its peer reads). Call it inside a tokio runtime.
#[allow(deprecated)]
pub fn register_for(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}
