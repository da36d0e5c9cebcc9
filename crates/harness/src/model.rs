//! A reference model of the server's framed replies, for property tests and the fuzzer:
//! given everything a client sent (preamble first), what must come back.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;
use udsecho_proto::{
    ErrorCode, Frame, FrameCodec, GoodbyeReason, HEADER_LEN, Header, Kind, MAX_CONTROL_FRAME,
    PREAMBLE,
};

/// One frame of the server's answer, as far as the protocol fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The server's Hello.
    Hello,
    /// An echo.
    Data(Bytes),
    /// The start of an echo: the client half-closed inside this Data frame, whose header and
    /// these payload bytes had arrived (Data is echoed as it arrives).
    PartialData(Bytes),
    /// The Error frame a violation calls for.
    Error(ErrorCode),
    /// Goodbye (`Done`) after the client's Goodbye.
    Goodbye,
}

/// The replies a server with `max_frame` owes a framed client that sent `input` and then
/// half-closed: its Hello, every Data echoed up to the first violation, then the Error frame
/// for it, or Goodbye, or nothing (a client Error frame, a partial header or control frame at
/// the end), or the part of a last Data frame that arrived.
pub fn expected_replies(input: &[u8], max_frame: u32) -> Vec<Reply> {
    assert!(
        input.starts_with(&PREAMBLE),
        "a framed session starts with the preamble"
    );
    let mut buf = BytesMut::from(&input[PREAMBLE.len()..]);
    let mut limit = max_frame;
    let mut replies = Vec::new();
    let mut greeted = false;
    loop {
        let header = match Header::peek(&buf, limit) {
            Ok(Some(header)) => header,
            // A partial header at the end is dropped silently.
            Ok(None) => return replies,
            // A client's Error frame is not read, whatever its length, once its kind byte is
            // seen; a length over both limits is refused from its 4 bytes first.
            Err(udsecho_proto::ProtoError::FrameTooLarge { len, .. })
                if buf.get(4) == Some(&(Kind::Error as u8))
                    && (len <= limit || len <= MAX_CONTROL_FRAME) =>
            {
                return replies;
            }
            Err(e) => {
                replies.push(Reply::Error(e.code().expect("header errors carry a code")));
                return replies;
            }
        };
        // Where a frame may stand, and a control frame's size, are judged from its header.
        match (header.kind, greeted) {
            (Kind::Data | Kind::Goodbye, false) | (Kind::Hello, true) => {
                replies.push(Reply::Error(ErrorCode::UnexpectedFrame));
                return replies;
            }
            (Kind::Error, _) => return replies,
            (Kind::Hello | Kind::Goodbye, _) if header.len > MAX_CONTROL_FRAME => {
                replies.push(Reply::Error(ErrorCode::FrameTooLarge));
                return replies;
            }
            _ => {}
        }
        if buf.len() < header.frame_len() {
            if header.kind == Kind::Data {
                replies.push(Reply::PartialData(buf.split_off(HEADER_LEN).freeze()));
            }
            return replies;
        }
        let mut body = buf.split_to(header.frame_len());
        body.advance(HEADER_LEN);
        let payload = body.freeze();
        match (header.kind, greeted) {
            (Kind::Data, _) => replies.push(Reply::Data(payload)),
            // An Error frame from the client means it is leaving; its payload is not judged
            // (and never reaches here: its header is enough).
            (Kind::Error, _) => return replies,
            (Kind::Goodbye, _) => {
                replies.push(match Frame::from_parts(Kind::Goodbye, payload) {
                    Ok(_) => Reply::Goodbye,
                    Err(_) => Reply::Error(ErrorCode::Malformed),
                });
                return replies;
            }
            (Kind::Hello, _) => {
                let hello = match Frame::from_parts(Kind::Hello, payload) {
                    Ok(Frame::Hello(hello)) => hello,
                    _ => {
                        replies.push(Reply::Error(ErrorCode::Malformed));
                        return replies;
                    }
                };
                if hello.version == 0 {
                    replies.push(Reply::Error(ErrorCode::UnsupportedVersion));
                    return replies;
                }
                if hello.max_frame == 0 {
                    replies.push(Reply::Error(ErrorCode::Malformed));
                    return replies;
                }
                greeted = true;
                limit = max_frame.min(hello.max_frame);
                replies.push(Reply::Hello);
            }
        }
    }
}

/// Reads the server's answer as replies. Errors if it is not a clean sequence of frames (a
/// Data frame cut short at the very end is a [`Reply::PartialData`]), or if a Goodbye carries
/// another reason than `Done`.
pub fn parse_replies(output: &[u8]) -> Result<Vec<Reply>, String> {
    let mut buf = BytesMut::from(output);
    let mut codec = FrameCodec::with_max_frame(u32::MAX);
    let mut replies = Vec::new();
    while let Some(frame) = codec
        .decode(&mut buf)
        .map_err(|e| format!("bad frame from the server: {e}"))?
    {
        replies.push(match frame {
            Frame::Hello(_) => Reply::Hello,
            Frame::Data(p) => Reply::Data(p),
            Frame::Error(e) => Reply::Error(e.code),
            Frame::Goodbye(g) if g.reason == GoodbyeReason::Done => Reply::Goodbye,
            Frame::Goodbye(g) => return Err(format!("Goodbye {:?} where Done was due", g.reason)),
        });
    }
    match Header::peek(&buf, u32::MAX) {
        _ if buf.is_empty() => {}
        Ok(Some(header)) if header.kind == Kind::Data => {
            replies.push(Reply::PartialData(buf.split_off(HEADER_LEN).freeze()));
        }
        _ => return Err(format!("{} bytes of a partial frame at the end", buf.len())),
    }
    Ok(replies)
}
