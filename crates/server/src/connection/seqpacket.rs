//! One seqpacket peer: every message back as one message, with its boundary.
//!
//! Seqpacket is connection-oriented like a stream, so the lifecycle, `--max-connections`,
//! `--allow-uid`, `--idle-timeout` (any message is activity) and the drain are the stream's;
//! but the unit is the message, so there is no framing and no mode detection. Messages land in
//! the thread's scratch buffer (a larger one is read into a buffer of its own size, learnt with
//! `MSG_PEEK | MSG_TRUNC`) and are sent straight back, then taken off the queue; a message
//! whose echo the socket would not take stays in the kernel until it can be sent, so a peer
//! that does not read costs the server nothing (see [`echo_one`]). Descriptors passed with a
//! message go back with its echo; the peek takes copies of them, which close once the echo
//! carries them (the originals close when the message is taken off the queue).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::plan::End;
use super::{SCRATCH, Settings};
use crate::descriptors::{self, Counted, MAX_PER_READ, Waiter};
use crate::echo_log;
use crate::shutdown::Shutdown;

/// Serves one seqpacket connection to the end, holding `slot` meanwhile.
pub(crate) async fn serve(
    fd: OwnedFd,
    settings: Arc<Settings>,
    shutdown: Shutdown,
    slot: OwnedSemaphorePermit,
) {
    let _slot = slot;
    let _counted = Counted::new();
    tracing::debug!("open");
    // Credentials on every message tell an empty message from the end of the stream.
    let socket = rustix::net::sockopt::set_socket_passcred(&fd, true)
        .map_err(io::Error::from)
        .and_then(|()| crate::registration::register(fd));
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => return tracing::debug!("closed: {e}"),
    };
    let mut passed = 0;
    match run(&socket, &mut passed, &settings, &shutdown).await {
        Ok(end) => tracing::debug!(?end, "closed"),
        Err(e) => tracing::debug!("closed: {e}"),
    }
    // Messages still queued may carry descriptors whose last close could wait: see
    // `descriptors::close_aside`.
    if passed > 0 || super::queued(socket.get_ref()) > 0 {
        descriptors::close_aside(vec![socket.into_inner()]);
    }
}

/// What a turn at the socket found.
enum Got {
    /// A message, echoed and taken off the socket's queue.
    Message,
    /// A message whose echo the socket would not take: it stays queued in the kernel until
    /// the socket is writable again.
    Blocked,
    /// The peer shut down its side.
    Eof,
    /// The peer passed descriptors the server could not take: the message was echoed with
    /// those it could, and the connection ends.
    Truncated,
    /// Nothing queued.
    Empty,
}

/// Serves `socket` to its end. `passed` is how many descriptors the peer passed last (0:
/// never): near the descriptor limit it waits for that much room before the next message
/// rather than have them truncated.
async fn run(
    socket: &AsyncFd<OwnedFd>,
    passed: &mut usize,
    settings: &Settings,
    shutdown: &Shutdown,
) -> io::Result<End> {
    let mut blocked = false;
    // Bytes still to read after the shutdown began: what was queued at that moment.
    let mut budget: Option<usize> = None;
    let mut active_at = Instant::now();
    loop {
        if blocked {
            tokio::select! {
                biased;
                () = shutdown.forced() => return Ok(End::Cut),
                // Readiness is cleared by the send that finds no room (`echo_one`).
                ready = socket.writable() => ready?.retain_ready(),
                () = idle(settings, active_at) => return Ok(close(socket, End::Idle)),
            }
            blocked = false;
        }
        if budget == Some(0) {
            return Ok(close(socket, End::Drained));
        }
        if budget.is_none() {
            tokio::select! {
                biased;
                () = shutdown.begun() => {
                    budget = Some(super::queued(socket.get_ref()));
                    continue;
                }
                // Readiness is cleared by the read that finds the queue empty (`echo_one`).
                ready = socket.readable() => ready?.retain_ready(),
                () = idle(settings, active_at) => return Ok(close(socket, End::Idle)),
            }
        }
        // Not while draining: what was queued at the signal is read with the room there is.
        if *passed > 0 && budget.is_none() {
            let mut waiter = Waiter::default();
            tokio::select! {
                biased;
                () = shutdown.begun() => {
                    budget = Some(super::queued(socket.get_ref()));
                }
                () = std::future::poll_fn(|cx| waiter.poll_room(cx, *passed)) => {}
                () = idle(settings, active_at) => return Ok(close(socket, End::Idle)),
            }
        }
        // Every queued message, a turn's worth at a time, until the queue is empty or an echo
        // backs up.
        for _ in 0..MESSAGES_PER_TURN {
            match echo_one(socket, &mut budget, passed)? {
                Got::Message => active_at = Instant::now(),
                Got::Blocked => {
                    blocked = true;
                    break;
                }
                Got::Eof => return Ok(close(socket, End::PeerDone)),
                Got::Truncated => return Ok(close(socket, End::Breach)),
                // Draining: an empty queue means everything sent before the signal is back.
                Got::Empty if budget.is_some() => return Ok(close(socket, End::Drained)),
                Got::Empty => break,
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Messages read per wake-up before the other connections get a turn.
const MESSAGES_PER_TURN: usize = 64;

/// Echoes the message at the head of the queue, if the socket will take its echo.
///
/// The message is *peeked*, sent back, and only then taken off the queue (a read into an
/// empty buffer discards a whole record). So a peer that does not read its echoes leaves its
/// messages in the kernel, charged to its own send buffer: the server keeps nothing for it,
/// whatever their size, and a larger message than the scratch buffer costs a buffer of its
/// size only for the moment it is echoed.
fn echo_one(
    socket: &AsyncFd<OwnedFd>,
    budget: &mut Option<usize>,
    passed: &mut usize,
) -> io::Result<Got> {
    let fd = socket.get_ref();
    SCRATCH.with_borrow_mut(|scratch| {
        // The message's whole length, whatever the buffer: MSG_TRUNC reports it. Through
        // `try_io` (EAGAIN clears readiness without losing a newer event), except while
        // draining: what FIONREAD counted is there whatever the runtime has seen. Its
        // credentials (every message has them: `SO_PASSCRED`) tell an empty message from the
        // end of the stream, and its descriptors come as copies of our own.
        let room = descriptors::room();
        let mut peek = |fd: &OwnedFd| {
            descriptors::recv(
                fd.as_fd(),
                &mut scratch[..],
                RecvFlags::PEEK | RecvFlags::TRUNC,
                room,
                true,
            )
            .map_err(io::Error::from)
        };
        let peeked = if budget.is_some() {
            peek(fd)
        } else {
            socket.try_io(Interest::READABLE, peek)
        };
        let mut got = match peeked {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Got::Empty),
            Err(e) => return Err(e),
        };
        let len = got.len;
        if len == 0 && got.creds.is_none() && got.fds.is_empty() {
            return Ok(Got::Eof);
        }
        if !got.fds.is_empty() || got.truncated {
            *passed = got.fds.len().max(1);
        }
        let own;
        let message: &[u8] = if len <= scratch.len() {
            &scratch[..len]
        } else {
            let mut whole = vec![0u8; len];
            let (n, _) = rustix::net::recv(fd, &mut whole[..], RecvFlags::PEEK)?;
            whole.truncate(n);
            own = whole;
            &own
        };
        let send = |fds: &descriptors::Passed| {
            socket.try_io(Interest::WRITABLE, |fd| {
                descriptors::send(
                    fd.as_fd(),
                    &[io::IoSlice::new(message)],
                    fds,
                    SendFlags::NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            })
        };
        let mut sent = send(&got.fds);
        // The kernel refused the descriptors (`Passed::refused`): the message goes back
        // without them, and the connection goes on.
        let refused = match &sent {
            Err(e) => e
                .raw_os_error()
                .map(rustix::io::Errno::from_raw_os_error)
                .is_some_and(|e| got.fds.refused(e)),
            Ok(_) => false,
        };
        if refused {
            sent = send(&got.fds);
        }
        match sent {
            Ok(_) => {}
            // Our copies close; the message, with its originals, stays queued.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                got.fds.close_copies();
                return Ok(Got::Blocked);
            }
            Err(e) => {
                if !got.fds.is_empty() {
                    got.fds.lose(&format!("sending them back failed: {e}"));
                }
                return Err(e);
            }
        }
        if echo_log::enabled() {
            let note = (!got.fds.is_empty()).then(|| got.fds.describe());
            echo_log::log_with(&[message], note.as_deref());
        }
        got.fds.sent();
        // Echoed: now off the queue.
        if refused {
            // The originals may be the last references now: taken, and closed aside
            // (`descriptors::close_aside`), not closed by the kernel on this thread.
            let room = descriptors::room();
            descriptors::recv(fd.as_fd(), &mut [], RecvFlags::empty(), room, true)?
                .fds
                .close();
        } else {
            rustix::net::recv(fd, &mut [0u8; 0][..], RecvFlags::empty())?;
        }
        if let Some(left) = budget {
            *left = left.saturating_sub(len.max(1));
        }
        if got.truncated {
            tracing::warn!(
                "the server could not take the descriptors passed with a message (room for \
                 {room} of at most {MAX_PER_READ}: near its descriptor limit); ending the \
                 connection"
            );
            return Ok(Got::Truncated);
        }
        Ok(Got::Message)
    })
}

async fn idle(settings: &Settings, since: Instant) {
    match settings.idle_timeout {
        Some(limit) => tokio::time::sleep_until(since + limit).await,
        None => std::future::pending().await,
    }
}

/// Shuts down our side: the peer reads what we sent, then the end.
fn close(socket: &AsyncFd<OwnedFd>, end: End) -> End {
    let _ = rustix::net::shutdown(socket.get_ref(), rustix::net::Shutdown::Write);
    end
}
