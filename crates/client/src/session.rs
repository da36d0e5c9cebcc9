//! Opening a framed session: preamble, Hello, the server's Hello.

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use udsecho_proto::{DEFAULT_MAX_FRAME, Frame, FrameCodec, Hello, PREAMBLE};

use crate::error::ClientError;

/// The agent string in our Hello.
pub(crate) const AGENT: &str = concat!("udsecho-client/", env!("CARGO_PKG_VERSION"));

/// Sends the preamble and Hello, checks the server's answer, and returns the framed
/// connection with the codec's limit set to what the server enforces.
pub(crate) async fn open(
    mut stream: UnixStream,
    socket: &str,
) -> Result<Framed<UnixStream, FrameCodec>, ClientError> {
    stream
        .write_all(&PREAMBLE)
        .await
        .map_err(|e| io(socket, "sending the preamble", e))?;
    let mut framed = Framed::new(stream, FrameCodec::new());
    framed
        .send(Frame::Hello(Hello::new(DEFAULT_MAX_FRAME, AGENT)))
        .await
        .map_err(|e| protocol(socket, e))?;
    match framed.next().await {
        Some(Ok(Frame::Hello(answer))) => {
            udsecho_proto::accept_server_version(answer.version)
                .map_err(|e| protocol(socket, e))?;
            framed
                .codec_mut()
                .set_max_frame(answer.max_frame.min(DEFAULT_MAX_FRAME));
            Ok(framed)
        }
        Some(Ok(other)) => Err(unexpected(socket, other)),
        Some(Err(e)) => Err(protocol(socket, e)),
        None => Err(ClientError::ClosedEarly {
            socket: socket.to_owned(),
            detail: "no Hello from the server; is it a udsecho server in framed or auto mode?"
                .to_owned(),
        }),
    }
}

/// The error for a frame the client did not expect (an Error frame becomes the server's
/// message).
pub(crate) fn unexpected(socket: &str, frame: Frame) -> ClientError {
    match frame {
        Frame::Error(e) => ClientError::Server {
            socket: socket.to_owned(),
            code: e.code,
            message: e.message,
        },
        other => ClientError::Protocol {
            socket: socket.to_owned(),
            source: udsecho_proto::ProtoError::UnexpectedFrame {
                kind: other.kind(),
                why: "not expected from a server here",
            },
        },
    }
}

pub(crate) fn protocol(socket: &str, e: udsecho_proto::ProtoError) -> ClientError {
    match e {
        udsecho_proto::ProtoError::Io(source) => {
            transport(socket, "talking to the server", source, || {
                ClientError::ClosedEarly {
                    socket: socket.to_owned(),
                    detail: "in the middle of the session".to_owned(),
                }
            })
        }
        source => ClientError::Protocol {
            socket: socket.to_owned(),
            source,
        },
    }
}

pub(crate) fn io(socket: &str, what: &'static str, source: std::io::Error) -> ClientError {
    ClientError::Io {
        socket: socket.to_owned(),
        what,
        source,
    }
}

/// An I/O failure on the connection to the server. A broken pipe, a reset or an early EOF all
/// mean the server closed the connection (which of them the kernel reports depends on timing),
/// so they become `gone()`; anything else is an I/O error.
pub(crate) fn transport(
    socket: &str,
    what: &'static str,
    source: std::io::Error,
    gone: impl FnOnce() -> ClientError,
) -> ClientError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    match source.kind() {
        BrokenPipe | ConnectionReset | UnexpectedEof => gone(),
        _ => io(socket, what, source),
    }
}
