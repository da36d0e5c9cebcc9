//! Descriptors passed with each message (`--fd`, `SCM_RIGHTS`): the set the command line names
//! ([`Passing`], opened or taken once at startup), `sendmsg`/`recvmsg` with them, and `send`'s
//! check that what comes back is what went out ([`FdCheck`]): the same open file descriptions,
//! in the order sent, as many as sent.
//!
//! What comes back is compared as a sequence, not by byte position: a stream `recvmsg` stops
//! after the chunk that carries descriptors, and the server returns descriptors on the first
//! bytes of the echo of the read that brought them, which may hold the end of the message
//! before. Both rules keep the order, so the n-th descriptor back must be the n-th sent, and
//! once a message's echo is whole, its descriptors must have come.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::ErrorKind;

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`): the most `--fd` takes.
pub const MAX_FDS: usize = 253;

/// What one `--fd` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdSpec {
    /// A descriptor this process inherited (`--fd 5` after `exec 5<file`).
    Inherited(RawFd),
    /// A file to open read-only.
    Path(PathBuf),
}

impl FdSpec {
    /// All digits is a descriptor number (a file named `3` is `./3`); anything else a path.
    pub fn parse(s: &str) -> Result<FdSpec, String> {
        if s.is_empty() {
            Err("the path must not be empty".to_owned())
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<RawFd>()
                .map(FdSpec::Inherited)
                .map_err(|_| format!("{s} is not a descriptor number (write ./{s} for a file)"))
        } else {
            Ok(FdSpec::Path(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for FdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdSpec::Inherited(n) => write!(f, "{n}"),
            // Escaped: a path's control characters must not start a line or drive a
            // terminal in an error message.
            FdSpec::Path(path) => {
                for c in path.to_string_lossy().chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A `--fd` that cannot be passed: the flag as given, and why.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// `--fd N` where this process has no descriptor N.
    #[error("--fd {0}: descriptor {0} is not open")]
    NotOpen(RawFd),
    /// Opening the path, or taking the inherited descriptor, failed (the cause is the source).
    #[error("--fd {spec}{}", if matches!(.spec, FdSpec::Inherited(_)) {
        ": cannot take the inherited descriptor (pidfd_getfd, Linux 5.6 and later)"
    } else { "" })]
    Unusable {
        /// The flag's value.
        spec: FdSpec,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// More than one message carries.
    #[error(
        "--fd is given {0} times; one message carries at most {MAX_FDS} descriptors (SCM_MAX_FD)"
    )]
    TooMany(usize),
}

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
    fn get(&self, i: usize) -> (BorrowedFd<'_>, &FdSpec) {
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

/// Room for one message's worth of descriptors, aligned for `cmsghdr` so all of it is usable.
#[repr(C, align(8))]
struct Space([MaybeUninit<u8>; SPACE]);

const SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// `sendmsg` of `bytes` with `fds` attached (none: a plain `send`); how many bytes went.
pub(crate) fn send(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<usize> {
    if fds.is_empty() {
        return rustix::net::send(socket, bytes, SendFlags::NOSIGNAL);
    }
    let mut space = Space([MaybeUninit::uninit(); SPACE]);
    let mut control = SendAncillaryBuffer::new(&mut space.0);
    // `Passing::open` allows at most MAX_FDS, what the buffer holds.
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(rustix::io::Errno::TOOMANYREFS);
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
}

/// What one read brought.
#[derive(Debug, Default)]
pub(crate) struct Got {
    /// Bytes read (with `RecvFlags::TRUNC` on a message socket: the message's real length).
    pub(crate) len: usize,
    /// The descriptors that came with them, and whether the kernel closed some it could not
    /// give us (`MSG_CTRUNC`).
    pub(crate) returned: Returned,
}

/// `recvmsg` into `buf`, with room for one message's worth of descriptors when `room` (else
/// the kernel closes any that come, as a plain `recv` does).
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: bool,
) -> rustix::io::Result<Got> {
    let mut space = Space([MaybeUninit::uninit(); SPACE]);
    let len = if room { SPACE } else { 0 };
    let mut control = RecvAncillaryBuffer::new(&mut space.0[..len]);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        flags | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    Ok(Got {
        len: got.bytes,
        returned: Returned {
            fds,
            truncated: room && got.flags.contains(ReturnFlags::CTRUNC),
        },
    })
}

/// Descriptors that came back, not yet looked at.
#[derive(Debug, Default)]
pub(crate) struct Returned {
    /// In the order they came.
    pub(crate) fds: Vec<OwnedFd>,
    /// The kernel closed some it could not give us (`MSG_CTRUNC`): the client's own limit.
    pub(crate) truncated: bool,
}

impl Returned {
    /// For a pipe, which closes what comes back: fine unless some were lost on the way in.
    pub(crate) fn close(self) -> Result<(), ErrorKind> {
        if self.truncated {
            Err(ErrorKind::DescriptorLimit)
        } else {
            Ok(())
        }
    }
}

/// Where a socket's reads leave the descriptors they bring, for whoever checks or closes them
/// (reads and checks happen in different places: a codec, a select loop).
#[derive(Debug, Default)]
pub(crate) struct Inbox(Mutex<Returned>);

impl Inbox {
    pub(crate) fn put(&self, returned: Returned) {
        if returned.fds.is_empty() && !returned.truncated {
            return;
        }
        let mut inbox = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        inbox.fds.extend(returned.fds);
        inbox.truncated |= returned.truncated;
    }

    /// Everything that came since the last take.
    pub(crate) fn take(&self) -> Returned {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
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

/// `send`'s check that the descriptors coming back are those sent: the n-th back is the same
/// open file description as the n-th sent (`Passing` repeated once per message), no more come
/// back than were sent, and every echoed message has brought its own.
#[derive(Debug)]
pub(crate) struct FdCheck {
    passing: Passing,
    /// How many have come back and matched.
    back: u64,
}

impl FdCheck {
    pub(crate) fn new(passing: Passing) -> FdCheck {
        FdCheck { passing, back: 0 }
    }

    /// Checks what came back with `sent` messages out, then closes it.
    pub(crate) fn returned(&mut self, returned: Returned, sent: u64) -> Result<(), ErrorKind> {
        let per = self.passing.len() as u64;
        let total = self.back + returned.fds.len() as u64;
        // More than were sent is the server's doing, even when they also overflowed our limit.
        if total > sent * per {
            return Err(ErrorKind::DescriptorMismatch {
                index: (self.back / per.max(1) + 1).min(sent.max(1)),
                detail: format!(
                    "{total} descriptor{} came back, more than the {} sent",
                    plural(total),
                    sent * per
                ),
            });
        }
        if returned.truncated {
            return Err(ErrorKind::DescriptorLimit);
        }
        for fd in returned.fds {
            let (ours, spec) = self.passing.get((self.back % per) as usize);
            if !same_open_file(&fd, ours) {
                return Err(ErrorKind::DescriptorMismatch {
                    index: self.back / per + 1,
                    detail: format!(
                        "--fd {spec} came back as a different file (not the open file sent)"
                    ),
                });
            }
            self.back += 1;
        }
        Ok(())
    }

    /// `echoed` messages have come back whole: each must have brought its descriptors.
    pub(crate) fn echoed(&self, echoed: u64) -> Result<(), ErrorKind> {
        let per = self.passing.len() as u64;
        if self.back >= echoed * per {
            return Ok(());
        }
        let (_, spec) = self.passing.get((self.back % per) as usize);
        let index = self.back / per + 1;
        let missing = index * per - self.back;
        Err(ErrorKind::DescriptorMismatch {
            index,
            detail: format!(
                "--fd {spec}{} did not come back with the echo (the server dropped {})",
                if missing > 1 {
                    format!(" and {} more", missing - 1)
                } else {
                    String::new()
                },
                if missing > 1 { "them" } else { "it" }
            ),
        })
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Are `a` and `b` the same open file description (not just the same file)? The status flags
/// belong to the description: both must show the same flags, and toggling `O_NONBLOCK`
/// through one must show through the other; then it is put back. (Another description of the
/// same file with the opposite flag would pass the toggle alone.) The toggle is seen, for that
/// instant, by every process sharing the description. An `O_PATH` descriptor takes no status
/// flags: for those the same file with the same flags is all that can be told.
///
/// The harness has its own copy (`udsecho_harness::descriptors::same_open_file`): the client
/// and the harness never depend on each other (the harness drives the built binaries from
/// outside), and `udsecho-proto`, the one crate they share, holds no Unix code.
pub(crate) fn same_open_file(a: impl AsFd, b: impl AsFd) -> bool {
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

    #[test]
    fn digits_are_a_descriptor_number_and_anything_else_a_path() {
        assert_eq!(FdSpec::parse("5"), Ok(FdSpec::Inherited(5)));
        assert_eq!(FdSpec::parse("./5"), Ok(FdSpec::Path("./5".into())));
        assert_eq!(
            FdSpec::parse("/etc/hosts"),
            Ok(FdSpec::Path("/etc/hosts".into()))
        );
        assert!(FdSpec::parse("99999999999").is_err());
        assert!(FdSpec::parse("").is_err());
    }

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

    /// Review F5: a path's control characters reached stderr raw.
    #[test]
    fn a_path_is_named_with_its_control_characters_escaped() {
        let spec = FdSpec::Path("/tmp/a\nb\u{1b}[2J".into());
        assert_eq!(spec.to_string(), "/tmp/a\\nb\\u{1b}[2J");
    }

    /// Review F6: a server that floods descriptors past our limit was blamed on the limit
    /// (exit 1) instead of being a mismatch (exit 3).
    #[test]
    fn more_than_were_sent_is_a_mismatch_even_when_they_overflowed_our_limit() {
        let file = tempfile::tempfile().unwrap();
        let passing = Passing::open(&[FdSpec::Inherited(file.as_raw_fd())]).unwrap();
        let mut check = FdCheck::new(passing);
        let flood = Returned {
            fds: (0..3)
                .map(|_| file.as_fd().try_clone_to_owned().unwrap())
                .collect(),
            truncated: true,
        };
        let err = check.returned(flood, 1).unwrap_err();
        assert!(matches!(err, ErrorKind::DescriptorMismatch { .. }), "{err}");
    }

    #[test]
    fn more_than_scm_max_fd_is_refused() {
        let specs = vec![FdSpec::Path("/dev/null".into()); MAX_FDS + 1];
        assert!(matches!(Passing::open(&specs), Err(FdError::TooMany(254))));
    }

    #[test]
    fn the_check_wants_the_same_files_in_order_and_all_of_them() {
        let (a, b) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let passing = Passing::open(&[
            FdSpec::Inherited(a.as_raw_fd()),
            FdSpec::Inherited(b.as_raw_fd()),
        ])
        .unwrap();
        let back = |fds: &[&std::fs::File]| Returned {
            fds: fds
                .iter()
                .map(|f| f.as_fd().try_clone_to_owned().unwrap())
                .collect(),
            truncated: false,
        };
        let mut check = FdCheck::new(passing.clone());
        check.returned(back(&[&a, &b]), 1).unwrap();
        check.echoed(1).unwrap();
        let err = check.echoed(2).unwrap_err();
        assert!(err.to_string().contains("message 2"), "{err}");
        assert!(err.to_string().contains("dropped them"), "{err}");

        let mut swapped = FdCheck::new(passing.clone());
        let err = swapped.returned(back(&[&b, &a]), 1).unwrap_err();
        assert!(err.to_string().contains("as a different file"), "{err}");

        let mut extra = FdCheck::new(passing);
        let err = extra.returned(back(&[&a, &b, &a]), 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("3 descriptors came back, more than the 2"),
            "{err}"
        );
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
