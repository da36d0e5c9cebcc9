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

/// One descriptor in words: its kind, and for a file its path (escaped like the bytes).
fn describe_one(fd: BorrowedFd<'_>, out: &mut String) {
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
    match kind {
        FileType::RegularFile => {
            let path = path();
            match path.strip_prefix(b"/memfd:") {
                Some(name) => {
                    out.push_str("memfd ");
                    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
                    escape_into(name, out);
                }
                None => {
                    out.push_str("file ");
                    escape_into(&path, out);
                }
            }
        }
        FileType::Directory => {
            out.push_str("directory ");
            escape_into(&path(), out);
        }
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
            let _ = write!(out, "socket ({domain} {ty})");
        }
        FileType::Fifo => out.push_str("pipe"),
        FileType::CharacterDevice => {
            out.push_str("character device ");
            escape_into(&path(), out);
        }
        FileType::BlockDevice => {
            out.push_str("block device ");
            escape_into(&path(), out);
        }
        _ => {
            // eventfd, epoll, timerfd, pidfd...: anonymous inodes name themselves.
            out.push_str("descriptor ");
            escape_into(&path(), out);
        }
    }
}
