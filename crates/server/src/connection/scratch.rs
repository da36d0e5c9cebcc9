//! The per-thread scratch buffer every connection on a thread reads into: its bytes are
//! echoed from there at once, so no connection needs a buffer of its own.

use std::cell::RefCell;

/// Size of the per-thread scratch buffer reads land in.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    /// Where every connection on this thread reads.
    pub(super) static SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}
