//! The socket file's lifecycle: claim the path, bind, and give it back.
//!
//! Whoever else can write the socket's directory, the server never follows a symbolic link at
//! the names it uses (`PATH` and `PATH.lock`) and never creates, changes, locks or deletes
//! anything it did not create itself. How, step by step (the threat model is in
//! ARCHITECTURE.md):
//!
//! 1. **The path lock.** Several servers may start on one path at once; probing, unlinking a
//!    stale socket and binding must happen under one owner, or one server can unlink another's
//!    fresh socket. `PATH.lock` is created with `O_CREAT | O_EXCL` (never through a link) and
//!    `flock`ed. An existing `PATH.lock` is opened read-only with `O_NOFOLLOW | O_NONBLOCK` and
//!    used only if it looks exactly like one of ours: a regular, empty file, owned by our uid,
//!    mode `0600` or narrower, one link. Anything else (a symlink, a FIFO, someone's notes) is
//!    refused and left as it is.
//! 2. **The socket.** Its mode is set with `fchmod` on the socket *before* `bind`, so the file
//!    appears with `--socket-mode` and nothing wider; there is no path-based `chmod` that a
//!    racer could redirect. `bind` itself never follows a link (it fails on any existing
//!    name).
//! 3. **A stale socket** is removed only if it is a socket owned by our uid that nobody answers
//!    on; anything else at the path is refused and left alone.
//! 4. **At the end** the socket file, then the lock file, are removed only if the path still
//!    holds the very inode this server created (same device and inode). A lock file left by a
//!    crashed server (`kill -9`) and reused is removed the same way, if the path still holds
//!    the inode this server locked: it has the shape only our own server leaves.
//!
//! Whatever stops the server from taking the path, a live server there is named as one: the
//! lock-file messages are only for a lock file with no live server behind it.

use std::fs::{self, File, TryLockError};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use tokio::net::UnixStream;

use crate::config::SocketType;
use crate::listen_error::{ListenError, parent};

/// A file this server created, known by its device and inode so that it is removed only while
/// the path still holds it.
#[derive(Debug)]
struct Created {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Created {
    /// Removes the file if the path still names the inode we created; says what happened.
    fn remove(&self, what: &str) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                match fs::remove_file(&self.path) {
                    Ok(()) => tracing::debug!(path = %self.path.display(), "removed {what}"),
                    Err(e) => {
                        tracing::warn!("{}: could not remove the {what}: {e}", self.path.display())
                    }
                }
            }
            Ok(_) => tracing::warn!(
                "{}: the {what} was replaced by another file while the server ran; leaving it",
                self.path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!("{}: the {what} was already removed", self.path.display())
            }
            Err(e) => tracing::warn!("{}: {e}", self.path.display()),
        }
    }
}

/// The socket file this server created. Dropping it removes the file (unless the path now
/// holds another file), then the lock file, then releases the lock.
#[derive(Debug)]
pub(crate) struct SocketFile {
    file: Created,
    /// Dropped after the socket file is gone: until then no other server may claim the path.
    lock: PathLock,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.file.remove("socket file");
        self.lock.release();
    }
}

/// An exclusive `flock` on `PATH.lock`, held for the server's life.
#[derive(Debug)]
struct PathLock {
    /// Holds the lock; closing it releases it.
    _file: File,
    /// The lock file as this server locked it, removed at the end if the path still holds that
    /// inode: one it created, or one a crashed server of this user left (see
    /// [`check_lock_file`]).
    created: Option<Created>,
}

impl PathLock {
    /// Takes the lock for `socket`, or says why not.
    fn acquire(socket: &Path) -> Result<PathLock, ListenError> {
        let mut name = socket.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        // A holder removes the lock file it created on its way out; whoever opened the old,
        // unlinked file must try again on the new one. A few rounds are plenty.
        for _ in 0..8 {
            let Some(fd) = open_lock_file(socket, &path)? else {
                continue;
            };
            let file = File::from(fd);
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
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    let created = Some(Created {
                        path,
                        dev: held.dev(),
                        ino: held.ino(),
                    });
                    return Ok(PathLock {
                        _file: file,
                        created,
                    });
                }
                _ => continue,
            }
        }
        Err(ListenError::InUse(socket.display().to_string()))
    }

    /// Removes the lock file if it is still the one this server locked. The lock itself
    /// is released when `_file` closes, after this: removing before unlocking is what makes
    /// the re-check in `acquire` sound.
    fn release(&mut self) {
        if let Some(created) = self.created.take() {
            created.remove("lock file");
        }
    }
}

/// Opens `PATH.lock` without ever following a link: creates it if absent, or opens an existing
/// one that passes [`check_lock_file`]. `None` means the file vanished between two steps; try
/// again.
fn open_lock_file(socket: &Path, path: &Path) -> Result<Option<OwnedFd>, ListenError> {
    let base = OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
    match rustix::fs::open(
        path,
        base | OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => return Ok(Some(fd)),
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(creating(socket, "creating the lock file", e.into())),
    }
    // O_NONBLOCK: opening a FIFO someone planted must not wait for a writer.
    match rustix::fs::open(
        path,
        base | OFlags::RDONLY | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => {
            check_lock_file(&fd).map_err(|why| ListenError::ForeignLockFile {
                path: path.to_owned(),
                why,
            })?;
            Ok(Some(fd))
        }
        Err(rustix::io::Errno::LOOP) => Err(ListenError::ForeignLockFile {
            path: path.to_owned(),
            why: "is a symbolic link".to_owned(),
        }),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(rustix::io::Errno::ACCESS) => Err(ListenError::ForeignLockFile {
            path: path.to_owned(),
            why: "cannot be opened by this user".to_owned(),
        }),
        Err(e) => Err(ListenError::io(socket, "opening the lock file", e.into())),
    }
}

/// An error creating a name next to `socket`: when the directory is what refuses this user,
/// the message names it.
fn creating(socket: &Path, op: &'static str, e: io::Error) -> ListenError {
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

/// An existing lock file is used only if it is what a udsecho server of this user leaves
/// behind after a crash: a regular, empty file, owned by us, `0600` or narrower, one link.
fn check_lock_file(fd: &OwnedFd) -> Result<(), String> {
    let stat = rustix::fs::fstat(fd).map_err(|e| format!("cannot be inspected: {e}"))?;
    let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let euid = rustix::process::geteuid().as_raw();
    if kind != rustix::fs::FileType::RegularFile {
        return Err(format!("is not a regular file ({kind:?})"));
    }
    if stat.st_uid != euid {
        return Err(format!(
            "is owned by uid {}, not by uid {euid}",
            stat.st_uid
        ));
    }
    if stat.st_size != 0 {
        return Err(format!("is not empty ({} bytes)", stat.st_size));
    }
    if stat.st_mode & 0o177 != 0 {
        return Err(format!(
            "has mode {:04o}, wider than 0600",
            stat.st_mode & 0o7777
        ));
    }
    if stat.st_nlink != 1 {
        return Err(format!("has {} hard links", stat.st_nlink));
    }
    Ok(())
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
            // A live socket of another type (datagram, seqpacket) answers this way.
            _ if e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) => {
                Ok(Probe::Live)
            }
            // Another user's socket closed to us: the kernel still knows whether anyone is
            // listening on it.
            io::ErrorKind::PermissionDenied if listed_as_serving(path) => Ok(Probe::Live),
            _ => Err(ListenError::io(path, "probing the existing socket", e)),
        },
    }
}

/// Whether the kernel lists a socket bound at `path` that serves: a listening stream or
/// seqpacket socket, or a datagram socket (`/proc/net/unix`, readable by everyone, lists every
/// Unix socket of this network namespace with the path it was bound to). Used only when
/// connecting is not allowed, to tell a live server from a stale file.
#[cfg(target_os = "linux")]
fn listed_as_serving(path: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let wanted = same_path_forms(path);
    table
        .lines()
        .skip(1)
        .filter_map(parse_proc_net_unix_line)
        .any(|entry| {
            entry.serving
                && same_path_forms(Path::new(entry.path))
                    .iter()
                    .any(|p| wanted.contains(p))
        })
}

#[cfg(not(target_os = "linux"))]
fn listed_as_serving(_path: &Path) -> bool {
    false
}

/// The ways a path can be spelled that name the same file: as given, made absolute, and with
/// its directory resolved (the form a server bound it with may be any of these).
fn same_path_forms(path: &Path) -> Vec<PathBuf> {
    let mut forms = vec![path.to_owned()];
    if let Ok(absolute) = std::path::absolute(path) {
        forms.push(absolute);
    }
    if let (Ok(dir), Some(name)) = (fs::canonicalize(parent(path)), path.file_name()) {
        forms.push(dir.join(name));
    }
    forms
}

/// One socket of `/proc/net/unix`.
#[derive(Debug, PartialEq)]
struct UnixEntry<'a> {
    /// Listening (stream, seqpacket) or a datagram socket.
    serving: bool,
    /// The address it is bound to (`@name` for an abstract one).
    path: &'a str,
}

/// Parses `Num RefCount Protocol Flags Type St Inode Path`; `None` for an unbound socket.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_net_unix_line(line: &str) -> Option<UnixEntry<'_>> {
    /// `__SO_ACCEPTCON`: the socket listens.
    const LISTENING: u32 = 0x0001_0000;
    const DATAGRAM: u16 = 2;
    let mut rest = line;
    let mut fields = Vec::with_capacity(7);
    for _ in 0..7 {
        let (field, tail) = rest.trim_start().split_once(' ')?;
        fields.push(field);
        rest = tail;
    }
    // The path follows the inode after one space; it may itself contain spaces.
    let path = rest;
    if path.is_empty() {
        return None;
    }
    let flags = u32::from_str_radix(fields[3], 16).ok()?;
    let kind = u16::from_str_radix(fields[4], 16).ok()?;
    Some(UnixEntry {
        serving: flags & LISTENING != 0 || kind == DATAGRAM,
        path,
    })
}

/// What answers at `path`, for a refusal: a live server there is named as one, whatever else
/// stopped this server from taking the path.
async fn live_server_at(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Ok(meta) if meta.file_type().is_socket())
        && matches!(probe(path).await, Ok(Probe::Live))
}

/// Binds a socket of type `kind` at `path` with permission bits `mode` (listening, unless it
/// is a datagram socket), handling every case of the socket file's lifecycle. The socket is
/// non-blocking.
pub(crate) async fn bind(
    path: &Path,
    mode: u32,
    kind: SocketType,
) -> Result<(OwnedFd, SocketFile), ListenError> {
    let len = path.as_os_str().len();
    if len > crate::MAX_SOCKET_PATH {
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
        _ => creating(path, "binding", e),
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

    let fd = new_socket(kind)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    listen(&fd, kind)?;
    Ok(fd)
}

/// A non-blocking, close-on-exec Unix socket of type `kind`.
pub(crate) fn new_socket(kind: SocketType) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        kind.raw(),
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    if kind == SocketType::Datagram {
        // Every datagram must carry its sender's credentials (`--allow-uid`, the reply
        // checks), and the kernel attaches them only if this is set when it is sent: set
        // before `bind`, so no datagram sent once the name exists comes without them.
        rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    }
    Ok(fd)
}

/// Listens, unless the socket is a datagram socket (which has no connections).
pub(crate) fn listen(fd: &OwnedFd, kind: SocketType) -> io::Result<()> {
    if kind != SocketType::Datagram {
        // As std does: on Linux a negative backlog means the system maximum (somaxconn).
        rustix::net::listen(fd, if cfg!(target_os = "linux") { -1 } else { 128 })?;
    }
    Ok(())
}

/// The socket's directory must not let anyone else rename or remove our names in it: then
/// what the server checks (`lstat`) is what it removes (`unlink`), and what it binds is what it
/// records. That holds in a directory owned by this user or by root that others cannot write,
/// or can write only under the sticky bit (`/tmp`: only an entry's owner may rename or remove
/// it). A directory owned by someone else, or writable by others without the sticky bit, is
/// refused before anything is created in it.
fn check_parent(path: &Path) -> Result<(), ListenError> {
    let dir = parent(path);
    // A missing directory is reported by the steps that follow, naming the socket.
    let Ok(meta) = fs::metadata(dir) else {
        return Ok(());
    };
    let euid = rustix::process::geteuid().as_raw();
    let unsafe_parent = |why: String| ListenError::UnsafeParent {
        dir: dir.to_owned(),
        why,
    };
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(unsafe_parent(format!(
            "is owned by uid {}, who may rename anything in it",
            meta.uid()
        )));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        return Err(unsafe_parent(format!(
            "has mode {:04o}: writable by {} without the sticky bit",
            meta.mode() & 0o7777,
            if meta.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            }
        )));
    }
    Ok(())
}

/// Creates the default socket's directory (`0700`) if it is missing and checks that it is
/// private: a real directory (not a link), owned by this uid, no access for group or others.
pub(crate) fn prepare_private_dir(dir: &Path) -> Result<(), ListenError> {
    match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700)) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "created the socket directory"),
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(ListenError::io(
                dir,
                "creating the socket directory",
                e.into(),
            ));
        }
    }
    let unsafe_dir = |why: String| ListenError::UnsafeDirectory {
        dir: dir.to_owned(),
        why,
    };
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| ListenError::io(dir, "inspecting the socket directory", e))?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link".to_owned()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".to_owned()));
    }
    if meta.uid() != euid {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by uid {euid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {:04o}, not 0700",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_unix_lines_give_the_bound_path_and_whether_it_serves() {
        let listening = "0000000000000000: 00000002 00000000 00010000 0001 01 23456 /tmp/a b.sock";
        assert_eq!(
            parse_proc_net_unix_line(listening),
            Some(UnixEntry {
                serving: true,
                path: "/tmp/a b.sock"
            })
        );
        let datagram = "0000000000000000: 00000002 00000000 00000000 0002 01    77 /tmp/dg.sock";
        assert_eq!(
            parse_proc_net_unix_line(datagram).map(|e| (e.serving, e.path)),
            Some((true, "/tmp/dg.sock"))
        );
        let connected = "0000000000000000: 00000003 00000000 00000000 0001 03 12345 /tmp/s.sock";
        assert_eq!(
            parse_proc_net_unix_line(connected).map(|e| e.serving),
            Some(false)
        );
        let unbound = "0000000000000000: 00000003 00000000 00000000 0001 03 12345";
        assert_eq!(parse_proc_net_unix_line(unbound), None);
        assert_eq!(parse_proc_net_unix_line("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listening_socket_is_listed_and_a_closed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listed_as_serving(&path));
        drop(listener);
        assert!(!listed_as_serving(&path));
    }
}
