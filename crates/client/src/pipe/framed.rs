//! The framed pipe: each stdin line is a Data frame, each echo a line on stdout, in a framed
//! session whose every wait for the server is bounded. With `--fd` each Data frame carries
//! the descriptors, and what comes back is closed. With `--fault` it misbehaves on purpose
//! (the stream does: see `fd_stream.rs`), and the session ends without an error once it has.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;
use udsecho_proto::{Frame, Goodbye, GoodbyeReason};

use crate::descriptors::Passing;
use crate::error::{ClientError, ErrorKind};
use crate::fd_stream::FdStream;
use crate::misbehave::{Misbehaviour, SendEnd};
use crate::session;
use crate::target::Target;

/// Framed pipe: each input line (without its newline) becomes a Data frame; each echoed
/// payload is written as a line. On input EOF it sends Goodbye and waits for the server's.
/// Every wait for the server (the handshake, each echo, the Goodbye) is bounded by
/// `timeout`; waiting for input is not. With `passing` (`--fd`) each Data frame carries
/// those descriptors; what comes back is closed.
///
/// With `misbehave` (`--fault`) the frames go out in slices, sending ends after so many
/// bytes (closed, or half-closed: then it prints the echoes until the server closes), or
/// reading stops after so many (then `timeout` later it closes). Once the fault has taken
/// effect, the end it brings — a close, the server's, a timeout — is `Ok`: it was asked for.
#[allow(clippy::too_many_arguments)]
pub async fn framed<I, O>(
    stream: UnixStream,
    target: &Target,
    timeout: Duration,
    passing: &Passing,
    misbehave: &Misbehaviour,
    input: I,
    output: O,
) -> Result<(), ClientError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let stream = FdStream::new(stream, passing.clone(), misbehave);
    framed_session(stream, timeout, input, output)
        .await
        .map_err(|kind| kind.at(target))
}

async fn framed_session<I, O>(
    stream: FdStream,
    timeout: Duration,
    input: I,
    mut output: O,
) -> Result<(), ErrorKind>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let mut server = session::open(stream, timeout).await?;
    // Lines are read in their own task: `read_until` is not cancel-safe, a channel is.
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(64);
    let reader = tokio::spawn(async move {
        let mut input = BufReader::new(input);
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if line_tx.send(Ok(line)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = line_tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    // When each line still waiting for its echo was sent.
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut echoed = 0u64;
    let mut goodbye_sent: Option<Instant> = None;
    let result = loop {
        // The next moment the server is late: the oldest echo, or its Goodbye.
        let due = in_flight.front().copied().or(goodbye_sent);
        // A fault ended our sending (`half_close`, `limit_data`): no more lines, no Goodbye.
        let sending = server.io().sending_ended().is_none();
        let late = async {
            match due {
                Some(at) => tokio::time::sleep_until(at + timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.recv(), if goodbye_sent.is_none() && sending => match line {
                Some(Ok(line)) => {
                    server.io().start_message();
                    let sent = tokio::time::timeout(timeout, server.send(Frame::Data(line.into()))).await;
                    match sent {
                        Ok(Ok(())) => in_flight.push_back(Instant::now()),
                        // Half-closed on purpose in the middle of the frame: read on.
                        Ok(Err(_)) if server.io().sending_ended() == Some(SendEnd::HalfClose) => {}
                        Ok(Err(e)) => break Err(session::protocol(e)),
                        Err(_) => break Err(ErrorKind::timed_out("sending a line", timeout)),
                    }
                }
                Some(Err(e)) => break Err(ErrorKind::Stdin(e)),
                None => {
                    let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Done));
                    match tokio::time::timeout(timeout, server.send(bye)).await {
                        Ok(Ok(())) => goodbye_sent = Some(Instant::now()),
                        Ok(Err(e)) => break Err(session::protocol(e)),
                        Err(_) => break Err(ErrorKind::timed_out("sending Goodbye", timeout)),
                    }
                }
            },
            frame = server.next() => match frame {
                Some(Ok(Frame::Data(payload))) => {
                    if let Err(e) = server.io().take_returned().close() {
                        break Err(e);
                    }
                    in_flight.pop_front();
                    echoed += 1;
                    let written = async {
                        output.write_all(&payload).await?;
                        output.write_all(b"\n").await?;
                        output.flush().await
                    };
                    if let Err(e) = written.await {
                        break Err(ErrorKind::Stdout(e));
                    }
                }
                Some(Ok(Frame::Goodbye(_))) | None if goodbye_sent.is_some() && in_flight.is_empty() => {
                    break Ok(());
                }
                Some(Ok(Frame::Goodbye(bye))) => {
                    break Err(ErrorKind::closed_early(format!("the server said Goodbye ({:?})", bye.reason)));
                }
                None => {
                    break Err(ErrorKind::closed_early(if goodbye_sent.is_some() {
                        format!("{} lines were not echoed", in_flight.len())
                    } else {
                        "connection closed before stdin ended".to_owned()
                    }));
                }
                Some(Ok(other)) => break Err(session::unexpected(other)),
                Some(Err(e)) => break Err(session::protocol(e)),
            },
            () = late => break Err(match in_flight.len() {
                0 => ErrorKind::timed_out("waiting for the server's Goodbye", timeout),
                _ => ErrorKind::timed_out(format!("waiting for the echo of line {}", echoed + 1), timeout),
            }),
        }
    };
    reader.abort();
    match result {
        // What a fault brings (a close, the server's, a timeout) is what was asked for.
        Err(e @ (ErrorKind::Stdin(_) | ErrorKind::Stdout(_))) => Err(e),
        Err(_) if server.io().misbehaved() => Ok(()),
        result => result,
    }
}
