//! Opening a recording's files: created or truncated, as `>` in a shell would. A FIFO that no
//! process reads yet is waited for, as `cat > FIFO` waits, but by polling rather than in a
//! blocking `open`, so a signal still ends the wait (the caller races it against the
//! shutdown). And a file is never given to two formats.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::io::Errno;

/// How often a FIFO nobody reads is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// A new file's mode: what crossed the socket (tokens, passwords) is in it, and the server
/// runs with its umask cleared (for the socket's mode), so the mode is set here, explicitly.
/// A file that exists keeps its own, as with `>` in a shell.
const MODE: u32 = 0o600;

/// Creates or truncates `path` for writing; waits while it is a FIFO without a reader.
pub(super) async fn create(path: &Path) -> io::Result<File> {
    let mut said = false;
    loop {
        // Non-blocking: on a FIFO without a reader the open fails (ENXIO) instead of
        // blocking the thread. Elsewhere the flag changes nothing, and it is cleared below.
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(MODE)
            .custom_flags(OFlags::NONBLOCK.bits() as i32)
            .open(path);
        match opened {
            Ok(file) => {
                // The writer thread blocks on a full pipe rather than spin.
                rustix::fs::fcntl_setfl(&file, OFlags::empty())?;
                return Ok(file);
            }
            Err(e) if e.raw_os_error() == Some(Errno::NXIO.raw_os_error()) && is_fifo(path) => {
                if !said {
                    tracing::info!(
                        "{}: a FIFO nobody reads yet: waiting for a reader (e.g. `jq . {}`)",
                        path.display(),
                        path.display()
                    );
                    said = true;
                }
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `path` names a FIFO (ENXIO from `open` also means a socket file, or a device with
/// no device behind it: those are errors, not something to wait for).
fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// Which file `metadata` describes, as two flags could both name it: its device and inode,
/// for a regular file or a FIFO (`/dev/null` and other devices take any number of writers).
fn identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    let kind = metadata.file_type();
    (kind.is_file() || kind.is_fifo()).then(|| (metadata.dev(), metadata.ino()))
}

/// Which file `open` is (see [`identity`]).
pub(super) fn identity_of(open: &File) -> Option<(u64, u64)> {
    open.metadata().ok().as_ref().and_then(identity)
}

/// Whether `path` names the file of `identity` (the same path, a symlink to it, a hard link).
pub(super) fn names(path: &Path, of: Option<(u64, u64)>) -> bool {
    let named = std::fs::metadata(path).ok().as_ref().and_then(identity);
    named.is_some() && named == of
}

/// Whether two paths that both exist name one file (see [`identity`]).
pub(super) fn same(a: &Path, b: &Path) -> bool {
    let a = std::fs::metadata(a).ok().as_ref().and_then(identity);
    a.is_some() && names(b, a)
}
