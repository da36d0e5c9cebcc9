//! The datagram echo: one socket, no connections. Each datagram goes back to its sender's
//! address, whole.
//!
//! - A sender with no address (an unbound socket: `socat UNIX-SENDTO` without `bind=`, `nc -uU`
//!   versions that do not bind) cannot be answered: its datagrams are counted and dropped,
//!   with at most one log line every few seconds. Nobody else notices.
//! - A sender whose receive queue is full (it is not reading its replies) would make the
//!   server wait for it, and so everyone: its reply is dropped and counted the same way.
//!   Datagrams are unreliable by nature; a blocked sender never blocks the others.
//! - With faults (`--fault`, `--control`), each datagram is answered through
//!   `fault::Datagrams`, which may drop it, hold it back, cut it, answer it otherwise or twice
//!   (the drain lifts them); without, one `Option` is checked per datagram.
//! - Replies a sender has not read yet are charged by the kernel to the *server's* send
//!   buffer, shared by all senders. So the server asks for a large one ([`SEND_BUFFER`]);
//!   a sender that never reads holds at most `net.unix.max_dgram_qlen + 1` (11) replies.
//!   When non-readers together hold the whole buffer, replies to everyone are dropped until
//!   they read or go away: the log says so (not "not reading" of the innocent). Linux offers
//!   no way to see which sender holds what; the README's guarantees give the measured bound.
//! - `--allow-uid` is checked per datagram from the sender's credentials (`SO_PASSCRED`).
//! - A reply never follows a symlink: a sender's path is pinned to its inode, which must be a
//!   socket owned by the sender, before the reply goes out (see [`reply_to_path`]).
//! - An abstract sender (when the server's own address is a path) is answered only if its
//!   name, here, is held by a socket of the sender's own uid (see `names.rs`).
//! - `--idle-timeout` and `--max-connections` have no meaning here (there are no
//!   connections). At shutdown the datagrams already queued are answered — at most as many as
//!   the kernel queues (`net.unix.max_dgram_qlen` + 1), within `--shutdown-timeout`, and
//!   none more once a second signal comes — then the server stops.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the loop, the drain, one datagram's answer, a path sender's reply |
//! | `names.rs` | whose an abstract sender's name is here |
//! | `drops.rs` | why a datagram got no answer, and the log of it |

mod drops;
mod names;

use std::io::{self, IoSlice};
use std::ops::Not;
use std::os::fd::AsFd;

use rustix::net::{RecvFlags, SendFlags, SocketAddrUnix};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

pub(crate) use self::drops::{DropLog, Dropped};
pub(crate) use self::names::{AbstractNames, Holder};
use crate::config::Config;
use crate::descriptors;
use crate::echo_log;
use crate::fault::{Datagrams, Faults};
use crate::shutdown::Shutdown;

/// The largest datagram answered. Unix datagrams are bounded by the sender's send buffer
/// (`net.core.wmem_default`, 208 KiB by default); a larger one is counted and dropped.
const MAX_DATAGRAM: usize = 256 * 1024;
/// Datagrams answered per turn before yielding.
const PER_TURN: usize = 256;
/// How many datagrams the kernel queues for the server when `net.unix.max_dgram_qlen` cannot
/// be read (no `/proc`): more than it ever does by default (11), so that none queued at the
/// signal goes unanswered, and still a bound.
const QUEUED_AT_MOST: usize = 1024;

/// The send buffer asked for: replies unread by their senders are charged to it. Granted in
/// full to a server with `CAP_NET_ADMIN` (`SO_SNDBUFFORCE`, the kernel doubles it), otherwise
/// up to `net.core.wmem_max` (doubled too).
const SEND_BUFFER: usize = 8 * 1024 * 1024;

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
pub(crate) fn reply_to_path(
    socket: &UnixDatagram,
    datagram: &[u8],
    fds: &descriptors::Passed,
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
    descriptors::send(
        socket.as_fd(),
        &[IoSlice::new(datagram)],
        fds,
        SEND,
        Some(&to),
    )
}

/// Answers datagrams on `socket` until the shutdown begins, then the ones already queued.
/// With `faults`, as they have it until the shutdown begins.
pub(crate) async fn serve(
    socket: UnixDatagram,
    name: &str,
    config: &Config,
    faults: Option<&std::sync::Arc<Faults>>,
    shutdown: &Shutdown,
) {
    // Every datagram carries its sender's credentials: for --allow-uid, and to check that a
    // reply path still belongs to the sender.
    if let Err(e) = rustix::net::sockopt::set_socket_passcred(&socket, true) {
        tracing::warn!(
            "{name}: cannot read senders' credentials ({e}); no datagram can be answered"
        );
    }
    let granted = enlarge_send_buffer(&socket);
    tracing::debug!("{name}: replies share a send buffer of {granted} bytes");
    // The kernel took the queue's bound from the setting when the socket was made, which may
    // have changed since: the larger of then (about) and at the drain.
    let queued_at_start = queued_at_most();
    let mut state = State {
        buf: vec![0u8; MAX_DATAGRAM],
        drops: DropLog::default(),
        // A sender can reach a path-bound socket from any network namespace; an abstract one
        // only with a socket of its own namespace, whose name is its own there.
        names: bound_to_abstract_name(&socket)
            .not()
            .then(AbstractNames::default),
        faults: faults.map(Datagrams::new),
    };
    loop {
        tokio::select! {
            biased;
            () = shutdown.begun() => {
                lift_faults(&socket, config, &mut state);
                break;
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!("{name}: {e}");
                    return;
                }
            }
        }
        // A bounded turn, then the other tasks (signals) get the thread.
        if let Err(e) = answer_queued(&socket, config, &mut state, PER_TURN, Read::WhenReady) {
            tracing::debug!("{name}: {e}");
        }
        tokio::task::yield_now().await;
    }
    let queued = queued_at_start.max(queued_at_most());
    drain(&socket, name, config, &mut state, shutdown, queued).await;
    state.drops.report();
}

/// Answers the datagrams queued at the signal: at most `queued` (what the kernel queues for a
/// datagram socket: senders wait, or get `EAGAIN`, beyond it), so a sender that keeps sending
/// cannot keep the drain going. One at a time, letting the signal handler run between them: a
/// second signal (or SIGQUIT) ends the drain at once, and `--shutdown-timeout` bounds it.
async fn drain(
    socket: &UnixDatagram,
    name: &str,
    config: &Config,
    state: &mut State,
    shutdown: &Shutdown,
    queued: usize,
) {
    if config.shutdown_timeout.is_zero() {
        return;
    }
    let answered = async {
        for _ in 0..queued {
            // Whatever tokio last saw, what is queued now is read.
            match answer_queued(socket, config, state, 1, Read::Now) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("{name}: {e}");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        () = shutdown.forced() => {
            tracing::warn!("{name}: datagrams still queued are left unanswered");
        }
        drained = tokio::time::timeout(config.shutdown_timeout, answered) => {
            if drained.is_err() {
                tracing::warn!(
                    "{name}: datagrams still queued after --shutdown-timeout {} are left \
                     unanswered",
                    humantime::format_duration(config.shutdown_timeout)
                );
            }
        }
    }
}

/// How many datagrams the kernel queues for a datagram socket at most: `max_dgram_qlen` + 1
/// (`unix_recvq_full` in `net/unix/af_unix.c` refuses a sender once the queue is longer than
/// the socket's backlog, which a datagram socket takes from this setting when it is made).
fn queued_at_most() -> usize {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(QUEUED_AT_MOST, |qlen| qlen.saturating_add(1))
}

/// Asks for [`SEND_BUFFER`], forcing it past `net.core.wmem_max` where allowed; returns the
/// size granted.
fn enlarge_send_buffer(socket: &UnixDatagram) -> usize {
    use rustix::net::sockopt;
    if sockopt::set_socket_send_buffer_size_force(socket, SEND_BUFFER).is_err() {
        let _ = sockopt::set_socket_send_buffer_size(socket, SEND_BUFFER);
    }
    sockopt::socket_send_buffer_size(socket).unwrap_or(0)
}

/// After `EAGAIN`: is it the server's own send buffer that is (nearly) full, rather than the
/// sender's queue? The kernel reports an unconnected datagram socket writable while at most a
/// quarter of its buffer is in use.
fn send_buffer_full(socket: &UnixDatagram) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(socket, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(0))
}

/// The drain began: a datagram the faults held back is answered, and no fault applies to
/// the datagrams still queued.
fn lift_faults(socket: &UnixDatagram, config: &Config, state: &mut State) {
    if let Some(faults) = state.faults.take() {
        let (drops, names) = (&mut state.drops, &mut state.names);
        faults.lift(|bytes, msg, from| {
            answer_one(socket, config, drops, names.as_mut(), bytes, msg, from);
        });
    }
}

/// What the datagram loop keeps between turns.
#[derive(Debug)]
struct State {
    /// Where each datagram is read, [`MAX_DATAGRAM`] bytes.
    buf: Vec<u8>,
    drops: DropLog,
    /// Checks who owns an abstract sender's name here; `None` when the server's own address
    /// is abstract (only sockets of its own namespace can reach it).
    names: Option<AbstractNames>,
    /// The faults, if the server has any (`--fault`, `--control`).
    faults: Option<Datagrams>,
}

/// Is `socket` bound to an abstract name (reachable only from its own network namespace)?
fn bound_to_abstract_name(socket: &UnixDatagram) -> bool {
    rustix::net::getsockname(socket)
        .ok()
        .and_then(|a| SocketAddrUnix::try_from(a).ok())
        .is_some_and(|a| a.abstract_name().is_some())
}

/// How [`answer_queued`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Through tokio's readiness, which an empty read clears (serving).
    WhenReady,
    /// Straight from the socket, whatever tokio last saw (the drain).
    Now,
}

/// Answers datagrams until none is queued (or `limit` were read); how many were read.
fn answer_queued(
    socket: &UnixDatagram,
    config: &Config,
    state: &mut State,
    limit: usize,
    read: Read,
) -> io::Result<usize> {
    let State {
        buf,
        drops,
        names,
        faults,
    } = state;
    for count in 0..limit {
        // Room for the sender's credentials and for descriptors, as many as the process can
        // spare (a datagram's are closed once its reply carries them, or it gets none).
        let room = descriptors::room();
        let mut recv = || {
            descriptors::recv_from(socket.as_fd(), buf, RecvFlags::DONTWAIT, room, true)
                .map_err(io::Error::from)
        };
        let received = match read {
            Read::WhenReady => socket.try_io(Interest::READABLE, recv),
            Read::Now => recv(),
        };
        let (mut msg, from) = match received {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(count),
            Err(e) => return Err(e),
        };
        // Whatever happens to the datagram, its descriptors are accounted for: carried back,
        // or closed and counted in the drop report.
        drops.passed_now = msg.fds.len();
        match faults {
            None => answer_one(socket, config, drops, names.as_mut(), buf, &mut msg, from),
            Some(faults) => faults.answer(buf, &mut msg, from, |bytes, msg, from| {
                answer_one(socket, config, drops, names.as_mut(), bytes, msg, from);
            }),
        }
        crate::busy_poll::worked();
        drops.passed_now = 0;
        msg.fds.close();
    }
    Ok(limit)
}

/// Answers one received datagram (its reply carrying its descriptors), or counts why not.
/// With `-v`, a datagram whose reply went out is logged (`echo: ...`); one dropped is counted
/// instead.
fn answer_one(
    socket: &UnixDatagram,
    config: &Config,
    drops: &mut DropLog,
    names: Option<&mut AbstractNames>,
    buf: &[u8],
    msg: &mut descriptors::Received,
    from: Option<rustix::net::SocketAddrAny>,
) {
    if msg.truncated {
        drops.dropped(Dropped::DescriptorsTruncated);
        return;
    }
    let Some(cred) = msg.creds else {
        // SO_PASSCRED is set: the kernel attaches credentials to every datagram.
        drops.dropped(Dropped::Refused);
        return;
    };
    let sender = from
        .and_then(|a| SocketAddrUnix::try_from(a).ok())
        .filter(|a| a.path().is_some() || a.abstract_name().is_some());
    let Some(sender) = sender else {
        drops.dropped(Dropped::Unnamed);
        return;
    };
    let uid = cred.uid;
    if !config.allow_uids.is_empty() && !config.allow_uids.contains(&uid) {
        drops.dropped(Dropped::Refused);
        return;
    }
    if msg.cut {
        drops.dropped(Dropped::TooLarge);
        return;
    }
    let datagram = &buf[..msg.len];
    // Described now: once the reply carries them, ours are closed.
    let note = (echo_log::enabled() && !msg.fds.is_empty()).then(|| msg.fds.describe());
    let sent = match (sender.path(), names) {
        // Relative to the sender's working directory, which is not ours to resolve.
        (Some(path), _) if !path.to_bytes().starts_with(b"/") => {
            drops.dropped(Dropped::RelativePath);
            return;
        }
        (Some(path), _) => reply_to_path(socket, datagram, &msg.fds, &path, uid),
        (None, Some(names)) => {
            let name = sender.abstract_name().unwrap_or_default();
            match names.holder(name, uid) {
                Holder::Sender => reply(socket, datagram, &msg.fds, &sender),
                Holder::Other => {
                    drops.dropped(Dropped::ForeignName);
                    return;
                }
                Holder::Nobody => {
                    drops.dropped(Dropped::NameGone);
                    return;
                }
                Holder::Unchecked => {
                    drops.dropped(Dropped::Unchecked);
                    return;
                }
            }
        }
        // The server's own address is abstract: only its own namespace reaches it.
        (None, None) => reply(socket, datagram, &msg.fds, &sender),
    };
    match sent {
        Ok(_) => {
            if echo_log::enabled() {
                echo_log::log_with(&[datagram], note.as_deref());
            }
            msg.fds.returned();
        }
        Err(rustix::io::Errno::PERM) if !msg.fds.is_empty() => {
            drops.dropped(Dropped::RightsRefused);
        }
        Err(rustix::io::Errno::PERM) if sender.path().is_some() => {
            drops.dropped(Dropped::Impostor);
        }
        Err(rustix::io::Errno::PERM) => drops.dropped(Dropped::ConnectedElsewhere),
        Err(rustix::io::Errno::AGAIN) if send_buffer_full(socket) => {
            drops.dropped(Dropped::BufferFull);
        }
        Err(rustix::io::Errno::AGAIN) => drops.dropped(Dropped::NotReading),
        Err(rustix::io::Errno::MSGSIZE) => drops.dropped(Dropped::ReplyTooLarge),
        // The sender's user has too many descriptors in flight already.
        Err(rustix::io::Errno::TOOMANYREFS) => drops.dropped(Dropped::TooManyInFlight),
        // The sender is gone (its address no longer exists): nothing to answer, but the
        // descriptors it passed are closed with a word.
        Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) if !msg.fds.is_empty() => {
            drops.dropped(Dropped::SenderGone);
        }
        Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {}
        Err(e) => tracing::debug!("answering a datagram: {e}"),
    }
}

/// The reply to an abstract sender, by name, with the descriptors that came.
fn reply(
    socket: &UnixDatagram,
    datagram: &[u8],
    fds: &descriptors::Passed,
    to: &SocketAddrUnix,
) -> rustix::io::Result<usize> {
    descriptors::send(
        socket.as_fd(),
        &[IoSlice::new(datagram)],
        fds,
        SEND,
        Some(to),
    )
}
