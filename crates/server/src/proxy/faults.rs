//! Faults in the proxy (`--fault` with `--upstream`): the server's fault table (`crate::fault`:
//! the specs, the seeded choice of connections, `--control`'s changes) applied to what goes
//! **to the client**, so the proxy is a Toxiproxy for Unix sockets: the upstream answers as
//! it does, and the client sees it late, in slices, slowly, cut short, corrupted, lost,
//! twice, out of order, or not at all.
//!
//! The faults hitting a connection are merged by the echo's own [`Effects`], and the message
//! faults (`loss`, `duplicate`, `reorder`, `truncate`) and the jitter are drawn by the echo's
//! [`Draws`], from the connection's own seeded stream: a fault means the same in the proxy
//! as in the echo, and `--fault-seed` replays it. Which faults apply depends on the socket
//! type ([`applies`]); one added through `--control` that does not is logged and ignored.
//!
//! - **Stream**, per read of the upstream's: `latency` holds it back, `slicer` writes it in
//!   slices with a gap, `bandwidth` at a rate, `corrupt` flips one byte at an offset of the
//!   client's stream, `withhold_fds` closes the descriptors instead of passing them on,
//!   `limit_data` ends the connection once that many bytes have gone to the client, and
//!   `reset_peer` ends it that long after it opened.
//! - **Seqpacket**, per message of the upstream's: the message faults decide its fate
//!   ([`Fate`]: dropped, held back to go after the next one, cut, sent twice); `latency`
//!   holds each message sent back; `corrupt`, `withhold_fds`, `limit_data` (the message that
//!   reaches it is cut there) and `reset_peer` as on a stream.
//! - **Datagram**, per reply of the upstream's to one relay: the message faults and
//!   `latency`, drawn per sender (its address is its "connection", as in the echo).
//!
//! The recording shows what the upstream sent; the faults shape what the client then gets.
//! When the graceful shutdown begins, the faults are lifted (a message held back goes out).
//! Memory stays bounded: a read held back is the read the pump holds anyway, nothing more is
//! read from the upstream meanwhile, and a message held back for `reorder` is one, of at
//! most 64 KiB, per connection (per relay).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SocketType;
use crate::descriptors::Passed;
use crate::fault::{Draws, Effects, Fate, Fault, FaultSpec, Faults};
use crate::shutdown::Shutdown;

/// Whether the proxy applies `fault` on a `kind` socket (the others are refused with
/// `--upstream`).
pub fn applies(kind: SocketType, fault: &Fault) -> bool {
    // The faults of a connection, whose bytes or messages it counts.
    let connection = || {
        matches!(
            fault,
            Fault::LimitData { .. }
                | Fault::ResetPeer { .. }
                | Fault::Corrupt { .. }
                | Fault::WithholdFds
        )
    };
    let latency = matches!(fault, Fault::Latency { .. });
    match kind {
        SocketType::Stream => {
            latency
                || connection()
                || matches!(fault, Fault::Bandwidth { .. } | Fault::Slicer { .. })
        }
        SocketType::Seqpacket => latency || connection() || fault.messages_only(),
        SocketType::Datagram => latency || fault.messages_only(),
    }
}

/// The faults the proxy applies on a `kind` socket, by name, for messages.
pub fn applied(kind: SocketType) -> &'static str {
    match kind {
        SocketType::Stream => {
            "latency, bandwidth, slicer, limit_data, reset_peer, corrupt and withhold_fds"
        }
        SocketType::Seqpacket => {
            "loss, duplicate, reorder, truncate, latency, limit_data, reset_peer, corrupt and \
             withhold_fds"
        }
        SocketType::Datagram => "loss, duplicate, reorder, truncate and latency",
    }
}

/// How one read goes to the client (a stream).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// Wait this long before its first byte.
    pub(super) delay: Duration,
    /// Write this much of it (less than the read at `limit_data`).
    pub(super) len: usize,
    /// At most this much a write, and the pause after each.
    pub(super) piece: usize,
    pub(super) gap: Duration,
    /// Then end the connection (`limit_data` reached).
    pub(super) end: bool,
}

/// What goes out of one write to the client, as `limit_data` and `corrupt` have it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Cut {
    /// Write this much (less at `limit_data`).
    pub(super) len: usize,
    /// Then end the connection (`limit_data` reached).
    pub(super) end: bool,
    /// The byte `corrupt` flipped, to flip back once written (a duplicate is a clean copy).
    pub(super) flipped: Option<usize>,
}

/// How a message goes to the client: after `delay`, its first `len` bytes, `times` times
/// (then the message held back before it, if any).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Goes {
    pub(super) delay: Duration,
    pub(super) len: usize,
    pub(super) times: u8,
}

/// One connection's (one datagram relay's) faults on what goes to its client.
#[derive(Debug)]
pub(super) struct ClientFaults {
    table: Arc<Faults>,
    /// Which faults apply.
    kind: SocketType,
    /// Which faults hit is drawn from it: the connection's number, or a datagram sender's
    /// key (`crate::fault::sender_of`), as the echo's datagram socket draws.
    key: u64,
    generation: u64,
    /// The faults that hit and apply, as drawn (to log a change).
    hits: Vec<Arc<FaultSpec>>,
    effects: Effects,
    /// The connection's own draws (jitter, the message faults), replayed by `--fault-seed`.
    draws: Draws,
    /// When the connection opened: `reset_peer` counts from here.
    opened: Instant,
    /// Bytes that have gone to the client.
    sent: u64,
    /// A message held back by `reorder`, to go after the next one (at most 64 KiB).
    held: Option<Vec<u8>>,
    /// Set while bytes are held back (a delay under way, a message kept for `reorder`):
    /// `--idle-timeout` does not count that time (see [`ClientFaults::holding`]).
    holding: Arc<AtomicBool>,
    shutdown: Shutdown,
}

impl ClientFaults {
    /// The faults of connection (or sender) `key` of a `kind` proxy with `table`, drawing
    /// from the seed's stream number `stream` (a connection's number).
    pub(super) fn new(
        table: &Arc<Faults>,
        kind: SocketType,
        (key, stream): (u64, u64),
        shutdown: &Shutdown,
    ) -> ClientFaults {
        let mut faults = ClientFaults {
            table: table.clone(),
            kind,
            key,
            generation: u64::MAX,
            hits: Vec::new(),
            effects: Effects::default(),
            draws: Draws::new(table.connection_rng(stream)),
            opened: Instant::now(),
            sent: 0,
            held: None,
            holding: Arc::default(),
            shutdown: shutdown.clone(),
        };
        faults.refresh();
        faults
    }

    /// Follows the table (`--control`): one atomic load when nothing changed. Says (`-v`)
    /// which faults hit, when that changes.
    fn refresh(&mut self) {
        if self.table.generation() == self.generation {
            return;
        }
        let (generation, hits) = self.table.hitting(self.key);
        self.generation = generation;
        let (hits, others): (Vec<_>, Vec<_>) = hits
            .into_iter()
            .partition(|spec| applies(self.kind, &spec.fault));
        for spec in others {
            // Added through --control: logged, not applied.
            tracing::debug!(
                "fault {}: not applied by a {} proxy",
                spec.text(),
                self.kind
            );
        }
        let same = hits.len() == self.hits.len()
            && hits.iter().zip(&self.hits).all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
        let had = !self.hits.is_empty();
        self.effects = Effects::of(&hits);
        self.hits = hits;
        if self.kind == SocketType::Datagram {
            // As in the echo's datagram socket, each reply a fault hits says so instead.
            return;
        }
        match self.names() {
            Some(names) => tracing::debug!("fault: {names}"),
            None if had => tracing::debug!("fault: none"),
            None => {}
        }
    }

    /// The drain began: no fault applies any more.
    pub(super) fn lifted(&self) -> bool {
        self.shutdown.is_begun()
    }

    /// Waits out a fault's `pause` (a `latency`, a gap between slices), cut short when the
    /// drain begins: whether the faults are lifted now.
    pub(super) async fn pause(&self, pause: Duration) -> bool {
        if !pause.is_zero() {
            self.holding.store(true, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.drain_begun() => {}
            }
            self.holding.store(self.held.is_some(), Ordering::Relaxed);
        }
        self.lifted()
    }

    /// Whether these faults hold bytes back now, for whoever watches the connection's idle
    /// time: the bytes are the proxy's to send, so the connection is not idle meanwhile.
    pub(super) fn holding(&self) -> Arc<AtomicBool> {
        self.holding.clone()
    }

    /// When `reset_peer` ends the connection, if it does.
    pub(super) fn reset_at(&self) -> Option<Instant> {
        self.effects.reset.map(|after| self.opened + after)
    }

    /// What becomes of one read of `len` bytes from the upstream, in `bytes` (corrupted
    /// here) with `fds` (closed here for `withhold_fds`).
    pub(super) fn plan(&mut self, bytes: &mut [u8], fds: &mut Passed) -> Plan {
        let whole = Plan {
            delay: Duration::ZERO,
            len: bytes.len(),
            piece: bytes.len().max(1),
            gap: Duration::ZERO,
            end: false,
        };
        if self.lifted() {
            return whole;
        }
        self.refresh();
        let cut = self.cut(bytes, fds);
        let mut plan = Plan {
            delay: self.delay(),
            len: cut.len,
            end: cut.end,
            ..whole
        };
        if let Some((size, gap)) = self.effects.slice {
            plan.piece = plan.piece.min(size.max(1));
            plan.gap = gap;
        }
        if let Some(rate) = self.effects.rate.map(|rate| rate.max(1)) {
            // A fiftieth of a second's worth at a time.
            let portion = usize::try_from(rate / 50).unwrap_or(usize::MAX).max(1);
            plan.piece = plan.piece.min(portion);
            plan.gap = plan
                .gap
                .max(Duration::from_secs_f64(plan.piece as f64 / rate as f64));
        }
        plan
    }

    /// What becomes of the next message (a seqpacket message, a reply to a datagram), `len`
    /// bytes long: the echo's draw ([`Draws::message`]), so the same seed gives the same
    /// fates. A message may be held back when none is already.
    pub(super) fn message(&mut self, len: usize) -> Fate {
        if self.lifted() {
            return Fate::Echo { len, times: 1 };
        }
        self.refresh();
        self.draws.message(&self.effects, len, self.held.is_none())
    }

    /// What becomes of `message` (with `fds`) by its `fate` ([`ClientFaults::message`]):
    /// `None` when it is dropped or held back for `reorder` (its descriptors closed), else
    /// how it goes.
    pub(super) fn outcome(&mut self, fate: Fate, message: &[u8], fds: &mut Passed) -> Option<Goes> {
        let (len, times) = match fate {
            Fate::Drop => {
                fds.lose("a fault dropped the message");
                return None;
            }
            Fate::Hold => {
                fds.lose("a fault held the message back to reorder it");
                self.hold(message);
                return None;
            }
            Fate::Echo { len, times } => (len, times),
            // `answer` is not the proxy's (never drawn here): the message goes as it is.
            Fate::Answer(_) => (message.len(), 1),
        };
        Some(Goes {
            delay: self.delay(),
            len,
            times,
        })
    }

    /// How long the next message is held back (`latency`, with its jitter).
    pub(super) fn delay(&mut self) -> Duration {
        match self.effects.latency {
            Some((delay, jitter)) if !self.lifted() => self.draws.jittered(delay, jitter),
            _ => Duration::ZERO,
        }
    }

    /// One write of `bytes` to the client, with `fds`: how much of it goes (`limit_data`),
    /// the byte `corrupt` flips (here, in `bytes`), the descriptors `withhold_fds` closes.
    /// Counts what goes.
    pub(super) fn cut(&mut self, bytes: &mut [u8], fds: &mut Passed) -> Cut {
        let mut cut = Cut {
            len: bytes.len(),
            end: false,
            flipped: None,
        };
        if self.lifted() {
            return cut;
        }
        if self.effects.withhold_fds {
            fds.lose("a withhold_fds fault");
        }
        if let Some(limit) = self.effects.limit_data {
            let room = usize::try_from(limit.saturating_sub(self.sent)).unwrap_or(usize::MAX);
            if cut.len >= room {
                cut.len = room;
                cut.end = true;
            }
        }
        if let Some(offset) = self.effects.corrupt
            && let Some(at) = offset.checked_sub(self.sent)
            && let Ok(at) = usize::try_from(at)
            && at < cut.len
        {
            bytes[at] ^= 0xff;
            cut.flipped = Some(at);
        }
        self.sent += cut.len as u64;
        cut
    }

    /// The faults that hit, by name, when there are some and `-v` shows them.
    pub(super) fn names(&self) -> Option<String> {
        let shown = !self.hits.is_empty() && tracing::enabled!(tracing::Level::DEBUG);
        shown.then(|| {
            let names: Vec<&str> = self.hits.iter().map(|s| s.text()).collect();
            names.join(" ")
        })
    }

    /// Keeps `message` to send after the next one.
    fn hold(&mut self, message: &[u8]) {
        self.held = Some(message.to_vec());
        self.holding.store(true, Ordering::Relaxed);
    }

    /// The message held back, if any: to go now.
    pub(super) fn take_held(&mut self) -> Option<Vec<u8>> {
        self.holding.store(false, Ordering::Relaxed);
        self.held.take()
    }

    /// Whether a message is held back (it goes at the drain, or at the end).
    pub(super) fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Waits for the drain, which lifts the faults.
    pub(super) async fn drain_begun(&self) {
        self.shutdown.begun().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(specs: &[&str]) -> ClientFaults {
        faults_on(SocketType::Stream, specs)
    }

    fn faults_on(kind: SocketType, specs: &[&str]) -> ClientFaults {
        let specs = specs.iter().map(|s| FaultSpec::parse(s).unwrap()).collect();
        ClientFaults::new(
            &Arc::new(Faults::new(specs, 7)),
            kind,
            (1, 1),
            &Shutdown::new(),
        )
    }

    #[test]
    fn a_message_is_held_back_one_at_a_time_and_the_drain_lifts_the_fates() {
        let mut f = faults_on(SocketType::Seqpacket, &["reorder=1", "truncate=2"]);
        assert_eq!(f.message(5), Fate::Hold);
        f.hold(b"first");
        assert_eq!(
            f.message(6),
            Fate::Echo { len: 2, times: 1 },
            "one at a time"
        );
        assert_eq!(f.take_held().as_deref(), Some(&b"first"[..]));
        f.shutdown.begin();
        assert_eq!(f.message(6), Fate::Echo { len: 6, times: 1 });
    }

    #[test]
    fn a_message_reaching_limit_data_is_cut_there_and_corrupt_says_what_it_flipped() {
        let mut f = faults_on(SocketType::Seqpacket, &["limit_data=5", "corrupt=4"]);
        let mut fds = Passed::none();
        let cut = f.cut(&mut [b'a', b'b', b'c'], &mut fds);
        assert_eq!(
            cut,
            Cut {
                len: 3,
                end: false,
                flipped: None
            }
        );
        let mut second = *b"defg";
        let cut = f.cut(&mut second, &mut fds);
        assert_eq!(
            cut,
            Cut {
                len: 2,
                end: true,
                flipped: Some(1)
            }
        );
        assert_eq!(second, [b'd', b'e' ^ 0xff, b'f', b'g']);
    }

    #[test]
    fn faults_not_for_the_socket_type_are_not_applied() {
        // As when added through --control (the command line refuses them).
        let mut f = faults_on(SocketType::Stream, &["loss=1"]);
        assert_eq!(f.message(3), Fate::Echo { len: 3, times: 1 });
        let mut f = faults_on(SocketType::Datagram, &["limit_data=1", "reset_peer"]);
        let cut = f.cut(&mut [0u8; 3], &mut Passed::none());
        assert_eq!((cut.len, cut.end), (3, false));
        assert_eq!(f.reset_at(), None);
        assert!(applies(
            SocketType::Seqpacket,
            &Fault::Loss { probability: 0.5 }
        ));
        assert!(!applies(
            SocketType::Seqpacket,
            &Fault::Slicer {
                size: 1,
                gap: Duration::ZERO
            }
        ));
        assert!(!applies(SocketType::Stream, &Fault::Truncate { len: 1 }));
    }

    #[test]
    fn limit_data_cuts_the_read_that_reaches_it_and_ends() {
        let mut f = faults(&["limit_data=5"]);
        let mut fds = Passed::none();
        let plan = f.plan(&mut [0u8; 3], &mut fds);
        assert_eq!((plan.len, plan.end), (3, false));
        let plan = f.plan(&mut [0u8; 3], &mut fds);
        assert_eq!((plan.len, plan.end), (2, true));
    }

    #[test]
    fn corrupt_flips_the_byte_at_its_offset_of_the_clients_stream() {
        let mut f = faults(&["corrupt=4"]);
        let mut fds = Passed::none();
        let mut first = *b"abc";
        f.plan(&mut first, &mut fds);
        let mut second = *b"defg";
        f.plan(&mut second, &mut fds);
        assert_eq!(
            (&first, &second),
            (b"abc", &[b'd', b'e' ^ 0xff, b'f', b'g'])
        );
    }

    #[test]
    fn slices_and_rates_set_the_pieces_and_latency_the_delay() {
        let mut f = faults(&["slicer=2,gap=10ms", "latency=100ms"]);
        let plan = f.plan(&mut [0u8; 7], &mut Passed::none());
        assert_eq!(
            plan,
            Plan {
                delay: Duration::from_millis(100),
                len: 7,
                piece: 2,
                gap: Duration::from_millis(10),
                end: false
            }
        );
        let mut f = faults(&["bandwidth=1000"]);
        let plan = f.plan(&mut [0u8; 100], &mut Passed::none());
        assert_eq!((plan.piece, plan.gap), (20, Duration::from_millis(20)));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_the_drain_lifts_everything() {
        let mut f = faults(&["latency=50ms~20ms"]);
        for _ in 0..100 {
            let d = f.plan(&mut [0u8; 1], &mut Passed::none()).delay;
            assert!(
                d >= Duration::from_millis(30) && d <= Duration::from_millis(70),
                "{d:?}"
            );
        }
        f.shutdown.begin();
        assert_eq!(
            f.plan(&mut [0u8; 1], &mut Passed::none()).delay,
            Duration::ZERO
        );
    }
}
