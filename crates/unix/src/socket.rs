//! The kinds of Unix socket udsecho speaks ([`SocketType`]) and opening one: non-blocking and
//! close-on-exec, as every socket the binaries make, and listening where the type has
//! connections.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The longest socket path the kernel takes: `sun_path` is 108 bytes, one kept for the
/// trailing NUL. (An abstract name has no NUL at the end: its `@` stands for the NUL at the
/// start, so it may be one byte longer counting the `@`.)
pub const MAX_SOCKET_PATH: usize = 107;

/// The kind of Unix socket: what the server serves and what the client must open to reach
/// it. Spelled as `--type` takes it (`stream`, `seqpacket`, `datagram`).
///
/// ```
/// use udsecho_unix::SocketType;
///
/// let kind = SocketType::from_raw(rustix::net::SocketType::SEQPACKET);
/// assert_eq!(kind, Some(SocketType::Seqpacket));
/// assert_eq!(SocketType::Datagram.to_string(), "datagram");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SocketType {
    /// `SOCK_STREAM`: a byte stream (what `nc -U` speaks).
    #[default]
    Stream,
    /// `SOCK_SEQPACKET`: connections of messages, boundaries kept, in order.
    Seqpacket,
    /// `SOCK_DGRAM`: no connections; each datagram goes to an address.
    Datagram,
}

impl SocketType {
    /// Every kind, in the order they are tried when a socket's kind must be found out.
    pub const ALL: [SocketType; 3] = [
        SocketType::Stream,
        SocketType::Seqpacket,
        SocketType::Datagram,
    ];

    /// The name `--type` takes.
    pub fn name(self) -> &'static str {
        match self {
            SocketType::Stream => "stream",
            SocketType::Seqpacket => "seqpacket",
            SocketType::Datagram => "datagram",
        }
    }

    /// The socket type as the kernel names it.
    pub fn raw(self) -> rustix::net::SocketType {
        match self {
            SocketType::Stream => rustix::net::SocketType::STREAM,
            SocketType::Seqpacket => rustix::net::SocketType::SEQPACKET,
            SocketType::Datagram => rustix::net::SocketType::DGRAM,
        }
    }

    /// The kind the kernel's type names, if it is one of these three.
    pub fn from_raw(raw: rustix::net::SocketType) -> Option<SocketType> {
        SocketType::ALL.into_iter().find(|kind| kind.raw() == raw)
    }

    /// Whether sockets of this kind have connections (and so listen and accept).
    pub fn connects(self) -> bool {
        self != SocketType::Datagram
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new Unix socket of `kind`, non-blocking and close-on-exec, not yet bound or connected.
pub fn socket(kind: SocketType) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags};
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        kind.raw(),
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// Listens on a bound socket of `kind` with the system's largest backlog, unless the kind has
/// no connections (a datagram socket), where there is nothing to do.
pub fn listen(fd: impl AsFd, kind: SocketType) -> io::Result<()> {
    if kind.connects() {
        // As std does: on Linux a negative backlog means the system maximum (somaxconn).
        rustix::net::listen(fd, if cfg!(target_os = "linux") { -1 } else { 128 })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_opens_a_non_blocking_close_on_exec_socket_of_its_type() {
        for kind in SocketType::ALL {
            let fd = socket(kind).unwrap();
            let raw = rustix::net::sockopt::socket_type(&fd).unwrap();
            assert_eq!(SocketType::from_raw(raw), Some(kind));
            let flags = rustix::fs::fcntl_getfl(&fd).unwrap();
            assert!(flags.contains(rustix::fs::OFlags::NONBLOCK), "{kind}");
            let fd_flags = rustix::io::fcntl_getfd(&fd).unwrap();
            assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC), "{kind}");
        }
    }

    #[test]
    fn a_bound_socket_listens_unless_it_is_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        for kind in SocketType::ALL {
            let fd = socket(kind).unwrap();
            let path = dir.path().join(kind.name());
            let addr = rustix::net::SocketAddrUnix::new(path.as_path()).unwrap();
            rustix::net::bind(&fd, &addr).unwrap();
            listen(&fd, kind).unwrap();
            let listening = rustix::net::sockopt::socket_acceptconn(&fd).unwrap();
            assert_eq!(listening, kind.connects(), "{kind}");
        }
    }

    #[test]
    fn names_are_what_the_type_flag_takes() {
        let names: Vec<String> = SocketType::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["stream", "seqpacket", "datagram"]);
        assert_eq!(SocketType::default(), SocketType::Stream);
        assert_eq!(SocketType::from_raw(rustix::net::SocketType::RAW), None);
    }
}
