//! A reference model of the server's framed replies, for property tests and the fuzzer:
//! given everything a client sent (preamble first), what must come back.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;
use udsecho_proto::{
    ErrorCode, Frame, FrameCodec, GoodbyeReason, HEADER_LEN, Header, Kind, PREAMBLE,
};

/// One frame of the server's answer, as far as the protocol fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The server's Hello.
    Hello,
    /// An echo.
    Data(Bytes),
    /// The Error frame a violation calls for.
    Error(ErrorCode),
    /// Goodbye (`Done`) after the client's Goodbye.
    Goodbye,
}

/// The replies a server with `max_frame` owes a framed client that sent `input` and then
/// half-closed: its Hello, every Data echoed up to the first violation, then the Error frame
/// for it, or Goodbye, or nothing (a partial frame at the end, or a client Error frame).
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
            // A partial frame at the end is dropped silently.
            Ok(None) => return replies,
            Err(e) => {
                replies.push(Reply::Error(e.code().expect("header errors carry a code")));
                return replies;
            }
        };
        if buf.len() < header.frame_len() {
            return replies;
        }
        let mut body = buf.split_to(header.frame_len());
        body.advance(HEADER_LEN);
        let payload = body.freeze();
        // Where a frame may stand is checked before its payload is decoded.
        match (header.kind, greeted) {
            (Kind::Data, true) => replies.push(Reply::Data(payload)),
            (Kind::Data | Kind::Goodbye, false) | (Kind::Hello, true) => {
                replies.push(Reply::Error(ErrorCode::UnexpectedFrame));
                return replies;
            }
            // An Error frame from the client means it is leaving; its payload is not judged.
            (Kind::Error, _) => return replies,
            (Kind::Goodbye, true) => {
                replies.push(match Frame::from_parts(Kind::Goodbye, payload) {
                    Ok(_) => Reply::Goodbye,
                    Err(_) => Reply::Error(ErrorCode::Malformed),
                });
                return replies;
            }
            (Kind::Hello, false) => {
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

/// Reads the server's answer as replies. Errors if it is not a clean sequence of frames, or
/// if a Goodbye carries another reason than `Done`.
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
    if buf.is_empty() {
        Ok(replies)
    } else {
        Err(format!("{} bytes of a partial frame at the end", buf.len()))
    }
}
