//! The server's main loop for each kind of socket — accept (stream, seqpacket: one task per
//! connection, a limit on how many run at once), a datagram loop, or one connection handed
//! over — and the drain that waits for every task before the socket file goes.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use udsecho_unix::credentials::{self, PeerPid};

use crate::config::{Config, SocketType};
use crate::connection::{self, Settings};
use crate::datagram;
use crate::fault::{self, Control, Faults};
use crate::listener::{Listener, Socket};
use crate::notify;
use crate::proxy;
use crate::shutdown::Shutdown;
use crate::workers::Workers;

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

/// Serves `listener` until `shutdown` begins (or, for a single connection handed over by a
/// supervisor, until it ends), then drains every connection (bounded by
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
    run_with_control(listener, None, config, shutdown).await
}

/// [`run`], with a control socket (`--control`) through which faults are added and removed
/// while the server runs; it is served until the shutdown begins, and its file removed.
pub async fn run_with_control(
    listener: Listener,
    control: Option<Control>,
    config: &Config,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let Listener {
        socket,
        owned_file,
        name,
    } = listener;
    let faults = fault_table(config, control.is_some());
    let control = match (control, &faults) {
        (Some(control), Some(faults)) => Some(tokio::spawn(fault::serve_control(
            control,
            faults.clone(),
            shutdown.clone(),
        ))),
        _ => None,
    };
    let kind = socket.kind();
    let proxy = proxy::start(config, &name, kind, faults.clone()).await;
    let settings = Arc::new(Settings {
        mode: config.mode,
        max_frame: config.max_frame,
        idle_timeout: config.idle_timeout,
        agent: concat!("udsecho/", env!("CARGO_PKG_VERSION")),
        faults,
        proxy,
    });
    // The serving threads of a listener live until the drain is over: their connections are
    // on them. A datagram socket or a single connection is served on this thread.
    let workers = matches!(socket, Socket::Stream(_) | Socket::Seqpacket(_))
        .then(|| Workers::start(config.threads.max(1), config.busy_poll));
    // This thread serves too (its share of the connections, a datagram socket, or the one
    // connection handed over): it polls after its echoes like the others.
    let poller = tokio::spawn(crate::busy_poll::run(config.busy_poll));
    crate::descriptors::count_own();
    let threads = match workers.as_ref().map_or(1, Workers::len) {
        1 => String::new(),
        n => format!(", {n} threads"),
    };
    match kind {
        // A proxy forwards whatever is said: no mode applies.
        SocketType::Stream if config.upstream.is_none() => {
            tracing::info!("listening on {name} (mode {}{threads})", config.mode);
        }
        _ => tracing::info!("listening on {name} ({kind}{threads})"),
    }
    notify::ready(&name);
    if let Some(recorder) = config.recorder.clone() {
        // A forced shutdown waits for no recording (a file that takes no more writes).
        let forced = shutdown.forced_owned();
        tokio::spawn(async move {
            forced.await;
            recorder.abandon();
        });
    }
    let tracker = TaskTracker::new();
    let fatal = match socket {
        Socket::Stream(listener) => {
            let acceptor = Acceptor::Stream(listener);
            let workers = workers.as_ref().expect("a listener has serving threads");
            accept_loop(
                &acceptor, &name, config, &settings, &shutdown, &tracker, workers,
            )
            .await
        }
        Socket::Seqpacket(listener) => {
            let acceptor = Acceptor::Seqpacket(listener);
            let workers = workers.as_ref().expect("a listener has serving threads");
            accept_loop(
                &acceptor, &name, config, &settings, &shutdown, &tracker, workers,
            )
            .await
        }
        Socket::Datagram(socket) => {
            match &settings.proxy {
                Some(proxy) => {
                    proxy::datagram::serve(socket, &name, proxy.clone(), config, &shutdown).await;
                }
                None => {
                    datagram::serve(socket, &name, config, settings.faults.as_ref(), &shutdown)
                        .await;
                }
            }
            None
        }
        Socket::OneStream(fd) => {
            serve_one(Accepted::Stream(fd), config, &settings, &shutdown, &tracker).await;
            None
        }
        Socket::OneSeqpacket(fd) => {
            serve_one(
                Accepted::Seqpacket(fd),
                config,
                &settings,
                &shutdown,
                &tracker,
            )
            .await;
            None
        }
    };
    if config.once && fatal.is_none() {
        // The one connection runs to its end unless a signal begins the shutdown, which
        // drains it like any other below.
        tracker.close();
        tokio::select! {
            () = shutdown.begun() => {}
            () = tracker.wait() => {}
        }
    }
    notify::stopping();
    if let Some(e) = &fatal {
        tracing::error!("accept on {name}: {e}; this listening socket cannot be served");
        shutdown.begin();
    }
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        tracing::info!(
            "shutting down: draining {open} connection{}",
            if open == 1 { "" } else { "s" }
        );
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
    poller.abort();
    if let Some(control) = control {
        // It stopped when the shutdown began; its file goes with it.
        let _ = control.await;
    }
    if let Some(recorder) = &config.recorder {
        recorder.finish().await;
    }
    drop(workers);
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

/// The server's faults, if it has any (`--fault`) or may get some (`--control`): with
/// neither, connections carry none and pay nothing for them.
fn fault_table(config: &Config, control: bool) -> Option<Arc<Faults>> {
    if config.faults.is_empty() && !control {
        return None;
    }
    let seed = config.fault_seed.unwrap_or_else(|| {
        // Not a secret: only which connections a fault hits, logged so it can be replayed.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
    });
    let faults = Faults::new(config.faults.clone(), seed);
    for (id, spec) in faults.list() {
        tracing::info!("fault {id}: {spec}");
    }
    tracing::info!("fault seed {seed} (--fault-seed {seed} replays which connections are hit)");
    Some(Arc::new(faults))
}

/// A socket that takes connections.
enum Acceptor {
    Stream(AsyncFd<OwnedFd>),
    Seqpacket(AsyncFd<OwnedFd>),
}

/// A connection it gave.
enum Accepted {
    Stream(OwnedFd),
    Seqpacket(OwnedFd),
}

impl Acceptor {
    async fn accept(&self) -> io::Result<Accepted> {
        let (Acceptor::Stream(listener) | Acceptor::Seqpacket(listener)) = self;
        let fd = accept(listener).await?;
        Ok(match self {
            Acceptor::Stream(_) => Accepted::Stream(fd),
            Acceptor::Seqpacket(_) => Accepted::Seqpacket(fd),
        })
    }
}

/// One connection from `listener`, non-blocking and close-on-exec (the control socket's too).
pub(crate) async fn accept(listener: &AsyncFd<OwnedFd>) -> io::Result<OwnedFd> {
    loop {
        let mut ready = listener.readable().await?;
        let accepted = ready.try_io(|fd| {
            rustix::net::accept_with(
                fd.get_ref(),
                rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        });
        if let Ok(result) = accepted {
            return result;
        }
    }
}

impl Accepted {
    /// The peer's pid (unknown from another pid namespace) and uid (`SO_PEERCRED`), if the
    /// kernel says.
    fn peer(&self) -> (Option<PeerPid>, Option<u32>) {
        let (Accepted::Stream(fd) | Accepted::Seqpacket(fd)) = self;
        match credentials::of_peer(fd) {
            Ok(peer) => (Some(peer.pid), Some(peer.uid)),
            Err(_) => (None, None),
        }
    }

    /// Starts its handler as a task of `tracker` on the serving thread `on`, unless
    /// `--allow-uid` turns it away (then `false`).
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        self,
        id: u64,
        config: &Config,
        settings: &Arc<Settings>,
        shutdown: &Shutdown,
        tracker: &TaskTracker,
        slot: OwnedSemaphorePermit,
        on: &Handle,
    ) -> bool {
        let (pid, uid) = self.peer();
        let pid = pid.map(tracing::field::display);
        if !config.allow_uids.is_empty() && !uid.is_some_and(|uid| config.allow_uids.contains(&uid))
        {
            tracing::warn!(
                conn = id,
                pid,
                uid,
                "peer uid is not in --allow-uid; closing"
            );
            return false;
        }
        let span = tracing::debug_span!("conn", id, pid, uid);
        // Registered with that thread's reactor: its readiness events, and so the whole
        // connection, stay there.
        let _there = on.enter();
        let (fd, kind) = match self {
            Accepted::Stream(fd) => (fd, connection::Kind::Stream),
            Accepted::Seqpacket(fd) => (fd, connection::Kind::Seqpacket),
        };
        if let Some(upstream) = &settings.proxy {
            let connection = proxy::serve(fd, id, upstream.clone(), shutdown, slot);
            spawn_traced(connection, span, tracker, on);
            return true;
        }
        let connection = connection::serve(fd, kind, id, settings.clone(), shutdown, slot);
        spawn_traced(connection, span, tracker, on);
        true
    }
}

/// Spawns a connection's task on `on`, in its span when that will be seen.
fn spawn_traced<F>(connection: F, span: tracing::Span, tracker: &TaskTracker, on: &Handle)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // The span costs memory in every task: only when it will be seen (-v).
    if span.is_disabled() {
        tracker.spawn_on(connection, on);
    } else {
        tracker.spawn_on(connection.instrument(span), on);
    }
}

/// Accepts until the shutdown begins (with `--once`, until one connection is served: then it
/// waits for that connection to end, or for the shutdown); returns the error that made
/// accepting impossible, if that is what ended it. The listening socket closes when this
/// returns, so a `--once` server refuses further peers while it serves its one.
async fn accept_loop(
    acceptor: &Acceptor,
    name: &str,
    config: &Config,
    settings: &Arc<Settings>,
    shutdown: &Shutdown,
    tracker: &TaskTracker,
    workers: &Workers,
) -> Option<io::Error> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let next_id = AtomicU64::new(1);
    let mut accept_errors = AcceptErrors::default();
    loop {
        // Take a slot before accepting: past the limit, new peers wait in the listen backlog
        // and are served as soon as a connection ends.
        let slot = tokio::select! {
            () = shutdown.begun() => return None,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => return None,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.begun() => return None,
            accepted = acceptor.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => match classify(&e) {
                    AcceptFailure::PeerGone => {
                        tracing::debug!("accept on {name}: {e}");
                        continue;
                    }
                    AcceptFailure::Exhausted => {
                        // Wait a little rather than spin; connections that end give
                        // descriptors and memory back.
                        accept_errors.failed(name, &e);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                    AcceptFailure::Fatal => return Some(e),
                },
            },
        };
        accept_errors.recovered(name);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let served = accepted.spawn(
            id,
            config,
            settings,
            shutdown,
            tracker,
            slot,
            workers.next(),
        );
        // A peer turned away by --allow-uid is not the one connection.
        if config.once && served {
            tracing::info!("--once: serving this connection only; exiting when it ends");
            return None;
        }
    }
}

/// Serves the one connection a supervisor accepted (systemd `Accept=yes`, `--inetd`), until
/// it ends or the shutdown begins (then the common drain follows).
async fn serve_one(
    accepted: Accepted,
    config: &Config,
    settings: &Arc<Settings>,
    shutdown: &Shutdown,
    tracker: &TaskTracker,
) {
    let slot = Arc::new(Semaphore::new(1))
        .try_acquire_owned()
        .expect("a fresh semaphore has its permit");
    accepted.spawn(
        1,
        config,
        settings,
        shutdown,
        tracker,
        slot,
        &Handle::current(),
    );
    tracker.close();
    tokio::select! {
        () = shutdown.begun() => {}
        () = tracker.wait() => {}
    }
}
