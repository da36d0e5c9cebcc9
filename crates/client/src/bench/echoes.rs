//! A stream of echoes of one payload ([`Echoes`]), checked byte for byte as reads bring them,
//! however they are split: what the raw stream loops (tasks and the epoll loop alike) check
//! every read against.

use bytes::Bytes;

use crate::error::{ErrorKind, shown};
use crate::session;

/// A stream of echoes of one payload, checked byte for byte as reads bring them, however
/// they are split.
pub(super) struct Echoes {
    payload: Bytes,
    /// Whole echoes received.
    done: u64,
    /// What has come of the echo in progress (at most the payload's length; kept to tell an
    /// Error frame from a server that hung up, and to show a mismatch).
    partial: Vec<u8>,
}

impl Echoes {
    pub(super) fn new(payload: Bytes) -> Echoes {
        Echoes {
            partial: Vec::with_capacity(payload.len()),
            payload,
            done: 0,
        }
    }

    /// Whole echoes received so far.
    pub(super) fn done(&self) -> u64 {
        self.done
    }

    /// What has come of the echo in progress (empty between echoes).
    pub(super) fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Checks `data`, which follows what came before, while at most `due` echoes in all are
    /// owed.
    pub(super) fn take(&mut self, mut data: &[u8], due: u64) -> Result<(), ErrorKind> {
        let size = self.payload.len();
        while !data.is_empty() {
            let index = self.done + 1;
            if self.done == due {
                return Err(ErrorKind::Unasked {
                    after: self.done,
                    received: shown(data, 0),
                });
            }
            let at = self.partial.len();
            let k = (size - at).min(data.len());
            if data[..k] != self.payload[at..at + k] {
                // Everything of this echo we have, to show it and to recognise an Error
                // frame (a framed-only server).
                self.partial.extend_from_slice(data);
                return Err(if session::is_framed_refusal(&self.partial) {
                    ErrorKind::FramedOnlyServer
                } else {
                    ErrorKind::mismatch(index, &self.payload, &self.partial)
                });
            }
            if at + k == size {
                self.partial.clear();
                self.done += 1;
            } else {
                self.partial.extend_from_slice(&data[..k]);
            }
            data = &data[k..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_checked_however_they_are_split() {
        let mut echoes = Echoes::new(Bytes::from_static(b"abcdef"));
        echoes.take(b"ab", 3).unwrap();
        echoes.take(b"cdefabcdefa", 3).unwrap();
        assert_eq!((echoes.done, echoes.partial.as_slice()), (2, &b"a"[..]));
        echoes.take(b"bcdef", 3).unwrap();
        assert_eq!(echoes.done, 3);
        // More than was sent.
        let extra = echoes.take(b"x", 3).unwrap_err();
        assert_eq!(
            extra.to_string(),
            "the server sent back more than was sent: \"x\" after 3 whole echoes"
        );
    }

    #[test]
    fn a_differing_byte_is_a_mismatch_on_its_message() {
        let mut echoes = Echoes::new(Bytes::from_static(b"abcdef"));
        echoes.take(b"abcdefab", 2).unwrap();
        let e = echoes.take(b"cXef", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "echo mismatch on message 2 at offset 3: sent \"abcdef\", received \"abcXef\""
        );
    }
}
