//! How a connection ends, once its reading phase has stopped: the last words (Goodbye, an
//! Error frame, or the echo still owed), the half-close, and a short linger that reads and
//! drops late input so the peer is not reset before it reads our last frame. These are
//! `async` and boxed when they start, so an idle connection's task does not carry them.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::RecvFlags;
use udsecho_proto::GoodbyeReason;

use super::{Handler, Last, Protocol};
use crate::connection::SCRATCH;
use crate::connection::framed;
use crate::connection::plan::{End, Ending};
use crate::descriptors;

/// After our last frame (Error, Goodbye): how long, and how much, late input is read and
/// dropped before closing, so the peer is not reset before it reads that frame.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

impl Handler {
    /// Writes `pending` out, waiting at most `--idle-timeout` (if set): `false` if the peer
    /// would not take it in time.
    async fn flush(&mut self) -> io::Result<bool> {
        let limit = self.settings.idle_timeout;
        let flush = std::future::poll_fn(|cx| self.poll_flush(cx));
        match limit {
            Some(limit) => match tokio::time::timeout(limit, flush).await {
                Ok(flushed) => flushed.map(|()| true),
                Err(_elapsed) => Ok(false),
            },
            None => flush.await.map(|()| true),
        }
    }

    /// The last words, cut short if a forced shutdown comes first.
    pub(super) async fn finish(&mut self, how: Last) -> io::Result<End> {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.forced() => Ok(End::Cut),
            end = self.last_words(how) => end,
        }
    }

    async fn last_words(&mut self, how: Last) -> io::Result<End> {
        match how {
            Last::Cut => Ok(End::Cut),
            Last::PeerDone => self.peer_done().await,
            Last::Drained => self.drained().await,
            Last::Idle => self.idle().await,
            Last::Session(ending) => self.end(ending).await,
        }
    }

    /// The peer half-closed: everything it sent has been answered; close.
    async fn peer_done(&mut self) -> io::Result<End> {
        if self.protocol.bytes_to_boundary() > 0 {
            tracing::debug!("the peer closed in the middle of a Data frame");
        }
        self.close().await;
        Ok(End::PeerDone)
    }

    /// Everything due at shutdown has been echoed: close (raw), or say Goodbye (framed).
    async fn drained(&mut self) -> io::Result<End> {
        // A detection prefix still held is the last of a raw peer's input.
        if let Some(ending) = self.decide_raw()? {
            return Box::pin(self.end(ending)).await;
        }
        if !self.flush().await? {
            return Box::pin(self.idle()).await;
        }
        if let Protocol::Framed(_) = self.protocol {
            framed::goodbye(GoodbyeReason::Shutdown, &mut self.pending);
            self.last_word().await?;
        } else {
            self.close().await;
        }
        Ok(End::Drained)
    }

    /// Nothing moved for `--idle-timeout`. A framed peer gets Goodbye unless that would land
    /// inside a frame.
    async fn idle(&mut self) -> io::Result<End> {
        match &self.protocol {
            // With an echo still pending (the peer stopped reading) or a Data frame half
            // echoed, a Goodbye would land inside a frame: just close.
            Protocol::Framed(session)
                if session.bytes_to_boundary() == 0 && self.pending.is_empty() =>
            {
                framed::goodbye(GoodbyeReason::IdleTimeout, &mut self.pending);
                self.last_word().await?;
            }
            _ => {
                // What was read is still owed: a moment to write it, if the peer reads.
                if !self.pending.is_empty() {
                    let limit = LINGER;
                    let _ =
                        tokio::time::timeout(limit, std::future::poll_fn(|cx| self.poll_flush(cx)))
                            .await;
                }
                self.close().await;
            }
        }
        Ok(End::Idle)
    }

    /// The protocol ended the session.
    async fn end(&mut self, ending: Ending) -> io::Result<End> {
        if !self.flush().await? {
            return Box::pin(self.idle()).await;
        }
        match ending {
            Ending::PeerGoodbye => {
                framed::goodbye(GoodbyeReason::Done, &mut self.pending);
                self.last_word().await?;
                Ok(End::PeerDone)
            }
            Ending::PeerError => {
                self.close().await;
                Ok(End::PeerDone)
            }
            Ending::Breach(breach) => {
                tracing::debug!(code = ?breach.code, "protocol error: {}", breach.message);
                framed::error_frame(&breach, &mut self.pending);
                self.last_word().await?;
                Ok(End::Breach)
            }
            // Logged where it was found. An Error frame only where a frame may start.
            Ending::Truncated(breach) => {
                match &self.protocol {
                    Protocol::Framed(session) if session.bytes_to_boundary() == 0 => {
                        framed::error_frame(&breach, &mut self.pending);
                        self.last_word().await?;
                    }
                    _ => self.close().await,
                }
                Ok(End::Breach)
            }
        }
    }

    /// Sends our last frame (in `pending`), shuts down our side, and lingers.
    async fn last_word(&mut self) -> io::Result<()> {
        if !self.flush().await? {
            return Ok(());
        }
        self.close().await;
        self.linger().await;
        Ok(())
    }

    /// Shuts down the write side: the peer sees EOF after the last byte we sent. The peer may
    /// be gone already; it has everything we could give it.
    async fn close(&mut self) {
        let _ = rustix::net::shutdown(self.socket().get_ref(), rustix::net::Shutdown::Write);
    }

    /// After our last frame: read and drop what the peer still sends, for a moment. Closing a
    /// Unix socket with unread input resets the peer, which could hide that frame from a
    /// client still writing.
    async fn linger(&mut self) {
        let discard = async {
            let mut total = 0;
            while total < LINGER_BYTES {
                let Ok(mut ready) = self.socket().readable().await else {
                    return;
                };
                // `recvmsg`, so passed descriptors are taken and closed aside rather than
                // closed by the kernel on this thread (see `descriptors::close_aside`).
                let read = SCRATCH.with_borrow_mut(|scratch| {
                    ready.try_io(|fd| {
                        let got = descriptors::recv(
                            fd.get_ref().as_fd(),
                            &mut scratch[..],
                            RecvFlags::DONTWAIT,
                            descriptors::room(),
                            false,
                        )?;
                        let mut fds = got.fds;
                        fds.lose("they came after the server's last frame");
                        Ok(got.len)
                    })
                });
                let read = match read {
                    Ok(read) => read,
                    Err(_would_block) => continue,
                };
                match read {
                    Ok(0) => return,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }
}
