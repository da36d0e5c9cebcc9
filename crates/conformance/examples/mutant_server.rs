//! A small, blocking, thread-per-connection implementation of a PROTOCOL.md server, written
//! for the runner's own tests: `mutant_server SOCKET [BUG]`.
//!
//! Without BUG it passes every case (shutdown is UNIMPLEMENTED: SIGTERM just kills it). With
//! BUG it carries that one deliberate bug, and `tests/mutants.rs` checks that exactly the
//! cases meant to catch it fail. It uses nothing from udsecho but the constants.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

const PREAMBLE: &[u8; 8] = b"\0UDSECHO";
const MAX_FRAME: u32 = 8 * 1024 * 1024;
const MAX_CONTROL: u32 = 4096;

/// The one bug this instance carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// §1: raw data that began as a preamble prefix loses that prefix.
    PrefixBytesLost,
    /// §1: no pause rule: a strict prefix waits for more forever.
    NoPause,
    /// §2: raw mode never half-closes back after the client's EOF.
    RawNoHalfClose,
    /// §3: L is judged only once the kind byte is there.
    LengthAfterKind,
    /// §3.1: bytes after a Hello's last field are Malformed.
    StrictHello,
    /// §3.2: a client's Error frame is answered with one.
    AnswersClientError,
    /// §3.3: an unknown Goodbye reason is Malformed.
    UnknownReasonMalformed,
    /// §4: frames already buffered after the client's Goodbye are still echoed.
    EchoAfterGoodbye,
    /// §4.1: the server answers with the client's version, whatever it is.
    NoNegotiateDown,
    /// §4.2: the client's max_frame is not taken into account.
    LimitIgnoresClient,
    /// §4.2: control frames are held to the Data limit.
    ControlLimited,
    /// §4.3: a Hello's payload is decoded before its place is judged.
    PayloadBeforePlace,
    /// Reads everything and never answers (for the runner's timeouts).
    Silent,
}

impl Bug {
    fn parse(name: &str) -> Option<Bug> {
        Some(match name {
            "none" => Bug::None,
            "prefix-bytes-lost" => Bug::PrefixBytesLost,
            "no-pause" => Bug::NoPause,
            "raw-no-half-close" => Bug::RawNoHalfClose,
            "length-after-kind" => Bug::LengthAfterKind,
            "strict-hello" => Bug::StrictHello,
            "answers-client-error" => Bug::AnswersClientError,
            "unknown-reason-malformed" => Bug::UnknownReasonMalformed,
            "echo-after-goodbye" => Bug::EchoAfterGoodbye,
            "no-negotiate-down" => Bug::NoNegotiateDown,
            "limit-ignores-client" => Bug::LimitIgnoresClient,
            "control-limited" => Bug::ControlLimited,
            "payload-before-place" => Bug::PayloadBeforePlace,
            "silent" => Bug::Silent,
            _ => return None,
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, bug) = match args.as_slice() {
        [socket] => (socket, Bug::None),
        [socket, bug] => match Bug::parse(bug) {
            Some(bug) => (socket, bug),
            None => {
                eprintln!("mutant_server: unknown bug {bug:?}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: mutant_server SOCKET [BUG]");
            std::process::exit(2);
        }
    };
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mutant_server: {socket}: {e}");
            std::process::exit(1);
        }
    };
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream, bug);
        });
    }
}

/// A connection: its socket, bytes read and not yet used, the bug.
struct Conn {
    s: UnixStream,
    buf: Vec<u8>,
    bug: Bug,
    eof: bool,
}

impl Conn {
    /// Reads once more; false at end of stream (or on a read timeout).
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        match self.s.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads until `n` bytes are buffered; false if the stream ended first.
    fn want(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(payload);
        self.s.write_all(&out)
    }

    /// An Error frame, then the close.
    fn refuse(&mut self, code: u16, message: &str) -> io::Result<()> {
        let mut payload = varint(code.into());
        payload.extend(varint(message.len() as u64));
        payload.extend_from_slice(message.as_bytes());
        self.send(2, &payload)
    }
}

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Reads a varint of at most `max` bytes from `p` at `*at`.
fn read_varint(p: &[u8], at: &mut usize, max: usize, bits: u32) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..max {
        let b = *p.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (v >> bits == 0).then_some(v);
        }
    }
    None
}

fn serve(stream: UnixStream, bug: Bug) -> io::Result<()> {
    let mut c = Conn {
        s: stream,
        buf: Vec::new(),
        bug,
        eof: false,
    };
    if bug == Bug::Silent {
        io::copy(&mut c.s, &mut io::sink())?;
        return Ok(());
    }
    // §1: detection. The pause restarts with each byte that keeps the stream a prefix.
    loop {
        let n = c.buf.len().min(8);
        if c.buf[..n] != PREAMBLE[..n] {
            if c.bug == Bug::PrefixBytesLost {
                let at = c
                    .buf
                    .iter()
                    .zip(PREAMBLE)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                c.buf.drain(..at);
            }
            return raw(c);
        }
        if n == 8 {
            c.buf.drain(..8);
            c.s.set_read_timeout(None)?;
            return framed(c);
        }
        let pause =
            (!c.buf.is_empty() && c.bug != Bug::NoPause).then(|| Duration::from_millis(150));
        c.s.set_read_timeout(pause)?;
        if !c.fill()? {
            if c.buf.is_empty() {
                return Ok(());
            }
            c.s.set_read_timeout(None)?;
            return raw(c);
        }
    }
}

/// §2: echo everything; on EOF, write the rest, half-close, close.
fn raw(mut c: Conn) -> io::Result<()> {
    let pending = std::mem::take(&mut c.buf);
    c.s.write_all(&pending)?;
    let mut chunk = [0u8; 64 * 1024];
    while !c.eof {
        match c.s.read(&mut chunk)? {
            0 => break,
            n => c.s.write_all(&chunk[..n])?,
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
        // A partial header at the end is dropped.
        if !c.want(4)? {
            return Ok(());
        }
        let len = u32::from_be_bytes([c.buf[0], c.buf[1], c.buf[2], c.buf[3]]);
        if len == 0 {
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
            return Ok(());
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
            _ => return c.refuse(3, "unknown kind"),
        }
        if kind == 1 {
            if len > limit {
                return c.refuse(1, "frame too large");
            }
            if !greeted {
                return c.refuse(4, "Data before Hello");
            }
            // Cut-through: the header, then the payload as it arrives.
            c.s.write_all(&c.buf[..5])?;
            c.buf.drain(..5);
            let mut left = len as usize - 1;
            while left > 0 {
                if c.buf.is_empty() && !c.fill()? {
                    return Ok(());
                }
                let n = left.min(c.buf.len());
                c.s.write_all(&c.buf[..n])?;
                c.buf.drain(..n);
                left -= n;
            }
            continue;
        }
        if len > MAX_CONTROL {
            return c.refuse(1, "control frame too large");
        }
        let misplaced = (kind == 0) == greeted;
        if misplaced && c.bug != Bug::PayloadBeforePlace {
            return c.refuse(4, "frame out of place");
        }
        if !c.want(4 + len as usize)? {
            return Ok(());
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
            c.send(3, &[0])?;
            // (What is already buffered is byte for byte its own echo.)
            if c.bug == Bug::EchoAfterGoodbye && !c.buf.is_empty() {
                let rest = std::mem::take(&mut c.buf);
                c.s.write_all(&rest)?;
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
                .is_some_and(|a| std::str::from_utf8(a).is_ok())
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
        if version == 0 {
            return c.refuse(6, "version 0");
        }
        if max == 0 {
            return c.refuse(5, "max_frame 0");
        }
        if c.bug != Bug::LimitIgnoresClient {
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
