//! A small, blocking, thread-per-connection implementation of a PROTOCOL.md server, written
//! for the runner's own tests: `mutant_server SOCKET [BUG]`.
//!
//! Without BUG it passes every case, graceful shutdown included (SIGTERM: stop accepting,
//! finish the Data frame being echoed, echo what is queued, Goodbye (Shutdown)). With BUG it
//! carries that one deliberate bug, and `tests/mutants.rs` checks that exactly the cases meant
//! to catch it fail. It uses nothing from udsecho but the constants; SIGTERM comes through
//! tokio's signal handling (the workspace forbids `unsafe`).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PREAMBLE: &[u8; 8] = b"\0UDSECHO";
const MAX_FRAME: u32 = 8 * 1024 * 1024;
const MAX_CONTROL: u32 = 4096;

/// Set once SIGTERM arrived: sessions drain and say Goodbye (Shutdown).
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Connections being served; the process exits when none is left after SIGTERM.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// How often a framed session blocked in a read looks at `SHUTDOWN`.
const POLL: Duration = Duration::from_millis(10);

/// The one bug this instance carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// §1: raw data that began as a preamble prefix loses that prefix.
    PrefixBytesLost,
    /// §1: the bytes read while detecting the mode are dropped when the connection turns out
    /// raw: a raw peer's first write never comes back (no Error frame, no close).
    DetectBytesLost,
    /// §1: no pause rule: a strict prefix waits for more forever.
    NoPause,
    /// §1: a strict prefix then the peer's half-close is closed without its echo.
    PrefixEofDropped,
    /// §1: a first read that is a strict prefix of the preamble means raw (a trickled
    /// preamble is not recognised).
    PreambleInOneRead,
    /// §1: in the read that brought the preamble, bytes after the first frame are dropped.
    FirstReadRestDropped,
    /// §1: a half-close before any byte is answered with an Error frame.
    ErrorOnEmptyConnection,
    /// §2: raw mode never half-closes back after the client's EOF.
    RawNoHalfClose,
    /// §2, §4: what a write could not hand the peer within 400 ms is dropped (bytes lost
    /// to a slow reader).
    DropsAfterStall,
    /// §3: L is judged only once the kind byte is there.
    LengthAfterKind,
    /// §3: a Data frame with L exactly at the limit is refused.
    LimitOffByOne,
    /// §3: L = 0 is closed without an Error frame.
    EmptyFrameCloses,
    /// §3: an unknown kind is answered only once its payload has arrived.
    UnknownKindWaits,
    /// §3: a header that takes three reads or more to arrive is refused.
    HeaderInPieces,
    /// §3.1: bytes after a Hello's last field are Malformed.
    StrictHello,
    /// §3.1: the Hello's agent is not checked for UTF-8.
    AgentNotChecked,
    /// §3.2: a client's Error frame is answered with one.
    AnswersClientError,
    /// §3.3: an unknown Goodbye reason is Malformed.
    UnknownReasonMalformed,
    /// §4: Data and Goodbye before Hello are served as if the Hello had come.
    NoHelloRequired,
    /// §4: a second Hello is answered like the first.
    DuplicateHelloOk,
    /// §4: empty Data frames are not echoed.
    DropsEmptyData,
    /// §4: the client's Goodbye is not answered: the server just closes.
    GoodbyeUnanswered,
    /// §4: frames already buffered after the client's Goodbye are still echoed.
    EchoAfterGoodbye,
    /// §4: a partial header at the client's half-close gets an Error frame.
    ErrorOnPartialHeader,
    /// §4: whole Data frames are held, then echoed (allowed: NON-STRICT).
    HoldsFrames,
    /// §4: on SIGTERM, Goodbye (Shutdown) goes out at the next frame boundary, dropping
    /// frames already queued.
    DrainDropsQueued,
    /// §4: on SIGTERM, Goodbye (Shutdown) goes out at once, even in the middle of a Data
    /// frame's echo.
    GoodbyeMidFrame,
    /// §4.1: the server answers with the client's version, whatever it is.
    NoNegotiateDown,
    /// §4.1: version 0 is accepted.
    AcceptsVersionZero,
    /// §4.2: the client's max_frame is not taken into account.
    LimitIgnoresClient,
    /// §4.2: a Hello.max_frame of 0 is accepted.
    AcceptsMaxFrameZero,
    /// §4.2: control frames are held to the Data limit.
    ControlLimited,
    /// §4.3: a Hello's payload is decoded before its place is judged.
    PayloadBeforePlace,
    /// §4.3: an unknown kind among the frames already read is refused before the frames
    /// ahead of it are echoed.
    ErrorBeforeEcho,
    /// §4.3: a protocol error on one connection stops the whole server.
    ErrorKillsServer,
    /// Reads everything and never answers (for the runner's timeouts).
    Silent,
}

impl Bug {
    fn parse(name: &str) -> Option<Bug> {
        Some(match name {
            "none" => Bug::None,
            "prefix-bytes-lost" => Bug::PrefixBytesLost,
            "detect-bytes-lost" => Bug::DetectBytesLost,
            "no-pause" => Bug::NoPause,
            "prefix-eof-dropped" => Bug::PrefixEofDropped,
            "preamble-in-one-read" => Bug::PreambleInOneRead,
            "first-read-rest-dropped" => Bug::FirstReadRestDropped,
            "error-on-empty-connection" => Bug::ErrorOnEmptyConnection,
            "raw-no-half-close" => Bug::RawNoHalfClose,
            "drops-after-stall" => Bug::DropsAfterStall,
            "length-after-kind" => Bug::LengthAfterKind,
            "limit-off-by-one" => Bug::LimitOffByOne,
            "empty-frame-closes" => Bug::EmptyFrameCloses,
            "unknown-kind-waits" => Bug::UnknownKindWaits,
            "header-in-pieces" => Bug::HeaderInPieces,
            "strict-hello" => Bug::StrictHello,
            "agent-not-checked" => Bug::AgentNotChecked,
            "answers-client-error" => Bug::AnswersClientError,
            "unknown-reason-malformed" => Bug::UnknownReasonMalformed,
            "no-hello-required" => Bug::NoHelloRequired,
            "duplicate-hello-ok" => Bug::DuplicateHelloOk,
            "drops-empty-data" => Bug::DropsEmptyData,
            "goodbye-unanswered" => Bug::GoodbyeUnanswered,
            "echo-after-goodbye" => Bug::EchoAfterGoodbye,
            "error-on-partial-header" => Bug::ErrorOnPartialHeader,
            "holds-frames" => Bug::HoldsFrames,
            "drain-drops-queued" => Bug::DrainDropsQueued,
            "goodbye-mid-frame" => Bug::GoodbyeMidFrame,
            "no-negotiate-down" => Bug::NoNegotiateDown,
            "accepts-version-zero" => Bug::AcceptsVersionZero,
            "limit-ignores-client" => Bug::LimitIgnoresClient,
            "accepts-max-frame-zero" => Bug::AcceptsMaxFrameZero,
            "control-limited" => Bug::ControlLimited,
            "payload-before-place" => Bug::PayloadBeforePlace,
            "error-before-echo" => Bug::ErrorBeforeEcho,
            "error-kills-server" => Bug::ErrorKillsServer,
            "silent" => Bug::Silent,
            _ => return None,
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, bug) = match args.as_slice() {
        [socket] => (socket.clone(), Bug::None),
        [socket, bug] => match Bug::parse(bug) {
            Some(bug) => (socket.clone(), bug),
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
    // The handler is in place before the socket exists: a SIGTERM can never kill it.
    let sigterm = match on_sigterm(socket.clone()) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("mutant_server: SIGTERM handler: {e}");
            std::process::exit(1);
        }
    };
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mutant_server: {socket}: {e}");
            std::process::exit(1);
        }
    };
    std::thread::spawn(sigterm);
    for stream in listener.incoming().flatten() {
        if SHUTDOWN.load(Ordering::SeqCst) {
            break;
        }
        let active = Active::new();
        std::thread::spawn(move || {
            let _ = serve(stream, bug);
            drop(active);
        });
    }
}

/// Installs the SIGTERM handler now; the returned function waits for the signal, then lets
/// the sessions drain (at most 3 s) and exits 0.
fn on_sigterm(socket: String) -> io::Result<impl FnOnce() + Send + 'static> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut term = {
        let _entered = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
    };
    Ok(move || {
        if runtime.block_on(term.recv()).is_none() {
            return;
        }
        SHUTDOWN.store(true, Ordering::SeqCst);
        // Stop accepting: nobody new can connect.
        let _ = std::fs::remove_file(&socket);
        let deadline = Instant::now() + Duration::from_secs(3);
        while ACTIVE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        std::process::exit(0);
    })
}

/// One connection being served (counted in `ACTIVE` while it lives).
struct Active;

impl Active {
    fn new() -> Active {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one read brought.
enum Read1 {
    Bytes,
    Eof,
    /// The read timeout passed with nothing.
    Nothing,
}

/// A connection: its socket, bytes read and not yet used, the bug.
struct Conn {
    s: UnixStream,
    buf: Vec<u8>,
    bug: Bug,
    eof: bool,
    /// Framed mode: reads wake every `POLL` to look at `SHUTDOWN`.
    framed: bool,
    /// SIGTERM seen: only what is already queued is read from now on.
    draining: bool,
    /// Reads so far (for `HeaderInPieces`).
    reads: usize,
}

impl Conn {
    fn read_once(&mut self) -> io::Result<Read1> {
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
    fn fill(&mut self) -> io::Result<bool> {
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
    fn want(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes all of `bytes`; with `DropsAfterStall`, what the peer has not taken 400 ms
    /// later is dropped.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
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

    fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(payload);
        self.write(&out)
    }

    /// An Error frame, then the close (with `ErrorKillsServer`, the whole server's end).
    fn refuse(&mut self, code: u16, message: &str) -> io::Result<()> {
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
    fn end(&mut self) -> io::Result<()> {
        if self.draining {
            self.send(3, &[1])?;
        }
        Ok(())
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

impl Conn {
    /// Inside a Data frame: waits for more of it, even while draining (its echo has begun
    /// and is finished first). False at end of stream, or when `GoodbyeMidFrame` has cut it.
    fn fill_mid_frame(&mut self) -> io::Result<bool> {
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
