//! Pipe mode: stdin to the socket, the socket to stdout, like `nc -U`.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use udsecho_proto::{Frame, Goodbye, GoodbyeReason};

use crate::error::ClientError;
use crate::session::{self, io};

/// Copies `input` to the socket and the socket to `output`, both at once and binary-safe.
/// On input EOF it half-closes and keeps copying until the server closes, then returns.
pub async fn raw<I, O>(
    stream: UnixStream,
    socket: &str,
    input: I,
    output: O,
) -> Result<(), ClientError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let (mut from_server, mut to_server) = stream.into_split();
    let socket_name = socket.to_owned();
    let upload = tokio::spawn(async move {
        let mut input = input;
        tokio::io::copy(&mut input, &mut to_server)
            .await
            .map_err(|e| {
                session::transport(&socket_name, "sending", e, || ClientError::ClosedEarly {
                    socket: socket_name.clone(),
                    detail: "not all of stdin was sent".to_owned(),
                })
            })?;
        to_server
            .shutdown()
            .await
            .map_err(|e| io(&socket_name, "half-closing", e))
    });
    let mut output = output;
    let download = tokio::io::copy(&mut from_server, &mut output).await;
    let flushed = output.flush().await;
    download.map_err(|e| {
        session::transport(socket, "receiving", e, || ClientError::ClosedEarly {
            socket: socket.to_owned(),
            detail: "the connection was reset while receiving the echo".to_owned(),
        })
    })?;
    flushed.map_err(|e| io("stdout", "writing", e))?;
    // The server closed its side. If stdin had not ended yet, stop reading it: like `nc`,
    // the session is over when the server says so.
    if upload.is_finished() {
        match upload.await {
            Ok(result) => result?,
            Err(e) => return Err(io(socket, "sending", std::io::Error::other(e))),
        }
    } else {
        upload.abort();
    }
    Ok(())
}

/// Framed pipe: each input line (without its newline) becomes a Data frame; each echoed
/// payload is written as a line. On input EOF it sends Goodbye and waits for the server's.
pub async fn framed<I, O>(
    stream: UnixStream,
    socket: &str,
    input: I,
    output: O,
) -> Result<(), ClientError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let framed = session::open(stream, socket).await?;
    let (mut sink, mut frames) = framed.split();
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
    let mut output = output;
    let mut input_open = true;
    let result = loop {
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(Ok(line)) => {
                    if let Err(e) = sink.send(Frame::Data(line.into())).await {
                        break Err(session::protocol(socket, e));
                    }
                }
                Some(Err(e)) => break Err(io("stdin", "reading", e)),
                None => {
                    input_open = false;
                    if let Err(e) = sink.send(Frame::Goodbye(Goodbye::new(GoodbyeReason::Done))).await {
                        break Err(session::protocol(socket, e));
                    }
                }
            },
            frame = frames.next() => match frame {
                Some(Ok(Frame::Data(payload))) => {
                    let written = async {
                        output.write_all(&payload).await?;
                        output.write_all(b"\n").await?;
                        output.flush().await
                    };
                    if let Err(e) = written.await {
                        break Err(io("stdout", "writing", e));
                    }
                }
                Some(Ok(Frame::Goodbye(_))) | None if !input_open => break Ok(()),
                Some(Ok(Frame::Goodbye(bye))) => {
                    break Err(ClientError::ClosedEarly {
                        socket: socket.to_owned(),
                        detail: format!("the server said Goodbye ({:?})", bye.reason),
                    });
                }
                None => {
                    break Err(ClientError::ClosedEarly {
                        socket: socket.to_owned(),
                        detail: "connection closed before stdin ended".to_owned(),
                    });
                }
                Some(Ok(other)) => break Err(session::unexpected(socket, other)),
                Some(Err(e)) => break Err(session::protocol(socket, e)),
            }
        }
    };
    reader.abort();
    result
}
