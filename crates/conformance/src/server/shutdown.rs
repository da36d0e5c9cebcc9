//! PROTOCOL.md §4.3 and §8: what a server owes a framed peer when it shuts down — the frames
//! already sent echoed (those still queued in its socket included), a Data frame it had
//! begun to echo finished, then Goodbye (Shutdown).

use std::thread;
use std::time::Duration;

use super::session::{HalfSent, half_sent};
use super::{ServerCtx, detect::payload, first_difference};
use crate::case::{Feature, Verdict};
use crate::wire::{self, Expect, Got, reason};

/// A server without graceful shutdown: it was seen closing on SIGTERM (`what`) without
/// Goodbye (Shutdown).
fn no_drain(what: &str) -> Verdict {
    Verdict::Unimplemented(
        Feature::Drain,
        format!(
            "graceful shutdown: on SIGTERM the server {what}, without Goodbye (Shutdown); \
             PROTOCOL.md §4 item 4 applies to servers that drain"
        ),
    )
}

/// What follows the last echo on SIGTERM: Goodbye (Shutdown), then the close.
fn expect_goodbye_shutdown(conn: &mut wire::Conn) -> Result<Verdict, String> {
    match conn.next()? {
        Got::Eof => Ok(no_drain("closed after the echoes")),
        got if got
            == (Got::Frame {
                kind: wire::GOODBYE,
                payload: wire::varint(reason::SHUTDOWN.into()),
            }) =>
        {
            conn.expect(&[Expect::Eof]).map(|()| Verdict::Ok)
        }
        other => Err(wire::mismatch(
            "Goodbye (Shutdown)",
            Some(wire::goodbye(reason::SHUTDOWN)),
            &other,
        )),
    }
}

/// The end of a stream that stopped inside an echo: a server that died (a close, its bytes
/// right so far) or one that wrote something else there.
fn cut_inside(expected: &[u8], got: &[u8]) -> Result<Verdict, String> {
    if expected.starts_with(got) {
        Ok(no_drain("closed in the middle of an echo"))
    } else {
        Err(format!(
            "the echo was corrupted after SIGTERM: {}",
            first_difference(expected, got)
        ))
    }
}

/// How much the runner sends, at most, while waiting for a server to stop taking frames.
const STUFF_LIMIT: usize = 8 * 1024 * 1024;

/// Every frame in the server's socket when SIGTERM comes is echoed, then Goodbye
/// (Shutdown). So that frames are surely still queued then, the runner stops reading and
/// sends whole 1000-byte Data frames until the server stops taking them (its echoes back
/// up, and it stops reading too); then the signal; then, once the server has had time to
/// see it with all that still queued, it reads everything.
pub(super) fn shutdown_drains(ctx: &mut ServerCtx) -> Verdict {
    (|| {
        let (mut conn, _) = ctx.greeted(udsecho_proto::DEFAULT_MAX_FRAME)?;
        let frame = |i: u64| wire::data(&payload(1000, i));
        let sent = conn.stuff(frame, STUFF_LIMIT, Duration::from_millis(200))?;
        ctx.terminate()?;
        conn.pause(Duration::from_millis(300));
        for i in 0..sent {
            match conn.next()? {
                Got::Frame {
                    kind: wire::DATA,
                    payload: echoed,
                } if echoed == payload(1000, i) => {}
                Got::Eof => {
                    return Ok(no_drain(&format!(
                        "closed after echoing {i} of the {sent} frames queued"
                    )));
                }
                Got::Partial(bytes) => return cut_inside(&frame(i), &bytes),
                other => {
                    return Err(wire::mismatch(
                        &format!(
                            "the echo of frame {} of the {sent} queued when SIGTERM came",
                            i + 1
                        ),
                        Some(frame(i)),
                        &other,
                    ));
                }
            }
        }
        expect_goodbye_shutdown(&mut conn)
    })()
    .into()
}

/// SIGTERM while a large Data frame is half echoed: the frame is finished first (the runner
/// sends its rest after the signal), then Goodbye (Shutdown) lands on a frame boundary
/// (PROTOCOL.md §8 S35). A Goodbye in the middle would be read as the frame's payload.
pub(super) fn shutdown_mid_frame(ctx: &mut ServerCtx) -> Verdict {
    (|| {
        let half = half_sent(ctx, 11, 64 * 1024)?;
        if !half.began {
            return half.finish(
                "the echo had not begun 1 s after 64 KiB of a Data frame, so no shutdown could \
                 come in the middle of one (PROTOCOL.md §4 item 3 recommends echoing as bytes \
                 arrive)",
            );
        }
        let HalfSent {
            mut conn,
            body,
            frame,
            sent,
            ..
        } = half;
        ctx.terminate()?;
        // Time for the server to see the signal while the frame is still unfinished.
        conn.pause(Duration::from_millis(200));
        let writer = conn.try_clone().map_err(|e| e.to_string())?;
        let rest = frame[sent..].to_vec();
        let (timeout, deadline) = (conn.timeout, conn.deadline);
        let sender = thread::spawn(move || wire::write_until(&writer, &rest, timeout, deadline));
        let verdict = match conn.next()? {
            Got::Frame {
                kind: wire::DATA,
                payload: echoed,
            } if echoed == body => expect_goodbye_shutdown(&mut conn),
            Got::Partial(bytes) => cut_inside(&frame, &bytes),
            Got::Frame {
                kind: wire::DATA,
                payload: echoed,
            } => Err(format!(
                "the echo of the frame begun before SIGTERM differs: {}",
                first_difference(&body, &echoed)
            )),
            other => Err(wire::mismatch(
                "the whole echo of the Data frame whose echo had begun",
                None,
                &other,
            )),
        };
        conn.cut();
        let _ = sender.join();
        verdict
    })()
    .into()
}
