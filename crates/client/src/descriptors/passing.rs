//! The descriptors every message carries ([`Passing`]): opened or taken once at startup, in
//! the order `--fd` gave them, and attached to a message with [`send`].

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::net::SendFlags;

use super::{FdError, FdSpec, MAX_FDS};

/// One descriptor to pass, with the `--fd` value that named it.
#[derive(Debug)]
struct Passed {
    fd: OwnedFd,
    spec: FdSpec,
}

/// The descriptors every message carries, in the order `--fd` gave them; cheap to clone.
/// Empty when no `--fd` was given: then messages carry none and reads make no room for any.
#[derive(Debug, Clone, Default)]
pub struct Passing(Arc<[Passed]>);

impl Passing {
    /// None: messages go out as plain bytes.
    pub fn none() -> Passing {
        Passing::default()
    }

    /// Opens each path read-only (close-on-exec) and takes a descriptor of our own on each
    /// inherited one (the same open file description: what the kernel passes is the
    /// description, so sending ours sends the user's). Inherited numbers are taken first, so
    /// that nothing opened here can land on a number the user meant and make it look open.
    pub fn open(specs: &[FdSpec]) -> Result<Passing, FdError> {
        if specs.len() > MAX_FDS {
            return Err(FdError::TooMany(specs.len()));
        }
        let mut taken: Vec<Option<OwnedFd>> = specs.iter().map(|_| None).collect();
        if specs.iter().any(|s| matches!(s, FdSpec::Inherited(_))) {
            take_inherited(specs, &mut taken)?;
        }
        let mut passed = Vec::with_capacity(specs.len());
        for (spec, fd) in specs.iter().zip(taken) {
            let fd = match (spec, fd) {
                (_, Some(fd)) => fd,
                (FdSpec::Path(path), None) => {
                    open_read_only(path).map_err(|source| FdError::Unusable {
                        spec: spec.clone(),
                        source,
                    })?
                }
                (FdSpec::Inherited(n), None) => return Err(FdError::NotOpen(*n)),
            };
            passed.push(Passed {
                fd,
                spec: spec.clone(),
            });
        }
        Ok(Passing(passed.into()))
    }

    /// How many each message carries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether messages carry none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The descriptors, to attach to a message.
    pub(crate) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.0.iter().map(|p| p.fd.as_fd()).collect()
    }

    /// The `i`-th: its descriptor and how `--fd` named it.
    pub(super) fn get(&self, i: usize) -> (BorrowedFd<'_>, &FdSpec) {
        let passed = &self.0[i];
        (passed.fd.as_fd(), &passed.spec)
    }
}

/// Takes our own descriptor on each inherited number, through a pidfd of this process
/// (`pidfd_getfd`): the kernel checks the number, so no `unsafe` conversion of a raw number
/// is needed. A number that is one of the descriptors made here (the pidfd, an earlier copy)
/// was free before: it is not open.
fn take_inherited(specs: &[FdSpec], taken: &mut [Option<OwnedFd>]) -> Result<(), FdError> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let first = specs.iter().find_map(|s| match s {
        FdSpec::Inherited(n) => Some(*n),
        FdSpec::Path(_) => None,
    });
    let pidfd = pidfd_open(getpid(), PidfdFlags::empty()).map_err(|e| FdError::Unusable {
        spec: FdSpec::Inherited(first.unwrap_or_default()),
        source: e.into(),
    })?;
    let mut ours = vec![pidfd.as_raw_fd()];
    for (spec, slot) in specs.iter().zip(taken.iter_mut()) {
        let FdSpec::Inherited(n) = *spec else {
            continue;
        };
        if ours.contains(&n) {
            return Err(FdError::NotOpen(n));
        }
        match pidfd_getfd(&pidfd, n, PidfdGetfdFlags::empty()) {
            Ok(fd) => {
                ours.push(fd.as_raw_fd());
                *slot = Some(fd);
            }
            Err(rustix::io::Errno::BADF) => return Err(FdError::NotOpen(n)),
            Err(e) => {
                return Err(FdError::Unusable {
                    spec: spec.clone(),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

/// `sendmsg` of `bytes` with `fds` attached (none: a plain `send`); how many bytes went.
pub(crate) fn send(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<usize> {
    udsecho_unix::passing::send(
        socket,
        &[IoSlice::new(bytes)],
        fds,
        SendFlags::NOSIGNAL,
        None,
    )
}

/// Opens `path` read-only, close-on-exec, without waiting: a FIFO's `open` would block until a
/// writer came (before any `--timeout` applies), so it is opened non-blocking and the flag
/// cleared on what is passed.
fn open_read_only(path: &std::path::Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use udsecho_unix::same_file::same_open_file;

    #[test]
    fn a_number_that_is_not_open_says_so() {
        let err = Passing::open(&[FdSpec::Inherited(1_000_000)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--fd 1000000: descriptor 1000000 is not open"
        );
    }

    #[test]
    fn an_inherited_descriptor_is_taken_as_the_same_open_file() {
        let file = tempfile::tempfile().unwrap();
        let passing = Passing::open(&[FdSpec::Inherited(file.as_raw_fd())]).unwrap();
        assert!(same_open_file(&file, passing.get(0).0));
        let other = tempfile::tempfile().unwrap();
        assert!(!same_open_file(&other, passing.get(0).0));
    }

    /// Review F4: a FIFO's `open` waited for a writer, forever and before any `--timeout`.
    #[test]
    fn a_fifo_opens_at_once_and_is_passed_blocking() {
        use rustix::fs::{Mode, OFlags};
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let passing = Passing::open(&[FdSpec::Path(fifo)]).unwrap();
        let flags = rustix::fs::fcntl_getfl(passing.get(0).0).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK), "{flags:?}");
    }

    #[test]
    fn more_than_scm_max_fd_is_refused() {
        let specs = vec![FdSpec::Path("/dev/null".into()); MAX_FDS + 1];
        assert!(matches!(Passing::open(&specs), Err(FdError::TooMany(254))));
    }
}
