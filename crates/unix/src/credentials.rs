//! Who is at the other end: the credentials the kernel reports for a connection's peer
//! (`SO_PEERCRED`, [`of_peer`]) and with each message on a socket with `SO_PASSCRED`
//! (`SCM_CREDENTIALS`, taken by [`crate::passing::recv`] when asked).
//!
//! The kernel gives the pid as the reader's pid namespace sees it, and **0 when it cannot**:
//! a server in a container (a pid namespace of its own) gets 0 for every peer on the host.
//! The uid and gid are known all the same. So the pid here is a [`PeerPid`] that may be
//! unknown, never a type that cannot hold 0: rustix's `UCred` (its `Pid` is a `NonZeroI32`)
//! reads such credentials with undefined behaviour — in practice `Option<UCred>` read as
//! `None` (a datagram taken as unauthenticated, a seqpacket's empty message as the end) and
//! `socket_peercred` as an error (the peer's uid lost, so `--allow-uid` turned it away).
//! Neither is used anywhere: [`of_peer`] asks through `nix`, whose `ucred` keeps a plain
//! `pid_t`, and the messages' credentials are read from the control buffer as the three
//! integers they are.
//!
//! ```
//! use std::os::unix::net::UnixStream;
//!
//! let (a, _b) = UnixStream::pair()?;
//! let peer = udsecho_unix::credentials::of_peer(&a)?;
//! assert_eq!(peer.pid.get(), Some(std::process::id()));
//! assert_eq!(peer.uid, rustix::process::getuid().as_raw());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::os::fd::AsFd;

/// What the kernel says of a peer: its process (if this process can see it) and its user and
/// group, as this process's namespaces name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// The peer's process id, unknown when it is in a pid namespace this process cannot see.
    pub pid: PeerPid,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

/// A peer's pid as the kernel reported it: known, or not visible from here (the kernel says
/// 0). Shown as the number, or as `unknown (another pid namespace)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPid(Option<NonZeroU32>);

impl PeerPid {
    /// From the kernel's `pid_t`: 0 (and anything not positive) is unknown.
    pub fn from_raw(pid: i32) -> PeerPid {
        PeerPid(u32::try_from(pid).ok().and_then(NonZeroU32::new))
    }

    /// The pid, if the peer's process is visible from this pid namespace.
    pub fn get(self) -> Option<u32> {
        self.0.map(NonZeroU32::get)
    }
}

impl fmt::Display for PeerPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("unknown (another pid namespace)"),
        }
    }
}

/// The credentials of the process that connected `socket`'s other end (`SO_PEERCRED`: as it
/// was when it connected).
pub fn of_peer(socket: &impl AsFd) -> std::io::Result<Credentials> {
    let creds = nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(Credentials {
        pid: PeerPid::from_raw(creds.pid()),
        uid: creds.uid(),
        gid: creds.gid(),
    })
}

/// `struct ucred` as the kernel writes it in an `SCM_CREDENTIALS` message (`pid_t`, `uid_t`,
/// `gid_t`, native byte order), or `None` if `data` is too short to be one.
pub(crate) fn from_message(data: &[u8]) -> Option<Credentials> {
    let field = |i: usize| -> Option<[u8; 4]> { data.get(i * 4..i * 4 + 4)?.try_into().ok() };
    Some(Credentials {
        pid: PeerPid::from_raw(i32::from_ne_bytes(field(0)?)),
        uid: u32::from_ne_bytes(field(1)?),
        gid: u32::from_ne_bytes(field(2)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_0_is_unknown_and_says_why() {
        let pid = PeerPid::from_raw(0);
        assert_eq!(pid.get(), None);
        assert_eq!(pid.to_string(), "unknown (another pid namespace)");
        assert_eq!(PeerPid::from_raw(-1).get(), None);
        assert_eq!(PeerPid::from_raw(4242).to_string(), "4242");
    }

    #[test]
    fn a_message_of_pid_0_is_read_as_its_uid_and_gid_with_no_pid() {
        let mut data = Vec::new();
        for n in [0u32, 1000, 100] {
            data.extend_from_slice(&n.to_ne_bytes());
        }
        let creds = from_message(&data).unwrap();
        assert_eq!((creds.pid.get(), creds.uid, creds.gid), (None, 1000, 100));
        assert_eq!(from_message(&data[..11]), None);
    }
}
