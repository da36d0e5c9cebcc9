//! A test peer's side of descriptor passing (`SCM_RIGHTS`): send bytes with descriptors, read
//! bytes with the descriptors that came with them, and tell whether two descriptors are the
//! same open file description (what a passed descriptor is). The system calls and the check
//! are udsecho-unix's, the ones the binaries use; this adds what tests want around them
//! (a path for the address, `io::Error`, a stream read to a length).

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{RecvFlags, SendFlags, SocketAddrUnix};
pub use udsecho_unix::passing::{MAX_FDS, Received};
pub use udsecho_unix::same_file::same_open_file;

/// Sends `bytes` with `fds` attached (to `to`, for a datagram socket); how many bytes went.
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    to: Option<&Path>,
) -> io::Result<usize> {
    let to = to.map(SocketAddrUnix::new).transpose()?;
    let iov = [IoSlice::new(bytes)];
    Ok(udsecho_unix::passing::send(
        socket,
        &iov,
        fds,
        SendFlags::NOSIGNAL,
        to.as_ref(),
    )?)
}

/// One `recvmsg` into `buf` with room for a message's worth of descriptors.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    Ok(udsecho_unix::passing::recv(
        socket,
        buf,
        RecvFlags::empty(),
        MAX_FDS,
        false,
    )?)
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
