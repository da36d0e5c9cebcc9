//! Descriptors passed with bytes (`SCM_RIGHTS`): one `sendmsg` that attaches them, and one
//! `recvmsg` with room for exactly as many as the caller can take.
//!
//! These are the system calls only; what a descriptor is held for, counted against, or
//! checked against is the caller's. The server wraps [`recv_from`] in its process-wide tally
//! of held descriptors, the client keeps what comes back in an inbox for its `--fd` check,
//! and the test harness collects them.
//!
//! Every read of a socket whose peer may pass descriptors must be a `recvmsg` with room for
//! them: a plain `recv` makes the kernel close any that came (and report `MSG_CTRUNC`).
//! The room is exact: [`recv`] with room for `n` gives the kernel a control buffer of
//! `CMSG_LEN(n * sizeof(int))`, so the kernel never hands over more than `n` (with
//! `CMSG_SPACE`'s padding it would take one more after an odd number); what does not fit
//! is closed by the kernel and the read says so ([`Received::truncated`]).
//!
//! A read that brought none allocates nothing: the control buffer is on the stack, and the
//! descriptors' `Vec` is only filled when some came.
//!
//! ```
//! use std::io::IoSlice;
//! use std::os::fd::AsFd;
//! use rustix::net::{RecvFlags, SendFlags};
//!
//! let (a, b) = std::os::unix::net::UnixStream::pair()?;
//! let file = tempfile::tempfile()?;
//! udsecho_unix::passing::send(a.as_fd(), &[IoSlice::new(b"hi")], &[file.as_fd()], SendFlags::empty(), None)?;
//!
//! let mut buf = [0u8; 16];
//! let got = udsecho_unix::passing::recv(b.as_fd(), &mut buf, RecvFlags::empty(), 1, false)?;
//! assert_eq!((&buf[..got.len], got.fds.len(), got.truncated), (&b"hi"[..], 1, false));
//! assert!(udsecho_unix::same_file::same_open_file(&got.fds[0], &file));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrAny, SocketAddrUnix, UCred,
};

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`), and so the most one read
/// can bring: a stream read stops after the first chunk that carries any.
pub const MAX_FDS: usize = 253;

/// Room for the control messages of one read or write: credentials and a message's worth of
/// descriptors, aligned for `cmsghdr` so that the whole buffer is usable (the ancillary
/// buffers skip an unaligned start, which would cut the exact room short).
#[repr(C, align(8))]
struct Space([MaybeUninit<u8>; SPACE]);

const SPACE: usize = rustix::cmsg_space!(ScmCredentials(1), ScmRights(MAX_FDS));

impl Space {
    fn new() -> Space {
        Space([MaybeUninit::uninit(); SPACE])
    }
}

/// `CMSG_ALIGN`: each control message starts on a `size_t` boundary.
const fn cmsg_align(len: usize) -> usize {
    let to = std::mem::size_of::<usize>();
    len.div_ceil(to) * to
}

/// `sizeof(struct cmsghdr)`: a `size_t` length, then two `int`s.
const HEADER: usize = cmsg_align(std::mem::size_of::<usize>() + 2 * std::mem::size_of::<i32>());

/// Room for the credentials alone: `CMSG_SPACE(sizeof(struct ucred))`, not a byte more. (The
/// `cmsg_space!` macro adds a `cmsghdr`'s alignment for a buffer that may start unaligned:
/// eight bytes after the credentials, where the kernel fits two more descriptors than asked.)
const CREDS_SPACE: usize = HEADER + cmsg_align(std::mem::size_of::<UCred>());

/// The control length that takes exactly `n` descriptors (`CMSG_LEN(n * sizeof(int))`): the
/// kernel fills what the buffer holds, so `CMSG_SPACE`'s padding would take a 254th after an
/// odd number, and any room meant for credentials that do not come would take eight more.
const fn rights_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        HEADER + n * std::mem::size_of::<i32>()
    }
}

/// The control length for `n` descriptors after the credentials (`CMSG_SPACE`): a message
/// that is not the first is read back only if its padded length fits the buffer, so after an
/// odd number the kernel's fill would hide the descriptors from the cmsg walk (and leave them
/// unclosed). The price is room for one more after an odd `n`.
const fn rights_space(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        HEADER + cmsg_align(n * std::mem::size_of::<i32>())
    }
}

/// What one read brought besides its bytes.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes read (with [`RecvFlags::TRUNC`] on a message socket: the message's whole length,
    /// which may be more than the buffer held).
    pub len: usize,
    /// The descriptors that came with them, in order; empty (and unallocated) when none did.
    pub fds: Vec<OwnedFd>,
    /// The sender's credentials, when asked for (on a socket with `SO_PASSCRED`).
    pub creds: Option<UCred>,
    /// The kernel closed descriptors that did not fit (`MSG_CTRUNC`): the room asked for was
    /// smaller than what came, or the process reached its descriptor limit taking them.
    pub truncated: bool,
    /// The datagram or record was longer than the buffer (`MSG_TRUNC`).
    pub cut: bool,
}

/// `recvmsg` into `buf` with room for exactly `room` descriptors (at most [`MAX_FDS`]; more
/// are closed by the kernel and the read is [`Received::truncated`]), and for the sender's
/// credentials first when `creds` (ask only on a socket with `SO_PASSCRED`, where they always
/// come, so their room is never taken by descriptors). After credentials an odd `room` below
/// [`MAX_FDS`] takes one more if the peer sent more (see `rights_space`): one message never
/// carries more than [`MAX_FDS`], so a whole message's worth is still exact. Descriptors come
/// close-on-exec.
///
/// [`recv_from`] also returns the sender's address; this drops it, keeping the value small
/// for callers that move it out of every read.
#[inline]
pub fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
    creds: bool,
) -> rustix::io::Result<Received> {
    recv_from(fd, buf, flags, room, creds).map(|(received, _)| received)
}

/// [`recv`], and the sender's address (a datagram's; `None` on a connected stream).
#[inline(always)]
pub fn recv_from(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
    creds: bool,
) -> rustix::io::Result<(Received, Option<SocketAddrAny>)> {
    let mut space = Space::new();
    let room = room.min(MAX_FDS);
    let len = if creds {
        CREDS_SPACE + rights_space(room)
    } else {
        rights_len(room)
    };
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
    for message in control.drain() {
        match message {
            RecvAncillaryMessage::ScmRights(rights) => received.fds.extend(rights),
            RecvAncillaryMessage::ScmCredentials(ucred) => received.creds = Some(ucred),
            _ => {}
        }
    }
    Ok((received, got.address))
}

/// `sendmsg` of `bufs` carrying `fds`, to `to` if given (an unconnected datagram socket);
/// how many bytes went. Without descriptors a single buffer is a plain `send` (or `sendto`).
///
/// More than [`MAX_FDS`] descriptors is `EINVAL`, as the kernel answers it.
pub fn send(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
    to: Option<&SocketAddrUnix>,
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
    let mut space = Space::new();
    let mut control = SendAncillaryBuffer::new(&mut space.0);
    if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(rustix::io::Errno::INVAL);
    }
    match to {
        None => rustix::net::sendmsg(fd, bufs, &mut control, flags),
        Some(to) => rustix::net::sendmsg_addr(fd, to, bufs, &mut control, flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    fn pass(from: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        send(
            from.as_fd(),
            &[IoSlice::new(bytes)],
            fds,
            SendFlags::empty(),
            None,
        )
        .unwrap();
    }

    #[test]
    fn descriptors_come_in_with_their_read_as_the_same_open_files() {
        let (peer, ours) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        pass(&peer, b"hello", &[file.as_fd(), peer.as_fd()]);

        let mut buf = [0u8; 64];
        let got = recv(ours.as_fd(), &mut buf, RecvFlags::empty(), MAX_FDS, false).unwrap();
        assert_eq!((got.len, got.fds.len()), (5, 2));
        assert!(!got.truncated && !got.cut && got.creds.is_none());
        // The same open file description: moving one offset moves the other's.
        let mut again = std::fs::File::from(got.fds[0].try_clone().unwrap());
        again.seek(std::io::SeekFrom::Start(3)).unwrap();
        let mut rest = String::new();
        file.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "3456789");
    }

    #[test]
    fn a_read_takes_exactly_the_room_asked_for_and_says_it_was_truncated() {
        let file = tempfile::tempfile().unwrap();
        for (sent, room) in [(3, 1), (2, 1), (4, 3), (MAX_FDS, MAX_FDS - 1)] {
            let (peer, ours) = UnixStream::pair().unwrap();
            pass(&peer, b"x", &vec![file.as_fd(); sent]);
            let mut buf = [0u8; 8];
            let got = recv(ours.as_fd(), &mut buf, RecvFlags::empty(), room, false).unwrap();
            assert_eq!(got.len, 1);
            assert!(got.truncated, "{sent} sent, room for {room}");
            assert_eq!(got.fds.len(), room, "{sent} sent, room for {room}");
        }
    }

    #[test]
    fn a_whole_message_fits_the_most_room_and_no_room_closes_them() {
        let file = tempfile::tempfile().unwrap();
        let (peer, ours) = UnixStream::pair().unwrap();
        pass(&peer, b"a", &[file.as_fd(); MAX_FDS]);
        pass(&peer, b"b", &[file.as_fd()]);
        let mut buf = [0u8; 8];
        let got = recv(
            ours.as_fd(),
            &mut buf,
            RecvFlags::empty(),
            usize::MAX,
            false,
        )
        .unwrap();
        assert_eq!((got.fds.len(), got.truncated), (MAX_FDS, false));
        let got = recv(ours.as_fd(), &mut buf, RecvFlags::empty(), 0, false).unwrap();
        assert_eq!((got.len, got.fds.len(), got.truncated), (1, 0, true));
    }

    #[test]
    fn more_than_a_message_carries_is_refused() {
        let (peer, _ours) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let sent = send(
            peer.as_fd(),
            &[IoSlice::new(b"x")],
            &vec![file.as_fd(); MAX_FDS + 1],
            SendFlags::empty(),
            None,
        );
        assert_eq!(sent, Err(rustix::io::Errno::INVAL));
    }

    /// The credentials' room is exactly theirs: with eight bytes to spare after them, the
    /// kernel fitted two descriptors more than the room asked for. After them an odd room
    /// holds one more (the descriptors must stay readable), never more than a message's worth.
    #[test]
    fn credentials_come_first_and_take_none_of_the_room_for_descriptors() {
        let file = tempfile::tempfile().unwrap();
        let cases = [
            // (sent, room, taken)
            (2, 2, 2),
            (4, 2, 2),
            (3, 1, 2),
            (5, 3, 4),
            (3, 3, 3),
            (MAX_FDS, MAX_FDS, MAX_FDS),
            (MAX_FDS, MAX_FDS - 1, MAX_FDS - 1),
        ];
        for (sent, room, taken) in cases {
            let (peer, ours) = UnixStream::pair().unwrap();
            rustix::net::sockopt::set_socket_passcred(&ours, true).unwrap();
            pass(&peer, b"x", &vec![file.as_fd(); sent]);
            let mut buf = [0u8; 8];
            let got = recv(ours.as_fd(), &mut buf, RecvFlags::empty(), room, true).unwrap();
            assert_eq!(
                (got.fds.len(), got.truncated),
                (taken, sent > taken),
                "{sent} sent, room for {room}"
            );
            let creds = got.creds.expect("credentials with SO_PASSCRED");
            assert_eq!(creds.pid, rustix::process::getpid());
        }
    }

    #[test]
    fn a_datagram_goes_to_its_address_and_its_sender_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let (there, here) = (dir.path().join("there"), dir.path().join("here"));
        let receiver = UnixDatagram::bind(&there).unwrap();
        let sender = UnixDatagram::bind(&here).unwrap();
        let to = SocketAddrUnix::new(there.as_path()).unwrap();
        let file = tempfile::tempfile().unwrap();
        let bufs = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        for fds in [&[][..], &[file.as_fd()][..]] {
            let n = send(sender.as_fd(), &bufs, fds, SendFlags::empty(), Some(&to)).unwrap();
            assert_eq!(n, 4);
            let mut buf = [0u8; 2];
            let (got, from) =
                recv_from(receiver.as_fd(), &mut buf, RecvFlags::TRUNC, 1, false).unwrap();
            assert_eq!((got.len, got.cut, got.fds.len()), (4, true, fds.len()));
            let from = SocketAddrUnix::try_from(from.expect("a datagram's sender")).unwrap();
            let from = from.path().map(|p| p.to_bytes().to_vec());
            assert_eq!(from.as_deref(), Some(here.as_os_str().as_encoded_bytes()));
        }
    }
}
