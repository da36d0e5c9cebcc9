//! Mode detection: is this connection framed or raw?
//!
//! A framed client opens with the 8-byte [`PREAMBLE`]. A server in auto mode looks at the
//! first bytes of each connection: the preamble means framed; the first byte that differs
//! from it means raw (and the bytes already read are echoed, nothing is lost). A strict prefix
//! of the preamble is undecided until more bytes arrive, the peer half-closes, or
//! [`PREFIX_PAUSE`] passes — then it is raw too.

use std::time::Duration;

/// The 8 bytes a framed client sends first: `00 55 44 53 45 43 48 4F`, `"\0UDSECHO"`.
pub const PREAMBLE: [u8; 8] = *b"\0UDSECHO";

/// How long a server waits after a strict prefix of the preamble before it calls the
/// connection raw. The specification allows 100–200 ms; udsecho waits 150 ms.
pub const PREFIX_PAUSE: Duration = Duration::from_millis(150);

/// What the first bytes of a connection say about its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The bytes start with the full preamble: the connection is framed, and the frames
    /// begin right after it.
    Framed,
    /// A byte differs from the preamble: the connection is raw, and every byte seen so far
    /// is payload.
    Raw,
    /// The bytes are a strict prefix of the preamble (or empty): read more, or wait for
    /// [`PREFIX_PAUSE`].
    NeedMore,
}

/// Decides the mode from the first bytes of a connection, without consuming them.
///
/// ```
/// use udsecho_proto::{detect, Detection, PREAMBLE};
///
/// assert_eq!(detect(b"\0UDSECHO\0\0\0\x01\x00"), Detection::Framed);
/// assert_eq!(detect(b"hello"), Detection::Raw);
/// assert_eq!(detect(b"\0hello"), Detection::Raw); // a NUL alone does not make it framed
/// assert_eq!(detect(&PREAMBLE[..3]), Detection::NeedMore);
/// ```
pub fn detect(first: &[u8]) -> Detection {
    let n = first.len().min(PREAMBLE.len());
    if first[..n] != PREAMBLE[..n] {
        Detection::Raw
    } else if n == PREAMBLE.len() {
        Detection::Framed
    } else {
        Detection::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strict_prefix_needs_more() {
        for n in 0..PREAMBLE.len() {
            assert_eq!(detect(&PREAMBLE[..n]), Detection::NeedMore, "prefix of {n}");
        }
    }

    #[test]
    fn a_difference_at_any_position_is_raw() {
        for i in 0..PREAMBLE.len() {
            let mut bytes = PREAMBLE;
            bytes[i] ^= 0x20;
            assert_eq!(detect(&bytes[..=i]), Detection::Raw, "differs at {i}");
            assert_eq!(detect(&bytes), Detection::Raw, "differs at {i}, full");
        }
    }

    #[test]
    fn preamble_then_anything_is_framed() {
        let mut bytes = PREAMBLE.to_vec();
        assert_eq!(detect(&bytes), Detection::Framed);
        bytes.extend_from_slice(b"anything at all");
        assert_eq!(detect(&bytes), Detection::Framed);
    }
}
