//! A minimal framed echo server on the codec:
//! `cargo run -p udsecho-proto --example framed_server -- SOCKET [CONNECTIONS]`
//!
//! Serves framed connections only (no raw mode, no socket-file care, no graceful shutdown: see
//! `udsecho-server` for those), one task per connection. With CONNECTIONS, it stops accepting
//! after that many and exits once they are served. `udsecho-conformance server --cmd
//! 'framed_server {sock}'` passes every case, with UNIMPLEMENTED for raw mode and shutdown.

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_util::codec::{Decoder, Encoder, Framed};
use udsecho_proto::{
    DEFAULT_MAX_FRAME, ErrorCode, ErrorFrame, Frame, FrameCodec, Goodbye, GoodbyeReason, Header,
    Hello, Kind, MAX_CONTROL_FRAME, PREAMBLE, ProtoError,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: framed_server SOCKET [CONNECTIONS]")?;
    let limit: Option<usize> = args.next().map(|n| n.parse()).transpose()?;

    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    println!("listening on {socket}");
    let mut tasks = tokio::task::JoinSet::new();
    let mut served = 0;
    while limit.is_none_or(|limit| served < limit) {
        let (stream, _) = listener.accept().await?;
        served += 1;
        tasks.spawn(async move {
            if let Err(e) = serve(stream).await {
                eprintln!("connection ended: {e}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    std::fs::remove_file(&socket)?;
    Ok(())
}

/// What the session reads: a frame, or the client announcing it is leaving (an Error frame,
/// whose payload is not even read).
enum Event {
    Frame(Frame),
    ClientLeaving,
}

/// The codec, plus the rules that need the session's state, judged from the header before
/// any payload is buffered: a frame's place (PROTOCOL.md §4.3), the Data limit agreed in the
/// Hello exchange and the 4096-byte control limit (§4.2).
struct Session {
    codec: FrameCodec,
    /// The largest Data body accepted: our `max_frame` until the Hello, then the smaller of
    /// both sides'.
    limit: u32,
    greeted: bool,
}

impl Decoder for Session {
    type Item = Event;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ProtoError> {
        let Some(header) = Header::peek(src, self.limit.max(MAX_CONTROL_FRAME))? else {
            return Ok(None);
        };
        let unexpected = |why| ProtoError::UnexpectedFrame {
            kind: header.kind,
            why,
        };
        match (header.kind, self.greeted) {
            (Kind::Error, _) => return Ok(Some(Event::ClientLeaving)),
            (Kind::Data, _) if header.len > self.limit => {
                return Err(ProtoError::FrameTooLarge {
                    len: header.len,
                    max: self.limit,
                });
            }
            (Kind::Data, false) => return Err(unexpected("Data before Hello")),
            (Kind::Goodbye, false) => return Err(unexpected("Goodbye before Hello")),
            (Kind::Hello, true) => return Err(unexpected("a second Hello")),
            _ => {}
        }
        self.codec.set_max_frame(self.limit.max(MAX_CONTROL_FRAME));
        Ok(self.codec.decode(src)?.map(Event::Frame))
    }
}

impl Encoder<Frame> for Session {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        frame.encode(dst, u32::MAX)
    }
}

async fn serve(mut stream: tokio::net::UnixStream) -> Result<(), ProtoError> {
    let mut preamble = [0u8; 8];
    stream.read_exact(&mut preamble).await?;
    if preamble != PREAMBLE {
        return Ok(());
    }
    let session = Session {
        codec: FrameCodec::new(),
        limit: DEFAULT_MAX_FRAME,
        greeted: false,
    };
    let mut frames = Framed::new(stream, session);
    while let Some(event) = frames.next().await {
        let frame = match event {
            Ok(Event::Frame(frame)) => frame,
            Ok(Event::ClientLeaving) => return Ok(()),
            Err(e) => return refuse(&mut frames, e).await,
        };
        match frame {
            Frame::Hello(hello) => {
                let version = match udsecho_proto::negotiate(hello.version) {
                    Ok(version) => version,
                    Err(e) => return refuse(&mut frames, e).await,
                };
                if hello.max_frame == 0 {
                    let e = ErrorFrame::new(ErrorCode::Malformed, "Hello.max_frame is 0");
                    return frames.send(Frame::Error(e)).await;
                }
                let session = frames.codec_mut();
                session.limit = session.limit.min(hello.max_frame);
                session.greeted = true;
                let mut answer = Hello::new(session.limit, "framed_server example");
                answer.version = version;
                frames.send(Frame::Hello(answer)).await?;
            }
            Frame::Data(payload) => frames.send(Frame::Data(payload)).await?,
            Frame::Goodbye(_) => {
                let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Done));
                return frames.send(bye).await;
            }
            Frame::Error(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Tells the peer why with an Error frame (for a protocol violation), then closes.
async fn refuse(
    frames: &mut Framed<tokio::net::UnixStream, Session>,
    e: ProtoError,
) -> Result<(), ProtoError> {
    if let Some(code) = e.code() {
        frames
            .send(Frame::Error(ErrorFrame::new(code, e.to_string())))
            .await?;
    }
    Err(e)
}
