//! A first look at the server, before any case: does it answer a Hello, and does it echo
//! raw bytes? Said in one line at the top of the report.
//!
//! Only what the server was seen doing counts. An Error frame or a close in answer to raw
//! bytes is what a framed-only server may do (PROTOCOL.md §1): its raw cases are then
//! UNIMPLEMENTED without being run. Its own preamble and Hello echoed back is what a raw
//! echo server does (forced raw mode, §8 S7; socat EXEC:cat, the Go tutorial): its framed cases
//! are UNIMPLEMENTED at once instead of each waiting for a Hello that never comes. Silence,
//! or anything else, proves no absence: the cases run and judge it (and the cases that need
//! a session fail at once when a Hello got no answer at all).

use std::time::Duration;

use super::{ServerCtx, first_difference};
use crate::case::{Feature, Need, Verdict};
use crate::wire::{self, Got, PREAMBLE};

/// Raw bytes the probe sends: its first byte differs from the preamble's, so a server in
/// auto mode must take it as raw at once; a framed-only server must refuse it at once (it is
/// more than the 8 bytes §8 S5 lets it wait for).
const RAW_PROBE: &[u8] = b"udsecho-conformance raw probe\n";

/// What the probe saw of raw mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawMode {
    /// Its bytes came back.
    Echoes,
    /// An Error frame or a close, as a framed-only server may: what it did.
    Refused(String),
    /// Something else (silence, a wrong echo): the raw cases will say what.
    Unclear(String),
}

/// What the probe saw of framed sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FramedMode {
    /// It answered the Hello with a Hello.
    Answers,
    /// It echoed the preamble back: a raw echo server.
    RawEcho,
    /// Nothing came back at all within the timeout: what the probe saw.
    Silent(String),
    /// Something else: the framed cases will say what.
    Unclear(String),
}

/// What the server speaks, as seen by the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) raw: RawMode,
    pub(crate) framed: FramedMode,
}

impl Profile {
    /// Probes the server behind `ctx` (one connection for each mode, within the ctx's
    /// deadline).
    pub(crate) fn probe(ctx: &ServerCtx) -> Profile {
        let framed = probe_framed(ctx).unwrap_or_else(FramedMode::Unclear);
        let raw = probe_raw(ctx).unwrap_or_else(RawMode::Unclear);
        Profile { raw, framed }
    }

    /// Why the cases that need a session can stop at once, if they can.
    pub(crate) fn silence(&self) -> Option<String> {
        match &self.framed {
            FramedMode::Silent(why) => Some(format!("{why} when the runner first sent one")),
            _ => None,
        }
    }

    /// The verdict of a case with `needs`, decided without running it, if it can be.
    pub(crate) fn verdict(&self, needs: &[Need]) -> Option<Verdict> {
        if needs.contains(&Need::Framed) && self.framed == FramedMode::RawEcho {
            return Some(Verdict::Unimplemented(
                Feature::Framed,
                "framed mode: when first probed, the server echoed the preamble and Hello back \
                 (no framed session)"
                    .to_owned(),
            ));
        }
        if needs.contains(&Need::Raw)
            && let RawMode::Refused(how) = &self.raw
        {
            return Some(Verdict::Unimplemented(
                Feature::Raw,
                format!(
                    "raw mode: first probed with raw bytes, the server {how}, as a framed-only \
                     server may"
                ),
            ));
        }
        None
    }

    /// The one line that says it.
    pub(crate) fn line(&self) -> String {
        let framed = match &self.framed {
            FramedMode::Answers => "answers a Hello",
            FramedMode::RawEcho => {
                return "target: a raw echo server: it echoed the preamble and Hello back, so it \
                        has no framed session; its framed cases are UNIMPLEMENTED"
                    .to_owned();
            }
            FramedMode::Silent(_) => "no answer to a Hello",
            FramedMode::Unclear(_) => "no valid answer to a Hello",
        };
        let raw = match &self.raw {
            RawMode::Echoes => "echoes raw bytes (auto detection)".to_owned(),
            RawMode::Refused(how) => {
                format!("framed-only ({how}): its raw cases are UNIMPLEMENTED")
            }
            RawMode::Unclear(what) => format!("raw bytes: {what}"),
        };
        format!("target: {framed}; {raw}")
    }
}

/// The preamble and a Hello: a Hello back, or our own bytes back?
fn probe_framed(ctx: &ServerCtx) -> Result<FramedMode, String> {
    let mut conn = ctx.connect()?;
    let mut opening = PREAMBLE.to_vec();
    opening.extend(wire::hello(1, wire::MAX_CONTROL));
    conn.send(&opening)?;
    let first = conn.peek_n(PREAMBLE.len())?.to_vec();
    if first == PREAMBLE {
        return Ok(FramedMode::RawEcho);
    }
    if first.is_empty() && !conn.eof() {
        return Ok(FramedMode::Silent(format!(
            "no answer within {:?} (timed out)",
            conn.timeout
        )));
    }
    match conn.expect_hello() {
        Ok(_) => Ok(FramedMode::Answers),
        Err(e) => Ok(FramedMode::Unclear(e)),
    }
}

/// Raw bytes, and time to refuse them before the half-close.
fn probe_raw(ctx: &ServerCtx) -> Result<RawMode, String> {
    let mut conn = ctx.connect()?;
    conn.accept_max = wire::MAX_CONTROL;
    conn.send(RAW_PROBE)?;
    let mut half_closed = false;
    loop {
        let first = conn.peek_for(ctx.timeout)?.first().copied();
        return match first {
            // The echo's first byte: only an echo starts with `u` (a frame starts with 0).
            Some(b'u') => {
                let back = conn.raw(RAW_PROBE.len())?;
                Ok(if back == RAW_PROBE {
                    RawMode::Echoes
                } else {
                    RawMode::Unclear(format!(
                        "a wrong echo ({})",
                        first_difference(RAW_PROBE, &back)
                    ))
                })
            }
            Some(0) => match conn.next()? {
                got @ Got::Frame {
                    kind: wire::ERROR, ..
                } => Ok(RawMode::Refused(format!(
                    "answered with {}",
                    got.describe()
                ))),
                other => Ok(RawMode::Unclear(format!(
                    "answered with {}",
                    other.describe()
                ))),
            },
            Some(_) => Ok(RawMode::Unclear(format!(
                "answered with [{}]",
                wire::hex(conn.peek_for(Duration::ZERO)?)
            ))),
            None if conn.eof() && !half_closed => {
                Ok(RawMode::Refused("closed the connection".to_owned()))
            }
            None if conn.eof() => Ok(RawMode::Unclear(format!(
                "nothing came back within {:?}, and at the client's half-close the server \
                 closed: the bytes were lost",
                ctx.timeout
            ))),
            None if conn.out_of_time() => Ok(RawMode::Unclear(
                "nothing came back before the probe's time ran out".to_owned(),
            )),
            None if !half_closed => {
                conn.half_close()?;
                half_closed = true;
                continue;
            }
            None => Ok(RawMode::Unclear(format!(
                "nothing came back within {:?}, nor after the client's half-close",
                ctx.timeout
            ))),
        };
    }
}
