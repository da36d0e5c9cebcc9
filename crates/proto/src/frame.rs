//! The frame: the unit of framed mode, and its header.
//!
//! ```text
//! +----------------+--------+------------------------+
//! | L: u32 BE      | kind   | payload: L - 1 bytes   |
//! +----------------+--------+------------------------+
//!   4 bytes          1 byte
//! ```

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::ProtoError;
use crate::message::{ErrorFrame, Goodbye, Hello, MAX_CONTROL_FRAME};

/// Bytes before the payload: the 4-byte length and the kind byte.
pub const HEADER_LEN: usize = 5;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// `0x00`: opens a session; payload is a postcard [`Hello`].
    Hello = 0x00,
    /// `0x01`: application bytes, echoed unchanged.
    Data = 0x01,
    /// `0x02`: the sender is about to close; payload is a postcard [`ErrorFrame`].
    Error = 0x02,
    /// `0x03`: the sender will send nothing more; payload is a postcard [`Goodbye`].
    Goodbye = 0x03,
}

impl Kind {
    /// The kind for a byte, or `None` for a byte that is not a v1 kind.
    ///
    /// ```
    /// use udsecho_proto::Kind;
    /// assert_eq!(Kind::from_byte(0x01), Some(Kind::Data));
    /// assert_eq!(Kind::from_byte(0x04), None);
    /// ```
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x00 => Kind::Hello,
            0x01 => Kind::Data,
            0x02 => Kind::Error,
            0x03 => Kind::Goodbye,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Hello => "Hello",
            Kind::Data => "Data",
            Kind::Error => "Error",
            Kind::Goodbye => "Goodbye",
        })
    }
}

/// One frame of wire format v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens the session (client first, then the server's answer).
    Hello(Hello),
    /// Application bytes. Decoding hands out a slice of the read buffer: no copy.
    Data(Bytes),
    /// A protocol error; the sender closes after it.
    Error(ErrorFrame),
    /// The sender will send nothing more.
    Goodbye(Goodbye),
}

impl Frame {
    /// The kind byte this frame is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello(_) => Kind::Hello,
            Frame::Data(_) => Kind::Data,
            Frame::Error(_) => Kind::Error,
            Frame::Goodbye(_) => Kind::Goodbye,
        }
    }

    /// Builds a frame from its kind and payload (the body after the kind byte), decoding the
    /// postcard payload of control frames.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use udsecho_proto::{Frame, Kind};
    ///
    /// let frame = Frame::from_parts(Kind::Data, Bytes::from_static(b"hi")).unwrap();
    /// assert_eq!(frame, Frame::Data(Bytes::from_static(b"hi")));
    /// ```
    pub fn from_parts(kind: Kind, payload: Bytes) -> Result<Frame, ProtoError> {
        fn control<'a, T: serde::Deserialize<'a>>(
            kind: Kind,
            payload: &'a [u8],
        ) -> Result<T, ProtoError> {
            postcard::from_bytes(payload).map_err(|source| ProtoError::Malformed { kind, source })
        }
        Ok(match kind {
            Kind::Data => Frame::Data(payload),
            Kind::Hello => Frame::Hello(control(kind, &payload)?),
            Kind::Error => Frame::Error(control(kind, &payload)?),
            Kind::Goodbye => Frame::Goodbye(control(kind, &payload)?),
        })
    }

    /// Appends the frame's wire bytes to `dst`, refusing a Data body longer than `max_frame`
    /// and a control body (Hello, Error, Goodbye) longer than [`MAX_CONTROL_FRAME`], which
    /// every receiver accepts whatever its `max_frame` (PROTOCOL.md 4.2).
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use udsecho_proto::Frame;
    ///
    /// let mut out = BytesMut::new();
    /// Frame::Data(Bytes::from_static(b"hi")).encode(&mut out, 1024).unwrap();
    /// assert_eq!(&out[..], b"\x00\x00\x00\x03\x01hi");
    /// ```
    pub fn encode(&self, dst: &mut BytesMut, max_frame: u32) -> Result<(), ProtoError> {
        let start = dst.len();
        let written = match self {
            Frame::Data(payload) => {
                let len = body_len(payload.len() + 1, max_frame)?;
                dst.reserve(4 + len as usize);
                dst.put_u32(len);
                dst.put_u8(Kind::Data as u8);
                dst.extend_from_slice(payload);
                return Ok(());
            }
            Frame::Hello(m) => put_control(dst, Kind::Hello, m),
            Frame::Error(m) => put_control(dst, Kind::Error, m),
            Frame::Goodbye(m) => put_control(dst, Kind::Goodbye, m),
        }
        .and_then(|()| body_len(dst.len() - start - 4, MAX_CONTROL_FRAME));
        match written {
            Ok(len) => {
                dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
                Ok(())
            }
            Err(e) => {
                dst.truncate(start);
                Err(e)
            }
        }
    }
}

fn put_control<T: Serialize>(dst: &mut BytesMut, kind: Kind, msg: &T) -> Result<(), ProtoError> {
    // Placeholder length, patched once the payload's size is known.
    dst.put_u32(0);
    dst.put_u8(kind as u8);
    postcard::to_extend(msg, Append(dst))
        .map_err(|source| ProtoError::Malformed { kind, source })?;
    Ok(())
}

/// Lets postcard serialize straight into the caller's buffer.
struct Append<'a>(&'a mut BytesMut);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

fn body_len(len: usize, max_frame: u32) -> Result<u32, ProtoError> {
    match u32::try_from(len) {
        Ok(len) if len <= max_frame => Ok(len),
        _ => Err(ProtoError::FrameTooLarge {
            len: u32::try_from(len).unwrap_or(u32::MAX),
            max: max_frame,
        }),
    }
}

/// The validated header of a frame at the front of a buffer: enough to know how long the
/// frame is and what it holds, before its body has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The body length `L`: the kind byte plus the payload. Always `1..=max_frame`.
    pub len: u32,
    /// The kind byte.
    pub kind: Kind,
}

impl Header {
    /// Reads the header at the front of `buf` without consuming anything.
    ///
    /// Returns `Ok(None)` while fewer than five bytes are there. Errors as soon as the bytes
    /// present break a rule, in this order (PROTOCOL.md 4.2):
    ///
    /// - from the four length bytes: `L = 0`, or `L` above both `max_frame` and
    ///   [`MAX_CONTROL_FRAME`] (so an oversized frame is never buffered);
    /// - from the kind byte: an unknown kind; a Data frame above `max_frame`; a control frame
    ///   (Hello, Error, Goodbye) above [`MAX_CONTROL_FRAME`]. A control frame up to
    ///   [`MAX_CONTROL_FRAME`] is accepted whatever `max_frame` is: a peer that announced a
    ///   tiny `max_frame` can still say Hello and Goodbye.
    ///
    /// ```
    /// use udsecho_proto::{Header, Kind, ProtoError};
    ///
    /// let h = Header::peek(b"\x00\x00\x00\x03\x01hi", 1024).unwrap().unwrap();
    /// assert_eq!((h.len, h.kind, h.frame_len()), (3, Kind::Data, 7));
    /// assert!(matches!(
    ///     Header::peek(b"\xff\xff\xff\xff", 1024),
    ///     Err(ProtoError::FrameTooLarge { len: u32::MAX, max: 1024 })
    /// ));
    /// // A 27-byte Hello passes a limit of 16; a 27-byte Data frame does not.
    /// assert_eq!(Header::peek(b"\x00\x00\x00\x1b\x00", 16).unwrap().unwrap().kind, Kind::Hello);
    /// assert!(Header::peek(b"\x00\x00\x00\x1b\x01", 16).is_err());
    /// ```
    pub fn peek(buf: &[u8], max_frame: u32) -> Result<Option<Header>, ProtoError> {
        let Some(&[a, b, c, d]) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len == 0 {
            return Err(ProtoError::EmptyFrame);
        }
        let too_large = |max| Err(ProtoError::FrameTooLarge { len, max });
        if len > max_frame && len > MAX_CONTROL_FRAME {
            return too_large(max_frame);
        }
        let Some(&byte) = buf.get(4) else {
            return Ok(None);
        };
        let kind = Kind::from_byte(byte).ok_or(ProtoError::UnknownKind(byte))?;
        match kind {
            Kind::Data if len > max_frame => too_large(max_frame),
            Kind::Hello | Kind::Error | Kind::Goodbye if len > MAX_CONTROL_FRAME => {
                too_large(MAX_CONTROL_FRAME)
            }
            _ => Ok(Some(Header { len, kind })),
        }
    }

    /// Bytes the whole frame takes on the wire: `4 + L`.
    pub fn frame_len(&self) -> usize {
        4 + self.len as usize
    }

    /// Bytes of payload after the kind byte: `L - 1`.
    pub fn payload_len(&self) -> usize {
        self.len as usize - 1
    }
}
