//! Wire format v1 of [udsecho](https://github.com/udsecho/udsecho): how to talk to a udsecho
//! server from your own tool.
//!
//! A udsecho server echoes what it receives. It speaks two modes on the same socket:
//!
//! - **raw**: every byte comes back unchanged, like `nc -U` against a `cat` — nothing to
//!   implement;
//! - **framed**: the client sends the 8-byte [`PREAMBLE`], then length-prefixed [`Frame`]s.
//!   It opens with a [`Hello`], the server answers with its own, and then every
//!   [`Frame::Data`] is echoed as a Data frame with the same payload, in order.
//!
//! This crate holds everything framed mode needs and nothing about sockets: the preamble and
//! mode [`detect`]ion, the [`Frame`] type, the control messages, version [`negotiate`]ion and
//! [`FrameCodec`], a `tokio_util::codec` codec that works over any `AsyncRead + AsyncWrite`.
//! `PROTOCOL.md` in the repository gives the bytes, with test vectors.
//!
//! # A framed client in a few lines
//!
//! Here the "server" is a tiny echo loop on the other end of an in-memory pipe; against a
//! real server, use a `tokio::net::UnixStream` instead of the duplex half.
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use tokio::io::AsyncWriteExt;
//! use tokio_util::codec::Framed;
//! use udsecho_proto::{Frame, FrameCodec, Hello, PREAMBLE};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), udsecho_proto::ProtoError> {
//! let (mut client, server) = tokio::io::duplex(64 * 1024);
//! # tokio::spawn(tiny_server(server));
//!
//! client.write_all(&PREAMBLE).await?;
//! let mut frames = Framed::new(client, FrameCodec::new());
//! frames.send(Frame::Hello(Hello::new(1 << 20, "example/1.0"))).await?;
//! let Some(Frame::Hello(answer)) = frames.next().await.transpose()? else {
//!     panic!("the server answers Hello with Hello");
//! };
//! udsecho_proto::accept_server_version(answer.version)?;
//!
//! frames.send(Frame::Data("olá mundo".into())).await?;
//! assert_eq!(frames.next().await.transpose()?, Some(Frame::Data("olá mundo".into())));
//! # Ok(())
//! # }
//! #
//! # /// The server side of the example: skip the preamble, answer Hello, echo Data.
//! # async fn tiny_server(mut io: tokio::io::DuplexStream) -> Result<(), udsecho_proto::ProtoError> {
//! #     use tokio::io::AsyncReadExt;
//! #     let mut preamble = [0; 8];
//! #     io.read_exact(&mut preamble).await?;
//! #     let mut frames = Framed::new(io, FrameCodec::new());
//! #     while let Some(frame) = frames.next().await.transpose()? {
//! #         match frame {
//! #             Frame::Hello(h) => {
//! #                 let version = udsecho_proto::negotiate(h.version)?;
//! #                 let mut answer = Hello::new(udsecho_proto::DEFAULT_MAX_FRAME, "tiny");
//! #                 answer.version = version;
//! #                 frames.send(Frame::Hello(answer)).await?
//! #             }
//! #             other => frames.send(other).await?,
//! #         }
//! #     }
//! #     Ok(())
//! # }
//! ```

mod codec;
mod detect;
mod error;
mod frame;
mod message;

pub use crate::codec::FrameCodec;
pub use crate::detect::{Detection, PREAMBLE, PREFIX_PAUSE, detect};
pub use crate::error::ProtoError;
pub use crate::frame::{Frame, HEADER_LEN, Header, Kind};
pub use crate::message::{
    DEFAULT_MAX_FRAME, ErrorCode, ErrorFrame, Goodbye, GoodbyeReason, Hello, MAX_CONTROL_FRAME,
    MIN_VERSION, VERSION, accept_server_version, negotiate,
};
