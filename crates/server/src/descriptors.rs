//! Descriptors passed with the bytes (`SCM_RIGHTS`): taken with a read, sent back with the
//! first bytes written after it, and counted so the server never runs out of its own.
//!
//! Every read in every socket type is a `recvmsg` with room for one message's descriptors
//! ([`MAX_PER_READ`], the kernel's `SCM_MAX_FD`): a plain `recv` would make the kernel close
//! them. What a read brings is a [`Passed`]: counted in a process-wide tally until the echo
//! carries it out (our copies close once the kernel holds its own in the reply) or the
//! connection ends without one (closed with a log line, never silently).
//!
//! The tally is what keeps descriptor-passing peers from starving everyone else of
//! descriptors: [`room`] is how many a read may take now (the limit less what connections and
//! held descriptors use, less a reserve for accepting and for the server's own), and a
//! connection that passes descriptors waits for room ([`Waiter`]) rather than reading into a
//! truncation. A read that the kernel still truncates (`MSG_CTRUNC`: the control buffer was
//! smaller than what came, or the process hit its limit while taking them) is reported, and
//! its connection ended, by the caller.

use std::fmt::Write as _;
use std::future::Future;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, UCred,
};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`), and so the most one read
/// can bring: a stream read stops after the first chunk that carries any.
pub(crate) const MAX_PER_READ: usize = 253;

/// Descriptors kept out of reach of passed ones besides the server's own ([`OWN`]): room to
/// accept, to log, and for what serving opens on the way.
const RESERVE: usize = 64;

/// The server's own descriptors once it serves (listener, lock file, logging, each serving
/// thread's epoll set and wakers: about four a thread, so 160 on a 40-core machine), counted
/// by [`count_own`]; until then, a guess for one thread.
static OWN: AtomicUsize = AtomicUsize::new(16);

/// Descriptors received and not yet sent back or closed, in the whole process.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// Connections open, in the whole process: each holds a descriptor.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Connections waiting for [`room`]: releases notify only when someone waits.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Woken when held descriptors are released or a connection closes.
static RELEASED: Notify = Notify::const_new();
/// `RLIMIT_NOFILE`, read the first time it is needed (after `main` raised it).
static LIMIT: OnceLock<usize> = OnceLock::new();

fn limit() -> usize {
    *LIMIT.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        limit
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX)
    })
}

/// Counts the server's own descriptors, once its serving threads have started and before it
/// accepts: what passed descriptors must leave alone besides [`RESERVE`].
pub(crate) fn count_own() {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => OWN.store(dir.count(), SeqCst),
        Err(e) => tracing::debug!("counting our own descriptors: {e}"),
    }
}

/// How many descriptors a read may take now, at most [`MAX_PER_READ`].
pub(crate) fn room() -> usize {
    let used = RESERVE + OWN.load(SeqCst) + CONNECTIONS.load(SeqCst) + HELD.load(SeqCst);
    limit().saturating_sub(used).min(MAX_PER_READ)
}

fn released() {
    if WAITING.load(SeqCst) > 0 {
        RELEASED.notify_waiters();
    }
}

/// An open connection, counted against the descriptor limit for as long as it lives.
#[derive(Debug)]
pub(crate) struct Counted(());

impl Counted {
    pub(crate) fn new() -> Counted {
        CONNECTIONS.fetch_add(1, SeqCst);
        Counted(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, SeqCst);
        released();
    }
}

/// Waits until a whole message's worth of descriptors fits: what a connection that passes
/// descriptors does before its next read, when the process is near its limit.
#[derive(Debug, Default)]
pub(crate) struct Waiter(Option<Pin<Box<Notified<'static>>>>);

impl Waiter {
    /// Ready once [`room`] holds `need` descriptors (at most [`MAX_PER_READ`]): as many as the
    /// connection passed last time. A whole message's worth could never fit under a small
    /// limit; a passer that sends more than last time finds its read truncated instead.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<()> {
        let need = need.min(MAX_PER_READ);
        loop {
            if room() >= need {
                self.stop();
                return Poll::Ready(());
            }
            match &mut self.0 {
                None => {
                    // Registered before the count is read again, so no release is missed.
                    let mut notified = Box::pin(RELEASED.notified());
                    notified.as_mut().enable();
                    WAITING.fetch_add(1, SeqCst);
                    self.0 = Some(notified);
                }
                Some(notified) => {
                    if notified.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.stop();
                }
            }
        }
    }

    fn stop(&mut self) {
        if self.0.take().is_some() {
            WAITING.fetch_sub(1, SeqCst);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Closes `fds` away from the serving threads, counting them as held until they are closed.
///
/// Closing the last reference to what a peer passed runs that file's own close, which can
/// wait as long as the peer likes: a TCP socket with `SO_LINGER` and unsent data waits out
/// its linger time. On a serving thread that would stall every connection on it, so what
/// the server closes unreturned — held descriptors, a connection socket whose queue may hold
/// some — is closed on a thread of its own. The kernel defers that last close to the thread
/// that dropped the reference, which is why dropping them elsewhere is enough.
pub(crate) fn close_aside(fds: Vec<OwnedFd>) {
    if !fds.is_empty() {
        HELD.fetch_add(fds.len(), SeqCst);
        Aside(fds).close();
    }
}

/// Descriptors being closed aside: counted in [`HELD`] until they are closed.
struct Aside(Vec<OwnedFd>);

impl Aside {
    /// On a new thread (closes are rare: a connection's abnormal end, a truncation, a
    /// datagram's drop), so one that waits holds up no other; here if none can be started.
    fn close(self) {
        let started = std::thread::Builder::new()
            .name("udsecho-close".to_owned())
            .spawn(move || drop(self));
        if let Err(e) = started {
            // The closure, and so the descriptors, were dropped here.
            tracing::debug!("closing passed descriptors on this thread: {e}");
        }
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        let n = self.0.len();
        self.0.clear();
        unhold(n);
    }
}

/// `n` held descriptors are closed: uncounted, and whoever waits for room is told.
fn unhold(n: usize) {
    if n > 0 {
        HELD.fetch_sub(n, SeqCst);
        released();
    }
}

/// Descriptors a peer passed, held until the bytes that carry them back are written.
#[derive(Debug, Default)]
pub(crate) struct Passed(Vec<OwnedFd>);

impl Passed {
    /// None held.
    pub(crate) const fn none() -> Passed {
        Passed(Vec::new())
    }

    fn take(fds: Vec<OwnedFd>) -> Passed {
        HELD.fetch_add(fds.len(), SeqCst);
        Passed(fds)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds what a later read brought (at most one message's worth in all: the caller reads
    /// with room for `MAX_PER_READ - self.len()` only).
    pub(crate) fn append(&mut self, mut more: Passed) {
        self.0.append(&mut more.0);
    }

    /// The kernel holds its own references now (they are in the reply): ours close, here (a
    /// close that is not the last cannot wait).
    pub(crate) fn sent(&mut self) {
        let n = self.0.len();
        self.0.clear();
        unhold(n);
    }

    /// Closes copies of descriptors still queued in the socket (a peeked message's): never the
    /// last references, so closed here.
    pub(crate) fn close_copies(&mut self) {
        self.sent();
    }

    /// Closes them unreturned without a word, for a caller that reports them itself; how many.
    pub(crate) fn close(&mut self) -> usize {
        let n = self.0.len();
        self.release_aside();
        n
    }

    /// If `e` is the kernel refusing to send them back (`ETOOMANYREFS`: this server's user has
    /// too many descriptors in flight, to peers that do not read their echoes; one budget for
    /// the whole user, so one such peer can cause it for everyone), closes them with a log
    /// line and says so (`true`): the caller sends the bytes again without them, and the
    /// connection goes on.
    pub(crate) fn refused(&mut self, e: rustix::io::Errno) -> bool {
        if e != rustix::io::Errno::TOOMANYREFS || self.0.is_empty() {
            return false;
        }
        self.lose(
            "the kernel would not send them back: this server's user has too many \
             descriptors in flight (peers that do not read their echoes)",
        );
        true
    }

    /// Closes them unreturned, saying why.
    pub(crate) fn lose(&mut self, why: &str) {
        if !self.0.is_empty() {
            tracing::warn!(
                "closed {} passed descriptor(s) without returning them: {why}",
                self.0.len()
            );
            self.release_aside();
        }
    }

    /// Ours may be the last references: closed aside ([`close_aside`]), still counted until
    /// they are.
    fn release_aside(&mut self) {
        let fds = std::mem::take(&mut self.0);
        if !fds.is_empty() {
            Aside(fds).close();
        }
    }

    /// What they are, for `-v`: `2 descriptors: file /etc/hosts, socket (unix stream)`.
    pub(crate) fn describe(&self) -> String {
        let mut out = format!(
            "{} descriptor{}:",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        );
        for (i, fd) in self.0.iter().enumerate() {
            if out.len() >= crate::echo_log::SHOWN {
                // The note's size must not follow the peer's (253 long, escaped paths).
                let _ = write!(out, ", and {} more", self.0.len() - i);
                break;
            }
            out.push_str(if i == 0 { " " } else { ", " });
            let start = out.len();
            describe_one(fd.as_fd(), &mut out);
            if out.len() - start > NAME_SHOWN {
                let mut end = start + NAME_SHOWN;
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
                out.push_str("...");
            }
        }
        out
    }
}

impl Drop for Passed {
    fn drop(&mut self) {
        self.lose("the connection ended before an echo could carry them");
    }
}

/// One descriptor in words: its kind, and for a file its path (escaped like the bytes).
/// The most of one descriptor's description a note shows (a path can be 4 KiB, escaped 4×).
const NAME_SHOWN: usize = 160;

fn describe_one(fd: BorrowedFd<'_>, out: &mut String) {
    use rustix::fs::FileType;
    let path = || {
        rustix::fs::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()), Vec::new())
            .map(|p| p.into_bytes())
            .unwrap_or_default()
    };
    let kind = match rustix::fs::fstat(fd) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode),
        Err(_) => FileType::Unknown,
    };
    match kind {
        FileType::RegularFile => {
            let path = path();
            match path.strip_prefix(b"/memfd:") {
                Some(name) => {
                    out.push_str("memfd ");
                    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
                    crate::echo_log::escape_into(name, out);
                }
                None => {
                    out.push_str("file ");
                    crate::echo_log::escape_into(&path, out);
                }
            }
        }
        FileType::Directory => {
            out.push_str("directory ");
            crate::echo_log::escape_into(&path(), out);
        }
        FileType::Socket => {
            let domain = rustix::net::sockopt::socket_domain(fd).ok();
            let ty = rustix::net::sockopt::socket_type(fd).ok();
            let domain = match domain {
                Some(rustix::net::AddressFamily::UNIX) => "unix",
                Some(rustix::net::AddressFamily::INET) => "inet",
                Some(rustix::net::AddressFamily::INET6) => "inet6",
                Some(rustix::net::AddressFamily::NETLINK) => "netlink",
                _ => "other",
            };
            let ty = match ty {
                Some(rustix::net::SocketType::STREAM) => "stream",
                Some(rustix::net::SocketType::DGRAM) => "datagram",
                Some(rustix::net::SocketType::SEQPACKET) => "seqpacket",
                _ => "other",
            };
            let _ = write!(out, "socket ({domain} {ty})");
        }
        FileType::Fifo => out.push_str("pipe"),
        FileType::CharacterDevice => {
            out.push_str("character device ");
            crate::echo_log::escape_into(&path(), out);
        }
        FileType::BlockDevice => {
            out.push_str("block device ");
            crate::echo_log::escape_into(&path(), out);
        }
        _ => {
            // eventfd, epoll, timerfd, pidfd...: anonymous inodes name themselves.
            out.push_str("descriptor ");
            crate::echo_log::escape_into(&path(), out);
        }
    }
}

/// Room for the control messages of one read: credentials and a message's worth of
/// descriptors, aligned for `cmsghdr` so the whole buffer is usable.
#[repr(C, align(8))]
struct Space([MaybeUninit<u8>; SPACE]);

const SPACE: usize = rustix::cmsg_space!(ScmCredentials(1), ScmRights(MAX_PER_READ));
const CREDS_SPACE: usize = rustix::cmsg_space!(ScmCredentials(1));

/// The control length that takes exactly `n` descriptors (`CMSG_LEN(n * sizeof(int))`): the
/// kernel fills what the buffer holds, so `CMSG_SPACE`'s padding would take a 254th after an
/// odd number, and any room meant for credentials that do not come would take eight more.
const fn rights_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        let header = 16;
        header + n * 4
    }
}

/// What one read brought besides its bytes.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Bytes read.
    pub(crate) len: usize,
    /// The descriptors that came with them.
    pub(crate) fds: Passed,
    /// The sender's credentials, when asked for (`SO_PASSCRED`).
    pub(crate) creds: Option<UCred>,
    /// The kernel closed descriptors that did not fit (`MSG_CTRUNC`): `room` was too small
    /// for what the peer sent, or the process reached its limit while taking them.
    pub(crate) truncated: bool,
    /// The datagram or record was longer than the buffer (`MSG_TRUNC`).
    pub(crate) cut: bool,
}

impl Received {
    /// Whether this read proves the socket's queue empty, as a read returning EAGAIN would:
    /// shorter than `asked`, and not stopped early by the kernel for a reason of its own —
    /// after a chunk that carried descriptors, where the writer's credentials change (with
    /// `SO_PASSCRED`), at a truncation. (A read also stops at an out-of-band mark: that
    /// shows in the socket's readiness, not here, and is the caller's to rule out.)
    pub(crate) fn emptied(&self, asked: usize) -> bool {
        self.len > 0
            && self.len < asked
            && self.fds.is_empty()
            && self.creds.is_none()
            && !self.truncated
    }
}

/// `recvmsg` into `buf`, with room for exactly `room` descriptors (more are truncated), and for
/// credentials when `creds` (only on a socket with `SO_PASSCRED`, where they always come).
///
/// The value is kept small (no sender address): it is moved out of every read of every
/// connection. Datagrams, which need the address, use [`recv_from`].
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
    creds: bool,
) -> rustix::io::Result<Received> {
    recv_from(fd, buf, flags, room, creds).map(|(received, _)| received)
}

/// [`recv`], and the sender's address.
#[inline(always)]
pub(crate) fn recv_from(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
    creds: bool,
) -> rustix::io::Result<(Received, Option<rustix::net::SocketAddrAny>)> {
    let mut space = Space([MaybeUninit::uninit(); SPACE]);
    // Credentials come first when asked for: callers ask only on sockets that pass them
    // (`SO_PASSCRED`), so their room is never taken by descriptors.
    let len = if creds { CREDS_SPACE } else { 0 } + rights_len(room.min(MAX_PER_READ));
    let mut control = RecvAncillaryBuffer::new(&mut space.0[..len]);
    let got = rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        flags | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut received = Received {
        len: got.bytes,
        truncated: got.flags.contains(ReturnFlags::CTRUNC),
        cut: got.flags.contains(ReturnFlags::TRUNC),
        ..Received::default()
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        match message {
            RecvAncillaryMessage::ScmRights(rights) => fds.extend(rights),
            RecvAncillaryMessage::ScmCredentials(ucred) => received.creds = Some(ucred),
            _ => {}
        }
    }
    if !fds.is_empty() {
        received.fds = Passed::take(fds);
    }
    Ok((received, got.address))
}

/// `sendmsg` of `bufs` carrying `fds` (none: a plain send of one buffer), to `to` if given.
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &Passed,
    flags: SendFlags,
    to: Option<&rustix::net::SocketAddrUnix>,
) -> rustix::io::Result<usize> {
    if fds.is_empty() {
        return match (bufs, to) {
            ([one], None) => rustix::net::send(fd, one, flags),
            ([one], Some(to)) => rustix::net::sendto(fd, one, flags, to),
            (bufs, None) => {
                rustix::net::sendmsg(fd, bufs, &mut SendAncillaryBuffer::default(), flags)
            }
            (bufs, Some(to)) => {
                rustix::net::sendmsg_addr(fd, to, bufs, &mut SendAncillaryBuffer::default(), flags)
            }
        };
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds.0.iter().map(|fd| fd.as_fd()).collect();
    let mut space = Space([MaybeUninit::uninit(); SPACE]);
    let mut control = SendAncillaryBuffer::new(&mut space.0);
    let pushed = control.push(SendAncillaryMessage::ScmRights(&borrowed));
    debug_assert!(pushed, "the buffer holds MAX_PER_READ descriptors");
    match to {
        None => rustix::net::sendmsg(fd, bufs, &mut control, flags),
        Some(to) => rustix::net::sendmsg_addr(fd, to, bufs, &mut control, flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::net::UnixStream;

    fn pass(from: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = Space([MaybeUninit::uninit(); SPACE]);
        let mut control = SendAncillaryBuffer::new(&mut space.0);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        rustix::net::sendmsg(
            from,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    }

    #[test]
    fn descriptors_come_in_with_their_read_and_go_back_with_a_send() {
        let (peer, server) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        pass(&peer, b"hello", &[file.as_fd(), peer.as_fd()]);

        let mut buf = [0u8; 64];
        let mut got = recv(server.as_fd(), &mut buf, RecvFlags::empty(), 253, false).unwrap();
        assert_eq!((got.len, got.fds.len(), got.truncated), (5, 2, false));
        assert!(
            got.fds.describe().starts_with("2 descriptors: file "),
            "{}",
            got.fds.describe()
        );
        assert!(got.fds.describe().ends_with(", socket (unix stream)"));

        send(
            server.as_fd(),
            &[IoSlice::new(&buf[..5])],
            &got.fds,
            SendFlags::empty(),
            None,
        )
        .unwrap();
        got.fds.sent();
        let back = recv(peer.as_fd(), &mut buf, RecvFlags::empty(), 253, false).unwrap();
        assert_eq!(back.fds.len(), 2);
        // The same open file description: moving one offset moves the other's.
        let mut again = std::fs::File::from(back.fds.0[0].try_clone().unwrap());
        again.seek(std::io::SeekFrom::Start(3)).unwrap();
        let mut rest = String::new();
        file.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "3456789");
    }

    /// Reviewer F8: 253 descriptors of a file whose name is 200 control characters made one
    /// `-v` note of 4.7 MB. The note's size must not follow the peer's.
    #[test]
    fn a_note_on_many_long_named_descriptors_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("\u{1}".repeat(200));
        let file = std::fs::File::create(&path).unwrap();
        let (peer, server) = UnixStream::pair().unwrap();
        pass(&peer, b"x", &[file.as_fd(); MAX_PER_READ]);
        let mut buf = [0u8; 8];
        let got = recv(server.as_fd(), &mut buf, RecvFlags::empty(), 253, false).unwrap();
        assert_eq!(got.fds.len(), MAX_PER_READ);
        let note = got.fds.describe();
        assert!(note.len() < 1024, "{} bytes: {note}", note.len());
        assert!(note.starts_with("253 descriptors: file "), "{note}");
        assert!(note.contains(r"\u{1}\u{1}"), "escaped: {note}");
        assert!(note.ends_with(" more"), "{note}");
    }

    #[test]
    fn a_read_without_room_is_truncated_and_says_so() {
        let (peer, server) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        pass(&peer, b"x", &[file.as_fd(), file.as_fd(), file.as_fd()]);
        let mut buf = [0u8; 8];
        let got = recv(server.as_fd(), &mut buf, RecvFlags::empty(), 1, false).unwrap();
        assert_eq!(got.len, 1);
        assert!(got.truncated);
        assert!(got.fds.len() < 3);
    }

    #[test]
    fn held_descriptors_are_counted_until_released() {
        let (peer, server) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        pass(&peer, b"x", &[file.as_fd(); 5]);
        let mut buf = [0u8; 8];
        let mut got = recv(server.as_fd(), &mut buf, RecvFlags::empty(), 253, false).unwrap();
        assert_eq!(got.fds.len(), 5);
        assert_eq!(got.fds.close(), 5);
        assert!(got.fds.is_empty());
    }
}
