//! Send mode: the classic demo loop. Send a message every interval, print what comes back,
//! and check that every echo matches.

use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::MissedTickBehavior;
use udsecho_proto::{Frame, Goodbye, GoodbyeReason};

use crate::error::{ClientError, preview};
use crate::session::{self, io};

/// What `send` is told to do.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The message sent each time.
    pub message: Bytes,
    /// Time between sends.
    pub interval: Duration,
    /// How many to send; `None` sends until `stop` resolves.
    pub count: Option<u64>,
    /// Frames instead of raw bytes.
    pub framed: bool,
    /// How long to wait for the outstanding echoes at the end.
    pub timeout: Duration,
}

/// What happened, for the closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendSummary {
    /// Messages sent.
    pub sent: u64,
    /// Echoes received, each identical to its message.
    pub received: u64,
}

/// Where the echo stream is.
struct Checker<'a> {
    socket: &'a str,
    message: &'a [u8],
    received: u64,
    /// Raw mode: echo bytes not yet matched to a whole message.
    partial: BytesMut,
}

impl Checker<'_> {
    fn check(&mut self, echo: &[u8], out: &mut impl Write) -> Result<(), ClientError> {
        self.received += 1;
        if echo != self.message {
            return Err(ClientError::Mismatch {
                socket: self.socket.to_owned(),
                index: self.received,
                sent: preview(self.message),
                received: preview(echo),
            });
        }
        writeln!(out, "received: {}", String::from_utf8_lossy(echo))
            .map_err(|e| io("stdout", "writing", e))
    }

    /// Raw mode: the echo arrives as a byte stream; cut it into messages.
    fn feed(&mut self, bytes: &[u8], out: &mut impl Write) -> Result<(), ClientError> {
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= self.message.len() {
            let echo = self.partial.split_to(self.message.len());
            self.check(&echo, out)?;
        }
        Ok(())
    }
}

/// Runs the loop on a connected stream until `count` messages are sent and echoed, or
/// `stop` resolves (Ctrl-C), printing `sent: ...` and `received: ...` to `out`.
pub async fn run(
    stream: UnixStream,
    socket: &str,
    options: &SendOptions,
    stop: impl std::future::Future<Output = ()>,
    out: &mut impl Write,
) -> Result<SendSummary, ClientError> {
    if options.message.is_empty() {
        return Err(io(
            socket,
            "sending",
            std::io::Error::other("the message is empty"),
        ));
    }
    let mut checker = Checker {
        socket,
        message: &options.message,
        received: 0,
        partial: BytesMut::new(),
    };
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut stopped = false;

    if options.framed {
        let framed = session::open(stream, socket).await?;
        let (mut sink, mut frames) = framed.split();
        loop {
            let done_sending = stopped || options.count.is_some_and(|c| sent >= c);
            if done_sending && checker.received >= sent {
                let _ = sink
                    .send(Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
                    .await;
                break;
            }
            let deadline = tokio::time::sleep(options.timeout);
            tokio::select! {
                _ = ticker.tick(), if !done_sending => {
                    sink.send(Frame::Data(options.message.clone()))
                        .await
                        .map_err(|e| session::protocol(socket, e))?;
                    sent += 1;
                    print_sent(out, &options.message)?;
                }
                () = &mut stop, if !stopped => stopped = true,
                frame = frames.next() => match frame {
                    Some(Ok(Frame::Data(echo))) => checker.check(&echo, out)?,
                    Some(Ok(Frame::Goodbye(bye))) => return Err(closed(socket, sent, checker.received, &format!("Goodbye {:?}", bye.reason))),
                    Some(Ok(other)) => return Err(session::unexpected(socket, other)),
                    Some(Err(e)) => return Err(session::protocol(socket, e)),
                    None => return Err(closed(socket, sent, checker.received, "connection closed")),
                },
                // After Ctrl-C, echoes that do not come are reported in the summary, not as
                // an error: the person asked to stop.
                () = deadline, if done_sending => if stopped { break } else {
                    return Err(timed_out(socket, options.timeout));
                },
            }
        }
    } else {
        let (mut from_server, mut to_server) = stream.into_split();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let done_sending = stopped || options.count.is_some_and(|c| sent >= c);
            if done_sending && checker.received >= sent {
                let _ = to_server.shutdown().await;
                break;
            }
            let deadline = tokio::time::sleep(options.timeout);
            tokio::select! {
                _ = ticker.tick(), if !done_sending => {
                    to_server.write_all(&options.message).await.map_err(|e| {
                        session::transport(socket, "sending", e, || {
                            closed(socket, sent, checker.received, "connection closed")
                        })
                    })?;
                    sent += 1;
                    print_sent(out, &options.message)?;
                }
                () = &mut stop, if !stopped => stopped = true,
                read = from_server.read(&mut buf) => match read {
                    Ok(0) => return Err(closed(socket, sent, checker.received, "connection closed")),
                    Ok(n) => checker.feed(&buf[..n], out)?,
                    Err(e) => return Err(session::transport(socket, "receiving", e, || {
                        closed(socket, sent, checker.received, "connection reset")
                    })),
                },
                // After Ctrl-C, echoes that do not come are reported in the summary, not as
                // an error: the person asked to stop.
                () = deadline, if done_sending => if stopped { break } else {
                    return Err(timed_out(socket, options.timeout));
                },
            }
        }
    }
    Ok(SendSummary {
        sent,
        received: checker.received,
    })
}

fn print_sent(out: &mut impl Write, message: &[u8]) -> Result<(), ClientError> {
    writeln!(out, "sent: {}", String::from_utf8_lossy(message))
        .and_then(|()| out.flush())
        .map_err(|e| io("stdout", "writing", e))
}

fn closed(socket: &str, sent: u64, received: u64, how: &str) -> ClientError {
    ClientError::ClosedEarly {
        socket: socket.to_owned(),
        detail: format!("{how} after {sent} sent and {received} echoed"),
    }
}

fn timed_out(socket: &str, after: Duration) -> ClientError {
    ClientError::TimedOut {
        socket: socket.to_owned(),
        what: "waiting for the echo",
        after,
    }
}
