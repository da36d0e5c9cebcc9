//! Why the server could not start listening ([`ListenError`]), and the one path helper its
//! messages share with the code that raises them. A leaf: `listener` (sockets handed over,
//! abstract names) and `socket_file` (the socket file's lifecycle) both raise these errors;
//! `socket_file` imports nothing from `listener`.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::MAX_SOCKET_PATH;

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
    /// The socket's directory lets someone else rename or remove names in it.
    #[error("{}: {why}, so someone else could replace the socket under the server; refusing (choose a directory of your own, or one with the sticky bit such as /tmp)", .dir.display())]
    UnsafeParent {
        /// The directory.
        dir: PathBuf,
        /// Who else can change it.
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
    /// A file could not be created next to the socket because this user cannot write its
    /// directory.
    #[error("{}: permission denied ({op}): directory {} is not writable by this user (choose another --socket)", .path.display(), .dir.display())]
    DirectoryNotWritable {
        /// The socket path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// What was being attempted.
        op: &'static str,
    },
    /// Abstract sockets exist on Linux only.
    #[error("@{0}: abstract sockets are only available on Linux")]
    AbstractUnsupported(String),
    /// systemd passed descriptors that are not a Unix socket.
    #[error("socket activation: {0}")]
    Activation(io::Error),
    /// `--inetd` without a Unix socket on standard input.
    #[error(
        "--inetd: {0} (inetd, systemd's Accept=yes and ucspi's unixserver pass the connection there)"
    )]
    Inetd(String),
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

    /// An error creating a name next to `socket` (the lock file, the socket file): when the
    /// directory is what refuses this user, the message names it.
    pub(crate) fn creating(socket: &Path, op: &'static str, e: io::Error) -> ListenError {
        use rustix::fs::Access;
        let dir = parent(socket);
        if e.kind() == io::ErrorKind::PermissionDenied
            && dir.is_dir()
            && rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK).is_err()
        {
            return ListenError::DirectoryNotWritable {
                path: socket.to_owned(),
                dir: dir.to_owned(),
                op,
            };
        }
        ListenError::io(socket, op, e)
    }
}

/// The directory a socket path lives in (`.` for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
