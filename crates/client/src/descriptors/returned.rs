//! What comes back: the descriptors a read brought ([`Returned`], with whether the kernel had
//! to close some), the read that brings them ([`recv`]), and the [`Inbox`] where a socket's
//! reads leave them for whoever checks or closes them.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use rustix::net::RecvFlags;

use super::MAX_FDS;
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
