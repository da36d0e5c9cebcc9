//! A client that blocks for each echo (`--blocking`): write the message, then sleep in `read`
//! until the whole echo is back, then the next — how most programs talk to a Unix socket, and
//! so what their users see of a server's latency: every round trip includes whatever the
//! server spends between its wake-up and its answer.
//!
//! One connection per thread (the thread sleeps while it waits). The socket's receive timeout
//! is the 100 ms tick, so a silent server is noticed (`--timeout`, counted from the send) and
//! another thread's failure stops this one. With `--busy-poll` the client polls its socket
//! (non-blocking reads) for that long after the send before it blocks, so that the figures do
//! not include its own wake-up. Every echo is checked byte for byte ([`Echoes`]).

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use tokio::time::Instant;

use super::echoes::Echoes;
use super::load::Load;
use crate::error::ErrorKind;

/// How often a blocked read wakes to check `--timeout` and let its thread publish progress.
const TICK: Duration = Duration::from_millis(100);

/// The largest read: a bigger echo takes several.
const READ_MAX: usize = 256 * 1024;

/// Drives each of `conns` as a blocking client until its deadline (one, in practice: a thread
/// per connection). `tick` runs every 100 ms and returns `false` to stop early (another thread
/// failed). Fails on the first bad echo, broken connection or `--timeout`.
pub(super) fn drive(
    conns: Vec<(OwnedFd, Load)>,
    mut tick: impl FnMut() -> bool,
    busy_poll: Duration,
) -> Result<(), ErrorKind> {
    for (socket, load) in conns {
        Client::new(socket, load)?.run(&mut tick, busy_poll)?;
    }
    Ok(())
}

/// One blocking connection.
struct Client {
    socket: OwnedFd,
    echoes: Echoes,
    load: Load,
    buf: Vec<u8>,
}

impl Client {
    /// Makes `socket` blocking, with reads that wake every tick.
    fn new(socket: OwnedFd, load: Load) -> Result<Client, ErrorKind> {
        let setup = |e: Errno| ErrorKind::Io {
            doing: "preparing a connection",
            source: e.into(),
        };
        rustix::io::ioctl_fionbio(&socket, false).map_err(setup)?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(TICK),
        )
        .map_err(setup)?;
        // A send that blocks longer than `--timeout` (a server that stopped reading) fails.
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Send,
            Some(load.timeout),
        )
        .map_err(setup)?;
        let size = load.payload.len();
        Ok(Client {
            socket,
            echoes: Echoes::new(load.payload.clone()),
            load,
            buf: vec![0u8; size.min(READ_MAX)],
        })
    }

    fn run(
        &mut self,
        tick: &mut impl FnMut() -> bool,
        busy_poll: Duration,
    ) -> Result<(), ErrorKind> {
        let mut sent = 0;
        let mut next_tick = Instant::now() + TICK;
        while self.load.running() {
            let sent_at = Instant::now();
            self.send(sent + 1)?;
            sent += 1;
            while self.echoes.done() < sent {
                let polling = sent_at.elapsed() < busy_poll;
                let flags = if polling {
                    RecvFlags::DONTWAIT
                } else {
                    RecvFlags::empty()
                };
                match rustix::net::recv(&self.socket, &mut self.buf[..], flags) {
                    Ok((0, _)) => return Err(self.load.cut_off(&self.echoes)),
                    Ok((n, _)) => self.echoes.take(&self.buf[..n], sent)?,
                    Err(Errno::INTR) => {}
                    Err(Errno::AGAIN) if polling => std::hint::spin_loop(),
                    // The tick: a blocked read wakes to look at the time.
                    Err(Errno::AGAIN) => {
                        if sent_at.elapsed() >= self.load.timeout {
                            let waiting = format!("waiting for the echo of message {sent}");
                            return Err(self.load.late(&waiting));
                        }
                    }
                    Err(e) => return Err(self.load.broken("receiving", e.into())),
                }
                if Instant::now() >= next_tick {
                    if !tick() {
                        return Ok(());
                    }
                    next_tick = Instant::now() + TICK;
                }
            }
            self.load.record(sent_at);
        }
        Ok(())
    }

    /// Writes message `n` whole (blocking).
    fn send(&self, n: u64) -> Result<(), ErrorKind> {
        let payload = &self.load.payload;
        let mut written = 0;
        while written < payload.len() {
            match rustix::net::send(&self.socket, &payload[written..], SendFlags::NOSIGNAL) {
                Ok(k) => written += k,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    return Err(self.load.late(&format!("sending message {n}")));
                }
                Err(e) => return Err(self.load.broken("sending", e.into())),
            }
        }
        Ok(())
    }
}
