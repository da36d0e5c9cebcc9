//! What passed descriptors are, in words, for `-v`: `2 descriptors: file /etc/hosts, socket
//! (unix stream)`. The note's size never follows the peer's (253 descriptors with long,
//! escaped paths).

use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::echo_log::{SHOWN, escape_into};

/// The note for `fds`.
pub(super) fn describe(fds: &[OwnedFd]) -> String {
    let mut out = format!(
        "{} descriptor{}:",
        fds.len(),
        if fds.len() == 1 { "" } else { "s" }
    );
    for (i, fd) in fds.iter().enumerate() {
        if out.len() >= SHOWN {
            let _ = write!(out, ", and {} more", fds.len() - i);
            break;
        }
        out.push_str(if i == 0 { " " } else { ", " });
        let start = out.len();
        describe_one(fd.as_fd(), &mut out);
        if out.len() - start > NAME_SHOWN {
            let mut end = start + NAME_SHOWN;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push_str("...");
        }
    }
    out
}

/// The most of one descriptor's description a note shows (a path can be 4 KiB, escaped 4×).
const NAME_SHOWN: usize = 160;

/// What a passed descriptor is: its kind, and the path it names where it has one (a file's,
/// a memfd's name, a device's). The `-v` note shows it as `kind path`; the proxy's recording
/// keeps the two apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `file`, `memfd`, `directory`, `socket (unix stream)`, `pipe`, `character device`,
    /// `block device`, or `descriptor` (eventfd, epoll, pidfd...: their path names them).
    pub(crate) kind: String,
    /// The path as the kernel gives it (not UTF-8 perhaps); `None` for sockets and pipes.
    pub(crate) path: Option<Vec<u8>>,
}

/// What `fd` is.
pub(crate) fn identify(fd: BorrowedFd<'_>) -> Identity {
    use rustix::fs::FileType;
    let path = || {
        rustix::fs::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()), Vec::new())
            .map(|p| p.into_bytes())
            .unwrap_or_default()
    };
    let kind = match rustix::fs::fstat(fd) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode),
        Err(_) => FileType::Unknown,
    };
    let named = |kind: &str, path: Vec<u8>| Identity {
        kind: kind.to_owned(),
        path: Some(path),
    };
    match kind {
        FileType::RegularFile => {
            let path = path();
            match path.strip_prefix(b"/memfd:") {
                Some(name) => {
                    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
                    named("memfd", name.to_vec())
                }
                None => named("file", path),
            }
        }
        FileType::Directory => named("directory", path()),
        FileType::Socket => {
            let domain = rustix::net::sockopt::socket_domain(fd).ok();
            let ty = rustix::net::sockopt::socket_type(fd).ok();
            let domain = match domain {
                Some(rustix::net::AddressFamily::UNIX) => "unix",
                Some(rustix::net::AddressFamily::INET) => "inet",
                Some(rustix::net::AddressFamily::INET6) => "inet6",
                Some(rustix::net::AddressFamily::NETLINK) => "netlink",
                _ => "other",
            };
            let ty = match ty {
                Some(rustix::net::SocketType::STREAM) => "stream",
                Some(rustix::net::SocketType::DGRAM) => "datagram",
                Some(rustix::net::SocketType::SEQPACKET) => "seqpacket",
                _ => "other",
            };
            Identity {
                kind: format!("socket ({domain} {ty})"),
                path: None,
            }
        }
        FileType::Fifo => Identity {
            kind: "pipe".to_owned(),
            path: None,
        },
        FileType::CharacterDevice => named("character device", path()),
        FileType::BlockDevice => named("block device", path()),
        // eventfd, epoll, timerfd, pidfd...: anonymous inodes name themselves.
        _ => named("descriptor", path()),
    }
}

/// One descriptor in words: its kind, and its path where it has one (escaped like the bytes).
fn describe_one(fd: BorrowedFd<'_>, out: &mut String) {
    let Identity { kind, path } = identify(fd);
    out.push_str(&kind);
    if let Some(path) = path {
        out.push(' ');
        escape_into(&path, out);
    }
}
