//! The datagram proxy (`--type datagram --upstream`): no connections, so one **relay** per
//! sender address. A sender's first datagram makes its relay — a datagram socket of ours,
//! bound to an autobind abstract name and connected to the upstream — and every datagram of
//! that sender goes out through it, whole, with its descriptors; what the upstream answers
//! to the relay goes back to that sender, from the proxy's own address. So the upstream can
//! tell the senders apart, and each sender gets only its own replies.
//!
//! Bounded: at most `--max-connections` relays (the sender idle longest gives up its relay
//! to a new one), and a relay idle for [`IDLE`] (or `--idle-timeout`) is closed. Each relay
//! is a connection of the recording (`open` with the sender's credentials, `data` a
//! datagram each way, `close`), numbered like stream connections.
//!
//! Datagrams are unreliable, and the proxy never lets one party block the others: a
//! datagram the upstream's queue will not take now, or a reply the sender's will not take,
//! is dropped and counted (a warning at most every few seconds). A reply goes only to the
//! socket that sent the datagram, as the echo's replies do: a path sender's path is pinned
//! to its inode and owner (`datagram::reply_to_path`), an abstract name must be the
//! sender's own in this network namespace. A sender with no address cannot be answered: its
//! datagrams are dropped.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketAddrUnix};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::faults::ClientFaults;
use super::record::{Credentials, Dir, What};
use super::{Proxy, report_read, upstream};
use crate::config::{Config, SocketType};
use crate::datagram::{AbstractNames, DropLog, Dropped, Holder};
use crate::descriptors::{self, Passed};
use crate::fault::sender_of;
use crate::shutdown::Shutdown;

/// The largest datagram forwarded either way (a Unix datagram is bounded by its sender's
/// send buffer, 208 KiB by default).
const MAX_DATAGRAM: usize = 256 * 1024;
/// A relay unused this long is closed, unless `--idle-timeout` says otherwise.
pub(crate) const IDLE: Duration = Duration::from_secs(60);
/// Datagrams forwarded per turn before the other tasks get the thread.
const PER_TURN: usize = 256;
/// At shutdown, replies are waited for until the relays have been quiet this long.
const QUIET: Duration = Duration::from_millis(100);

/// A relay's `used` while a reply is held back by `latency`: in use now, never idle.
const BUSY: u64 = u64::MAX;

/// Sends never block and never raise SIGPIPE.
const SEND: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);

/// One sender's way to the upstream.
struct Relay {
    /// Its connection number (logs, recording).
    conn: u64,
    /// Our socket connected to the upstream, shared with the task that reads its replies.
    socket: Arc<UnixDatagram>,
    /// When it last carried a datagram either way, in ms since the proxy began; [`BUSY`]
    /// while a reply is held back by `latency`.
    used: Arc<AtomicU64>,
    to_upstream: u64,
    to_client: Arc<AtomicU64>,
    /// Reads the upstream's replies and sends them to the sender.
    replies: JoinHandle<()>,
}

/// What the datagram loop keeps.
struct Relays {
    proxy: Arc<Proxy>,
    listener: Arc<UnixDatagram>,
    by_sender: HashMap<Vec<u8>, Relay>,
    max: usize,
    idle: Duration,
    next_conn: u64,
    began: Instant,
    drops: DropLog,
    /// `--allow-uid`: checked on every datagram, from its credentials.
    allow_uids: Vec<u32>,
    /// Checks abstract senders' names (as the echo does, `datagram/names.rs`), unless the
    /// proxy's own address is abstract (only sockets of its own namespace reach it); shared
    /// with the relays' reply tasks, which check again before each reply.
    names: Option<Names>,
    /// The drain lifts the faults on replies.
    shutdown: Shutdown,
}

/// The abstract-name check, shared by the loop and the reply tasks of one socket (the
/// check never awaits, so the lock is never held across an `.await`).
type Names = Arc<std::sync::Mutex<AbstractNames>>;

/// Whether `name` is held here by a socket of `uid`; why not, if not.
fn names_holder(names: &Names, name: &[u8], uid: u32) -> Result<(), Dropped> {
    let mut names = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match names.holder(name, uid) {
        Holder::Sender => Ok(()),
        Holder::Other => Err(Dropped::ForeignName),
        Holder::Nobody => Err(Dropped::NameGone),
        Holder::Unchecked => Err(Dropped::Unchecked),
    }
}

/// Forwards datagrams on `listener` until the shutdown begins (then those already queued),
/// then closes every relay.
pub(crate) async fn serve(
    listener: UnixDatagram,
    name: &str,
    proxy: Arc<Proxy>,
    config: &Config,
    shutdown: &Shutdown,
) {
    let names = rustix::net::getsockname(&listener)
        .ok()
        .and_then(|a| SocketAddrUnix::try_from(a).ok())
        .is_none_or(|a| a.abstract_name().is_none())
        .then(|| Arc::new(std::sync::Mutex::new(AbstractNames::default())));
    let mut relays = Relays {
        proxy,
        listener: Arc::new(listener),
        by_sender: HashMap::new(),
        max: config.max_connections.max(1),
        idle: config.idle_timeout.unwrap_or(IDLE),
        next_conn: 1,
        began: Instant::now(),
        drops: DropLog::default(),
        allow_uids: config.allow_uids.clone(),
        names,
        shutdown: shutdown.clone(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(relays.idle / 4);
    loop {
        tokio::select! {
            biased;
            () = shutdown.begun() => break,
            _ = sweep.tick() => relays.expire().await,
            ready = relays.listener.readable() => {
                if let Err(e) = ready {
                    tracing::error!("{name}: {e}");
                    break;
                }
                relays.forward_queued(&mut buf, PER_TURN).await;
                tokio::task::yield_now().await;
            }
        }
    }
    // What was sent before the signal goes on, and the replies to it come back: until no
    // relay has carried anything for [`QUIET`], within `--shutdown-timeout`.
    relays.forward_queued(&mut buf, usize::MAX).await;
    let quiet = async {
        loop {
            let last = relays
                .by_sender
                .values()
                .map(|r| r.used.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            if relays.now_ms().saturating_sub(last) >= QUIET.as_millis() as u64 {
                break;
            }
            tokio::time::sleep(QUIET / 4).await;
        }
    };
    tokio::select! {
        () = quiet => {}
        () = tokio::time::sleep(config.shutdown_timeout) => {}
        () = shutdown.forced() => {}
    }
    let all: Vec<Vec<u8>> = relays.by_sender.keys().cloned().collect();
    for key in all {
        relays.close(&key).await;
    }
    relays.drops.report();
}

/// The key of a sender's address, and whether it can be answered.
fn sender_key(addr: &SocketAddrUnix) -> Option<Vec<u8>> {
    if let Some(path) = addr.path() {
        let mut key = b"/".to_vec();
        key.extend_from_slice(path.to_bytes());
        return Some(key);
    }
    addr.abstract_name().map(|name| {
        let mut key = b"@".to_vec();
        key.extend_from_slice(name);
        key
    })
}

impl Relays {
    fn now_ms(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }

    /// Forwards queued datagrams (at most `limit`) to the upstream through their senders'
    /// relays.
    async fn forward_queued(&mut self, buf: &mut [u8], limit: usize) {
        for _ in 0..limit {
            let room = descriptors::room();
            let received = self.listener.try_io(Interest::READABLE, || {
                descriptors::recv_from(self.listener.as_fd(), buf, RecvFlags::DONTWAIT, room, true)
                    .map_err(io::Error::from)
            });
            let (msg, from) = match received {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("proxy: reading a datagram: {e}");
                    return;
                }
            };
            let mut fds = msg.fds;
            if msg.truncated {
                fds.close();
                self.drops.dropped(Dropped::DescriptorsTruncated);
                continue;
            }
            if msg.cut {
                fds.close();
                self.drops.dropped(Dropped::TooLarge);
                continue;
            }
            let sender = from.and_then(|a| SocketAddrUnix::try_from(a).ok());
            let Some((sender, key)) = sender.and_then(|s| sender_key(&s).map(|k| (s, k))) else {
                fds.close();
                self.drops.dropped(Dropped::Unnamed);
                continue;
            };
            let Some(creds) = msg.creds else {
                fds.close();
                self.drops.dropped(Dropped::NoCredentials);
                continue;
            };
            if !self.allow_uids.is_empty() && !self.allow_uids.contains(&creds.uid) {
                fds.close();
                self.drops.dropped(Dropped::Refused);
                continue;
            }
            if !self.by_sender.contains_key(&key) {
                let creds = Credentials {
                    pid: creds.pid.get().unwrap_or(0),
                    uid: creds.uid,
                    gid: creds.gid,
                    command: None,
                };
                if let Err(why) = self.open(&key, sender, creds).await {
                    fds.close();
                    self.drops.dropped(why);
                    continue;
                }
            }
            let now = self.now_ms();
            let Some(relay) = self.by_sender.get_mut(&key) else {
                continue;
            };
            let datagram = &buf[..msg.len];
            let recorder = self.proxy.recorder.as_ref();
            report_read(
                recorder,
                relay.conn,
                Dir::ToUpstream,
                (datagram, None),
                &fds,
                Vec::new(),
            )
            .await;
            relay.used.store(now, Ordering::Relaxed);
            match send(&relay.socket, datagram, &mut fds, None) {
                Ok(()) => relay.to_upstream += msg.len as u64,
                Err(Errno::AGAIN) => self.drops.dropped(Dropped::UpstreamNotReading),
                Err(Errno::CONNREFUSED | Errno::NOENT) => {
                    self.drops.dropped(Dropped::UpstreamGone);
                }
                Err(e) => {
                    tracing::debug!("proxy: forwarding a datagram: {e}");
                    self.drops.dropped(Dropped::UpstreamRefused);
                }
            }
            fds.close();
            crate::busy_poll::worked();
        }
    }

    /// Makes `key`'s relay: checks that the sender can be answered, connects a socket of
    /// ours to the upstream, records the `open`, starts the task for its replies.
    async fn open(
        &mut self,
        key: &[u8],
        sender: SocketAddrUnix,
        peer: Credentials,
    ) -> Result<(), Dropped> {
        if let Some(path) = sender.path()
            && !path.to_bytes().starts_with(b"/")
        {
            return Err(Dropped::RelativePath);
        }
        if let Some(names) = &self.names
            && let Some(name) = sender.abstract_name()
        {
            names_holder(names, name, peer.uid)?;
        }
        if self.by_sender.len() >= self.max {
            // The one used longest ago makes room.
            let oldest = self
                .by_sender
                .iter()
                .min_by_key(|(_, r)| r.used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.close(&oldest).await;
            }
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        if let Some(recorder) = &self.proxy.recorder {
            let what = What::Open {
                peer: Some(peer.clone()),
                socket: self.proxy.socket.clone(),
                upstream: self.proxy.upstream_name.clone(),
            };
            recorder.record(conn, what).await;
        }
        let socket = match upstream::connect(&self.proxy.upstream, self.proxy.kind).await {
            Ok(fd) => match UnixDatagram::from_std(fd.into()) {
                Ok(socket) => Arc::new(socket),
                Err(e) => {
                    tracing::debug!("proxy: registering a relay: {e}");
                    self.record_failure(conn, format!("registering the relay: {e}"))
                        .await;
                    return Err(Dropped::NoRelay);
                }
            },
            Err(e) => {
                tracing::warn!(
                    conn,
                    "upstream {}: {e}; dropping the datagram",
                    self.proxy.upstream
                );
                self.record_failure(conn, format!("upstream {}: {e}", self.proxy.upstream))
                    .await;
                return Err(Dropped::UpstreamUnreachable);
            }
        };
        tracing::debug!(
            conn,
            uid = peer.uid,
            "relay open: upstream {}",
            self.proxy.upstream
        );
        let used = Arc::new(AtomicU64::new(self.now_ms()));
        let to_client = Arc::new(AtomicU64::new(0));
        // A share hits the senders the echo's datagram socket would hit: drawn by the
        // sender's address. The probabilities draw from the relay's own stream, by its
        // number, so they replay when the senders come in the same order.
        let (number, shown) = sender_of(&sender);
        let faults = self.proxy.faults.as_ref().map(|table| {
            ClientFaults::new(table, SocketType::Datagram, (number, conn), &self.shutdown)
        });
        let replies = tokio::spawn(replies(Replies {
            conn,
            relay: socket.clone(),
            listener: self.listener.clone(),
            sender,
            uid: peer.uid,
            names: self.names.clone(),
            proxy: self.proxy.clone(),
            used: used.clone(),
            began: self.began,
            to_client: to_client.clone(),
            faults,
            shown,
        }));
        self.by_sender.insert(
            key.to_vec(),
            Relay {
                conn,
                socket,
                used,
                to_upstream: 0,
                to_client,
                replies,
            },
        );
        Ok(())
    }

    async fn record_failure(&self, conn: u64, message: String) {
        if let Some(recorder) = &self.proxy.recorder {
            recorder
                .record(conn, What::Error { dir: None, message })
                .await;
            let what = What::Close {
                to_upstream: 0,
                to_client: 0,
            };
            recorder.record(conn, what).await;
        }
    }

    /// Closes the relays unused for longer than the idle time.
    async fn expire(&mut self) {
        let now = self.now_ms();
        let idle = self.idle.as_millis() as u64;
        let expired: Vec<Vec<u8>> = self
            .by_sender
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.used.load(Ordering::Relaxed)) >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.close(&key).await;
        }
    }

    /// Closes `key`'s relay and records its end.
    async fn close(&mut self, key: &[u8]) {
        let Some(relay) = self.by_sender.remove(key) else {
            return;
        };
        relay.replies.abort();
        let _ = relay.replies.await;
        tracing::debug!(conn = relay.conn, "relay closed");
        if let Some(recorder) = &self.proxy.recorder {
            let what = What::Close {
                to_upstream: relay.to_upstream,
                to_client: relay.to_client.load(Ordering::Relaxed),
            };
            recorder.record(relay.conn, what).await;
        }
    }
}

/// `datagram` with `fds` on `socket` (to `to` if given), at once or not at all.
fn send(
    socket: &UnixDatagram,
    datagram: &[u8],
    fds: &mut Passed,
    to: Option<&SocketAddrUnix>,
) -> Result<(), Errno> {
    let mut sent = descriptors::send(socket.as_fd(), &[IoSlice::new(datagram)], fds, SEND, to);
    if let Err(e) = sent
        && fds.refused(e)
    {
        sent = descriptors::send(socket.as_fd(), &[IoSlice::new(datagram)], fds, SEND, to);
    }
    sent.map(|_| fds.returned())
}

/// What a relay's reply task needs.
struct Replies {
    conn: u64,
    relay: Arc<UnixDatagram>,
    listener: Arc<UnixDatagram>,
    sender: SocketAddrUnix,
    uid: u32,
    /// The name check: an abstract sender's name is checked again before each reply, since
    /// a name can change hands while its relay lives.
    names: Option<Names>,
    proxy: Arc<Proxy>,
    used: Arc<AtomicU64>,
    began: Instant,
    to_client: Arc<AtomicU64>,
    /// The faults on this sender's replies (`--fault`, `--control`).
    faults: Option<ClientFaults>,
    /// The sender, as `-v` names it.
    shown: String,
}

/// Reads what the upstream answers to one relay and sends it to the relay's sender (as the
/// faults have it), until the relay is closed.
async fn replies(mut r: Replies) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut drops = DropLog::default();
    let mut faults = r.faults.take();
    loop {
        if let Some(faults) = faults.as_mut().filter(|f| f.holds()) {
            // A reply held back for `reorder` goes at the drain, if no other comes first.
            let drain = tokio::select! {
                ready = r.relay.readable() => {
                    if let Err(e) = ready {
                        tracing::debug!(conn = r.conn, "relay: {e}");
                        return;
                    }
                    false
                }
                () = faults.drain_begun() => true,
            };
            if drain && let Some(held) = faults.take_held() {
                deliver(&r, &held, &mut Passed::none(), &mut drops);
            }
        }
        if let Err(e) = r.relay.readable().await {
            tracing::debug!(conn = r.conn, "relay: {e}");
            return;
        }
        let room = descriptors::room();
        let received = r.relay.try_io(Interest::READABLE, || {
            descriptors::recv(r.relay.as_fd(), &mut buf, RecvFlags::DONTWAIT, room, false)
                .map_err(io::Error::from)
        });
        let msg = match received {
            Ok(msg) => msg,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // The upstream went away (ECONNREFUSED once it is gone): nothing more comes.
                tracing::debug!(conn = r.conn, "relay: {e}");
                return;
            }
        };
        let mut fds = msg.fds;
        if msg.truncated || msg.cut {
            fds.close();
            drops.dropped(Dropped::ReplyNotWhole);
            continue;
        }
        let reply = &buf[..msg.len];
        r.used
            .store(r.began.elapsed().as_millis() as u64, Ordering::Relaxed);
        let recorder = r.proxy.recorder.as_ref();
        report_read(
            recorder,
            r.conn,
            Dir::ToClient,
            (reply, None),
            &fds,
            Vec::new(),
        )
        .await;
        match &mut faults {
            None => deliver(&r, reply, &mut fds, &mut drops),
            Some(faults) => faulty_reply(&r, faults, reply, &mut fds, &mut drops).await,
        }
        fds.close();
        crate::busy_poll::worked();
    }
}

/// A reply as the faults have it: dropped, held back for `reorder` (one at a time, its
/// descriptors closed), or after `latency`, cut, once or twice, then the reply held back
/// before it. Said with `-v`, as the echo says what became of a datagram.
async fn faulty_reply(
    r: &Replies,
    faults: &mut ClientFaults,
    reply: &[u8],
    fds: &mut Passed,
    drops: &mut DropLog,
) {
    let fate = faults.message(reply.len());
    if let Some(names) = faults.names() {
        tracing::debug!(
            conn = r.conn,
            "fault: {names}: a reply to {}: {}",
            r.shown,
            fate.said(reply.len())
        );
    }
    let Some(goes) = faults.outcome(fate, reply, fds) else {
        return;
    };
    if !goes.delay.is_zero() {
        // The relay's next replies wait in its socket meanwhile. It counts as busy, so
        // neither the idle sweep nor the drain's quiet close aborts the reply; the drain
        // cuts the delay short.
        r.used.store(BUSY, Ordering::Relaxed);
        faults.pause(goes.delay).await;
        r.used
            .store(r.began.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    for _ in 0..goes.times {
        // A duplicate carries no descriptors: the first took them.
        deliver(r, &reply[..goes.len], fds, drops);
    }
    if let Some(held) = faults.take_held() {
        deliver(r, &held, &mut Passed::none(), drops);
    }
}

/// Sends `reply` with `fds` to the relay's sender, or counts why not.
fn deliver(r: &Replies, reply: &[u8], fds: &mut Passed, drops: &mut DropLog) {
    let sent = match r.sender.path() {
        Some(path) => crate::datagram::reply_to_path(&r.listener, reply, fds, &path, r.uid)
            .map(|_| fds.returned()),
        None => {
            let name = r.sender.abstract_name().unwrap_or_default();
            if let Some(why) = r
                .names
                .as_ref()
                .and_then(|names| names_holder(names, name, r.uid).err())
            {
                fds.close();
                drops.dropped(why);
                return;
            }
            send(&r.listener, reply, fds, Some(&r.sender))
        }
    };
    match sent {
        Ok(()) => {
            r.to_client.fetch_add(reply.len() as u64, Ordering::Relaxed);
        }
        Err(Errno::AGAIN) => drops.dropped(Dropped::NotReading),
        Err(Errno::PERM) => drops.dropped(Dropped::Impostor),
        Err(e) => {
            tracing::debug!(conn = r.conn, "relay: replying: {e}");
            drops.dropped(Dropped::ReplyFailed);
        }
    }
}
