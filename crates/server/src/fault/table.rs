//! [`Faults`]: the server's faults, shared by every connection on every thread: those
//! `--fault` gave, as changed at run time through the control socket.
//!
//! A change bumps one generation number; a connection compares it with the one it last saw
//! (one atomic load a turn) and only then takes the lock to read the faults again. Which
//! connections a fault hits is drawn from the seed, the connection's number and the fault's
//! number, so it replays with the same `--fault-seed`, whatever the threads and the timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};

use udsecho_fault::FaultSpec;

/// The server's faults (see the module's doc).
#[derive(Debug)]
pub struct Faults {
    /// Where every draw starts: `--fault-seed`, or one taken from the clock and logged.
    seed: u64,
    /// Bumped by every change; read by every connection each turn.
    generation: AtomicU64,
    /// The faults with their numbers, in the order they were added.
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    list: Vec<(u64, Arc<FaultSpec>)>,
    next_id: u64,
}

impl Faults {
    /// The faults `--fault` gave (numbered from 1 in order), drawing from `seed`.
    pub fn new(specs: Vec<FaultSpec>, seed: u64) -> Faults {
        let faults = Faults {
            seed,
            generation: AtomicU64::new(0),
            entries: Mutex::new(Entries {
                list: Vec::new(),
                next_id: 1,
            }),
        };
        for spec in specs {
            faults.add(spec);
        }
        faults
    }

    /// The seed the draws start from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // A panic elsewhere while holding the lock leaves a consistent list: every change is
        // one push, one retain or one clear.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a fault; it reaches open connections at their next turn. Returns its number.
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let mut entries = self.entries();
        let id = entries.next_id;
        entries.next_id += 1;
        entries.list.push((id, Arc::new(spec)));
        self.generation.fetch_add(1, Ordering::Release);
        id
    }

    /// Removes fault `id`; `false` if there is none.
    pub fn remove(&self, id: u64) -> bool {
        let mut entries = self.entries();
        let before = entries.list.len();
        entries.list.retain(|(i, _)| *i != id);
        let removed = entries.list.len() < before;
        if removed {
            self.generation.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut entries = self.entries();
        let n = entries.list.len();
        entries.list.clear();
        self.generation.fetch_add(1, Ordering::Release);
        n
    }

    /// The faults in force, with their numbers.
    pub fn list(&self) -> Vec<(u64, Arc<FaultSpec>)> {
        self.entries().list.clone()
    }

    /// The generation: it changes whenever the faults do.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The faults that hit connection `conn`, and the generation they are of.
    pub(crate) fn hitting(&self, conn: u64) -> (u64, Vec<Arc<FaultSpec>>) {
        let entries = self.entries();
        // Read under the lock: a change made after it is seen at the next turn.
        let generation = self.generation();
        let hits = entries
            .list
            .iter()
            .filter(|(id, spec)| self.hits(conn, *id, spec.share_ppm))
            .map(|(_, spec)| spec.clone())
            .collect();
        (generation, hits)
    }

    /// The faults in force, with their numbers, and the generation they are of: for the
    /// datagram socket, which draws which faults hit each sender itself ([`Faults::hits`]).
    pub(crate) fn snapshot(&self) -> (u64, Vec<(u64, Arc<FaultSpec>)>) {
        let entries = self.entries();
        (self.generation(), entries.list.clone())
    }

    /// Whether fault `id`, for a share of `share_ppm` millionths, hits connection `conn`:
    /// one draw from the seed's ChaCha8 stream number `conn` at a place given by `id`, so
    /// the answer depends on nothing else (ChaCha8's output is fixed by its specification,
    /// whatever the crate's version). A datagram sender is "connection"
    /// [`sender_key`]`(its address)`.
    pub(crate) fn hits(&self, conn: u64, id: u64, share_ppm: u32) -> bool {
        if share_ppm >= 1_000_000 {
            return true;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(conn);
        // Two 32-bit words per draw.
        rng.set_word_pos(u128::from(id) * 2);
        rng.next_u64() % 1_000_000 < u64::from(share_ppm)
    }

    /// The random stream of connection `conn`'s own draws (jitter, loss...): apart from the
    /// choice of connections, and replayed by the same seed.
    pub(crate) fn connection_rng(&self, conn: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        rng.set_stream(conn);
        rng
    }
}

/// Which "connection" a datagram sender is, for the choice of senders a share hits: its
/// address's bytes (a path, or `\0` and an abstract name) hashed with 64-bit FNV-1a, whose
/// output is fixed by its definition, so the same sender is chosen on every run with the
/// same seed. Numbers of stream connections count from 1; the two never meet on one socket.
pub(crate) fn sender_key(address: &[u8]) -> u64 {
    address.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> FaultSpec {
        FaultSpec::parse(text).unwrap()
    }

    #[test]
    fn the_choice_of_connections_depends_only_on_seed_connection_and_fault() {
        let chosen = |seed| {
            let faults = Faults::new(vec![spec("timeout@0.5")], seed);
            (1..=64)
                .filter(|&conn| !faults.hitting(conn).1.is_empty())
                .collect::<Vec<u64>>()
        };
        assert_eq!(chosen(7), chosen(7));
        assert_ne!(chosen(7), chosen(8));
        let n = chosen(7).len();
        assert!((16..=48).contains(&n), "{n} of 64 for a share of one half");
        // Adding another fault does not change which connections the first one hits.
        let faults = Faults::new(vec![spec("timeout@0.5")], 7);
        faults.add(spec("latency=1ms@0.5"));
        let first: Vec<u64> = (1..=64)
            .filter(|&conn| {
                faults
                    .hitting(conn)
                    .1
                    .iter()
                    .any(|s| s.text() == "timeout@0.5")
            })
            .collect();
        assert_eq!(first, chosen(7));
    }

    #[test]
    fn a_senders_key_is_fnv1a_of_its_address() {
        // The published FNV-1a 64 test vectors: the key never changes with a version.
        assert_eq!(sender_key(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(sender_key(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(sender_key(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_change_moves_the_generation() {
        let faults = Faults::new(Vec::new(), 1);
        let g0 = faults.generation();
        let id = faults.add(spec("latency=1ms"));
        let g1 = faults.generation();
        assert!(g1 > g0);
        assert!(!faults.remove(id + 1));
        assert_eq!(faults.generation(), g1);
        assert!(faults.remove(id));
        assert!(faults.generation() > g1);
        assert_eq!(faults.list().len(), 0);
        faults.add(spec("timeout"));
        faults.add(spec("corrupt"));
        assert_eq!(faults.clear(), 2);
        let ids: Vec<u64> = {
            faults.add(spec("timeout"));
            faults.list().iter().map(|(id, _)| *id).collect()
        };
        assert_eq!(ids, vec![4], "numbers are never reused");
    }
}
