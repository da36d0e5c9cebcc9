//! Where the default socket lives: a directory only this user can use, like tmux's
//! `/tmp/tmux-UID/`, so nobody else can plant names next to the socket or squat its path. The
//! server and the client must compute the same path: both call [`default_socket_dir`], and
//! both refuse the directory when [`private_dir_problem`] finds one (the server after
//! creating it `0700`; the client before it connects, so nobody can listen where it looks).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file name of the default socket inside [`default_socket_dir`].
pub const DEFAULT_SOCKET_NAME: &str = "echo.sock";

/// The directory of the default socket.
///
/// `$XDG_RUNTIME_DIR/udsecho` when that variable names a directory of this user's with no
/// access for others (as the XDG spec requires; an inherited one is ignored); otherwise
/// `/run/udsecho` for root and `$TMPDIR/udsecho-UID` (`/tmp/udsecho-UID`) for everyone else.
pub fn default_socket_dir() -> PathBuf {
    dir_for(
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        rustix::process::geteuid(),
        std::env::temp_dir(),
    )
}

/// The default socket: [`DEFAULT_SOCKET_NAME`] in [`default_socket_dir`].
pub fn default_socket_path() -> PathBuf {
    default_socket_dir().join(DEFAULT_SOCKET_NAME)
}

/// [`default_socket_dir`] for this `XDG_RUNTIME_DIR`, effective uid and temporary directory.
fn dir_for(xdg: Option<PathBuf>, euid: rustix::process::Uid, tmp: PathBuf) -> PathBuf {
    match xdg {
        Some(dir) if is_own_private_dir(&dir, euid.as_raw()) => dir.join("udsecho"),
        _ if euid.is_root() => PathBuf::from("/run/udsecho"),
        _ => tmp.join(format!("udsecho-{}", euid.as_raw())),
    }
}

/// `XDG_RUNTIME_DIR` is trusted only if it is what the XDG spec promises: an absolute path to
/// a real directory owned by this user with no access for others. An inherited variable (`su`
/// without `-` keeps the caller's) must not send root's socket into a directory its owner
/// controls.
fn is_own_private_dir(dir: &Path, euid: u32) -> bool {
    dir.is_absolute()
        && std::fs::symlink_metadata(dir).is_ok_and(|meta| problem(&meta, euid).is_none())
}

/// What makes a directory unfit to hold the default socket, from its `lstat` (its
/// [`std::fs::symlink_metadata`]): a symbolic link, not a directory, owned by another uid than
/// this process's effective one, or open to group or others. `None`: a private directory.
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
/// let meta = std::fs::symlink_metadata(dir.path())?;
/// assert_eq!(udsecho_unix::socket_dir::private_dir_problem(&meta), None);
/// std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
/// let meta = std::fs::symlink_metadata(dir.path())?;
/// assert_eq!(
///     udsecho_unix::socket_dir::private_dir_problem(&meta).as_deref(),
///     Some("has mode 0755, not 0700")
/// );
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn private_dir_problem(meta: &Metadata) -> Option<String> {
    problem(meta, rustix::process::geteuid().as_raw())
}

fn problem(meta: &Metadata, euid: u32) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::Uid;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn owner(dir: &Path) -> Uid {
        Uid::from_raw(std::fs::metadata(dir).unwrap().uid())
    }

    #[test]
    fn a_private_runtime_dir_of_ours_holds_the_socket_directory() {
        let xdg = private_dir();
        let me = owner(xdg.path());
        let got = dir_for(Some(xdg.path().to_owned()), me, "/tmp".into());
        assert_eq!(got, xdg.path().join("udsecho"));
    }

    #[test]
    fn a_runtime_dir_that_is_not_private_or_ours_or_absolute_is_ignored() {
        let xdg = private_dir();
        let me = owner(xdg.path());
        let fallback = |euid: Uid| {
            if euid.is_root() {
                PathBuf::from("/run/udsecho")
            } else {
                PathBuf::from(format!("/tmp/udsecho-{}", euid.as_raw()))
            }
        };
        // Someone else's.
        let stranger = Uid::from_raw(me.as_raw().wrapping_add(4242));
        let got = dir_for(Some(xdg.path().to_owned()), stranger, "/tmp".into());
        assert_eq!(got, fallback(stranger));
        // Relative.
        assert_eq!(dir_for(Some("run".into()), me, "/tmp".into()), fallback(me));
        // Open to others.
        std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let got = dir_for(Some(xdg.path().to_owned()), me, "/tmp".into());
        assert_eq!(got, fallback(me));
        // Unset.
        assert_eq!(dir_for(None, me, "/tmp".into()), fallback(me));
    }

    #[test]
    fn root_uses_run_and_others_a_directory_of_their_uid_in_tmp() {
        assert_eq!(
            dir_for(None, Uid::ROOT, "/tmp".into()),
            PathBuf::from("/run/udsecho")
        );
        assert_eq!(
            dir_for(None, Uid::from_raw(1000), "/var/tmp".into()),
            PathBuf::from("/var/tmp/udsecho-1000")
        );
    }

    #[test]
    fn a_link_a_file_or_another_owner_is_named() {
        let dir = private_dir();
        let me = owner(dir.path()).as_raw();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let lstat = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(
            problem(&lstat(&link), me).as_deref(),
            Some("is a symbolic link")
        );
        assert_eq!(
            problem(&lstat(&file), me).as_deref(),
            Some("is not a directory")
        );
        assert_eq!(
            problem(&lstat(dir.path()), me + 1),
            Some(format!("is owned by uid {me}, not by uid {}", me + 1))
        );
        assert_eq!(problem(&lstat(dir.path()), me), None);
    }
}
