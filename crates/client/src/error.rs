//! What can go wrong for a client. A [`ClientError`] names the socket once and says what went
//! wrong with it (an [`ErrorKind`]); an underlying OS or protocol error is its `source()`, not
//! part of its text, so that `main` prints the whole chain once, ripgrep-style:
//!
//! ```text
//! udsecho-client: /tmp/echo.sock: connecting: Not a directory (os error 20)
//! ^ main          ^ ClientError: target, kind                ^ source
//! ```

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use udsecho_proto::{ErrorCode, ProtoError};

use crate::target::{SocketType, Target};

/// A client failure: the socket it concerns and what went wrong.
#[derive(Debug)]
pub struct ClientError {
    target: Target,
    kind: ErrorKind,
}

/// What went wrong. Text without the socket (the [`ClientError`] adds it) and without the
/// cause (that is the `source()`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing exists at the path.
    #[error("no such socket")]
    NoSuchSocket,
    /// The directory the socket would be in does not exist.
    #[error("no such directory {}", .0.display())]
    NoSuchDirectory(PathBuf),
    /// The path does not fit in `sun_path`.
    #[error("socket path is {len} bytes, the limit is {max}")]
    PathTooLong {
        /// The path's length in bytes.
        len: usize,
        /// The longest path a Unix socket address holds.
        max: usize,
    },
    /// The default socket's directory is not private to this user (a link, another owner,
    /// group or other access): whoever made it could be listening there.
    #[error(
        "{}: {why}; the default socket must live in a directory only you can use",
        .dir.display()
    )]
    UnsafeDirectory {
        /// The default socket's directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A socket file exists but nobody listens on it.
    #[error(
        "connection refused (a stale socket file with no server behind it; start the server, it replaces the file)"
    )]
    Stale,
    /// Nobody listens on an abstract name (there is no file to be stale).
    #[error("connection refused (no server is listening on this abstract name)")]
    NotListening,
    /// The socket or its directory is not accessible to this user.
    #[error("permission denied (check the socket's mode and owner, or the server's --socket-mode)")]
    PermissionDenied,
    /// The path exists but is not a socket.
    #[error("not a socket")]
    NotASocket,
    /// The server's socket is of another type than ours (`EPROTOTYPE`).
    #[error("not a {ours} socket: {}", match .theirs {
        Some(theirs) => format!("the server there is a {theirs} socket (try --type {theirs})"),
        None => "the server there uses another socket type (try --type stream, seqpacket or datagram)".to_owned(),
    })]
    WrongType {
        /// The type we connected with.
        ours: SocketType,
        /// The server's, when probing found it.
        theirs: Option<SocketType>,
    },
    /// A wait took longer than `--timeout`.
    #[error("timed out after {} {waiting}", humantime::format_duration(*.after))]
    TimedOut {
        /// What was being waited for, e.g. `waiting for the echo of message 3`.
        waiting: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The server closed the connection before the exchange was complete.
    #[error("the server closed the connection early ({detail})")]
    ClosedEarly {
        /// What was still expected.
        detail: String,
    },
    /// The datagram server's socket closed while we were sending to it.
    #[error("the server went away ({detail})")]
    Gone {
        /// Where the exchange was.
        detail: String,
    },
    /// A message over what the kernel sends as one seqpacket message or datagram.
    #[error("a message of {len} bytes is more than a {kind} socket can send here{}", match .max {
        Some(max) => format!(" (at most {max} bytes)"),
        None => String::new(),
    })]
    MessageTooLarge {
        /// Seqpacket or datagram.
        kind: SocketType,
        /// The message's length.
        len: usize,
        /// The limit, when the socket could tell it.
        max: Option<usize>,
    },
    /// A reply larger than the buffer it was read into (the rest of it is lost).
    #[error("a reply of {len} bytes is more than the {max} bytes the client reads at once")]
    ReplyTooLarge {
        /// The reply's length.
        len: usize,
        /// The buffer's size.
        max: usize,
    },
    /// `--framed` against a server that echoes raw bytes: our preamble came back.
    #[error("the server echoed the preamble: it is in raw mode; drop --framed")]
    RawModeServer,
    /// `--framed` against something that answered neither a Hello nor an Error (an HTTP
    /// server, a line protocol): what it sent, escaped and shortened.
    #[error("not a udsecho framed server: it answered \"{sent}\"")]
    NotFramedServer {
        /// Its first bytes.
        sent: String,
    },
    /// Raw bytes against a server in framed-only mode: an Error frame came back.
    #[error("the server speaks framed mode only; add --framed")]
    FramedOnlyServer,
    /// Raw input that began with the framed preamble: a server in auto mode read a framed
    /// session, and refused what followed with an Error frame. Not a framed-only server.
    #[error(
        "stdin began with the framed preamble (\\0UDSECHO), so the server took it for a framed \
         session and refused the rest with an Error frame; to have these bytes echoed as they \
         are, run the server with --mode raw (or speak frames with --framed)"
    )]
    PreambleInInput,
    /// An echo differed from what was sent.
    #[error(
        "echo mismatch on message {index} at offset {offset}: sent {sent}, received {received}"
    )]
    Mismatch {
        /// Which message (from 1).
        index: u64,
        /// The first byte that differs (or where the shorter one ends), from 0.
        offset: usize,
        /// What was sent, as [`shown`] shows it: text quoted and escaped, or hex.
        sent: String,
        /// What came back, the same way.
        received: String,
    },
    /// Bytes came back that no message asked for: more than was sent.
    #[error("the server sent back more than was sent: {received} after {after} whole echoes")]
    Unasked {
        /// Echoes received whole before them.
        after: u64,
        /// What came, as [`shown`] shows it.
        received: String,
    },
    /// The descriptors that came back (`--fd`) are not those sent: fewer, more, or other
    /// open files.
    #[error("descriptor mismatch on message {index}: {detail}")]
    DescriptorMismatch {
        /// Which message (from 1).
        index: u64,
        /// Which descriptor, and what happened to it.
        detail: String,
    },
    /// The kernel closed descriptors the server sent back because the client could not take
    /// them (`MSG_CTRUNC`): its own descriptor limit.
    #[error(
        "the client's descriptor limit was reached: the kernel closed descriptors the server sent back (raise `ulimit -n`)"
    )]
    DescriptorLimit,
    /// The server sent an Error frame.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// A server's control socket refused a command (`udsecho-client fault`), or is not one.
    #[error("control: {0}")]
    ControlRefused(String),
    /// The server broke the framed protocol.
    #[error("protocol error")]
    Protocol(#[source] ProtoError),
    /// Any other failure on the connection.
    #[error("{doing}")]
    Io {
        /// What was being done, e.g. `connecting`.
        doing: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading our stdin failed.
    #[error("reading stdin")]
    Stdin(#[source] io::Error),
    /// Writing our stdout failed.
    #[error("writing stdout")]
    Stdout(#[source] io::Error),
}

impl ErrorKind {
    /// This failure, on `target`.
    pub(crate) fn at(self, target: &Target) -> ClientError {
        ClientError::new(target.clone(), self)
    }

    /// The server hung up before the exchange was complete.
    pub(crate) fn closed_early(detail: impl Into<String>) -> ErrorKind {
        ErrorKind::ClosedEarly {
            detail: detail.into(),
        }
    }

    /// Echo `index` is `received` where `sent` was sent: both shown from where they differ.
    pub(crate) fn mismatch(index: u64, sent: &[u8], received: &[u8]) -> ErrorKind {
        let offset = sent
            .iter()
            .zip(received)
            .position(|(a, b)| a != b)
            .unwrap_or(sent.len().min(received.len()));
        ErrorKind::Mismatch {
            index,
            offset,
            sent: shown(sent, offset),
            received: shown(received, offset),
        }
    }

    /// `--timeout` passed while `waiting`.
    pub(crate) fn timed_out(waiting: impl Into<String>, after: Duration) -> ErrorKind {
        ErrorKind::TimedOut {
            waiting: waiting.into(),
            after,
        }
    }
}

impl ClientError {
    /// A failure of `kind` on `target`.
    pub fn new(target: Target, kind: ErrorKind) -> ClientError {
        ClientError { target, kind }
    }

    /// The socket the failure concerns.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The process exit status for this error: 3 when echoed data or descriptors differed
    /// from what was sent (the one failure that means the server is wrong), 1 for everything
    /// else.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Mismatch { .. }
            | ErrorKind::Unasked { .. }
            | ErrorKind::DescriptorMismatch { .. } => 3,
            _ => 1,
        }
    }

    /// Whether this is our stdout closing under us (`udsecho-client | head`): a normal end,
    /// not a failure to report.
    pub fn is_closed_stdout(&self) -> bool {
        matches!(&self.kind, ErrorKind::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // Our own stdin and stdout: the socket is beside the point.
            kind @ (ErrorKind::Stdin(_) | ErrorKind::Stdout(_)) => write!(f, "{kind}"),
            ErrorKind::NoSuchSocket => write!(
                f,
                "{0}: no such socket (is the server running? start it with `udsecho-server -s {0}`)",
                self.target
            ),
            kind => write!(f, "{}: {kind}", self.target),
        }
    }
}

impl Error for ClientError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.kind.source()
    }
}

/// The error and its causes as one line, each cause once: `a: b: c`. A cause whose text the
/// line already ends with (some errors repeat their source in their own message) is skipped.
pub fn report(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

/// Why a server may close a connection at once, before reading: the likely causes, named
/// where a client sees only the close.
pub(crate) const TURNED_AWAY: &str = "it may refuse this user (as udsecho-server --allow-uid \
                                      does) or be at a connection limit";

/// Bytes for an error message, from about `from` on: text (valid UTF-8 without control
/// characters other than tab and newlines) quoted with Rust's escapes, anything else in hex
/// (`hex 3f a0 12`), never lossily decoded (random payload read as UTF-8 is mojibake). Over
/// [`SHOWN`] bytes a window is shown, starting a little before `from`, with `…` where bytes
/// are left out and the whole length after it.
pub(crate) fn shown(bytes: &[u8], from: usize) -> String {
    let (mut start, mut end) = (0, bytes.len());
    if bytes.len() > SHOWN {
        start = from.saturating_sub(8).min(bytes.len() - SHOWN);
        end = start + SHOWN;
    }
    let text = std::str::from_utf8(bytes).ok().filter(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    });
    let (before, after) = (
        if start > 0 { "…" } else { "" },
        if end < bytes.len() { "…" } else { "" },
    );
    let mut line = match text {
        Some(text) => {
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            format!("\"{before}{}{after}\"", text[start..end].escape_debug())
        }
        None => {
            let hex: Vec<String> = bytes[start..end]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let gap = |mark: &str| if mark.is_empty() { "" } else { " " };
            format!(
                "hex {before}{}{}{}{after}",
                gap(before),
                hex.join(" "),
                gap(after)
            )
        }
    };
    if start > 0 || end < bytes.len() {
        line.push_str(&format!(" ({} bytes)", bytes.len()));
    }
    line
}

/// The most bytes [`shown`] shows.
const SHOWN: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    fn on(kind: ErrorKind) -> ClientError {
        ClientError::new(Target::parse("/tmp/e.sock"), kind)
    }

    #[test]
    fn the_os_error_is_printed_once_after_what_was_being_done() {
        let e = on(ErrorKind::Io {
            doing: "connecting",
            source: io::Error::from_raw_os_error(20),
        });
        assert_eq!(e.to_string(), "/tmp/e.sock: connecting");
        assert_eq!(
            report(&e),
            "/tmp/e.sock: connecting: Not a directory (os error 20)"
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Repeats(#[source] io::Error);
        let e = Repeats(io::Error::other("inner"));
        assert_eq!(report(&e), "outer: inner");
    }

    #[test]
    fn stdout_errors_do_not_name_the_socket_and_broken_pipe_is_a_normal_end() {
        let closed = on(ErrorKind::Stdout(io::ErrorKind::BrokenPipe.into()));
        assert!(closed.is_closed_stdout());
        assert_eq!(report(&closed), "writing stdout: broken pipe");
        let full = on(ErrorKind::Stdout(io::Error::from_raw_os_error(28)));
        assert!(!full.is_closed_stdout());
        assert_eq!(
            report(&full),
            "writing stdout: No space left on device (os error 28)"
        );
    }

    #[test]
    fn a_mismatch_shows_text_escaped_and_binary_in_hex_from_where_it_differs() {
        let e = ErrorKind::mismatch(2, "olá\tmundo".as_bytes(), "olá\tmunda".as_bytes());
        assert_eq!(
            e.to_string(),
            "echo mismatch on message 2 at offset 9: sent \"olá\\tmundo\", received \"olá\\tmunda\""
        );
        let sent: Vec<u8> = (0..=99).map(|i| i * 2 + 1).collect();
        let mut received = sent.clone();
        received[60] = 0xff;
        let e = ErrorKind::mismatch(1, &sent, &received);
        let line = e.to_string();
        assert!(
            line.starts_with("echo mismatch on message 1 at offset 60: sent hex … 69 6b "),
            "{line}"
        );
        assert!(line.contains(", received hex … 69 6b "), "{line}");
        assert!(line.contains(" ff "), "{line}");
        assert!(line.ends_with(" c7 (100 bytes)"), "{line}");
        assert!(!line.contains('\u{FFFD}'), "{line}");
        // A shorter echo differs where it ends.
        let e = ErrorKind::mismatch(1, b"abcdef", b"abc");
        assert!(e.to_string().contains("at offset 3:"), "{e}");
    }

    #[test]
    fn only_a_mismatch_exits_3() {
        assert_eq!(on(ErrorKind::mismatch(1, b"a", b"b")).exit_code(), 3);
        assert_eq!(on(ErrorKind::FramedOnlyServer).exit_code(), 1);
    }

    #[test]
    fn a_descriptor_mismatch_exits_3_and_the_client_s_own_limit_1() {
        let mismatch = on(ErrorKind::DescriptorMismatch {
            index: 2,
            detail: "--fd /etc/hosts did not come back with the echo (the server dropped it)"
                .into(),
        });
        assert_eq!(mismatch.exit_code(), 3);
        assert_eq!(
            report(&mismatch),
            "/tmp/e.sock: descriptor mismatch on message 2: --fd /etc/hosts did not come back \
             with the echo (the server dropped it)"
        );
        assert_eq!(on(ErrorKind::DescriptorLimit).exit_code(), 1);
    }
}
