//! The `recvmsg` and `sendmsg` that carry descriptors and credentials: `udsecho-unix`'s, with
//! what a read brings counted in the server's tally from the moment it arrives ([`Passed`]).

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::net::{RecvFlags, SendFlags, SocketAddrAny, SocketAddrUnix, UCred};
use udsecho_unix::passing;

use super::Passed;

/// What one read brought besides its bytes.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Bytes read.
    pub(crate) len: usize,
    /// The descriptors that came with them, counted as held.
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

/// `recvmsg` into `buf`, with room for `room` descriptors (more are truncated), and for
/// credentials when `creds` (only on a socket with `SO_PASSCRED`, where they always come).
///
/// The value is kept small (no sender address): it is moved out of every read of every
/// connection. Datagrams, which need the address, use [`recv_from`].
#[inline]
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
    creds: bool,
) -> rustix::io::Result<Received> {
    passing::recv(fd, buf, flags, room, creds).map(Received::from)
}

/// [`recv`], and the sender's address.
#[inline(always)]
pub(crate) fn recv_from(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
    creds: bool,
) -> rustix::io::Result<(Received, Option<SocketAddrAny>)> {
    passing::recv_from(fd, buf, flags, room, creds).map(|(got, from)| (got.into(), from))
}

impl From<passing::Received> for Received {
    /// Counts what came as held from this moment (nothing allocated when nothing came).
    #[inline(always)]
    fn from(got: passing::Received) -> Received {
        let fds = if got.fds.is_empty() {
            Passed::none()
        } else {
            Passed::take(got.fds)
        };
        Received {
            len: got.len,
            fds,
            creds: got.creds,
            truncated: got.truncated,
            cut: got.cut,
        }
    }
}

/// `sendmsg` of `bufs` carrying `fds` (none: a plain send of one buffer), to `to` if given.
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &Passed,
    flags: SendFlags,
    to: Option<&SocketAddrUnix>,
) -> rustix::io::Result<usize> {
    if fds.is_empty() {
        return passing::send(fd, bufs, &[], flags, to);
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds.0.iter().map(|fd| fd.as_fd()).collect();
    passing::send(fd, bufs, &borrowed, flags, to)
}

#[cfg(test)]
mod tests {
    //! The system calls themselves are `udsecho-unix`'s, tested there; these check what the
    //! server adds: the tally, the `-v` note, and a `Passed` going back out.
    use super::*;
    use crate::descriptors::MAX_PER_READ;
    use std::os::unix::net::UnixStream;

    /// `peer` passes `fds` with one byte; the server's end reads them with room for all.
    fn passed(fds: &[BorrowedFd<'_>]) -> (UnixStream, UnixStream, Received) {
        let (peer, server) = UnixStream::pair().unwrap();
        let flags = SendFlags::empty();
        passing::send(peer.as_fd(), &[IoSlice::new(b"x")], fds, flags, None).unwrap();
        let got = recv(
            server.as_fd(),
            &mut [0u8; 8],
            RecvFlags::empty(),
            253,
            false,
        )
        .unwrap();
        (peer, server, got)
    }

    #[test]
    fn what_a_read_brings_is_described_and_goes_back_with_a_send() {
        let file = tempfile::tempfile().unwrap();
        let (spare, _other) = UnixStream::pair().unwrap();
        let (peer, server, mut got) = passed(&[file.as_fd(), spare.as_fd()]);
        let note = got.fds.describe();
        assert!(note.starts_with("2 descriptors: file "), "{note}");
        assert!(note.ends_with(", socket (unix stream)"), "{note}");
        let echo = [IoSlice::new(b"x")];
        send(server.as_fd(), &echo, &got.fds, SendFlags::empty(), None).unwrap();
        got.fds.returned();
        let back = recv(peer.as_fd(), &mut [0u8; 8], RecvFlags::empty(), 253, false).unwrap();
        assert_eq!(back.fds.len(), 2);
    }

    /// Reviewer F8: 253 descriptors of a file whose name is 200 control characters made one
    /// `-v` note of 4.7 MB. The note's size must not follow the peer's.
    #[test]
    fn a_note_on_many_long_named_descriptors_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("\u{1}".repeat(200));
        let file = std::fs::File::create(&path).unwrap();
        let (_peer, _server, got) = passed(&[file.as_fd(); MAX_PER_READ]);
        assert_eq!(got.fds.len(), MAX_PER_READ);
        let note = got.fds.describe();
        assert!(note.len() < 1024, "{} bytes: {note}", note.len());
        assert!(note.starts_with("253 descriptors: file "), "{note}");
        assert!(note.contains(r"\u{1}\u{1}"), "escaped: {note}");
        assert!(note.ends_with(" more"), "{note}");
    }

    #[test]
    fn closing_what_a_read_brought_lets_all_of_it_go() {
        let file = tempfile::tempfile().unwrap();
        let (_peer, _server, mut got) = passed(&[file.as_fd(); 5]);
        assert_eq!(got.fds.len(), 5);
        got.fds.close();
        assert!(got.fds.is_empty());
    }
}
