//! One benchmark thread's count and latency histogram ([`Tally`]): shared by that thread's
//! connections only (no atomics, no locks), taken whole at the end ([`Tallied`]) and merged
//! with the other threads' by `bench::run`.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use hdrhistogram::Histogram;

/// A histogram of latencies in nanoseconds, 1 ns to 100 s at 3 significant digits: the same
/// bounds everywhere, so that the threads' histograms add up.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// What this thread's connections share, and nothing else does: no atomics, no locks.
#[derive(Debug)]
pub(super) struct Tally {
    round_trips: Cell<u64>,
    latencies: RefCell<Histogram<u64>>,
}

/// What a thread measured.
pub(super) struct Tallied {
    pub(super) round_trips: u64,
    pub(super) latencies: Histogram<u64>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            round_trips: Cell::new(0),
            latencies: RefCell::new(histogram()),
        }
    }

    /// Counts one round trip that took `latency`.
    pub(super) fn record(&self, latency: Duration) {
        self.round_trips.set(self.round_trips.get() + 1);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Out-of-range samples (over 100 s) are dropped, not fatal.
        let _ = self.latencies.borrow_mut().record(ns);
    }

    /// Round trips counted so far.
    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.get()
    }

    /// Everything counted, leaving the tally empty.
    pub(super) fn take(&self) -> Tallied {
        Tallied {
            round_trips: self.round_trips.replace(0),
            latencies: self.latencies.replace(histogram()),
        }
    }
}
