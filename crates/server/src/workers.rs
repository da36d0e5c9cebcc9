//! The threads connections are served on: thread-per-core.
//!
//! Each serving thread is a current-thread tokio runtime with its own epoll set, its own timers
//! and its own connections, and never touches another's: a connection's reads, echoes,
//! wake-ups and timers all happen on the thread it was handed to. The caller's thread (the one
//! that runs [`crate::run`]) is the first of them, and also accepts: each accepted connection is
//! registered with the reactor of the thread whose turn it is and spawned there, which costs
//! one cross-thread wake-up per connection and none per echo. (tokio's multi-thread runtime
//! instead shares one epoll set between its workers and moves tasks and wake-ups between
//! them; that is what this replaces. AF_UNIX has no `SO_REUSEPORT` to give each thread a
//! listener of its own.)
//!
//! Connections are handed out in turn. What every guarantee needs is shared the usual way and
//! is thread-safe: one `--max-connections` semaphore (taken before `accept`), one shutdown
//! (cancellation tokens every connection watches), one task tracker the drain waits on.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The serving threads, the caller's first.
#[derive(Debug)]
pub(crate) struct Workers {
    /// Each thread's runtime, where its connections are registered and spawned.
    handles: Vec<Handle>,
    /// Whose turn is next.
    next: AtomicUsize,
    /// Tells the threads of our own to stop, once every connection has ended.
    stop: CancellationToken,
}

impl Workers {
    /// The caller's thread and `threads - 1` more, each polling for `busy_poll` after its
    /// last echo (`busy_poll`; the caller's own poller is the caller's to start). A thread
    /// that cannot be started is logged and left out: the others serve.
    pub(crate) fn start(threads: usize, busy_poll: Duration) -> Workers {
        let stop = CancellationToken::new();
        let mut handles = vec![Handle::current()];
        for index in 1..threads {
            match spawn(index, stop.clone(), busy_poll) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    tracing::warn!("cannot start serving thread {index}: {e}; serving on fewer");
                    break;
                }
            }
        }
        Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        }
    }

    /// How many threads serve.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The thread whose turn it is to take a connection.
    pub(crate) fn next(&self) -> &Handle {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[turn % self.handles.len()]
    }
}

impl Drop for Workers {
    /// Called once the drain is over: the threads of our own finish their runtimes and exit.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts serving thread `index`: a current-thread runtime, with its poller, that runs
/// whatever is spawned on it until `stop`.
fn spawn(index: usize, stop: CancellationToken, busy_poll: Duration) -> io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    thread::Builder::new()
        .name(format!("udsecho-{index}"))
        .spawn(move || {
            runtime.spawn(crate::busy_poll::run(busy_poll));
            runtime.block_on(stop.cancelled());
        })?;
    Ok(handle)
}
