//! A connection: its socket, what was read and not yet used, and the frames it writes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::SHUTDOWN;
use crate::bug::Bug;

/// What one read brought.
pub(crate) enum Read1 {
    Bytes,
    Eof,
    /// The read timeout passed with nothing.
    Nothing,
}

/// A connection: its socket, bytes read and not yet used, the bug.
pub(crate) struct Conn {
    pub(crate) s: UnixStream,
    pub(crate) buf: Vec<u8>,
    pub(crate) bug: Bug,
    pub(crate) eof: bool,
    /// Framed mode: reads wake every `POLL` to look at `SHUTDOWN`.
    pub(crate) framed: bool,
    /// SIGTERM seen: only what is already queued is read from now on.
    pub(crate) draining: bool,
    /// Reads so far (for `HeaderInPieces`).
    pub(crate) reads: usize,
}

impl Conn {
    pub(crate) fn read_once(&mut self) -> io::Result<Read1> {
        let mut chunk = [0u8; 64 * 1024];
        match self.s.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(Read1::Eof)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.reads += 1;
                Ok(Read1::Bytes)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Read1::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Read1::Nothing),
            Err(e) => Err(e),
        }
    }

    /// Reads once more; false at end of stream, when the detection pause passes, or (while
    /// draining) when nothing more is queued.
    pub(crate) fn fill(&mut self) -> io::Result<bool> {
        loop {
            match self.read_once()? {
                Read1::Bytes => return Ok(true),
                Read1::Eof => return Ok(false),
                Read1::Nothing if !self.framed || self.draining => return Ok(false),
                Read1::Nothing => {
                    if SHUTDOWN.load(Ordering::SeqCst) {
                        self.draining = true;
                    }
                }
            }
        }
    }

    /// Reads until `n` bytes are buffered; false if the stream ended (or the drain found
    /// nothing more) first.
    pub(crate) fn want(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes all of `bytes`; with `DropsAfterStall`, what the peer has not taken 400 ms
    /// later is dropped.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.bug != Bug::DropsAfterStall {
            return self.s.write_all(bytes);
        }
        let give_up = Instant::now() + Duration::from_millis(400);
        let mut at = 0;
        while at < bytes.len() {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.s.set_write_timeout(Some(left))?;
            match self.s.write(&bytes[at..]) {
                Ok(n) => at += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(payload);
        self.write(&out)
    }

    /// An Error frame, then the close (with `ErrorKillsServer`, the whole server's end).
    pub(crate) fn refuse(&mut self, code: u16, message: &str) -> io::Result<()> {
        let mut payload = varint(code.into());
        payload.extend(varint(message.len() as u64));
        payload.extend_from_slice(message.as_bytes());
        self.send(2, &payload)?;
        if self.bug == Bug::ErrorKillsServer {
            std::process::exit(1);
        }
        Ok(())
    }

    /// The session cannot go on (end of stream, or the drain is over): during a drain that
    /// is Goodbye (Shutdown); otherwise a plain close.
    pub(crate) fn end(&mut self) -> io::Result<()> {
        if self.draining {
            self.send(3, &[1])?;
        }
        Ok(())
    }
}

pub(crate) fn varint(mut n: u64) -> Vec<u8> {
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
pub(crate) fn read_varint(p: &[u8], at: &mut usize, max: usize, bits: u32) -> Option<u64> {
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

impl Conn {
    /// Inside a Data frame: waits for more of it, even while draining (its echo has begun
    /// and is finished first). False at end of stream, or when `GoodbyeMidFrame` has cut it.
    pub(crate) fn fill_mid_frame(&mut self) -> io::Result<bool> {
        loop {
            match self.read_once()? {
                Read1::Bytes => return Ok(true),
                Read1::Eof => return Ok(false),
                Read1::Nothing => {
                    if self.bug == Bug::GoodbyeMidFrame && SHUTDOWN.load(Ordering::SeqCst) {
                        self.send(3, &[1])?;
                        return Ok(false);
                    }
                }
            }
        }
    }
}
