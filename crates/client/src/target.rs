//! The socket to talk to: where it is ([`Target`], a path or an abstract name), its type
//! ([`SocketType`], udsecho-unix's, the server's too), and how to talk over it
//! ([`Transport`]). A leaf: it names sockets and opens none; connecting, with its errors, is
//! `connect.rs`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use rustix::net::SocketAddrUnix;
pub use udsecho_unix::SocketType;

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

    /// The default socket, the same as the server's: `echo.sock` in the directory
    /// [`udsecho_unix::socket_dir::default_socket_dir`] names.
    pub fn default_path() -> Target {
        Target::Path(udsecho_unix::socket_dir::default_socket_path())
    }

    /// The longest socket path that fits in `sun_path` (108 bytes with its terminating NUL).
    pub const MAX_PATH: usize = udsecho_unix::MAX_SOCKET_PATH;

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

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Path(path) => write!(f, "{}", path.display()),
            Target::Abstract(name) => write!(f, "@{name}"),
        }
    }
}
