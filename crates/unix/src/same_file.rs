//! Whether two descriptors are the same open file description: what a passed descriptor is,
//! as opposed to another open of the same file. The client's `--fd` check and the tests of
//! descriptor passing ask it of what comes back.

use std::os::fd::AsFd;

/// Are `a` and `b` the same open file description (not just the same file)?
///
/// The status flags belong to the description: both must show the same flags, and toggling
/// `O_NONBLOCK` through `a` must show through `b`; then the flag is put back, and a failure to
/// put it back is a `false`. (Another description of the same file with the opposite flag
/// would pass the toggle alone.) The toggle is seen, for that instant, by every process
/// sharing the description. An `O_PATH` descriptor takes no status flags: for those the same
/// file with the same flags is all that can be told.
///
/// ```
/// use std::os::fd::AsFd;
/// use udsecho_unix::same_file::same_open_file;
///
/// let file = tempfile::NamedTempFile::new()?;
/// let dup = file.as_file().as_fd().try_clone_to_owned()?;
/// assert!(same_open_file(&dup, file.as_file()));
/// let reopened = std::fs::File::open(file.path())?;
/// assert!(!same_open_file(&reopened, file.as_file()));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn same_open_file(a: impl AsFd, b: impl AsFd) -> bool {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl, fstat};
    let (a, b) = (a.as_fd(), b.as_fd());
    let (Ok(sa), Ok(sb)) = (fstat(a), fstat(b)) else {
        return false;
    };
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino) {
        return false;
    }
    let (Ok(before), Ok(theirs)) = (fcntl_getfl(a), fcntl_getfl(b)) else {
        return false;
    };
    if before != theirs {
        return false;
    }
    if before.contains(OFlags::PATH) {
        return true;
    }
    if fcntl_setfl(a, before ^ OFlags::NONBLOCK).is_err() {
        return false;
    }
    let seen = fcntl_getfl(b);
    let restored = fcntl_setfl(a, before);
    seen == Ok(before ^ OFlags::NONBLOCK) && restored.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Review F1: another open file of the same path whose `O_NONBLOCK` is the opposite of
    /// ours passed the toggle alone (a server that reopens the path non-blocking).
    #[test]
    fn another_open_file_of_the_same_path_with_other_flags_is_not_the_same() {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let ours = std::fs::File::open(&path).unwrap();
        let theirs = std::fs::File::open(&path).unwrap();
        let flags = fcntl_getfl(&theirs).unwrap();
        fcntl_setfl(&theirs, flags | OFlags::NONBLOCK).unwrap();
        assert!(!same_open_file(&theirs, &ours));
        assert!(!same_open_file(&ours, &theirs));
        let dup = ours.as_fd().try_clone_to_owned().unwrap();
        assert!(same_open_file(&dup, &ours));
        assert_eq!(fcntl_getfl(&ours).unwrap(), flags, "the flags are put back");
    }

    /// Review F2: an `O_PATH` descriptor takes no status flags; the same one coming back was
    /// called a different file.
    #[test]
    fn an_o_path_descriptor_that_comes_back_is_the_same() {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open("/etc", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let back = fd.try_clone().unwrap();
        assert!(same_open_file(&back, &fd));
    }

    #[test]
    fn another_file_is_not_the_same() {
        let (a, b) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        assert!(!same_open_file(&a, &b));
    }

    #[test]
    fn same_open_file_restores_the_flags() {
        let (a, _b) = UnixStream::pair().unwrap();
        let before = rustix::fs::fcntl_getfl(&a).unwrap();
        let dup = a.try_clone().unwrap();
        assert!(same_open_file(&a, &dup));
        assert_eq!(rustix::fs::fcntl_getfl(&a).unwrap(), before);
    }
}
