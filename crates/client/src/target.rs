//! The socket to talk to: where it is ([`Target`], a path or an abstract name), its type
//! ([`SocketType`]), how to talk over it ([`Transport`]), and the default socket's directory.
//! A leaf: it names sockets and opens none; connecting, with its errors, is `connect.rs`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use rustix::net::SocketAddrUnix;

/// The kind of Unix socket to open: it must be the kind the server listens on.
///
/// The server has its own `SocketType`, the kind it serves: the two binaries never depend on
/// each other, and `udsecho-proto`, the one crate they share, knows bytes, not sockets. Both
/// spell the kinds as `--type` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketType {
    /// A byte stream (`SOCK_STREAM`), what `nc -U` speaks.
    #[default]
    Stream,
    /// Messages over a connection (`SOCK_SEQPACKET`): boundaries kept, in order.
    Seqpacket,
    /// Datagrams (`SOCK_DGRAM`), each answered to our own address.
    Datagram,
}

impl SocketType {
    /// The name `--type` takes.
    pub fn name(self) -> &'static str {
        match self {
            SocketType::Stream => "stream",
            SocketType::Seqpacket => "seqpacket",
            SocketType::Datagram => "datagram",
        }
    }

    pub(crate) fn raw(self) -> rustix::net::SocketType {
        match self {
            SocketType::Stream => rustix::net::SocketType::STREAM,
            SocketType::Seqpacket => rustix::net::SocketType::SEQPACKET,
            SocketType::Datagram => rustix::net::SocketType::DGRAM,
        }
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the client talks to the server: the socket's type and, on a stream, raw bytes or
/// udsecho frames. Frames exist only on a stream (a seqpacket message or a datagram keeps its
/// boundaries already), so "framed seqpacket" cannot be said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A byte stream: raw bytes (as `nc -U`) or, `framed`, udsecho frames.
    Stream {
        /// Speak frames (preamble, Hello, Data frames) instead of raw bytes.
        framed: bool,
    },
    /// Messages over a connection, each echoed as one message.
    Seqpacket,
    /// Datagrams, each answered to our own address.
    Datagram,
}

impl Transport {
    /// The socket type this transport opens.
    pub fn socket_type(self) -> SocketType {
        match self {
            Transport::Stream { .. } => SocketType::Stream,
            Transport::Seqpacket => SocketType::Seqpacket,
            Transport::Datagram => SocketType::Datagram,
        }
    }

    /// Whether it speaks udsecho frames (a framed stream).
    pub fn is_framed(self) -> bool {
        matches!(self, Transport::Stream { framed: true })
    }
}

/// Where the server is: a socket file, or a Linux abstract socket (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (without the `@`).
    Abstract(String),
}

impl Target {
    /// Reads `@name` as abstract, anything else as a path.
    pub fn parse(s: &str) -> Target {
        match s.strip_prefix('@') {
            Some(name) => Target::Abstract(name.to_owned()),
            None => Target::Path(PathBuf::from(s)),
        }
    }

    /// The default socket, the same as the server's: `echo.sock` in `default_socket_dir`.
    pub fn default_path() -> Target {
        Target::Path(default_socket_dir().join("echo.sock"))
    }

    /// The longest socket path that fits in `sun_path` (108 bytes with its terminating NUL).
    pub const MAX_PATH: usize = 107;

    /// The longest this target can be: a path as above; an abstract name has no NUL at the
    /// end, and its `@` stands for the NUL at the start.
    pub(crate) fn len_and_max(&self) -> (usize, usize) {
        match self {
            Target::Path(path) => (path.as_os_str().len(), Self::MAX_PATH),
            Target::Abstract(name) => (1 + name.len(), Self::MAX_PATH + 1),
        }
    }

    /// The socket address, for rustix.
    pub(crate) fn address(&self) -> io::Result<SocketAddrUnix> {
        match self {
            Target::Path(path) => Ok(SocketAddrUnix::new(path.as_path())?),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => Ok(SocketAddrUnix::new_abstract_name(name.as_bytes())?),
            #[cfg(not(target_os = "linux"))]
            Target::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets are only available on Linux",
            )),
        }
    }
}

/// The directory of the default socket, computed exactly as the server does:
/// `$XDG_RUNTIME_DIR/udsecho` when that is an absolute path, else `/run/udsecho` for root and
/// `$TMPDIR/udsecho-UID` (`/tmp/udsecho-UID`) for everyone else.
///
/// A copy of the server's `default_socket_dir` (with `is_own_private_dir`): the two must
/// agree, and the binaries share no crate that may know paths (`udsecho-proto` is bytes only).
pub(crate) fn default_socket_dir() -> PathBuf {
    let euid = rustix::process::geteuid();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if is_own_private_dir(std::path::Path::new(&dir), euid.as_raw()) => {
            PathBuf::from(dir).join("udsecho")
        }
        _ if euid.is_root() => PathBuf::from("/run/udsecho"),
        _ => std::env::temp_dir().join(format!("udsecho-{}", euid.as_raw())),
    }
}

/// `XDG_RUNTIME_DIR` is trusted only if it is what the XDG spec promises: an absolute path to
/// a real directory owned by this user with no access for others. An inherited variable (`su`
/// without `-` keeps the caller's) must not send root's socket into a directory its owner
/// controls.
fn is_own_private_dir(dir: &std::path::Path, euid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.is_absolute()
        && std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == euid && m.mode() & 0o077 == 0)
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Path(path) => write!(f, "{}", path.display()),
            Target::Abstract(name) => write!(f, "@{name}"),
        }
    }
}
