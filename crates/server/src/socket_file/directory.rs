//! The socket's directory: who else may rename or remove names in it (checked before
//! anything is created there), and the default socket's directory, created private.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::Mode;

use crate::listen_error::{ListenError, parent};

/// The socket's directory must not let anyone else rename or remove our names in it: then
/// what the server checks (`lstat`) is what it removes (`unlink`), and what it binds is what it
/// records. That holds in a directory owned by this user or by root that others cannot write,
/// or can write only under the sticky bit (`/tmp`: only an entry's owner may rename or remove
/// it). A directory owned by someone else, or writable by others without the sticky bit, is
/// refused before anything is created in it.
pub(super) fn check_parent(path: &Path) -> Result<(), ListenError> {
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
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| ListenError::io(dir, "inspecting the socket directory", e))?;
    match udsecho_unix::socket_dir::private_dir_problem(&meta) {
        None => Ok(()),
        Some(why) => Err(ListenError::UnsafeDirectory {
            dir: dir.to_owned(),
            why,
        }),
    }
}
