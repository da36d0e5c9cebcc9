//! One session: mode detection (§1), raw echo, and the framed session with its bugs.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::bug::Bug;
use crate::conn::{Conn, read_varint, varint};
use crate::{MAX_CONTROL, MAX_FRAME, POLL, PREAMBLE, SHUTDOWN};

pub(crate) fn serve(stream: UnixStream, bug: Bug) -> io::Result<()> {
    let mut c = Conn {
        s: stream,
        buf: Vec::new(),
        bug,
        eof: false,
        framed: false,
        draining: false,
        reads: 0,
    };
    if bug == Bug::Silent {
        io::copy(&mut c.s, &mut io::sink())?;
        return Ok(());
    }
    // §1: detection. The pause restarts with each byte that keeps the stream a prefix.
    loop {
        let n = c.buf.len().min(8);
        let prefix_in_first_read = c.bug == Bug::PreambleInOneRead && c.reads == 1 && n < 8;
        if c.buf[..n] != PREAMBLE[..n] || prefix_in_first_read {
            if c.bug == Bug::PrefixBytesLost {
                let at = c
                    .buf
                    .iter()
                    .zip(PREAMBLE)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                c.buf.drain(..at);
            }
            if c.bug == Bug::DetectBytesLost {
                c.buf.clear();
            }
            return raw(c);
        }
        if n == 8 {
            c.buf.drain(..8);
            if c.bug == Bug::FirstReadRestDropped && c.reads == 1 {
                drop_after_first_frame(&mut c.buf);
            }
            c.s.set_read_timeout(Some(POLL))?;
            c.framed = true;
            return framed(c);
        }
        let pause =
            (!c.buf.is_empty() && c.bug != Bug::NoPause).then(|| Duration::from_millis(150));
        c.s.set_read_timeout(pause)?;
        if !c.fill()? {
            if c.buf.is_empty() {
                if c.bug == Bug::ErrorOnEmptyConnection {
                    c.refuse(4, "no preamble")?;
                }
                return Ok(());
            }
            if c.eof && c.bug == Bug::PrefixEofDropped {
                return Ok(());
            }
            if c.bug == Bug::DetectBytesLost {
                c.buf.clear();
            }
            return raw(c);
        }
    }
}

/// Keeps only the first whole frame of `buf` (for `FirstReadRestDropped`).
fn drop_after_first_frame(buf: &mut Vec<u8>) {
    if buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        buf.truncate(buf.len().min(4 + len));
    }
}

/// §2: echo everything; on EOF, write the rest, half-close, close.
fn raw(mut c: Conn) -> io::Result<()> {
    c.s.set_read_timeout(None)?;
    let pending = std::mem::take(&mut c.buf);
    c.write(&pending)?;
    let mut chunk = [0u8; 64 * 1024];
    while !c.eof {
        match c.s.read(&mut chunk)? {
            0 => break,
            n => c.write(&chunk[..n])?,
        }
    }
    if c.bug == Bug::RawNoHalfClose {
        std::thread::sleep(Duration::from_secs(3600));
    }
    c.s.shutdown(Shutdown::Write)
}

/// §3-4: the framed session, echoing Data as it arrives.
fn framed(mut c: Conn) -> io::Result<()> {
    let mut limit = MAX_FRAME;
    let mut greeted = false;
    loop {
        if c.bug == Bug::DrainDropsQueued && SHUTDOWN.load(Ordering::SeqCst) {
            return c.send(3, &[1]);
        }
        if c.bug == Bug::ErrorBeforeEcho && has_unknown_kind(&c.buf) {
            return c.refuse(3, "unknown kind");
        }
        // A partial header at the end is dropped.
        let reads_before = c.reads;
        if !c.want(4)? {
            if c.bug == Bug::ErrorOnPartialHeader && c.eof && !c.buf.is_empty() {
                return c.refuse(5, "partial header");
            }
            return c.end();
        }
        let len = u32::from_be_bytes([c.buf[0], c.buf[1], c.buf[2], c.buf[3]]);
        if len == 0 {
            if c.bug == Bug::EmptyFrameCloses {
                return Ok(());
            }
            return c.refuse(2, "empty frame");
        }
        let first_check = if c.bug == Bug::ControlLimited {
            limit
        } else {
            limit.max(MAX_CONTROL)
        };
        if len > first_check && c.bug != Bug::LengthAfterKind {
            return c.refuse(1, "frame too large");
        }
        if !c.want(5)? {
            return c.end();
        }
        if c.bug == Bug::HeaderInPieces && c.reads - reads_before >= 3 {
            return c.refuse(3, "a header in pieces");
        }
        if len > first_check {
            return c.refuse(1, "frame too large");
        }
        let kind = c.buf[4];
        match kind {
            2 if c.bug == Bug::AnswersClientError => {
                return c.refuse(4, "the client sent an Error");
            }
            2 => return Ok(()),
            0 | 1 | 3 => {}
            _ if c.bug == Bug::UnknownKindWaits => {
                c.want(4 + len as usize)?;
                return c.refuse(3, "unknown kind");
            }
            _ => return c.refuse(3, "unknown kind"),
        }
        if kind == 1 {
            let too_large = if c.bug == Bug::LimitOffByOne {
                len >= limit
            } else {
                len > limit
            };
            if too_large {
                return c.refuse(1, "frame too large");
            }
            if !greeted && c.bug != Bug::NoHelloRequired {
                return c.refuse(4, "Data before Hello");
            }
            if !data(&mut c, len)? {
                return Ok(());
            }
            continue;
        }
        if len > MAX_CONTROL {
            return c.refuse(1, "control frame too large");
        }
        let misplaced = match (kind, c.bug) {
            (0, Bug::DuplicateHelloOk) | (3, Bug::NoHelloRequired) => false,
            _ => (kind == 0) == greeted,
        };
        if misplaced && c.bug != Bug::PayloadBeforePlace {
            return c.refuse(4, "frame out of place");
        }
        if !c.want(4 + len as usize)? {
            return c.end();
        }
        let payload: Vec<u8> = c.buf[5..4 + len as usize].to_vec();
        c.buf.drain(..4 + len as usize);
        let mut at = 0;
        if kind == 3 {
            let Some(reason) = read_varint(&payload, &mut at, 3, 16) else {
                return c.refuse(5, "bad Goodbye");
            };
            if misplaced {
                return c.refuse(4, "frame out of place");
            }
            if reason > 2 && c.bug == Bug::UnknownReasonMalformed {
                return c.refuse(5, "unknown reason");
            }
            if c.bug == Bug::GoodbyeUnanswered {
                return Ok(());
            }
            c.send(3, &[0])?;
            // (What is already buffered is byte for byte its own echo.)
            if c.bug == Bug::EchoAfterGoodbye && !c.buf.is_empty() {
                let rest = std::mem::take(&mut c.buf);
                c.write(&rest)?;
            }
            return Ok(());
        }
        // A Hello.
        let version = read_varint(&payload, &mut at, 3, 16);
        let max = read_varint(&payload, &mut at, 5, 32);
        let agent_len = read_varint(&payload, &mut at, 10, 63);
        let agent_ok = agent_len.is_some_and(|n| {
            payload
                .get(at..at + n as usize)
                .is_some_and(|a| c.bug == Bug::AgentNotChecked || std::str::from_utf8(a).is_ok())
        });
        let trailing = agent_len.is_some_and(|n| payload.len() > at + n as usize);
        let (Some(version), Some(max), true) = (version, max, agent_ok) else {
            return c.refuse(5, "malformed Hello");
        };
        if c.bug == Bug::StrictHello && trailing {
            return c.refuse(5, "trailing bytes in Hello");
        }
        if misplaced {
            return c.refuse(4, "a second Hello");
        }
        if version == 0 && c.bug != Bug::AcceptsVersionZero {
            return c.refuse(6, "version 0");
        }
        if max == 0 && c.bug != Bug::AcceptsMaxFrameZero {
            return c.refuse(5, "max_frame 0");
        }
        if c.bug != Bug::LimitIgnoresClient && max > 0 {
            limit = limit.min(max as u32);
        }
        greeted = true;
        let chosen = if c.bug == Bug::NoNegotiateDown {
            version
        } else {
            1
        };
        let mut answer = varint(chosen);
        answer.extend(varint(limit.into()));
        answer.extend(varint(6));
        answer.extend_from_slice(b"mutant");
        c.send(0, &answer)?;
    }
}

/// A Data frame of body length `len` whose header is at the start of the buffer, echoed as
/// it arrives (or, with `HoldsFrames`, once whole). False when the session is over.
fn data(c: &mut Conn, len: u32) -> io::Result<bool> {
    let whole = 4 + len as usize;
    if c.bug == Bug::HoldsFrames || (c.bug == Bug::DropsEmptyData && len == 1) {
        while c.buf.len() < whole {
            if !c.fill_mid_frame()? {
                return Ok(false);
            }
        }
        let frame: Vec<u8> = c.buf.drain(..whole).collect();
        if len > 1 || c.bug != Bug::DropsEmptyData {
            c.write(&frame)?;
        }
        return Ok(true);
    }
    // Cut-through: the header, then the payload as it arrives.
    let header: Vec<u8> = c.buf.drain(..5).collect();
    c.write(&header)?;
    let mut left = len as usize - 1;
    while left > 0 {
        if c.buf.is_empty() && !c.fill_mid_frame()? {
            return Ok(false);
        }
        let n = left.min(c.buf.len());
        let part: Vec<u8> = c.buf.drain(..n).collect();
        c.write(&part)?;
        left -= n;
    }
    Ok(true)
}

/// Whether the whole frames at the start of `buf` include one of an unknown kind (for
/// `ErrorBeforeEcho`).
fn has_unknown_kind(buf: &[u8]) -> bool {
    let mut at = 0;
    while buf.len() >= at + 5 {
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len == 0 || buf.len() < at + 4 + len {
            return false;
        }
        if buf[at + 4] > 3 {
            return true;
        }
        at += 4 + len;
    }
    false
}
