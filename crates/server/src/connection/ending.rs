//! How a connection ends, once its reading phase has stopped: the last words (Goodbye, an
//! Error frame, or the echo still owed), the half-close, and a short linger that reads and
//! drops late input so the peer is not reset before it reads our last frame.
//!
//! Free functions over the [`Peer`]: the handler says how the connection ends ([`End`]) and
//! where its output stands ([`Output`]), and calls down; nothing here reaches back into it.
//! These are `async` and boxed by the handler when they start, so an idle connection's task
//! does not carry them.

use std::io;
use std::time::Duration;

use udsecho_proto::{ErrorCode, GoodbyeReason};

use super::framed;
use super::peer::Peer;
use super::plan::{Breach, End, Faulted};
use super::scratch::SCRATCH;
use crate::shutdown::Shutdown;

/// After our last frame (Error, Goodbye): how long, and how much, late input is read and
/// dropped before closing, so the peer is not reset before it reads that frame.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

/// Where the connection's output stands: whether a frame of ours may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Raw bytes or messages: the connection ends with a close, never a frame.
    Unframed,
    /// A framed session between two frames: Goodbye or Error may go out.
    AtBoundary,
    /// A framed session inside a Data frame already partly echoed: a frame of ours would land
    /// inside it, so the connection can only be closed.
    MidFrame,
}

/// Says the last words for `end` and closes our side; cut short if a forced shutdown comes
/// first. Returns how the connection really ended (a peer that will not take our last
/// words within `idle_timeout` makes it an idle end). `slow_close`: a fault's wait between
/// the peer's half-close and ours.
pub(crate) async fn finish(
    peer: &mut Peer,
    end: End,
    output: Output,
    idle_timeout: Option<Duration>,
    slow_close: Option<Duration>,
    shutdown: &Shutdown,
) -> io::Result<End> {
    if let End::Cut | End::Faulted(Faulted::Reset) = end {
        return Ok(end);
    }
    tokio::select! {
        biased;
        () = shutdown.forced() => Ok(End::Cut),
        end = last_words(peer, end, output, idle_timeout, slow_close, shutdown) => end,
    }
}

async fn last_words(
    peer: &mut Peer,
    end: End,
    output: Output,
    idle_timeout: Option<Duration>,
    slow_close: Option<Duration>,
    shutdown: &Shutdown,
) -> io::Result<End> {
    if let End::PeerDone = end {
        if output == Output::MidFrame {
            tracing::debug!("the peer closed in the middle of a Data frame");
        }
        if let Some(delay) = slow_close {
            // Everything owed goes out first; only our close is late. Like every fault, it
            // ends when the drain begins.
            peer.flush(None).await?;
            tokio::select! {
                () = shutdown.begun() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        peer.shut_write();
        return Ok(end);
    }
    if let End::Idle = end {
        idle(peer, output, idle_timeout).await?;
        return Ok(end);
    }
    // What was read is echoed first, if the peer takes it.
    if !peer.flush(idle_timeout).await? {
        idle(peer, output, idle_timeout).await?;
        return Ok(End::Idle);
    }
    let frame = match (&end, output) {
        (End::Drained, Output::AtBoundary) => {
            framed::goodbye(GoodbyeReason::Shutdown, peer.last_frame());
            true
        }
        (End::PeerGoodbye, _) => {
            framed::goodbye(GoodbyeReason::Done, peer.last_frame());
            true
        }
        (End::Breach(breach), _) => {
            tracing::debug!(code = ?breach.code, "protocol error: {}", breach.message);
            framed::error_frame(breach, peer.last_frame());
            true
        }
        (End::Faulted(Faulted::Goodbye), Output::AtBoundary) => {
            framed::goodbye(GoodbyeReason::Done, peer.last_frame());
            true
        }
        (End::Faulted(Faulted::Error(code)), Output::AtBoundary) => {
            let breach = Breach {
                code: ErrorCode::from(*code),
                message: "an error_after fault".to_owned(),
            };
            framed::error_frame(&breach, peer.last_frame());
            true
        }
        // Logged where it was found. An Error frame only where a frame may start.
        (End::Truncated(breach), Output::AtBoundary) => {
            framed::error_frame(breach, peer.last_frame());
            true
        }
        _ => false,
    };
    if frame {
        last_word(peer, idle_timeout).await?;
    } else {
        peer.shut_write();
    }
    Ok(end)
}

/// Nothing moved for `--idle-timeout`. A framed peer gets Goodbye unless that would land
/// inside a frame; otherwise what was read and is still owed gets a moment to go out.
async fn idle(peer: &mut Peer, output: Output, idle_timeout: Option<Duration>) -> io::Result<()> {
    if output == Output::AtBoundary && !peer.owes() {
        framed::goodbye(GoodbyeReason::IdleTimeout, peer.last_frame());
        return last_word(peer, idle_timeout).await;
    }
    if peer.owes() {
        let _ = peer.flush(Some(LINGER)).await;
    }
    peer.shut_write();
    Ok(())
}

/// Sends our last frame (in the peer's backlog), shuts down our side, and lingers.
async fn last_word(peer: &mut Peer, limit: Option<Duration>) -> io::Result<()> {
    if !peer.flush(limit).await? {
        return Ok(());
    }
    peer.shut_write();
    linger(peer).await;
    Ok(())
}

/// After our last frame: reads and drops what the peer still sends, for a moment. Closing a
/// Unix socket with unread input resets the peer, which could hide that frame from a client
/// still writing.
async fn linger(peer: &mut Peer) {
    let discard = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            if std::future::poll_fn(|cx| peer.poll_read_ready(cx))
                .await
                .is_err()
            {
                return;
            }
            let read = SCRATCH.with_borrow_mut(|scratch| peer.read(scratch, false));
            // Taken with the read (so not closed by the kernel on this thread), and closed
            // aside: no echo will carry them.
            peer.lose_held("they came after the server's last frame");
            match read {
                Ok(read) if read.len == 0 => return,
                Ok(read) => total += read.len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}
