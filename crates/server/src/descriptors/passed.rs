//! [`Passed`]: the descriptors a peer passed with one read, held until the bytes that carry
//! them back are written, and every way of letting them go: returned with an echo, closed
//! aside quietly (the caller reports), lost with a log line, or refused by the kernel.

use std::os::fd::OwnedFd;

use super::aside::Aside;
use super::{describe, tally};

/// Descriptors a peer passed, held until the bytes that carry them back are written.
#[derive(Debug, Default)]
pub(crate) struct Passed(pub(super) Vec<OwnedFd>);

impl Passed {
    /// None held.
    pub(crate) const fn none() -> Passed {
        Passed(Vec::new())
    }

    /// What a read brought, counted as held from now.
    pub(super) fn take(fds: Vec<OwnedFd>) -> Passed {
        tally::hold(fds.len());
        Passed(fds)
    }

    /// One descriptor the server adds of its own (an `extra_fd` fault), counted as held.
    pub(crate) fn one(fd: OwnedFd) -> Passed {
        Passed::take(vec![fd])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds what a later read brought (at most one message's worth in all: the caller reads
    /// with room for `MAX_PER_READ - self.len()` only).
    pub(crate) fn append(&mut self, mut more: Passed) {
        self.0.append(&mut more.0);
    }

    /// Ours are not the last references — the kernel holds its own, in the reply that carried
    /// them, or in the message they were peeked from — so they close here (a close that is not
    /// the last cannot wait).
    pub(crate) fn returned(&mut self) {
        let n = self.0.len();
        self.0.clear();
        tally::unhold(n);
    }

    /// Closes them unreturned (aside: ours may be the last references) without a word, for a
    /// caller that reports them itself.
    pub(crate) fn close(&mut self) {
        let fds = std::mem::take(&mut self.0);
        if !fds.is_empty() {
            Aside::counted(fds).close();
        }
    }

    /// If `e` is the kernel refusing to send them back (`ETOOMANYREFS`: this server's user has
    /// too many descriptors in flight, to peers that do not read their echoes; one budget for
    /// the whole user, so one such peer can cause it for everyone), closes them with a log
    /// line and says so (`true`): the caller sends the bytes again without them, and the
    /// connection goes on.
    pub(crate) fn refused(&mut self, e: rustix::io::Errno) -> bool {
        if e != rustix::io::Errno::TOOMANYREFS || self.0.is_empty() {
            return false;
        }
        self.lose(
            "the kernel would not send them back: this server's user has too many \
             descriptors in flight (peers that do not read their echoes)",
        );
        true
    }

    /// Closes them unreturned, saying why.
    pub(crate) fn lose(&mut self, why: &str) {
        if !self.0.is_empty() {
            tracing::warn!(
                "closed {} passed descriptor(s) without returning them: {why}",
                self.0.len()
            );
            self.close();
        }
    }

    /// What each is, in order (the proxy's recording).
    pub(crate) fn identities(&self) -> Vec<describe::Identity> {
        use std::os::fd::AsFd;
        self.0
            .iter()
            .map(|fd| describe::identify(fd.as_fd()))
            .collect()
    }

    /// What they are, for `-v`: `2 descriptors: file /etc/hosts, socket (unix stream)`.
    pub(crate) fn describe(&self) -> String {
        describe::describe(&self.0)
    }
}

impl Drop for Passed {
    fn drop(&mut self) {
        self.lose("the connection ended before an echo could carry them");
    }
}
