//! PROTOCOL.md §4: the session, version negotiation (4.1), limits (4.2), what closes a
//! connection (4.3).

use std::time::Duration;

use super::{ServerCtx, detect::payload, first_difference, pump};
use crate::case::{Case, Feature, Need, Verdict};
use crate::wire::{self, Expect, Got, code, reason};

const OFFER: u32 = wire::MAX_CONTROL;

const FRAMED: &[Need] = &[Need::Framed];
/// The shutdown cases signal the server: they need `--cmd`.
const SHUTDOWN: &[Need] = &[Need::Framed, Need::Signal];

pub(super) fn cases() -> Vec<Case<ServerCtx>> {
    vec![
        Case {
            id: "4/hello-first",
            description: "Data before Hello gets UnexpectedFrame",
            needs: FRAMED,
            run: |ctx| before_hello(ctx, &wire::data(b"too soon"), code::UNEXPECTED_FRAME),
        },
        Case {
            id: "4/goodbye-before-hello",
            description: "Goodbye before Hello gets UnexpectedFrame",
            needs: FRAMED,
            run: |ctx| before_hello(ctx, &wire::goodbye(reason::DONE), code::UNEXPECTED_FRAME),
        },
        Case {
            id: "4/duplicate-hello",
            description: "a second Hello gets UnexpectedFrame",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&wire::hello(1, OFFER))?;
                    conn.expect(&[Expect::Error(code::UNEXPECTED_FRAME), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4/echo-in-order",
            description: "200 pipelined Data frames (empty to 3000 bytes) come back identical, in order",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    // Sent while reading: a client that pipelines without reading can
                    // deadlock with any cut-through server (PROTOCOL.md §4, item 3).
                    let bytes: Vec<u8> = (0..200)
                        .flat_map(|i| wire::data(&payload(i * 15, i as u64)))
                        .collect();
                    let len = bytes.len();
                    let back = pump(&mut conn, bytes.clone(), Duration::ZERO, len)?;
                    if back != bytes {
                        return Err(first_difference(&bytes, &back));
                    }
                    conn.expect(&[Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4/goodbye-done",
            description: "Goodbye (Done) after Data: the echo, then Goodbye (Done), then the close",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    let mut bytes = wire::data(b"last words");
                    bytes.extend(wire::goodbye(reason::DONE));
                    conn.send(&bytes)?;
                    conn.expect(&[
                        Expect::Data(b"last words".to_vec()),
                        Expect::Goodbye(reason::DONE),
                        Expect::Eof,
                    ])
                })()
                .into()
            },
        },
        Case {
            id: "4/nothing-after-goodbye",
            description: "a Data frame after the client's Goodbye is neither echoed nor answered with an Error",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    let mut bytes = wire::goodbye(reason::DONE);
                    bytes.extend(wire::data(b"ignored"));
                    conn.send(&bytes)?;
                    conn.expect(&[Expect::Goodbye(reason::DONE), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4/half-close-at-boundary",
            description: "a half-close after whole frames: the echoes, then the close",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&wire::data(b"then EOF"))?;
                    conn.half_close()?;
                    conn.expect(&[Expect::Data(b"then EOF".to_vec())])?;
                    match conn.next()? {
                        Got::Eof => Ok(Verdict::Ok),
                        // PROTOCOL.md §4 item 4: a Goodbye (Done) before the close is allowed.
                        got @ Got::Frame {
                            kind: wire::GOODBYE,
                            ..
                        } if got
                            == Got::Frame {
                                kind: wire::GOODBYE,
                                payload: vec![0],
                            } =>
                        {
                            conn.expect(&[Expect::Eof]).map(|()| Verdict::Ok)
                        }
                        other => Err(wire::mismatch("the end of the stream", None, &other)),
                    }
                })()
                .into()
            },
        },
        Case {
            id: "4/partial-header-dropped",
            description: "a half-close inside a frame header: the partial header is dropped, no Error",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&[0, 0])?;
                    conn.half_close()?;
                    conn.expect(&[Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4/cut-through",
            description: "the echo of a large Data frame begins before the frame has fully arrived",
            needs: FRAMED,
            run: cut_through,
        },
        Case {
            id: "4/half-close-mid-data",
            description: "a half-close inside a Data frame: the echo ends where the input ended",
            needs: FRAMED,
            run: half_close_mid_data,
        },
        Case {
            id: "4/back-pressure",
            description: "framed: a peer that reads nothing for 1 s, then everything, loses no frame",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(udsecho_proto::DEFAULT_MAX_FRAME)?;
                    let frames: Vec<u8> = (0..64)
                        .flat_map(|i| wire::data(&payload(64 * 1024, i)))
                        .collect();
                    let len = frames.len();
                    let back = pump(&mut conn, frames.clone(), Duration::from_secs(1), len)?;
                    if back != frames {
                        return Err(first_difference(&frames, &back));
                    }
                    conn.expect(&[Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4/shutdown-drains",
            description: "on SIGTERM every Data frame queued in the server's socket is echoed, then Goodbye (Shutdown)",
            needs: SHUTDOWN,
            run: super::shutdown::shutdown_drains,
        },
        Case {
            id: "4/shutdown-mid-frame",
            description: "SIGTERM in the middle of a Data frame's echo: the frame is finished, then Goodbye (Shutdown)",
            needs: SHUTDOWN,
            run: super::shutdown::shutdown_mid_frame,
        },
        Case {
            id: "4.1/negotiate-down",
            description: "a client offering version 7 is answered with version 1",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    conn.send(&wire::hello(7, OFFER))?;
                    let hello = conn.expect_hello()?;
                    if hello.version != 1 {
                        return Err(format!(
                            "expected the server's Hello to choose version 1; it chose {}",
                            hello.version
                        ));
                    }
                    conn.send(&wire::data(b"v1"))?;
                    conn.expect(&[Expect::Data(b"v1".to_vec())])
                })()
                .into()
            },
        },
        Case {
            id: "4.1/version-zero",
            description: "a Hello with version 0 gets UnsupportedVersion",
            needs: FRAMED,
            run: |ctx| before_hello(ctx, &wire::hello(0, OFFER), code::UNSUPPORTED_VERSION),
        },
        Case {
            id: "4.2/max-frame-zero",
            description: "a Hello with max_frame 0 gets Malformed",
            needs: FRAMED,
            run: |ctx| before_hello(ctx, &wire::hello(1, 0), code::MALFORMED),
        },
        Case {
            id: "4.2/control-frame-above-max-frame",
            description: "after a Hello offering max_frame 16, a Goodbye of L = 100 is still accepted",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(16)?;
                    let mut payload = wire::varint(reason::DONE.into());
                    payload.resize(99, 0x2a);
                    conn.send(&wire::frame(wire::GOODBYE, &payload))?;
                    conn.expect(&[Expect::Goodbye(reason::DONE), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4.2/hello-at-4096",
            description: "a Hello of exactly 4096 bytes (appended fields) is accepted",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    let mut payload = wire::hello_payload(1, OFFER, "padded", &[]);
                    payload.resize(wire::MAX_CONTROL as usize - 1, 0);
                    conn.send(&wire::frame(wire::HELLO, &payload))?;
                    conn.expect_hello().map(drop)
                })()
                .into()
            },
        },
        Case {
            id: "4.3/place-before-payload",
            description: "a second Hello with a malformed payload gets UnexpectedFrame, not Malformed",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&[0, 0, 0, 2, wire::HELLO, 0x01])?;
                    conn.expect(&[Expect::Error(code::UNEXPECTED_FRAME), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "4.3/echoed-before-error",
            description: "frames before a bad one are echoed first, then the Error, then the close",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    let mut bytes = wire::data(b"one");
                    bytes.extend(wire::data(b"two"));
                    bytes.extend([0, 0, 0, 1, 0x09]);
                    conn.send(&bytes)?;
                    conn.expect(&[
                        Expect::Data(b"one".to_vec()),
                        Expect::Data(b"two".to_vec()),
                        Expect::Error(code::UNKNOWN_KIND),
                        Expect::Eof,
                    ])
                })()
                .into()
            },
        },
        Case {
            id: "4.3/other-connections-unaffected",
            description: "a protocol error on one connection leaves another one's session intact",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut good, _) = ctx.greeted(OFFER)?;
                    let mut bad = ctx.framed()?;
                    bad.send(&[0, 0, 0, 0])?;
                    bad.expect(&[Expect::Error(code::EMPTY_FRAME), Expect::Eof])?;
                    good.send(&wire::data(b"still here"))?;
                    good.expect(&[Expect::Data(b"still here".to_vec())])
                })()
                .into()
            },
        },
    ]
}

/// Right after the preamble, `bytes` must get Error `code`, then the close.
fn before_hello(ctx: &mut ServerCtx, bytes: &[u8], code: u16) -> Verdict {
    (|| {
        let mut conn = ctx.framed()?;
        conn.send(bytes)?;
        conn.expect(&[Expect::Error(code), Expect::Eof])
    })()
    .into()
}

/// A session in the middle of a 256 KiB Data frame: `sent` bytes of it sent, and whether
/// its echo began within 1 s.
#[derive(Debug)]
pub(super) struct HalfSent {
    pub(super) conn: wire::Conn,
    pub(super) body: Vec<u8>,
    pub(super) frame: Vec<u8>,
    pub(super) sent: usize,
    pub(super) began: bool,
}

pub(super) fn half_sent(ctx: &ServerCtx, seed: u64, sent: usize) -> Result<HalfSent, String> {
    let (mut conn, _) = ctx.greeted(udsecho_proto::DEFAULT_MAX_FRAME)?;
    let body = payload(256 * 1024, seed);
    let frame = wire::data(&body);
    conn.send(&frame[..sent])?;
    let began = !conn.peek_for(Duration::from_secs(1))?.is_empty();
    Ok(HalfSent {
        conn,
        body,
        frame,
        sent,
        began,
    })
}

impl HalfSent {
    /// The rest of the frame, then its whole echo: OK if the echo had begun, otherwise
    /// NON-STRICT (`why`).
    pub(super) fn finish(mut self, why: &str) -> Result<Verdict, String> {
        self.conn.send(&self.frame[self.sent..])?;
        self.conn.expect(&[Expect::Data(self.body)])?;
        Ok(if self.began {
            Verdict::Ok
        } else {
            Verdict::NonStrict(Feature::CutThrough, why.to_owned())
        })
    }
}

/// Half of a 256 KiB Data frame, then a wait for its echo to begin; the rest, then the rest
/// of the echo. A server that echoes only whole frames is NON-STRICT.
fn cut_through(ctx: &mut ServerCtx) -> Verdict {
    (|| {
        let half = (5 + 256 * 1024) / 2;
        half_sent(ctx, 7, half)?.finish(
            "the echo began only once the whole frame had arrived (PROTOCOL.md §4 item 3 \
             recommends echoing as bytes arrive)",
        )
    })()
    .into()
}

fn half_close_mid_data(ctx: &mut ServerCtx) -> Verdict {
    (|| {
        let (mut conn, _) = ctx.greeted(OFFER)?;
        let whole = wire::data(&[b'h'; 100]);
        let sent = &whole[..55];
        conn.send(sent)?;
        conn.half_close()?;
        match conn.next()? {
            Got::Partial(bytes) if bytes == sent => Ok(Verdict::Ok),
            Got::Eof => Ok(Verdict::NonStrict(
                Feature::CutThrough,
                "the start of a Data frame cut by a half-close was not echoed (a server that \
                 holds whole frames drops it; PROTOCOL.md §4 item 3 recommends echoing as bytes arrive)"
                    .to_owned(),
            )),
            other => Err(wire::mismatch(
                "the 55 bytes sent, then the end of the stream",
                Some(sent.to_vec()),
                &other,
            )),
        }
    })()
    .into()
}
