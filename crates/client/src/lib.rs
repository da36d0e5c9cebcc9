//! The udsecho client as a library: connect to a [`Target`] over a [`Transport`] (a raw or
//! framed stream, or a seqpacket or datagram [`MessageSocket`]), then [`pipe`] (like
//! `nc -U`), [`send`] (the classic demo loop) or [`bench`](mod@bench); `pipe` and `send` can
//! pass descriptors with each message ([`Passing`], `--fd`). Failures are a
//! [`ClientError`]: the socket once, an [`ErrorKind`], and the cause as its `source()`;
//! [`report`] prints that chain as one line. `main.rs` runs what `cli.rs` parsed and maps
//! errors to that line and an exit code.

pub mod bench;
mod connect;
pub mod control;
mod descriptors;
mod error;
mod fd_stream;
mod message;
mod misbehave;
pub mod pipe;
pub mod send;
mod session;
mod target;
pub mod trace;

pub use crate::connect::Connection;
pub use crate::descriptors::{FdError, FdSpec, MAX_FDS, Passing};
pub use crate::error::{ClientError, ErrorKind, report};
pub use crate::message::MessageSocket;
pub use crate::misbehave::Misbehaviour;
pub use crate::target::{SocketType, Target, Transport};
