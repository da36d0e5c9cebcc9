//! Reaching the upstream (`--upstream`): a socket of the listener's type, connected to a path
//! or an abstract name, for each client (for each datagram sender: its relay).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::SocketAddrUnix;
use tokio::time::Instant;

use crate::config::{SocketAddress, SocketType};

/// How long a connection waits for room in the upstream's listen backlog (a non-blocking
/// Unix connect fails with `EAGAIN` when it is full, where TCP would wait).
const BACKLOG_PATIENCE: Duration = Duration::from_secs(2);
/// How often it tries meanwhile.
const BACKLOG_RETRY: Duration = Duration::from_millis(5);

/// Why the upstream could not be reached, in words: the error and what it usually means.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(crate) struct Unreachable {
    what: String,
}

impl Unreachable {
    fn new(e: &io::Error) -> Unreachable {
        let hint = match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::NOENT) => " (no such socket)",
            Some(Errno::CONNREFUSED) => " (nothing listens there: a stale socket file?)",
            Some(Errno::ACCESS) => " (permission denied on the socket or its directory)",
            Some(Errno::PROTOTYPE) => " (a socket of another type listens there: see --type)",
            Some(Errno::AGAIN) => " (its listen backlog stayed full)",
            _ => "",
        };
        Unreachable {
            what: format!("{e}{hint}"),
        }
    }
}

/// A new socket of `kind` connected to `target`, non-blocking and close-on-exec.
pub(crate) async fn connect(
    target: &SocketAddress,
    kind: SocketType,
) -> Result<OwnedFd, Unreachable> {
    let fail = |e: io::Error| Unreachable::new(&e);
    let addr = match target {
        SocketAddress::Path(path) => SocketAddrUnix::new(path.as_path()),
        SocketAddress::Abstract(name) => abstract_name(name),
    }
    .map_err(|e| fail(e.into()))?;
    let deadline = Instant::now() + BACKLOG_PATIENCE;
    loop {
        let fd = udsecho_unix::socket::socket(kind).map_err(fail)?;
        if kind == SocketType::Datagram {
            // An address of its own for the upstream's replies: autobind, a unique abstract
            // name freed with the socket (nothing on disk).
            rustix::net::bind(&fd, &SocketAddrUnix::new_unnamed()).map_err(|e| fail(e.into()))?;
        }
        if kind == SocketType::Seqpacket {
            // Before the connect: the upstream's first message may come at once, and only
            // messages sent while this is set carry the credentials that tell an empty
            // message from the end.
            rustix::net::sockopt::set_socket_passcred(&fd, true).map_err(|e| fail(e.into()))?;
        }
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::AGAIN) if Instant::now() < deadline => {
                tokio::time::sleep(BACKLOG_RETRY).await;
            }
            Err(e) => return Err(fail(e.into())),
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_name(name: &str) -> rustix::io::Result<SocketAddrUnix> {
    SocketAddrUnix::new_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_name(_name: &str) -> rustix::io::Result<SocketAddrUnix> {
    Err(Errno::AFNOSUPPORT)
}

/// At start: says in one warning if the upstream does not answer now. Not a reason to
/// refuse to start (it may come up later: each connection tries again). The try is a real
/// connection, closed at once.
pub(crate) async fn check(target: &SocketAddress, kind: SocketType) {
    match connect(target, kind).await {
        Ok(_probe) => tracing::debug!("upstream {target} answers"),
        Err(e) => tracing::warn!(
            "upstream {target}: {e}; serving anyway (each connection tries it again, and is \
             closed if it still cannot reach it)"
        ),
    }
}
