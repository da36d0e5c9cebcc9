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
//! - `--idle-timeout` and `--max-connections` have no meaning here (there are no
//!   connections). At shutdown the datagrams already queued are answered, then the server
//!   stops.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::ops::Not;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::{RecvFlags, SendFlags, SocketAddrUnix};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

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
/// At shutdown, at most this many queued datagrams are answered.
const DRAIN_MAX: usize = 100_000;
/// How often a run of dropped datagrams is summarised in the log.
const REPORT_EVERY: Duration = Duration::from_secs(5);

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
    /// The server's send buffer was full of replies other senders have not read.
    BufferFull,
    /// The sender's path no longer names a socket of the sender's own (a symlink, another
    /// file, another owner).
    Impostor,
    /// The sender's abstract name is not its own in this server's network namespace: it
    /// belongs to another uid here, or to nobody (the sender's socket is in another
    /// namespace).
    ForeignName,
    /// The sender's path is relative (to its own working directory, unknown here).
    RelativePath,
    /// The reply was larger than the server's send buffer allows.
    ReplyTooLarge,
    /// The server could not take the descriptors passed with it (`MSG_CTRUNC`: near its
    /// descriptor limit); the kernel closed them.
    DescriptorsTruncated,
    /// The kernel refused the reply's descriptors: this user has too many in flight
    /// (`ETOOMANYREFS`, senders not reading their replies).
    TooManyInFlight,
    /// The sender refuses passed descriptors (`SO_PASSRIGHTS` off: `EPERM`).
    RightsRefused,
    /// The sender was gone before the descriptors its datagram passed could go back (a
    /// datagram without any is not counted: nothing of it is lost that the sender kept).
    SenderGone,
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
            Dropped::BufferFull => {
                "while the server's send buffer was full of replies that senders have not read"
            }
            Dropped::Impostor => {
                "whose sender's path no longer named a socket of its own (replaced or a symlink)"
            }
            Dropped::ForeignName => {
                "from an abstract address that is not the sender's own in this server's network \
                 namespace (bind the client's socket to a path to get replies)"
            }
            Dropped::RelativePath => {
                "from a sender bound to a relative path (bind it to an absolute one)"
            }
            Dropped::ReplyTooLarge => "whose reply is larger than the server's send buffer",
            Dropped::DescriptorsTruncated => {
                "whose descriptors the server could not take (near its descriptor limit; the \
                 kernel closed them)"
            }
            Dropped::TooManyInFlight => {
                "whose descriptors the kernel would not send back (too many in flight to \
                 senders that do not read)"
            }
            Dropped::RightsRefused => {
                "whose sender refuses passed descriptors (SO_PASSRIGHTS off), with the \
                 descriptors it passed"
            }
            Dropped::SenderGone => "whose sender had gone before its descriptors could go back",
        }
    }
}

/// Counts unanswered datagrams and logs them at most once every [`REPORT_EVERY`].
#[derive(Debug, Default)]
struct DropLog {
    counts: [u64; 13],
    /// Descriptors that came with unanswered datagrams, closed.
    descriptors: u64,
    /// How many came with the datagram being answered now.
    passed_now: usize,
    reported_at: Option<Instant>,
}

impl DropLog {
    fn dropped(&mut self, why: Dropped) {
        self.counts[why as usize] += 1;
        self.descriptors += std::mem::take(&mut self.passed_now) as u64;
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
            Dropped::BufferFull,
            Dropped::Impostor,
            Dropped::ForeignName,
            Dropped::RelativePath,
            Dropped::ReplyTooLarge,
            Dropped::DescriptorsTruncated,
            Dropped::TooManyInFlight,
            Dropped::RightsRefused,
            Dropped::SenderGone,
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
        let n = std::mem::take(&mut self.descriptors);
        if n > 0 {
            tracing::warn!("closed {n} passed descriptor(s) that came with dropped datagrams");
        }
    }
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
        if let Err(e) = answer_queued(&socket, config, &mut state, PER_TURN) {
            tracing::debug!("{name}: {e}");
        }
        tokio::task::yield_now().await;
    }
    // The datagrams sent before the signal are answered; then the socket closes.
    if let Err(e) = answer_queued(&socket, config, &mut state, DRAIN_MAX) {
        tracing::debug!("{name}: {e}");
    }
    state.drops.report();
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

/// Does an abstract name belong, in this server's network namespace, to the sender?
///
/// Abstract names are per network namespace, and anyone can make one (`unshare -r -n`). A
/// sender can carry a name that, here, belongs to another service: from a namespace of its
/// own, through a path-bound server's file; or from a socket made in another namespace while
/// its process (or one thread of it) is in ours. A reply by that name would reach the other
/// service, from the server's address and with its credentials. So, as for a path, the
/// reply goes out only if the name's socket here is owned by the uid the kernel says sent the
/// datagram (`SCM_CREDENTIALS`), from the kernel's socket diagnostics ([`crate::unix_diag`]).
/// One dump lists every name; it is reused for [`OWNERS_TTL`]. A name it lacks (a sender
/// that bound a moment ago) triggers a new dump, once per name within [`OWNERS_TTL`]: a
/// sender repeating a name it does not own costs one dump, not one per datagram; a sender
/// inventing a new name each time costs a dump per datagram, as a sender with a new socket
/// per datagram would.
#[derive(Debug, Default)]
struct AbstractNames {
    /// The last dump: each name's owner.
    owners: HashMap<Vec<u8>, u32>,
    /// When it was taken.
    taken_at: Option<Instant>,
    /// Names the last dump lacked and were looked for since.
    missing: std::collections::HashSet<Vec<u8>>,
}

/// How long one dump of the namespace's names is trusted.
const OWNERS_TTL: Duration = Duration::from_millis(100);

impl AbstractNames {
    fn owned_by(&mut self, name: &[u8], uid: u32) -> bool {
        let now = Instant::now();
        let stale = self
            .taken_at
            .is_none_or(|at| now.duration_since(at) >= OWNERS_TTL);
        let new_name = !self.owners.contains_key(name) && !self.missing.contains(name);
        if stale || new_name {
            match crate::unix_diag::abstract_owners() {
                Ok(owners) => self.owners = owners,
                Err(e) => {
                    tracing::debug!("listing abstract socket names: {e}");
                    self.owners.clear();
                }
            }
            if stale {
                self.taken_at = Some(now);
                self.missing.clear();
            }
        }
        match self.owners.get(name) {
            Some(&owner) => owner == uid,
            None => {
                self.missing.insert(name.to_vec());
                false
            }
        }
    }
}

/// Is `socket` bound to an abstract name (reachable only from its own network namespace)?
fn bound_to_abstract_name(socket: &UnixDatagram) -> bool {
    rustix::net::getsockname(socket)
        .ok()
        .and_then(|a| SocketAddrUnix::try_from(a).ok())
        .is_some_and(|a| a.abstract_name().is_some())
}

/// Answers datagrams until none is queued (or `limit` were read).
fn answer_queued(
    socket: &UnixDatagram,
    config: &Config,
    state: &mut State,
    limit: usize,
) -> io::Result<()> {
    let State {
        buf,
        drops,
        names,
        faults,
    } = state;
    for _ in 0..limit {
        // Room for the sender's credentials and for descriptors, as many as the process can
        // spare (a datagram's are closed once its reply carries them, or it gets none).
        let room = descriptors::room();
        let received = socket.try_io(Interest::READABLE, || {
            descriptors::recv_from(socket.as_fd(), buf, RecvFlags::DONTWAIT, room, true)
                .map_err(io::Error::from)
        });
        let (mut msg, from) = match received {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
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
    Ok(())
}

/// Answers one received datagram (its reply carrying its descriptors), or counts why not.
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
    let uid = cred.uid.as_raw();
    if !config.allow_uids.is_empty() && !config.allow_uids.contains(&uid) {
        drops.dropped(Dropped::Refused);
        return;
    }
    if msg.cut {
        drops.dropped(Dropped::TooLarge);
        return;
    }
    let datagram = &buf[..msg.len];
    if echo_log::enabled() {
        let note = (!msg.fds.is_empty()).then(|| msg.fds.describe());
        echo_log::log_with(&[datagram], note.as_deref());
    }
    let sent = match sender.path() {
        // Relative to the sender's working directory, which is not ours to resolve.
        Some(path) if !path.to_bytes().starts_with(b"/") => {
            drops.dropped(Dropped::RelativePath);
            return;
        }
        Some(path) => reply_to_path(socket, datagram, &msg.fds, &path, uid),
        None if names.is_some_and(|names| {
            let name = sender.abstract_name().unwrap_or_default();
            !names.owned_by(name, uid)
        }) =>
        {
            drops.dropped(Dropped::ForeignName);
            return;
        }
        None => descriptors::send(
            socket.as_fd(),
            &[IoSlice::new(datagram)],
            &msg.fds,
            SEND,
            Some(&sender),
        ),
    };
    match sent {
        Ok(_) => msg.fds.returned(),
        Err(rustix::io::Errno::PERM) if !msg.fds.is_empty() => {
            drops.dropped(Dropped::RightsRefused);
        }
        Err(rustix::io::Errno::PERM) => drops.dropped(Dropped::Impostor),
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
