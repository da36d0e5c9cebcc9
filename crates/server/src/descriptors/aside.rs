//! Closing aside: what the server closes unreturned is closed on a thread of its own, so a
//! close that waits (the last reference to a lingering socket) stalls no serving thread.

use std::os::fd::OwnedFd;

use super::tally;

/// Closes `fds` away from the serving threads, counting them as held until they are closed.
///
/// Closing the last reference to what a peer passed runs that file's own close, which can
/// wait as long as the peer likes: a TCP socket with `SO_LINGER` and unsent data waits out
/// its linger time. On a serving thread that would stall every connection on it, so what
/// the server closes unreturned — held descriptors, a connection socket whose queue may hold
/// some — is closed on a thread of its own. The kernel defers that last close to the thread
/// that dropped the reference, which is why dropping them elsewhere is enough.
pub(crate) fn close_aside(fds: Vec<OwnedFd>) {
    if !fds.is_empty() {
        Aside::new(fds).close();
    }
}

/// Descriptors being closed aside: counted as held until they are closed.
pub(super) struct Aside(Vec<OwnedFd>);

impl Aside {
    /// Takes `fds` to close, counting them as held from now.
    pub(super) fn new(fds: Vec<OwnedFd>) -> Aside {
        tally::hold(fds.len());
        Aside(fds)
    }

    /// Takes `fds` already counted as held (a [`Passed`](super::Passed) letting go).
    pub(super) fn counted(fds: Vec<OwnedFd>) -> Aside {
        Aside(fds)
    }

    /// On a new thread (closes are rare: a connection's abnormal end, a truncation, a
    /// datagram's drop), so one that waits holds up no other; here if none can be started.
    pub(super) fn close(self) {
        let started = std::thread::Builder::new()
            .name("udsecho-close".to_owned())
            .spawn(move || drop(self));
        if let Err(e) = started {
            // The closure, and so the descriptors, were dropped here.
            tracing::debug!("closing passed descriptors on this thread: {e}");
        }
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        let n = self.0.len();
        self.0.clear();
        tally::unhold(n);
    }
}
