//! The Unix plumbing that udsecho's binaries share, once: the server, the client, the
//! conformance runner and the test harness each used to carry a copy of these, and the copies
//! drifted.
//!
//! - [`passing`]: descriptors passed with bytes (`SCM_RIGHTS`): `sendmsg` with them, `recvmsg`
//!   with room for exactly as many as the caller can take, and what the kernel said about it;
//! - [`credentials`]: who is at the other end (`SO_PEERCRED`, `SCM_CREDENTIALS`), with a pid
//!   that may be unknown (a peer in another pid namespace);
//! - [`same_file`]: whether two descriptors are the same open file description;
//! - [`socket`]: the socket types ([`SocketType`]), opening and listening;
//! - [`socket_dir`]: the default socket's directory, and when it is private enough;
//! - [`fd_limit`]: raising the descriptor limit;
//! - [`registration`]: handing a descriptor to tokio's reactor;
//! - [`threads`]: how many threads to run by default;
//! - [`generate`]: man pages and shell completions from a clap command.
//!
//! What each binary does with these (a process-wide tally of held descriptors, a check of
//! what comes back, an error message) stays in the binary. The crate knows no protocol:
//! that is `udsecho-proto`, which in turn knows no sockets.

#![warn(missing_docs)]

pub mod credentials;
pub mod fd_limit;
pub mod generate;
pub mod passing;
pub mod registration;
pub mod same_file;
pub mod socket;
pub mod socket_dir;
pub mod threads;

pub use crate::socket::{MAX_SOCKET_PATH, SocketType};
