//! PROTOCOL.md §3: frames, their limits, control payloads, error codes, Goodbye reasons.

use std::time::Duration;

use super::ServerCtx;
use crate::case::{Case, Need, Verdict};
use crate::wire::{self, Expect, code, reason};

/// The `max_frame` the runner offers in cases about the limit.
const OFFER: u32 = 1024;

const FRAMED: &[Need] = &[Need::Framed];

pub(super) fn cases() -> Vec<Case<ServerCtx>> {
    vec![
        Case {
            id: "3/length-at-max",
            description: "a Data frame with L exactly at the enforced max_frame is echoed",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, hello) = ctx.greeted(OFFER)?;
                    let limit = hello.max_frame.min(OFFER);
                    let payload = vec![b'm'; limit as usize - 1];
                    conn.send(&wire::data(&payload))?;
                    conn.expect(&[Expect::Data(payload)])?;
                    conn.send(&wire::goodbye(reason::DONE))?;
                    conn.expect(&[Expect::Goodbye(reason::DONE), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "3/length-over-max",
            description: "a Data header with L one over max_frame gets FrameTooLarge before any payload",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, hello) = ctx.greeted(OFFER)?;
                    let limit = hello.max_frame.min(OFFER);
                    // The header only: the server must judge it without the body.
                    let mut header = (limit + 1).to_be_bytes().to_vec();
                    header.push(wire::DATA);
                    conn.send(&header)?;
                    conn.expect(&[Expect::Error(code::FRAME_TOO_LARGE), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "3/length-4gib",
            description: "a declared length of 4 GiB - 1 gets FrameTooLarge from the 4 length bytes alone",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&[0xff; 4])?;
                    conn.expect(&[Expect::Error(code::FRAME_TOO_LARGE), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "3/empty-frame",
            description: "L = 0 gets EmptyFrame",
            needs: FRAMED,
            run: |ctx| after_hello(ctx, &[0, 0, 0, 0], code::EMPTY_FRAME),
        },
        Case {
            id: "3/unknown-kind",
            description: "kind byte 0x07 gets UnknownKind, without waiting for the payload",
            needs: FRAMED,
            run: |ctx| after_hello(ctx, &[0, 0, 0, 0x10, 0x07], code::UNKNOWN_KIND),
        },
        Case {
            id: "3/header-split-bytewise",
            description: "a Data frame sent one byte at a time (20 ms apart) is echoed whole",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.trickle(&wire::data(b"split"), Duration::from_millis(20))?;
                    conn.expect(&[Expect::Data(b"split".to_vec())])
                })()
                .into()
            },
        },
        Case {
            id: "3.1/hello-appended-fields",
            description: "bytes after the last known field of a Hello are ignored",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    let payload = wire::hello_payload(1, OFFER, "later/2.0", &[0x05, 0x83, 0x01]);
                    conn.send(&wire::frame(wire::HELLO, &payload))?;
                    conn.expect_hello()?;
                    conn.send(&wire::data(b"after an extended Hello"))?;
                    conn.expect(&[Expect::Data(b"after an extended Hello".to_vec())])
                })()
                .into()
            },
        },
        Case {
            id: "3.1/hello-agent-not-utf8",
            description: "a Hello whose agent is not UTF-8 gets Malformed",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    let mut payload = wire::hello_payload(1, OFFER, "", &[]);
                    payload.pop();
                    payload.extend([0x02, 0xff, 0xfe]);
                    conn.send(&wire::frame(wire::HELLO, &payload))?;
                    conn.expect(&[Expect::Error(code::MALFORMED), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "3.2/error-from-client",
            description: "an Error frame from the client is not answered: the server just closes",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&wire::error(code::MALFORMED, "the client gives up"))?;
                    conn.expect(&[Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "3.2/error-from-client-before-hello",
            description: "an Error frame as the first frame is not answered either",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    conn.send(&wire::error(code::UNSUPPORTED_VERSION, "no"))?;
                    conn.expect(&[Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "3.3/goodbye-unknown-reason",
            description: "a Goodbye with an unknown reason (9) is treated like Done",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let (mut conn, _) = ctx.greeted(OFFER)?;
                    conn.send(&wire::goodbye(9))?;
                    conn.expect(&[Expect::Goodbye(reason::DONE), Expect::Eof])
                })()
                .into()
            },
        },
    ]
}

/// After the Hello exchange, `bytes` must get Error `code`, then the close.
fn after_hello(ctx: &mut ServerCtx, bytes: &[u8], code: u16) -> Verdict {
    (|| {
        let (mut conn, _) = ctx.greeted(OFFER)?;
        conn.send(bytes)?;
        conn.expect(&[Expect::Error(code), Expect::Eof])
    })()
    .into()
}
