//! A minimal framed client: `cargo run -p udsecho-proto --example framed_client -- SOCKET MSG...`
//!
//! Connects to a udsecho server (or `framed_server`), opens a framed session, sends each
//! message as a Data frame and prints each echo, then says Goodbye.

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;
use udsecho_proto::{Frame, FrameCodec, Goodbye, GoodbyeReason, Hello, PREAMBLE};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: framed_client SOCKET MESSAGE...")?;
    let messages: Vec<String> = args.collect();

    let mut stream = tokio::net::UnixStream::connect(&socket).await?;
    stream.write_all(&PREAMBLE).await?;
    let mut frames = Framed::new(stream, FrameCodec::new());

    frames
        .send(Frame::Hello(Hello::new(1 << 20, "framed_client example")))
        .await?;
    let server = match frames.next().await.transpose()? {
        Some(Frame::Hello(hello)) => hello,
        Some(Frame::Error(e)) => {
            return Err(format!("server error {:?}: {}", e.code, e.message).into());
        }
        other => return Err(format!("expected Hello, got {other:?}").into()),
    };
    udsecho_proto::accept_server_version(server.version)?;
    println!(
        "connected to {} (v{}, max frame {})",
        server.agent, server.version, server.max_frame
    );

    // Pipelined: every message goes out in one write, then the echoes are read in order.
    for message in &messages {
        frames.feed(Frame::Data(message.clone().into())).await?;
    }
    frames.flush().await?;
    for _ in &messages {
        match frames.next().await.transpose()? {
            Some(Frame::Data(echo)) => println!("echo: {}", String::from_utf8_lossy(&echo)),
            other => return Err(format!("expected Data, got {other:?}").into()),
        }
    }

    frames
        .send(Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
        .await?;
    while let Some(frame) = frames.next().await.transpose()? {
        if let Frame::Goodbye(_) = frame {
            break;
        }
    }
    Ok(())
}
