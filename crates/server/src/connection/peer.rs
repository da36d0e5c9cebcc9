//! [`Peer`]: one connection's socket and everything that crosses it — reads with the
//! descriptors that came with them, writes that carry those descriptors back, what the socket
//! has not taken yet, the half-close and the close. The handler decides *what* to echo and
//! *when*; this type is the only code that touches the socket.
//!
//! Stream and seqpacket peers share it. A stream peer reads chunks ([`Peer::read`]) and keeps
//! what the socket would not take in `pending`; a seqpacket peer peeks one message at a time
//! ([`Peer::peek_message`]), echoes it whole, and only then takes it off the queue
//! ([`Peer::take_message`]), so a message whose echo the socket would not take stays in the
//! kernel, charged to the peer, and the server holds nothing for it.
//!
//! Descriptors a read brings are held ([`Passed`]) until the next bytes written carry them
//! back; a peer that passes descriptors waits for room in the process's tally before its next
//! read ([`Peer::poll_room`]) rather than read into a truncation.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::passing::{Passing, Truncation};
use crate::descriptors::{self, Counted};

/// Sends never raise SIGPIPE (a peer that left is an error, not a signal) and never block.
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL.union(SendFlags::DONTWAIT);

/// A stream peer is registered to read for readability and for the out-of-band byte's
/// priority readiness ([`Peer::may_stop_short`]); writability is added when an echo first
/// backs up.
const STREAM_READS: Interest = Interest::READABLE.add(Interest::PRIORITY);

/// What kind of socket the peer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Bytes: read in chunks, the rest of an echo kept in `pending`.
    Stream,
    /// Messages: each peeked, echoed whole, then taken off the queue.
    Seqpacket,
}

/// What one read brought.
#[derive(Debug)]
pub(crate) struct Read {
    /// Bytes read into the buffer; 0 is the peer's EOF.
    pub(crate) len: usize,
    /// This read proved the socket empty (readiness is cleared): no need to read again now.
    pub(crate) emptied: bool,
    /// The kernel closed descriptors that did not fit: the connection must end once these
    /// bytes are echoed ([`Truncation::end`]).
    pub(crate) truncated: Option<Truncation>,
    /// What descriptors came with it, for the `-v` line (only when `-v` is on).
    pub(crate) note: Option<String>,
}

/// What a peek at the head of a seqpacket peer's queue found.
#[derive(Debug)]
pub(crate) enum Peeked {
    /// A message of `len` bytes (with its descriptors held). It is in the buffer if it fits;
    /// a longer one is read whole with [`Peer::peek_whole`]. `truncated` and `note` as for
    /// a stream [`Read`].
    Message {
        len: usize,
        truncated: Option<Truncation>,
        note: Option<String>,
    },
    /// The peer shut down its side.
    Eof,
    /// Nothing queued (readiness is cleared).
    Empty,
}

/// One connection's socket. Dropping it closes the connection (away from the serving thread
/// when what is still queued may carry descriptors: see [`descriptors::close_aside`]).
#[derive(Debug)]
pub(crate) struct Peer {
    /// The socket, registered for reading (and for writability once `watching_writes`).
    /// Always present: taken out only for the moment `watch_writes` registers it again, and by
    /// `Drop`.
    socket: Option<AsyncFd<OwnedFd>>,
    kind: Kind,
    /// Whether `socket` is registered for writability too: the first echo that backs up says
    /// this peer reads slower than it writes, and will likely do so again. Until then the
    /// peer reading our echoes (which frees our send buffer) wakes nobody.
    watching_writes: bool,
    /// Seqpacket: the message at the head of the queue could not be echoed yet; it stays
    /// queued until the socket takes its echo.
    blocked: bool,
    /// Stream: echo bytes the socket would not take yet. Empty and unallocated while the
    /// peer keeps up.
    pending: BytesMut,
    /// Descriptors the peer passed (none for most peers: no allocation until one comes).
    passing: Passing,
    /// The connection's share of the process's descriptors, counted while it lives.
    _counted: Counted,
}

impl Peer {
    /// Sets the socket up for `kind` and registers it with this thread's reactor.
    pub(crate) fn new(fd: OwnedFd, kind: Kind) -> io::Result<Peer> {
        let interest = match kind {
            Kind::Stream => {
                // An out-of-band byte is read in its place, so it is echoed like any other
                // (without this the kernel leaves it out of the stream and no read sees it).
                if let Err(e) = rustix::net::sockopt::set_socket_oobinline(&fd, true) {
                    tracing::debug!("SO_OOBINLINE: {e}");
                }
                // No credentials on stream reads: a connection inherits `SO_PASSCRED` from a
                // listener handed over with it (systemd's `PassCredentials=`), and credentials
                // nobody reads would take control-buffer room and split reads where the writer
                // changes. Per connection, not once on the listener: the flag is copied when
                // the peer connects, so connections queued before a change keep it.
                if let Err(e) = rustix::net::sockopt::set_socket_passcred(&fd, false) {
                    tracing::debug!("SO_PASSCRED: {e}");
                }
                STREAM_READS
            }
            Kind::Seqpacket => {
                // Credentials on every message tell an empty message from the end of the
                // stream.
                rustix::net::sockopt::set_socket_passcred(&fd, true)?;
                Interest::READABLE
            }
        };
        Ok(Peer {
            socket: Some(udsecho_unix::registration::register_for(fd, interest)?),
            kind,
            watching_writes: false,
            blocked: false,
            pending: BytesMut::new(),
            passing: Passing::default(),
            _counted: Counted::new(),
        })
    }

    /// The registered socket.
    fn socket(&self) -> &AsyncFd<OwnedFd> {
        self.socket
            .as_ref()
            .expect("the socket is present outside watch_writes and drop")
    }

    /// What the peer has sent that is still queued in the socket: what a drain reads. If the
    /// kernel will not say, everything until the socket is empty.
    pub(crate) fn queued(&self) -> usize {
        queued_in(self.socket().get_ref())
    }

    /// Ready when the socket may have input. Readiness is cleared by the read that finds the
    /// queue empty.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket()
            .poll_read_ready(cx)
            .map_ok(|mut ready| ready.retain_ready())
    }

    /// Ready once there is room in the process's descriptor tally for as many descriptors as
    /// this peer passed last (at once for a peer that never passed any).
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.passing.poll_room(cx)
    }

    /// A stream read of at most `buf.len()` bytes. `draining`: read whatever the runtime
    /// believes (what `FIONREAD` counted at the shutdown is in the socket even if its
    /// readiness event has not been seen yet); otherwise through `try_io`, which clears
    /// readiness on EAGAIN without losing an event that arrives meanwhile. `Err(WouldBlock)`:
    /// nothing queued.
    ///
    /// Always `recvmsg` with room for descriptors: a plain `recv` would make the kernel close
    /// any the peer passed.
    pub(crate) fn read(&mut self, buf: &mut [u8], draining: bool) -> io::Result<Read> {
        let cap = buf.len();
        let room = self.passing.room();
        let held_before = self.passing.held().len();
        let mut recv = |fd: &OwnedFd| {
            descriptors::recv(fd.as_fd(), buf, RecvFlags::DONTWAIT, room, false)
                .map_err(io::Error::from)
        };
        let mut short = None;
        let received = if draining {
            recv(self.socket().get_ref())
        } else {
            let may_stop_short = self.may_stop_short();
            self.socket().try_io(Interest::READABLE, |fd| {
                let got = recv(fd)?;
                if !may_stop_short && got.emptied(cap) {
                    // The read that found the queue empty: readiness is cleared as for
                    // EAGAIN, saving the read that would return it.
                    short = Some(got);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(got)
            })
        };
        let emptied = short.is_some();
        let got = match short {
            Some(got) => got,
            None => received?,
        };
        let truncated = got.truncated.then_some(Truncation {
            room,
            held: held_before,
        });
        let note = self.passing.hold(got.fds, got.truncated);
        Ok(Read {
            len: got.len,
            emptied,
            truncated,
            note,
        })
    }

    /// Whether a short read may stop before the end of what is queued for a reason the read
    /// itself does not show: an out-of-band byte waits (a read stops at its mark, and the
    /// kernel reports the byte as priority readiness), or the peer half-closed (its EOF is
    /// read anyway). Then readiness is cleared only by the read that returns EAGAIN.
    fn may_stop_short(&self) -> bool {
        // `try_io` calls the closure only if priority (or read-closed) readiness is set.
        self.socket().try_io(Interest::PRIORITY, |_| Ok(())).is_ok()
    }

    /// Looks at the message at the head of a seqpacket peer's queue without taking it, into
    /// `buf` as far as it fits. Its descriptors come as copies of the originals that stay
    /// queued with it, and are held until its echo carries them.
    pub(crate) fn peek_message(&mut self, buf: &mut [u8], draining: bool) -> io::Result<Peeked> {
        let room = descriptors::room();
        // MSG_TRUNC: the message's whole length, whatever the buffer. Its credentials (every
        // message has them: `SO_PASSCRED`) tell an empty message from the end.
        let mut peek = |fd: &OwnedFd| {
            descriptors::recv(
                fd.as_fd(),
                buf,
                RecvFlags::PEEK | RecvFlags::TRUNC,
                room,
                true,
            )
            .map_err(io::Error::from)
        };
        let peeked = if draining {
            peek(self.socket().get_ref())
        } else {
            self.socket().try_io(Interest::READABLE, peek)
        };
        let got = match peeked {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Peeked::Empty),
            Err(e) => return Err(e),
        };
        if got.len == 0 && got.creds.is_none() && got.fds.is_empty() {
            return Ok(Peeked::Eof);
        }
        let truncated = got.truncated.then_some(Truncation { room, held: 0 });
        let note = self.passing.hold(got.fds, got.truncated);
        Ok(Peeked::Message {
            len: got.len,
            truncated,
            note,
        })
    }

    /// The whole of a peeked message longer than the scratch buffer, in a buffer of its size
    /// for the moment it is echoed.
    pub(crate) fn peek_whole(&self, len: usize) -> io::Result<Vec<u8>> {
        let mut whole = vec![0u8; len];
        let (n, _) = rustix::net::recv(self.socket().get_ref(), &mut whole[..], RecvFlags::PEEK)?;
        whole.truncate(n);
        Ok(whole)
    }

    /// Echoes a peeked message whole, carrying its descriptors. `Blocked`: the socket would not
    /// take it; it stays queued (our copies of its descriptors close) until
    /// [`Peer::poll_flush`] says the socket has room.
    pub(crate) fn send_message(&mut self, message: &[u8]) -> io::Result<Sent> {
        let slices = [IoSlice::new(message)];
        let mut sent = self.send_now(&slices);
        if sent == Err(rustix::io::Errno::MSGSIZE) && self.make_room_for(message.len()) {
            sent = self.send_now(&slices);
        }
        let mut refused = false;
        if let Err(e) = sent
            && self.passing.refused(e)
        {
            refused = true;
            sent = self.send_now(&slices);
        }
        match sent {
            Ok(_) => {
                self.passing.carried();
                Ok(Sent::Echoed { refused })
            }
            Err(rustix::io::Errno::AGAIN) => {
                // Copies: the originals are still queued with the message.
                self.passing.carried();
                self.blocked = true;
                Ok(Sent::Blocked)
            }
            Err(e) => Err(self.passing.send_failed(e.into())),
        }
    }

    /// A message longer than the socket's send buffer cannot be sent at all (`EMSGSIZE`), and
    /// the peer could send it only because it raised its own: raise ours to match (the kernel
    /// caps both at `net.core.wmem_max`, so a peer without privilege never outgrows it).
    /// False if it is as large as it gets already.
    fn make_room_for(&self, len: usize) -> bool {
        let fd = self.socket().get_ref();
        let before = rustix::net::sockopt::socket_send_buffer_size(fd).unwrap_or(0);
        // The kernel doubles what is asked (for its bookkeeping) and wants a little more than
        // the message: ask for the message and a margin.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, len + 4096);
        let after = rustix::net::sockopt::socket_send_buffer_size(fd).unwrap_or(0);
        tracing::debug!(
            "send buffer raised from {before} to {after} bytes for a {len}-byte message"
        );
        after > before
    }

    /// Takes the echoed message off the queue. `refused`: its descriptors did not go back,
    /// so the originals queued with it may be the last references: they are taken and
    /// closed aside ([`descriptors::close_aside`]), not closed by the kernel on this thread.
    pub(crate) fn take_message(&mut self, refused: bool) -> io::Result<()> {
        let fd = self.socket().get_ref().as_fd();
        if refused {
            descriptors::recv(fd, &mut [], RecvFlags::empty(), descriptors::room(), true)?
                .fds
                .close();
        } else {
            rustix::net::recv(fd, &mut [0u8; 0][..], RecvFlags::empty())?;
        }
        Ok(())
    }

    /// One send of `bufs` with the held descriptors, straight to the kernel. A seqpacket peer
    /// watching writability sends through `try_io`, so the send that finds no room clears
    /// the readiness [`Peer::poll_flush`] waits for.
    fn send_now(&self, bufs: &[IoSlice<'_>]) -> rustix::io::Result<usize> {
        let held = self.passing.held();
        if self.kind == Kind::Seqpacket && self.watching_writes {
            let sent = self.socket().try_io(Interest::WRITABLE, |fd| {
                descriptors::send(fd.as_fd(), bufs, held, SEND_FLAGS, None).map_err(io::Error::from)
            });
            return sent.map_err(|e| match e.raw_os_error() {
                Some(code) => rustix::io::Errno::from_raw_os_error(code),
                None => rustix::io::Errno::AGAIN,
            });
        }
        descriptors::send(
            self.socket().get_ref().as_fd(),
            bufs,
            held,
            SEND_FLAGS,
            None,
        )
    }

    /// Writes `before` then `echo` as far as the socket takes them; the rest is kept in
    /// `pending` (a stream's backlog). Called only while nothing is pending.
    pub(crate) fn write(&mut self, before: &[u8], echo: &[u8]) -> io::Result<()> {
        if before.is_empty() && echo.is_empty() {
            return Ok(());
        }
        // No readiness needed: EAGAIN only means "keep the rest". Descriptors held go with
        // the first bytes written.
        let both = [IoSlice::new(before), IoSlice::new(echo)];
        let slices = if before.is_empty() {
            &both[1..]
        } else {
            &both[..]
        };
        let mut sent = self.send_now(slices);
        if let Err(e) = sent
            && self.passing.refused(e)
        {
            sent = self.send_now(slices);
        }
        let written = match sent {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) => 0,
            Err(e) => return Err(self.passing.send_failed(e.into())),
        };
        if written > 0 {
            self.passing.carried();
        }
        if written < before.len() {
            self.pending.extend_from_slice(&before[written..]);
            self.pending.extend_from_slice(echo);
        } else if written - before.len() < echo.len() {
            self.pending
                .extend_from_slice(&echo[written - before.len()..]);
        }
        Ok(())
    }

    /// Whether an echo is waiting for room in the socket: bytes (stream) or the message at
    /// the head of the queue (seqpacket). While one is, nothing more is read.
    pub(crate) fn backed_up(&self) -> bool {
        self.blocked || !self.pending.is_empty()
    }

    /// Whether echo bytes are still owed to the peer (a stream's backlog).
    pub(crate) fn owes(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes to send after everything read has been echoed (our Goodbye or Error frame).
    pub(crate) fn last_frame(&mut self) -> &mut BytesMut {
        &mut self.pending
    }

    /// Writes the backlog out as far as the socket takes it (seqpacket: waits until the
    /// socket may take the blocked message again). Ready once nothing is backed up; `true`
    /// if any bytes went out on the way (a sign of life).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.watching_writes {
            self.watch_writes()?;
        }
        if self.blocked {
            // Readiness is cleared by the send that finds no room (`send_now`).
            ready!(self.socket().poll_write_ready(cx))?.retain_ready();
            self.blocked = false;
            return Poll::Ready(Ok(false));
        }
        let mut moved = false;
        while !self.pending.is_empty() {
            let mut ready = ready!(self.socket().poll_write_ready(cx))?;
            let (pending, held) = (&self.pending, self.passing.held());
            match ready.try_io(|fd| {
                descriptors::send(
                    fd.get_ref().as_fd(),
                    &[IoSlice::new(pending)],
                    held,
                    SEND_FLAGS,
                    None,
                )
                .map_err(io::Error::from)
            }) {
                Ok(Ok(written)) => {
                    self.pending.advance(written);
                    self.passing.carried();
                    moved = true;
                }
                Ok(Err(e))
                    if e.raw_os_error()
                        .map(rustix::io::Errno::from_raw_os_error)
                        .is_some_and(|e| self.passing.refused(e)) => {}
                Ok(Err(e)) => return Poll::Ready(Err(self.passing.send_failed(e))),
                Err(_would_block) => {}
            }
        }
        // Give back the memory a slow reader made us hold.
        self.pending = BytesMut::new();
        Poll::Ready(Ok(moved))
    }

    /// Writes the bytes owed out, waiting at most `limit` (if any): `false` if the peer would
    /// not take them in time. (A blocked message is not waited for: it is still the peer's,
    /// queued in the kernel.)
    pub(crate) async fn flush(&mut self, limit: Option<Duration>) -> io::Result<bool> {
        if !self.owes() {
            return Ok(true);
        }
        let flush = std::future::poll_fn(|cx| self.poll_flush(cx).map_ok(|_| ()));
        match limit {
            Some(limit) => match tokio::time::timeout(limit, flush).await {
                Ok(flushed) => flushed.map(|()| true),
                Err(_elapsed) => Ok(false),
            },
            None => flush.await.map(|()| true),
        }
    }

    /// Registers the socket for writability too. The same descriptor is registered again (no
    /// `dup`: it must work when descriptors have run out).
    fn watch_writes(&mut self) -> io::Result<()> {
        let fd = self
            .socket
            .take()
            .expect("the socket is present outside watch_writes and drop")
            .into_inner();
        let reads = match self.kind {
            Kind::Stream => STREAM_READS,
            Kind::Seqpacket => Interest::READABLE,
        };
        self.socket = Some(udsecho_unix::registration::register_for(
            fd,
            reads | Interest::WRITABLE,
        )?);
        self.watching_writes = true;
        Ok(())
    }

    /// Shuts down our write side: the peer reads what we sent, then the end. The peer may be
    /// gone already; it has everything we could give it.
    pub(crate) fn shut_write(&self) {
        let _ = rustix::net::shutdown(self.socket().get_ref(), rustix::net::Shutdown::Write);
    }

    /// Adds `fd` to what the next bytes written carry back (an `extra_fd` fault), unless a
    /// message's worth is held already.
    pub(crate) fn pass_extra(&mut self, fd: OwnedFd) {
        if self.passing.held().len() < crate::descriptors::MAX_PER_READ {
            let _ = self
                .passing
                .hold(crate::descriptors::Passed::one(fd), false);
        }
    }

    /// Closes the descriptors the peer passed that no echo will carry back, saying why.
    pub(crate) fn lose_held(&mut self, why: &str) {
        self.passing.lose(why);
    }
}

impl Drop for Peer {
    /// Closes the socket: away from this thread when input is still queued, or the peer has
    /// passed descriptors, since what is queued may carry some whose last close could wait
    /// (`descriptors::close_aside`).
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take()
            && (self.passing.ever() || queued_in(socket.get_ref()) > 0)
        {
            descriptors::close_aside(vec![socket.into_inner()]);
        }
    }
}

/// Bytes (or, seqpacket, message bytes) queued for reading in `fd`; `usize::MAX` if the
/// kernel will not say.
fn queued_in(fd: &OwnedFd) -> usize {
    rustix::io::ioctl_fionread(fd)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX)
}

/// How a seqpacket echo went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Echoed; `refused`: without its descriptors, which the kernel would not send.
    Echoed { refused: bool },
    /// The socket would not take it: the message stays queued.
    Blocked,
}
