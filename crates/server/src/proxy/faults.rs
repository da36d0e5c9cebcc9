//! Faults in the proxy (`--fault` with `--upstream`): the server's fault table (`crate::fault`:
//! the specs, the seeded choice of connections, `--control`'s changes) applied to what goes
//! **to the client**, so the proxy is a Toxiproxy for Unix sockets: the upstream answers as
//! it does, and the client sees it late, in slices, slowly, cut short, corrupted, or not at
//! all. Stream connections only.
//!
//! What a fault does here, per read of the upstream's: `latency` holds it back (with its
//! jitter, drawn from the connection's seeded stream), `slicer` writes it in slices with a
//! gap, `bandwidth` at a rate, `corrupt` flips one byte at an offset of the client's
//! stream, `withhold_fds` closes the descriptors instead of passing them on, `limit_data`
//! ends the connection once that many bytes have gone to the client, and `reset_peer` ends
//! it that long after it opened. The recording shows what the upstream sent; the faults
//! shape what the client then gets. When the graceful shutdown begins, the faults are lifted.
//! Memory stays bounded: a read held back is the read the pump holds anyway, and nothing
//! more is read from the upstream meanwhile.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use tokio::time::Instant;

use crate::descriptors::Passed;
use crate::fault::{Fault, FaultSpec, Faults};
use crate::shutdown::Shutdown;

/// Whether the proxy applies `fault` (the others are refused with `--upstream`).
pub fn applies(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Latency { .. }
            | Fault::Bandwidth { .. }
            | Fault::Slicer { .. }
            | Fault::LimitData { .. }
            | Fault::ResetPeer { .. }
            | Fault::Corrupt { .. }
            | Fault::WithholdFds
    )
}

/// The faults the proxy applies, by name, for messages.
pub const APPLIED: &str =
    "latency, bandwidth, slicer, limit_data, reset_peer, corrupt and withhold_fds";

/// The faults hitting one connection, merged (a later one of a kind replaces an earlier).
#[derive(Debug, Default)]
struct Shape {
    latency: Option<(Duration, Duration)>,
    rate: Option<u64>,
    slice: Option<(usize, Duration)>,
    limit: Option<u64>,
    reset: Option<Duration>,
    corrupt: Option<u64>,
    withhold_fds: bool,
}

impl Shape {
    fn of(hits: &[Arc<FaultSpec>]) -> Shape {
        let mut shape = Shape::default();
        for hit in hits {
            match hit.fault {
                Fault::Latency { delay, jitter } => shape.latency = Some((delay, jitter)),
                Fault::Bandwidth { bytes_per_sec } => shape.rate = Some(bytes_per_sec.max(1)),
                Fault::Slicer { size, gap } => shape.slice = Some((size.max(1), gap)),
                Fault::LimitData { bytes } => shape.limit = Some(bytes),
                Fault::ResetPeer { after } => shape.reset = Some(after),
                Fault::Corrupt { offset } => shape.corrupt = Some(offset),
                Fault::WithholdFds => shape.withhold_fds = true,
                // Added through --control but not the proxy's: logged, not applied.
                _ => tracing::debug!("fault {}: not applied by the proxy", hit.text()),
            }
        }
        shape
    }
}

/// How one read goes to the client.
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

/// One connection's faults on what goes to its client.
#[derive(Debug)]
pub(super) struct ClientFaults {
    table: Arc<Faults>,
    conn: u64,
    generation: u64,
    shape: Shape,
    /// The connection's own draws (jitter), replayed by `--fault-seed`.
    rng: ChaCha8Rng,
    /// When the connection opened: `reset_peer` counts from here.
    opened: Instant,
    /// Bytes that have gone to the client.
    sent: u64,
    shutdown: Shutdown,
}

impl ClientFaults {
    pub(super) fn new(table: &Arc<Faults>, conn: u64, shutdown: &Shutdown) -> ClientFaults {
        let mut faults = ClientFaults {
            table: table.clone(),
            conn,
            generation: u64::MAX,
            shape: Shape::default(),
            rng: table.connection_rng(conn),
            opened: Instant::now(),
            sent: 0,
            shutdown: shutdown.clone(),
        };
        faults.refresh();
        faults
    }

    /// Follows the table (`--control`): one atomic load when nothing changed.
    fn refresh(&mut self) {
        if self.table.generation() == self.generation {
            return;
        }
        let (generation, hits) = self.table.hitting(self.conn);
        if !hits.is_empty() {
            let names: Vec<&str> = hits.iter().map(|s| s.text()).collect();
            tracing::debug!("fault: {}", names.join(" "));
        }
        self.generation = generation;
        self.shape = Shape::of(&hits);
    }

    /// When `reset_peer` ends the connection, if it does.
    pub(super) fn reset_at(&self) -> Option<Instant> {
        self.shape.reset.map(|after| self.opened + after)
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
        if self.shutdown.is_begun() {
            // The drain lifts the faults.
            return whole;
        }
        self.refresh();
        let mut plan = whole;
        if self.shape.withhold_fds {
            fds.lose("a withhold_fds fault");
        }
        if let Some(limit) = self.shape.limit {
            let room = usize::try_from(limit.saturating_sub(self.sent)).unwrap_or(usize::MAX);
            if plan.len >= room {
                plan.len = room;
                plan.end = true;
            }
        }
        if let Some(offset) = self.shape.corrupt
            && let Some(at) = offset.checked_sub(self.sent)
            && let Ok(at) = usize::try_from(at)
            && at < plan.len
        {
            bytes[at] ^= 0xff;
        }
        if let Some((delay, jitter)) = self.shape.latency {
            plan.delay = self.jittered(delay, jitter);
        }
        if let Some((size, gap)) = self.shape.slice {
            plan.piece = plan.piece.min(size);
            plan.gap = gap;
        }
        if let Some(rate) = self.shape.rate {
            // A fiftieth of a second's worth at a time.
            let portion = usize::try_from(rate / 50).unwrap_or(usize::MAX).max(1);
            plan.piece = plan.piece.min(portion);
            plan.gap = plan
                .gap
                .max(Duration::from_secs_f64(plan.piece as f64 / rate as f64));
        }
        self.sent += plan.len as u64;
        plan
    }

    /// `delay` give or take up to `jitter`, uniformly, never below zero.
    fn jittered(&mut self, delay: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        let spread = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX / 4);
        let drawn = self.rng.random_range(0..=2 * spread);
        (delay + Duration::from_micros(drawn)).saturating_sub(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(specs: &[&str]) -> ClientFaults {
        let specs = specs.iter().map(|s| FaultSpec::parse(s).unwrap()).collect();
        ClientFaults::new(&Arc::new(Faults::new(specs, 7)), 1, &Shutdown::new())
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
