//! The process-wide tally of descriptors: how many connections and held descriptors use, and
//! so how many a read may take now ([`room`]). What keeps descriptor-passing peers from
//! starving everyone else: a connection that passes descriptors waits for room ([`Waiter`])
//! rather than reading into a truncation.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::MAX_PER_READ;

/// Descriptors kept out of reach of passed ones besides the server's own ([`OWN`]): room to
/// accept, to log, and for what serving opens on the way.
const RESERVE: usize = 64;

/// The server's own descriptors once it serves (listener, lock file, logging, each serving
/// thread's epoll set and wakers: about four a thread, so 160 on a 40-core machine), counted
/// by [`count_own`]; until then, a guess for one thread.
static OWN: AtomicUsize = AtomicUsize::new(16);

/// Descriptors received and not yet sent back or closed, in the whole process.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// Connections open, in the whole process: each holds a descriptor.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Connections waiting for [`room`]: releases notify only when someone waits.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Woken when held descriptors are released or a connection closes.
static RELEASED: Notify = Notify::const_new();
/// `RLIMIT_NOFILE`, read the first time it is needed (after `main` raised it).
static LIMIT: OnceLock<usize> = OnceLock::new();

/// `RLIMIT_NOFILE` (the soft limit: what `open` and `accept` are held to).
pub(crate) fn limit() -> usize {
    *LIMIT.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        limit
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX)
    })
}

/// Counts the server's own descriptors, once its serving threads have started and before it
/// accepts: what passed descriptors must leave alone besides [`RESERVE`].
pub(crate) fn count_own() {
    if let Some(n) = open_now() {
        OWN.store(n, SeqCst);
    }
}

/// How many descriptors the process has open now (`/proc/self/fd`), if that can be read.
pub(crate) fn open_now() -> Option<usize> {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => Some(dir.count()),
        Err(e) => {
            tracing::debug!("counting our own descriptors: {e}");
            None
        }
    }
}

/// How many descriptors a read may take now, at most [`MAX_PER_READ`].
pub(crate) fn room() -> usize {
    let used = RESERVE + OWN.load(SeqCst) + CONNECTIONS.load(SeqCst) + HELD.load(SeqCst);
    limit().saturating_sub(used).min(MAX_PER_READ)
}

fn released() {
    if WAITING.load(SeqCst) > 0 {
        RELEASED.notify_waiters();
    }
}

/// An open connection, counted against the descriptor limit for as long as it lives.
#[derive(Debug)]
pub(crate) struct Counted(());

impl Counted {
    pub(crate) fn new() -> Counted {
        CONNECTIONS.fetch_add(1, SeqCst);
        Counted(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, SeqCst);
        released();
    }
}

/// Waits until a whole message's worth of descriptors fits: what a connection that passes
/// descriptors does before its next read, when the process is near its limit.
#[derive(Debug, Default)]
pub(crate) struct Waiter(Option<Pin<Box<Notified<'static>>>>);

impl Waiter {
    /// Ready once [`room`] holds `need` descriptors (at most [`MAX_PER_READ`]): as many as the
    /// connection passed last time. A whole message's worth could never fit under a small
    /// limit; a passer that sends more than last time finds its read truncated instead.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<()> {
        let need = need.min(MAX_PER_READ);
        loop {
            if room() >= need {
                self.stop();
                return Poll::Ready(());
            }
            match &mut self.0 {
                None => {
                    // Registered before the count is read again, so no release is missed.
                    let mut notified = Box::pin(RELEASED.notified());
                    notified.as_mut().enable();
                    WAITING.fetch_add(1, SeqCst);
                    self.0 = Some(notified);
                }
                Some(notified) => {
                    if notified.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.stop();
                }
            }
        }
    }

    fn stop(&mut self) {
        if self.0.take().is_some() {
            WAITING.fetch_sub(1, SeqCst);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` more descriptors are held (received, or being closed aside).
pub(super) fn hold(n: usize) {
    HELD.fetch_add(n, SeqCst);
}

/// `n` held descriptors are closed: uncounted, and whoever waits for room is told.
pub(super) fn unhold(n: usize) {
    if n > 0 {
        HELD.fetch_sub(n, SeqCst);
        released();
    }
}
