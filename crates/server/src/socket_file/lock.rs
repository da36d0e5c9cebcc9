//! The path lock (step 1 of the socket file's lifecycle): an exclusive `flock` on
//! `PATH.lock`, so that probing, unlinking a stale socket and binding happen under one owner.
//! The lock file is created without ever following a link, and an existing one is used only
//! if it has the shape a crashed server of this user leaves.

use std::fs::{self, File, TryLockError};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::Created;
use crate::listen_error::ListenError;

/// An exclusive `flock` on `PATH.lock`, held for the server's life.
#[derive(Debug)]
pub(super) struct PathLock {
    /// Holds the lock; closing it releases it.
    _file: File,
    /// The lock file as this server locked it, removed at the end if the path still holds that
    /// inode: one it created, or one a crashed server of this user left (see
    /// [`check_lock_file`]).
    created: Option<Created>,
}

impl PathLock {
    /// Takes the lock for `socket`, or says why not.
    pub(super) fn acquire(socket: &Path) -> Result<PathLock, ListenError> {
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
    pub(super) fn release(&mut self) {
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
        Err(e) => {
            return Err(ListenError::creating(
                socket,
                "creating the lock file",
                e.into(),
            ));
        }
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
