//! The listening socket: a socket file (its lifecycle lives in `socket_file`), a Linux
//! abstract name, or a socket handed over by systemd.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::config::{MAX_SOCKET_PATH, SocketAddress};
use crate::socket_file::{self, SocketFile};

/// Why the server could not start listening. Each variant names the socket it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another server answers on the path (or holds its lock).
    #[error(
        "{0}: a server is already listening on this socket (stop it, or choose another --socket)"
    )]
    InUse(String),
    /// The path holds something that is not a socket (a symbolic link counts: it is never
    /// followed).
    #[error("{}: exists and is {what}; refusing to touch it (remove it yourself, or choose another --socket)", .path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there instead.
        what: &'static str,
    },
    /// A socket of another user with no server behind it that this user can reach: theirs to
    /// remove, not ours.
    #[error("{}: a socket owned by uid {uid}, not by this user, and no server answers on it; refusing to remove it (remove it yourself, or choose another --socket)", .path.display())]
    ForeignStaleSocket {
        /// The socket path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// `PATH.lock` exists and is not a lock file this user's server could have left.
    #[error("{}: {why}, so it is not a udsecho lock file; refusing to touch it (remove it yourself, or choose another --socket)", .path.display())]
    ForeignLockFile {
        /// The lock file's path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The default socket's directory is not private to this user.
    #[error("{}: {why}; the default socket must live in a directory only you can use (fix or remove it, or choose another --socket)", .dir.display())]
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// An empty socket path.
    #[error("the socket path is empty (give a path, or @name for an abstract socket)")]
    EmptyPath,
    /// The path does not fit in `sun_path`.
    #[error("{}: socket path is {len} bytes, the limit is {MAX_SOCKET_PATH} (choose a shorter path)", .path.display())]
    TooLong {
        /// The path as given.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The directory the socket would live in does not exist.
    #[error("{}: directory {} does not exist", .path.display(), .dir.display())]
    NoDirectory {
        /// The socket path.
        path: PathBuf,
        /// Its parent.
        dir: PathBuf,
    },
    /// The OS refused access to the path or its directory.
    #[error("{}: permission denied ({op})", .path.display())]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
        /// What was being attempted.
        op: &'static str,
    },
    /// Abstract sockets exist on Linux only.
    #[error("@{0}: abstract sockets are only available on Linux")]
    AbstractUnsupported(String),
    /// systemd passed descriptors that are not a listening Unix socket.
    #[error("socket activation: {0}")]
    Activation(io::Error),
    /// Any other OS error.
    #[error("{socket}: {op}: {source}")]
    Io {
        /// The socket it concerns.
        socket: String,
        /// What was being attempted.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ListenError {
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> ListenError {
        match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory if !parent(path).is_dir() => {
                ListenError::NoDirectory {
                    path: path.to_owned(),
                    dir: parent(path).to_owned(),
                }
            }
            io::ErrorKind::PermissionDenied => ListenError::PermissionDenied {
                path: path.to_owned(),
                op,
            },
            _ => ListenError::Io {
                socket: path.display().to_string(),
                op,
                source,
            },
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A listening socket, and the socket file this server owns, if any.
#[derive(Debug)]
pub struct Listener {
    /// Accepts connections; dropped first at shutdown so no new peer gets in.
    pub(crate) socket: UnixListener,
    /// The file to remove at the end; `None` for abstract and inherited sockets.
    pub(crate) owned_file: Option<SocketFile>,
    /// How to name this socket in logs.
    pub(crate) name: String,
}

impl Listener {
    /// Binds `address`, handling every case of the socket file's lifecycle.
    pub async fn bind(address: &SocketAddress, socket_mode: u32) -> Result<Listener, ListenError> {
        match address {
            SocketAddress::Path(path) => {
                let (socket, file) = socket_file::bind(path, socket_mode).await?;
                let socket = socket
                    .set_nonblocking(true)
                    .and_then(|()| UnixListener::from_std(socket))
                    .map_err(|e| ListenError::io(path, "registering the socket", e))?;
                Ok(Listener {
                    socket,
                    owned_file: Some(file),
                    name: path.display().to_string(),
                })
            }
            SocketAddress::Abstract(name) => bind_abstract(name),
        }
    }

    /// The default socket ([`SocketAddress::default_path`]) once its private directory exists
    /// and has been checked; see [`default_socket_dir`](crate::default_socket_dir).
    pub fn default_socket() -> Result<SocketAddress, ListenError> {
        let dir = crate::config::default_socket_dir();
        socket_file::prepare_private_dir(&dir)?;
        Ok(SocketAddress::Path(
            dir.join(crate::config::DEFAULT_SOCKET_NAME),
        ))
    }

    /// Takes the listener systemd passed (`LISTEN_FDS`), if there is one. The socket belongs
    /// to systemd: this server never unlinks it.
    ///
    /// Call it before starting threads: it clears the `LISTEN_*` variables.
    pub fn from_systemd() -> Result<Option<std::os::unix::net::UnixListener>, ListenError> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Ok(None);
        }
        match fds.take_unix_listener(0) {
            Ok(Some(listener)) => Ok(Some(listener)),
            Ok(None) => Err(ListenError::Activation(io::Error::other(
                "LISTEN_FDS is set but descriptor 3 is missing",
            ))),
            Err(e) => Err(ListenError::Activation(e)),
        }
    }

    /// Wraps a listener inherited from systemd; must be called inside the runtime.
    pub fn inherited(listener: std::os::unix::net::UnixListener) -> Result<Listener, ListenError> {
        let name = match listener.local_addr() {
            Ok(addr) => match addr.as_pathname() {
                Some(path) => format!("{} (from systemd)", path.display()),
                None => "a socket from systemd".to_owned(),
            },
            Err(_) => "a socket from systemd".to_owned(),
        };
        listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(listener))
            .map(|socket| Listener {
                socket,
                owned_file: None,
                name,
            })
            .map_err(ListenError::Activation)
    }

    /// The socket, as shown in logs.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> Result<Listener, ListenError> {
    use std::os::linux::net::SocketAddrExt;

    let display = format!("@{name}");
    let io_err = |op, source| ListenError::Io {
        socket: display.clone(),
        op,
        source,
    };
    if name.len() > MAX_SOCKET_PATH {
        return Err(ListenError::TooLong {
            path: PathBuf::from(&display),
            len: name.len(),
        });
    }
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| io_err("naming the abstract socket", e))?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            ListenError::InUse(display.clone())
        } else {
            io_err("binding", e)
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("configuring", e))?;
    let socket = UnixListener::from_std(listener).map_err(|e| io_err("registering", e))?;
    Ok(Listener {
        socket,
        owned_file: None,
        name: display,
    })
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(name: &str) -> Result<Listener, ListenError> {
    Err(ListenError::AbstractUnsupported(name.to_owned()))
}
