//! The socket to talk to, and connecting to it with errors a person understands: a stream
//! (tokio's `UnixStream`), or a seqpacket or datagram [`MessageSocket`].

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags};
use tokio::net::UnixStream;

use crate::error::{ClientError, ErrorKind};
use crate::message::MessageSocket;

/// The kind of Unix socket to open: it must be the kind the server listens on.
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

    fn raw(self) -> rustix::net::SocketType {
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

    /// The default socket, the same as the server's: `echo.sock` in [`default_socket_dir`].
    pub fn default_path() -> Target {
        Target::Path(default_socket_dir().join("echo.sock"))
    }

    /// The longest socket path that fits in `sun_path` (108 bytes with its terminating NUL).
    pub const MAX_PATH: usize = 107;

    /// The longest this target can be: a path as above; an abstract name has no NUL at the
    /// end, and its `@` stands for the NUL at the start.
    fn len_and_max(&self) -> (usize, usize) {
        match self {
            Target::Path(path) => (path.as_os_str().len(), Self::MAX_PATH),
            Target::Abstract(name) => (1 + name.len(), Self::MAX_PATH + 1),
        }
    }

    /// Connects, retrying while the server's backlog is full, for at most `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<UnixStream, ClientError> {
        self.check_reachable()?;
        let attempt = async {
            loop {
                match self.connect_once().await {
                    // A full backlog: the server is there, just busy accepting.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(self.connect_error(e, SocketType::Stream).at(self)),
            Err(_) => Err(ErrorKind::timed_out("connecting", timeout).at(self)),
        }
    }

    /// Connects a seqpacket or datagram socket (`kind`), retrying while a seqpacket
    /// server's backlog is full, for at most `timeout`. A datagram socket is first bound to
    /// an autobind address, where the server's replies come back.
    pub async fn connect_messages(
        &self,
        kind: SocketType,
        timeout: Duration,
    ) -> Result<MessageSocket, ClientError> {
        self.check_reachable()?;
        let io = |doing, source| ErrorKind::Io { doing, source }.at(self);
        let fd = socket(kind).map_err(|e| io("creating the socket", e))?;
        if kind == SocketType::Datagram {
            rustix::net::bind(&fd, &SocketAddrUnix::new_unnamed())
                .map_err(|e| io("binding a private address for the replies", e.into()))?;
        }
        let addr = self.address().map_err(|e| io("connecting", e))?;
        let attempt = async {
            loop {
                match rustix::net::connect(&fd, &addr) {
                    Err(rustix::io::Errno::AGAIN) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => MessageSocket::new(fd, kind).map_err(|e| io("setting up the socket", e)),
            Ok(Err(e)) => Err(self.connect_error(e.into(), kind).at(self)),
            Err(_) => Err(ErrorKind::timed_out("connecting", timeout).at(self)),
        }
    }

    /// What must hold before any connect: the address fits, and the default directory is
    /// private.
    fn check_reachable(&self) -> Result<(), ClientError> {
        let (len, max) = self.len_and_max();
        if len > max {
            return Err(ErrorKind::PathTooLong { len, max }.at(self));
        }
        self.check_default_dir()
    }

    /// The socket address, for rustix.
    fn address(&self) -> io::Result<SocketAddrUnix> {
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

    /// Which type the server at this address listens with, found by connecting a
    /// non-blocking socket of each other type: the kernel checks the type before anything
    /// else (`EPROTOTYPE`), so a connect that gets past it, or only finds the backlog full,
    /// has the right one. A datagram connect sends nothing; a stream or seqpacket one is a
    /// connection the server sees open and close at once (only ever on this error path).
    fn probe_type(&self, not: SocketType) -> Option<SocketType> {
        let addr = self.address().ok()?;
        [
            SocketType::Stream,
            SocketType::Seqpacket,
            SocketType::Datagram,
        ]
        .into_iter()
        .filter(|&kind| kind != not)
        .find(|&kind| {
            socket(kind).is_ok_and(|fd| {
                matches!(
                    rustix::net::connect(&fd, &addr),
                    Ok(()) | Err(rustix::io::Errno::AGAIN)
                )
            })
        })
    }

    async fn connect_once(&self) -> io::Result<UnixStream> {
        match self {
            Target::Path(path) => UnixStream::connect(path).await,
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                stream.set_nonblocking(true)?;
                UnixStream::from_std(stream)
            }
            #[cfg(not(target_os = "linux"))]
            Target::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets are only available on Linux",
            )),
        }
    }

    fn connect_error(&self, e: io::Error, kind: SocketType) -> ErrorKind {
        if e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) {
            return ErrorKind::WrongType {
                ours: kind,
                theirs: self.probe_type(kind),
            };
        }
        match (e.kind(), self) {
            (io::ErrorKind::NotFound, Target::Path(path)) => match path.parent() {
                // Not "start a server there": no server can bind in a missing directory.
                // (The default directory is the exception: the server creates it.)
                Some(dir)
                    if !dir.as_os_str().is_empty()
                        && !dir.exists()
                        && dir != default_socket_dir() =>
                {
                    ErrorKind::NoSuchDirectory(dir.to_owned())
                }
                _ => ErrorKind::NoSuchSocket,
            },
            (io::ErrorKind::ConnectionRefused, Target::Path(path)) if !is_socket(path) => {
                ErrorKind::NotASocket
            }
            (io::ErrorKind::ConnectionRefused, Target::Path(_)) => ErrorKind::Stale,
            (io::ErrorKind::ConnectionRefused, Target::Abstract(_)) => ErrorKind::NotListening,
            (io::ErrorKind::PermissionDenied, _) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io {
                doing: "connecting",
                source: e,
            },
        }
    }

    /// A socket in the default directory is trusted only if that directory is private to this
    /// user, as the server requires: otherwise anyone could have created it first and be
    /// listening there.
    fn check_default_dir(&self) -> Result<(), ClientError> {
        let Target::Path(path) = self else {
            return Ok(());
        };
        let dir = default_socket_dir();
        if path.parent() != Some(dir.as_path()) {
            return Ok(());
        }
        match private_dir_problem(&dir) {
            None => Ok(()),
            Some(why) => Err(ErrorKind::UnsafeDirectory { dir, why }.at(self)),
        }
    }
}

/// The directory of the default socket, computed exactly as the server does:
/// `$XDG_RUNTIME_DIR/udsecho` when that is an absolute path, else `/run/udsecho` for root and
/// `$TMPDIR/udsecho-UID` (`/tmp/udsecho-UID`) for everyone else.
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

/// What makes `dir` unfit to hold our socket, if it exists: a link, not a directory, another
/// owner, or access for group or others. A missing directory is fine here: connecting then
/// says "no such socket".
fn private_dir_problem(dir: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_owned())
    } else if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != euid {
        Some(format!("is owned by uid {}, not by uid {euid}", meta.uid()))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!("has mode {:04o}, not 0700", meta.mode() & 0o7777))
    } else {
        None
    }
}

/// A non-blocking, close-on-exec Unix socket of `kind`.
fn socket(kind: SocketType) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        kind.raw(),
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Path(path) => write!(f, "{}", path.display()),
            Target::Abstract(name) => write!(f, "@{name}"),
        }
    }
}
