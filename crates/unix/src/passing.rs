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
//! A read that asks for the sender's credentials as well (on a socket with `SO_PASSCRED`)
//! is `nix`'s `recvmsg` into a control buffer of plain bytes, read back here: rustix would
//! parse the credentials into a type that cannot hold the pid 0 the kernel gives for a sender
//! in another pid namespace (see [`crate::credentials`]). Its descriptors come as numbers,
//! which become owned descriptors without `unsafe` by a trip through a socket pair of the
//! thread's own (`take_over`): the kernel checks each number as it attaches it.
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

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrAny, SocketAddrUnix,
};

use crate::credentials::{self, Credentials};

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`), and so the most one read
/// can bring: a stream read stops after the first chunk that carries any.
pub const MAX_FDS: usize = 253;

/// Room for the control messages of one read or write: credentials and a message's worth of
/// descriptors, aligned for `cmsghdr` so that the whole buffer is usable (the ancillary
/// buffers skip an unaligned start, which would cut the exact room short).
#[repr(C, align(8))]
struct Space([MaybeUninit<u8>; SPACE]);

// `UCred`'s size only: nothing is read through it.
#[expect(clippy::disallowed_types)]
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
const CREDS_SPACE: usize = HEADER + cmsg_align(std::mem::size_of::<nix::libc::ucred>());

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
    pub creds: Option<Credentials>,
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
/// On a socket with `SO_PASSCRED` always ask for them: credentials that come unasked would
/// be parsed by rustix, which cannot hold a pid of 0 (another pid namespace's sender).
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
    let room = room.min(MAX_FDS);
    if creds {
        return recv_with_credentials(fd, buf, flags, room);
    }
    let mut space = Space::new();
    let mut control = RecvAncillaryBuffer::new(&mut space.0[..rights_len(room)]);
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
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            received.fds.extend(rights);
        }
    }
    Ok((received, got.address))
}

/// The control bytes of a read with credentials: plain bytes, zeroed (the messages are read
/// back from them, and a length of 0 ends them), aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Bytes([u8; SPACE]);

/// [`recv_from`] with the sender's credentials, room for them first, then for `room`
/// descriptors: `nix`'s `recvmsg`, then the control messages read from the bytes (`nix`
/// would parse none of a truncated buffer, whose descriptors must still be taken).
fn recv_with_credentials(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: usize,
) -> rustix::io::Result<(Received, Option<SocketAddrAny>)> {
    use nix::sys::socket::{MsgFlags, UnixAddr};
    let mut control = Bytes([0; SPACE]);
    let len = CREDS_SPACE + rights_space(room);
    let flags = MsgFlags::from_bits_retain(flags.bits() as i32) | MsgFlags::MSG_CMSG_CLOEXEC;
    let mut iov = [IoSliceMut::new(buf)];
    let got = nix::sys::socket::recvmsg::<UnixAddr>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut control.0[..len]),
        flags,
    )
    .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))?;
    let mut received = Received {
        len: got.bytes,
        truncated: got.flags.contains(MsgFlags::MSG_CTRUNC),
        cut: got.flags.contains(MsgFlags::MSG_TRUNC),
        ..Received::default()
    };
    let address = got.address.as_ref().and_then(address);
    let mut numbers = Vec::new();
    for (level, kind, data) in messages(&control.0[..len]) {
        match (level, kind) {
            (nix::libc::SOL_SOCKET, nix::libc::SCM_CREDENTIALS) => {
                received.creds = credentials::from_message(data);
            }
            (nix::libc::SOL_SOCKET, nix::libc::SCM_RIGHTS) => numbers.extend(
                data.chunks_exact(4)
                    .filter_map(|n| Some(RawFd::from_ne_bytes(n.try_into().ok()?))),
            ),
            _ => {}
        }
    }
    if !numbers.is_empty() {
        let (fds, lost) = take_over(&numbers);
        received.fds = fds;
        received.truncated |= lost;
    }
    Ok((received, address))
}

/// A sender's address as rustix names it: a path, an abstract name, or unnamed; `None` when
/// the kernel gave none (a connected socket's read, a sender with no address), whose empty
/// `UnixAddr` nix would panic on if asked what it is.
fn address(from: &nix::sys::socket::UnixAddr) -> Option<SocketAddrAny> {
    use nix::sys::socket::SockaddrLike;
    if (from.len() as usize) < std::mem::size_of::<nix::libc::sa_family_t>() {
        return None;
    }
    let unix = if let Some(path) = from.path() {
        SocketAddrUnix::new(path).ok()?
    } else if let Some(name) = from.as_abstract() {
        SocketAddrUnix::new_abstract_name(name).ok()?
    } else {
        SocketAddrUnix::new_unnamed()
    };
    Some(unix.into())
}

/// The control messages the kernel wrote at the start of `control` (zeroed before the read):
/// each one's level, type and data. A `cmsghdr` is a `size_t` length (of the header and the
/// data), then the level and the type (`int`s); the next one starts at the length aligned.
fn messages(control: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    const LEN: usize = std::mem::size_of::<usize>();
    let int = |bytes: &[u8]| -> Option<i32> { Some(i32::from_ne_bytes(bytes.try_into().ok()?)) };
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = control.get(at..at + HEADER)?;
        let len = usize::from_ne_bytes(header[..LEN].try_into().ok()?);
        let level = int(&header[LEN..LEN + 4])?;
        let kind = int(&header[LEN + 4..LEN + 8])?;
        // A length shorter than the header (the zeroes after the last message) ends them.
        let data = control.get(at + HEADER..at.checked_add(len)?)?;
        at += cmsg_align(len);
        Some((level, kind, data))
    })
}

thread_local! {
    /// The socket pair [`take_over`] passes descriptor numbers through, made on first use.
    static RELAY: RefCell<Option<(OwnedFd, OwnedFd)>> = const { RefCell::new(None) };
}

/// Owned descriptors for the numbers a read just installed, and whether some were lost.
///
/// Without `unsafe` a number cannot be declared owned; the kernel can check it instead. The
/// numbers go out over a datagram socket pair of this thread's (`SCM_RIGHTS`, which fails on
/// a number that is not open), are closed, and come back as owned descriptors: the process
/// never holds both (at its descriptor limit the copies still fit). If they cannot go (the
/// user's descriptors in flight are over its limit: `ETOOMANYREFS`; no pair can be made),
/// they are closed on a thread of their own (one may be the last reference to a socket whose
/// close waits) and reported lost, as the kernel reports descriptors it had to close.
fn take_over(numbers: &[RawFd]) -> (Vec<OwnedFd>, bool) {
    use nix::sys::socket::{ControlMessage, MsgFlags};
    RELAY.with_borrow_mut(|relay| {
        if relay.is_none() {
            *relay = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::DGRAM,
                rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
                None,
            )
            .ok();
        }
        let Some((out, back)) = relay.as_ref() else {
            close_aside(numbers.to_vec());
            return (Vec::new(), true);
        };
        let sent = nix::sys::socket::sendmsg::<()>(
            out.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(numbers)],
            MsgFlags::MSG_DONTWAIT,
            None,
        );
        if sent.is_err() {
            close_aside(numbers.to_vec());
            return (Vec::new(), true);
        }
        for &number in numbers {
            let _ = nix::unistd::close(number);
        }
        match recv(
            back.as_fd(),
            &mut [0u8; 1],
            RecvFlags::DONTWAIT,
            numbers.len(),
            false,
        ) {
            Ok(got) => (got.fds, got.truncated),
            Err(_) => {
                // What it may still hold goes with the pair.
                *relay = None;
                (Vec::new(), true)
            }
        }
    })
}

/// Closes `numbers` on a new thread (here if none can be started).
fn close_aside(numbers: Vec<RawFd>) {
    let close = |numbers: Vec<RawFd>| {
        for number in numbers {
            let _ = nix::unistd::close(number);
        }
    };
    let here = numbers.clone();
    if std::thread::Builder::new()
        .name("udsecho-close".to_owned())
        .spawn(move || close(numbers))
        .is_err()
    {
        close(here);
    }
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
            assert_eq!(creds.pid.get(), Some(std::process::id()));
        }
    }

    /// With credentials the descriptors come as numbers and are taken over through a socket
    /// pair: what comes out is still the very open files that were passed, in order.
    #[test]
    fn descriptors_with_credentials_are_the_open_files_passed() {
        let (peer, ours) = UnixStream::pair().unwrap();
        rustix::net::sockopt::set_socket_passcred(&ours, true).unwrap();
        let file = tempfile::tempfile().unwrap();
        for _ in 0..2 {
            pass(&peer, b"x", &[file.as_fd(), peer.as_fd()]);
            let mut buf = [0u8; 8];
            let got = recv(ours.as_fd(), &mut buf, RecvFlags::empty(), MAX_FDS, true).unwrap();
            assert_eq!((got.len, got.fds.len(), got.truncated), (1, 2, false));
            assert!(crate::same_file::same_open_file(&got.fds[0], &file));
            assert!(crate::same_file::same_open_file(&got.fds[1], &peer));
        }
    }

    /// A datagram from a socket with no address: the kernel gives an empty one, which is no
    /// address (nix's `UnixAddr` would panic if asked what it is).
    #[test]
    fn a_read_with_credentials_from_an_unbound_sender_has_no_address() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("there");
        let receiver = UnixDatagram::bind(&there).unwrap();
        rustix::net::sockopt::set_socket_passcred(&receiver, true).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to(b"hi", &there).unwrap();
        let mut buf = [0u8; 8];
        let (got, from) =
            recv_from(receiver.as_fd(), &mut buf, RecvFlags::empty(), 1, true).unwrap();
        assert_eq!(&buf[..got.len], b"hi");
        assert!(got.creds.is_some());
        let unnamed = from.and_then(|a| SocketAddrUnix::try_from(a).ok());
        assert!(unnamed.is_none_or(|a| a.path().is_none() && a.abstract_name().is_none()));
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
