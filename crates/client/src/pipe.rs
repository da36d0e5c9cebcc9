//! Pipe mode: stdin to the socket, the socket to stdout, like `nc -U`.
//!
//! Raw pipe is plain blocking I/O on two threads, one per direction, with large buffers: a
//! byte stream needs no runtime, and a blocking read/write pair per 256 KiB is as cheap as
//! copying gets without splicing (the async version paid a task hop and a futex wake-up per
//! 8 KiB). The directions end independently, as in `nc`: the server's EOF does not stop the
//! upload, and our EOF half-closes without stopping the download.
//!
//! Framed pipe stays async: it interleaves lines, frames and deadlines. So does the message
//! pipe (seqpacket and datagram), where each stdin read or line is one message and each
//! reply is printed as it comes; for datagram it also counts the replies still due.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;
use udsecho_proto::{Frame, Goodbye, GoodbyeReason};

use crate::error::{ClientError, ErrorKind};
use crate::message::{MessageSocket, Received};
use crate::session;
use crate::target::{SocketType, Target};

/// Bytes moved per read/write in raw pipe mode.
const CHUNK: usize = 256 * 1024;

/// Copies `input` to the socket and the socket to `output`, both at once and binary-safe,
/// on blocking threads.
///
/// - On `input` EOF it half-closes and keeps copying the socket to `output`.
/// - On the server's EOF it keeps sending the rest of `input` until `input` ends, then
///   returns `Ok`: nothing piped in is dropped.
/// - If the server closes without reading everything sent (a reset, or a broken pipe), that
///   is an error that says so.
/// - A failing `output` ends the pipe at once with [`ErrorKind::Stdout`] (for a reader that
///   went away, [`ClientError::is_closed_stdout`]).
pub fn raw<I, O>(
    stream: StdUnixStream,
    target: &Target,
    input: I,
    mut output: O,
) -> Result<(), ClientError>
where
    I: Read + Send + 'static,
    O: Write,
{
    let fail = |kind: ErrorKind| kind.at(target);
    let io = |doing, source| fail(ErrorKind::Io { doing, source });
    stream
        .set_nonblocking(false)
        .map_err(|e| io("setting up the socket", e))?;
    let to_server = stream
        .try_clone()
        .map_err(|e| io("setting up the socket", e))?;
    let upload = thread::Builder::new()
        .name("upload".to_owned())
        .spawn(move || upload(input, to_server))
        .map_err(|e| io("starting the upload thread", e))?;
    download(&stream, &mut output).map_err(fail)?;
    // The server has finished sending. Like nc, keep sending until stdin ends: the server
    // may still be reading (a half-close, as `nc -N -lU` does).
    match upload.join() {
        Ok(result) => result.map(drop).map_err(fail),
        Err(_) => Err(io(
            "sending",
            std::io::Error::other("the upload thread panicked"),
        )),
    }
}

/// stdin to the socket, then a half-close. Returns the bytes sent.
fn upload(mut input: impl Read, mut socket: StdUnixStream) -> Result<u64, ErrorKind> {
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ErrorKind::Stdin(e)),
        };
        socket.write_all(&buf[..n]).map_err(|e| {
            session::transport("sending", e, || {
                ErrorKind::closed_early(if sent == 0 {
                    "it read nothing from stdin".to_owned()
                } else {
                    format!("it stopped reading after {sent} bytes of stdin")
                })
            })
        })?;
        sent += n as u64;
    }
    match socket.shutdown(Shutdown::Write) {
        // Already gone: everything was written, the server has it or chose not to read it;
        // its close is reported by the download side if it lost anything.
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(sent),
        Err(e) => Err(ErrorKind::Io {
            doing: "half-closing",
            source: e,
        }),
        Ok(()) => Ok(sent),
    }
}

/// The socket to `output` until the server's EOF.
fn download(mut socket: &StdUnixStream, output: &mut impl Write) -> Result<(), ErrorKind> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => return output.flush().map_err(ErrorKind::Stdout),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A reset means the server closed with some of what we sent unread.
            Err(e) => {
                return Err(session::transport("receiving", e, || {
                    ErrorKind::closed_early("it did not read all of stdin")
                }));
            }
        };
        output.write_all(&buf[..n]).map_err(ErrorKind::Stdout)?;
    }
}

/// Framed pipe: each input line (without its newline) becomes a Data frame; each echoed
/// payload is written as a line. On input EOF it sends Goodbye and waits for the server's.
/// Every wait for the server (the handshake, each echo, the Goodbye) is bounded by
/// `timeout`; waiting for input is not.
pub async fn framed<I, O>(
    stream: UnixStream,
    target: &Target,
    timeout: Duration,
    input: I,
    output: O,
) -> Result<(), ClientError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    framed_session(stream, timeout, input, output)
        .await
        .map_err(|kind| kind.at(target))
}

async fn framed_session<I, O>(
    stream: UnixStream,
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
        let late = async {
            match due {
                Some(at) => tokio::time::sleep_until(at + timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.recv(), if goodbye_sent.is_none() => match line {
                Some(Ok(line)) => {
                    let sent = tokio::time::timeout(timeout, server.send(Frame::Data(line.into()))).await;
                    match sent {
                        Ok(Ok(())) => in_flight.push_back(Instant::now()),
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
    result
}

/// The most stdin a message pipe puts in one message: one read for seqpacket, and for
/// datagram a line, or this much of a longer one. Well under the kernel's limit for one
/// message (the socket's send buffer, 208 KiB by default), and what a server reading 64 KiB
/// at a time takes whole.
pub const MESSAGE_CHUNK: usize = 64 * 1024;

/// The largest reply a message pipe prints (a larger one is an error: the kernel keeps only
/// what fits). Replies to our own messages are at most [`MESSAGE_CHUNK`].
const REPLY_BUFFER: usize = 256 * 1024;

/// Message pipe, seqpacket or datagram: stdin to the socket, one message per read
/// (seqpacket) or per line (datagram, lines over [`MESSAGE_CHUNK`] cut into pieces of that
/// size); each reply written to `output` as it comes.
///
/// - Seqpacket, like a raw pipe: on input EOF it shuts down its write side and prints
///   replies until the server closes; after the server's EOF it still sends the rest of
///   `input`. Only the connect is bounded by `timeout`.
/// - Datagram: each send waits at most `timeout` (a server whose queue stays full is not
///   reading); after input EOF the replies still due get `timeout` to arrive, then it is an
///   error saying how many never came (datagrams can be dropped).
pub async fn messages<I, O>(
    socket: MessageSocket,
    target: &Target,
    timeout: Duration,
    input: I,
    output: O,
) -> Result<(), ClientError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    message_session(Arc::new(socket), timeout, input, output)
        .await
        .map_err(|kind| kind.at(target))
}

async fn message_session<I, O>(
    socket: Arc<MessageSocket>,
    timeout: Duration,
    input: I,
    mut output: O,
) -> Result<(), ErrorKind>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let datagram = socket.kind() == SocketType::Datagram;
    let mut upload = tokio::spawn(upload_messages(socket.clone(), input, timeout));
    let mut buf = vec![0u8; REPLY_BUFFER];
    let mut replies = 0u64;
    // Once stdin has ended: how many messages went out, and when the last did.
    let mut uploaded: Option<(u64, Instant)> = None;
    // The server hung up on the upload: what is left of its replies is printed first.
    let mut upload_failed: Option<ErrorKind> = None;
    let result = loop {
        if let (true, Some((sent, _))) = (datagram, uploaded)
            && replies >= sent
        {
            break Ok(());
        }
        let due = uploaded.filter(|_| datagram).map(|(_, at)| at + timeout);
        let late = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = &mut upload, if uploaded.is_none() && upload_failed.is_none() => match done {
                Ok(Ok(sent)) => uploaded = Some((sent, Instant::now())),
                // Seqpacket: the server closed; its EOF (or reset) ends the download.
                Ok(Err(e @ ErrorKind::ClosedEarly { .. })) => upload_failed = Some(e),
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(ErrorKind::Io {
                    doing: "sending",
                    source: std::io::Error::other(e),
                }),
            },
            got = socket.recv(&mut buf) => match got {
                Ok(Received::Message(n)) => {
                    replies += 1;
                    let written = async {
                        output.write_all(&buf[..n]).await?;
                        output.flush().await
                    };
                    if let Err(e) = written.await {
                        break Err(ErrorKind::Stdout(e));
                    }
                }
                Ok(Received::Truncated { len }) => {
                    break Err(ErrorKind::ReplyTooLarge { len, max: buf.len() });
                }
                Ok(Received::Closed) => {
                    if let Some(e) = upload_failed.take() {
                        break Err(e);
                    }
                    // Like nc: the server has finished sending, but may still be reading.
                    break match uploaded {
                        Some(_) => Ok(()),
                        None => match (&mut upload).await {
                            Ok(result) => result.map(drop),
                            Err(e) => Err(ErrorKind::Io {
                                doing: "sending",
                                source: std::io::Error::other(e),
                            }),
                        },
                    };
                }
                Err(e) => {
                    let gone = || upload_failed.take().unwrap_or_else(|| {
                        socket.gone("it did not read all of stdin")
                    });
                    break Err(socket.failure("receiving", e, gone));
                }
            },
            () = late => {
                let sent = uploaded.map_or(0, |(sent, _)| sent);
                break Err(ErrorKind::timed_out(
                    format!(
                        "waiting for {} of {sent} replies (datagrams can be dropped)",
                        sent - replies
                    ),
                    timeout,
                ));
            }
        }
    };
    upload.abort();
    result
}

/// stdin to the socket, one message at a time, then (seqpacket) a half-close. Returns how
/// many messages were sent.
async fn upload_messages(
    socket: Arc<MessageSocket>,
    input: impl AsyncRead + Unpin,
    timeout: Duration,
) -> Result<u64, ErrorKind> {
    let datagram = socket.kind() == SocketType::Datagram;
    let mut input = BufReader::with_capacity(MESSAGE_CHUNK, input);
    let mut sent = 0u64;
    while let Some(message) = next_message(&mut input, datagram)
        .await
        .map_err(ErrorKind::Stdin)?
    {
        let gone = || {
            let plural = if sent == 1 { "" } else { "s" };
            socket.gone(match (datagram, sent) {
                (true, 0) => {
                    "its socket was closed before the first datagram from stdin".to_owned()
                }
                (true, _) => {
                    format!("its socket was closed after {sent} datagram{plural} from stdin")
                }
                (false, 0) => "it read nothing from stdin".to_owned(),
                (false, _) => format!("it stopped reading after {sent} message{plural} from stdin"),
            })
        };
        let sending = socket.send(&message);
        let result = if datagram {
            // A datagram server whose queue stays full is not reading: no point waiting on.
            match tokio::time::timeout(timeout, sending).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(ErrorKind::timed_out(
                        format!("sending datagram {} (the server is not reading)", sent + 1),
                        timeout,
                    ));
                }
            }
        } else {
            sending.await
        };
        result.map_err(|e| socket.send_failure(message.len(), e, gone))?;
        sent += 1;
    }
    socket.shutdown_write().map_err(|source| ErrorKind::Io {
        doing: "half-closing",
        source,
    })?;
    Ok(sent)
}

/// The next message from `input`: what one read brings, or (`lines`) a line with its
/// newline, or the first [`MESSAGE_CHUNK`] bytes of a longer one; `None` at EOF.
async fn next_message(
    input: &mut (impl AsyncBufRead + Unpin),
    lines: bool,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok((!message.is_empty()).then_some(message));
        }
        let room = MESSAGE_CHUNK - message.len();
        let take = &available[..available.len().min(room)];
        let (take, end) = match take.iter().position(|&b| b == b'\n') {
            Some(at) if lines => (&take[..=at], true),
            _ => (take, !lines || take.len() == room),
        };
        message.extend_from_slice(take);
        let used = take.len();
        input.consume(used);
        if end {
            return Ok(Some(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn messages_of(input: &[u8], lines: bool, read_size: usize) -> Vec<Vec<u8>> {
        // A reader that gives at most `read_size` bytes per read.
        let (rx, mut tx) = tokio::io::simplex(read_size);
        let data = input.to_vec();
        let writer = tokio::spawn(async move {
            tx.write_all(&data).await?;
            // Dropping one half of a simplex does not end it; shutting down does.
            tx.shutdown().await
        });
        let mut reader = BufReader::with_capacity(MESSAGE_CHUNK, rx);
        let mut out = Vec::new();
        while let Some(message) = next_message(&mut reader, lines).await.unwrap() {
            out.push(message);
        }
        writer.await.unwrap().unwrap();
        out
    }

    #[tokio::test]
    async fn lines_are_datagrams_however_stdin_is_read() {
        let input = b"one\ntwo\n\nno newline";
        for read_size in [1, 3, 1024] {
            assert_eq!(
                messages_of(input, true, read_size).await,
                [&b"one\n"[..], b"two\n", b"\n", b"no newline"],
                "reads of {read_size}"
            );
        }
    }

    #[tokio::test]
    async fn a_line_over_the_chunk_is_cut_into_chunks() {
        let mut input = vec![b'x'; MESSAGE_CHUNK * 2 + 10];
        input.push(b'\n');
        let sizes: Vec<usize> = messages_of(&input, true, 4096)
            .await
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [MESSAGE_CHUNK, MESSAGE_CHUNK, 11]);
    }

    #[tokio::test]
    async fn without_lines_each_read_is_one_message() {
        let input = b"ab\ncd\nef";
        let messages = messages_of(input, false, 3).await;
        assert_eq!(messages.concat(), input);
        assert!(messages.iter().all(|m| m.len() <= 3), "{messages:?}");
    }
}
