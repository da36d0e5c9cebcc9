//! One benchmark thread: a current-thread tokio runtime (its own epoll set and timers) that
//! connects its share of the connections, waits for the start, drives them, and hands back
//! its count and its latency histogram. Raw stream ping-pong leaves the runtime once
//! connected: [`pingpong`] drives those connections from one epoll loop, no task each.
//!
//! The thread talks to the coordinator ([`super::run`]) through three one-shot channels:
//! connected (or why not), the start (its sender dropped means "close and end"), and the
//! result. While it runs, its connections share only this thread's `Tally`; every 100 ms
//! a ticker publishes the count for the progress bar and looks whether another thread failed.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinSet, LocalSet};
use tokio::time::Instant;

use super::load::Load;
use super::tally::{Tallied, Tally};
use super::{BenchOptions, Shared, blocking, pingpong, thread_lost, worker};
use crate::connect::Connection;
use crate::error::{ClientError, ErrorKind};
use crate::target::{Target, Transport};

/// Connects in flight at once, over all threads: enough to be quick, few enough that the
/// server's backlog keeps up.
const CONNECTING: usize = 256;

/// What one thread is to do.
pub(super) struct Plan {
    /// This thread's number: it takes connections `index`, `index + threads`, ...
    pub(super) index: usize,
    pub(super) threads: usize,
    pub(super) connections: usize,
    pub(super) pipeline: usize,
    pub(super) target: Target,
    pub(super) options: BenchOptions,
    pub(super) shared: Arc<Shared>,
}

/// The coordinator's end of one thread.
pub(super) struct Handle {
    target: Target,
    connected: Option<oneshot::Receiver<Result<(), ClientError>>>,
    start: Option<oneshot::Sender<Instant>>,
    finished: oneshot::Receiver<Result<Tallied, ClientError>>,
    progress: Arc<AtomicU64>,
}

impl Handle {
    /// Waits until the thread's connections are all open (or one could not be).
    pub(super) async fn connected(&mut self) -> Result<(), ClientError> {
        match self.connected.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| Err(thread_lost(&self.target))),
            None => Ok(()),
        }
    }

    /// Starts the thread's load, which runs until `deadline`.
    pub(super) fn start(&mut self, deadline: Instant) {
        if let Some(tx) = self.start.take() {
            // A thread that is gone says so through `finished`.
            let _ = tx.send(deadline);
        }
    }

    /// The thread's round trips so far, updated every 100 ms.
    pub(super) fn progress(&self) -> Arc<AtomicU64> {
        self.progress.clone()
    }

    /// Waits for the thread's result.
    pub(super) async fn finished(self) -> Result<Tallied, ClientError> {
        self.finished
            .await
            .unwrap_or_else(|_| Err(thread_lost(&self.target)))
    }
}

/// Starts the thread for `plan`.
pub(super) fn spawn(plan: Plan) -> Result<Handle, ClientError> {
    let (connected_tx, connected) = oneshot::channel();
    let (start, start_rx) = oneshot::channel();
    let (finished_tx, finished) = oneshot::channel();
    let progress = Arc::new(AtomicU64::new(0));
    let target = plan.target.clone();
    let counter = progress.clone();
    std::thread::Builder::new()
        .name(format!("bench-{}", plan.index))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(source) => {
                    let e = ErrorKind::Io {
                        doing: "starting a benchmark thread",
                        source,
                    };
                    let _ = connected_tx.send(Err(e.at(&plan.target)));
                    return;
                }
            };
            LocalSet::new().block_on(&runtime, async move {
                let conns = match connect(&plan).await {
                    Ok(conns) => conns,
                    Err(e) => {
                        let _ = connected_tx.send(Err(e));
                        return;
                    }
                };
                if connected_tx.send(Ok(())).is_err() {
                    return;
                }
                // The coordinator gave up (another thread could not connect).
                let Ok(deadline) = start_rx.await else {
                    return;
                };
                let result = drive(&plan, conns, deadline, &counter).await;
                let _ = finished_tx.send(result);
            });
        })
        .map_err(|source| {
            ErrorKind::Io {
                doing: "starting a benchmark thread",
                source,
            }
            .at(&target)
        })?;
    Ok(Handle {
        target,
        connected: Some(connected),
        start: Some(start),
        finished,
        progress,
    })
}

/// Opens this thread's connections, each with its number in the whole run.
async fn connect(plan: &Plan) -> Result<Vec<(usize, Connection)>, ClientError> {
    let slots = Rc::new(Semaphore::new((CONNECTING / plan.threads).max(1)));
    let mut connecting = JoinSet::new();
    for i in (plan.index..plan.connections).step_by(plan.threads) {
        let target = plan.target.clone();
        let slots = slots.clone();
        let timeout = plan.options.timeout;
        let transport = plan.options.transport;
        connecting.spawn_local(async move {
            let _slot = slots.acquire().await;
            let conn = target.open(transport, timeout).await;
            conn.map(|c| (i, c))
        });
    }
    let mut conns = Vec::with_capacity(connecting.len());
    while let Some(joined) = connecting.join_next().await {
        let conn = joined.map_err(|e| task_failed(&plan.target, e))??;
        conns.push(conn);
    }
    conns.sort_unstable_by_key(|&(i, _)| i);
    Ok(conns)
}

fn task_failed(target: &Target, e: tokio::task::JoinError) -> ClientError {
    ErrorKind::Io {
        doing: "running the benchmark",
        source: std::io::Error::other(e),
    }
    .at(target)
}

/// Runs this thread's connections until `deadline`, or until one of them (here or on another
/// thread) fails.
async fn drive(
    plan: &Plan,
    conns: Vec<(usize, Connection)>,
    deadline: Instant,
    progress: &AtomicU64,
) -> Result<Tallied, ClientError> {
    let tally = Rc::new(Tally::new());
    let options = &plan.options;
    let load = |i: usize| Load {
        payload: Bytes::from(udsecho_payload(options.size, i as u64)),
        deadline,
        timeout: options.timeout,
        tally: tally.clone(),
    };
    let publish = || {
        progress.store(tally.round_trips(), Ordering::Relaxed);
        // Another thread's error is the one reported (or Ctrl-C stopped the run); this
        // thread just stops with what it counted.
        plan.shared.going_on()
    };
    if options.transport == (Transport::Stream { framed: false }) && plan.pipeline == 1 {
        let mut sockets = Vec::with_capacity(conns.len());
        for (i, conn) in conns {
            sockets.push((plain_socket(conn, &plan.target)?, load(i)));
        }
        let driven = if options.blocking {
            blocking::drive(sockets, publish, options.busy_poll)
        } else {
            pingpong::drive(sockets, publish, options.busy_poll)
        };
        return match driven {
            Ok(()) => Ok(tally.take()),
            Err(kind) => {
                plan.shared.failed.store(true, Ordering::Relaxed);
                Err(kind.at(&plan.target))
            }
        };
    }
    let mut running = JoinSet::new();
    for (i, conn) in conns {
        let load = load(i);
        let pipeline = plan.pipeline;
        running.spawn_local(worker::run(load, conn, pipeline));
    }
    let mut tick = tokio::time::interval(super::COUNTED_EVERY);
    loop {
        tokio::select! {
            joined = running.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(kind))) => {
                    plan.shared.failed.store(true, Ordering::Relaxed);
                    return Err(kind.at(&plan.target));
                }
                Some(Err(e)) => {
                    plan.shared.failed.store(true, Ordering::Relaxed);
                    return Err(task_failed(&plan.target, e));
                }
            },
            _ = tick.tick() => {
                if !publish() {
                    // Dropping `running` aborts this thread's connections.
                    return Ok(tally.take());
                }
            }
        }
    }
    Ok(tally.take())
}

/// A stream connection taken out of the runtime, for [`pingpong`]'s own epoll set.
fn plain_socket(conn: Connection, target: &Target) -> Result<OwnedFd, ClientError> {
    let socket = match conn {
        Connection::Stream { stream, .. } => stream.into_std().map(OwnedFd::from),
        Connection::Messages(_) => Err(std::io::Error::other("not a stream connection")),
    };
    socket.map_err(|source| {
        ErrorKind::Io {
            doing: "preparing a connection",
            source,
        }
        .at(target)
    })
}

/// A payload whose bytes differ per connection, so a crossed echo is caught.
fn udsecho_payload(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
