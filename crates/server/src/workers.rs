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
//!
//! Fewer threads than asked for may serve, with a warning, never a failure: a thread the
//! system will not create (`RLIMIT_NPROC`, a pids cgroup such as systemd's `TasksMax=`) and
//! the ones after it are left out; and each thread holds descriptors of its own (its epoll
//! set and wakers), so threads are started only while they leave at least half of the
//! descriptor limit to connections and what they pass ([`DescriptorBudget`]).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::descriptors;

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
    /// that cannot be started, or would leave too few descriptors to connections, is logged
    /// and left out, with the ones after it: the others serve.
    pub(crate) fn start(threads: usize, busy_poll: Duration) -> Workers {
        let stop = CancellationToken::new();
        let mut handles = vec![Handle::current()];
        let mut budget = DescriptorBudget::new();
        for index in 1..threads {
            if !budget.room_for_another() {
                tracing::warn!(
                    "serving on {index} threads of the {threads} asked for: each holds about {} \
                     descriptors, and half of the descriptor limit ({}) is kept for \
                     connections (raise `ulimit -n` for more threads)",
                    budget.per_thread,
                    budget.limit
                );
                break;
            }
            match spawn(index, stop.clone(), busy_poll) {
                Ok(handle) => {
                    handles.push(handle);
                    budget.started();
                }
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
///
/// The runtime is built on the new thread and its handle sent back: built here, a runtime
/// whose thread could not be started would be dropped here, in the caller's async context,
/// which tokio refuses with a panic.
fn spawn(index: usize, stop: CancellationToken, busy_poll: Duration) -> io::Result<Handle> {
    let (handle_tx, handle_rx) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name(format!("udsecho-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            if handle_tx.send(Ok(runtime.handle().clone())).is_err() {
                return;
            }
            runtime.spawn(crate::busy_poll::run(busy_poll));
            runtime.block_on(stop.cancelled());
        })?;
    handle_rx.recv().unwrap_or_else(|_| {
        Err(io::Error::other(
            "the thread ended before its runtime started",
        ))
    })
}

/// How many more serving threads the descriptor limit allows: a thread is started only while
/// what the process holds, with one more thread's worth, stays within half of the limit. The
/// other half is for connections (one descriptor each) and what they pass, so a server under
/// a small limit (`--threads 64` under `ulimit -n 128`) still accepts.
#[derive(Debug)]
struct DescriptorBudget {
    /// `RLIMIT_NOFILE`.
    limit: usize,
    /// Descriptors a thread took, as measured on the first one (until then, a guess).
    per_thread: usize,
    /// Descriptors open before the last thread started, and whether that is known.
    before: Option<usize>,
    measured: bool,
}

impl DescriptorBudget {
    fn new() -> DescriptorBudget {
        DescriptorBudget {
            limit: descriptors::limit(),
            per_thread: 4,
            before: None,
            measured: false,
        }
    }

    /// Would one more thread stay within half of the limit?
    fn room_for_another(&mut self) -> bool {
        self.before = descriptors::open_now();
        // Without /proc there is nothing to measure: no cap.
        self.before
            .is_none_or(|open| open + self.per_thread <= self.limit / 2)
    }

    /// A thread has started: the first one says what a thread costs.
    fn started(&mut self) {
        if !self.measured
            && let (Some(before), Some(after)) = (self.before, descriptors::open_now())
        {
            self.per_thread = after.saturating_sub(before).max(1);
            self.measured = true;
        }
    }
}
