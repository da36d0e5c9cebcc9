//! Closing aside: descriptors the server sent back that may be the last references to what
//! they name are closed on a thread of their own, so a close that waits cannot hold the
//! client past its `--timeout`.
//!
//! Closing the last reference to a file runs that file's own close, which can wait as long as
//! its other end likes: a TCP socket with `SO_LINGER` and unsent data waits out its linger
//! time (20 s in the review that found it). A server can hand such a socket back in place of
//! what it was sent. The kernel runs that last close on the thread that drops the reference,
//! so dropping them elsewhere is enough; a thread still waiting when the client exits is ended
//! with the process. The same as the server's `descriptors/aside.rs`.

use std::os::fd::OwnedFd;

/// Closes `fds` on a new thread (here if none can be started).
pub(crate) fn close_aside(fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    // On failure the closure, and so the descriptors, are dropped here.
    let _ = std::thread::Builder::new()
        .name("udsecho-close".to_owned())
        .spawn(move || drop(fds));
}
