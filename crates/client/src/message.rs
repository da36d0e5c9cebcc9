//! Seqpacket and datagram sockets: one send is one message, one receive is one message.
//!
//! tokio has a datagram type but no seqpacket one, and the two behave alike once connected,
//! so both are a rustix socket under [`AsyncFd`]: `send` and `recv` on a non-blocking
//! descriptor, waiting for readiness in between. Every method takes `&self`, so a pipe can
//! send from one task while another receives.
//!
//! A datagram socket needs an address of its own for the replies. It gets one from Linux
//! autobind (binding the empty address): a unique name in the abstract namespace, which the
//! kernel frees with the socket. Unlike `nc -uU`'s `/tmp/nc.XXXXXXXXXX` file there is
//! nothing on disk to create, clean up or leave behind, even after SIGKILL, and no directory
//! anyone else could play tricks in.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::descriptors::{self, Inbox, Passing, Returned};
use crate::error::ErrorKind;
use crate::target::SocketType;

/// What one receive brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A message of this many bytes, now at the start of the buffer.
    Message(usize),
    /// A message of `len` bytes, larger than the buffer: only its start was kept.
    Truncated {
        /// The message's real length.
        len: usize,
    },
    /// The server shut down its side (seqpacket only: an empty datagram is a message).
    Closed,
}

/// A connected seqpacket or datagram socket.
#[derive(Debug)]
pub struct MessageSocket {
    fd: AsyncFd<OwnedFd>,
    kind: SocketType,
    /// What each message carries (`--fd`; none for bench and without the flag).
    passing: Passing,
    /// What receives brought back, until taken (only when `passing` is not empty: otherwise
    /// receives make no room for descriptors and the kernel closes any that come).
    inbox: Inbox,
}

impl MessageSocket {
    /// Wraps a connected, non-blocking socket of type `kind`.
    pub(crate) fn new(fd: OwnedFd, kind: SocketType) -> io::Result<MessageSocket> {
        // Nothing here replaces the descriptor (`get_mut` is never used): see
        // `udsecho_unix::registration` for why that makes the registration sound.
        let fd = udsecho_unix::registration::register(fd)?;
        Ok(MessageSocket {
            fd,
            kind,
            passing: Passing::none(),
            inbox: Inbox::default(),
        })
    }

    /// Every message sent from now on carries `passing`, and receives keep what comes back
    /// (see [`MessageSocket::take_returned`]).
    pub(crate) fn pass(&mut self, passing: Passing) {
        self.passing = passing;
    }

    /// The descriptors receives brought back since the last call.
    pub(crate) fn take_returned(&self) -> Returned {
        self.inbox.take()
    }

    /// Seqpacket or datagram.
    pub fn kind(&self) -> SocketType {
        self.kind
    }

    /// Sends `message` as one message, waiting while the server's queue is full.
    pub(crate) async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                let _order = crate::trace::sending();
                let sent = if self.passing.is_empty() {
                    rustix::net::send(fd, message, SendFlags::NOSIGNAL)
                } else {
                    descriptors::send(fd.as_fd(), message, &self.passing.fds())
                };
                if let Ok(n) = sent {
                    crate::trace::sent(&message[..n.min(message.len())]);
                }
                sent.map(drop).map_err(io::Error::from)
            })
            .await
    }

    /// Receives one message into `buf`. Cancel-safe: a message is either received whole
    /// or left in the socket.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let (len, carried) = self
            .fd
            .async_io(Interest::READABLE, |fd| self.recv_now(fd, &mut *buf))
            .await?;
        Ok(self.received(len, carried, buf.len()))
    }

    /// Receives one message into `buf` if one is queued now; `None` if none is.
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let got = self
            .fd
            .try_io(Interest::READABLE, |fd| self.recv_now(fd, &mut *buf));
        match got {
            Ok((len, carried)) => Ok(Some(self.received(len, carried, buf.len()))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One receive, the message's real length (`MSG_TRUNC`), and whether descriptors came
    /// with it (they go to the inbox).
    fn recv_now(&self, fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let (len, carried) = if self.passing.is_empty() {
            rustix::net::recv(fd, &mut *buf, RecvFlags::TRUNC)
                .map(|(_, len)| (len, false))
                .map_err(io::Error::from)?
        } else {
            let got = descriptors::recv(fd.as_fd(), buf, RecvFlags::TRUNC, true)?;
            let carried = !got.returned.fds.is_empty() || got.returned.truncated;
            self.inbox.put(got.returned);
            (got.len, carried)
        };
        crate::trace::received(&buf[..len.min(buf.len())]);
        Ok((len, carried))
    }

    /// What a receive of `len` bytes was: an empty seqpacket read is the end of the stream,
    /// unless descriptors came with it (an empty message carrying some; the end carries none).
    fn received(&self, len: usize, carried: bool, room: usize) -> Received {
        match len {
            0 if self.kind == SocketType::Seqpacket && !carried => Received::Closed,
            len if len > room => Received::Truncated { len },
            len => Received::Message(len),
        }
    }

    /// Tells the server we are done sending (seqpacket; a datagram socket has no stream to
    /// end, so this does nothing there).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        if self.kind == SocketType::Datagram {
            return Ok(());
        }
        match rustix::net::shutdown(self.fd.get_ref(), rustix::net::Shutdown::Write) {
            // The server is gone already; what it did not read is reported elsewhere.
            Err(rustix::io::Errno::NOTCONN) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// What a failed send of `len` bytes means for a person: see [`MessageSocket::failure`];
    /// also a message over the kernel's limit for this socket.
    pub(crate) fn send_failure(
        &self,
        len: usize,
        source: io::Error,
        gone: impl FnOnce() -> ErrorKind,
    ) -> ErrorKind {
        if source.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error()) {
            return ErrorKind::MessageTooLarge {
                kind: self.kind,
                len,
                max: self.max_message(),
            };
        }
        self.failure("sending", source, gone)
    }

    /// What a failed send or receive means for a person: the server hanging up (a broken
    /// pipe or a reset for seqpacket; for datagram, its socket closed under us: refused,
    /// then not connected) becomes `gone()`, anything else an I/O error.
    pub(crate) fn failure(
        &self,
        doing: &'static str,
        source: io::Error,
        gone: impl FnOnce() -> ErrorKind,
    ) -> ErrorKind {
        use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, NotConnected};
        match source.kind() {
            BrokenPipe | ConnectionReset | ConnectionRefused | NotConnected => gone(),
            _ => ErrorKind::Io { doing, source },
        }
    }

    /// Says the server hung up: for seqpacket it closed the connection, for datagram its
    /// socket is gone (`detail` says where we were).
    pub(crate) fn gone(&self, detail: impl Into<String>) -> ErrorKind {
        match self.kind {
            SocketType::Datagram => ErrorKind::Gone {
                detail: detail.into(),
            },
            _ => ErrorKind::closed_early(detail),
        }
    }

    /// The largest message the kernel lets this socket send: its send buffer less 32 bytes
    /// (`unix_dgram_sendmsg`; seqpacket shares it).
    fn max_message(&self) -> Option<usize> {
        rustix::net::sockopt::socket_send_buffer_size(self.fd.get_ref())
            .ok()
            .map(|size| size.saturating_sub(32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptors::FdSpec;

    /// Review F7: an empty seqpacket message carrying descriptors was taken for the end of
    /// the stream; the end never carries any.
    #[tokio::test]
    async fn an_empty_seqpacket_message_with_descriptors_is_a_message_not_the_end() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType as Kind};
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            Kind::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        let mut socket = MessageSocket::new(ours, SocketType::Seqpacket).unwrap();
        socket.pass(Passing::open(&[FdSpec::Path("/dev/null".into())]).unwrap());
        let passing = Passing::open(&[FdSpec::Path("/dev/null".into())]).unwrap();
        descriptors::send(theirs.as_fd(), b"", &passing.fds()).unwrap();
        let mut buf = [0u8; 8];
        let got = socket.recv(&mut buf).await.unwrap();
        assert!(matches!(got, Received::Message(0)), "{got:?}");
        assert_eq!(socket.take_returned().fds.len(), 1);
        drop(theirs);
        let end = socket.recv(&mut buf).await.unwrap();
        assert!(matches!(end, Received::Closed), "{end:?}");
    }
}
