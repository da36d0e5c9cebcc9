//! [`FrameCodec`]: frames over any byte stream, through `tokio_util::codec`.

use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtoError;
use crate::frame::{Frame, HEADER_LEN, Header};
use crate::message::DEFAULT_MAX_FRAME;

/// The most buffer space the decoder reserves at once for a frame still arriving. Larger
/// frames grow the buffer as their bytes come in, so a peer that announces a big frame and
/// then stalls costs at most this much, not `max_frame`.
const RESERVE_STEP: usize = 256 * 1024;

/// Encodes and decodes [`Frame`]s, enforcing a `max_frame` limit on the body length `L`.
///
/// It does not read or write the [`PREAMBLE`](crate::PREAMBLE): a client writes it once
/// before the first frame, a server consumes it during [`detect`](crate::detect).
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
/// use udsecho_proto::{Frame, FrameCodec, ProtoError};
///
/// let mut codec = FrameCodec::with_max_frame(16);
/// let mut buf = BytesMut::new();
/// codec.encode(Frame::Data("ping".into()), &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Data("ping".into())));
///
/// // A length above the limit fails from the four length bytes alone.
/// let mut evil = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
/// assert!(matches!(codec.decode(&mut evil), Err(ProtoError::FrameTooLarge { .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    /// The largest body length `L` accepted when decoding and produced when encoding.
    max_frame: u32,
}

impl FrameCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME`] (8 MiB).
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A codec that accepts bodies of at most `max_frame` bytes.
    pub fn with_max_frame(max_frame: u32) -> Self {
        FrameCodec { max_frame }
    }

    /// The limit in force.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Changes the limit, for instance to the smaller of both sides' after the Hello exchange.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        let Some(header) = Header::peek(src, self.max_frame)? else {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        };
        let frame_len = header.frame_len();
        if src.len() < frame_len {
            src.reserve((frame_len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        let mut body = src.split_to(frame_len);
        body.advance(HEADER_LEN);
        Frame::from_parts(header.kind, body.freeze()).map(Some)
    }

    /// At the end of the stream: the last frames, then an [`io::ErrorKind::UnexpectedEof`]
    /// error if the stream ended inside a frame (saying how far in), so that a peer that
    /// closes mid-frame reads as a peer that closed early.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Decoder;
    /// use udsecho_proto::{FrameCodec, ProtoError};
    ///
    /// let mut cut = BytesMut::from(&b"\x00\x00\x00\x05\x01ab"[..]);
    /// match FrameCodec::new().decode_eof(&mut cut) {
    ///     Err(ProtoError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let what = match Header::peek(src, u32::MAX) {
            Ok(Some(header)) => format!(
                "{} of the {} bytes of a frame",
                src.len(),
                header.frame_len()
            ),
            _ => format!("{} bytes into a frame header", src.len()),
        };
        Err(ProtoError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended {what}"),
        )))
    }
}

// Only owned frames: a second `Encoder` impl would make `Sink::flush` on a `Framed` ambiguous
// for every user. To encode a borrowed frame, call `Frame::encode`.
impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        frame.encode(dst, self.max_frame)
    }
}
