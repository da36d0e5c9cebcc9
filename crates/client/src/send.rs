//! Send mode: the classic demo loop. Send a message every interval, print what comes back,
//! and check that every echo matches, each within `--timeout` of its sending. Over a stream
//! the echo is cut back into messages; over seqpacket and datagram each reply is one
//! message and must equal the message whole. With `--fd` every message carries the
//! descriptors, and what comes back must be the same open files, in order, one set per echo
//! (`descriptors::FdCheck`; exit 3 otherwise, as for bytes).

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::UnixStream;
use tokio::time::{Instant, MissedTickBehavior};
use udsecho_proto::{Frame, Goodbye, GoodbyeReason};

use crate::connect::Connection;
use crate::descriptors::{FdCheck, Passing};
use crate::error::{ClientError, ErrorKind};
use crate::fd_stream::FdStream;
use crate::message::{MessageSocket, Received};
use crate::misbehave::Misbehaviour;
use crate::session;
use crate::target::{SocketType, Target};

/// What `send` is told to do.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The message sent each time (not empty).
    pub message: Bytes,
    /// Time between sends (more than zero).
    pub interval: Duration,
    /// How many to send; `None` sends until `stop` resolves.
    pub count: Option<u64>,
    /// How long the handshake, each send and each echo may take.
    pub timeout: Duration,
    /// The descriptors each message carries (`--fd`), checked when they come back.
    pub descriptors: Passing,
    /// What the stream does wrong on purpose (`--fault`): `send` takes slices only (each
    /// message goes out in slices with a gap, each echo still checked).
    pub misbehave: Misbehaviour,
}

/// What happened, for the closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendSummary {
    /// Messages sent.
    pub sent: u64,
    /// Echoes received, each identical to its message.
    pub received: u64,
    /// Whether `stop` ended the loop (Ctrl-C) rather than the count.
    pub stopped: bool,
}

/// Where the echo stream is.
struct Checker<'a> {
    message: &'a [u8],
    received: u64,
    /// Raw mode: echo bytes not yet matched to a whole message.
    partial: BytesMut,
}

impl<'a> Checker<'a> {
    /// A checker for echoes of `message`, none received yet.
    fn new(message: &'a [u8]) -> Self {
        Checker {
            message,
            received: 0,
            partial: BytesMut::new(),
        }
    }

    fn check(&mut self, echo: &[u8], out: &mut impl Write) -> Result<(), ErrorKind> {
        self.received += 1;
        if echo != self.message {
            return Err(ErrorKind::mismatch(self.received, self.message, echo));
        }
        writeln!(out, "received: {}", String::from_utf8_lossy(echo)).map_err(ErrorKind::Stdout)
    }

    /// Raw mode: the echo arrives as a byte stream; cut it into messages.
    fn feed(&mut self, bytes: &[u8], out: &mut impl Write) -> Result<(), ErrorKind> {
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= self.message.len() {
            if self.partial[..self.message.len()] != *self.message
                && session::is_framed_refusal(&self.partial)
            {
                return Err(ErrorKind::FramedOnlyServer);
            }
            let echo = self.partial.split_to(self.message.len());
            self.check(&echo, out)?;
        }
        Ok(())
    }

    /// Raw mode: the server closed (`how`). An Error frame in what came back means it wanted
    /// frames.
    fn closed(&self, sent: u64, how: &str) -> ErrorKind {
        if session::is_framed_refusal(&self.partial) {
            return ErrorKind::FramedOnlyServer;
        }
        closed(sent, self.received, how)
    }
}

/// Runs the loop on a connection until `count` messages are sent and echoed, or `stop`
/// resolves (Ctrl-C), printing `sent: ...` and `received: ...` to `out`. Over a seqpacket
/// or datagram socket each message is sent as one, and each reply must be one message equal
/// to it.
///
/// Each echo is due within `timeout` of its message being sent; after `stop`, echoes still
/// due are waited for as long, then counted as missing in the summary instead of failing.
pub async fn run(
    connection: Connection,
    target: &Target,
    options: &SendOptions,
    stop: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<SendSummary, ClientError> {
    let result = match connection {
        Connection::Stream {
            stream,
            framed: true,
        } => framed(stream, options, stop, out).await,
        Connection::Stream {
            stream,
            framed: false,
        } => raw(stream, options, stop, out).await,
        Connection::Messages(mut socket) => {
            socket.pass(options.descriptors.clone());
            message_loop(&socket, options, stop, out).await
        }
    };
    result.map_err(|kind| kind.at(target))
}

/// The loop's state shared by both modes: what is due, and when.
struct Schedule<'a> {
    options: &'a SendOptions,
    ticker: tokio::time::Interval,
    /// When each message not yet echoed was sent, oldest first.
    in_flight: VecDeque<Instant>,
    /// Echoes that came before their message was sent. A peer that is not an echo server
    /// (`nc -lU` with a reply on its stdin) can answer first; the reply still counts.
    ahead: u64,
    sent: u64,
    stopped: bool,
}

impl<'a> Schedule<'a> {
    fn new(options: &'a SendOptions) -> Self {
        let mut ticker = tokio::time::interval(options.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Schedule {
            options,
            ticker,
            in_flight: VecDeque::new(),
            ahead: 0,
            sent: 0,
            stopped: false,
        }
    }

    fn done_sending(&self) -> bool {
        self.stopped || self.options.count.is_some_and(|c| self.sent >= c)
    }

    fn finished(&self) -> bool {
        self.done_sending() && self.in_flight.is_empty()
    }

    /// An echo came in.
    fn echoed(&mut self) {
        if self.in_flight.pop_front().is_none() {
            self.ahead += 1;
        }
    }

    /// When the oldest echo is overdue (`None` if none is awaited).
    fn due(&self) -> Option<Instant> {
        self.in_flight.front().map(|&at| at + self.options.timeout)
    }

    /// The oldest echo did not come in time: after Ctrl-C that ends the loop (the summary
    /// counts it), otherwise it is an error.
    fn on_overdue(&self, received: u64) -> Result<(), ErrorKind> {
        if self.stopped {
            Ok(())
        } else {
            Err(ErrorKind::timed_out(
                format!("waiting for the echo of message {}", received + 1),
                self.options.timeout,
            ))
        }
    }

    /// Marks a message sent and prints it.
    fn sent_one(&mut self, out: &mut impl Write) -> Result<(), ErrorKind> {
        self.sent += 1;
        if self.ahead > 0 {
            self.ahead -= 1;
        } else {
            self.in_flight.push_back(Instant::now());
        }
        writeln!(
            out,
            "sent: {}",
            String::from_utf8_lossy(&self.options.message)
        )
        .and_then(|()| out.flush())
        .map_err(ErrorKind::Stdout)
    }

    fn summary(&self, received: u64) -> SendSummary {
        SendSummary {
            sent: self.sent,
            received,
            stopped: self.stopped,
        }
    }
}

async fn raw(
    stream: UnixStream,
    options: &SendOptions,
    stop: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<SendSummary, ErrorKind> {
    let mut checker = Checker::new(&options.message);
    let mut schedule = Schedule::new(options);
    let mut fds = FdCheck::new(options.descriptors.clone());
    let stream = FdStream::new(stream, options.descriptors.clone(), &options.misbehave);
    let mut buf = vec![0u8; 64 * 1024];
    tokio::pin!(stop);
    while !schedule.finished() {
        let done_sending = schedule.done_sending();
        let due = schedule.due();
        tokio::select! {
            _ = schedule.ticker.tick(), if !done_sending => {
                let index = schedule.sent + 1;
                match tokio::time::timeout(options.timeout, stream.send_message(&options.message)).await {
                    Ok(Ok(())) => schedule.sent_one(out)?,
                    Ok(Err(e)) => return Err(session::transport("sending", e, || {
                        checker.closed(schedule.sent, "connection closed")
                    })),
                    Err(_) => return Err(ErrorKind::timed_out(format!("sending message {index}"), options.timeout)),
                }
            }
            () = &mut stop, if !schedule.stopped => schedule.stopped = true,
            read = stream.recv(&mut buf) => match read {
                Ok(0) => return Err(checker.closed(schedule.sent, "connection closed")),
                Ok(n) => {
                    fds.returned(stream.take_returned(), schedule.sent)?;
                    let before = checker.received;
                    checker.feed(&buf[..n], out)?;
                    fds.echoed(checker.received)?;
                    for _ in before..checker.received {
                        schedule.echoed();
                    }
                }
                Err(e) => return Err(session::transport("receiving", e, || {
                    checker.closed(schedule.sent, "connection reset")
                })),
            },
            () = until(due) => {
                schedule.on_overdue(checker.received)?;
                break;
            }
        }
    }
    let _ = stream.shutdown_write();
    Ok(schedule.summary(checker.received))
}

async fn framed(
    stream: UnixStream,
    options: &SendOptions,
    stop: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<SendSummary, ErrorKind> {
    let mut checker = Checker::new(&options.message);
    let mut fds = FdCheck::new(options.descriptors.clone());
    let stream = FdStream::new(stream, options.descriptors.clone(), &options.misbehave);
    let mut server = session::open(stream, options.timeout).await?;
    let mut schedule = Schedule::new(options);
    tokio::pin!(stop);
    while !schedule.finished() {
        let done_sending = schedule.done_sending();
        let due = schedule.due();
        tokio::select! {
            _ = schedule.ticker.tick(), if !done_sending => {
                let index = schedule.sent + 1;
                let data = Frame::Data(options.message.clone());
                server.io().start_message();
                match tokio::time::timeout(options.timeout, server.send(data)).await {
                    Ok(Ok(())) => schedule.sent_one(out)?,
                    Ok(Err(e)) => return Err(session::protocol(e)),
                    Err(_) => return Err(ErrorKind::timed_out(format!("sending message {index}"), options.timeout)),
                }
            }
            () = &mut stop, if !schedule.stopped => schedule.stopped = true,
            frame = server.next() => match frame {
                Some(Ok(Frame::Data(echo))) => {
                    fds.returned(server.io().take_returned(), schedule.sent)?;
                    schedule.echoed();
                    checker.check(&echo, out)?;
                    fds.echoed(checker.received)?;
                }
                Some(Ok(Frame::Goodbye(bye))) => {
                    return Err(closed(schedule.sent, checker.received, &format!("Goodbye {:?}", bye.reason)));
                }
                Some(Ok(other)) => return Err(session::unexpected(other)),
                Some(Err(e)) => return Err(session::protocol(e)),
                None => return Err(closed(schedule.sent, checker.received, "connection closed")),
            },
            () = until(due) => {
                schedule.on_overdue(checker.received)?;
                break;
            }
        }
    }
    let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Done));
    let _ = tokio::time::timeout(options.timeout, server.send(bye)).await;
    Ok(schedule.summary(checker.received))
}

async fn message_loop(
    socket: &MessageSocket,
    options: &SendOptions,
    stop: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<SendSummary, ErrorKind> {
    let mut checker = Checker::new(&options.message);
    let mut schedule = Schedule::new(options);
    let mut fds = FdCheck::new(options.descriptors.clone());
    // Room for a reply somewhat longer than the message, so one that is too long shows as
    // a mismatch with its start.
    let mut buf = vec![0u8; options.message.len() + 64];
    let how = match socket.kind() {
        SocketType::Datagram => "its socket was closed",
        _ => "connection closed",
    };
    tokio::pin!(stop);
    while !schedule.finished() {
        let done_sending = schedule.done_sending();
        let due = schedule.due();
        tokio::select! {
            _ = schedule.ticker.tick(), if !done_sending => {
                let index = schedule.sent + 1;
                match tokio::time::timeout(options.timeout, socket.send(&options.message)).await {
                    Ok(Ok(())) => schedule.sent_one(out)?,
                    Ok(Err(e)) => return Err(socket.send_failure(options.message.len(), e, || {
                        socket.gone(after(how, schedule.sent, checker.received))
                    })),
                    Err(_) => return Err(ErrorKind::timed_out(format!("sending message {index}"), options.timeout)),
                }
            }
            () = &mut stop, if !schedule.stopped => schedule.stopped = true,
            got = socket.recv(&mut buf) => match got {
                Ok(Received::Message(n)) => {
                    fds.returned(socket.take_returned(), schedule.sent)?;
                    schedule.echoed();
                    checker.check(&buf[..n], out)?;
                    fds.echoed(checker.received)?;
                }
                Ok(Received::Truncated { len }) => {
                    let mut e = ErrorKind::mismatch(checker.received + 1, &options.message, &buf);
                    if let ErrorKind::Mismatch { received, .. } = &mut e {
                        received.push_str(&format!(" (a reply of {len} bytes)"));
                    }
                    return Err(e);
                }
                Ok(Received::Closed) => {
                    return Err(socket.gone(after(how, schedule.sent, checker.received)));
                }
                Err(e) => return Err(socket.failure("receiving", e, || {
                    socket.gone(after("connection reset", schedule.sent, checker.received))
                })),
            },
            () = until(due) => {
                // Datagram echoes of one message are all alike: when one is missing, which
                // one cannot be told, only how many.
                if socket.kind() == SocketType::Datagram && !schedule.stopped {
                    return Err(ErrorKind::timed_out(
                        format!(
                            "waiting for {} of {} replies (datagrams can be dropped)",
                            schedule.in_flight.len(),
                            schedule.sent
                        ),
                        options.timeout,
                    ));
                }
                schedule.on_overdue(checker.received)?;
                break;
            }
        }
    }
    let _ = socket.shutdown_write();
    Ok(schedule.summary(checker.received))
}

/// Resolves at `due`, or never.
async fn until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn closed(sent: u64, received: u64, how: &str) -> ErrorKind {
    ErrorKind::closed_early(after(how, sent, received))
}

/// `how` the exchange ended, and where it was.
fn after(how: &str, sent: u64, received: u64) -> String {
    format!("{how} after {sent} sent and {received} echoed")
}
