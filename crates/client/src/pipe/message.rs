//! The message pipe, seqpacket and datagram: one message per stdin read (seqpacket) or line
//! (datagram), each reply printed as it comes; datagram keeps a window of replies due. With
//! `--fd` each message carries the descriptors, and what comes back is closed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use crate::descriptors::Passing;
use crate::error::{ClientError, ErrorKind};
use crate::message::{MessageSocket, Received};
use crate::target::{SocketType, Target};

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
/// - With `passing` (`--fd`) each message carries those descriptors; what comes back with
///   the replies is closed.
pub async fn messages<I, O>(
    mut socket: MessageSocket,
    target: &Target,
    timeout: Duration,
    passing: &Passing,
    input: I,
    output: O,
) -> Result<(), ClientError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    socket.pass(passing.clone());
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
    // Whether any reply came: a server that closes on us before answering anything most
    // likely turned us away.
    let mut answered = false;
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
                    answered = true;
                    if let Err(e) = socket.take_returned().close() {
                        break Err(e);
                    }
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
                    // A reset: the server closed with messages of ours unread. Whether the
                    // upload saw it first (the server gone before our first send) or this
                    // read did is a matter of timing; with no reply at all the likely
                    // causes are the same.
                    let gone = || upload_failed.take().unwrap_or_else(|| {
                        socket.gone(if answered {
                            "it did not read all of stdin".to_owned()
                        } else {
                            format!(
                                "before answering anything, with stdin unread: {}",
                                crate::error::TURNED_AWAY
                            )
                        })
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
                0 => format!("before reading anything: {}", crate::error::TURNED_AWAY),
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
                        if let Err(e) = socket.take_returned().close() {
                            break Err(e);
                        }
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
