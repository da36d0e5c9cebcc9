//! A stream socket whose messages carry descriptors (`--fd`): tokio's `UnixStream` with its
//! reads and writes done by `recvmsg` and `sendmsg` (see `descriptors/`). The first write
//! after [`FdStream::start_message`] carries the descriptors; every read hands what comes
//! back to an inbox that checks it at once ([`FdStream::checked`], for `send`: a read that
//! brings a descriptor that cannot be one sent fails, whatever frame it is in) or closes it
//! at once ([`FdStream::new`], for the pipe). Without descriptors it reads and writes as a
//! plain stream. `send` and the framed pipe use it (the framed codec runs on top of its
//! `AsyncRead`/`AsyncWrite`); bench does not. With `--fault` it
//! misbehaves on purpose (see `misbehave.rs`): writes in slices with a gap, sending ended at
//! a limit (closed or half-closed), reading stopped.

use std::future::poll_fn;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

use crate::descriptors::{self, FdCheck, Inbox, Passing, Returned};
use crate::error::ErrorKind;
use crate::misbehave::{Misbehaviour, Progress, SendEnd};

/// A connected stream that passes [`Passing`] with each message.
#[derive(Debug)]
pub(crate) struct FdStream {
    stream: UnixStream,
    /// What each message carries (none: a plain stream).
    passing: Passing,
    /// The next write begins a message: it carries `passing`.
    armed: AtomicBool,
    /// What reads bring back goes here: checked or closed as it comes.
    inbox: Inbox,
    /// What it does wrong on purpose (`--fault`), and how far it got; `None`: nothing.
    misbehaving: Option<Mutex<Progress>>,
}

impl FdStream {
    /// A stream whose reads close what comes back (the pipe): see
    /// [`FdStream::take_returned`] for whether the kernel lost some.
    pub(crate) fn new(stream: UnixStream, passing: Passing, misbehave: &Misbehaviour) -> FdStream {
        FdStream {
            stream,
            passing,
            armed: AtomicBool::new(false),
            inbox: Inbox::closing(),
            misbehaving: Progress::new(misbehave).map(Mutex::new),
        }
    }

    /// A stream whose reads check what comes back against what was sent (`send`): a read
    /// that brings what cannot be ours fails, and [`FdStream::failure`] says why.
    pub(crate) fn checked(
        stream: UnixStream,
        passing: Passing,
        misbehave: &Misbehaviour,
    ) -> FdStream {
        FdStream {
            stream,
            inbox: Inbox::checking(FdCheck::new(passing.clone())),
            passing,
            armed: AtomicBool::new(false),
            misbehaving: Progress::new(misbehave).map(Mutex::new),
        }
    }

    fn progress(&self) -> Option<MutexGuard<'_, Progress>> {
        // Every change to it is one field at a time: a panic elsewhere leaves it consistent.
        self.misbehaving
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a `--fault` has taken effect (sending ended, reading stopped): from then on
    /// the exchange cannot end as a well-behaved one would, and that is not an error.
    pub(crate) fn misbehaved(&self) -> bool {
        self.progress().is_some_and(|p| p.took_effect())
    }

    /// How sending ended on purpose, if it did (`limit_data`, `half_close`).
    pub(crate) fn sending_ended(&self) -> Option<SendEnd> {
        self.progress().and_then(|p| p.ended())
    }

    /// Ends sending as `end` says: closes both directions, or half-closes.
    fn end_sending(&self, end: SendEnd) {
        let how = match end {
            SendEnd::Close => rustix::net::Shutdown::Both,
            SendEnd::HalfClose => rustix::net::Shutdown::Write,
        };
        let _ = rustix::net::shutdown(&self.stream, how);
    }

    /// The next bytes written begin a message: they carry the descriptors.
    pub(crate) fn start_message(&self) {
        self.inbox.begin_message();
        if !self.passing.is_empty() {
            self.armed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the kernel lost descriptors coming back since the last call (those that came
    /// are closed already).
    pub(crate) fn take_returned(&self) -> Returned {
        self.inbox.take()
    }

    /// The mismatch that failed a read of a [`FdStream::checked`] stream.
    pub(crate) fn failure(&self) -> Option<ErrorKind> {
        self.inbox.failure()
    }

    /// `echoed` messages have come back whole: each must have brought its descriptors.
    pub(crate) fn echoed(&self, echoed: u64) -> Result<(), ErrorKind> {
        self.inbox.echoed(echoed)
    }

    fn poll_recv(&self, cx: &mut Context<'_>, mut buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let room = !self.passing.is_empty();
        if let Some(progress) = self.progress() {
            match progress.read_allowance(buf.len()) {
                Some(n) => buf = &mut buf[..n],
                // Stopped reading on purpose: this read never completes (the caller's other
                // waits, its deadlines, end the exchange).
                None => return Poll::Pending,
            }
        }
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let got = self.stream.try_io(Interest::READABLE, || {
                descriptors::recv(self.stream.as_fd(), buf, RecvFlags::empty(), room)
                    .map_err(io::Error::from)
            });
            match got {
                Ok(got) => {
                    crate::trace::received(&buf[..got.len]);
                    if let Some(mut progress) = self.progress() {
                        progress.read(got.len);
                    }
                    if self.inbox.put(got.returned) {
                        return Poll::Ready(Ok(got.len));
                    }
                    return Poll::Ready(Err(io::Error::other(
                        "a descriptor came back that was not sent",
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_send(&self, cx: &mut Context<'_>, mut bytes: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(mut progress) = self.progress() {
            match ready!(progress.poll_allowance(cx, bytes.len())) {
                Ok(n) => bytes = &bytes[..n],
                Err(end) => {
                    self.end_sending(end);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the client ended sending on purpose (--fault)",
                    )));
                }
            }
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let armed = self.armed.load(Ordering::Relaxed);
            let order = crate::trace::sending();
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                let fds = if armed {
                    self.passing.fds()
                } else {
                    Vec::new()
                };
                descriptors::send(self.stream.as_fd(), bytes, &fds).map_err(io::Error::from)
            });
            match sent {
                Ok(n) => {
                    // The kernel took the descriptors with the first byte.
                    if armed && n > 0 {
                        self.armed.store(false, Ordering::Relaxed);
                    }
                    crate::trace::sent(&bytes[..n]);
                    drop(order);
                    if let Some(end) = self.progress().and_then(|mut p| p.wrote(n)) {
                        self.end_sending(end);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads what is there (waiting for something), keeping descriptors in the inbox.
    /// Cancel-safe.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// Writes all of `bytes` as one message: the first write carries the descriptors.
    pub(crate) async fn send_message(&self, mut bytes: &[u8]) -> io::Result<()> {
        self.start_message();
        while !bytes.is_empty() {
            let n = poll_fn(|cx| self.poll_send(cx, bytes)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Ends our side of the stream (a half-close).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        Ok(rustix::net::shutdown(
            &self.stream,
            rustix::net::Shutdown::Write,
        )?)
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.passing.is_empty() && this.misbehaving.is_none() {
            // Nothing passed, so nothing comes back to keep: tokio's own read, which fills
            // the caller's buffer without zeroing it first.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
            crate::trace::received(&buf.filled()[before..]);
            return Poll::Ready(Ok(()));
        }
        let n = ready!(this.poll_recv(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}
