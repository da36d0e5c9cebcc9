//! [`Datagrams`]: the faults of a datagram socket, decided per datagram.
//!
//! A datagram server has no connections: here a "connection" is a sender's address. A fault
//! with a share (`loss=0.5@25%`) hits a quarter of the *senders*, drawn from the seed and the
//! address ([`sender_key`]), so the same senders are hit on every run with the same
//! `--fault-seed`, and a sender is hit or not for all its datagrams. The probabilities
//! (`loss`, `duplicate`, `reorder`) draw from one stream for the whole socket, in the order
//! the datagrams arrive. Nothing is kept per sender: memory does not follow how many there
//! are.
//!
//! The datagram loop calls [`Datagrams::answer`] where it would answer a datagram, with the
//! answer as a closure (its own checks and reply); this module decides what becomes of the
//! datagram (dropped, held back, cut, answered, sent twice) and calls it that many times.
//! A datagram held back for `reorder` (one at a time, at most 64 KiB) is answered after the
//! next datagram the socket answers, whoever sent it, or when the drain begins
//! ([`Datagrams::lift`]).

use std::borrow::Cow;
use std::sync::Arc;

use rustix::net::{SocketAddrAny, SocketAddrUnix};
use udsecho_unix::credentials::Credentials;

use super::effects::{Draws, Effects, Fate, extra_descriptor};
use super::table::{Faults, sender_key};
use crate::descriptors::{MAX_PER_READ, Passed, Received};
use udsecho_fault::{Fault, FaultSpec};

/// The datagram socket's own stream of draws: connection numbers start at 1.
const SOCKET_STREAM: u64 = 0;

/// The faults of a datagram socket (see the module's doc).
#[derive(Debug)]
pub(crate) struct Datagrams {
    /// The server's faults, to follow their changes (one atomic load a datagram).
    table: Arc<Faults>,
    /// The generation of the table `faults` was taken from.
    generation: u64,
    /// The faults in force that mean something to a datagram, with their numbers.
    faults: Vec<(u64, Arc<FaultSpec>)>,
    /// Their effects on every sender, when each of them hits every sender; `None` when one
    /// hits a share of them (then drawn per datagram, by its sender).
    every: Option<Effects>,
    /// The socket's random draws and its place in a file of answers.
    draws: Draws,
    /// A datagram held back to be answered after the next one (`reorder`).
    held: Option<Held>,
}

/// A datagram held back: what is needed to answer it later (its descriptors were closed).
#[derive(Debug)]
struct Held {
    bytes: Vec<u8>,
    creds: Option<Credentials>,
    from: Option<SocketAddrAny>,
}

/// Whether a fault means something to a datagram: the message faults, a canned answer,
/// `timeout` (nothing answered), and the descriptor faults. The others (latency, slices...)
/// shape a stream and do nothing here.
fn for_datagrams(fault: &Fault) -> bool {
    fault.messages_only()
        || matches!(
            fault,
            Fault::Answer(_) | Fault::Timeout { .. } | Fault::WithholdFds | Fault::ExtraFd
        )
}

impl Datagrams {
    /// The faults of a datagram socket on a server with `table`.
    pub(crate) fn new(table: &Arc<Faults>) -> Datagrams {
        Datagrams {
            table: table.clone(),
            generation: u64::MAX,
            faults: Vec::new(),
            every: Some(Effects::default()),
            draws: Draws::new(table.connection_rng(SOCKET_STREAM)),
            held: None,
        }
    }

    /// Follows the table: one atomic load when nothing changed.
    fn refresh(&mut self) {
        if self.table.generation() == self.generation {
            return;
        }
        let (generation, all) = self.table.snapshot();
        self.generation = generation;
        self.faults = all
            .into_iter()
            .filter(|(_, spec)| for_datagrams(&spec.fault))
            .collect();
        self.every = self
            .faults
            .iter()
            .all(|(_, spec)| spec.share_ppm >= 1_000_000)
            .then(|| Effects::of(&self.hits(0)));
    }

    /// The faults that hit the sender whose key is `key`.
    fn hits(&self, key: u64) -> Vec<Arc<FaultSpec>> {
        self.faults
            .iter()
            .filter(|(id, spec)| self.table.hits(key, *id, spec.share_ppm))
            .map(|(_, spec)| spec.clone())
            .collect()
    }

    /// One datagram, `msg` as read into `buf`, from `from`: answered through `answer` (the
    /// loop's own checks and reply, given the bytes, the datagram and its sender) as the
    /// faults have it — not at all, later, cut, with a canned answer, or twice — with the
    /// datagram held back before, if any, answered after it. `msg`'s descriptors that no
    /// reply carries are the caller's to close.
    pub(crate) fn answer(
        &mut self,
        buf: &[u8],
        msg: &mut Received,
        from: Option<SocketAddrAny>,
        mut answer: impl FnMut(&[u8], &mut Received, Option<SocketAddrAny>),
    ) {
        self.refresh();
        if self.faults.is_empty() && self.held.is_none() {
            answer(buf, msg, from);
            return;
        }
        let logging = tracing::enabled!(tracing::Level::DEBUG);
        // Read only when needed: to draw the sender's faults, or to name it.
        let address = (self.every.is_none() || logging)
            .then(|| from.as_ref().map(address_of))
            .flatten();
        let (effects, hits) = match &self.every {
            Some(every) => (Cow::Borrowed(every), None),
            None => {
                let key = address.as_ref().map_or(0, |a| sender_key(a.key()));
                let hits = self.hits(key);
                (Cow::Owned(Effects::of(&hits)), Some(hits))
            }
        };
        let fate = self.draws.message(&effects, msg.len, self.held.is_none());
        if logging {
            let names = match &hits {
                Some(hits) => hits.iter().map(|s| s.text()).collect::<Vec<_>>(),
                None => self.faults.iter().map(|(_, s)| s.text()).collect(),
            };
            if !names.is_empty() {
                let who = address
                    .as_ref()
                    .map_or("an unnamed sender".into(), Address::shown);
                tracing::debug!(
                    "fault: {}: a datagram from {who}: {}",
                    names.join(" "),
                    fate.said(msg.len)
                );
            }
        }
        match fate {
            Fate::Drop => {
                msg.fds.lose("a fault dropped the datagram");
                return;
            }
            Fate::Hold => {
                msg.fds.lose("a fault held the datagram back to reorder it");
                self.held = Some(Held {
                    bytes: buf[..msg.len].to_vec(),
                    creds: msg.creds,
                    from,
                });
                return;
            }
            Fate::Echo { .. } | Fate::Answer(_) => {}
        }
        if effects.withhold_fds {
            msg.fds.lose("a withhold_fds fault");
        }
        if effects.extra_fd
            && msg.fds.len() < MAX_PER_READ
            && let Some(fd) = extra_descriptor()
        {
            msg.fds.append(Passed::one(fd));
        }
        match fate {
            Fate::Echo { len, times } => {
                msg.len = len;
                if times > 1 {
                    // The second carries no descriptors: the first took them back.
                    answer(buf, msg, from.clone());
                }
                answer(buf, msg, from);
            }
            Fate::Answer(bytes) => {
                msg.len = bytes.len();
                answer(&bytes, msg, from);
            }
            Fate::Drop | Fate::Hold => {}
        }
        self.release(&mut answer);
    }

    /// The drain began: the datagram held back is answered now, and no fault applies any
    /// more (the caller drops `self`).
    pub(crate) fn lift(
        mut self,
        mut answer: impl FnMut(&[u8], &mut Received, Option<SocketAddrAny>),
    ) {
        if self.held.is_some() {
            tracing::debug!("fault: lifted for the drain; the datagram held back goes out");
        }
        self.release(&mut answer);
    }

    /// Answers the datagram held back, if any.
    fn release(&mut self, answer: &mut impl FnMut(&[u8], &mut Received, Option<SocketAddrAny>)) {
        if let Some(held) = self.held.take() {
            let mut msg = Received {
                len: held.bytes.len(),
                fds: Passed::none(),
                creds: held.creds,
                truncated: false,
                cut: false,
            };
            answer(&held.bytes, &mut msg, held.from);
        }
    }
}

/// Which "connection" the sender at `from` is, for the choice of senders a share hits
/// ([`sender_key`] of its address): the proxy's relays draw by it too. And its address as
/// `-v` shows it (escaped).
pub(crate) fn sender_of(from: &SocketAddrUnix) -> (u64, String) {
    let address = unix_address(from);
    (sender_key(address.key()), address.shown())
}

impl Fate {
    /// What became of a datagram of `len` bytes, for `-v`.
    pub(crate) fn said(&self, len: usize) -> String {
        match self {
            Fate::Drop => "dropped".to_owned(),
            Fate::Hold => "held back, to go after the next one".to_owned(),
            Fate::Echo { len: cut, times } => {
                let mut said = match *times {
                    1 => "echoed".to_owned(),
                    n => format!("echoed {n} times"),
                };
                if *cut < len {
                    said.push_str(&format!(", cut to {cut} of {len} bytes"));
                }
                said
            }
            Fate::Answer(bytes) => format!("answered with {} bytes", bytes.len()),
        }
    }
}

/// A sender's address: a path, or an abstract name.
#[derive(Debug)]
enum Address {
    Path(Vec<u8>),
    Abstract(Vec<u8>),
    Unnamed,
}

fn address_of(from: &SocketAddrAny) -> Address {
    match SocketAddrUnix::try_from(from.clone()) {
        Ok(unix) => unix_address(&unix),
        Err(_) => Address::Unnamed,
    }
}

fn unix_address(unix: &SocketAddrUnix) -> Address {
    if let Some(path) = unix.path_bytes() {
        Address::Path(path.to_vec())
    } else if let Some(name) = unix.abstract_name() {
        let mut key = vec![0];
        key.extend_from_slice(name);
        Address::Abstract(key)
    } else {
        Address::Unnamed
    }
}

impl Address {
    /// The bytes the choice of senders is drawn from: the path, or `\0` and the name.
    fn key(&self) -> &[u8] {
        match self {
            Address::Path(bytes) | Address::Abstract(bytes) => bytes,
            Address::Unnamed => &[],
        }
    }

    /// For `-v`: escaped, an abstract name after `@`.
    fn shown(&self) -> String {
        let mut shown = String::new();
        match self {
            Address::Path(path) => crate::echo_log::escape_into(path, &mut shown),
            Address::Abstract(key) => {
                shown.push('@');
                crate::echo_log::escape_into(&key[1..], &mut shown);
            }
            Address::Unnamed => shown.push_str("an unnamed sender"),
        }
        shown
    }
}
