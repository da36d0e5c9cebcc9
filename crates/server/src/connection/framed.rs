//! Framed mode as a state machine over chunks of input: no socket, no buffer of its own.
//!
//! A Data frame's echo is byte-identical to the frame, so Data is **cut through**: once its
//! header is checked (kind, `L` against the limit) the frame's bytes are echoed straight out of
//! the chunk that holds them, as they arrive, whatever `L` is. What the machine keeps between
//! chunks is at most a partial header (5 bytes, inline) or one control frame being collected
//! (Hello, Goodbye: at most [`udsecho_proto::MAX_CONTROL_FRAME`] bytes, whatever the
//! frame limit). So a connection's memory does not depend on
//! the frame length it declares, and one stalled in a header holds no more than an idle one.
//!
//! Within one chunk the bytes to echo are contiguous: control frames stand only at the start
//! of a session (Hello, before any Data) or end it (Goodbye, Error, a breach).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use udsecho_proto::{
    ErrorCode, Frame, Goodbye, GoodbyeReason, HEADER_LEN, Header, Hello, Kind, MAX_CONTROL_FRAME,
    ProtoError,
};

use super::plan::{Before, Breach, End, Plan};

/// Where the byte stream is, between two chunks.
#[derive(Debug)]
enum At {
    /// Between frames (`have == 0`) or inside a header: its first `have` bytes are in `head`.
    Header { head: [u8; HEADER_LEN], have: u8 },
    /// Inside a Data frame's payload: `left` more bytes to echo as they come.
    Data { left: u32 },
    /// Inside a control frame's payload, collected until complete.
    Control {
        kind: Kind,
        body: Vec<u8>,
        left: u32,
    },
}

/// A framed session: the Hello state, the frame limit in force, and where the stream is.
#[derive(Debug)]
pub(crate) struct Session {
    /// Set once the Hello exchange is done: Data is allowed from then on.
    greeted: bool,
    /// The largest `L` accepted: `--max-frame`, lowered to the client's after its Hello.
    limit: u32,
    at: At,
}

/// The result of feeding one chunk.
#[derive(Debug)]
pub(crate) struct Fed {
    /// What to send back.
    pub(crate) plan: Plan,
    /// How many frames completed in this chunk (the idle clock of framed mode).
    pub(crate) frames: u32,
    /// How many of them were Data frames.
    pub(crate) data: u32,
    /// Feeding stopped where it was asked to ([`Session::feed_until`]).
    pub(crate) stopped: bool,
}

impl Session {
    /// A session that has seen the preamble and nothing else.
    pub(crate) fn new(max_frame: u32) -> Session {
        Session {
            greeted: false,
            limit: max_frame,
            at: At::Header {
                head: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    /// Is the stream inside a Data frame whose first bytes were already echoed? Then nothing
    /// (a Goodbye) may be sent until the frame is complete.
    pub(crate) fn bytes_to_boundary(&self) -> usize {
        match self.at {
            At::Data { left } => left as usize,
            _ => 0,
        }
    }

    /// Reads `chunk` and says what to send back. `payloads`, when given, collects the ranges
    /// of Data payload bytes in the chunk (for the `echo:` log).
    #[cfg(test)]
    pub(crate) fn feed(&mut self, chunk: &[u8], payloads: Option<&mut Vec<Range<usize>>>) -> Fed {
        self.feed_until(chunk, payloads, None, tests::AGENT)
    }

    /// [`Session::feed`], stopping once `stop` Data frames (if given) are complete, or
    /// before the first Data frame begins when `stop` is 0: the bytes after are not echoed
    /// (the caller ends the session there: a fault's Goodbye or Error after N frames).
    /// `agent` is our name in the Hello answer (not kept in the session: every byte of it
    /// is in every framed connection's handler).
    pub(crate) fn feed_until(
        &mut self,
        chunk: &[u8],
        mut payloads: Option<&mut Vec<Range<usize>>>,
        stop: Option<u32>,
        agent: &'static str,
    ) -> Fed {
        let mut plan = Plan::default();
        let mut frames = 0;
        let mut data = 0;
        let mut stopped = false;
        let mut echo: Option<Range<usize>> = None;
        let mut pos = 0;
        let extend = |echo: &mut Option<Range<usize>>, r: Range<usize>| match echo {
            Some(e) => e.end = r.end,
            None => *echo = Some(r),
        };
        while pos < chunk.len() && plan.ending.is_none() && !stopped {
            match &mut self.at {
                At::Header { head, have } => {
                    let held = usize::from(*have);
                    let take = (HEADER_LEN - held).min(chunk.len() - pos);
                    head[held..held + take].copy_from_slice(&chunk[pos..pos + take]);
                    *have += take as u8;
                    let (head, have) = (*head, usize::from(*have));
                    let start = pos;
                    pos += take;
                    match self.judge(&head[..have]) {
                        Ok(None) => {}
                        Ok(Some((Kind::Data, _))) if stop == Some(data) => stopped = true,
                        Ok(Some((Kind::Data, len))) => {
                            // The header's bytes go out: those of this chunk in the echo range,
                            // those held from the previous chunk before it.
                            if held > 0 {
                                let mut bytes = [0; 8];
                                bytes[..held].copy_from_slice(&head[..held]);
                                plan.before = Before::Held {
                                    bytes,
                                    len: held as u8,
                                };
                            }
                            extend(&mut echo, start..pos);
                            self.at = At::Data { left: len - 1 };
                            if len == 1 {
                                frames += 1;
                                data += 1;
                                stopped = stop == Some(data);
                                self.at = fresh();
                            }
                        }
                        // A client's Error means it is leaving; its payload is not judged.
                        Ok(Some((Kind::Error, _))) => plan.ending = Some(End::PeerError),
                        Ok(Some((kind, len))) => {
                            self.at = At::Control {
                                kind,
                                body: Vec::with_capacity(len as usize - 1),
                                left: len - 1,
                            };
                            if len == 1 {
                                frames += 1;
                                plan.ending = self.control_complete(&mut plan, agent);
                            }
                        }
                        Err(breach) => plan.ending = Some(End::Breach(Box::new(breach))),
                    }
                }
                At::Data { left } => {
                    let take = (*left as usize).min(chunk.len() - pos);
                    extend(&mut echo, pos..pos + take);
                    if let Some(p) = payloads.as_deref_mut() {
                        p.push(pos..pos + take);
                    }
                    pos += take;
                    *left -= take as u32;
                    if *left == 0 {
                        frames += 1;
                        data += 1;
                        stopped = stop == Some(data);
                        self.at = fresh();
                    }
                }
                At::Control { body, left, .. } => {
                    let take = (*left as usize).min(chunk.len() - pos);
                    body.extend_from_slice(&chunk[pos..pos + take]);
                    pos += take;
                    *left -= take as u32;
                    if *left == 0 {
                        frames += 1;
                        plan.ending = self.control_complete(&mut plan, agent);
                    }
                }
            }
        }
        plan.echo = echo.unwrap_or(0..0);
        Fed {
            plan,
            frames,
            data,
            stopped,
        }
    }

    /// Judges a header as far as it has arrived (`held`): [`Header::peek`] checks the bytes
    /// (the length from its 4 bytes, the kind and the control-frame rule from the 5th), this
    /// adds the session's rule (what may come before and after Hello). `Ok(None)`: not enough
    /// bytes yet.
    fn judge(&self, held: &[u8]) -> Result<Option<(Kind, u32)>, Breach> {
        let header = match Header::peek(held, self.limit) {
            // A client's Error is not read at all (PROTOCOL.md 4.2): once its kind byte is
            // known it is leaving, whatever its length. (A length over both limits is refused
            // from its 4 bytes, before the kind byte, whatever the kind.)
            Err(ProtoError::FrameTooLarge { len, .. })
                if held.get(4) == Some(&(Kind::Error as u8))
                    && (len <= self.limit || len <= MAX_CONTROL_FRAME) =>
            {
                return Ok(Some((Kind::Error, len)));
            }
            header => header?,
        };
        let Some(Header { len, kind }) = header else {
            return Ok(None);
        };
        let unexpected = |why| ProtoError::UnexpectedFrame { kind, why };
        match (kind, self.greeted) {
            (Kind::Data, false) => Err(unexpected("Data before Hello").into()),
            (Kind::Goodbye, false) => Err(unexpected("Goodbye before Hello").into()),
            (Kind::Hello, true) => Err(unexpected("a second Hello").into()),
            _ => Ok(Some((kind, len))),
        }
    }

    /// A control frame is complete: answer a Hello, or say how the session ends.
    fn control_complete(&mut self, plan: &mut Plan, agent: &'static str) -> Option<End> {
        let At::Control { kind, body, .. } = std::mem::replace(&mut self.at, fresh()) else {
            unreachable!("called when a control frame completes");
        };
        let frame = match Frame::from_parts(kind, Bytes::from(body)) {
            Ok(frame) => frame,
            Err(e) => return Some(End::Breach(Box::new(e.into()))),
        };
        match frame {
            Frame::Hello(hello) => match self.answer(&hello, agent) {
                Ok(answer) => {
                    plan.before = Before::Reply(answer);
                    None
                }
                Err(breach) => Some(End::Breach(Box::new(breach))),
            },
            Frame::Goodbye(_) => Some(End::PeerGoodbye),
            Frame::Error(_) | Frame::Data(_) => {
                unreachable!("only Hello and Goodbye are collected")
            }
        }
    }

    /// The answer to a client's Hello, or why it is refused.
    fn answer(&mut self, hello: &Hello, agent: &'static str) -> Result<Bytes, Breach> {
        let version = udsecho_proto::negotiate(hello.version)?;
        if hello.max_frame == 0 {
            return Err(Breach {
                code: ErrorCode::Malformed,
                message: "Hello.max_frame is 0: no frame could ever be sent".to_owned(),
            });
        }
        self.limit = self.limit.min(hello.max_frame);
        let mut answer = Hello::new(self.limit, agent);
        answer.version = version;
        let mut out = BytesMut::new();
        Frame::Hello(answer).encode(&mut out, u32::MAX)?;
        self.greeted = true;
        // `?`: the agent is the peer's text, shown escaped so it cannot start a log line.
        tracing::debug!(agent = ?hello.agent, max_frame = self.limit, "framed session opened");
        Ok(out.freeze())
    }
}

fn fresh() -> At {
    At::Header {
        head: [0; HEADER_LEN],
        have: 0,
    }
}

/// The frame that ends a session from our side: Goodbye with `reason`.
pub(crate) fn goodbye(reason: GoodbyeReason, out: &mut BytesMut) {
    Frame::Goodbye(Goodbye::new(reason))
        .encode(out, u32::MAX)
        .expect("a Goodbye always encodes");
}

/// Appends the Error frame for `breach` to `out`.
pub(crate) fn error_frame(breach: &Breach, out: &mut BytesMut) {
    let frame = Frame::Error(udsecho_proto::ErrorFrame::new(
        breach.code,
        breach.message.clone(),
    ));
    frame
        .encode(out, u32::MAX)
        .expect("an Error frame with our own message always encodes");
}

#[cfg(test)]
mod tests {
    use super::*;
    use udsecho_proto::PREAMBLE;

    pub(super) const AGENT: &str = "udsecho/test";

    fn hello() -> Vec<u8> {
        hello_with(1 << 20)
    }

    fn hello_with(max_frame: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        Frame::Hello(Hello::new(max_frame, "t"))
            .encode(&mut out, u32::MAX)
            .unwrap();
        out.to_vec()
    }

    fn data(payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        Frame::Data(Bytes::copy_from_slice(payload))
            .encode(&mut out, u32::MAX)
            .unwrap();
        out.to_vec()
    }

    /// Feeds `input` in chunks of `sizes` (cycled) and returns everything sent back and how the
    /// session ended.
    fn run(input: &[u8], sizes: &[usize], max_frame: u32) -> (Vec<u8>, Option<End>) {
        let mut session = Session::new(max_frame);
        let mut out = Vec::new();
        let mut pos = 0;
        for &size in sizes.iter().cycle() {
            if pos >= input.len() {
                break;
            }
            let chunk = &input[pos..(pos + size.max(1)).min(input.len())];
            pos += chunk.len();
            let fed = session.feed(chunk, None);
            out.extend_from_slice(fed.plan.before.as_slice());
            out.extend_from_slice(&chunk[fed.plan.echo.clone()]);
            if fed.plan.ending.is_some() {
                return (out, fed.plan.ending);
            }
        }
        (out, None)
    }

    fn answer(max_frame: u32) -> Vec<u8> {
        let mut session = Session::new(max_frame);
        let mut plan = Plan::default();
        session.at = At::Control {
            kind: Kind::Hello,
            body: hello()[HEADER_LEN..].to_vec(),
            left: 0,
        };
        assert!(session.control_complete(&mut plan, AGENT).is_none());
        plan.before.as_slice().to_vec()
    }

    /// A fault's "after N frames" stops the echo at the end of the Nth Data frame, however
    /// the input is cut; 0 stops before the first Data frame, after the Hello.
    #[test]
    fn feeding_stops_after_the_nth_data_frame_whatever_the_chunking() {
        let mut input = hello();
        let frames: Vec<Vec<u8>> = (0..4u8).map(|i| data(&[i; 3])).collect();
        for frame in &frames {
            input.extend(frame);
        }
        for stop_after in [0u32, 1, 3] {
            let mut expected = answer(1 << 20);
            for frame in &frames[..stop_after as usize] {
                expected.extend(frame);
            }
            for size in [1usize, 2, 5, 9, input.len()] {
                let mut session = Session::new(1 << 20);
                let (mut out, mut done, mut pos) = (Vec::new(), 0u32, 0);
                while pos < input.len() {
                    let chunk = &input[pos..(pos + size).min(input.len())];
                    pos += chunk.len();
                    let fed = session.feed_until(chunk, None, Some(stop_after - done), AGENT);
                    out.extend_from_slice(fed.plan.before.as_slice());
                    out.extend_from_slice(&chunk[fed.plan.echo.clone()]);
                    done += fed.data;
                    if fed.stopped {
                        break;
                    }
                }
                assert_eq!(out, expected, "stop after {stop_after}, chunks of {size}");
            }
        }
    }

    #[test]
    fn data_frames_come_back_byte_for_byte_whatever_the_chunking() {
        let mut input = hello();
        let mut frames = Vec::new();
        for (i, len) in [0usize, 1, 5, 64, 1000, 70_000].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            frames.extend(data(&payload));
        }
        input.extend(&frames);
        let mut expected = answer(1 << 20);
        expected.extend(&frames);
        for sizes in [
            &[1][..],
            &[2],
            &[3, 7],
            &[4, 5, 6],
            &[64 * 1024],
            &[usize::MAX],
        ] {
            let (out, ending) = run(&input, sizes, 1 << 20);
            assert!(ending.is_none(), "{sizes:?}: {ending:?}");
            assert_eq!(out.len(), expected.len(), "{sizes:?}");
            assert!(out == expected, "{sizes:?}: the echo differs");
        }
    }

    #[test]
    fn a_huge_declared_frame_is_echoed_as_it_arrives_and_nothing_is_buffered() {
        let mut session = Session::new(u32::MAX);
        let h = hello_with(u32::MAX);
        assert!(session.feed(&h, None).plan.ending.is_none());
        // Declares 4 GiB - 1 of Data, then sends 3 bytes of it.
        let chunk = [0xff, 0xff, 0xff, 0xff, 0x01, b'a', b'b', b'c'];
        let fed = session.feed(&chunk, None);
        assert_eq!(fed.plan.echo, 0..8, "header and payload out at once");
        assert_eq!(session.bytes_to_boundary(), (u32::MAX - 1 - 3) as usize);
        assert!(
            std::mem::size_of::<Session>() <= 64,
            "{}",
            std::mem::size_of::<Session>()
        );
    }

    #[test]
    fn a_header_split_across_chunks_is_held_then_sent_before_the_rest() {
        let mut session = Session::new(1024);
        session.feed(&hello(), None);
        let frame = data(b"split");
        let first = session.feed(&frame[..3], None);
        assert!(first.plan.echo.is_empty() && first.plan.before.as_slice().is_empty());
        let second = session.feed(&frame[3..], None);
        assert_eq!(second.plan.before.as_slice(), &frame[..3]);
        assert_eq!(&frame[3..][second.plan.echo.clone()], &frame[3..]);
        assert_eq!(second.frames, 1);
    }

    #[test]
    fn each_breach_is_judged_from_the_bytes_that_show_it() {
        let greeted = |bytes: &[u8]| {
            let mut input = hello();
            input.extend_from_slice(bytes);
            input
        };
        let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
            (
                "4 GiB length",
                greeted(&[0xff, 0xff, 0xff, 0xff]),
                ErrorCode::FrameTooLarge,
            ),
            ("empty frame", greeted(&[0, 0, 0, 0]), ErrorCode::EmptyFrame),
            (
                "unknown kind",
                greeted(&[0, 0, 0, 1, 7]),
                ErrorCode::UnknownKind,
            ),
            ("Data first", data(b"x"), ErrorCode::UnexpectedFrame),
            (
                "second Hello",
                greeted(&hello()),
                ErrorCode::UnexpectedFrame,
            ),
            (
                "huge control frame",
                greeted(&[0, 0, 0x20, 0, Kind::Goodbye as u8]),
                ErrorCode::FrameTooLarge,
            ),
            (
                "bad Goodbye",
                greeted(&[0, 0, 0, 2, 3, 0x80]),
                ErrorCode::Malformed,
            ),
        ];
        for (name, input, code) in cases {
            for sizes in [&[1][..], &[usize::MAX]] {
                match run(&input, sizes, 1 << 20).1 {
                    Some(End::Breach(b)) => assert_eq!(b.code, code, "{name}"),
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
    }

    /// PROTOCOL.md 4.2: a client's Error frame is not read, whatever its length: the session
    /// ends without an answer.
    #[test]
    fn a_long_error_frame_from_the_client_ends_the_session_silently() {
        let mut input = hello();
        input.extend([0, 0, 0x13, 0x88, Kind::Error as u8]);
        let (out, ending) = run(&input, &[usize::MAX], 1 << 20);
        assert_eq!(out, answer(1 << 20));
        assert!(matches!(ending, Some(End::PeerError)), "{ending:?}");
    }

    /// PROTOCOL.md 4.2: control frames up to 4096 bytes pass whatever `--max-frame` or the
    /// client's own `max_frame` is; Data is held to the limit.
    #[test]
    fn control_frames_up_to_4096_pass_a_smaller_limit() {
        let mut big_hello = BytesMut::new();
        Frame::Hello(Hello::new(1 << 20, "a".repeat(4000)))
            .encode(&mut big_hello, u32::MAX)
            .unwrap();
        let (out, ending) = run(&big_hello, &[1], 1000);
        assert!(ending.is_none(), "{ending:?}");
        assert_eq!(out, answer(1000));

        // A client that accepts 1-byte frames can still say Goodbye.
        let mut input = hello_with(1);
        let mut bye = BytesMut::new();
        goodbye(GoodbyeReason::Done, &mut bye);
        input.extend(&bye);
        assert!(matches!(
            run(&input, &[usize::MAX], 16).1,
            Some(End::PeerGoodbye)
        ));

        let mut input = hello();
        input.extend(data(&[b'x'; 16]));
        match run(&input, &[usize::MAX], 16).1 {
            Some(End::Breach(b)) => assert_eq!(b.code, ErrorCode::FrameTooLarge),
            other => panic!("a 17-byte Data frame over a limit of 16: {other:?}"),
        }
    }

    #[test]
    fn frames_before_a_breach_are_echoed_and_the_breach_is_not() {
        let mut input = hello();
        input.extend(data(b"one"));
        input.extend(data(b"two"));
        input.extend([0, 0, 0, 0]);
        input.extend(data(b"never"));
        let (out, ending) = run(&input, &[usize::MAX], 1024);
        let mut expected = answer(1024);
        expected.extend(data(b"one"));
        expected.extend(data(b"two"));
        assert_eq!(out, expected);
        assert!(matches!(ending, Some(End::Breach(_))));
    }

    #[test]
    fn goodbye_ends_after_the_echoes_before_it() {
        let mut input = hello();
        input.extend(data(b"last"));
        let mut bye = BytesMut::new();
        goodbye(GoodbyeReason::Done, &mut bye);
        input.extend(&bye);
        input.extend(data(b"after"));
        let (out, ending) = run(&input, &[2], 1024);
        assert!(out.ends_with(&data(b"last")));
        assert!(matches!(ending, Some(End::PeerGoodbye)));
    }

    #[test]
    fn the_preamble_is_not_the_scanners_business() {
        // The detector consumes it; fed to the scanner it is a frame with an absurd length.
        let (_, ending) = run(&PREAMBLE, &[usize::MAX], 1024);
        assert!(matches!(ending, Some(End::Breach(b)) if b.code == ErrorCode::FrameTooLarge));
    }
}
