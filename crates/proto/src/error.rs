//! The one error type of the crate: every way bytes on the wire can be wrong.

use std::io;

use crate::frame::Kind;
use crate::message::ErrorCode;

/// Why a frame could not be decoded or encoded.
///
/// Every variant but [`ProtoError::Io`] is a protocol violation with an [`ErrorCode`] that a
/// server puts in the Error frame it sends before closing (see [`ProtoError::code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The length prefix announced more than the receiver's `max_frame`.
    ///
    /// Raised as soon as the four length bytes are read: the body is never buffered.
    #[error("frame length {len} exceeds max_frame {max}")]
    FrameTooLarge {
        /// The announced body length `L`.
        len: u32,
        /// The limit it broke.
        max: u32,
    },
    /// The length prefix was zero: every frame carries at least its kind byte.
    #[error("frame length 0 (every frame carries at least its kind byte)")]
    EmptyFrame,
    /// The kind byte is not one of the kinds of wire format v1.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A Hello, Error or Goodbye payload is not valid postcard for its struct.
    #[error("malformed {kind} payload: {source}")]
    Malformed {
        /// The kind of the frame whose payload failed to decode.
        kind: Kind,
        /// What postcard found wrong.
        #[source]
        source: postcard::Error,
    },
    /// The peer's Hello names a protocol version this side cannot speak.
    #[error(
        "unsupported protocol version {peer} (this side speaks {}..={})",
        crate::MIN_VERSION,
        crate::VERSION
    )]
    UnsupportedVersion {
        /// The version the peer announced.
        peer: u16,
    },
    /// A well-formed frame arrived where the protocol does not allow it (Data before Hello,
    /// a second Hello, ...).
    #[error("unexpected {kind} frame: {why}")]
    UnexpectedFrame {
        /// The kind of the offending frame.
        kind: Kind,
        /// Which rule it broke.
        why: &'static str,
    },
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ProtoError {
    /// The code to send in an Error frame for this violation, or `None` for transport errors
    /// (there is nobody left to tell).
    ///
    /// ```
    /// use udsecho_proto::{ErrorCode, ProtoError};
    /// assert_eq!(ProtoError::EmptyFrame.code(), Some(ErrorCode::EmptyFrame));
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtoError::EmptyFrame => ErrorCode::EmptyFrame,
            ProtoError::UnknownKind(_) => ErrorCode::UnknownKind,
            ProtoError::Malformed { .. } => ErrorCode::Malformed,
            ProtoError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtoError::UnexpectedFrame { .. } => ErrorCode::UnexpectedFrame,
            ProtoError::Io(_) => return None,
        })
    }
}
