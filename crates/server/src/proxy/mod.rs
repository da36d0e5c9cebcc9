//! The proxy (`--upstream TARGET`): each accepted connection is connected to TARGET and
//! forwarded both ways instead of echoed, with the descriptors passed either way, and
//! recorded (`--record`) and shown (`-v`) on the way. Everything on the listening side —
//! the socket file, abstract names, systemd activation, the serving threads,
//! `--max-connections`, the drain, `--allow-uid`, logging — is the server's; the server
//! hands each accepted connection here instead of to the echo handler (`crate::server`).
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Proxy`] (what every connection shares) and one connection's task, [`serve`] |
//! | `upstream.rs` | connecting to the upstream, and the check at start |
//! | `pump.rs` | one direction: read, record, write, then read again (backpressure) |
//! | `faults.rs` | `--fault` on what goes to the client |
//! | `datagram.rs` | the datagram proxy: a relay per sender |
//! | `view.rs` | the `-v` lines |
//! | `record/` | the recording: the writer thread and its formats |
//!
//! A connection ends when both directions have seen EOF (each passed on as a half-close),
//! when a side fails (a reset: both sockets close), or when the drain after a signal runs
//! past `--shutdown-timeout` (a graceful shutdown only stops accepting: open connections go
//! on until they end).

pub(crate) mod datagram;
pub(crate) mod faults;
mod pump;
pub(crate) mod record;
mod upstream;
mod view;

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;

use self::faults::ClientFaults;
use self::pump::{Broken, Flow, direction};
use self::record::frames::{Frames, Session};
use self::record::{Credentials, Dir, Recorder, What};
use crate::config::{Config, SocketAddress, SocketType};
use crate::descriptors::Counted;
use crate::fault::Faults;
use crate::shutdown::Shutdown;

/// What every proxied connection shares.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// Where each client is connected.
    pub(crate) upstream: SocketAddress,
    /// The upstream, as the recording names it.
    pub(crate) upstream_name: Arc<str>,
    /// The listening socket, as the logs name it.
    pub(crate) socket: Arc<str>,
    /// The kind of socket on both sides.
    pub(crate) kind: SocketType,
    /// A connection nothing crosses for this long is closed (`--idle-timeout`).
    pub(crate) idle_timeout: Option<Duration>,
    /// Where events are recorded (`--record`, `--pcap`), if anywhere.
    pub(crate) recorder: Option<Recorder>,
    /// The server's faults (`--fault`, `--control`), applied to what goes to the client.
    pub(crate) faults: Option<Arc<Faults>>,
}

/// The proxy `config` asks for (`--upstream`), once the upstream has been tried (a warning
/// if it does not answer); `None` for an echo server. `socket` names the listener.
pub(crate) async fn start(
    config: &Config,
    socket: &str,
    kind: SocketType,
    faults: Option<Arc<Faults>>,
) -> Option<Arc<Proxy>> {
    let upstream = config.upstream.clone()?;
    match &config.recorder {
        Some(recorder) => tracing::info!("proxying to {upstream}, recording to {recorder}"),
        None => tracing::info!("proxying to {upstream}"),
    }
    upstream::check(&upstream, kind).await;
    Some(Arc::new(Proxy {
        upstream_name: Arc::from(upstream.to_string()),
        upstream,
        socket: Arc::from(socket),
        kind,
        idle_timeout: config.idle_timeout,
        recorder: config.recorder.clone(),
        faults,
    }))
}

/// Proxies one client connection to the end, holding `slot` meanwhile.
pub(crate) fn serve(
    client: OwnedFd,
    conn: u64,
    proxy: Arc<Proxy>,
    shutdown: &Shutdown,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + use<> {
    let shutdown = shutdown.clone();
    if proxy.kind == SocketType::Seqpacket
        && let Err(e) = rustix::net::sockopt::set_socket_passcred(&client, true)
    {
        // Set here, at the accept, not when the task runs: a message the client sends
        // before it is set carries no credentials, and an empty one would read as the end.
        tracing::debug!("SO_PASSCRED: {e}");
    }
    async move {
        let _slot = slot;
        let recorder = proxy.recorder.as_ref();
        if let Some(recorder) = recorder {
            let what = What::Open {
                peer: Credentials::of(&client),
                socket: proxy.socket.clone(),
                upstream: proxy.upstream_name.clone(),
            };
            recorder.record(conn, what).await;
        }
        let totals = Totals::default();
        match upstream::connect(&proxy.upstream, proxy.kind).await {
            Ok(upstream) => {
                tracing::debug!("open: upstream {}", proxy.upstream);
                match forward(client, upstream, conn, &proxy, &shutdown, &totals).await {
                    Ok(()) => tracing::debug!("closed: both sides done"),
                    Err(ended) => {
                        tracing::debug!("closed: {ended}");
                        if let Some(recorder) = recorder {
                            let what = What::Error {
                                dir: ended.dir,
                                message: ended.to_string(),
                            };
                            recorder.record(conn, what).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    conn,
                    "upstream {}: {e}; closing the client's connection",
                    proxy.upstream
                );
                if let Some(recorder) = recorder {
                    let what = What::Error {
                        dir: None,
                        message: format!("upstream {}: {e}", proxy.upstream),
                    };
                    recorder.record(conn, what).await;
                }
            }
        }
        if let Some(recorder) = recorder {
            let what = What::Close {
                to_upstream: totals.to_upstream.load(Ordering::Relaxed),
                to_client: totals.to_client.load(Ordering::Relaxed),
            };
            recorder.record(conn, what).await;
        }
    }
}

/// One read, shown (`-v`) and recorded (`--record`, `--pcap`), in whichever direction of
/// whichever socket type: its bytes, its descriptors, and the frames it completed. `lent`:
/// the bytes as the recording may keep them (the read's own buffer, see
/// [`Recorder::buffer`]); without it the recording copies them.
async fn report_read(
    recorder: Option<&Recorder>,
    conn: u64,
    dir: Dir,
    (bytes, lent): (&[u8], Option<&bytes::Bytes>),
    fds: &crate::descriptors::Passed,
    frames: Vec<record::frames::FrameNote>,
) {
    if view::enabled() {
        view::data(conn, dir, bytes, fds);
    }
    if let Some(recorder) = recorder {
        let what = What::Data {
            dir,
            bytes: lent.cloned().unwrap_or_else(|| recorder.copy(bytes)),
            fds: fds.identities(),
            frames,
        };
        recorder.record(conn, what).await;
    }
}

/// Bytes forwarded each way.
#[derive(Debug, Default)]
struct Totals {
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

impl Totals {
    fn both(&self) -> u64 {
        self.to_upstream.load(Ordering::Relaxed) + self.to_client.load(Ordering::Relaxed)
    }

    /// Resolves once nothing has been forwarded either way for `timeout` (never without
    /// one), while the faults held nothing back (`holding`). Looked at four times a timeout
    /// (every millisecond at most), so a connection is closed between `timeout` and 1.25
    /// times it after its last byte; a busy connection pays no clock reading.
    async fn idle(&self, timeout: Option<Duration>, holding: Option<&AtomicBool>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        let tick = (timeout / 4).max(Duration::from_millis(1));
        let mut seen = self.both();
        let mut quiet = Duration::ZERO;
        while quiet < timeout {
            tokio::time::sleep(tick).await;
            let now = self.both();
            let held = holding.is_some_and(|h| h.load(Ordering::Relaxed));
            if now == seen && !held {
                quiet += tick;
            } else {
                (seen, quiet) = (now, Duration::ZERO);
            }
        }
    }
}

/// How a connection ended early.
#[derive(Debug)]
struct Ended {
    dir: Option<Dir>,
    why: String,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Sets a connected socket of `kind` up for forwarding and registers it with this thread's
/// reactor.
fn register(fd: OwnedFd, kind: SocketType) -> io::Result<AsyncFd<OwnedFd>> {
    if kind == SocketType::Seqpacket {
        // Credentials on every message tell an empty message from the end.
        rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    } else {
        // An out-of-band byte is forwarded in its place (without this no read sees it); no
        // credentials on reads (a listener handed over with SO_PASSCRED would split reads).
        if let Err(e) = rustix::net::sockopt::set_socket_oobinline(&fd, true) {
            tracing::debug!("SO_OOBINLINE: {e}");
        }
        if let Err(e) = rustix::net::sockopt::set_socket_passcred(&fd, false) {
            tracing::debug!("SO_PASSCRED: {e}");
        }
    }
    // A stream's priority readiness says an out-of-band mark is queued, at which reads stop
    // short (`pump` keeps reading then, rather than wait for a wake-up).
    let interest = match kind {
        SocketType::Stream => Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        _ => Interest::READABLE | Interest::WRITABLE,
    };
    udsecho_unix::registration::register_for(fd, interest)
}

/// Both directions of a stream connection, until both have ended or one side fails.
async fn forward(
    client: OwnedFd,
    upstream: OwnedFd,
    conn: u64,
    proxy: &Proxy,
    shutdown: &Shutdown,
    totals: &Totals,
) -> Result<(), Ended> {
    let setup = |e: io::Error| Ended {
        dir: None,
        why: format!("setting up the sockets: {e}"),
    };
    let _counted = (Counted::new(), Counted::new());
    let client = register(client, proxy.kind).map_err(setup)?;
    let upstream = register(upstream, proxy.kind).map_err(setup)?;
    let session = Session::default();
    let recorder = proxy.recorder.as_ref();
    let faults = proxy
        .faults
        .as_ref()
        .map(|table| ClientFaults::new(table, proxy.kind, (conn, conn), shutdown));
    let reset_at = faults.as_ref().and_then(ClientFaults::reset_at);
    let holding = faults.as_ref().map(ClientFaults::holding);
    let flow = |dir, forwarded, faults| Flow {
        conn,
        dir,
        recorder,
        // udsecho frames are spoken on streams only.
        frames: recorder
            .filter(|_| proxy.kind == SocketType::Stream)
            .map(|_| Frames::new(dir == Dir::ToUpstream)),
        session: &session,
        forwarded,
        faults,
    };
    let mut up = pin!(direction(
        proxy.kind,
        &client,
        &upstream,
        flow(Dir::ToUpstream, &totals.to_upstream, None)
    ));
    let mut down = pin!(direction(
        proxy.kind,
        &upstream,
        &client,
        flow(Dir::ToClient, &totals.to_client, faults)
    ));
    if reset_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
        // Due at once (a timer would fire at the next tick, after a first forward).
        return Err(Ended {
            dir: None,
            why: "fault: reset_peer".to_owned(),
        });
    }
    let mut forced = pin!(shutdown.forced());
    let mut idle = pin!(totals.idle(proxy.idle_timeout, holding.as_deref()));
    let mut reset = pin!(async {
        match reset_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    let (mut up_done, mut down_done) = (false, false);
    let failed = |dir, broken: Broken| Ended {
        dir: Some(dir),
        why: format!("{}: {} ({})", broken.side, broken.why, dir.name()),
    };
    while !(up_done && down_done) {
        tokio::select! {
            // The deadlines first: a reset due at once forwards nothing.
            biased;
            () = &mut reset => {
                return Err(Ended {
                    dir: None,
                    why: "fault: reset_peer".to_owned(),
                });
            }
            () = &mut forced => {
                return Err(Ended {
                    dir: None,
                    why: "cut: still open after --shutdown-timeout".to_owned(),
                });
            }
            () = &mut idle => {
                let timeout = proxy.idle_timeout.unwrap_or_default();
                return Err(Ended {
                    dir: None,
                    why: format!("idle for {timeout:?}: nothing crossed either way (--idle-timeout)"),
                });
            }
            done = &mut up, if !up_done => {
                done.map_err(|b| failed(Dir::ToUpstream, b))?;
                up_done = true;
            }
            done = &mut down, if !down_done => {
                done.map_err(|b| failed(Dir::ToClient, b))?;
                down_done = true;
            }
        }
    }
    Ok(())
}
