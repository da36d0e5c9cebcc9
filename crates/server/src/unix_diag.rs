//! The kernel's socket diagnostics for Unix sockets (`NETLINK_SOCK_DIAG`, Linux 3.3+; the
//! owner's uid, `UNIX_DIAG_UID`, since 5.3): what the datagram server asks to learn who holds
//! an abstract name in its own network namespace (see `datagram/names.rs`). Works unprivileged.
//!
//! Two kinds of question, over one netlink socket ([`Diag`]):
//!
//! - **one socket, by inode** ([`Diag::socket`]): an exact query (`NLM_F_REQUEST` without
//!   `NLM_F_DUMP`), one answer. The kernel finds the socket by walking its namespace's table
//!   of Unix sockets, comparing inode numbers (`unix_lookup_by_ino`): a few nanoseconds a
//!   socket, nothing copied but the one answer;
//! - **every socket in some states** ([`Diag::dump`]): one message per socket, copied out
//!   and parsed here; tens of milliseconds with 20,000 sockets. Kept for what no exact query
//!   can tell (which socket holds a name when no `connect` can reach it).
//!
//! The request and answer layouts are `linux/sock_diag.h` and `linux/unix_diag.h`.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const UNIX_DIAG_MSG_LEN: usize = 16;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_UID: u16 = 7;

/// What to ask of each socket (`udiag_show`).
pub(crate) mod show {
    /// Its address (`UNIX_DIAG_NAME`).
    pub(crate) const NAME: u32 = 0x01;
    /// The inode of the socket it is connected to (`UNIX_DIAG_PEER`).
    pub(crate) const PEER: u32 = 0x04;
    /// The uid that owns it (`UNIX_DIAG_UID`, Linux 5.3+).
    pub(crate) const UID: u32 = 0x40;
}

/// Socket states (`udiag_states`, a bit per `TCP_*` state): a connected datagram socket, as an
/// established stream or seqpacket one, is `TCP_ESTABLISHED`.
pub(crate) const ESTABLISHED: u32 = 1 << 1;

/// `SOCK_DGRAM`, as `udiag_type` says it.
pub(crate) const DATAGRAM: u8 = 2;

/// One Unix socket, as the kernel describes it: what was asked for, if it has it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    /// Its inode number.
    pub(crate) inode: u32,
    /// Its type (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_SEQPACKET` 5).
    pub(crate) kind: u8,
    /// Its address as the kernel holds it: an abstract name starts with a NUL byte.
    pub(crate) name: Option<Vec<u8>>,
    /// The inode of the socket it is connected to.
    pub(crate) peer: Option<u32>,
    /// The uid that owns it.
    pub(crate) uid: Option<u32>,
}

/// A netlink socket to ask the kernel about Unix sockets, reused from one question to the next.
#[derive(Debug)]
pub(crate) struct Diag {
    fd: OwnedFd,
    /// The sequence number of the last request: answers to an earlier one (that timed out)
    /// are skipped.
    seq: u32,
    buf: Vec<u8>,
}

impl Diag {
    /// Opens a sock_diag socket in this process's network namespace.
    pub(crate) fn open() -> io::Result<Diag> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        // The kernel answers while handling the request; the timeout is only a guard.
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(1)),
        )?;
        Ok(Diag {
            fd,
            seq: 0,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// The socket with this inode in this namespace, if there is one (an exact query).
    pub(crate) fn socket(&mut self, inode: u32, show: u32) -> io::Result<Option<Described>> {
        self.request(NLM_F_REQUEST, u32::MAX, inode, show)?;
        let mut found = None;
        match self.answers(|d| found = Some(d)) {
            Ok(()) => Ok(found),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every socket of this namespace in `states`, each given to `each` (a dump).
    pub(crate) fn dump(
        &mut self,
        states: u32,
        show: u32,
        each: impl FnMut(Described),
    ) -> io::Result<()> {
        self.request(NLM_F_REQUEST | NLM_F_DUMP, states, 0, show)?;
        self.answers(each)
    }

    /// Sends one `unix_diag_req`.
    fn request(&mut self, flags: u16, states: u32, inode: u32, show: u32) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut request = Vec::with_capacity(40);
        request.extend_from_slice(&40u32.to_ne_bytes());
        request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        request.extend_from_slice(&flags.to_ne_bytes());
        request.extend_from_slice(&self.seq.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        request.push(1); // AF_UNIX
        request.push(0);
        request.extend_from_slice(&0u16.to_ne_bytes());
        request.extend_from_slice(&states.to_ne_bytes());
        request.extend_from_slice(&inode.to_ne_bytes());
        request.extend_from_slice(&show.to_ne_bytes());
        // No cookie: any socket with that inode.
        request.extend_from_slice(&u32::MAX.to_ne_bytes());
        request.extend_from_slice(&u32::MAX.to_ne_bytes());
        rustix::net::sendto(
            &self.fd,
            &request,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        Ok(())
    }

    /// Reads the answers to the last request: each socket described to `each`, until the end
    /// (a dump's `NLMSG_DONE`, or an exact query's one answer), or the kernel's error.
    fn answers(&mut self, mut each: impl FnMut(Described)) -> io::Result<()> {
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::empty())?;
            if n == 0 {
                return Err(io::Error::other("sock_diag: the answer ended early"));
            }
            if parse(&self.buf[..n], self.seq, &mut each)? {
                return Ok(());
            }
        }
    }
}

/// What one datagram of netlink messages held.
fn parse(mut data: &[u8], seq: u32, each: &mut impl FnMut(Described)) -> io::Result<bool> {
    let malformed = || io::Error::other("sock_diag: a malformed answer");
    let mut ended = false;
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_at(data, 0).ok_or_else(malformed)? as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let flags = u16::from_ne_bytes([data[6], data[7]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(malformed());
        }
        // An answer to an earlier request that gave up waiting: not ours.
        if u32_at(data, 8) == Some(seq) {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = u32_at(data, NLMSG_HDRLEN).ok_or_else(malformed)? as i32;
                    return match errno {
                        0 => Ok(true),
                        e => Err(io::Error::from_raw_os_error(-e)),
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    each(describe(&data[NLMSG_HDRLEN..len]).ok_or_else(malformed)?);
                    // An exact query has one answer, not marked as part of a dump.
                    ended |= flags & 0x2 == 0;
                }
                _ => {}
            }
        }
        data = &data[align(len).min(data.len())..];
    }
    Ok(ended)
}

/// One `unix_diag_msg` and its attributes.
fn describe(body: &[u8]) -> Option<Described> {
    let mut described = Described {
        kind: *body.get(1)?,
        inode: u32_at(body, 4)?,
        ..Described::default()
    };
    let mut attrs = body.get(UNIX_DIAG_MSG_LEN..)?;
    while attrs.len() >= 4 {
        let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let akind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if alen < 4 || alen > attrs.len() {
            return None;
        }
        let payload = &attrs[4..alen];
        match akind {
            UNIX_DIAG_NAME => described.name = Some(payload.to_vec()),
            UNIX_DIAG_PEER => described.peer = u32_at(payload, 0),
            UNIX_DIAG_UID => described.uid = u32_at(payload, 0),
            _ => {}
        }
        attrs = &attrs[align(alen).min(attrs.len())..];
    }
    Some(described)
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    fn inode(socket: impl AsFd) -> u32 {
        u32::try_from(rustix::fs::fstat(socket).unwrap().st_ino).unwrap()
    }

    #[test]
    fn one_socket_is_described_by_its_inode_with_its_name_owner_and_peer() {
        let name = format!("udsecho-diag-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let bound = UnixDatagram::bind_addr(&addr).unwrap();
        let connected = UnixDatagram::unbound().unwrap();
        connected.connect_addr(&addr).unwrap();
        let mut diag = Diag::open().unwrap();

        let ours = diag.socket(inode(&connected), show::PEER).unwrap().unwrap();
        assert_eq!(ours.peer, Some(inode(&bound)));
        let theirs = diag
            .socket(inode(&bound), show::NAME | show::UID)
            .unwrap()
            .unwrap();
        let mut abstract_name = vec![0u8];
        abstract_name.extend_from_slice(name.as_bytes());
        assert_eq!(
            theirs,
            Described {
                inode: inode(&bound),
                kind: DATAGRAM,
                name: Some(abstract_name),
                peer: None,
                uid: Some(rustix::process::geteuid().as_raw()),
            }
        );
        // A socket that is gone is no socket.
        let gone = inode(&bound);
        drop(bound);
        assert_eq!(diag.socket(gone, show::NAME).unwrap(), None);
    }

    #[test]
    fn a_dump_lists_connected_sockets_with_their_names() {
        let name = format!("udsecho-diag-dump-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let client = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(format!("{name}-client").as_bytes()).unwrap(),
        )
        .unwrap();
        client.connect_addr(&addr).unwrap();
        let mut diag = Diag::open().unwrap();
        let mut found = Vec::new();
        diag.dump(ESTABLISHED, show::NAME | show::PEER, |d| {
            if d.name.as_deref().is_some_and(|n| n.ends_with(b"-client")) {
                found.push(d);
            }
        })
        .unwrap();
        let found: Vec<_> = found
            .into_iter()
            .filter(|d| d.inode == inode(&client))
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].peer, Some(inode(&server)));
    }
}
