//! One connection to the target: writes and reads, every wait bounded twice (by `--timeout`
//! and by the case's deadline), and what a read [`Got`].

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::build::*;
use super::parse::{Fields, PeerHello, parse_hello};

/// One thing read from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Got {
    /// A whole frame: kind byte and payload.
    Frame { kind: u8, payload: Vec<u8> },
    /// The peer closed (or reset) between frames.
    Eof,
    /// The peer closed inside a frame; these are its bytes.
    Partial(Vec<u8>),
    /// Nothing more arrived within the timeout; these bytes of a frame had.
    Timeout(Vec<u8>),
    /// The case's time ran out (the peer may still be sending); these bytes had arrived.
    OutOfTime(Vec<u8>),
}

impl Got {
    /// What it is, for a person, with its bytes.
    pub(crate) fn describe(&self) -> String {
        match self {
            Got::Frame { kind, payload } => {
                let name = match *kind {
                    HELLO => "Hello",
                    DATA => "Data",
                    ERROR => "Error",
                    GOODBYE => "Goodbye",
                    _ => "a frame of unknown kind",
                };
                let mut text = format!("{name} [{}]", hex(&frame(*kind, payload)));
                if *kind == ERROR {
                    let mut f = Fields::new(payload);
                    if let (Ok(code), Ok(msg)) = (f.u16("code"), f.string("message")) {
                        text = format!(
                            "Error code {code} {msg:?} [{}]",
                            hex(&frame(*kind, payload))
                        );
                    }
                }
                text
            }
            Got::Eof => "end of stream".to_owned(),
            Got::Partial(bytes) => format!("[{}] then end of stream inside a frame", hex(bytes)),
            Got::Timeout(bytes) if bytes.is_empty() => "nothing (timed out)".to_owned(),
            Got::Timeout(bytes) => format!("[{}] then nothing more (timed out)", hex(bytes)),
            Got::OutOfTime(bytes) if bytes.is_empty() => {
                "nothing before the case's time ran out (--timeout plus 3 s)".to_owned()
            }
            Got::OutOfTime(bytes) => format!(
                "[{}] and no end before the case's time ran out (--timeout plus 3 s)",
                hex(bytes)
            ),
        }
    }
}

/// Writes all of `bytes` to `stream`: each write may wait up to `timeout` for the peer to
/// take something, all of them together until `deadline`.
pub(crate) fn write_until(
    mut stream: &UnixStream,
    bytes: &[u8],
    timeout: Duration,
    deadline: Instant,
) -> Result<(), String> {
    let mut at = 0;
    while at < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "sending {} bytes: the case's time ran out after the peer had taken {at}",
                bytes.len()
            ));
        }
        stream
            .set_write_timeout(Some(left.min(timeout)))
            .map_err(|e| e.to_string())?;
        match stream.write(&bytes[at..]) {
            Ok(0) => return Err("sending: the socket takes nothing more".to_owned()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && Instant::now() < deadline =>
            {
                return Err(format!(
                    "sending {} bytes: the peer read nothing for {timeout:?} (it had taken {at})",
                    bytes.len()
                ));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("sending [{}]: {e}", hex(&bytes[at..]))),
        }
    }
    Ok(())
}

/// A stream connection to the peer under test, with deadlines on every wait.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    /// The longest a single wait may take.
    pub(crate) timeout: Duration,
    /// When the case's time is up: no wait goes past it.
    pub(crate) deadline: Instant,
    /// The body length above which a received frame is refused (what we told the peer).
    pub(crate) accept_max: u32,
    eof: bool,
    /// The last wait ended at the case's deadline, not at a timeout.
    out_of_time: bool,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream, timeout: Duration, deadline: Instant) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
            timeout,
            deadline,
            accept_max: udsecho_proto::DEFAULT_MAX_FRAME,
            eof: false,
            out_of_time: false,
        }
    }

    /// Where a wait starting now ends: after the timeout, or at the case's deadline.
    fn until(&self, wait: Duration) -> Instant {
        (Instant::now() + wait).min(self.deadline)
    }

    /// Another handle on the same socket (for a writer thread).
    pub(crate) fn try_clone(&self) -> io::Result<UnixStream> {
        self.stream.try_clone()
    }

    /// Whether the peer has closed its side (or reset).
    pub(crate) fn eof(&self) -> bool {
        self.eof
    }

    /// Writes all of `bytes`, each wait within the timeout, all before the deadline.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        write_until(&self.stream, bytes, self.timeout, self.deadline)
    }

    /// Writes `bytes` one at a time, `gap` apart.
    pub(crate) fn trickle(&mut self, bytes: &[u8], gap: Duration) -> Result<(), String> {
        for b in bytes {
            self.send(std::slice::from_ref(b))?;
            self.pause(gap);
        }
        Ok(())
    }

    /// Sleeps for `wait`, or until the case's deadline if that comes first.
    pub(crate) fn pause(&self, wait: Duration) {
        std::thread::sleep(wait.min(self.deadline.saturating_duration_since(Instant::now())));
    }

    /// Sends the frames `frame(0)`, `frame(1)`, … without reading, until the peer stops
    /// taking them (no room for the next one for `stall`), `limit` bytes, or the deadline;
    /// returns how many it took. Each is sent whole or not at all: Linux queues a write on a
    /// Unix stream socket that is under half its send buffer as one piece, and a
    /// non-blocking one that does not fit is refused whole.
    pub(crate) fn stuff(
        &mut self,
        frame: impl Fn(u64) -> Vec<u8>,
        limit: usize,
        stall: Duration,
    ) -> Result<u64, String> {
        self.stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let (mut sent, mut bytes, mut blocked_since) = (0, 0, None);
        let result = loop {
            if bytes >= limit || Instant::now() >= self.deadline {
                break Ok(sent);
            }
            let next = frame(sent);
            match (&self.stream).write(&next) {
                Ok(n) if n == next.len() => {
                    (sent, bytes, blocked_since) = (sent + 1, bytes + n, None);
                }
                Ok(n) => {
                    break Err(format!(
                        "the socket took {n} bytes of a {}-byte frame: the runner cannot tell \
                         what was queued (a kernel that splits small writes)",
                        next.len()
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= stall {
                        break Ok(sent);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(format!("sending frame {}: {e}", sent + 1)),
            }
        };
        self.stream
            .set_nonblocking(false)
            .map_err(|e| e.to_string())?;
        result
    }

    /// Shuts down the write side: the peer reads end of stream.
    pub(crate) fn half_close(&mut self) -> Result<(), String> {
        self.stream
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("half-closing: {e}"))
    }

    /// Shuts down both sides (a writer thread blocked on this socket returns at once).
    pub(crate) fn cut(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads once, waiting until `until`. `Ok(false)` at end of stream or on timeout.
    fn fill(&mut self, until: Instant) -> Result<bool, String> {
        self.out_of_time = false;
        if self.eof {
            return Ok(false);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.out_of_time = until >= self.deadline;
            return Ok(false);
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
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
                self.out_of_time = until >= self.deadline;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            // A peer that closes with our bytes unread makes Linux report a reset instead of
            // end of stream: the same thing here (PROTOCOL.md §4.3).
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(false)
            }
            Err(e) => Err(format!("reading: {e}")),
        }
    }

    /// Reads until `n` bytes are buffered; false if the stream ended or the deadline passed.
    fn want(&mut self, n: usize, deadline: Instant) -> Result<bool, String> {
        while self.buf.len() < n {
            if !self.fill(deadline)? {
                return Ok(self.buf.len() >= n);
            }
        }
        Ok(true)
    }

    /// What stopped a read short: the end of the stream, or a timeout (of the wait or of
    /// the case); the bytes read so far go with it.
    fn ended(&mut self) -> Got {
        let bytes = std::mem::take(&mut self.buf);
        match (self.eof, bytes.is_empty()) {
            (true, true) => Got::Eof,
            (true, false) => Got::Partial(bytes),
            _ if self.out_of_time => Got::OutOfTime(bytes),
            _ => Got::Timeout(bytes),
        }
    }

    /// The next frame, the end of the stream, or a timeout.
    pub(crate) fn next(&mut self) -> Result<Got, String> {
        let deadline = self.until(self.timeout);
        if !self.want(4, deadline)? {
            return Ok(self.ended());
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len == 0 {
            return Err(format!(
                "the peer sent a frame with L = 0 [{}]",
                hex(&self.buf[..4])
            ));
        }
        let limit = self.accept_max.max(MAX_CONTROL);
        if len > limit {
            return Err(format!(
                "the peer sent a frame with L = {len}, above the {limit} it may send [{}]",
                hex(&self.buf[..self.buf.len().min(16)])
            ));
        }
        let total = 4 + len as usize;
        if !self.want(total, deadline)? {
            return Ok(self.ended());
        }
        let rest = self.buf.split_off(total);
        let whole = std::mem::replace(&mut self.buf, rest);
        Ok(Got::Frame {
            kind: whole[4],
            payload: whole[5..].to_vec(),
        })
    }

    /// Up to `n` raw bytes (raw mode), or fewer if the stream ends or the deadline passes.
    pub(crate) fn raw(&mut self, n: usize) -> Result<Vec<u8>, String> {
        self.want(n, self.until(self.timeout))?;
        let rest = self.buf.split_off(self.buf.len().min(n));
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Waits up to `wait` for any byte; returns what arrived (possibly nothing: see
    /// [`Conn::eof`] for why).
    pub(crate) fn peek_for(&mut self, wait: Duration) -> Result<&[u8], String> {
        if self.buf.is_empty() {
            self.fill(self.until(wait))?;
        }
        Ok(&self.buf)
    }

    /// The first `n` bytes to come, without consuming them (fewer if the stream ends, or
    /// nothing more comes within the timeout).
    pub(crate) fn peek_n(&mut self, n: usize) -> Result<&[u8], String> {
        self.want(n, self.until(self.timeout))?;
        Ok(&self.buf[..self.buf.len().min(n)])
    }

    /// Whether the last wait ran into the case's deadline.
    pub(crate) fn out_of_time(&self) -> bool {
        self.out_of_time
    }

    /// Expects each item in turn.
    pub(crate) fn expect(&mut self, items: &[Expect]) -> Result<(), String> {
        for item in items {
            self.expect_one(item)?;
        }
        Ok(())
    }

    /// Expects a Hello and returns it.
    pub(crate) fn expect_hello(&mut self) -> Result<PeerHello, String> {
        let got = self.next()?;
        match &got {
            Got::Frame {
                kind: HELLO,
                payload,
            } => {
                if payload.len() + 1 > MAX_CONTROL as usize {
                    return Err(format!("a Hello of L = {} (> 4096)", payload.len() + 1));
                }
                parse_hello(payload).map_err(|e| format!("{e}, in {}", got.describe()))
            }
            _ => Err(mismatch("a Hello frame", None, &got)),
        }
    }

    fn expect_one(&mut self, item: &Expect) -> Result<(), String> {
        if let Expect::Eof = item {
            let got = self.next()?;
            return match got {
                Got::Eof => Ok(()),
                other => Err(mismatch("the end of the stream", None, &other)),
            };
        }
        let got = self.next()?;
        let ok = match (item, &got) {
            (
                Expect::Data(want),
                Got::Frame {
                    kind: DATA,
                    payload,
                },
            ) => payload == want,
            (
                Expect::Error(want),
                Got::Frame {
                    kind: ERROR,
                    payload,
                },
            ) => {
                let mut f = Fields::new(payload);
                match (f.u16("Error.code"), f.string("Error.message")) {
                    (Ok(code), Ok(_)) => code == *want,
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(format!("{e}, in {}", got.describe()));
                    }
                }
            }
            (
                Expect::Goodbye(want),
                Got::Frame {
                    kind: GOODBYE,
                    payload,
                },
            ) => match Fields::new(payload).u16("Goodbye.reason") {
                Ok(r) => r == *want,
                Err(e) => return Err(format!("{e}, in {}", got.describe())),
            },
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(mismatch(&item.to_string(), item.bytes(), &got))
        }
    }
}

/// "expected X [bytes]; saw Y".
pub(crate) fn mismatch(what: &str, bytes: Option<Vec<u8>>, got: &Got) -> String {
    match bytes {
        Some(b) => format!("expected {what} [{}]; saw {}", hex(&b), got.describe()),
        None => format!("expected {what}; saw {}", got.describe()),
    }
}

/// What a case expects next on a connection.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// A Data frame with exactly this payload.
    Data(Vec<u8>),
    /// An Error frame with this code (any message).
    Error(u16),
    /// A Goodbye with this reason.
    Goodbye(u16),
    /// The end of the stream (a reset counts).
    Eof,
}

impl Expect {
    /// The exact bytes, where the protocol fixes them.
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Expect::Data(p) => Some(data(p)),
            Expect::Goodbye(r) => Some(goodbye(*r)),
            Expect::Error(_) | Expect::Eof => None,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Data(p) => write!(f, "Data of {} bytes", p.len()),
            Expect::Error(c) => write!(f, "Error code {c} (any message)"),
            Expect::Goodbye(r) => write!(f, "Goodbye reason {r}"),
            Expect::Eof => write!(f, "the end of the stream"),
        }
    }
}
