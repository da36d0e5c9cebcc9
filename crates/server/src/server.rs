//! The accept loop: one task per connection, a limit on how many run at once, and a drain
//! that waits for every task before the socket file goes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::connection::{self, Settings};
use crate::listener::Listener;
use crate::shutdown::Shutdown;

/// The listening socket failed in a way no waiting can heal (it is not a listening socket
/// any more, or never was: `EINVAL`, `ENOTSOCK`, `EBADF`...).
#[derive(Debug, thiserror::Error)]
#[error(
    "{socket}: accepting connections failed: {source} (the listening socket is unusable; the server stopped after draining)"
)]
pub struct ServeError {
    /// The socket, as shown in logs.
    pub socket: String,
    /// The error `accept` returned.
    #[source]
    pub source: io::Error,
}

/// What an `accept` error means for the loop.
enum AcceptFailure {
    /// The peer left before we accepted it: nothing to do.
    PeerGone,
    /// Out of descriptors or memory: back off; connections that end give them back.
    Exhausted,
    /// The listener itself is broken.
    Fatal,
}

fn classify(e: &io::Error) -> AcceptFailure {
    use rustix::io::Errno;
    let Some(code) = e.raw_os_error() else {
        return AcceptFailure::Fatal;
    };
    let is = |errno: Errno| code == errno.raw_os_error();
    if [
        Errno::CONNABORTED,
        Errno::PROTO,
        Errno::INTR,
        Errno::AGAIN,
        Errno::PERM,
    ]
    .into_iter()
    .any(is)
    {
        AcceptFailure::PeerGone
    } else if [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .into_iter()
        .any(is)
    {
        AcceptFailure::Exhausted
    } else {
        AcceptFailure::Fatal
    }
}

/// How often a run of resource errors is summarised in the log.
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long to wait before accepting again when out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Keeps a run of `accept` failures (out of descriptors: many a second) to a first line and
/// then one summary every [`ACCEPT_REPORT_EVERY`].
#[derive(Debug, Default)]
struct AcceptErrors {
    /// Failures since the last line written.
    unreported: u64,
    /// When the last line was written; `None` outside a run of failures.
    last_report: Option<Instant>,
    /// The most recent error, for the summary.
    last: Option<String>,
}

impl AcceptErrors {
    fn failed(&mut self, name: &str, e: &io::Error) {
        let now = Instant::now();
        match self.last_report {
            None => {
                tracing::warn!(
                    "accept on {name}: {e}; backing off (open connections are still served; \
                     further errors are summarised every {}s)",
                    ACCEPT_REPORT_EVERY.as_secs()
                );
                self.last_report = Some(now);
            }
            Some(at) => {
                self.unreported += 1;
                self.last = Some(e.to_string());
                if now.duration_since(at) >= ACCEPT_REPORT_EVERY {
                    self.report(name, now);
                }
            }
        }
    }

    fn report(&mut self, name: &str, now: Instant) {
        if self.unreported > 0 {
            tracing::warn!(
                "accept on {name}: {} more error(s) in the last {}s ({})",
                self.unreported,
                ACCEPT_REPORT_EVERY.as_secs(),
                self.last.as_deref().unwrap_or("?")
            );
        }
        self.unreported = 0;
        self.last_report = Some(now);
    }

    fn recovered(&mut self, name: &str) {
        if self.last_report.take().is_some() {
            let missed = std::mem::take(&mut self.unreported);
            tracing::info!(
                "accept on {name}: accepting again ({missed} error(s) since the last report)"
            );
        }
    }
}

/// Serves `listener` until `shutdown` begins, then drains every connection (bounded by
/// `config.shutdown_timeout`) and removes the socket file if this server created it.
///
/// Returns once everything is closed. Errors of single connections are logged, never
/// returned: one peer cannot stop the server. Only a listening socket that cannot accept
/// at all ends the server early (after draining), with a [`ServeError`].
pub async fn run(
    listener: Listener,
    config: &Config,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let Listener {
        socket,
        owned_file,
        name,
    } = listener;
    let settings = Arc::new(Settings {
        mode: config.mode,
        max_frame: config.max_frame,
        idle_timeout: config.idle_timeout,
        agent: concat!("udsecho/", env!("CARGO_PKG_VERSION")),
    });
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let next_id = AtomicU64::new(1);
    tracing::info!("listening on {name} (mode {})", config.mode);
    let mut accept_errors = AcceptErrors::default();
    let mut fatal = None;

    loop {
        // Take a slot before accepting: past the limit, new peers wait in the listen backlog
        // and are served as soon as a connection ends.
        let permit = tokio::select! {
            () = shutdown.begun() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.begun() => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, _addr)) => stream,
                Err(e) => match classify(&e) {
                    AcceptFailure::PeerGone => {
                        tracing::debug!("accept on {name}: {e}");
                        continue;
                    }
                    AcceptFailure::Exhausted => {
                        // Wait a little rather than spin; connections that end give
                        // descriptors and memory back.
                        accept_errors.failed(&name, &e);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                    AcceptFailure::Fatal => {
                        fatal = Some(e);
                        break;
                    }
                },
            },
        };
        accept_errors.recovered(&name);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (pid, uid) = match stream.peer_cred() {
            Ok(cred) => (cred.pid().unwrap_or(0), Some(cred.uid())),
            Err(_) => (0, None),
        };
        if !config.allow_uids.is_empty() && !uid.is_some_and(|uid| config.allow_uids.contains(&uid))
        {
            tracing::warn!(
                conn = id,
                pid,
                uid,
                "peer uid is not in --allow-uid; closing"
            );
            continue;
        }
        let connection = connection::serve(stream, settings.clone(), &shutdown, permit);
        let span = tracing::debug_span!("conn", id, pid, uid);
        // The span costs memory in every task: only when it will be seen (-v).
        if span.is_disabled() {
            tracker.spawn(connection);
        } else {
            tracker.spawn(connection.instrument(span));
        }
    }

    // Stop accepting at once: new peers get "connection refused" rather than a hang.
    drop(socket);
    if let Some(e) = &fatal {
        tracing::error!("accept on {name}: {e}; this listening socket cannot be served");
        shutdown.begin();
    }
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        tracing::info!("shutting down: draining {open} connection(s)");
    }
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still open after --shutdown-timeout {}; closing them",
            tracker.len(),
            humantime::format_duration(config.shutdown_timeout)
        );
        shutdown.force();
        tracker.wait().await;
    }
    drop(owned_file);
    tracing::info!("stopped");
    match fatal {
        Some(source) => Err(ServeError {
            socket: name,
            source,
        }),
        None => Ok(()),
    }
}
