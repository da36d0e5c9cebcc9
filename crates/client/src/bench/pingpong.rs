//! Raw ping-pong on the thread's own epoll set, driven by one plain loop.
//!
//! This is the load users run most, and the one where tokio's per-task work (a task, a waker
//! and a turn of the scheduler per echo) was a fifth of the client's samples against 7% of
//! `loadgen`'s: the epoll loop `loadgen` and the reference server use does the same job with
//! none of it. Nothing else changes: every echo is checked byte for byte ([`Echoes`]), timed
//! into the thread's tally, and bounded by `--timeout`; errors are the same [`ErrorKind`]s the
//! task-per-connection loops report.
//!
//! Level-triggered, one `recv` per readiness event: a read that leaves bytes behind (an echo
//! bigger than the buffer, a read the kernel stopped early) is reported again by the next
//! `epoll_wait`, so the loop never makes the read that only returns EAGAIN, and never waits
//! on bytes that are already there.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{Timespec, epoll};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use tokio::time::Instant;

use super::echoes::Echoes;
use super::load::Load;
use crate::error::ErrorKind;

/// How often the loop checks `--timeout` and lets its thread publish progress.
const TICK: Duration = Duration::from_millis(100);

/// The largest read: a bigger echo takes several.
const READ_MAX: usize = 256 * 1024;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// One connection's place in the loop.
struct Conn {
    socket: OwnedFd,
    load: Load,
    echoes: Echoes,
    /// Messages sent so far; the last one is in flight.
    sent: u64,
    sent_at: Instant,
    /// Bytes of the message in flight written so far.
    written: usize,
    /// Registered for writability: the socket was full mid-message.
    watching_writes: bool,
}

/// Drives `conns` (each socket with its load) until their deadline: every connection sends
/// its next message as soon as the echo of the last is in and checked, and closes once the
/// deadline has passed. `tick` runs every 100 ms and returns `false` to stop early (another
/// thread failed). With `busy_poll`, the loop polls (`epoll_wait` with a zero timeout) for
/// that long after its last event before it sleeps. Fails on the first bad echo, broken
/// connection or `--timeout`.
pub(super) fn drive(
    conns: Vec<(OwnedFd, Load)>,
    mut tick: impl FnMut() -> bool,
    busy_poll: Duration,
) -> Result<(), ErrorKind> {
    let failed = |doing: &'static str| {
        move |e: Errno| ErrorKind::Io {
            doing,
            source: e.into(),
        }
    };
    let epoll =
        epoll::create(epoll::CreateFlags::CLOEXEC).map_err(failed("creating an epoll set"))?;
    let size = conns.first().map_or(0, |(_, load)| load.payload.len());
    // Each connection registered and its first message sent; `None` once it has left.
    let mut slots: Vec<Option<Conn>> = Vec::with_capacity(conns.len());
    let mut open = 0;
    let now = Instant::now();
    for (token, (socket, load)) in conns.into_iter().enumerate() {
        epoll::add(&epoll, &socket, data(token), epoll::EventFlags::IN)
            .map_err(failed("registering a connection"))?;
        let mut conn = Conn {
            socket,
            echoes: Echoes::new(load.payload.clone()),
            load,
            sent: 0,
            sent_at: now,
            written: 0,
            watching_writes: false,
        };
        let started = conn.next(&epoll, token, now)?;
        open += usize::from(started);
        slots.push(started.then_some(conn));
    }

    let mut buf = vec![0u8; size.min(READ_MAX) + 1];
    let mut events = Vec::with_capacity(EVENTS);
    let mut next_tick = Instant::now() + TICK;
    let mut last_event = Instant::now();
    while open > 0 {
        // At most a tick, so under a second; nothing while polling.
        let wait = if !busy_poll.is_zero() && last_event.elapsed() < busy_poll {
            Duration::ZERO
        } else {
            next_tick
                .saturating_duration_since(Instant::now())
                .min(TICK)
        };
        let wait = Timespec {
            tv_sec: 0,
            tv_nsec: wait.subsec_nanos().into(),
        };
        events.clear();
        match epoll::wait(
            &epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&wait),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(failed("waiting for echoes")(e)),
        }
        if !busy_poll.is_zero() && !events.is_empty() {
            last_event = Instant::now();
        }
        for event in &events {
            let token = event.data.u64() as usize;
            let Some(slot) = slots.get_mut(token) else {
                continue;
            };
            let Some(conn) = slot else {
                continue;
            };
            let flags = event.flags;
            let mut still_open = true;
            if conn.watching_writes && flags.contains(epoll::EventFlags::OUT) {
                still_open = conn.writable(&epoll, token)?;
            }
            let readable = epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR;
            if still_open && flags.intersects(readable) {
                still_open = conn.readable(&mut buf, &epoll, token)?;
            }
            if !still_open {
                *slot = None;
                open -= 1;
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            if !tick() {
                return Ok(());
            }
            for conn in slots.iter().flatten() {
                conn.check_timeout(now)?;
            }
            next_tick = now + TICK;
        }
    }
    Ok(())
}

fn data(token: usize) -> epoll::EventData {
    epoll::EventData::new_u64(token as u64)
}

impl Conn {
    /// Sends the next message, or, past the deadline, leaves the loop (`false`).
    fn next(&mut self, epoll: &OwnedFd, token: usize, now: Instant) -> Result<bool, ErrorKind> {
        if now >= self.load.deadline {
            return Ok(false);
        }
        self.sent += 1;
        self.sent_at = now;
        self.written = 0;
        self.write(epoll, token)?;
        Ok(true)
    }

    /// Writes what is left of the message in flight; a full socket is watched for room.
    fn write(&mut self, epoll: &OwnedFd, token: usize) -> Result<(), ErrorKind> {
        let payload = &self.load.payload;
        while self.written < payload.len() {
            let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
            match rustix::net::send(&self.socket, &payload[self.written..], flags) {
                Ok(n) => self.written += n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return self.watch_writes(epoll, token, true),
                Err(e) => return Err(self.load.broken("sending", e.into())),
            }
        }
        self.watch_writes(epoll, token, false)
    }

    fn watch_writes(&mut self, epoll: &OwnedFd, token: usize, on: bool) -> Result<(), ErrorKind> {
        if self.watching_writes != on {
            let mut flags = epoll::EventFlags::IN;
            if on {
                flags |= epoll::EventFlags::OUT;
            }
            epoll::modify(epoll, &self.socket, data(token), flags).map_err(|e| ErrorKind::Io {
                doing: "watching a connection",
                source: e.into(),
            })?;
            self.watching_writes = on;
        }
        Ok(())
    }

    /// The socket has room again: write on, and move on if the echo is already in.
    fn writable(&mut self, epoll: &OwnedFd, token: usize) -> Result<bool, ErrorKind> {
        self.write(epoll, token)?;
        self.maybe_next(epoll, token)
    }

    /// One read: checks what it brought, and sends the next message once the echo is whole.
    fn readable(
        &mut self,
        buf: &mut [u8],
        epoll: &OwnedFd,
        token: usize,
    ) -> Result<bool, ErrorKind> {
        let n = match rustix::net::recv(&self.socket, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(Errno::AGAIN | Errno::INTR) => return Ok(true),
            Err(e) => return Err(self.load.broken("receiving", e.into())),
        };
        if n == 0 {
            return Err(self.load.cut_off(&self.echoes));
        }
        self.echoes.take(&buf[..n], self.sent)?;
        self.maybe_next(epoll, token)
    }

    /// Once the message in flight is written and its echo is in: counts the round trip and
    /// sends the next (or leaves, past the deadline).
    fn maybe_next(&mut self, epoll: &OwnedFd, token: usize) -> Result<bool, ErrorKind> {
        if self.echoes.done() < self.sent || self.written < self.load.payload.len() {
            return Ok(true);
        }
        self.load.record(self.sent_at);
        self.next(epoll, token, Instant::now())
    }

    /// `--timeout` counts from when the message in flight was sent.
    fn check_timeout(&self, now: Instant) -> Result<(), ErrorKind> {
        if now.duration_since(self.sent_at) < self.load.timeout {
            return Ok(());
        }
        let n = self.sent;
        Err(self.load.late(&if self.written < self.load.payload.len() {
            format!("sending message {n}")
        } else {
            format!("waiting for the echo of message {n}")
        }))
    }
}
