//! A minimal framed echo server on the codec:
//! `cargo run -p udsecho-proto --example framed_server -- SOCKET [CONNECTIONS]`
//!
//! Serves framed connections only (no raw mode, no socket-file care: see `udsecho-server` for
//! that). With CONNECTIONS, it exits after serving that many.

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_util::codec::Framed;
use udsecho_proto::{
    DEFAULT_MAX_FRAME, ErrorFrame, Frame, FrameCodec, Goodbye, GoodbyeReason, Hello, PREAMBLE,
    ProtoError,
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
    let mut served = 0;
    while limit.is_none_or(|limit| served < limit) {
        let (stream, _) = listener.accept().await?;
        served += 1;
        // One connection at a time keeps the example short; spawn a task per connection for more.
        if let Err(e) = serve(stream).await {
            eprintln!("connection ended: {e}");
        }
    }
    std::fs::remove_file(&socket)?;
    Ok(())
}

async fn serve(mut stream: tokio::net::UnixStream) -> Result<(), ProtoError> {
    let mut preamble = [0u8; 8];
    stream.read_exact(&mut preamble).await?;
    let mut frames = Framed::new(stream, FrameCodec::new());
    if preamble != PREAMBLE {
        return Ok(());
    }
    let mut greeted = false;
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // Tell the peer why, then close.
                if let Some(code) = e.code() {
                    frames
                        .send(Frame::Error(ErrorFrame::new(code, e.to_string())))
                        .await?;
                }
                return Err(e);
            }
        };
        match frame {
            Frame::Hello(hello) if !greeted => {
                let mut answer = Hello::new(DEFAULT_MAX_FRAME, "framed_server example");
                answer.version = udsecho_proto::negotiate(hello.version)?;
                frames.send(Frame::Hello(answer)).await?;
                greeted = true;
            }
            Frame::Data(payload) if greeted => frames.send(Frame::Data(payload)).await?,
            Frame::Goodbye(_) if greeted => {
                frames
                    .send(Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
                    .await?;
                return Ok(());
            }
            other => {
                let e = ProtoError::UnexpectedFrame {
                    kind: other.kind(),
                    why: "out of order",
                };
                frames
                    .send(Frame::Error(ErrorFrame::new(
                        udsecho_proto::ErrorCode::UnexpectedFrame,
                        e.to_string(),
                    )))
                    .await?;
                return Err(e);
            }
        }
    }
    Ok(())
}
