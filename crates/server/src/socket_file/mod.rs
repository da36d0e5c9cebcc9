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
//!
//! By concern: `lock` (the path lock, step 1), `probe` (what answers at a path: a connect, or
//! `/proc/net/unix` when connecting is not allowed), `bind` (steps 2 and 3, under the lock),
//! `directory` (the socket's directory, and the default one). Here: what the server created
//! and removes at the end.

mod bind;
mod directory;
mod lock;
mod probe;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

pub(crate) use self::bind::{bind, serving_socket};
pub(crate) use self::directory::prepare_private_dir;
use self::lock::PathLock;

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
