//! udsecho frames in a recorded stream: which frames each read completed, for the `frames`
//! of a JSONL `data` event. No I/O and no buffer of the stream's size: a header cut across
//! reads is kept (five bytes), a Data body is only counted, a control frame's body (at most
//! [`MAX_CONTROL_FRAME`] bytes) is kept until it is whole so that it can be decoded.
//!
//! The client's direction decides whether the session is framed at all (its first bytes are
//! the preamble, [`udsecho_proto::detect`]); the upstream's answers are decoded only when it
//! is, and only if the decision came before the upstream's first byte.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use serde::Serialize;
use udsecho_proto::{Detection, Frame, HEADER_LEN, Header, Kind, MAX_CONTROL_FRAME, PREAMBLE};

/// One frame a read completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FrameNote {
    /// `hello`, `data`, `error`, `goodbye`; `invalid` for bytes that break the framing (then
    /// nothing more of that direction is decoded).
    pub(crate) kind: &'static str,
    /// The offset in this read of the frame's first byte (its length field); negative when
    /// the frame began in an earlier read.
    pub(crate) at: i64,
    /// The body length `L` (kind byte and payload), as the length field says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) len: Option<u32>,
    /// A control frame's payload, decoded (`Hello { version: 1, .. }`), or why the bytes are
    /// not a frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) decoded: Option<String>,
}

/// Whether the session is framed, decided by the client's direction and read by the
/// upstream's: one byte both directions of a connection share.
#[derive(Debug, Default)]
pub(crate) struct Session(AtomicU8);

// 0: undecided (the default).
const FRAMED: u8 = 1;
const RAW: u8 = 2;

impl Session {
    fn decide(&self, framed: bool) {
        self.0
            .store(if framed { FRAMED } else { RAW }, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One direction's decoder.
#[derive(Debug)]
pub(crate) struct Frames {
    /// The client's direction (it sends the preamble and decides the session).
    decides: bool,
    state: State,
    /// Bytes of this direction seen before the current read.
    pos: u64,
}

#[derive(Debug)]
enum State {
    /// Client's direction: the first bytes, compared with the preamble.
    Detecting(Vec<u8>),
    /// Upstream's direction: waiting for the client's direction to decide.
    Waiting,
    /// Between frames or inside a header: the header bytes so far and where the frame began.
    Header {
        have: [u8; HEADER_LEN],
        n: usize,
        start: u64,
    },
    /// Inside a body: `left` bytes to go; a control frame's body so far.
    Body {
        header: Header,
        start: u64,
        left: usize,
        control: Option<Vec<u8>>,
    },
    /// Not framed, or no longer decodable.
    Off,
}

impl Frames {
    /// The decoder of the client's direction (`decides`) or of the upstream's.
    pub(crate) fn new(decides: bool) -> Frames {
        Frames {
            decides,
            state: if decides {
                State::Detecting(Vec::new())
            } else {
                State::Waiting
            },
            pos: 0,
        }
    }

    /// The frames `read`, the next bytes of this direction, completes. Empty for a raw
    /// session.
    pub(crate) fn read(&mut self, session: &Session, read: &[u8]) -> Vec<FrameNote> {
        let base = self.pos;
        self.pos += read.len() as u64;
        let mut notes = Vec::new();
        let mut rest = read;
        let mut offset = base;
        loop {
            match &mut self.state {
                State::Off => break,
                State::Waiting => match session.get() {
                    FRAMED => {
                        self.state = State::Header {
                            have: [0; HEADER_LEN],
                            n: 0,
                            start: offset,
                        };
                    }
                    // Raw, or the upstream spoke before the client's preamble was whole.
                    _ => self.state = State::Off,
                },
                State::Detecting(first) => {
                    let take = rest.len().min(PREAMBLE.len() - first.len());
                    first.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    offset += take as u64;
                    match udsecho_proto::detect(first) {
                        Detection::Framed => {
                            session.decide(true);
                            self.state = State::Header {
                                have: [0; HEADER_LEN],
                                n: 0,
                                start: offset,
                            };
                        }
                        Detection::Raw => {
                            session.decide(false);
                            self.state = State::Off;
                        }
                        Detection::NeedMore => break,
                    }
                }
                State::Header { have, n, start } => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = rest.len().min(HEADER_LEN - *n);
                    have[*n..*n + take].copy_from_slice(&rest[..take]);
                    *n += take;
                    rest = &rest[take..];
                    offset += take as u64;
                    let start = *start;
                    match Header::peek(&have[..*n], u32::MAX) {
                        Ok(None) => break,
                        Ok(Some(header)) => {
                            let control = (header.kind != Kind::Data)
                                .then(|| Vec::with_capacity(header.payload_len()));
                            self.state = State::Body {
                                header,
                                start,
                                left: header.payload_len(),
                                control,
                            };
                        }
                        Err(e) => {
                            notes.push(FrameNote {
                                kind: "invalid",
                                at: start as i64 - base as i64,
                                len: None,
                                decoded: Some(e.to_string()),
                            });
                            self.state = State::Off;
                        }
                    }
                }
                State::Body {
                    header,
                    start,
                    left,
                    control,
                } => {
                    let take = rest.len().min(*left);
                    if let Some(control) = control {
                        control.extend_from_slice(&rest[..take]);
                    }
                    *left -= take;
                    rest = &rest[take..];
                    offset += take as u64;
                    if *left > 0 {
                        break;
                    }
                    notes.push(note(*header, *start as i64 - base as i64, control.take()));
                    self.state = State::Header {
                        have: [0; HEADER_LEN],
                        n: 0,
                        start: offset,
                    };
                }
            }
        }
        if !self.decides && matches!(self.state, State::Waiting) {
            // Bytes from the upstream before the session was decided: not decodable.
            self.state = State::Off;
        }
        notes
    }
}

/// The note for a whole frame; `control` is a control frame's payload.
fn note(header: Header, at: i64, control: Option<Vec<u8>>) -> FrameNote {
    let kind = match header.kind {
        Kind::Hello => "hello",
        Kind::Data => "data",
        Kind::Error => "error",
        Kind::Goodbye => "goodbye",
    };
    let decoded = control.map(|payload| {
        debug_assert!(payload.len() < MAX_CONTROL_FRAME as usize);
        match Frame::from_parts(header.kind, Bytes::from(payload)) {
            Ok(Frame::Hello(hello)) => format!("{hello:?}"),
            Ok(Frame::Error(error)) => format!("{error:?}"),
            Ok(Frame::Goodbye(goodbye)) => format!("{goodbye:?}"),
            Ok(frame) => format!("{frame:?}"),
            Err(e) => format!("malformed: {e}"),
        }
    });
    FrameNote {
        kind,
        at,
        len: Some(header.len),
        decoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use udsecho_proto::{Goodbye, GoodbyeReason, Hello};

    fn session_bytes() -> Vec<u8> {
        let mut out = BytesMut::new();
        out.extend_from_slice(&PREAMBLE);
        for frame in [
            Frame::Hello(Hello::new(1024, "test")),
            Frame::Data(Bytes::from_static(b"hello")),
            Frame::Data(Bytes::from(vec![7u8; 3000])),
            Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)),
        ] {
            frame.encode(&mut out, u32::MAX).unwrap();
        }
        out.to_vec()
    }

    /// Every frame is noted once, at its absolute start, whatever the chunking.
    fn decode_in_chunks(bytes: &[u8], chunk: usize) -> Vec<(&'static str, u64, Option<u32>)> {
        let session = Session::default();
        let mut frames = Frames::new(true);
        let mut seen = Vec::new();
        let mut pos = 0u64;
        for piece in bytes.chunks(chunk) {
            for note in frames.read(&session, piece) {
                seen.push((note.kind, (pos as i64 + note.at) as u64, note.len));
            }
            pos += piece.len() as u64;
        }
        seen
    }

    #[test]
    fn frames_are_found_whatever_the_reads_cut() {
        let bytes = session_bytes();
        let whole = decode_in_chunks(&bytes, bytes.len());
        let kinds: Vec<_> = whole.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(kinds, ["hello", "data", "data", "goodbye"]);
        assert_eq!(whole[0].1, PREAMBLE.len() as u64);
        assert_eq!(
            whole[1],
            (
                "data",
                whole[0].1 + 4 + u64::from(whole[0].2.unwrap()),
                Some(6)
            )
        );
        for chunk in [1, 2, 3, 5, 7, 64, 4096] {
            assert_eq!(decode_in_chunks(&bytes, chunk), whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn control_frames_are_decoded() {
        let session = Session::default();
        let mut frames = Frames::new(true);
        let notes = frames.read(&session, &session_bytes());
        let hello = notes[0].decoded.as_deref().unwrap();
        assert!(
            hello.contains("max_frame: 1024") && hello.contains("\"test\""),
            "{hello}"
        );
        assert!(notes[1].decoded.is_none(), "data frames are not copied");
    }

    #[test]
    fn the_upstream_direction_follows_the_clients_decision() {
        let session = Session::default();
        let mut client = Frames::new(true);
        let mut upstream = Frames::new(false);
        client.read(&session, &PREAMBLE);
        let mut answer = BytesMut::new();
        Frame::Hello(Hello::new(64, "server"))
            .encode(&mut answer, u32::MAX)
            .unwrap();
        let notes = upstream.read(&session, &answer);
        assert_eq!((notes.len(), notes[0].kind, notes[0].at), (1, "hello", 0));

        let raw = Session::default();
        let mut client = Frames::new(true);
        let mut upstream = Frames::new(false);
        assert!(client.read(&raw, b"GET / HTTP/1.1\r\n").is_empty());
        assert!(upstream.read(&raw, &answer).is_empty());
    }

    #[test]
    fn bytes_that_break_the_framing_are_noted_once() {
        let session = Session::default();
        let mut frames = Frames::new(true);
        let mut bytes = PREAMBLE.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0, 1]);
        let notes = frames.read(&session, &bytes);
        assert_eq!((notes.len(), notes[0].kind, notes[0].at), (1, "invalid", 8));
        assert!(frames.read(&session, b"more").is_empty());
    }
}
