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
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;
use udsecho_proto::{Frame, Goodbye, GoodbyeReason, Kind, MAX_CONTROL_FRAME};

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
/// - A server in framed-only mode answers raw bytes with one Error frame and closes: that is
///   [`ErrorKind::FramedOnlyServer`], not output. Only the server's first bytes are watched
///   for it, and only while they could be that frame and are not an echo of what was sent;
///   everything else passes through as it comes.
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
    let sent = Arc::new(Mutex::new(Vec::new()));
    let upload = thread::Builder::new()
        .name("upload".to_owned())
        .spawn({
            let sent = sent.clone();
            move || upload(input, to_server, &sent)
        })
        .map_err(|e| io("starting the upload thread", e))?;
    download(&stream, &mut output, &sent).map_err(fail)?;
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

/// stdin to the socket, then a half-close. Returns the bytes sent. The first bytes are also
/// kept in `first` (before they are sent, so an echo of them is always found there).
fn upload(
    mut input: impl Read,
    mut socket: StdUnixStream,
    first: &Mutex<Vec<u8>>,
) -> Result<u64, ErrorKind> {
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ErrorKind::Stdin(e)),
        };
        if sent < REFUSAL_MAX as u64 {
            let mut first = first.lock().unwrap_or_else(PoisonError::into_inner);
            let room = REFUSAL_MAX - first.len();
            first.extend_from_slice(&buf[..n.min(room)]);
        }
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

/// The socket to `output` until the server's EOF. The first bytes are held back while they
/// may be a framed-only server's refusal (see [`may_be_refusal`]).
fn download(
    mut socket: &StdUnixStream,
    output: &mut impl Write,
    sent: &Mutex<Vec<u8>>,
) -> Result<(), ErrorKind> {
    let mut buf = vec![0u8; CHUNK];
    // The server's first bytes, while they may still be a refusal.
    let mut first = Some(Vec::new());
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => {
                if let Some(held) = first.take() {
                    if is_refusal(&held, sent) {
                        return Err(ErrorKind::FramedOnlyServer);
                    }
                    output.write_all(&held).map_err(ErrorKind::Stdout)?;
                }
                return output.flush().map_err(ErrorKind::Stdout);
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A reset means the server closed with some of what we sent unread.
            Err(e) => {
                if let Some(held) = first.take() {
                    if is_refusal(&held, sent) {
                        return Err(ErrorKind::FramedOnlyServer);
                    }
                    output.write_all(&held).map_err(ErrorKind::Stdout)?;
                }
                return Err(session::transport("receiving", e, || {
                    ErrorKind::closed_early("it did not read all of stdin")
                }));
            }
        };
        match first.as_mut() {
            None => output.write_all(&buf[..n]).map_err(ErrorKind::Stdout)?,
            Some(held) => {
                held.extend_from_slice(&buf[..n]);
                if !may_be_refusal(held, sent) {
                    output.write_all(held).map_err(ErrorKind::Stdout)?;
                    first = None;
                }
            }
        }
    }
}

/// The longest refusal: a length and a control frame's body.
const REFUSAL_MAX: usize = 4 + MAX_CONTROL_FRAME as usize;

/// Whether `held`, the server's first bytes so far, may still turn out to be a framed-only
/// server's refusal: the start of one Error frame (a control frame, so its length is at most
/// 4096 and it opens with two zero bytes, which text never does), and not an echo of what
/// was sent.
fn may_be_refusal(held: &[u8], sent: &Mutex<Vec<u8>>) -> bool {
    let shaped = match *held {
        [] => true,
        [a] => a == 0,
        [a, b] => a == 0 && b == 0,
        [a, b, c, ..] if a != 0 || b != 0 || c > 0x10 => false,
        [_, _, _] => true,
        [a, b, c, d, ref body @ ..] => {
            let len = u32::from_be_bytes([a, b, c, d]);
            (1..=MAX_CONTROL_FRAME).contains(&len)
                && body.first().is_none_or(|&kind| kind == Kind::Error as u8)
                && body.len() <= len as usize
        }
    };
    shaped && !is_echo(held, sent)
}

/// Whether `held` is exactly one whole Error frame that is not an echo: what a framed-only
/// server sends before it closes.
fn is_refusal(held: &[u8], sent: &Mutex<Vec<u8>>) -> bool {
    match *held {
        [a, b, c, d, _, ..] => {
            held.len() == 4 + u32::from_be_bytes([a, b, c, d]) as usize
                && may_be_refusal(held, sent)
        }
        _ => false,
    }
}

/// Whether `held` is what the client sent (so far): then it is an echo, whatever it holds.
fn is_echo(held: &[u8], sent: &Mutex<Vec<u8>>) -> bool {
    let sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
    !held.is_empty() && sent.starts_with(held)
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

/// How many datagrams, and how many of their bytes, a datagram pipe lets wait for their
/// replies (at least one, whatever its size). A reply the kernel cannot queue for us is
/// lost: our receive queue holds 10 datagrams (`net.unix.max_dgram_qlen`), the server's
/// replies waiting in it count against its send buffer (208 KiB), and a server that must not
/// stall for one slow reader (udsecho-server) drops it. Staying under both, the pipe is never
/// the reason a reply is lost, however fast stdin comes.
const DATAGRAM_WINDOW: usize = 8;
const DATAGRAM_WINDOW_BYTES: usize = 64 * 1024;

/// Message pipe, seqpacket or datagram: stdin to the socket, one message per read
/// (seqpacket) or per line (datagram, lines over [`MESSAGE_CHUNK`] cut into pieces of that
/// size); each reply written to `output` as it comes.
///
/// - Seqpacket, like a raw pipe: on input EOF it shuts down its write side and prints
///   replies until the server closes; after the server's EOF it still sends the rest of
///   `input`. Only the connect is bounded by `timeout`.
/// - Datagram: at most a few datagrams await their replies at once (see
///   `DATAGRAM_WINDOW`); each send waits at most `timeout` (a server whose queue stays full
///   is not reading), and each reply is due within `timeout` of its datagram, else it is an
///   error saying how many are missing (datagrams can be dropped). It ends when input has
///   ended and every reply has come.
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
    let result = match socket.kind() {
        SocketType::Datagram => datagram_session(socket, timeout, input, output).await,
        _ => seqpacket_session(Arc::new(socket), input, output).await,
    };
    result.map_err(|kind| kind.at(target))
}

async fn seqpacket_session<I, O>(
    socket: Arc<MessageSocket>,
    input: I,
    mut output: O,
) -> Result<(), ErrorKind>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let mut upload = tokio::spawn(upload_messages(socket.clone(), input));
    let mut buf = vec![0u8; REPLY_BUFFER];
    let mut uploaded = false;
    // The server hung up on the upload: what is left of its replies is printed first.
    let mut upload_failed: Option<ErrorKind> = None;
    let result = loop {
        tokio::select! {
            done = &mut upload, if !uploaded && upload_failed.is_none() => match done {
                Ok(Ok(())) => uploaded = true,
                // The server closed; its EOF (or a reset) ends the download.
                Ok(Err(e @ ErrorKind::ClosedEarly { .. })) => upload_failed = Some(e),
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(upload_panicked(e)),
            },
            got = socket.recv(&mut buf) => match got {
                Ok(Received::Message(n)) => {
                    if let Err(e) = write_reply(&mut output, &buf[..n]).await {
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
                    if uploaded {
                        break Ok(());
                    }
                    // Like nc: the server has finished sending, but may still be reading.
                    break match (&mut upload).await {
                        Ok(result) => result,
                        Err(e) => Err(upload_panicked(e)),
                    };
                }
                Err(e) => {
                    let gone = || upload_failed.take().unwrap_or_else(|| {
                        socket.gone("it did not read all of stdin")
                    });
                    break Err(socket.failure("receiving", e, gone));
                }
            },
        }
    };
    upload.abort();
    result
}

/// stdin to a seqpacket socket, one message per read, then a half-close.
async fn upload_messages(
    socket: Arc<MessageSocket>,
    input: impl AsyncRead + Unpin,
) -> Result<(), ErrorKind> {
    let mut input = BufReader::with_capacity(MESSAGE_CHUNK, input);
    let mut sent = 0u64;
    while let Some(message) = next_message(&mut input, false)
        .await
        .map_err(ErrorKind::Stdin)?
    {
        let gone = || {
            socket.gone(match sent {
                0 => "it read nothing from stdin".to_owned(),
                1 => "it stopped reading after 1 message from stdin".to_owned(),
                n => format!("it stopped reading after {n} messages from stdin"),
            })
        };
        socket
            .send(&message)
            .await
            .map_err(|e| socket.send_failure(message.len(), e, gone))?;
        sent += 1;
    }
    socket.shutdown_write().map_err(|source| ErrorKind::Io {
        doing: "half-closing",
        source,
    })
}

async fn datagram_session<I, O>(
    socket: MessageSocket,
    timeout: Duration,
    input: I,
    mut output: O,
) -> Result<(), ErrorKind>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    // Lines are read in their own task: a read is not cancel-safe, a channel is.
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let reader = tokio::spawn(async move {
        let mut input = BufReader::with_capacity(MESSAGE_CHUNK, input);
        loop {
            let line = next_message(&mut input, true).await.transpose();
            let last = !matches!(line, Some(Ok(_)));
            if let Some(line) = line
                && line_tx.send(line).await.is_err()
            {
                break;
            }
            if last {
                break;
            }
        }
    });
    let mut buf = vec![0u8; REPLY_BUFFER];
    // Each datagram awaiting its reply: its size and when it was sent, oldest first.
    let mut waiting: VecDeque<(usize, Instant)> = VecDeque::new();
    let mut waiting_bytes = 0;
    let mut next: Option<Vec<u8>> = None;
    let mut input_done = false;
    let mut sent = 0u64;
    let result = 'session: loop {
        // Fill the window with what stdin has ready, one datagram after another.
        loop {
            if next.is_none() && !input_done {
                match lines.try_recv() {
                    Ok(Ok(datagram)) => next = Some(datagram),
                    Ok(Err(e)) => break 'session Err(ErrorKind::Stdin(e)),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => input_done = true,
                }
            }
            let Some(datagram) = next.take_if(|d| {
                waiting.is_empty()
                    || (waiting.len() < DATAGRAM_WINDOW
                        && waiting_bytes + d.len() <= DATAGRAM_WINDOW_BYTES)
            }) else {
                break;
            };
            match tokio::time::timeout(timeout, socket.send(&datagram)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    break 'session Err(socket.send_failure(datagram.len(), e, || {
                        socket.gone(match sent {
                            0 => "its socket was closed before the first datagram from stdin"
                                .to_owned(),
                            1 => "its socket was closed after 1 datagram from stdin".to_owned(),
                            n => format!("its socket was closed after {n} datagrams from stdin"),
                        })
                    }));
                }
                Err(_) => {
                    break 'session Err(ErrorKind::timed_out(
                        format!("sending datagram {} (the server is not reading)", sent + 1),
                        timeout,
                    ));
                }
            }
            sent += 1;
            waiting_bytes += datagram.len();
            waiting.push_back((datagram.len(), Instant::now()));
        }
        if input_done && next.is_none() && waiting.is_empty() {
            break Ok(());
        }
        let due = waiting.front().map(|&(_, at)| at + timeout);
        let late = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.recv(), if next.is_none() && !input_done => match line {
                Some(Ok(datagram)) => next = Some(datagram),
                Some(Err(e)) => break Err(ErrorKind::Stdin(e)),
                None => input_done = true,
            },
            got = socket.recv(&mut buf) => match got {
                Ok(Received::Message(n)) => {
                    // Replies are matched to datagrams in order: an echo server answers in
                    // order, and any reply frees a place in the window.
                    let mut free = |waiting: &mut VecDeque<(usize, Instant)>| {
                        if let Some((len, _)) = waiting.pop_front() {
                            waiting_bytes -= len;
                        }
                    };
                    free(&mut waiting);
                    // Whatever else has come is printed with it, in one write.
                    let mut replies = buf[..n].to_vec();
                    let more = loop {
                        if replies.len() >= MESSAGE_CHUNK {
                            break Ok(());
                        }
                        match socket.try_recv(&mut buf) {
                            Ok(Some(Received::Message(n))) => {
                                free(&mut waiting);
                                replies.extend_from_slice(&buf[..n]);
                            }
                            Ok(Some(Received::Truncated { len })) => {
                                break Err(ErrorKind::ReplyTooLarge { len, max: buf.len() });
                            }
                            Ok(Some(Received::Closed) | None) => break Ok(()),
                            Err(e) => {
                                break Err(socket.failure("receiving", e, || {
                                    socket.gone(format!("after {sent} datagrams from stdin"))
                                }));
                            }
                        }
                    };
                    if let Err(e) = write_reply(&mut output, &replies).await {
                        break Err(ErrorKind::Stdout(e));
                    }
                    if let Err(e) = more {
                        break Err(e);
                    }
                }
                Ok(Received::Truncated { len }) => {
                    break Err(ErrorKind::ReplyTooLarge { len, max: buf.len() });
                }
                // Never for a datagram socket (an empty datagram is a message).
                Ok(Received::Closed) => {
                    break Err(socket.gone(format!("after {sent} datagrams from stdin")));
                }
                Err(e) => {
                    break Err(socket.failure("receiving", e, || {
                        socket.gone(format!("after {sent} datagrams from stdin"))
                    }));
                }
            },
            () = late => {
                break Err(ErrorKind::timed_out(
                    format!(
                        "waiting for {} of {sent} replies (datagrams can be dropped)",
                        waiting.len()
                    ),
                    timeout,
                ));
            }
        }
    };
    reader.abort();
    result
}

/// Writes replies to `output` now: one write, then a flush.
async fn write_reply(output: &mut (impl AsyncWrite + Unpin), reply: &[u8]) -> std::io::Result<()> {
    output.write_all(reply).await?;
    output.flush().await
}

fn upload_panicked(e: tokio::task::JoinError) -> ErrorKind {
    ErrorKind::Io {
        doing: "sending",
        source: std::io::Error::other(e),
    }
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
