//! One peer, from accept to close: detect its mode, then run the raw or the framed loop until
//! the peer leaves, breaks a rule, goes idle, or the server shuts down.
//!
//! Invariants:
//! - nothing a peer sent is dropped: bytes read during detection are echoed first, and on
//!   shutdown the socket buffer is read out and echoed before the close;
//! - while an echo is not fully written, nothing more is read (backpressure: a peer that
//!   does not read cannot make the server buffer more than one read's worth);
//! - an idle raw connection holds no buffer at all: reads go into a per-thread scratch buffer
//!   and only bytes the socket would not take yet are kept.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;
use udsecho_proto::{
    Detection, ErrorCode, ErrorFrame, Frame, Goodbye, GoodbyeReason, HEADER_LEN, Header, Hello,
    Kind, PREFIX_PAUSE, ProtoError,
};

use crate::config::Mode;
use crate::shutdown::Shutdown;

/// Size of the per-thread scratch buffer raw reads land in.
const SCRATCH_LEN: usize = 64 * 1024;
/// Reads per readiness event before giving other connections on this thread a turn.
const READS_PER_TURN: usize = 16;
/// The most a framed connection reserves at once for a frame still arriving.
const FRAME_RESERVE_STEP: usize = 256 * 1024;
/// A framed connection's read buffer larger than this is released when it empties.
const KEEP_BUFFER: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// What a connection needs from the server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) max_frame: u32,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) agent: String,
}

/// How a connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed (or said Goodbye) and got everything back.
    PeerDone,
    /// The server shut down and the connection was drained.
    Drained,
    /// Nothing moved for `--idle-timeout`.
    Idle,
    /// The peer broke the protocol and got an Error frame.
    Violation,
}

/// What happened while waiting for the socket.
enum Event<T> {
    Ready(T),
    Shutdown,
    Idle,
}

/// Waits for `fut`, unless the shutdown begins (when `watch_shutdown`) or `timeout` passes.
async fn guard<F: Future>(
    fut: F,
    shutdown: &Shutdown,
    watch_shutdown: bool,
    timeout: Option<Duration>,
) -> Event<F::Output> {
    let expiry = async {
        match timeout {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = shutdown.begun(), if watch_shutdown => Event::Shutdown,
        out = fut => Event::Ready(out),
        () = expiry => Event::Idle,
    }
}

/// Serves one peer to the end.
pub(crate) async fn serve(
    mut stream: UnixStream,
    settings: &Settings,
    shutdown: &Shutdown,
) -> io::Result<End> {
    if settings.mode == Mode::Raw {
        return raw(&mut stream, &[], false, false, settings, shutdown).await;
    }

    // Detection reads at most the 8 preamble bytes: whatever else the peer sent stays in the
    // socket for the loop that follows.
    let mut head = [0u8; udsecho_proto::PREAMBLE.len()];
    let mut seen = 0;
    let mut prefix_deadline: Option<Instant> = None;
    let auto = settings.mode == Mode::Auto;
    let (detection, eof, draining) = loop {
        let timeout = match prefix_deadline {
            Some(deadline) if auto => Some(deadline.saturating_duration_since(Instant::now())),
            _ => settings.idle_timeout,
        };
        match guard(stream.read(&mut head[seen..]), shutdown, true, timeout).await {
            Event::Ready(Ok(0)) if seen == 0 => return Ok(End::PeerDone),
            Event::Ready(Ok(0)) => break (Detection::Raw, true, false),
            Event::Ready(Ok(n)) => {
                seen += n;
                match udsecho_proto::detect(&head[..seen]) {
                    Detection::NeedMore => {
                        prefix_deadline.get_or_insert_with(|| Instant::now() + PREFIX_PAUSE);
                    }
                    decided => break (decided, false, false),
                }
            }
            Event::Ready(Err(e)) => return Err(e),
            Event::Shutdown if seen == 0 => return Ok(End::Drained),
            Event::Shutdown => break (Detection::Raw, false, true),
            Event::Idle if auto && prefix_deadline.is_some() => {
                break (Detection::Raw, false, false);
            }
            Event::Idle => return Ok(End::Idle),
        }
    };

    match (detection, settings.mode) {
        (Detection::Framed, _) => framed(&mut stream, draining, settings, shutdown).await,
        (_, Mode::Framed) => {
            let violation = Violation {
                code: ErrorCode::UnexpectedFrame,
                message: "this server speaks framed mode only and the connection did not open \
                          with the udsecho preamble"
                    .to_owned(),
            };
            violation.send(&mut stream, settings.idle_timeout).await?;
            Ok(End::Violation)
        }
        _ => {
            raw(
                &mut stream,
                &head[..seen],
                eof,
                draining,
                settings,
                shutdown,
            )
            .await
        }
    }
}

/// The result of reading what the socket has and echoing it straight back.
enum Step {
    /// Read and echoed everything that was there; wait for more.
    Drained,
    /// The socket would not take the whole echo; the rest is in `pending`.
    Backlogged,
    /// The peer half-closed.
    Eof,
    /// Read for a full turn; let other connections run.
    Busy,
}

/// Reads into the thread's scratch buffer and writes each read back at once, keeping only
/// what the socket would not take. No allocation unless the peer stops reading.
///
/// With a `budget` (while draining), reads at most that many bytes and counts them off.
fn echo_available(
    stream: &UnixStream,
    pending: &mut BytesMut,
    budget: &mut Option<usize>,
) -> io::Result<Step> {
    SCRATCH.with_borrow_mut(|buf| {
        for _ in 0..READS_PER_TURN {
            let cap = budget.map_or(buf.len(), |left| left.min(buf.len()));
            if cap == 0 {
                return Ok(Step::Drained);
            }
            let n = match stream.try_read(&mut buf[..cap]) {
                Ok(0) => return Ok(Step::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Drained),
                Err(e) => return Err(e),
            };
            if let Some(left) = budget {
                *left -= n;
            }
            tracing::debug!(target: "udsecho::echo", "echo: {}", String::from_utf8_lossy(&buf[..n]).trim_end());
            let written = match stream.try_write(&buf[..n]) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if written < n {
                pending.extend_from_slice(&buf[written..n]);
                return Ok(Step::Backlogged);
            }
        }
        Ok(Step::Busy)
    })
}

/// The raw loop: every byte back, in order; on the peer's half-close, finish and shut down.
async fn raw(
    stream: &mut UnixStream,
    initial: &[u8],
    mut eof: bool,
    mut draining: bool,
    settings: &Settings,
    shutdown: &Shutdown,
) -> io::Result<End> {
    let idle = settings.idle_timeout;
    let mut pending = BytesMut::new();
    let mut budget = if draining { queued(stream) } else { None };
    if !initial.is_empty() {
        tracing::debug!(target: "udsecho::echo", "echo: {}", String::from_utf8_lossy(initial).trim_end());
        pending.extend_from_slice(initial);
    }
    loop {
        if !pending.is_empty() {
            match guard(stream.write_all_buf(&mut pending), shutdown, false, idle).await {
                Event::Ready(r) => r?,
                Event::Shutdown => unreachable!("not watched while writing"),
                Event::Idle => return close(stream, End::Idle).await,
            }
            // Give back the memory a slow reader made us hold.
            pending = BytesMut::new();
        }
        if eof {
            return close(
                stream,
                if draining {
                    End::Drained
                } else {
                    End::PeerDone
                },
            )
            .await;
        }
        if !draining {
            match guard(stream.readable(), shutdown, true, idle).await {
                Event::Ready(r) => r?,
                Event::Shutdown => {
                    draining = true;
                    budget = queued(stream);
                }
                Event::Idle => return close(stream, End::Idle).await,
            }
        }
        match echo_available(stream, &mut pending, &mut budget)? {
            Step::Eof => eof = true,
            // While draining, an empty socket buffer means everything sent has been echoed.
            Step::Drained if draining => eof = true,
            Step::Drained | Step::Backlogged => {}
            Step::Busy => tokio::task::yield_now().await,
        }
    }
}

/// Bytes waiting in the socket's receive buffer: at shutdown, exactly what the peer sent
/// before it, so a peer that keeps writing cannot stretch the drain. `None` if the kernel
/// will not say (then the drain reads until the buffer is empty).
fn queued(stream: &UnixStream) -> Option<usize> {
    rustix::io::ioctl_fionread(stream)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
}

/// Shuts down the write side (the peer sees EOF after the last echoed byte).
async fn close(stream: &mut UnixStream, end: End) -> io::Result<End> {
    // The peer may be gone already; it has everything we could give it.
    let _ = stream.shutdown().await;
    Ok(end)
}

/// A protocol error to report in an Error frame before closing.
struct Violation {
    code: ErrorCode,
    message: String,
}

impl From<ProtoError> for Violation {
    fn from(e: ProtoError) -> Self {
        Violation {
            code: e.code().unwrap_or(ErrorCode::Malformed),
            message: e.to_string(),
        }
    }
}

impl Violation {
    async fn send(self, stream: &mut UnixStream, idle: Option<Duration>) -> io::Result<()> {
        tracing::debug!(code = ?self.code, "protocol error: {}", self.message);
        let frame = Frame::Error(ErrorFrame::new(self.code, self.message));
        send_final(stream, &frame, idle).await
    }
}

/// Sends a last control frame, then shuts down the write side.
async fn send_final(
    stream: &mut UnixStream,
    frame: &Frame,
    idle: Option<Duration>,
) -> io::Result<()> {
    let mut out = BytesMut::new();
    frame
        .encode(&mut out, u32::MAX)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    match idle {
        Some(limit) => tokio::time::timeout(limit, write).await.unwrap_or(Ok(()))?,
        None => write.await?,
    }
    linger(stream).await;
    Ok(())
}

/// After our last frame: read and drop what the peer is still sending, for a moment, before
/// closing. Closing a Unix socket with unread input makes the peer's next read fail with
/// ECONNRESET, which could hide the frame we just sent from a client still writing.
async fn linger(stream: &mut UnixStream) {
    const LINGER: Duration = Duration::from_millis(500);
    const LINGER_BYTES: usize = 4 << 20;
    let discard = async {
        // On the heap: an array here would sit in every connection's future, idle or not.
        let mut sink = vec![0u8; 8192];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// Where the framed session is.
struct Session {
    /// Set once the Hello exchange is done: Data is allowed from then on.
    greeted: bool,
    /// The largest `L` accepted: our `--max-frame`, lowered to the client's after Hello.
    limit: u32,
}

/// What stopped the scan of the read buffer.
enum Stop {
    /// A complete frame that ends the session.
    PeerGoodbye,
    /// The peer sent an Error: it is about to close; so do we.
    PeerError,
    /// A rule was broken.
    Violation(Violation),
}

/// How much of the peer's input is left.
#[derive(PartialEq, Eq)]
enum Input {
    Open,
    /// Shutdown began: read what is already in the socket, then stop.
    Draining,
    /// Everything that was in the socket at shutdown has been read.
    Drained,
    /// The peer half-closed.
    Eof,
}

/// The framed loop. Consecutive complete Data frames are echoed by writing their bytes back
/// straight from the read buffer: an echo is byte-identical to the frame it answers, so there
/// is nothing to decode, copy or re-encode, and many frames leave in one write.
async fn framed(
    stream: &mut UnixStream,
    draining: bool,
    settings: &Settings,
    shutdown: &Shutdown,
) -> io::Result<End> {
    let idle = settings.idle_timeout;
    let mut session = Session {
        greeted: false,
        limit: settings.max_frame,
    };
    let mut input = if draining {
        Input::Draining
    } else {
        Input::Open
    };
    let mut budget = if draining { queued(stream) } else { None };
    let mut rbuf = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        let (span, stop) = scan(&mut rbuf, &mut out, &mut session, settings);
        if !out.is_empty() {
            match guard(stream.write_all_buf(&mut out), shutdown, false, idle).await {
                Event::Ready(r) => r?,
                _ => return close(stream, End::Idle).await,
            }
        }
        if span > 0 {
            match guard(stream.write_all(&rbuf[..span]), shutdown, false, idle).await {
                Event::Ready(r) => r?,
                _ => return close(stream, End::Idle).await,
            }
            rbuf.advance(span);
        }
        match stop {
            Some(Stop::Violation(v)) => {
                v.send(stream, idle).await?;
                return Ok(End::Violation);
            }
            Some(Stop::PeerGoodbye) => {
                let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Done));
                send_final(stream, &bye, idle).await?;
                return Ok(End::PeerDone);
            }
            Some(Stop::PeerError) => return close(stream, End::PeerDone).await,
            None => {}
        }
        match input {
            Input::Eof => {
                if !rbuf.is_empty() {
                    tracing::debug!(
                        "peer closed in the middle of a frame; {} bytes dropped",
                        rbuf.len()
                    );
                }
                return close(stream, End::PeerDone).await;
            }
            Input::Drained => {
                let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Shutdown));
                send_final(stream, &bye, idle).await?;
                return Ok(End::Drained);
            }
            Input::Open | Input::Draining => {}
        }

        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER {
            rbuf = BytesMut::new();
        }
        let want = match Header::peek(&rbuf, session.limit) {
            Ok(Some(h)) => (h.frame_len() - rbuf.len()).clamp(4096, FRAME_RESERVE_STEP),
            _ => 16 * 1024,
        };
        rbuf.reserve(want);

        if input == Input::Draining {
            let cap = budget.unwrap_or(usize::MAX);
            if cap == 0 {
                input = Input::Drained;
                continue;
            }
            match stream.try_read_buf(&mut (&mut rbuf).limit(cap)) {
                Ok(0) => input = Input::Eof,
                Ok(n) => {
                    if let Some(left) = &mut budget {
                        *left -= n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => input = Input::Drained,
                Err(e) => return Err(e),
            }
            continue;
        }
        match guard(stream.read_buf(&mut rbuf), shutdown, true, idle).await {
            Event::Ready(Ok(0)) => input = Input::Eof,
            Event::Ready(Ok(_)) => {}
            Event::Ready(Err(e)) => return Err(e),
            Event::Shutdown => {
                input = Input::Draining;
                budget = queued(stream);
            }
            Event::Idle => {
                let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::IdleTimeout));
                send_final(stream, &bye, idle).await?;
                return Ok(End::Idle);
            }
        }
    }
}

/// Walks the complete frames at the front of `rbuf`. Returns how many leading bytes are
/// Data frames to echo verbatim, and what stopped the walk, if anything but a partial frame.
/// Control replies (the Hello answer) go to `out`, which is sent before the echoes.
fn scan(
    rbuf: &mut BytesMut,
    out: &mut BytesMut,
    session: &mut Session,
    settings: &Settings,
) -> (usize, Option<Stop>) {
    let mut span = 0;
    loop {
        let header = match Header::peek(&rbuf[span..], session.limit) {
            Ok(Some(h)) => h,
            Ok(None) => return (span, None),
            Err(e) => return (span, Some(Stop::Violation(e.into()))),
        };
        if rbuf.len() - span < header.frame_len() {
            return (span, None);
        }
        let unexpected = |why| {
            Some(Stop::Violation(
                ProtoError::UnexpectedFrame {
                    kind: header.kind,
                    why,
                }
                .into(),
            ))
        };
        match header.kind {
            Kind::Data if session.greeted => {
                let payload = &rbuf[span + HEADER_LEN..span + header.frame_len()];
                tracing::debug!(target: "udsecho::echo", "echo: {}", String::from_utf8_lossy(payload).trim_end());
                span += header.frame_len();
            }
            Kind::Data => return (span, unexpected("Data before Hello")),
            Kind::Goodbye if !session.greeted => return (span, unexpected("Goodbye before Hello")),
            Kind::Hello if session.greeted => return (span, unexpected("a second Hello")),
            Kind::Hello => {
                // Nothing precedes the Hello (Data before it is refused), so span is 0.
                let mut frame = rbuf.split_to(header.frame_len());
                frame.advance(HEADER_LEN);
                let hello = match Frame::from_parts(Kind::Hello, frame.freeze()) {
                    Ok(Frame::Hello(hello)) => hello,
                    Ok(_) => unreachable!("a Hello payload decodes to a Hello"),
                    Err(e) => return (span, Some(Stop::Violation(e.into()))),
                };
                match answer_hello(&hello, settings) {
                    Ok(answer) => {
                        if let Err(e) = Frame::Hello(answer).encode(out, u32::MAX) {
                            return (span, Some(Stop::Violation(e.into())));
                        }
                        session.greeted = true;
                        session.limit = session.limit.min(hello.max_frame);
                        tracing::debug!(agent = %hello.agent, max_frame = session.limit, "framed session opened");
                    }
                    Err(v) => return (span, Some(Stop::Violation(v))),
                }
            }
            Kind::Goodbye => {
                let body = payload_at(rbuf, span, header);
                return match Frame::from_parts(Kind::Goodbye, body) {
                    Ok(_) => (span, Some(Stop::PeerGoodbye)),
                    Err(e) => (span, Some(Stop::Violation(e.into()))),
                };
            }
            Kind::Error => {
                let body = payload_at(rbuf, span, header);
                if let Ok(Frame::Error(e)) = Frame::from_parts(Kind::Error, body) {
                    tracing::debug!(code = ?e.code, "peer sent an error: {}", e.message);
                }
                return (span, Some(Stop::PeerError));
            }
        }
    }
}

/// Copies out the payload of the frame at `at` (control frames only: they are small).
fn payload_at(rbuf: &[u8], at: usize, header: Header) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&rbuf[at + HEADER_LEN..at + header.frame_len()])
}

/// The server's answer to a client's Hello, or the reason to refuse it.
fn answer_hello(hello: &Hello, settings: &Settings) -> Result<Hello, Violation> {
    let version = udsecho_proto::negotiate(hello.version)?;
    if hello.max_frame == 0 {
        return Err(Violation {
            code: ErrorCode::Malformed,
            message: "Hello.max_frame is 0: no frame could ever be sent".to_owned(),
        });
    }
    let mut answer = Hello::new(
        settings.max_frame.min(hello.max_frame),
        settings.agent.clone(),
    );
    answer.version = version;
    Ok(answer)
}
