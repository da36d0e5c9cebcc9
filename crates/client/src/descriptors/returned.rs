//! What comes back: the descriptors a read brought ([`Returned`], with whether the kernel had
//! to close some), the read that brings them ([`recv`]), and the [`Inbox`] where a socket's
//! reads leave them: kept for whoever checks or closes them, checked at once, or closed at
//! once.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use rustix::net::RecvFlags;

use super::{FdCheck, MAX_FDS, close_aside};
use crate::error::ErrorKind;

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
/// the kernel closes any that come, as a plain `recv` does, and that is no loss to report).
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    room: bool,
) -> rustix::io::Result<Got> {
    let got =
        udsecho_unix::passing::recv(socket, buf, flags, if room { MAX_FDS } else { 0 }, false)?;
    Ok(Got {
        len: got.len,
        returned: Returned {
            fds: got.fds,
            truncated: room && got.truncated,
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
    /// For a pipe, which closes what comes back (aside: they may be the last references to
    /// something whose close waits): fine unless some were lost on the way in.
    pub(crate) fn close(self) -> Result<(), ErrorKind> {
        close_aside(self.fds);
        if self.truncated {
            Err(ErrorKind::DescriptorLimit)
        } else {
            Ok(())
        }
    }
}

/// Where a socket's reads leave the descriptors they bring (reads, checks and closes happen
/// in different places: a codec, a select loop).
#[derive(Debug, Default)]
pub(crate) struct Inbox(Mutex<State>);

/// What an [`Inbox`] holds: what came and is kept, and what it does with what comes.
#[derive(Debug, Default)]
struct State {
    kept: Returned,
    mode: Mode,
}

/// What an [`Inbox`] does with what comes back.
#[derive(Debug, Default)]
enum Mode {
    /// Keeps it until taken (one message a read: seqpacket and datagram).
    #[default]
    Keep,
    /// Closes it as it comes, remembering only whether the kernel lost some (a pipe).
    Close,
    /// Checks it as it comes, against the messages begun so far (`send`): a stream read
    /// brings a frame's descriptors before the frame is whole, so waiting for the frame
    /// would hold whatever a server sends meanwhile.
    Check {
        check: FdCheck,
        /// Messages begun: the first bytes of each carried the descriptors.
        begun: u64,
        /// The first mismatch, until taken.
        failed: Option<ErrorKind>,
        /// A mismatch was found: what comes after is closed unlooked at.
        stopped: bool,
    },
}

impl Inbox {
    /// Closes what comes as it comes.
    pub(crate) fn closing() -> Inbox {
        Inbox(Mutex::new(State {
            kept: Returned::default(),
            mode: Mode::Close,
        }))
    }

    /// Checks what comes as it comes.
    pub(crate) fn checking(check: FdCheck) -> Inbox {
        Inbox(Mutex::new(State {
            kept: Returned::default(),
            mode: Mode::Check {
                check,
                begun: 0,
                failed: None,
                stopped: false,
            },
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a read brought; `false` once a check has found a mismatch.
    pub(crate) fn put(&self, returned: Returned) -> bool {
        let mut state = self.lock();
        let State { kept, mode } = &mut *state;
        match mode {
            Mode::Keep => {
                kept.fds.extend(returned.fds);
                kept.truncated |= returned.truncated;
                true
            }
            Mode::Close => {
                kept.truncated |= returned.truncated;
                close_aside(returned.fds);
                true
            }
            Mode::Check { stopped: true, .. } => {
                close_aside(returned.fds);
                false
            }
            Mode::Check {
                check,
                begun,
                failed,
                stopped,
            } => {
                if returned.fds.is_empty() && !returned.truncated {
                    return true;
                }
                match check.returned(returned, *begun) {
                    Ok(()) => true,
                    Err(e) => {
                        *failed = Some(e);
                        *stopped = true;
                        false
                    }
                }
            }
        }
    }

    /// Everything kept since the last take (with [`Inbox::closing`], only whether some were
    /// lost; with [`Inbox::checking`], nothing).
    pub(crate) fn take(&self) -> Returned {
        std::mem::take(&mut self.lock().kept)
    }

    /// A message begins: its first bytes carry the descriptors.
    pub(crate) fn begin_message(&self) {
        if let Mode::Check { begun, .. } = &mut self.lock().mode {
            *begun += 1;
        }
    }

    /// The mismatch a check found, if it did.
    pub(crate) fn failure(&self) -> Option<ErrorKind> {
        match &mut self.lock().mode {
            Mode::Check { failed, .. } => failed.take(),
            _ => None,
        }
    }

    /// `echoed` messages have come back whole: each must have brought its descriptors.
    pub(crate) fn echoed(&self, echoed: u64) -> Result<(), ErrorKind> {
        match &self.lock().mode {
            Mode::Check { check, .. } => check.echoed(echoed),
            _ => Ok(()),
        }
    }
}
