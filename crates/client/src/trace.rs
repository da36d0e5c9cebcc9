//! `--trace`: every byte the client sends and receives, shown on stderr as it crosses the
//! socket, like `socat -x -v`: a header line (`>` sent, `<` received, the length, the offset
//! in that direction) and a `hexdump -C` style dump. Stdout stays the echo.
//!
//! The switch is process-wide and set once at startup ([`enable`]): the bytes cross in several
//! places (the raw pipe's two threads, the stream that carries frames, the message socket),
//! and each of them asks [`sent`] and [`received`], which cost one relaxed load when tracing
//! is off. A record is written whole under stderr's lock, so the two directions never
//! interleave inside one; a stderr nobody reads drops records, nothing else.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

static ON: AtomicBool = AtomicBool::new(false);
/// Bytes traced so far in each direction: the next record's offset.
static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Held by a sender from before its send until its record is written, and by a receiver
/// while it writes its record: an answer cannot arrive before the send it answers, so its
/// record cannot come before that send's either (the two directions run on different
/// threads, and the send's record is written after the kernel took the bytes).
static ORDER: Mutex<()> = Mutex::new(());

/// Turns tracing on for the rest of the process.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// While tracing: hold this around a send and its [`sent`] record, so that no record of what
/// came back can be written between them. `None` (and nothing taken) when tracing is off.
pub(crate) fn sending() -> Option<MutexGuard<'static, ()>> {
    ON.load(Ordering::Relaxed)
        .then(|| ORDER.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Records `bytes` as sent to the server (under [`sending`]'s guard, where there is one).
pub(crate) fn sent(bytes: &[u8]) {
    record('>', &SENT, bytes);
}

/// Records `bytes` as received from the server: after any send in progress has been
/// recorded.
pub(crate) fn received(bytes: &[u8]) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let _order = ORDER.lock().unwrap_or_else(PoisonError::into_inner);
    record('<', &RECEIVED, bytes);
}

fn record(direction: char, offset: &AtomicU64, bytes: &[u8]) {
    if !ON.load(Ordering::Relaxed) || bytes.is_empty() {
        return;
    }
    let at = offset.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let text = dump(direction, at, bytes);
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// One record: `> 3 bytes at offset 0`, then 16 bytes a line, each line's offset within the
/// record, the bytes in hex and as text (`.` for what is not printable ASCII).
fn dump(direction: char, at: u64, bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "{direction} {} byte{} at offset {at}\n",
        bytes.len(),
        if bytes.len() == 1 { "" } else { "s" }
    );
    for (line, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(text, "  {:08x} ", line * 16);
        for i in 0..16 {
            match chunk.get(i) {
                Some(b) => {
                    let _ = write!(text, " {b:02x}");
                }
                None => text.push_str("   "),
            }
            if i == 7 {
                text.push(' ');
            }
        }
        text.push_str("  |");
        text.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        text.push_str("|\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_a_header_and_hexdump_lines() {
        assert_eq!(
            dump('>', 0, b"hi\n\x01"),
            "> 4 bytes at offset 0\n  00000000  68 69 0a 01                                       |hi..|\n"
        );
        let long: Vec<u8> = (b'a'..=b'r').collect();
        assert_eq!(
            dump('<', 40, &long),
            "< 18 bytes at offset 40\n  \
             00000000  61 62 63 64 65 66 67 68  69 6a 6b 6c 6d 6e 6f 70  |abcdefghijklmnop|\n  \
             00000010  71 72                                             |qr|\n"
        );
    }
}
