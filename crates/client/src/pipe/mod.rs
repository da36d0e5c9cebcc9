//! Pipe mode: stdin to the socket, the socket to stdout, like `nc -U`. One file per transport:
//!
//! - [`raw()`] (`raw.rs`): plain blocking I/O on two threads, one per direction, with large
//!   buffers: a byte stream needs no runtime, and a blocking read/write pair per 256 KiB is as
//!   cheap as copying gets without splicing (the async version paid a task hop and a futex
//!   wake-up per 8 KiB). The directions end independently, as in `nc`: the server's EOF does
//!   not stop the upload, and our EOF half-closes without stopping the download.
//! - [`framed()`] (`framed.rs`) stays async: it interleaves lines, frames and deadlines.
//! - [`messages`] (`message.rs`, seqpacket and datagram) is async too: each stdin read or
//!   line is one message and each reply is printed as it comes; for datagram it also counts
//!   the replies still due.

mod framed;
mod message;
mod raw;

pub use self::framed::framed;
pub use self::message::{MESSAGE_CHUNK, messages};
pub use self::raw::raw;
