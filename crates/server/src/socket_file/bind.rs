//! Binding the socket file (steps 2 and 3 of its lifecycle): under the path lock, a stale
//! socket of ours is removed and anything else refused; then `socket`, `fchmod`, `bind`,
//! `listen`, so that the file is never wider than `--socket-mode`.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::Mode;

use super::directory::check_parent;
use super::lock::PathLock;
use super::probe::{Probe, live_server_at, probe};
use super::{Created, SocketFile};
use crate::config::{MAX_SOCKET_PATH, SocketType};
use crate::listen_error::ListenError;

/// Binds a socket of type `kind` at `path` with permission bits `mode` (listening, unless it
/// is a datagram socket), handling every case of the socket file's lifecycle. The socket is
/// non-blocking.
pub(crate) async fn bind(
    path: &Path,
    mode: u32,
    kind: SocketType,
) -> Result<(OwnedFd, SocketFile), ListenError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ListenError::TooLong {
            path: path.to_owned(),
            len,
        });
    }
    if len == 0 {
        return Err(ListenError::EmptyPath);
    }
    check_parent(path)?;
    let mut lock = match PathLock::acquire(path) {
        Ok(lock) => lock,
        Err(e @ ListenError::InUse(_)) => return Err(e),
        // Someone else's lock file, or one this user cannot create: if a server answers on
        // the path, that is what the user needs to hear, not advice about the lock file.
        Err(e) if live_server_at(path).await => {
            tracing::debug!("{e}");
            return Err(ListenError::InUse(path.display().to_string()));
        }
        Err(e) => return Err(e),
    };
    match bind_locked(path, mode, kind).await {
        Ok((socket, file)) => Ok((socket, SocketFile { file, lock })),
        Err(e) => {
            lock.release();
            Err(e)
        }
    }
}

/// The part that runs under the path lock.
async fn bind_locked(
    path: &Path,
    mode: u32,
    kind: SocketType,
) -> Result<(OwnedFd, Created), ListenError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let euid = rustix::process::geteuid().as_raw();
            let probed = probe(path).await;
            match probed {
                Ok(Probe::Live) => return Err(ListenError::InUse(path.display().to_string())),
                // Only our own leftovers: another user's socket with nobody this user can reach
                // behind it (stale, or closed to us) is theirs to remove.
                _ if meta.uid() != euid => {
                    return Err(ListenError::ForeignStaleSocket {
                        path: path.to_owned(),
                        uid: meta.uid(),
                    });
                }
                Ok(Probe::Stale) => {
                    tracing::info!(
                        "{}: removing stale socket (nobody answers on it)",
                        path.display()
                    );
                    match fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(ListenError::io(path, "removing the stale socket", e));
                        }
                    }
                }
                Ok(Probe::Gone) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
                what: "a symbolic link",
            });
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
                what: "not a socket",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ListenError::io(path, "inspecting the path", e)),
    }

    let listener = bind_with_mode(path, mode, kind).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse(path.display().to_string()),
        _ => ListenError::creating(path, "binding", e),
    })?;
    let meta = fs::symlink_metadata(path)
        .map_err(|e| ListenError::io(path, "inspecting the new socket", e))?;
    let file = Created {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    // The kernel takes the bits from the socket and clears the umask's; on a system that
    // ignored the `fchmod`, the file could come out wider than asked: never serve it then.
    if !meta.file_type().is_socket() || meta.mode() & 0o777 & !mode != 0 {
        file.remove("socket file");
        return Err(ListenError::io(
            path,
            "setting the socket mode",
            io::Error::other(format!(
                "the new socket has mode {:04o}, wider than --socket-mode {mode:04o}",
                meta.mode() & 0o777
            )),
        ));
    }
    Ok((listener, file))
}

/// `socket`, `fchmod`, `bind`, `listen`: the file appears with `mode` (less the umask) from
/// its first instant.
fn bind_with_mode(path: &Path, mode: u32, kind: SocketType) -> io::Result<OwnedFd> {
    use rustix::net::SocketAddrUnix;

    let fd = serving_socket(kind)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    udsecho_unix::socket::listen(&fd, kind)?;
    Ok(fd)
}

/// A socket to serve on, not yet bound: non-blocking and close-on-exec
/// ([`udsecho_unix::socket::socket`]), and for a datagram socket, set to receive every
/// sender's credentials. (`listener` makes its abstract-name sockets here too.)
pub(crate) fn serving_socket(kind: SocketType) -> io::Result<OwnedFd> {
    let fd = udsecho_unix::socket::socket(kind)?;
    if kind == SocketType::Datagram {
        // Every datagram must carry its sender's credentials (`--allow-uid`, the reply
        // checks), and the kernel attaches them only if this is set when it is sent: set
        // before `bind`, so no datagram sent once the name exists comes without them.
        rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    }
    Ok(fd)
}
