//! Auto mode's first step: is this connection framed or raw?
//!
//! The detector sees the same chunks as the loops that follow it, so detection costs no read
//! of its own and the first `echo:` line of a raw peer is its whole first write. While the
//! bytes so far are a strict prefix of the preamble (at most 7 of them) it holds them inline;
//! the first byte that differs makes the connection raw (held bytes go out first, nothing is
//! lost); the eighth matching byte makes it framed.

use tokio::time::Instant;
use udsecho_proto::{Detection, PREAMBLE, PREFIX_PAUSE};

use super::plan::Before;

/// The held prefix and the moment it turns raw if nothing more arrives.
#[derive(Debug)]
pub(crate) struct Detector {
    head: [u8; PREAMBLE.len()],
    have: u8,
    /// Set by the first byte: a strict prefix followed by [`PREFIX_PAUSE`] of silence is raw.
    pub(crate) deadline: Option<Instant>,
}

/// What a chunk decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Still a strict prefix: the chunk's bytes are held.
    Undecided,
    /// Raw: the held bytes (given), then the whole chunk, are payload.
    Raw { held: Before },
    /// Framed: the preamble ends `at` bytes into the chunk; frames start there.
    Framed { at: usize },
}

impl Detector {
    pub(crate) fn new() -> Detector {
        Detector {
            head: [0; PREAMBLE.len()],
            have: 0,
            deadline: None,
        }
    }

    /// The bytes held so far, for when the pause, an EOF or the shutdown decides "raw".
    pub(crate) fn give_up(&self) -> Before {
        Before::held(&self.head[..usize::from(self.have)])
    }

    /// Looks at the next chunk.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Verdict {
        let have = usize::from(self.have);
        let take = (PREAMBLE.len() - have).min(chunk.len());
        let mut seen = self.head;
        seen[have..have + take].copy_from_slice(&chunk[..take]);
        match udsecho_proto::detect(&seen[..have + take]) {
            Detection::Framed => Verdict::Framed { at: take },
            Detection::Raw => Verdict::Raw {
                held: self.give_up(),
            },
            Detection::NeedMore => {
                self.head = seen;
                self.have = (have + take) as u8;
                if self.have > 0 {
                    self.deadline
                        .get_or_insert_with(|| Instant::now() + PREFIX_PAUSE);
                }
                Verdict::Undecided
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_first_write_is_decided_at_once_and_held_bytes_come_first() {
        let mut d = Detector::new();
        assert!(matches!(d.feed(b"\0UD"), Verdict::Undecided));
        match d.feed(b"x and the rest") {
            Verdict::Raw { held } => assert_eq!(held.as_slice(), b"\0UD"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_preamble_split_anywhere_is_framed_at_the_right_offset() {
        for cut in 0..=PREAMBLE.len() {
            let mut input = PREAMBLE.to_vec();
            input.extend_from_slice(b"frames");
            let mut d = Detector::new();
            let first = d.feed(&input[..cut]);
            let verdict = if cut == PREAMBLE.len() {
                first
            } else {
                assert!(matches!(first, Verdict::Undecided), "cut {cut}");
                d.feed(&input[cut..])
            };
            let expect = if cut == PREAMBLE.len() {
                PREAMBLE.len()
            } else {
                PREAMBLE.len() - cut
            };
            assert!(
                matches!(verdict, Verdict::Framed { at } if at == expect),
                "cut {cut}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_prefix_gets_the_pause_deadline() {
        let mut d = Detector::new();
        assert!(d.deadline.is_none());
        d.feed(b"\0");
        let deadline = d.deadline.expect("set by the first byte");
        assert_eq!(deadline - Instant::now(), PREFIX_PAUSE);
        assert_eq!(d.give_up().as_slice(), b"\0");
    }
}
