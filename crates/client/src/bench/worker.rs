//! One connection's share of the benchmark: the loops for raw ping-pong, raw pipelined,
//! framed, and seqpacket/datagram messages. Each checks every echoed byte against what it
//! sent, and counts its round trips and their latencies in its thread's [`Tally`], which
//! only this thread touches.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use udsecho_proto::Frame;

use super::shard::Tally;
use crate::error::{ErrorKind, preview};
use crate::message::{MessageSocket, Received};
use crate::session;
use crate::target::SocketType;

/// One benchmark connection.
pub(super) enum Connection {
    Stream(UnixStream),
    /// Seqpacket, or a connected datagram socket.
    Messages(MessageSocket),
}

/// One connection's share of the benchmark.
pub(super) struct Worker {
    pub(super) payload: Bytes,
    /// When to stop sending.
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    /// This thread's count and latencies.
    pub(super) tally: Rc<Tally>,
}

impl Worker {
    /// Runs the loop for this kind of connection until the deadline.
    pub(super) async fn run(
        self,
        conn: Connection,
        framed: bool,
        pipeline: usize,
    ) -> Result<(), ErrorKind> {
        match (conn, framed, pipeline) {
            (Connection::Stream(stream), false, 1) => self.raw_ping_pong(stream).await,
            (Connection::Stream(stream), false, depth) => self.raw_pipelined(stream, depth).await,
            (Connection::Stream(stream), true, depth) => self.framed(stream, depth).await,
            (Connection::Messages(socket), _, depth) => self.messages(socket, depth).await,
        }
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Counts a verified round trip sent at `sent_at`.
    pub(super) fn record(&self, sent_at: Instant) {
        self.tally.record(sent_at.elapsed());
    }

    /// An echo that differs from the payload; an Error frame instead means a server in
    /// framed-only mode.
    fn mismatch(&self, index: u64, echo: &[u8]) -> ErrorKind {
        if session::is_framed_refusal(echo) {
            ErrorKind::FramedOnlyServer
        } else {
            ErrorKind::Mismatch {
                index,
                sent: preview(&self.payload),
                received: preview(echo),
            }
        }
    }

    /// A transport failure while `doing`.
    pub(super) fn broken(&self, doing: &'static str, e: std::io::Error) -> ErrorKind {
        session::transport(doing, e, || {
            ErrorKind::closed_early("in the middle of the benchmark")
        })
    }

    pub(super) fn late(&self, waiting: &str) -> ErrorKind {
        ErrorKind::timed_out(waiting, self.timeout)
    }

    /// Sends `bytes` whole, or fails when `late` fires first (message `n`).
    async fn send(
        &self,
        wr: &mut (impl AsyncWrite + Unpin),
        bytes: &[u8],
        late: Pin<&mut Sleep>,
        n: u64,
    ) -> Result<(), ErrorKind> {
        tokio::select! {
            biased;
            sent = wr.write_all(bytes) => sent.map_err(|e| self.broken("sending", e)),
            () = late => Err(self.late(&format!("sending message {n}"))),
        }
    }

    /// One read into `buf`, or a failure when `late` fires first (waiting for message `n`).
    async fn receive(
        &self,
        rd: &mut (impl AsyncRead + Unpin),
        buf: &mut [u8],
        late: Pin<&mut Sleep>,
        n: u64,
    ) -> Result<usize, ErrorKind> {
        tokio::select! {
            biased;
            read = rd.read(buf) => read.map_err(|e| self.broken("receiving", e)),
            () = late => Err(self.late(&format!("waiting for the echo of message {n}"))),
        }
    }

    /// The server closed with `echoes` in the middle of a message: an Error frame there
    /// means a framed-only server, anything else a server that hung up.
    pub(super) fn cut_off(&self, echoes: &Echoes) -> ErrorKind {
        if session::is_framed_refusal(&echoes.partial) {
            ErrorKind::FramedOnlyServer
        } else {
            self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// One message at a time. The read buffer has a byte more than the echo, so a whole echo
    /// is a short read, which tells tokio the socket is empty: the next read waits for the
    /// next echo instead of trying a `recv` that returns EAGAIN.
    async fn raw_ping_pong(self, mut stream: UnixStream) -> Result<(), ErrorKind> {
        let mut buf = vec![0u8; self.payload.len() + 1];
        let mut echoes = Echoes::new(self.payload.clone());
        let late = tokio::time::sleep_until(self.deadline + self.timeout);
        tokio::pin!(late);
        let mut n = 0;
        loop {
            let sent_at = Instant::now();
            if sent_at >= self.deadline {
                return Ok(());
            }
            n += 1;
            late.as_mut().reset(sent_at + self.timeout);
            self.send(&mut stream, &self.payload, late.as_mut(), n)
                .await?;
            while echoes.done < n {
                let got = self
                    .receive(&mut stream, &mut buf, late.as_mut(), n)
                    .await?;
                if got == 0 {
                    return Err(self.cut_off(&echoes));
                }
                echoes.take(&buf[..got], n)?;
            }
            self.record(sent_at);
        }
    }

    /// Up to `depth` messages in flight: a writer and a reader, joined in this one task (so
    /// they share their queue without a lock). The writer tops up to `depth` in one write,
    /// and half-closes after its last message; the reader checks whatever arrives.
    async fn raw_pipelined(self, mut stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
        let (mut rd, mut wr) = stream.split();
        let credits = Semaphore::new(depth);
        let in_flight = RefCell::new(VecDeque::with_capacity(depth));
        let writer = async {
            let batch = self.payload.repeat(depth);
            let late = tokio::time::sleep_until(self.deadline + self.timeout);
            tokio::pin!(late);
            let mut sent = 0u64;
            loop {
                let Ok(credit) = credits.acquire().await else {
                    break;
                };
                credit.forget();
                let now = Instant::now();
                if now >= self.deadline {
                    break;
                }
                let more = credits.available_permits();
                if let Ok(taken) = credits.try_acquire_many(more as u32) {
                    taken.forget();
                }
                let k = 1 + more;
                in_flight.borrow_mut().extend(std::iter::repeat_n(now, k));
                late.as_mut().reset(now + self.timeout);
                let bytes = &batch[..k * self.payload.len()];
                self.send(&mut wr, bytes, late.as_mut(), sent + 1).await?;
                sent += k as u64;
            }
            wr.shutdown().await.map_err(|e| self.broken("sending", e))?;
            Ok(sent)
        };
        let reader = async {
            let size = self.payload.len();
            let mut buf = vec![0u8; (size * depth).clamp(size, 256 * 1024) + 1];
            let mut echoes = Echoes::new(self.payload.clone());
            let late = tokio::time::sleep_until(self.deadline + self.timeout);
            tokio::pin!(late);
            loop {
                let oldest = in_flight.borrow().front().copied();
                late.as_mut()
                    .reset(oldest.unwrap_or_else(Instant::now) + self.timeout);
                let n = echoes.done + 1;
                let got = self.receive(&mut rd, &mut buf, late.as_mut(), n).await?;
                if got == 0 {
                    // The writer half-closes after its last message, so the server's EOF
                    // after the last echo is the normal end; the count check below tells
                    // whether every echo came in.
                    if echoes.partial.is_empty() {
                        // A writer still waiting for room stops too (and the counts
                        // differ, if the server closed early).
                        credits.close();
                        return Ok(echoes.done);
                    }
                    return Err(self.cut_off(&echoes));
                }
                let before = echoes.done;
                let due = before + in_flight.borrow().len() as u64;
                echoes.take(&buf[..got], due)?;
                let done = (echoes.done - before) as usize;
                for sent_at in in_flight.borrow_mut().drain(..done) {
                    self.record(sent_at);
                }
                credits.add_permits(done);
            }
        };
        let (sent, echoed) = tokio::try_join!(writer, reader)?;
        if sent != echoed {
            return Err(ErrorKind::closed_early(format!(
                "{sent} messages sent, {echoed} echoed"
            )));
        }
        Ok(())
    }

    async fn framed(self, stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
        let mut server = session::open(stream, self.timeout).await?;
        let mut in_flight = VecDeque::with_capacity(depth);
        // Each frame is due back within `timeout` of its sending: one timer, moved to the
        // oldest in flight.
        let late = tokio::time::sleep_until(Instant::now() + self.timeout);
        tokio::pin!(late);
        let mut n = 0;
        loop {
            // Top up to `depth` frames in flight, in one write.
            let mut queued = false;
            while in_flight.len() < depth && self.running() {
                server
                    .feed(Frame::Data(self.payload.clone()))
                    .await
                    .map_err(session::protocol)?;
                in_flight.push_back(Instant::now());
                queued = true;
            }
            let Some(&oldest) = in_flight.front() else {
                break;
            };
            late.as_mut().reset(oldest + self.timeout);
            if queued {
                tokio::select! {
                    biased;
                    flushed = server.flush() => flushed.map_err(session::protocol)?,
                    () = late.as_mut() => {
                        return Err(self.late(&format!("sending message {}", n + 1)));
                    }
                }
            }
            let frame = tokio::select! {
                biased;
                frame = server.next() => frame,
                () = late.as_mut() => {
                    return Err(self.late(&format!("waiting for the echo of message {}", n + 1)));
                }
            };
            match frame {
                Some(Ok(Frame::Data(echo))) => {
                    n += 1;
                    if echo != self.payload {
                        return Err(self.mismatch(n, &echo));
                    }
                    if let Some(at) = in_flight.pop_front() {
                        self.record(at);
                    }
                }
                Some(Ok(other)) => return Err(session::unexpected(other)),
                Some(Err(e)) => return Err(session::protocol(e)),
                None => {
                    return Err(self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        let bye = Frame::Goodbye(udsecho_proto::Goodbye::new(
            udsecho_proto::GoodbyeReason::Done,
        ));
        let _ = tokio::time::timeout(self.timeout, server.send(bye)).await;
        Ok(())
    }
}

impl Worker {
    /// Seqpacket or datagram: up to `depth` messages in flight, each reply one message
    /// that must equal the payload, each due within `timeout` of its sending. Sending and
    /// receiving are raced, so a full queue on one side never stalls the other.
    async fn messages(self, socket: MessageSocket, depth: usize) -> Result<(), ErrorKind> {
        let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(depth);
        // Room for a longer reply, so that it shows as a mismatch rather than truncated.
        let mut echo = vec![0u8; self.payload.len() + 1];
        let mut n = 0u64;
        // Each reply is due within `timeout` of its message: one timer, moved to the oldest
        // in flight.
        let late = tokio::time::sleep_until(Instant::now() + self.timeout);
        tokio::pin!(late);
        let gone = |n: u64| {
            socket.gone(format!(
                "in the middle of the benchmark, after {n} round trips"
            ))
        };
        loop {
            let sending = in_flight.len() < depth && self.running();
            if !sending && in_flight.is_empty() {
                break;
            }
            let waiting = match in_flight.front() {
                Some(&at) => {
                    late.as_mut().reset(at + self.timeout);
                    true
                }
                None => false,
            };
            tokio::select! {
                sent = socket.send(&self.payload), if sending => {
                    sent.map_err(|e| {
                        socket.send_failure(self.payload.len(), e, || gone(n))
                    })?;
                    in_flight.push_back(Instant::now());
                }
                got = socket.recv(&mut echo) => {
                    let len = match got {
                        Ok(Received::Message(len)) => len,
                        Ok(Received::Truncated { len }) => len,
                        Ok(Received::Closed) => return Err(gone(n)),
                        Err(e) => return Err(socket.failure("receiving", e, || gone(n))),
                    };
                    let Some(sent_at) = in_flight.pop_front() else {
                        // A reply to nothing we sent.
                        return Err(self.mismatch(n + 1, &echo[..len.min(echo.len())]));
                    };
                    n += 1;
                    if len != self.payload.len() || echo[..len] != self.payload[..] {
                        return Err(self.mismatch(n, &echo[..len.min(echo.len())]));
                    }
                    self.record(sent_at);
                }
                () = late.as_mut(), if waiting => {
                    let lossy = match socket.kind() {
                        SocketType::Datagram => " (datagrams can be dropped)",
                        _ => "",
                    };
                    return Err(self.late(&format!("waiting for the echo of message {}{lossy}", n + 1)));
                }
            }
        }
        let _ = socket.shutdown_write();
        Ok(())
    }
}

/// A stream of echoes of one payload, checked byte for byte as reads bring them, however
/// they are split.
pub(super) struct Echoes {
    payload: Bytes,
    /// Whole echoes received.
    done: u64,
    /// What has come of the echo in progress (at most the payload's length; kept to tell an
    /// Error frame from a server that hung up, and to show a mismatch).
    partial: Vec<u8>,
}

impl Echoes {
    pub(super) fn new(payload: Bytes) -> Echoes {
        Echoes {
            partial: Vec::with_capacity(payload.len()),
            payload,
            done: 0,
        }
    }

    /// Whole echoes received so far.
    pub(super) fn done(&self) -> u64 {
        self.done
    }

    /// Checks `data`, which follows what came before, while at most `due` echoes in all are
    /// owed.
    pub(super) fn take(&mut self, mut data: &[u8], due: u64) -> Result<(), ErrorKind> {
        let size = self.payload.len();
        while !data.is_empty() {
            let index = self.done + 1;
            if self.done == due {
                return Err(ErrorKind::Unasked {
                    after: self.done,
                    received: preview(data),
                });
            }
            let at = self.partial.len();
            let k = (size - at).min(data.len());
            if data[..k] != self.payload[at..at + k] {
                // Everything of this echo we have, to show it and to recognise an Error
                // frame (a framed-only server).
                self.partial.extend_from_slice(data);
                return Err(if session::is_framed_refusal(&self.partial) {
                    ErrorKind::FramedOnlyServer
                } else {
                    ErrorKind::Mismatch {
                        index,
                        sent: preview(&self.payload),
                        received: preview(&self.partial),
                    }
                });
            }
            if at + k == size {
                self.partial.clear();
                self.done += 1;
            } else {
                self.partial.extend_from_slice(&data[..k]);
            }
            data = &data[k..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_checked_however_they_are_split() {
        let mut echoes = Echoes::new(Bytes::from_static(b"abcdef"));
        echoes.take(b"ab", 3).unwrap();
        echoes.take(b"cdefabcdefa", 3).unwrap();
        assert_eq!((echoes.done, echoes.partial.as_slice()), (2, &b"a"[..]));
        echoes.take(b"bcdef", 3).unwrap();
        assert_eq!(echoes.done, 3);
        // More than was sent.
        let extra = echoes.take(b"x", 3).unwrap_err();
        assert_eq!(
            extra.to_string(),
            "the server sent back more than was sent: \"x\" after 3 whole echoes"
        );
    }

    #[test]
    fn a_differing_byte_is_a_mismatch_on_its_message() {
        let mut echoes = Echoes::new(Bytes::from_static(b"abcdef"));
        echoes.take(b"abcdefab", 2).unwrap();
        let e = echoes.take(b"cXef", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "echo mismatch on message 2: sent \"abcdef\", received \"abcXef\""
        );
    }
}
