//! The live view of `-v`: a line per read, like `socat -v` but with the read's boundaries,
//! its descriptors and its connection, escaped as the echo lines are (a peer's bytes never
//! start a line of their own):
//!
//! ```text
//! > conn 3 to_upstream 16 bytes, 1 fd (file /etc/hosts): GET / HTTP/1.1\r\n
//! < conn 3 to_client 17 bytes: HTTP/1.0 200 OK\r\n
//! > conn 3 to_upstream EOF
//! ```
//!
//! Lines go through the server's logging (target `udsecho::echo`, like the echo lines): never
//! blocking, lossy when stderr cannot keep up. The recording is what loses nothing.

use std::fmt::Write as _;

use super::record::Dir;
use crate::descriptors::Passed;
use crate::echo_log::{self, SHOWN, escape_into};

/// Whether `-v` lines are wanted: checked before anything is formatted.
pub(super) fn enabled() -> bool {
    echo_log::enabled()
}

fn arrow(dir: Dir) -> char {
    match dir {
        Dir::ToUpstream => '>',
        Dir::ToClient => '<',
    }
}

/// The line for one read.
pub(super) fn data(conn: u64, dir: Dir, bytes: &[u8], fds: &Passed) {
    tracing::debug!(target: echo_log::TARGET, "{}", line(conn, dir, bytes, fds));
}

fn line(conn: u64, dir: Dir, bytes: &[u8], fds: &Passed) -> String {
    let mut line = format!(
        "{} conn {conn} {} {} byte{}",
        arrow(dir),
        dir.name(),
        bytes.len(),
        if bytes.len() == 1 { "" } else { "s" }
    );
    if !fds.is_empty() {
        // `2 descriptors: file /etc/hosts, pipe` -> `, 2 fds (file /etc/hosts, pipe)`.
        let note = fds.describe();
        let items = note.split_once(": ").map_or("", |(_, items)| items);
        let _ = write!(
            line,
            ", {} fd{} ({items})",
            fds.len(),
            if fds.len() == 1 { "" } else { "s" }
        );
    }
    line.push_str(": ");
    escape_into(&bytes[..bytes.len().min(SHOWN)], &mut line);
    if bytes.len() > SHOWN {
        let _ = write!(line, "... ({} more bytes)", bytes.len() - SHOWN);
    }
    line
}

/// The line for a half-close passed on.
pub(super) fn eof(conn: u64, dir: Dir) {
    tracing::debug!(target: echo_log::TARGET, "{} conn {conn} {} EOF", arrow(dir), dir.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_one_escaped_line_with_its_size() {
        let line = line(3, Dir::ToUpstream, b"GET / HTTP/1.1\r\n", &Passed::none());
        assert_eq!(line, r"> conn 3 to_upstream 16 bytes: GET / HTTP/1.1\r\n");
        let big = vec![b'x'; SHOWN + 10];
        let line = super::line(4, Dir::ToClient, &big, &Passed::none());
        assert!(
            line.starts_with("< conn 4 to_client 522 bytes: xxx"),
            "{line}"
        );
        assert!(line.ends_with("... (10 more bytes)"), "{line}");
    }
}
