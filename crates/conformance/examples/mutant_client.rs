//! A small, blocking implementation of a PROTOCOL.md client, written for the runner's own
//! tests: `mutant_client SOCKET [BUG]`. It sends each line of stdin as a Data frame, checks
//! each echo, says Goodbye and exits 0; it exits 1 when the server refuses or breaks the
//! session. With BUG it carries that one deliberate bug (see `tests/mutants.rs`).

use std::io::{self, BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

const PREAMBLE: &[u8; 8] = b"\0UDSECHO";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// §1: a typo in the preamble.
    PreambleTypo,
    /// §3.1: a server Hello with bytes after its last field is refused.
    StrictHello,
    /// §3.2: an Error frame from the server ends the session "successfully".
    ExitZeroOnError,
    /// §3.3: the server's Goodbye (Shutdown) is answered with an Error frame.
    ErrorOnGoodbye,
    /// §4: every read is taken to hold whole frames.
    OneReadPerFrame,
    /// §4: an echo cut short by the server's close counts as the end.
    TruncationOk,
    /// §4 (Hello): max_frame 0 in the client's Hello.
    MaxFrameZero,
    /// §4.1: whatever version the server chose is accepted.
    AcceptsAnyVersion,
    /// §4.2: the server's max_frame is ignored.
    IgnoresMaxFrame,
    /// §4: the session ends with Goodbye (Shutdown) instead of Goodbye (Done).
    GoodbyeReasonShutdown,
    /// After a session that went well: an escape sequence on stderr (it would rewrite the
    /// runner's terminal if the runner printed it as it is) and exit 1.
    EscapeStderr,
}

fn parse(name: &str) -> Option<Bug> {
    Some(match name {
        "none" => Bug::None,
        "preamble-typo" => Bug::PreambleTypo,
        "strict-hello" => Bug::StrictHello,
        "exit-zero-on-error" => Bug::ExitZeroOnError,
        "error-on-goodbye" => Bug::ErrorOnGoodbye,
        "one-read-per-frame" => Bug::OneReadPerFrame,
        "truncation-ok" => Bug::TruncationOk,
        "max-frame-zero" => Bug::MaxFrameZero,
        "accepts-any-version" => Bug::AcceptsAnyVersion,
        "ignores-max-frame" => Bug::IgnoresMaxFrame,
        "goodbye-reason-shutdown" => Bug::GoodbyeReasonShutdown,
        "escape-stderr" => Bug::EscapeStderr,
        _ => return None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bug = match args.get(1).map(|b| parse(b)) {
        None => Bug::None,
        Some(Some(bug)) => bug,
        Some(None) => {
            eprintln!("mutant_client: unknown bug");
            return ExitCode::from(2);
        }
    };
    let Some(socket) = args.first() else {
        eprintln!("usage: mutant_client SOCKET [BUG]");
        return ExitCode::from(2);
    };
    match session(socket, bug) {
        Ok(()) if bug == Bug::EscapeStderr => {
            eprintln!("\x1b[1A\x1b[2K\rOK            4/client-session");
            ExitCode::FAILURE
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mutant_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
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

fn read_varint(p: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..5 {
        let b = *p.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Frames from the server.
struct Reader {
    s: UnixStream,
    buf: Vec<u8>,
    bug: Bug,
}

enum In {
    Frame(u8, Vec<u8>),
    Eof,
}

impl Reader {
    fn next(&mut self) -> io::Result<In> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= 4 + len && len >= 1 {
                    let whole: Vec<u8> = self.buf.drain(..4 + len).collect();
                    return Ok(In::Frame(whole[4], whole[5..].to_vec()));
                }
                if self.bug == Bug::OneReadPerFrame {
                    return Err(io::Error::other("a frame did not arrive in one read"));
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                if self.buf.is_empty() || self.bug == Bug::TruncationOk {
                    return Ok(In::Eof);
                }
                return Err(io::Error::other("the server closed inside a frame"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if self.bug == Bug::OneReadPerFrame && self.buf.len() < 5 {
                return Err(io::Error::other("a frame did not arrive in one read"));
            }
        }
    }
}

fn session(socket: &str, bug: Bug) -> Result<(), String> {
    let lines: Vec<String> = io::stdin().lock().lines().map_while(Result::ok).collect();
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
    let io = |e: io::Error| e.to_string();
    let preamble: &[u8] = if bug == Bug::PreambleTypo {
        b"\0UDSECH0"
    } else {
        PREAMBLE
    };
    s.write_all(preamble).map_err(io)?;
    let mut hello = varint(1);
    hello.extend(varint(if bug == Bug::MaxFrameZero { 0 } else { 1 << 20 }));
    hello.extend(varint(6));
    hello.extend_from_slice(b"mutant");
    s.write_all(&frame(0, &hello)).map_err(io)?;
    let mut r = Reader {
        s: s.try_clone().map_err(io)?,
        buf: Vec::new(),
        bug,
    };
    let limit = match r.next().map_err(io)? {
        In::Frame(0, p) => {
            let mut at = 0;
            let version = read_varint(&p, &mut at).ok_or("bad Hello")?;
            let max = read_varint(&p, &mut at).ok_or("bad Hello")?;
            let agent = read_varint(&p, &mut at).ok_or("bad Hello")? as usize;
            if bug == Bug::StrictHello && p.len() != at + agent {
                return Err("trailing bytes in the server's Hello".into());
            }
            if version != 1 && bug != Bug::AcceptsAnyVersion {
                return Err(format!("the server chose version {version}"));
            }
            max as usize
        }
        In::Frame(2, _) if bug == Bug::ExitZeroOnError => return Ok(()),
        _ => return Err("no Hello from the server".into()),
    };
    for line in &lines {
        if line.len() + 1 > limit && bug != Bug::IgnoresMaxFrame {
            return Err(format!(
                "a line of {} bytes is above the server's max_frame",
                line.len()
            ));
        }
        s.write_all(&frame(1, line.as_bytes())).map_err(io)?;
        match r.next().map_err(io)? {
            In::Frame(1, p) if p == line.as_bytes() => {}
            In::Frame(2, _) if bug == Bug::ExitZeroOnError => return Ok(()),
            In::Frame(3, _) if bug == Bug::ErrorOnGoodbye => {
                s.write_all(&frame(2, &[4, 0])).map_err(io)?;
                return Err("Goodbye".into());
            }
            In::Eof if bug == Bug::TruncationOk => return Ok(()),
            _ => return Err("a bad echo".into()),
        }
    }
    let reason = if bug == Bug::GoodbyeReasonShutdown {
        1
    } else {
        0
    };
    s.write_all(&frame(3, &[reason])).map_err(io)?;
    match r.next().map_err(io)? {
        In::Frame(3, _) | In::Eof => Ok(()),
        _ => Err("no Goodbye from the server".into()),
    }
}
