//! Raw mode: every byte back, in order, like a `cat` behind `nc -lU`.
//!
//! There is no state: each chunk is echoed whole, straight from the read buffer. What makes it
//! raw rather than trivial lives in the handler and holds for every mode: backpressure (nothing
//! is read while an echo is pending), the drain, and the half-close (on the peer's EOF, write
//! out what is pending, shut down our write side, close).

use super::plan::{Before, Plan};

/// The plan for a raw chunk of `len` bytes, after `before` (bytes held by detection).
pub(crate) fn feed(len: usize, before: Before) -> Plan {
    Plan {
        before,
        echo: 0..len,
        ending: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_chunk_comes_back_after_what_detection_held() {
        let held = Before::held(b"\0UD");
        let plan = feed(5, held);
        assert_eq!(plan.before.as_slice(), b"\0UD");
        assert_eq!(plan.echo, 0..5);
        assert!(plan.ending.is_none());
    }
}
