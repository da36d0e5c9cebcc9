//! Does an abstract sender's name belong, in this server's network namespace, to the sender?
//!
//! Abstract names are per network namespace, and anyone can make one (`unshare -r -n`). A
//! sender can carry a name that, here, belongs to another service: from a namespace of its
//! own, through a path-bound server's file; or from a socket made in another namespace while
//! its process (or one thread of it) is in ours. A reply by that name would reach the other
//! service, from the server's address and with its credentials. So, as for a path, the reply
//! goes out only if the socket holding the name here is owned by the uid the kernel says sent
//! the datagram (`SCM_CREDENTIALS`). Every datagram is checked: nothing learnt about a name is
//! trusted unless the kernel confirms that the same socket still holds it (a 100 ms cache of
//! owners let a name that changed hands within it be answered as its old owner's).
//!
//! How, with the kernel's socket diagnostics ([`crate::unix_diag`]) and a **probe**: a
//! datagram socket of ours `connect`ed to the name, which makes the kernel resolve it here to
//! one socket (the lookup a reply makes) and hold on to that socket.
//!
//! 1. **A new name.** The probe connects; one exact query asks which socket it is connected
//!    to, one more asks that socket's name and owner. An exact query is not free: the kernel
//!    finds a socket by inode by walking its namespace's table of Unix sockets
//!    (`unix_lookup_by_ino`), 20 to 40 ns a socket here, so about half a millisecond with
//!    20,000 sockets — less than a dump of them, which also copies one message per socket,
//!    but growing with them all the same. So new names are what each uid's senders may spend
//!    only a share of the server's time on ([`CHECK_SHARE`]); past it, their datagram is
//!    dropped unchecked. A sender that binds a new name per datagram pays with its own
//!    datagrams, not with everyone's.
//! 2. **A name seen before, held by an unconnected socket** (most senders): the probe, kept,
//!    connects to the name again. If the name now leads to another socket, the kernel purges
//!    the probe's receive queue as it switches peers (`unix_dgram_disconnected`), so a one-byte
//!    marker the probe sent itself before its first `connect` is gone; if the marker is still
//!    there, the name still leads to the same socket, whose owner is known. Two system calls,
//!    whatever the number of sockets (checked once at startup: without the purge, every
//!    datagram takes step 1).
//! 3. **A socket connected to another one** refuses the probe's `connect` (`EPERM`):
//!    udsecho-client's sockets are connected to the server. Only a dump of the namespace's
//!    connected sockets finds which socket holds the name (the first time, within the share of
//!    step 1); after that, one exact query per datagram confirms it still does.
//!
//! Why the reply is not sent through the probe, which stays connected to the very socket that
//! was checked: it would come from the probe's address, not the server's, and a client
//! connected to the server refuses datagrams from any other socket (`EPERM`). So the reply
//! goes out by name from the server's socket right after the check: a name can change hands
//! in between only if its socket is closed and another user binds the name in those few
//! microseconds.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

use crate::unix_diag::{self, Described, Diag, show};

/// Who holds an abstract sender's name here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A socket of the sender's uid: the reply may go to it.
    Sender,
    /// Another user's socket.
    Other,
    /// No socket (the sender closed it, or it lives in another network namespace).
    Nobody,
    /// Not checked: a new name, and its sender's uid has had its share of the time new names
    /// cost (or the kernel would not answer).
    Unchecked,
}

/// One in this many seconds of the server's time may go to checking one uid's new names.
const CHECK_SHARE: u32 = 4;
/// What a uid may spend on new names at once, after a quiet while.
const CHECK_BURST: Duration = Duration::from_millis(100);
/// Uids kept track of; past that the record starts afresh (it holds hints and budgets only).
const MAX_USERS: usize = 1024;
/// Names remembered per uid with an inode to confirm.
const MAX_CONFIRMED: usize = 256;
/// Probes kept (each a descriptor of the server's), and per uid.
const MAX_PROBES: usize = 32;
const MAX_PROBES_PER_USER: usize = 4;

/// The state of the check: the netlink socket, the probes kept, what each uid's senders cost.
#[derive(Debug, Default)]
pub(crate) struct AbstractNames {
    /// Opened at the first check; dropped after an error, to start clean.
    diag: Option<Diag>,
    users: HashMap<u32, User>,
    /// Whether a probe's reconnection purges its queue when the name leads elsewhere (step 2);
    /// found out at the first check.
    purge_works: Option<bool>,
    /// Probes kept, in all.
    probes: usize,
}

/// One uid's senders.
#[derive(Debug)]
struct User {
    /// Names held by unconnected sockets, each with its probe (step 2).
    probed: HashMap<Vec<u8>, Probe>,
    /// Names confirmed by inode (step 3: connected sockets; and every name if probes cannot
    /// be kept), with the inode of the socket that held each when checked: which socket to
    /// ask about, never trusted without asking.
    confirmed: HashMap<Vec<u8>, u32>,
    /// Nanoseconds this uid may still spend checking new names (below zero: in debt).
    budget: i128,
    /// When the budget was last topped up.
    topped_up: Instant,
}

/// A socket connected to a name's socket, with a marker in its queue that a switch to
/// another socket would purge.
#[derive(Debug)]
struct Probe {
    fd: OwnedFd,
    /// Whether the socket it is connected to is owned by the uid it was checked for.
    owned: bool,
}

impl User {
    fn new() -> User {
        User {
            probed: HashMap::new(),
            confirmed: HashMap::new(),
            budget: CHECK_BURST.as_nanos() as i128,
            topped_up: Instant::now(),
        }
    }

    /// May this uid's sender cost a new name's check now?
    fn may_check(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.topped_up).as_nanos() / u128::from(CHECK_SHARE);
        self.topped_up = now;
        self.budget = (self.budget + earned as i128).min(CHECK_BURST.as_nanos() as i128);
        self.budget > 0
    }

    fn spent(&mut self, since: Instant) {
        self.budget -= since.elapsed().as_nanos() as i128;
    }
}

impl AbstractNames {
    /// Who holds `name` (without its leading NUL) here, for a datagram from `uid`.
    pub(crate) fn holder(&mut self, name: &[u8], uid: u32) -> Holder {
        match self.ask(name, uid) {
            Ok(holder) => holder,
            Err(e) => {
                tracing::debug!("checking an abstract sender's name: {e}");
                self.diag = None;
                Holder::Unchecked
            }
        }
    }

    fn ask(&mut self, name: &[u8], uid: u32) -> io::Result<Holder> {
        if self.users.len() >= MAX_USERS && !self.users.contains_key(&uid) {
            self.users.clear();
            self.probes = 0;
        }
        let address = SocketAddrUnix::new_abstract_name(name)?;
        // As the kernel holds it, and as the socket diagnostics give it back.
        let mut raw = Vec::with_capacity(name.len() + 1);
        raw.push(0);
        raw.extend_from_slice(name);
        let holds = |d: &Described| {
            d.kind == unix_diag::DATAGRAM && d.name.as_deref() == Some(raw.as_slice())
        };
        let owned = |d: &Described| d.uid == Some(uid);
        let verdict = |owned: bool| if owned { Holder::Sender } else { Holder::Other };

        let user = self.users.entry(uid).or_insert_with(User::new);
        // 2. A probe still connected to the socket that held the name.
        if let Some(probe) = user.probed.remove(name) {
            self.probes -= 1;
            match rustix::net::connect(&probe.fd, &address) {
                Ok(()) if rustix::io::ioctl_fionread(&probe.fd)? > 0 => {
                    let owned = probe.owned;
                    user.probed.insert(name.to_vec(), probe);
                    self.probes += 1;
                    return Ok(verdict(owned));
                }
                // Another socket holds it now (the marker was purged): checked afresh below.
                Ok(()) => {}
                Err(Errno::CONNREFUSED) => return Ok(Holder::Nobody),
                // The name's socket is connected to another one now: below too.
                Err(Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let diag = match &mut self.diag {
            Some(diag) => diag,
            None => self.diag.insert(Diag::open()?),
        };
        // 3. A connected socket that held the name, if it still does.
        if let Some(&inode) = user.confirmed.get(name) {
            if let Some(d) = diag.socket(inode, show::NAME | show::UID)?
                && holds(&d)
            {
                return Ok(verdict(owned(&d)));
            }
            user.confirmed.remove(name);
        }

        // 1. A new name (or one that changed hands): within this uid's share.
        if !user.may_check() {
            return Ok(Holder::Unchecked);
        }
        let started = Instant::now();
        let purge_works = *self
            .purge_works
            .get_or_insert_with(|| reconnecting_purges().unwrap_or(false));
        let probe = if purge_works {
            marked_probe()?
        } else {
            unmarked_probe()?
        };
        let found = match rustix::net::connect(&probe, &address) {
            Ok(()) => {
                let ours = u32::try_from(rustix::fs::fstat(&probe)?.st_ino)
                    .map_err(|_| io::Error::other("a socket inode beyond 32 bits"))?;
                match diag.socket(ours, show::PEER)?.and_then(|d| d.peer) {
                    Some(peer) => diag.socket(peer, show::NAME | show::UID)?,
                    None => None,
                }
                .filter(|d| holds(d))
                .map(|d| (d, Some(probe)))
            }
            Err(Errno::CONNREFUSED) => None,
            // Connected to another socket: only a dump of connected sockets finds it.
            Err(Errno::PERM) => {
                let mut found = None;
                diag.dump(unix_diag::ESTABLISHED, show::NAME | show::UID, |d| {
                    if holds(&d) {
                        found = Some(d);
                    }
                })?;
                found.map(|d| (d, None))
            }
            Err(e) => {
                user.spent(started);
                return Err(e.into());
            }
        };
        user.spent(started);
        let Some((described, probe)) = found else {
            return Ok(Holder::Nobody);
        };
        let owned = owned(&described);
        match probe {
            Some(fd) if purge_works => {
                if user.probed.len() >= MAX_PROBES_PER_USER || self.probes >= MAX_PROBES {
                    // Make room among this uid's first: a sender of new names evicts its own.
                    let victim = if user.probed.is_empty() {
                        self.users
                            .values_mut()
                            .max_by_key(|u| u.probed.len())
                            .map(|u| std::mem::take(&mut u.probed).len())
                    } else {
                        let evicted = std::mem::take(&mut user.probed).len();
                        Some(evicted)
                    };
                    self.probes -= victim.unwrap_or(0);
                }
                let user = self.users.entry(uid).or_insert_with(User::new);
                user.probed.insert(name.to_vec(), Probe { fd, owned });
                self.probes += 1;
            }
            _ => {
                if user.confirmed.len() >= MAX_CONFIRMED {
                    user.confirmed.clear();
                }
                user.confirmed.insert(name.to_vec(), described.inode);
            }
        }
        Ok(verdict(owned))
    }
}

/// A datagram socket of ours, not bound.
fn unmarked_probe() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// A probe with a one-byte marker in its own queue: bound to an address the kernel picks
/// (autobind), and sent a byte from itself before it connects anywhere.
fn marked_probe() -> io::Result<OwnedFd> {
    let probe = unmarked_probe()?;
    rustix::net::bind(&probe, &SocketAddrUnix::new_unnamed())?;
    let own = SocketAddrUnix::try_from(rustix::net::getsockname(&probe)?)?;
    rustix::net::sendto(&probe, b"m", SendFlags::DONTWAIT, &own)?;
    Ok(probe)
}

/// Does connecting a probe again to a name that now leads to another socket purge its queue,
/// as step 2 relies on? Tried on two sockets of our own, once.
fn reconnecting_purges() -> io::Result<bool> {
    let first = unmarked_probe()?;
    rustix::net::bind(&first, &SocketAddrUnix::new_unnamed())?;
    let name = SocketAddrUnix::try_from(rustix::net::getsockname(&first)?)?;
    let second = unmarked_probe()?;
    rustix::net::bind(&second, &SocketAddrUnix::new_unnamed())?;
    let elsewhere = SocketAddrUnix::try_from(rustix::net::getsockname(&second)?)?;
    let probe = marked_probe()?;
    rustix::net::connect(&probe, &name)?;
    let kept = rustix::io::ioctl_fionread(&probe)? > 0;
    rustix::net::connect(&probe, &elsewhere)?;
    let purged = rustix::io::ioctl_fionread(&probe)? == 0;
    if !(kept && purged) {
        tracing::debug!(
            "reconnecting a datagram socket does not purge its queue here: every abstract \
             sender's datagram is checked with socket diagnostics"
        );
    }
    Ok(kept && purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    fn bound(name: &str) -> UnixDatagram {
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn this_kernel_purges_a_reconnected_probe() {
        assert!(reconnecting_purges().unwrap());
    }

    #[test]
    fn a_name_is_the_senders_while_its_socket_holds_it_and_nobodys_after() {
        let me = rustix::process::geteuid().as_raw();
        let name = format!("udsecho-names-test-{}", std::process::id());
        let mut names = AbstractNames::default();
        let socket = bound(&name);
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Sender);
        // Again: through the probe kept, no budget needed.
        names.users.get_mut(&me).unwrap().budget = -1_000_000_000;
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Sender);
        assert_eq!(names.probes, 1);
        drop(socket);
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Nobody);
        // Bound again by another socket: the probe sees the change and a new check is due.
        let _again = bound(&name);
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Unchecked);
        names.users.get_mut(&me).unwrap().budget = 1_000_000;
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Sender);
        // Another uid's datagram from that name: not its socket.
        assert_eq!(names.holder(name.as_bytes(), me + 1), Holder::Other);
    }

    #[test]
    fn a_connected_senders_name_is_found_by_a_dump_then_confirmed_by_inode() {
        let me = rustix::process::geteuid().as_raw();
        let name = format!("udsecho-names-connected-{}", std::process::id());
        let server = bound(&format!("{name}-server"));
        let client = bound(&name);
        client.connect_addr(&server.local_addr().unwrap()).unwrap();
        let mut names = AbstractNames::default();
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Sender);
        names.users.get_mut(&me).unwrap().budget = -1_000_000_000;
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Sender);
        drop(client);
        // Gone: with no budget left, the name cannot be looked for again.
        assert_eq!(names.holder(name.as_bytes(), me), Holder::Unchecked);
    }

    #[test]
    fn a_uid_sending_from_new_names_evicts_its_own_probes_first() {
        let me = rustix::process::geteuid().as_raw();
        let tag = format!("udsecho-names-evict-{}", std::process::id());
        let mut names = AbstractNames::default();
        let polite = bound(&format!("{tag}-polite"));
        assert_eq!(
            names.holder(format!("{tag}-polite").as_bytes(), me + 7),
            Holder::Other
        );
        let fresh: Vec<_> = (0..MAX_PROBES + 8)
            .map(|i| bound(&format!("{tag}-{i}")))
            .collect();
        for i in 0..fresh.len() {
            names.users.entry(me).or_insert_with(User::new).budget = 1_000_000_000;
            assert_eq!(
                names.holder(format!("{tag}-{i}").as_bytes(), me),
                Holder::Sender
            );
        }
        assert!(names.probes <= MAX_PROBES);
        assert_eq!(
            names.users[&(me + 7)].probed.len(),
            1,
            "the other uid's probe stays"
        );
        drop(polite);
    }
}
