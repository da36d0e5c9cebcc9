//! Who owns an abstract socket name in this network namespace, from the kernel's socket
//! diagnostics (`NETLINK_SOCK_DIAG`, `UNIX_DIAG_NAME` and `UNIX_DIAG_UID`, Linux 5.3+).
//!
//! The datagram server answers an abstract sender by name, and a name means whatever socket
//! holds it in the *server's* namespace. A sender in another namespace (or using a socket made
//! in one) can carry the name of somebody else's socket here. So before a reply goes out by
//! name, the name's owner here must be the uid the kernel says sent the datagram: the same
//! rule a path sender's reply follows. Works unprivileged; one dump lists every Unix socket of
//! the namespace, so callers cache it.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_UID: u16 = 7;
const NLMSG_HDRLEN: usize = 16;
const UNIX_DIAG_MSG_LEN: usize = 16;

/// Every abstract name bound in this network namespace (without its leading NUL), with the
/// uid that owns its socket.
pub(crate) fn abstract_owners() -> io::Result<HashMap<Vec<u8>, u32>> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(1)),
    )?;
    let mut request = Vec::with_capacity(40);
    request.extend_from_slice(&40u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    request.push(1); // AF_UNIX
    request.push(0);
    request.extend_from_slice(&0u16.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    request.extend_from_slice(&0u32.to_ne_bytes()); // every inode
    request.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_UID).to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    rustix::net::sendto(
        &fd,
        &request,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )?;

    let mut owners = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
        if n == 0 {
            return Err(io::Error::other(
                "sock_diag: the dump ended without NLMSG_DONE",
            ));
        }
        if parse(&buf[..n], &mut owners)? {
            return Ok(owners);
        }
    }
}

/// Reads one datagram of netlink messages into `owners`; `true` at the end of the dump.
fn parse(mut data: &[u8], owners: &mut HashMap<Vec<u8>, u32>) -> io::Result<bool> {
    let malformed = || io::Error::other("sock_diag: a malformed answer");
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_at(data, 0).ok_or_else(malformed)? as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(malformed());
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(data, NLMSG_HDRLEN).ok_or_else(malformed)? as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                let body = &data[NLMSG_HDRLEN..len];
                let mut attrs = body.get(UNIX_DIAG_MSG_LEN..).ok_or_else(malformed)?;
                let (mut name, mut uid) = (None, None);
                while attrs.len() >= 4 {
                    let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
                    let akind = u16::from_ne_bytes([attrs[2], attrs[3]]);
                    if alen < 4 || alen > attrs.len() {
                        return Err(malformed());
                    }
                    let payload = &attrs[4..alen];
                    match akind {
                        UNIX_DIAG_NAME => name = Some(payload),
                        UNIX_DIAG_UID => uid = u32_at(payload, 0),
                        _ => {}
                    }
                    attrs = &attrs[align(alen).min(attrs.len())..];
                }
                if let (Some([0, rest @ ..]), Some(uid)) = (name, uid) {
                    owners.insert(rest.to_vec(), uid);
                }
            }
            _ => {}
        }
        data = &data[align(len).min(data.len())..];
    }
    Ok(false)
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
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    #[test]
    fn a_bound_abstract_name_is_listed_with_its_owner() {
        let name = format!("udsecho-diag-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _socket = UnixDatagram::bind_addr(&addr).unwrap();
        let owners = abstract_owners().unwrap();
        assert_eq!(
            owners.get(name.as_bytes()),
            Some(&rustix::process::geteuid().as_raw())
        );
        assert!(!owners.contains_key(b"udsecho-diag-test-nobody-has-this".as_slice()));
    }
}
