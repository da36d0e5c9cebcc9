//! A test peer's side of descriptor passing (`SCM_RIGHTS`): send bytes with descriptors, read
//! bytes with the descriptors that came with them, and tell whether two descriptors are the
//! same open file description (what a passed descriptor is).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix,
};

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

const SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// Sends `bytes` with `fds` attached (to `to`, for a datagram socket); how many bytes went.
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    to: Option<&Path>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("more than 253 descriptors in one message"));
    }
    let iov = [IoSlice::new(bytes)];
    let flags = SendFlags::NOSIGNAL;
    Ok(match to {
        None => rustix::net::sendmsg(socket, &iov, &mut control, flags)?,
        Some(path) => {
            let addr = SocketAddrUnix::new(path)?;
            rustix::net::sendmsg_addr(socket, &addr, &iov, &mut control, flags)?
        }
    })
}

/// What one read brought.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// The kernel closed descriptors that did not fit (`MSG_CTRUNC`).
    pub truncated: bool,
}

/// One `recvmsg` into `buf` with room for a message's worth of descriptors.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut space = [MaybeUninit::uninit(); SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    Ok(Received {
        len: got.bytes,
        fds,
        truncated: got.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// A descriptor and the byte offset of the read it came with.
pub type Landed = (usize, OwnedFd);

/// Reads from a stream socket until `want` bytes have come (or EOF), collecting every
/// descriptor on the way, each with the byte offset of the read it came with.
pub fn read_stream_with_fds(
    socket: BorrowedFd<'_>,
    want: usize,
) -> io::Result<(Vec<u8>, Vec<Landed>)> {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while bytes.len() < want {
        let got = recv_with_fds(socket, &mut buf)?;
        if got.len == 0 {
            break;
        }
        let at = bytes.len();
        fds.extend(got.fds.into_iter().map(|fd| (at, fd)));
        bytes.extend_from_slice(&buf[..got.len]);
    }
    Ok((bytes, fds))
}

/// Are `a` and `b` the same open file description (not just the same file)? The status
/// flags belong to the description: set `O_NONBLOCK` through one, look through the other.
pub fn same_open_file(a: impl AsFd, b: impl AsFd) -> bool {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl, fstat};
    let (a, b) = (a.as_fd(), b.as_fd());
    let (Ok(sa), Ok(sb)) = (fstat(a), fstat(b)) else {
        return false;
    };
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino) {
        return false;
    }
    // Both must show the same flags first: another description of the same file with the
    // opposite flag would pass the toggle alone.
    let (Ok(before), Ok(theirs)) = (fcntl_getfl(a), fcntl_getfl(b)) else {
        return false;
    };
    if before != theirs {
        return false;
    }
    if fcntl_setfl(a, before ^ OFlags::NONBLOCK).is_err() {
        return false;
    }
    let seen = fcntl_getfl(b);
    let _ = fcntl_setfl(a, before);
    seen == Ok(before ^ OFlags::NONBLOCK)
}
