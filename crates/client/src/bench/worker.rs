//! One connection's share of the benchmark, as a task: the loops for raw ping-pong, raw
//! pipelined, framed, and seqpacket/datagram messages. Each checks every echoed byte against
//! what it sent, and counts its round trips and their latencies in its thread's tally, which
//! only this thread touches (see [`Load`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use udsecho_proto::Frame;

use super::echoes::Echoes;
use super::load::Load;
use crate::connect::Connection;
use crate::error::ErrorKind;
use crate::message::{MessageSocket, Received};
use crate::session;
use crate::target::SocketType;

/// Runs the loop for this connection (its transport is the connection's own) until the
/// deadline, with up to `pipeline` messages in flight.
pub(super) async fn run(load: Load, conn: Connection, pipeline: usize) -> Result<(), ErrorKind> {
    match conn {
        Connection::Stream {
            stream,
            framed: false,
        } if pipeline == 1 => raw_ping_pong(&load, stream).await,
        Connection::Stream {
            stream,
            framed: false,
        } => raw_pipelined(&load, stream, pipeline).await,
        Connection::Stream {
            stream,
            framed: true,
        } => frames(&load, stream, pipeline).await,
        Connection::Messages(socket) => messages(&load, socket, pipeline).await,
    }
}

/// Sends `bytes` whole, or fails when `late` fires first (message `n`).
async fn send(
    load: &Load,
    wr: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    late: Pin<&mut Sleep>,
    n: u64,
) -> Result<(), ErrorKind> {
    tokio::select! {
        biased;
        sent = wr.write_all(bytes) => sent.map_err(|e| load.broken("sending", e)),
        () = late => Err(load.late(&format!("sending message {n}"))),
    }
}

/// One read into `buf`, or a failure when `late` fires first (waiting for message `n`).
async fn receive(
    load: &Load,
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    late: Pin<&mut Sleep>,
    n: u64,
) -> Result<usize, ErrorKind> {
    tokio::select! {
        biased;
        read = rd.read(buf) => read.map_err(|e| load.broken("receiving", e)),
        () = late => Err(load.late(&format!("waiting for the echo of message {n}"))),
    }
}

/// One message at a time. The read buffer has a byte more than the echo, so a whole echo
/// is a short read, which tells tokio the socket is empty: the next read waits for the
/// next echo instead of trying a `recv` that returns EAGAIN.
async fn raw_ping_pong(load: &Load, mut stream: UnixStream) -> Result<(), ErrorKind> {
    let mut buf = vec![0u8; load.payload.len() + 1];
    let mut echoes = Echoes::new(load.payload.clone());
    let late = tokio::time::sleep_until(load.deadline + load.timeout);
    tokio::pin!(late);
    let mut n = 0;
    loop {
        let sent_at = Instant::now();
        if sent_at >= load.deadline {
            return Ok(());
        }
        n += 1;
        late.as_mut().reset(sent_at + load.timeout);
        send(load, &mut stream, &load.payload, late.as_mut(), n).await?;
        while echoes.done() < n {
            let got = receive(load, &mut stream, &mut buf, late.as_mut(), n).await?;
            if got == 0 {
                return Err(load.cut_off(&echoes));
            }
            echoes.take(&buf[..got], n)?;
        }
        load.record(sent_at);
    }
}

/// Up to `depth` messages in flight: a writer and a reader, joined in this one task (so
/// they share their queue without a lock). The writer tops up to `depth` in one write,
/// and half-closes after its last message; the reader checks whatever arrives.
async fn raw_pipelined(load: &Load, mut stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
    let (mut rd, mut wr) = stream.split();
    let credits = Semaphore::new(depth);
    let in_flight = RefCell::new(VecDeque::with_capacity(depth));
    let writer = async {
        let batch = load.payload.repeat(depth);
        let late = tokio::time::sleep_until(load.deadline + load.timeout);
        tokio::pin!(late);
        let mut sent = 0u64;
        loop {
            let Ok(credit) = credits.acquire().await else {
                break;
            };
            credit.forget();
            let now = Instant::now();
            if now >= load.deadline {
                break;
            }
            let more = credits.available_permits();
            if let Ok(taken) = credits.try_acquire_many(more as u32) {
                taken.forget();
            }
            let k = 1 + more;
            in_flight.borrow_mut().extend(std::iter::repeat_n(now, k));
            late.as_mut().reset(now + load.timeout);
            let bytes = &batch[..k * load.payload.len()];
            send(load, &mut wr, bytes, late.as_mut(), sent + 1).await?;
            sent += k as u64;
        }
        wr.shutdown().await.map_err(|e| load.broken("sending", e))?;
        Ok(sent)
    };
    let reader = async {
        let size = load.payload.len();
        let mut buf = vec![0u8; (size * depth).clamp(size, 256 * 1024) + 1];
        let mut echoes = Echoes::new(load.payload.clone());
        let late = tokio::time::sleep_until(load.deadline + load.timeout);
        tokio::pin!(late);
        loop {
            let oldest = in_flight.borrow().front().copied();
            late.as_mut()
                .reset(oldest.unwrap_or_else(Instant::now) + load.timeout);
            let n = echoes.done() + 1;
            let got = receive(load, &mut rd, &mut buf, late.as_mut(), n).await?;
            if got == 0 {
                // The writer half-closes after its last message, so the server's EOF
                // after the last echo is the normal end; the count check below tells
                // whether every echo came in.
                if echoes.partial().is_empty() {
                    // A writer still waiting for room stops too (and the counts
                    // differ, if the server closed early).
                    credits.close();
                    return Ok(echoes.done());
                }
                return Err(load.cut_off(&echoes));
            }
            let before = echoes.done();
            let due = before + in_flight.borrow().len() as u64;
            echoes.take(&buf[..got], due)?;
            let done = (echoes.done() - before) as usize;
            for sent_at in in_flight.borrow_mut().drain(..done) {
                load.record(sent_at);
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

async fn frames(load: &Load, stream: UnixStream, depth: usize) -> Result<(), ErrorKind> {
    let mut server = session::open(stream, load.timeout).await?;
    let mut in_flight = VecDeque::with_capacity(depth);
    // Each frame is due back within `timeout` of its sending: one timer, moved to the
    // oldest in flight.
    let late = tokio::time::sleep_until(Instant::now() + load.timeout);
    tokio::pin!(late);
    let mut n = 0;
    loop {
        // Top up to `depth` frames in flight, in one write.
        let mut queued = false;
        while in_flight.len() < depth && load.running() {
            server
                .feed(Frame::Data(load.payload.clone()))
                .await
                .map_err(session::protocol)?;
            in_flight.push_back(Instant::now());
            queued = true;
        }
        let Some(&oldest) = in_flight.front() else {
            break;
        };
        late.as_mut().reset(oldest + load.timeout);
        if queued {
            tokio::select! {
                biased;
                flushed = server.flush() => flushed.map_err(session::protocol)?,
                () = late.as_mut() => {
                    return Err(load.late(&format!("sending message {}", n + 1)));
                }
            }
        }
        let frame = tokio::select! {
            biased;
            frame = server.next() => frame,
            () = late.as_mut() => {
                return Err(load.late(&format!("waiting for the echo of message {}", n + 1)));
            }
        };
        match frame {
            Some(Ok(Frame::Data(echo))) => {
                n += 1;
                if echo != load.payload {
                    return Err(load.mismatch(n, &echo));
                }
                if let Some(at) = in_flight.pop_front() {
                    load.record(at);
                }
            }
            Some(Ok(other)) => return Err(session::unexpected(other)),
            Some(Err(e)) => return Err(session::protocol(e)),
            None => {
                return Err(load.broken("receiving", std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
    let bye = Frame::Goodbye(udsecho_proto::Goodbye::new(
        udsecho_proto::GoodbyeReason::Done,
    ));
    let _ = tokio::time::timeout(load.timeout, server.send(bye)).await;
    Ok(())
}
/// Seqpacket or datagram: up to `depth` messages in flight, each reply one message
/// that must equal the payload, each due within `timeout` of its sending. Sending and
/// receiving are raced, so a full queue on one side never stalls the other.
async fn messages(load: &Load, socket: MessageSocket, depth: usize) -> Result<(), ErrorKind> {
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(depth);
    // Room for a longer reply, so that it shows as a mismatch rather than truncated.
    let mut echo = vec![0u8; load.payload.len() + 1];
    let mut n = 0u64;
    // Each reply is due within `timeout` of its message: one timer, moved to the oldest
    // in flight.
    let late = tokio::time::sleep_until(Instant::now() + load.timeout);
    tokio::pin!(late);
    let gone = |n: u64| {
        socket.gone(format!(
            "in the middle of the benchmark, after {n} round trips"
        ))
    };
    loop {
        let sending = in_flight.len() < depth && load.running();
        if !sending && in_flight.is_empty() {
            break;
        }
        let waiting = match in_flight.front() {
            Some(&at) => {
                late.as_mut().reset(at + load.timeout);
                true
            }
            None => false,
        };
        tokio::select! {
            sent = socket.send(&load.payload), if sending => {
                sent.map_err(|e| {
                    socket.send_failure(load.payload.len(), e, || gone(n))
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
                    return Err(load.mismatch(n + 1, &echo[..len.min(echo.len())]));
                };
                n += 1;
                if len != load.payload.len() || echo[..len] != load.payload[..] {
                    return Err(load.mismatch(n, &echo[..len.min(echo.len())]));
                }
                load.record(sent_at);
            }
            () = late.as_mut(), if waiting => {
                let lossy = match socket.kind() {
                    SocketType::Datagram => " (datagrams can be dropped)",
                    _ => "",
                };
                return Err(load.late(&format!("waiting for the echo of message {}{lossy}", n + 1)));
            }
        }
    }
    let _ = socket.shutdown_write();
    Ok(())
}
