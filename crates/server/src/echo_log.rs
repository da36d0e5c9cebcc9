//! The `echo: ...` lines of `-v`: a peer's bytes made safe to print.
//!
//! Whatever a peer sends, its echo line is one line: newlines, carriage returns, escape
//! sequences and every other control character are shown escaped (`\n`, `\u{1b}`), and bytes
//! that are not UTF-8 as `\xNN`. So `hi\n WARN fake` cannot print a second line that looks
//! like the server's own, and no terminal escape reaches the operator's screen. One trailing
//! newline (what `nc` and `echo` add) is dropped, like the tutorial's `echo: olá mundo`.

use std::fmt::Write;

/// The log target of echo lines: `RUST_LOG=udsecho::echo=off` silences them alone.
pub(crate) const TARGET: &str = "udsecho::echo";

/// Are echo lines wanted? Checked once per read, so nothing is formatted otherwise.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// The most bytes of one read an `echo:` line shows; the rest is counted. A line is queued
/// for stderr and may wait there (see `logging`), so its size must not follow the peer's.
pub(crate) const SHOWN: usize = 512;

/// Logs one `echo:` line for `parts`, the bytes of one read (in order).
pub(crate) fn log(parts: &[&[u8]]) {
    tracing::debug!(target: TARGET, "echo: {}", line(parts));
}

/// Logs one `echo:` line for `parts` and, when the read passed descriptors, what they are
/// (`note`, from `Passed::describe`): `echo: hi [with 1 descriptor: pipe]`.
pub(crate) fn log_with(parts: &[&[u8]], note: Option<&str>) {
    match note {
        Some(note) => tracing::debug!(target: TARGET, "echo: {} [with {note}]", line(parts)),
        None => log(parts),
    }
}

/// The text after `echo: `: escaped, one trailing newline dropped, at most [`SHOWN`] bytes of
/// the read shown and the rest counted.
fn line(parts: &[&[u8]]) -> String {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut line = String::new();
    let mut budget = SHOWN;
    let last = parts.iter().rposition(|p| !p.is_empty());
    for (i, part) in parts.iter().enumerate() {
        let part = if Some(i) == last {
            trim_newline(part)
        } else {
            part
        };
        let shown = &part[..part.len().min(budget)];
        budget -= shown.len();
        escape_into(shown, &mut line);
    }
    if total > SHOWN {
        let _ = write!(line, "... ({total} bytes)");
    }
    line
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Appends `bytes` to `out`: printable text as it is, everything else escaped.
///
/// Runs of printable ASCII are copied whole and bytes that are not UTF-8 are written from a
/// table, not through `fmt`: the proxy's recording escapes every byte that crosses it.
pub(crate) fn escape_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let mut text = chunk.valid();
        while !text.is_empty() {
            let plain = text
                .bytes()
                .position(|b| !(b' '..=b'~').contains(&b) || b == b'\\')
                .unwrap_or(text.len());
            out.push_str(&text[..plain]);
            text = &text[plain..];
            let Some(c) = text.chars().next() else {
                break;
            };
            text = &text[c.len_utf8()..];
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                // Controls, and the Unicode line and paragraph separators.
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for &byte in chunk.invalid() {
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8]) -> String {
        let mut out = String::new();
        escape_into(bytes, &mut out);
        out
    }

    #[test]
    fn text_stays_readable_and_controls_are_escaped() {
        assert_eq!(escaped("olá mundo".as_bytes()), "olá mundo");
        assert_eq!(escaped(b"hi\n WARN fake"), "hi\\n WARN fake");
        assert_eq!(escaped(b"\x1b[31mred\r"), "\\u{1b}[31mred\\r");
        assert_eq!(escaped(b"a\xffb\\"), "a\\xffb\\\\");
        assert_eq!(escaped("x\u{2028}y".as_bytes()), "x\\u{2028}y");
    }

    /// The escaping written plainly, char by char: the fast path must say the same.
    fn escaped_plainly(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                        out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
                    }
                    c => out.push(c),
                }
            }
            for byte in chunk.invalid() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
        out
    }

    #[test]
    fn the_fast_path_escapes_as_char_by_char_would() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly text, some controls, UTF-8 lead bytes and stray continuations.
                    match state % 8 {
                        0 => (state >> 8) as u8,
                        1 => 0xc3,
                        2 => 0xa9,
                        _ => b' ' + (state >> 16) as u8 % 95,
                    }
                })
                .collect();
            assert_eq!(escaped(&bytes), escaped_plainly(&bytes), "{bytes:?}");
        }
        let text = "olá\\ \u{2028} mundo\u{1b}[0m\r\n".as_bytes();
        assert_eq!(escaped(text), escaped_plainly(text));
    }

    #[test]
    fn no_line_break_survives_whatever_the_bytes() {
        for b in 0..=255u8 {
            let out = escaped(&[b'a', b, b'z']);
            assert!(!out.contains(['\n', '\r', '\u{1b}']), "{b:#x}: {out:?}");
        }
    }

    #[test]
    fn a_large_read_is_shown_in_part_and_counted() {
        let big = vec![1u8; 100_000];
        let shown = line(&[&big]);
        assert!(
            shown.ends_with("... (100000 bytes)"),
            "{}",
            &shown[shown.len() - 30..]
        );
        // At most six characters per byte shown (`\u{1b}`), whatever the read.
        assert!(shown.len() <= 6 * SHOWN + 32, "{} chars", shown.len());
        assert_eq!(line(&[b"\0U", b"DS rest\n"]), "\\u{0}UDS rest");
    }

    #[test]
    fn one_trailing_newline_is_dropped_from_the_line() {
        assert_eq!(trim_newline(b"hello\n"), b"hello");
        assert_eq!(trim_newline(b"hello\r\n"), b"hello");
        assert_eq!(trim_newline(b"two\n\n"), b"two\n");
    }
}
