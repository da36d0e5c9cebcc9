//! What can go wrong for a client, each case naming the socket and what to do.

use std::io;
use std::time::Duration;

use udsecho_proto::{ErrorCode, ProtoError};

/// A client failure, shown to a person as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing exists at the path.
    #[error("{0}: no such socket (is the server running? start it with `udsecho-server -s {0}`)")]
    NoSuchSocket(String),
    /// A socket file exists but nobody listens on it.
    #[error(
        "{0}: connection refused (a stale socket file with no server behind it; start the server, it replaces the file)"
    )]
    Refused(String),
    /// The socket or its directory is not accessible to this user.
    #[error(
        "{0}: permission denied (check the socket's mode and owner, or the server's --socket-mode)"
    )]
    PermissionDenied(String),
    /// The path exists but is not a socket.
    #[error("{0}: not a socket")]
    NotASocket(String),
    /// Connecting, or waiting for an echo, took longer than `--timeout`.
    #[error("{socket}: timed out after {} while {what}", humantime::format_duration(*.after))]
    TimedOut {
        /// The socket.
        socket: String,
        /// What was being waited for.
        what: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The server closed the connection before the exchange was complete.
    #[error("{socket}: the server closed the connection early ({detail})")]
    ClosedEarly {
        /// The socket.
        socket: String,
        /// What was still expected.
        detail: String,
    },
    /// An echo differed from what was sent.
    #[error("{socket}: echo mismatch on message {index}: sent {sent:?}, received {received:?}")]
    Mismatch {
        /// The socket.
        socket: String,
        /// Which message (from 1).
        index: u64,
        /// What was sent (possibly shortened).
        sent: String,
        /// What came back (possibly shortened).
        received: String,
    },
    /// The server sent an Error frame.
    #[error("{socket}: server error {code:?}: {message}")]
    Server {
        /// The socket.
        socket: String,
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server broke the framed protocol.
    #[error("{socket}: protocol error: {source}")]
    Protocol {
        /// The socket.
        socket: String,
        /// What was wrong.
        #[source]
        source: ProtoError,
    },
    /// Any other I/O failure.
    #[error("{socket}: {what}: {source}")]
    Io {
        /// The socket, or `stdin`/`stdout`.
        socket: String,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ClientError {
    /// The process exit status for this error: 3 when echoed data differed from what was
    /// sent (the one failure that means the server is wrong), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Mismatch { .. } => 3,
            _ => 1,
        }
    }
}

/// Shortens bytes for an error message.
pub(crate) fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{text}… ({} bytes)", bytes.len())
    } else {
        text
    }
}
