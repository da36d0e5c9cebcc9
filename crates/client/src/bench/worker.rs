//! One connection's share of the benchmark: the loops for raw ping-pong, raw pipelined,
//! framed, and seqpacket/datagram messages. Each checks every echoed byte against what it
//! sent, and counts its round trips and their latencies in its thread's [`Tally`], which
//! only this thread touches.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
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
    fn record(&self, sent_at: Instant) {
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
    fn broken(&self, doing: &'static str, e: std::io::Error) -> ErrorKind {
        session::transport(doing, e, || {
            ErrorKind::closed_early("in the middle of the benchmark")
        })
    }

    fn late(&self, waiting: &str) -> ErrorKind {
        ErrorKind::timed_out(waiting, self.timeout)
    }

    /// Reads one echo into `echo`; `Ok(false)` when the server closed before its first
    /// byte. A short echo cut off by a close is checked for an Error frame (a framed-only
    /// server) before it counts as the server hanging up.
    async fn read_echo(
        &self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
        echo: &mut [u8],
        index: u64,
    ) -> Result<bool, ErrorKind> {
        let mut filled = 0;
        while filled < echo.len() {
            let read = tokio::time::timeout(self.timeout, stream.read(&mut echo[filled..]))
                .await
                .map_err(|_| self.late(&format!("waiting for the echo of message {index}")))?;
            match read {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(n) if n > 0 => filled += n,
                _ if session::is_framed_refusal(&echo[..filled]) => {
                    return Err(ErrorKind::FramedOnlyServer);
                }
                Ok(_) => {
                    return Err(self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
                }
                Err(e) => return Err(self.broken("receiving", e)),
            }
        }
        Ok(true)
    }

    async fn raw_ping_pong(self, mut stream: UnixStream) -> Result<(), ErrorKind> {
        let mut echo = vec![0u8; self.payload.len()];
        let mut n = 0;
        while self.running() {
            n += 1;
            let sent_at = Instant::now();
            tokio::time::timeout(self.timeout, stream.write_all(&self.payload))
                .await
                .map_err(|_| self.late(&format!("sending message {n}")))?
                .map_err(|e| self.broken("sending", e))?;
            if !self.read_echo(&mut stream, &mut echo, n).await? {
                return Err(self.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
            }
            if echo[..] != self.payload[..] {
                return Err(self.mismatch(n, &echo));
            }
            self.record(sent_at);
        }
        Ok(())
    }

    /// Up to `depth` messages in flight: a writer and a reader, joined in this one task (so
    /// they share their queue without a lock). The writer half-closes after its last message.
    async fn raw_pipelined(self, mut stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
        let (mut rd, mut wr) = stream.split();
        let credits = Semaphore::new(depth);
        let in_flight = RefCell::new(VecDeque::with_capacity(depth));
        let writer = async {
            let mut sent = 0u64;
            while self.running() {
                let Ok(credit) = credits.acquire().await else {
                    break;
                };
                credit.forget();
                in_flight.borrow_mut().push_back(Instant::now());
                tokio::time::timeout(self.timeout, wr.write_all(&self.payload))
                    .await
                    .map_err(|_| self.late(&format!("sending message {}", sent + 1)))?
                    .map_err(|e| self.broken("sending", e))?;
                sent += 1;
            }
            wr.shutdown().await.map_err(|e| self.broken("sending", e))?;
            Ok(sent)
        };
        let reader = async {
            let mut echo = vec![0u8; self.payload.len()];
            let mut n = 0;
            // The writer half-closes after its last message, so the server's EOF after the
            // last echo is the normal end; the count check below tells whether every echo
            // came in.
            while self.read_echo(&mut rd, &mut echo, n + 1).await? {
                n += 1;
                if echo[..] != self.payload[..] {
                    return Err(self.mismatch(n, &echo));
                }
                let sent_at = in_flight.borrow_mut().pop_front();
                if let Some(at) = sent_at {
                    self.record(at);
                }
                credits.add_permits(1);
            }
            Ok(n)
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
            if queued {
                tokio::time::timeout(self.timeout, server.flush())
                    .await
                    .map_err(|_| self.late(&format!("sending message {}", n + 1)))?
                    .map_err(session::protocol)?;
            }
            if in_flight.is_empty() {
                break;
            }
            let frame = tokio::time::timeout(self.timeout, server.next())
                .await
                .map_err(|_| self.late(&format!("waiting for the echo of message {}", n + 1)))?;
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
            let due = in_flight.front().map(|&at| at + self.timeout);
            let late = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
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
                () = late => {
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
