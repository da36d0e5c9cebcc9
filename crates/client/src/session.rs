//! Opening a framed session (preamble, Hello, the server's Hello, within `--timeout`), telling
//! a server in the wrong mode from a broken one, and turning transport failures into what a
//! person should read.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, FramedParts};
use udsecho_proto::{
    DEFAULT_MAX_FRAME, Frame, FrameCodec, Header, Hello, Kind, MAX_CONTROL_FRAME, PREAMBLE,
    ProtoError,
};

use crate::error::ErrorKind;

/// The agent string in our Hello.
pub(crate) const AGENT: &str = concat!("udsecho-client/", env!("CARGO_PKG_VERSION"));

/// A framed connection to the server, after the handshake.
///
/// The four operations the client needs, written against the `Stream` and `Sink` traits
/// that `Framed` implements. (futures-util's `SinkExt` would need its `sink` feature, which
/// nothing else in the server's build enables: the client and the server would then build
/// tokio-util, the proto crate and their dependents twice over. See the root Cargo.toml.)
///
/// Over a plain `UnixStream` (bench), or an `FdStream` whose Data frames carry descriptors
/// (`send` and the pipe).
#[derive(Debug)]
pub(crate) struct Session<S = UnixStream> {
    framed: Framed<S, FrameCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The stream under the codec.
    pub(crate) fn io(&self) -> &S {
        self.framed.get_ref()
    }

    /// The next frame from the server; `None` when it closed between frames. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Result<Frame, ProtoError>> {
        poll_fn(|cx| Pin::new(&mut self.framed).poll_next(cx)).await
    }

    /// Queues a frame (written by [`Session::flush`], or once the buffer fills).
    pub(crate) async fn feed(&mut self, frame: Frame) -> Result<(), ProtoError> {
        poll_fn(|cx| Pin::new(&mut self.framed).poll_ready(cx)).await?;
        Pin::new(&mut self.framed).start_send(frame)
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), ProtoError> {
        poll_fn(|cx| Pin::new(&mut self.framed).poll_flush(cx)).await
    }

    /// Sends one frame now.
    pub(crate) async fn send(&mut self, frame: Frame) -> Result<(), ProtoError> {
        self.feed(frame).await?;
        self.flush().await
    }
}

/// Sends the preamble and Hello, checks the server's answer, and returns the session with
/// the codec's limit set to what the server enforces. Gives up after `timeout` (a server that
/// never answers, or sends part of a Hello).
pub(crate) async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    timeout: Duration,
) -> Result<Session<S>, ErrorKind> {
    tokio::time::timeout(timeout, handshake(stream))
        .await
        .unwrap_or_else(|_| {
            Err(ErrorKind::timed_out(
                "waiting for the server's Hello",
                timeout,
            ))
        })
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
) -> Result<Session<S>, ErrorKind> {
    let gone = || ErrorKind::closed_early("before answering the Hello");
    let mut opening = BytesMut::from(&PREAMBLE[..]);
    Frame::Hello(Hello::new(DEFAULT_MAX_FRAME, AGENT))
        .encode(&mut opening, DEFAULT_MAX_FRAME)
        .map_err(ErrorKind::Protocol)?;
    stream
        .write_all(&opening)
        .await
        .map_err(|e| transport("sending the Hello", e, gone))?;

    // A server in raw mode echoes the preamble; a udsecho Hello differs from it by its
    // second byte. Read until the two can be told apart, then hand the bytes to the codec.
    let mut answer = BytesMut::with_capacity(4096);
    while answer.len() < PREAMBLE.len() && PREAMBLE.starts_with(&answer) {
        let n = stream
            .read_buf(&mut answer)
            .await
            .map_err(|e| transport("waiting for the server's Hello", e, gone))?;
        if n == 0 {
            break;
        }
    }
    if answer.starts_with(&PREAMBLE) {
        return Err(ErrorKind::RawModeServer);
    }
    if !could_be_hello(&answer) {
        return Err(ErrorKind::NotFramedServer {
            sent: escaped_start(&answer),
        });
    }
    let mut parts = FramedParts::new::<Frame>(stream, FrameCodec::new());
    parts.read_buf = answer;
    let mut session = Session {
        framed: Framed::from_parts(parts),
    };
    match session.next().await {
        Some(Ok(Frame::Hello(answer))) => {
            udsecho_proto::accept_server_version(answer.version).map_err(ErrorKind::Protocol)?;
            session
                .framed
                .codec_mut()
                .set_max_frame(answer.max_frame.min(DEFAULT_MAX_FRAME));
            Ok(session)
        }
        Some(Ok(other)) => Err(unexpected(other)),
        Some(Err(e)) => Err(protocol(e)),
        None => Err(ErrorKind::closed_early(
            "no Hello from the server; is it a udsecho server in framed or auto mode?",
        )),
    }
}

/// Whether the first bytes of an answer can start a udsecho Hello (or an Error refusing us):
/// a control frame's header, at most [`MAX_CONTROL_FRAME`] long. An HTTP server's
/// `HTTP/1.1 …` reads as a 1.2 GB frame and is not one.
fn could_be_hello(answer: &[u8]) -> bool {
    match Header::peek(answer, MAX_CONTROL_FRAME) {
        Ok(Some(header)) => matches!(header.kind, Kind::Hello | Kind::Error),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// The first bytes of `answer`, escaped for one line of text.
fn escaped_start(answer: &[u8]) -> String {
    const SHOWN: usize = 40;
    let mut text: String = answer[..answer.len().min(SHOWN)]
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if answer.len() > SHOWN {
        text.push('…');
    }
    text
}

/// Whether bytes that came back to a raw client open with a udsecho Error frame: what a
/// server in framed-only mode answers to anything but the preamble.
pub(crate) fn is_framed_refusal(bytes: &[u8]) -> bool {
    matches!(Header::peek(bytes, u32::MAX), Ok(Some(h)) if h.kind == Kind::Error)
}

/// The error for a frame the client did not expect (an Error frame becomes the server's
/// message).
pub(crate) fn unexpected(frame: Frame) -> ErrorKind {
    match frame {
        Frame::Error(e) => ErrorKind::Server {
            code: e.code,
            message: e.message,
        },
        other => ErrorKind::Protocol(ProtoError::UnexpectedFrame {
            kind: other.kind(),
            why: "not expected from a server here",
        }),
    }
}

/// A codec failure: a transport error, or the server breaking the protocol.
pub(crate) fn protocol(e: ProtoError) -> ErrorKind {
    match e {
        ProtoError::Io(source) => transport("talking to the server", source, || {
            ErrorKind::closed_early("in the middle of the session")
        }),
        source => ErrorKind::Protocol(source),
    }
}

/// An I/O failure on the connection to the server. A broken pipe, a reset or an early EOF all
/// mean the server closed the connection (which of them the kernel reports depends on timing),
/// so they become `gone()`; anything else is an I/O error.
pub(crate) fn transport(
    doing: &'static str,
    source: std::io::Error,
    gone: impl FnOnce() -> ErrorKind,
) -> ErrorKind {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    match source.kind() {
        BrokenPipe | ConnectionReset | UnexpectedEof => gone(),
        _ => ErrorKind::Io { doing, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_server_that_closed_before_the_preamble_is_closed_early_not_a_broken_pipe() {
        let (client, server) = UnixStream::pair().unwrap();
        drop(server);
        let err = open(client, LIMIT).await.unwrap_err();
        assert!(
            matches!(err, ErrorKind::ClosedEarly { .. }),
            "{}",
            crate::error::report(&err)
        );
    }

    #[tokio::test]
    async fn an_echoed_preamble_means_a_raw_server() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            // Echo one byte at a time: detection must not depend on read sizes.
            loop {
                match server.read(&mut buf[..1]).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if server.write_all(&buf[..1]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let err = open(client, LIMIT).await.unwrap_err();
        assert!(matches!(err, ErrorKind::RawModeServer), "{err}");
        echo.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out() {
        let (client, _server) = UnixStream::pair().unwrap();
        let err = open(client, Duration::from_secs(3)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 3s waiting for the server's Hello"
        );
    }

    #[test]
    fn an_error_frame_is_recognised_as_a_framed_only_refusal() {
        let mut bytes = BytesMut::new();
        Frame::Error(udsecho_proto::ErrorFrame::new(
            udsecho_proto::ErrorCode::UnexpectedFrame,
            "framed only",
        ))
        .encode(&mut bytes, DEFAULT_MAX_FRAME)
        .unwrap();
        assert!(is_framed_refusal(&bytes));
        assert!(is_framed_refusal(&bytes[..5]), "the header is enough");
        assert!(!is_framed_refusal(b"hello world"));
        assert!(!is_framed_refusal(&bytes[..4]));
    }
}
