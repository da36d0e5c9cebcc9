//! The udsecho client as a library: connect to a [`Target`], then [`pipe`] (like `nc -U`),
//! [`send`] (the classic demo loop) or [`bench`]. `main.rs` parses flags and maps
//! [`ClientError`] to one line and an exit code.

pub mod bench;
mod error;
pub mod pipe;
pub mod send;
mod session;
mod target;

pub use crate::error::ClientError;
pub use crate::target::Target;
