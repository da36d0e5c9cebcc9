//! Shutdown, modelled explicitly: one handle the signal handler (or a test) triggers, and
//! tokens every connection task watches.
//!
//! Two stages: *graceful* (stop accepting, drain every connection, say Goodbye) and
//! *immediate* (the drain took longer than `--shutdown-timeout`, or a second signal came:
//! cut what is left).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

/// Starts and observes a server's shutdown. Cheap to clone (one pointer, as every connection
/// holds one); all clones control one server.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Stages>);

/// The two stages: tokens to wait on, and the stage reached as one atomic, which a connection
/// reads on every turn of its loop (a token's own `is_cancelled` takes a lock that every
/// connection on every thread would share).
#[derive(Debug, Default)]
struct Stages {
    graceful: CancellationToken,
    immediate: CancellationToken,
    /// [`Stage`] as a number: only ever goes up.
    reached: AtomicU8,
}

/// How far the shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    Serving = 0,
    Graceful = 1,
    Immediate = 2,
}

impl Shutdown {
    /// A handle for a server that has not begun shutting down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins the graceful shutdown.
    pub fn begin(&self) {
        self.0
            .reached
            .fetch_max(Stage::Graceful as u8, Ordering::Release);
        self.0.graceful.cancel();
    }

    /// Ends every connection now, drained or not (implies [`Shutdown::begin`]).
    pub fn force(&self) {
        self.0
            .reached
            .fetch_max(Stage::Immediate as u8, Ordering::Release);
        self.0.graceful.cancel();
        self.0.immediate.cancel();
    }

    /// Has the graceful shutdown begun?
    pub fn is_begun(&self) -> bool {
        self.stage() >= Stage::Graceful
    }

    /// The stage reached: one atomic load, for a connection's every turn.
    pub(crate) fn stage(&self) -> Stage {
        match self.0.reached.load(Ordering::Acquire) {
            0 => Stage::Serving,
            1 => Stage::Graceful,
            _ => Stage::Immediate,
        }
    }

    /// Resolves when the graceful shutdown begins.
    pub async fn begun(&self) {
        self.0.graceful.cancelled().await;
    }

    /// An owned future that resolves when the graceful shutdown begins: kept across many
    /// waits, it registers its waiter once instead of once per wait.
    pub(crate) fn begun_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.graceful.clone().cancelled_owned()
    }

    /// An owned future that resolves when connections must end at once.
    pub(crate) fn forced_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.immediate.clone().cancelled_owned()
    }

    /// Resolves when connections must end at once.
    pub async fn forced(&self) {
        self.0.immediate.cancelled().await;
    }
}
