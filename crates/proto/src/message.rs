//! The control messages: the payloads of Hello, Error and Goodbye frames.
//!
//! Each is a serde struct encoded with [postcard](https://docs.rs/postcard) (integers as
//! LEB128 varints, strings as a varint length then UTF-8). A receiver ignores bytes after the
//! last field it knows, so a later minor revision of v1 may append fields.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks (and the highest it knows).
pub const VERSION: u16 = 1;

/// The lowest protocol version this crate speaks.
pub const MIN_VERSION: u16 = 1;

/// The default `max_frame`: 8 MiB, the largest body length `L` a server accepts unless told
/// otherwise.
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;

/// The largest control frame body (`L` of a Hello, Error or Goodbye) a receiver must accept.
///
/// Control payloads are a few dozen bytes; a receiver may refuse a larger one with
/// [`ErrorCode::FrameTooLarge`] as soon as it has read the header, whatever its `max_frame`.
/// This lets a server collect a control frame without ever buffering a large one.
pub const MAX_CONTROL_FRAME: u32 = 4096;

/// The first frame of each side: who I am and what I accept.
///
/// The client sends its Hello first; the server answers with its own, carrying the version
/// both will speak (see [`negotiate`]) and the `max_frame` it enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Hello {
    /// From a client: the highest version it speaks. From a server: the version chosen.
    pub version: u16,
    /// The largest body length `L` (kind byte plus payload) the sender accepts.
    pub max_frame: u32,
    /// Free-form name and version of the software, for logs (for example `udsecho/0.1.0`).
    pub agent: String,
}

impl Hello {
    /// A Hello for [`VERSION`] with the given limit and agent string.
    ///
    /// ```
    /// let hello = udsecho_proto::Hello::new(1 << 20, "mytool/2.0");
    /// assert_eq!(hello.version, udsecho_proto::VERSION);
    /// ```
    pub fn new(max_frame: u32, agent: impl Into<String>) -> Self {
        Hello {
            version: VERSION,
            max_frame,
            agent: agent.into(),
        }
    }
}

/// The payload of an Error frame: why the sender is about to close the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorFrame {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people (one line, no trailing newline).
    pub message: String,
}

impl ErrorFrame {
    /// An Error payload with a code and a message.
    ///
    /// ```
    /// use udsecho_proto::{ErrorCode, ErrorFrame};
    /// let e = ErrorFrame::new(ErrorCode::UnknownKind, "unknown frame kind 0x09");
    /// assert_eq!(e.code, ErrorCode::UnknownKind);
    /// ```
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            code,
            message: message.into(),
        }
    }
}

/// The payload of a Goodbye frame: the sender will send nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Goodbye {
    /// Why the sender is leaving.
    pub reason: GoodbyeReason,
}

impl Goodbye {
    /// A Goodbye with the given reason.
    ///
    /// ```
    /// use udsecho_proto::{Goodbye, GoodbyeReason};
    /// assert_eq!(Goodbye::new(GoodbyeReason::Shutdown).reason, GoodbyeReason::Shutdown);
    /// ```
    pub fn new(reason: GoodbyeReason) -> Self {
        Goodbye { reason }
    }
}

/// Why an Error frame was sent. Encoded as a `u16` varint; codes this crate does not know
/// decode as [`ErrorCode::Other`] so that new codes never break old readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    /// 1: `L` was larger than the receiver's `max_frame`.
    FrameTooLarge,
    /// 2: `L` was zero.
    EmptyFrame,
    /// 3: the kind byte is not a v1 kind.
    UnknownKind,
    /// 4: a valid frame in the wrong place (Data before Hello, a second Hello, ...).
    UnexpectedFrame,
    /// 5: a Hello, Error or Goodbye payload that does not decode.
    Malformed,
    /// 6: no protocol version in common.
    UnsupportedVersion,
    /// 7: descriptors passed with the bytes (`SCM_RIGHTS` over a Unix socket) could not all be
    /// taken: the receiver was at its descriptor limit, so the kernel closed the rest.
    DescriptorsTruncated,
    /// Any other code, kept as it was on the wire.
    Other(u16),
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        match code {
            1 => ErrorCode::FrameTooLarge,
            2 => ErrorCode::EmptyFrame,
            3 => ErrorCode::UnknownKind,
            4 => ErrorCode::UnexpectedFrame,
            5 => ErrorCode::Malformed,
            6 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::DescriptorsTruncated,
            other => ErrorCode::Other(other),
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        match code {
            ErrorCode::FrameTooLarge => 1,
            ErrorCode::EmptyFrame => 2,
            ErrorCode::UnknownKind => 3,
            ErrorCode::UnexpectedFrame => 4,
            ErrorCode::Malformed => 5,
            ErrorCode::UnsupportedVersion => 6,
            ErrorCode::DescriptorsTruncated => 7,
            ErrorCode::Other(other) => other,
        }
    }
}

/// Why a Goodbye frame was sent. Encoded as a `u16` varint; unknown reasons decode as
/// [`GoodbyeReason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum GoodbyeReason {
    /// 0: the sender is done (a client ending its session, a server answering one).
    Done,
    /// 1: the server is shutting down; every frame it received has been echoed.
    Shutdown,
    /// 2: the connection was idle longer than the server allows.
    IdleTimeout,
    /// Any other reason, kept as it was on the wire.
    Other(u16),
}

impl From<u16> for GoodbyeReason {
    fn from(code: u16) -> Self {
        match code {
            0 => GoodbyeReason::Done,
            1 => GoodbyeReason::Shutdown,
            2 => GoodbyeReason::IdleTimeout,
            other => GoodbyeReason::Other(other),
        }
    }
}

impl From<GoodbyeReason> for u16 {
    fn from(reason: GoodbyeReason) -> u16 {
        match reason {
            GoodbyeReason::Done => 0,
            GoodbyeReason::Shutdown => 1,
            GoodbyeReason::IdleTimeout => 2,
            GoodbyeReason::Other(other) => other,
        }
    }
}

/// The server's side of version negotiation: given the version in the client's Hello (the
/// highest the client speaks), returns the version to answer with and speak from then on.
///
/// A client that speaks a newer version than this crate gets [`VERSION`] back and decides
/// whether it can speak it; a version below [`MIN_VERSION`] has nothing in common with us.
///
/// ```
/// use udsecho_proto::{negotiate, VERSION};
/// assert_eq!(negotiate(1).unwrap(), 1);
/// assert_eq!(negotiate(7).unwrap(), VERSION); // a future client falls back to v1
/// assert!(negotiate(0).is_err());
/// ```
pub fn negotiate(client_version: u16) -> Result<u16, crate::ProtoError> {
    if client_version < MIN_VERSION {
        return Err(crate::ProtoError::UnsupportedVersion {
            peer: client_version,
        });
    }
    Ok(client_version.min(VERSION))
}

/// The client's side of version negotiation: checks the version in the server's Hello.
///
/// The server must answer with a version the client speaks; anything else ends the session.
///
/// ```
/// use udsecho_proto::accept_server_version;
/// assert_eq!(accept_server_version(1).unwrap(), 1);
/// assert!(accept_server_version(2).is_err());
/// ```
pub fn accept_server_version(server_version: u16) -> Result<u16, crate::ProtoError> {
    if (MIN_VERSION..=VERSION).contains(&server_version) {
        Ok(server_version)
    } else {
        Err(crate::ProtoError::UnsupportedVersion {
            peer: server_version,
        })
    }
}
