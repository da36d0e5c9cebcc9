//! One direction of a proxied stream connection: read with the descriptors that came (into
//! a buffer of [`BUFFER`] bytes), record, write it all with those descriptors to the other
//! side, and only then read again. So a side that does not read stops the other side's
//! bytes at the kernel's socket buffers, and a connection holds at most one read per
//! direction whatever its peers do.
//!
//! EOF is passed on as a half-close (`shutdown(Write)` on the other side); then the pump is
//! done.
//!
//! A seqpacket direction ([`messages`]) goes message by message, boundaries kept: each
//! message is peeked for its length, read whole (into a buffer of its size when it is longer
//! than [`BUFFER`], as the echo does, for the moment it is forwarded) and sent as one message.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::faults::{ClientFaults, Plan};
use super::record::frames::{Frames, Session};
use super::record::{Dir, Recorder, What};
use super::{report_read, view};
use crate::config::SocketType;
use crate::descriptors::{self, Passed};

/// The most one read takes: the proxy's memory per direction.
pub(super) const BUFFER: usize = 64 * 1024;

/// Sends never raise SIGPIPE (a peer that left is an error, not a signal) and never block.
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL.union(SendFlags::DONTWAIT);

/// What a direction reports of itself as it goes: to the recording, to `-v`, and its byte
/// count to the connection.
pub(super) struct Flow<'a> {
    pub(super) conn: u64,
    pub(super) dir: Dir,
    pub(super) recorder: Option<&'a Recorder>,
    /// udsecho frames in the bytes, for the recording (none without one).
    pub(super) frames: Option<Frames>,
    pub(super) session: &'a Session,
    /// Bytes forwarded so far.
    pub(super) forwarded: &'a AtomicU64,
    /// Faults on what this direction writes (the client's direction of a server with
    /// `--fault` or `--control`).
    pub(super) faults: Option<ClientFaults>,
}

/// How a direction failed: which side, and the error.
#[derive(Debug)]
pub(super) struct Broken {
    /// `client` or `upstream`.
    pub(super) side: &'static str,
    pub(super) why: String,
}

impl Broken {
    fn new(side: &'static str, e: impl std::fmt::Display) -> Broken {
        Broken {
            side,
            why: e.to_string(),
        }
    }
}

impl Flow<'_> {
    /// The side bytes of this direction come from, and the one they go to.
    fn sides(&self) -> (&'static str, &'static str) {
        match self.dir {
            Dir::ToUpstream => ("client", "upstream"),
            Dir::ToClient => ("upstream", "client"),
        }
    }

    async fn data(&mut self, bytes: &[u8], fds: &Passed) {
        self.report(bytes, None, fds).await;
    }

    /// Reports a read whose buffer the recording keeps: `lent` (see [`Recorder::buffer`]).
    async fn lent(&mut self, lent: &bytes::Bytes, fds: &Passed) {
        self.report(lent, Some(lent), fds).await;
    }

    async fn report(&mut self, bytes: &[u8], lent: Option<&bytes::Bytes>, fds: &Passed) {
        let frames = match (self.recorder, &mut self.frames) {
            (Some(_), Some(frames)) => frames.read(self.session, bytes),
            _ => Vec::new(),
        };
        report_read(
            self.recorder,
            self.conn,
            self.dir,
            (bytes, lent),
            fds,
            frames,
        )
        .await;
    }

    /// The recorder, when reads may be lent to it rather than copied: with faults the bytes
    /// are changed after they are recorded, so they are copied.
    fn lending(&self) -> Option<&Recorder> {
        self.recorder.filter(|_| self.faults.is_none())
    }

    /// The sender's EOF: recorded, and passed on as a half-close of `to`.
    async fn pass_eof(&mut self, to: &AsyncFd<OwnedFd>) -> Result<(), Broken> {
        view::eof(self.conn, self.dir);
        if let Some(recorder) = self.recorder {
            recorder
                .record(self.conn, What::Eof { dir: self.dir })
                .await;
        }
        match rustix::net::shutdown(to.get_ref(), rustix::net::Shutdown::Write) {
            Ok(()) | Err(Errno::NOTCONN) => Ok(()),
            Err(e) => Err(Broken::new(self.sides().1, e)),
        }
    }
}

/// Forwards `from` to `to` until `from`'s EOF, which it passes on. `Err`: a side failed (a
/// reset, descriptors the kernel closed): the connection ends.
pub(super) async fn pump(
    from: &AsyncFd<OwnedFd>,
    to: &AsyncFd<OwnedFd>,
    mut flow: Flow<'_>,
) -> Result<(), Broken> {
    let (source, sink) = flow.sides();
    // Allocated at the first byte: an idle connection holds none. With a recording (and no
    // faults) a read of some size is not copied: its buffer goes to the recording and is
    // forwarded from there, and the next read takes another from the recording's pool.
    let lending = flow.lending().cloned();
    let mut buf = Vec::new();
    loop {
        let got = when_ready(
            from,
            source,
            |fd| {
                if buf.is_empty() {
                    buf = match &lending {
                        Some(recorder) => recorder.buffer(BUFFER),
                        None => vec![0u8; BUFFER],
                    };
                }
                descriptors::recv(
                    fd,
                    &mut buf,
                    RecvFlags::DONTWAIT,
                    descriptors::room(),
                    false,
                )
            },
            // Short, with nothing queued behind it: not when it carried descriptors (the
            // kernel ends a read at them) nor at an out-of-band mark (priority readiness).
            |got| got.emptied(BUFFER) && !out_of_band_queued(from),
        )
        .await?;
        if got.truncated {
            let why = format!(
                "the kernel closed descriptors passed with {} byte(s): the proxy had room for \
                 {room} (near its descriptor limit)",
                got.len,
                room = descriptors::room()
            );
            return Err(Broken { side: source, why });
        }
        if got.len == 0 {
            return flow.pass_eof(to).await;
        }
        let mut fds = got.fds;
        let lent = match &lending {
            Some(recorder) => {
                let lent = recorder.lend(&mut buf, got.len);
                flow.lent(&lent, &fds).await;
                Some(lent)
            }
            None => {
                flow.data(&buf[..got.len], &fds).await;
                None
            }
        };
        // Without faults: all of it, in one write if the socket takes it.
        let plan = match &mut flow.faults {
            Some(faults) => faults.plan(&mut buf[..got.len], &mut fds),
            None => Plan {
                delay: Duration::ZERO,
                len: got.len,
                piece: got.len,
                gap: Duration::ZERO,
                end: false,
            },
        };
        // The drain cuts a delay or a gap short: the rest then goes in one piece.
        let mut lifted = match &flow.faults {
            Some(faults) => faults.pause(plan.delay).await,
            None => false,
        };
        let len = plan.len;
        let mut sent = 0;
        while sent < len {
            let upto = if lifted {
                len
            } else {
                (sent + plan.piece).min(len)
            };
            let out = lent.as_deref().unwrap_or(&buf);
            // The descriptors go with the first byte.
            let went = send(to, &out[sent..upto], &mut fds)
                .await
                .map_err(|e| Broken::new(sink, e))?;
            sent += went;
            // Counted as it goes: `--idle-timeout` sees a slow reader's progress.
            flow.forwarded.fetch_add(went as u64, Ordering::Relaxed);
            if sent == upto
                && !lifted
                && !plan.gap.is_zero()
                && let Some(faults) = &flow.faults
            {
                lifted = faults.pause(plan.gap).await;
            }
        }
        crate::busy_poll::worked();
        if plan.end {
            let why = format!(
                "limit_data reached: {} bytes went to the client",
                flow.forwarded.load(Ordering::Relaxed)
            );
            return Err(Broken { side: "fault", why });
        }
    }
}

/// One direction of a connection of `kind`: [`pump`] for a stream, [`messages`] for
/// seqpacket.
pub(super) async fn direction(
    kind: SocketType,
    from: &AsyncFd<OwnedFd>,
    to: &AsyncFd<OwnedFd>,
    flow: Flow<'_>,
) -> Result<(), Broken> {
    match kind {
        SocketType::Seqpacket => messages(from, to, flow).await,
        _ => pump(from, to, flow).await,
    }
}

/// Forwards the messages of a seqpacket `from` to `to`, each whole and as one message, until
/// `from`'s EOF, which it passes on.
pub(super) async fn messages(
    from: &AsyncFd<OwnedFd>,
    to: &AsyncFd<OwnedFd>,
    mut flow: Flow<'_>,
) -> Result<(), Broken> {
    let (source, sink) = flow.sides();
    let mut buf = Vec::new();
    loop {
        // The next message's length (MSG_TRUNC), without taking it. Its credentials (every
        // message has them: SO_PASSCRED) tell an empty message from the end; no room for its
        // descriptors: a peek's are copies, closed at once.
        let peek = |fd: BorrowedFd<'_>| {
            udsecho_unix::passing::recv(
                fd,
                &mut [],
                RecvFlags::PEEK | RecvFlags::TRUNC | RecvFlags::DONTWAIT,
                0,
                true,
            )
            .map(|got| (got.len, got.len == 0 && got.creds.is_none()))
        };
        let (len, eof) = match flow.faults.as_mut().filter(|f| f.holds()) {
            // A message held back for `reorder` goes out at the drain, if no other comes
            // first.
            Some(faults) => tokio::select! {
                peeked = when_ready(from, source, peek, |_| false) => peeked?,
                () = faults.drain_begun() => {
                    send_held(to, faults, flow.forwarded).await?;
                    continue;
                }
            },
            None => when_ready(from, source, peek, |_| false).await?,
        };
        if eof {
            if let Some(faults) = &mut flow.faults {
                // The message held back goes before the end.
                send_held(to, faults, flow.forwarded).await?;
            }
            return flow.pass_eof(to).await;
        }
        // A message longer than the usual buffer gets one of its size while it is forwarded.
        buf.resize(len.max(BUFFER), 0);
        let room = descriptors::room();
        let got = descriptors::recv(
            from.get_ref().as_fd(),
            &mut buf[..len],
            RecvFlags::DONTWAIT,
            room,
            true,
        )
        .map_err(|e| Broken::new(source, e))?;
        if got.truncated {
            let why = format!(
                "the kernel closed descriptors passed with a {len}-byte message: the proxy had \
                 room for {room} (near its descriptor limit)"
            );
            return Err(Broken { side: source, why });
        }
        let mut fds = got.fds;
        flow.data(&buf[..got.len], &fds).await;
        match &mut flow.faults {
            // One message: all of it or nothing.
            None => {
                send(to, &buf[..got.len], &mut fds)
                    .await
                    .map_err(|e| Broken::new(sink, e))?;
                flow.forwarded.fetch_add(got.len as u64, Ordering::Relaxed);
            }
            Some(faults) => {
                faulty_message(to, faults, &mut buf[..got.len], fds, flow.forwarded).await?
            }
        }
        if buf.len() > BUFFER {
            buf.truncate(BUFFER);
            buf.shrink_to_fit();
        }
        crate::busy_poll::worked();
    }
}

/// Sends a message of the upstream's to the client as the faults have it: dropped, held back
/// for `reorder`, or after `latency`, cut (`truncate`, `limit_data`), once or twice, then the
/// message held back before it, if any. `Err` when a side failed, or `limit_data` ends the
/// connection.
async fn faulty_message(
    to: &AsyncFd<OwnedFd>,
    faults: &mut ClientFaults,
    message: &mut [u8],
    mut fds: Passed,
    forwarded: &AtomicU64,
) -> Result<(), Broken> {
    let fate = faults.message(message.len());
    let Some(goes) = faults.outcome(fate, message, &mut fds) else {
        return Ok(());
    };
    // The drain cuts the delay short.
    faults.pause(goes.delay).await;
    for _ in 0..goes.times {
        // A duplicate carries no descriptors: the first took them.
        send_cut(to, faults, &mut message[..goes.len], &mut fds, forwarded).await?;
    }
    send_held(to, faults, forwarded).await
}

/// Sends the message `reorder` held back, if any.
async fn send_held(
    to: &AsyncFd<OwnedFd>,
    faults: &mut ClientFaults,
    forwarded: &AtomicU64,
) -> Result<(), Broken> {
    match faults.take_held() {
        Some(mut held) => send_cut(to, faults, &mut held, &mut Passed::none(), forwarded).await,
        None => Ok(()),
    }
}

/// One message to the client, as `limit_data` (cut, then the end), `corrupt` and
/// `withhold_fds` have it.
async fn send_cut(
    to: &AsyncFd<OwnedFd>,
    faults: &mut ClientFaults,
    message: &mut [u8],
    fds: &mut Passed,
    forwarded: &AtomicU64,
) -> Result<(), Broken> {
    let cut = faults.cut(message, fds);
    // A message `limit_data` cuts to nothing is not sent: an empty message is a message
    // (the client would read one the upstream never sent), not the end.
    if cut.len > 0 || message.is_empty() {
        let sent = send(to, &message[..cut.len], fds).await;
        if let Some(at) = cut.flipped {
            message[at] ^= 0xff;
        }
        sent.map_err(|e| Broken::new("client", e))?;
    }
    let total = forwarded.fetch_add(cut.len as u64, Ordering::Relaxed) + cut.len as u64;
    if cut.end {
        let why = format!("limit_data reached: {total} bytes went to the client");
        return Err(Broken { side: "fault", why });
    }
    Ok(())
}

/// Reads `from` with `read` once it is ready (again, when a read would block), as the side
/// `source`. When `took_all` says a read took everything there was, the readiness is
/// cleared, as tokio's own sockets do: the next read waits for the next wake-up instead of
/// first making a system call that would block (one `recvmsg` fewer per read; an EOF or a
/// reset stays ready — tokio never clears those).
async fn when_ready<T>(
    from: &AsyncFd<OwnedFd>,
    source: &'static str,
    mut read: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<T>,
    took_all: impl Fn(&T) -> bool,
) -> Result<T, Broken> {
    loop {
        let mut ready = from.readable().await.map_err(|e| Broken::new(source, e))?;
        match ready.try_io(|fd| read(fd.as_fd()).map_err(io::Error::from)) {
            Ok(Ok(got)) => {
                if took_all(&got) {
                    ready.clear_ready();
                }
                return Ok(got);
            }
            Ok(Err(e)) => return Err(Broken::new(source, e)),
            Err(_would_block) => {}
        }
    }
}

/// Whether `from` (a stream, registered for priority) has an out-of-band mark queued, at which
/// reads stop short.
fn out_of_band_queued(from: &AsyncFd<OwnedFd>) -> bool {
    // `try_io` calls the closure only if priority (or read-closed) readiness is set.
    from.try_io(Interest::PRIORITY, |_| Ok(())).is_ok()
}

/// One `sendmsg` of `bytes` with `fds` on `to`, once it has room: how many bytes went (a
/// stream may take part; a message goes whole). The descriptors go with it (our copies
/// close); the kernel refusing them (`ETOOMANYREFS`) closes them with a log line and the
/// bytes go alone.
async fn send(to: &AsyncFd<OwnedFd>, bytes: &[u8], fds: &mut Passed) -> io::Result<usize> {
    loop {
        let mut ready = to.writable().await?;
        let sent = ready.try_io(|fd| {
            descriptors::send(fd.as_fd(), &[IoSlice::new(bytes)], fds, SEND_FLAGS, None)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(Ok(n)) => {
                fds.returned();
                return Ok(n);
            }
            Ok(Err(e)) => {
                let errno = e.raw_os_error().map(Errno::from_raw_os_error);
                if !errno.is_some_and(|errno| fds.refused(errno)) {
                    return Err(e);
                }
            }
            Err(_would_block) => {}
        }
    }
}
