//! The datagram echo: one socket, no connections. Each datagram goes back to its sender's
//! address, whole.
//!
//! - A sender with no address (an unbound socket: `socat UNIX-SENDTO` without `bind=`, `nc -uU`
//!   versions that do not bind) cannot be answered: its datagrams are counted and dropped,
//!   with at most one log line every few seconds. Nobody else notices.
//! - A sender whose receive queue is full (it is not reading its replies) would make the
//!   server wait for it, and so everyone: its reply is dropped and counted the same way.
//!   Datagrams are unreliable by nature; a blocked sender never blocks the others.
//! - `--allow-uid` is checked per datagram from the sender's credentials (`SO_PASSCRED`).
//! - A reply never follows a symlink: a sender's path is pinned to its inode, which must be a
//!   socket owned by the sender, before the reply goes out (see [`reply_to_path`]).
//! - `--idle-timeout` and `--max-connections` have no meaning here (there are no
//!   connections). At shutdown the datagrams already queued are answered, then the server
//!   stops.

use std::io::{self, IoSliceMut};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendFlags, SocketAddrUnix,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

use crate::config::Config;
use crate::connection::echo_log;
use crate::shutdown::Shutdown;

/// The largest datagram answered. Unix datagrams are bounded by the sender's send buffer
/// (`net.core.wmem_default`, 208 KiB by default); a larger one is counted and dropped.
const MAX_DATAGRAM: usize = 256 * 1024;
/// Datagrams answered per turn before yielding.
const PER_TURN: usize = 256;
/// At shutdown, at most this many queued datagrams are answered.
const DRAIN_MAX: usize = 100_000;
/// How often a run of dropped datagrams is summarised in the log.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Replies never block and never raise SIGPIPE.
const SEND: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);

/// Answers a sender known by a path without resolving that path again: the path is a name
/// in someone else's directory, and between the datagram and the reply its owner could
/// replace it with a symlink to a socket they may not write to (`/dev/log`, a service's
/// `NOTIFY_SOCKET`) — a reply through it would write there with this server's rights.
///
/// So the path is opened with `O_PATH | O_NOFOLLOW` (a symlink fails), the inode is checked
/// (a socket owned by the uid the kernel says sent the datagram), and the reply goes to that
/// very inode through `/proc/self/fd/N`. `EPERM` means the check failed.
fn reply_to_path(
    socket: &UnixDatagram,
    datagram: &[u8],
    path: &std::ffi::CStr,
    sender_uid: u32,
) -> rustix::io::Result<usize> {
    use rustix::fs::{FileType, Mode, OFlags};
    let inode = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => rustix::io::Errno::PERM,
        e => e,
    })?;
    let stat = rustix::fs::fstat(&inode)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket || stat.st_uid != sender_uid {
        return Err(rustix::io::Errno::PERM);
    }
    let pinned = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&inode));
    let to = SocketAddrUnix::new(pinned.as_str())?;
    rustix::net::sendto(socket, datagram, SEND, &to)
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Its sender has no address.
    Unnamed,
    /// Its sender is not in `--allow-uid`.
    Refused,
    /// It did not fit in [`MAX_DATAGRAM`].
    TooLarge,
    /// The sender's queue was full.
    NotReading,
    /// The sender's path no longer names a socket of the sender's own (a symlink, another
    /// file, another owner).
    Impostor,
}

impl Dropped {
    fn why(self) -> &'static str {
        match self {
            Dropped::Unnamed => {
                "from a sender with no address (bind the client's socket to get replies)"
            }
            Dropped::Refused => "from a uid not in --allow-uid",
            Dropped::TooLarge => "larger than 256 KiB",
            Dropped::NotReading => "whose sender was not reading its replies",
            Dropped::Impostor => {
                "whose sender's path no longer named a socket of its own (replaced or a symlink)"
            }
        }
    }
}

/// Counts unanswered datagrams and logs them at most once every [`REPORT_EVERY`].
#[derive(Debug, Default)]
struct DropLog {
    counts: [u64; 5],
    reported_at: Option<Instant>,
}

impl DropLog {
    fn dropped(&mut self, why: Dropped) {
        self.counts[why as usize] += 1;
        let now = Instant::now();
        if self
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            self.report();
            self.reported_at = Some(now);
        }
    }

    fn report(&mut self) {
        for (i, why) in [
            Dropped::Unnamed,
            Dropped::Refused,
            Dropped::TooLarge,
            Dropped::NotReading,
            Dropped::Impostor,
        ]
        .into_iter()
        .enumerate()
        {
            let n = std::mem::take(&mut self.counts[i]);
            if n > 0 {
                tracing::warn!(
                    "dropped {n} datagram{} {}",
                    if n == 1 { "" } else { "s" },
                    why.why()
                );
            }
        }
    }
}

/// Answers datagrams on `socket` until the shutdown begins, then the ones already queued.
pub(crate) async fn serve(socket: UnixDatagram, name: &str, config: &Config, shutdown: &Shutdown) {
    // Every datagram carries its sender's credentials: for --allow-uid, and to check that a
    // reply path still belongs to the sender.
    if let Err(e) = rustix::net::sockopt::set_socket_passcred(&socket, true) {
        tracing::warn!(
            "{name}: cannot read senders' credentials ({e}); no datagram can be answered"
        );
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut drops = DropLog::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown.begun() => break,
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!("{name}: {e}");
                    return;
                }
            }
        }
        // A bounded turn, then the other tasks (signals) get the thread.
        if let Err(e) = answer_queued(&socket, config, &mut buf, &mut drops, PER_TURN) {
            tracing::debug!("{name}: {e}");
        }
        tokio::task::yield_now().await;
    }
    // The datagrams sent before the signal are answered; then the socket closes.
    if let Err(e) = answer_queued(&socket, config, &mut buf, &mut drops, DRAIN_MAX) {
        tracing::debug!("{name}: {e}");
    }
    drops.report();
}

/// Answers datagrams until none is queued (or `limit` were read).
fn answer_queued(
    socket: &UnixDatagram,
    config: &Config,
    buf: &mut [u8],
    drops: &mut DropLog,
    limit: usize,
) -> io::Result<()> {
    for _ in 0..limit {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = socket.try_io(Interest::READABLE, || {
            rustix::net::recvmsg(
                socket,
                &mut [IoSliceMut::new(buf)],
                &mut control,
                RecvFlags::DONTWAIT,
            )
            .map_err(io::Error::from)
        });
        let msg = match received {
            Ok(msg) => msg,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let uid = control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmCredentials(cred) => Some(cred.uid.as_raw()),
            _ => None,
        });
        let Some(uid) = uid else {
            // SO_PASSCRED is set: the kernel attaches credentials to every datagram.
            drops.dropped(Dropped::Refused);
            continue;
        };
        let sender = msg
            .address
            .and_then(|a| SocketAddrUnix::try_from(a).ok())
            .filter(|a| a.path().is_some() || a.abstract_name().is_some());
        let Some(sender) = sender else {
            drops.dropped(Dropped::Unnamed);
            continue;
        };
        if !config.allow_uids.is_empty() && !config.allow_uids.contains(&uid) {
            drops.dropped(Dropped::Refused);
            continue;
        }
        if msg.flags.contains(ReturnFlags::TRUNC) {
            drops.dropped(Dropped::TooLarge);
            continue;
        }
        let datagram = &buf[..msg.bytes];
        if echo_log::enabled() {
            echo_log::log(&[datagram]);
        }
        let sent = match sender.path() {
            Some(path) => reply_to_path(socket, datagram, &path, uid),
            None => rustix::net::sendto(socket, datagram, SEND, &sender),
        };
        match sent {
            Ok(_) => {}
            Err(rustix::io::Errno::PERM) => drops.dropped(Dropped::Impostor),
            Err(rustix::io::Errno::AGAIN) => drops.dropped(Dropped::NotReading),
            // The sender is gone (its address no longer exists): nothing to answer.
            Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {}
            Err(e) => tracing::debug!("answering a datagram: {e}"),
        }
    }
    Ok(())
}
