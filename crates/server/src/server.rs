//! The accept loop: one task per connection, a limit on how many run at once, and a drain
//! that waits for every task before the socket file goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::connection::{self, End, Settings};
use crate::listener::Listener;
use crate::shutdown::Shutdown;

/// Serves `listener` until `shutdown` begins, then drains every connection (bounded by
/// `config.shutdown_timeout`) and removes the socket file if this server created it.
///
/// Returns once everything is closed. Errors of single connections are logged, never
/// returned: one peer cannot stop the server.
pub async fn run(listener: Listener, config: &Config, shutdown: Shutdown) {
    let Listener {
        socket,
        owned_file,
        name,
    } = listener;
    let settings = Arc::new(Settings {
        mode: config.mode,
        max_frame: config.max_frame,
        idle_timeout: config.idle_timeout,
        agent: concat!("udsecho/", env!("CARGO_PKG_VERSION")).to_owned(),
    });
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let next_id = AtomicU64::new(1);
    tracing::info!("listening on {name} (mode {})", config.mode);

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
                Err(e) => {
                    // Out of descriptors or memory: wait a little rather than spin; the
                    // connections that end will give them back.
                    tracing::warn!("accept on {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
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
        let span = tracing::debug_span!("conn", id, pid, uid);
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(
            async move {
                let _permit = permit;
                tracing::debug!("open");
                tokio::select! {
                    biased;
                    () = shutdown.forced() => tracing::debug!("cut: shutdown timeout"),
                    result = connection::serve(stream, &settings, &shutdown) => match result {
                        Ok(End::Violation) => tracing::debug!("closed after a protocol error"),
                        Ok(end) => tracing::debug!(?end, "closed"),
                        Err(e) => tracing::debug!("closed: {e}"),
                    },
                }
            }
            .instrument(span),
        );
    }

    // Stop accepting at once: new peers get "connection refused" rather than a hang.
    drop(socket);
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
}
