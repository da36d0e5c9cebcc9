//! Shutdown, modelled explicitly: one handle the signal handler (or a test) triggers, and
//! tokens every connection task watches.
//!
//! Two stages: *graceful* (stop accepting, drain every connection, say Goodbye) and
//! *immediate* (the drain took longer than `--shutdown-timeout`, or a second signal came:
//! cut what is left).

use tokio_util::sync::CancellationToken;

/// Starts and observes a server's shutdown. Cheap to clone; all clones control one server.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    graceful: CancellationToken,
    immediate: CancellationToken,
}

impl Shutdown {
    /// A handle for a server that has not begun shutting down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins the graceful shutdown.
    pub fn begin(&self) {
        self.graceful.cancel();
    }

    /// Ends every connection now, drained or not (implies [`Shutdown::begin`]).
    pub fn force(&self) {
        self.graceful.cancel();
        self.immediate.cancel();
    }

    /// Has the graceful shutdown begun?
    pub fn is_begun(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// Resolves when the graceful shutdown begins.
    pub async fn begun(&self) {
        self.graceful.cancelled().await;
    }

    /// An owned future that resolves when the graceful shutdown begins: kept across many
    /// waits, it registers its waiter once instead of once per wait.
    pub(crate) fn begun_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.graceful.clone().cancelled_owned()
    }

    /// Must connections end at once?
    pub(crate) fn is_forced(&self) -> bool {
        self.immediate.is_cancelled()
    }

    /// An owned future that resolves when connections must end at once.
    pub(crate) fn forced_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.immediate.clone().cancelled_owned()
    }

    /// Resolves when connections must end at once.
    pub async fn forced(&self) {
        self.immediate.cancelled().await;
    }
}
