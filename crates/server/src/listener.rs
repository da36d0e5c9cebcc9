//! The listening socket and the socket file's lifecycle.
//!
//! The server owns its socket file: it refuses a path where a server answers or where
//! something other than a socket sits, replaces a stale socket, creates the new one with
//! `--socket-mode` and nothing wider at any instant, and on the way out removes the file only
//! if it is still the one it bound (same device and inode).
//!
//! Probing then unlinking then binding races when several servers start at once: one can
//! unlink another's fresh socket and leave it listening on nothing. So every server first
//! takes an exclusive `flock` on `PATH.lock` and holds it while it runs; only the holder
//! probes, unlinks and binds. A lock held means a server is there (the kernel drops it when
//! a process dies, so a crash leaves no stuck lock).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use crate::config::{MAX_SOCKET_PATH, SocketAddress};

/// Why the server could not start listening. Each variant names the socket it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another server answers on the path (or holds its lock).
    #[error(
        "{0}: a server is already listening on this socket (stop it, or choose another --socket)"
    )]
    InUse(String),
    /// The path holds something that is not a socket.
    #[error("{}: exists and is not a socket; refusing to touch it (remove it yourself, or choose another --socket)", .0.display())]
    NotASocket(PathBuf),
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
    fn io(path: &Path, op: &'static str, source: io::Error) -> ListenError {
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
            SocketAddress::Path(path) => bind_path(path, socket_mode).await,
            SocketAddress::Abstract(name) => bind_abstract(name),
        }
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

/// The socket file this server created. Dropping it removes the file, unless the path now
/// holds another file, then releases the path's lock.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    lock: PathLock,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                match fs::remove_file(&self.path) {
                    Ok(()) => tracing::debug!(path = %self.path.display(), "removed socket file"),
                    Err(e) => {
                        tracing::warn!("{}: could not remove socket file: {e}", self.path.display())
                    }
                }
            }
            Ok(_) => tracing::warn!(
                "{}: replaced by another file while the server ran; leaving it",
                self.path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!("{}: socket file was already removed", self.path.display())
            }
            Err(e) => tracing::warn!("{}: {e}", self.path.display()),
        }
        self.lock.remove();
    }
}

/// An exclusive `flock` on `PATH.lock`, held for the server's life.
#[derive(Debug)]
struct PathLock {
    path: PathBuf,
    /// Holds the lock; closing it releases it.
    _file: File,
}

impl PathLock {
    fn acquire(socket: &Path) -> Result<PathLock, ListenError> {
        let mut name = socket.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        // A holder removes the lock file on its way out; whoever locked the old, unlinked
        // file must try again on the new one. A few rounds are plenty.
        for _ in 0..8 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| ListenError::io(socket, "creating the lock file", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(ListenError::InUse(socket.display().to_string()));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(ListenError::io(socket, "locking the lock file", e));
                }
            }
            let held = file
                .metadata()
                .map_err(|e| ListenError::io(socket, "reading the lock file", e))?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(PathLock { path, _file: file });
                }
                _ => continue,
            }
        }
        Err(ListenError::InUse(socket.display().to_string()))
    }

    /// Removes the lock file while still holding the lock (see `acquire` for why that is
    /// safe).
    fn remove(&self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::debug!("{}: {e}", self.path.display());
        }
    }
}

/// What answers at a socket path.
enum Probe {
    Live,
    Stale,
    Gone,
}

async fn probe(path: &Path) -> Result<Probe, ListenError> {
    match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
        // A server that does not even complete connect within a second is still a server.
        Err(_elapsed) => Ok(Probe::Live),
        Ok(Ok(_)) => Ok(Probe::Live),
        Ok(Err(e)) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Ok(Probe::Stale),
            io::ErrorKind::NotFound => Ok(Probe::Gone),
            // Backlog full: someone is listening.
            io::ErrorKind::WouldBlock => Ok(Probe::Live),
            _ => Err(ListenError::io(path, "probing the existing socket", e)),
        },
    }
}

async fn bind_path(path: &Path, socket_mode: u32) -> Result<Listener, ListenError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ListenError::TooLong {
            path: path.to_owned(),
            len,
        });
    }
    if len == 0 {
        return Err(ListenError::Io {
            socket: String::new(),
            op: "binding",
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty socket path"),
        });
    }
    let lock = PathLock::acquire(path)?;
    match bind_locked(path, socket_mode).await {
        Ok((socket, dev, ino)) => Ok(Listener {
            socket,
            name: path.display().to_string(),
            owned_file: Some(SocketFile {
                path: path.to_owned(),
                dev,
                ino,
                lock,
            }),
        }),
        Err(e) => {
            lock.remove();
            Err(e)
        }
    }
}

/// The part that runs under the path lock.
async fn bind_locked(
    path: &Path,
    socket_mode: u32,
) -> Result<(UnixListener, u64, u64), ListenError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match probe(path).await? {
            Probe::Live => return Err(ListenError::InUse(path.display().to_string())),
            Probe::Stale => {
                tracing::info!(
                    "{}: removing stale socket (nobody answers on it)",
                    path.display()
                );
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ListenError::io(path, "removing the stale socket", e)),
                }
            }
            Probe::Gone => {}
        },
        Ok(_) => return Err(ListenError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ListenError::io(path, "inspecting the path", e)),
    }

    // bind(2) creates the file with 0777 & !umask. Setting the umask to exactly the bits we
    // do not want means the file is never, not even for an instant, more open than asked.
    // The umask is process-wide: this runs at startup, before any connection is served.
    let mask = rustix::fs::Mode::from_raw_mode(!socket_mode & 0o777);
    let previous = rustix::process::umask(mask);
    let bound = UnixListener::bind(path);
    rustix::process::umask(previous);
    let socket = bound.map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse(path.display().to_string()),
        _ => ListenError::io(path, "binding", e),
    })?;
    // Bits the umask cannot express (it only clears), set now that the file is ours.
    fs::set_permissions(path, fs::Permissions::from_mode(socket_mode))
        .map_err(|e| ListenError::io(path, "setting the socket mode", e))?;
    let meta = fs::symlink_metadata(path)
        .map_err(|e| ListenError::io(path, "inspecting the new socket", e))?;
    Ok((socket, meta.dev(), meta.ino()))
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
