//! What answers at a socket path: a live server (a connect succeeds, or the kernel lists a
//! serving socket bound there when connecting is not allowed to us), a stale socket, or
//! nothing. Read-only: it never changes what it looks at.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::listen_error::{ListenError, parent};

/// What answers at a socket path.
pub(super) enum Probe {
    Live,
    Stale,
    Gone,
}

pub(super) async fn probe(path: &Path) -> Result<Probe, ListenError> {
    match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
        // A server that does not even complete connect within a second is still a server.
        Err(_elapsed) => Ok(Probe::Live),
        Ok(Ok(_)) => Ok(Probe::Live),
        Ok(Err(e)) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Ok(Probe::Stale),
            io::ErrorKind::NotFound => Ok(Probe::Gone),
            // Backlog full: someone is listening.
            io::ErrorKind::WouldBlock => Ok(Probe::Live),
            // A live socket of another type (datagram, seqpacket) answers this way.
            _ if e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) => {
                Ok(Probe::Live)
            }
            // Another user's socket closed to us: the kernel still knows whether anyone is
            // listening on it.
            io::ErrorKind::PermissionDenied if listed_as_serving(path) => Ok(Probe::Live),
            _ => Err(ListenError::io(path, "probing the existing socket", e)),
        },
    }
}

/// Whether the kernel lists a socket bound at `path` that serves: a listening stream or
/// seqpacket socket, or a datagram socket (`/proc/net/unix`, readable by everyone, lists every
/// Unix socket of this network namespace with the path it was bound to). Used only when
/// connecting is not allowed, to tell a live server from a stale file.
#[cfg(target_os = "linux")]
fn listed_as_serving(path: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let wanted = same_path_forms(path);
    table
        .lines()
        .skip(1)
        .filter_map(parse_proc_net_unix_line)
        .any(|entry| {
            entry.serving
                && same_path_forms(Path::new(entry.path))
                    .iter()
                    .any(|p| wanted.contains(p))
        })
}

#[cfg(not(target_os = "linux"))]
fn listed_as_serving(_path: &Path) -> bool {
    false
}

/// The ways a path can be spelled that name the same file: as given, made absolute, and with
/// its directory resolved (the form a server bound it with may be any of these).
fn same_path_forms(path: &Path) -> Vec<PathBuf> {
    let mut forms = vec![path.to_owned()];
    if let Ok(absolute) = std::path::absolute(path) {
        forms.push(absolute);
    }
    if let (Ok(dir), Some(name)) = (fs::canonicalize(parent(path)), path.file_name()) {
        forms.push(dir.join(name));
    }
    forms
}

/// One socket of `/proc/net/unix`.
#[derive(Debug, PartialEq)]
struct UnixEntry<'a> {
    /// Listening (stream, seqpacket) or a datagram socket.
    serving: bool,
    /// The address it is bound to (`@name` for an abstract one).
    path: &'a str,
}

/// Parses `Num RefCount Protocol Flags Type St Inode Path`; `None` for an unbound socket.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_net_unix_line(line: &str) -> Option<UnixEntry<'_>> {
    /// `__SO_ACCEPTCON`: the socket listens.
    const LISTENING: u32 = 0x0001_0000;
    const DATAGRAM: u16 = 2;
    let mut rest = line;
    let mut fields = Vec::with_capacity(7);
    for _ in 0..7 {
        let (field, tail) = rest.trim_start().split_once(' ')?;
        fields.push(field);
        rest = tail;
    }
    // The path follows the inode after one space; it may itself contain spaces.
    let path = rest;
    if path.is_empty() {
        return None;
    }
    let flags = u32::from_str_radix(fields[3], 16).ok()?;
    let kind = u16::from_str_radix(fields[4], 16).ok()?;
    Some(UnixEntry {
        serving: flags & LISTENING != 0 || kind == DATAGRAM,
        path,
    })
}

/// What answers at `path`, for a refusal: a live server there is named as one, whatever else
/// stopped this server from taking the path.
pub(super) async fn live_server_at(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Ok(meta) if meta.file_type().is_socket())
        && matches!(probe(path).await, Ok(Probe::Live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_unix_lines_give_the_bound_path_and_whether_it_serves() {
        let listening = "0000000000000000: 00000002 00000000 00010000 0001 01 23456 /tmp/a b.sock";
        assert_eq!(
            parse_proc_net_unix_line(listening),
            Some(UnixEntry {
                serving: true,
                path: "/tmp/a b.sock"
            })
        );
        let datagram = "0000000000000000: 00000002 00000000 00000000 0002 01    77 /tmp/dg.sock";
        assert_eq!(
            parse_proc_net_unix_line(datagram).map(|e| (e.serving, e.path)),
            Some((true, "/tmp/dg.sock"))
        );
        let connected = "0000000000000000: 00000003 00000000 00000000 0001 03 12345 /tmp/s.sock";
        assert_eq!(
            parse_proc_net_unix_line(connected).map(|e| e.serving),
            Some(false)
        );
        let unbound = "0000000000000000: 00000003 00000000 00000000 0001 03 12345";
        assert_eq!(parse_proc_net_unix_line(unbound), None);
        assert_eq!(parse_proc_net_unix_line("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listening_socket_is_listed_and_a_closed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listed_as_serving(&path));
        drop(listener);
        assert!(!listed_as_serving(&path));
    }
}
