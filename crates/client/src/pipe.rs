//! Pipe mode: stdin to the socket, the socket to stdout, like `nc -U`.
//!
//! Raw pipe is plain blocking I/O on two threads, one per direction, with large buffers: a
//! byte stream needs no runtime, and a blocking read/write pair per 256 KiB is as cheap as
//! copying gets without splicing (the async version paid a task hop and a futex wake-up per
//! 8 KiB). The directions end independently, as in `nc`: the server's EOF does not stop the
//! upload, and our EOF half-closes without stopping the download.
//!
//! Framed pipe stays async: it interleaves lines, frames and deadlines.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;
use udsecho_proto::{Frame, Goodbye, GoodbyeReason};

use crate::error::{ClientError, ErrorKind};
use crate::session;
use crate::target::Target;

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
