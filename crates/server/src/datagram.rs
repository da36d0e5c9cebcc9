//! The datagram echo: one socket, no connections. Each datagram goes back to its sender's
//! address, whole.
//!
//! - A sender with no address (an unbound socket: `socat UNIX-SENDTO` without `bind=`, `nc -uU`
//!   versions that do not bind) cannot be answered: its datagrams are counted and dropped,
//!   with at most one log line every few seconds. Nobody else notices.
//! - A sender whose receive queue is full (it is not reading its replies) would make the
//!   server wait for it, and so everyone: its reply is dropped and counted the same way.
//!   Datagrams are unreliable by nature; a blocked sender never blocks the others.
//! - `--allow-uid` is checked per datagram from the sender's credentials (`SO_PASSCRED`).
//! - `--idle-timeout` and `--max-connections` have no meaning here (there are no
//!   connections). At shutdown the datagrams already queued are answered, then the server
//!   stops.

use std::io::{self, IoSliceMut};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendFlags, SocketAddrUnix,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

use crate::config::Config;
use crate::connection::echo_log;
use crate::shutdown::Shutdown;

/// The largest datagram answered. Unix datagrams are bounded by the sender's send buffer
/// (`net.core.wmem_default`, 208 KiB by default); a larger one is counted and dropped.
const MAX_DATAGRAM: usize = 256 * 1024;
/// At shutdown, at most this many queued datagrams are answered.
const DRAIN_MAX: usize = 100_000;
/// How often a run of dropped datagrams is summarised in the log.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Its sender has no address.
    Unnamed,
    /// Its sender is not in `--allow-uid`.
    Refused,
    /// It did not fit in [`MAX_DATAGRAM`].
    TooLarge,
    /// The sender's queue was full.
    NotReading,
}

impl Dropped {
    fn why(self) -> &'static str {
        match self {
            Dropped::Unnamed => {
                "from a sender with no address (bind the client's socket to get replies)"
            }
            Dropped::Refused => "from a uid not in --allow-uid",
            Dropped::TooLarge => "larger than 256 KiB",
            Dropped::NotReading => "whose sender was not reading its replies",
        }
    }
}

/// Counts unanswered datagrams and logs them at most once every [`REPORT_EVERY`].
#[derive(Debug, Default)]
struct DropLog {
    counts: [u64; 4],
    reported_at: Option<Instant>,
}

impl DropLog {
    fn dropped(&mut self, why: Dropped) {
        self.counts[why as usize] += 1;
        let now = Instant::now();
        if self
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            self.report();
            self.reported_at = Some(now);
        }
    }

    fn report(&mut self) {
        for (i, why) in [
            Dropped::Unnamed,
            Dropped::Refused,
            Dropped::TooLarge,
            Dropped::NotReading,
        ]
        .into_iter()
        .enumerate()
        {
            let n = std::mem::take(&mut self.counts[i]);
            if n > 0 {
                tracing::warn!(
                    "dropped {n} datagram{} {}",
                    if n == 1 { "" } else { "s" },
                    why.why()
                );
            }
        }
    }
}

/// Answers datagrams on `socket` until the shutdown begins, then the ones already queued.
pub(crate) async fn serve(socket: UnixDatagram, name: &str, config: &Config, shutdown: &Shutdown) {
    if !config.allow_uids.is_empty()
        && let Err(e) = rustix::net::sockopt::set_socket_passcred(&socket, true)
    {
        tracing::warn!(
            "{name}: cannot read senders' credentials ({e}); --allow-uid refuses everyone"
        );
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut drops = DropLog::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown.begun() => break,
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!("{name}: {e}");
                    return;
                }
            }
        }
        if let Err(e) = answer_queued(&socket, config, &mut buf, &mut drops, usize::MAX) {
            tracing::debug!("{name}: {e}");
        }
    }
    // The datagrams sent before the signal are answered; then the socket closes.
    if let Err(e) = answer_queued(&socket, config, &mut buf, &mut drops, DRAIN_MAX) {
        tracing::debug!("{name}: {e}");
    }
    drops.report();
}

/// Answers datagrams until none is queued (or `limit` were read).
fn answer_queued(
    socket: &UnixDatagram,
    config: &Config,
    buf: &mut [u8],
    drops: &mut DropLog,
    limit: usize,
) -> io::Result<()> {
    for _ in 0..limit {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = socket.try_io(Interest::READABLE, || {
            rustix::net::recvmsg(
                socket,
                &mut [IoSliceMut::new(buf)],
                &mut control,
                RecvFlags::DONTWAIT,
            )
            .map_err(io::Error::from)
        });
        let msg = match received {
            Ok(msg) => msg,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let uid = control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmCredentials(cred) => Some(cred.uid.as_raw()),
            _ => None,
        });
        let sender = msg
            .address
            .and_then(|a| SocketAddrUnix::try_from(a).ok())
            .filter(|a| a.path().is_some() || a.abstract_name().is_some());
        let Some(sender) = sender else {
            drops.dropped(Dropped::Unnamed);
            continue;
        };
        if !config.allow_uids.is_empty() && !uid.is_some_and(|u| config.allow_uids.contains(&u)) {
            drops.dropped(Dropped::Refused);
            continue;
        }
        if msg.flags.contains(ReturnFlags::TRUNC) {
            drops.dropped(Dropped::TooLarge);
            continue;
        }
        let datagram = &buf[..msg.bytes];
        if echo_log::enabled() {
            echo_log::log(&[datagram]);
        }
        match rustix::net::sendto(
            socket,
            datagram,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            &sender,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::AGAIN) => drops.dropped(Dropped::NotReading),
            // The sender is gone (its address no longer exists): nothing to answer.
            Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {}
            Err(e) => tracing::debug!("answering a datagram: {e}"),
        }
    }
    Ok(())
}
