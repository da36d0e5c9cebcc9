//! PROTOCOL.md §1 (mode detection) and §2 (raw mode).

use std::time::Duration;

use super::{ServerCtx, expect_end, first_difference, pump};
use crate::case::{Case, Need, Verdict};
use crate::wire::{self, PREAMBLE};

const FRAMED: &[Need] = &[Need::Framed];
const RAW: &[Need] = &[Need::Raw];

pub(super) fn cases() -> Vec<Case<ServerCtx>> {
    vec![
        Case {
            id: "1/preamble-framed",
            description: "the preamble then a Hello is a framed session: the server answers Hello",
            needs: FRAMED,
            run: |ctx| ctx.greeted(wire::MAX_CONTROL).map(drop).into(),
        },
        Case {
            id: "1/preamble-trickled",
            description: "a preamble sent a byte every 8 ms (within the pause) is still framed",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.connect()?;
                    conn.trickle(&PREAMBLE, Duration::from_millis(8))?;
                    conn.send(&wire::hello(1, 1024))?;
                    conn.expect_hello().map(drop)
                })()
                .into()
            },
        },
        Case {
            id: "1/preamble-and-frames-in-one-write",
            description: "bytes after the preamble in the same read are the first frames",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.connect()?;
                    let mut bytes = PREAMBLE.to_vec();
                    bytes.extend(wire::hello(1, 1024));
                    bytes.extend(wire::data(b"same write"));
                    conn.send(&bytes)?;
                    conn.expect_hello()?;
                    conn.expect(&[wire::Expect::Data(b"same write".to_vec())])
                })()
                .into()
            },
        },
        Case {
            id: "1/raw-fallback",
            description: "a first byte that differs from the preamble means raw: every byte echoed",
            needs: RAW,
            run: |ctx| raw_echo(ctx, b"hello, raw world\n"),
        },
        Case {
            id: "1/raw-nul-prefix",
            description: "raw data that begins like the preamble (\\0UDSE) is echoed from its first byte",
            needs: RAW,
            run: |ctx| raw_echo(ctx, b"\0UDSEoops, not framed\n"),
        },
        Case {
            id: "1/raw-prefix-pause",
            description: "a strict prefix of the preamble then a pause (100-200 ms) is raw",
            needs: RAW,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.connect()?;
                    conn.send(b"\0UDS")?;
                    // The pause is at most 200 ms; the echo must come without more input.
                    let first = conn.raw(4)?;
                    if first != b"\0UDS" {
                        return Err(format!(
                            "after \\0UDS and a pause: {}",
                            first_difference(b"\0UDS", &first)
                        ));
                    }
                    conn.send(b"ECHO")?;
                    conn.half_close()?;
                    let rest = conn.raw(4)?;
                    if rest != b"ECHO" {
                        return Err(first_difference(b"ECHO", &rest));
                    }
                    expect_end(&mut conn)
                })()
                .into()
            },
        },
        Case {
            id: "1/raw-prefix-half-close",
            description: "a strict prefix of the preamble then a half-close is raw: echoed, then closed",
            needs: RAW,
            run: |ctx| raw_echo(ctx, b"\0UDSEC"),
        },
        Case {
            id: "1/half-close-before-any-byte",
            description: "a connection that half-closes before sending a byte is closed with nothing sent",
            needs: &[],
            run: |ctx| {
                (|| {
                    let mut conn = ctx.connect()?;
                    conn.half_close()?;
                    expect_end(&mut conn)
                })()
                .into()
            },
        },
        Case {
            id: "2/raw-half-close",
            description: "raw: 256 KiB echoed in order; on half-close the server writes the rest, then closes",
            needs: RAW,
            run: |ctx| raw_volume(ctx, 256 * 1024, Duration::ZERO),
        },
        Case {
            id: "2/back-pressure",
            description: "raw: a peer that reads nothing for 1 s, then everything, loses no byte",
            needs: RAW,
            run: |ctx| raw_volume(ctx, 4 * 1024 * 1024, Duration::from_secs(1)),
        },
    ]
}

/// A pseudo-random, reproducible payload whose first byte is not `\0` (so it is raw).
pub(super) fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect();
    if let Some(first) = out.first_mut() {
        *first = b'r';
    }
    out
}

/// Sends `input` raw, half-closes, expects it back exactly, then the end of the stream.
fn raw_echo(ctx: &mut ServerCtx, input: &[u8]) -> Verdict {
    (|| {
        let mut conn = ctx.connect()?;
        conn.send(input)?;
        conn.half_close()?;
        let back = conn.raw(input.len())?;
        if back != input {
            return Err(first_difference(input, &back));
        }
        expect_end(&mut conn)
    })()
    .into()
}

/// Sends `len` raw bytes while reading (starting after `read_after`); all must come back.
fn raw_volume(ctx: &mut ServerCtx, len: usize, read_after: Duration) -> Verdict {
    (|| {
        let mut conn = ctx.connect()?;
        let input = payload(len, len as u64);
        let back = pump(&mut conn, input.clone(), read_after, len)?;
        if back != input {
            return Err(first_difference(&input, &back));
        }
        expect_end(&mut conn)
    })()
    .into()
}
