//! Why a datagram got no answer ([`Dropped`]), and the count of them that reaches the log
//! ([`DropLog`]): a first line at once, then a summary at most every few seconds, so that a
//! flood of bad datagrams is a few lines, not one per datagram. The echo's and the datagram
//! proxy's (`proxy/datagram.rs`: a datagram on its way to the upstream, a reply on its way
//! back).

use std::time::Duration;

use tokio::time::Instant;

/// How often a run of dropped datagrams is summarised in the log.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its sender has no address.
    Unnamed,
    /// Its sender is not in `--allow-uid`.
    Refused,
    /// It did not fit in the largest datagram answered.
    TooLarge,
    /// The sender's queue was full.
    NotReading,
    /// The server's send buffer was full of replies other senders have not read.
    BufferFull,
    /// The sender's path no longer names a socket of the sender's own (a symlink, another
    /// file, another owner).
    Impostor,
    /// The sender's abstract name is held, in this server's network namespace, by another
    /// user's socket (the sender's socket is in another namespace, or the name changed hands).
    ForeignName,
    /// No socket holds the sender's abstract name in this server's network namespace: the
    /// sender closed its socket before the reply, or it lives in another namespace.
    NameGone,
    /// The sender's abstract name could not be checked now: it is a connected socket's new
    /// name (only a dump finds it) and its user has had its share of dumps.
    Unchecked,
    /// The sender's socket is connected to another socket: it takes datagrams from that one
    /// only (`EPERM`).
    ConnectedElsewhere,
    /// The sender's path is relative (to its own working directory, unknown here).
    RelativePath,
    /// The reply was larger than the server's send buffer allows.
    ReplyTooLarge,
    /// The server could not take the descriptors passed with it (`MSG_CTRUNC`: near its
    /// descriptor limit); the kernel closed them.
    DescriptorsTruncated,
    /// The kernel refused the reply's descriptors: this user has too many in flight
    /// (`ETOOMANYREFS`, senders not reading their replies).
    TooManyInFlight,
    /// The sender refuses passed descriptors (`SO_PASSRIGHTS` off: `EPERM`).
    RightsRefused,
    /// The sender was gone before the descriptors its datagram passed could go back (a
    /// datagram without any is not counted: nothing of it is lost that the sender kept).
    SenderGone,
    /// The kernel gave no credentials with it (the proxy's `--allow-uid` cannot be checked).
    NoCredentials,
    /// The proxy's upstream could not be reached for a new sender's relay.
    UpstreamUnreachable,
    /// The proxy could not set up a relay for a new sender.
    NoRelay,
    /// The proxy's upstream's queue was full.
    UpstreamNotReading,
    /// The proxy's upstream has gone away.
    UpstreamGone,
    /// The proxy's upstream refused it otherwise.
    UpstreamRefused,
    /// A reply the proxy could not take whole (too large, or its descriptors).
    ReplyNotWhole,
    /// A reply the proxy could not send its sender otherwise.
    ReplyFailed,
}

impl Dropped {
    /// Every reason, in the order the log gives them.
    const ALL: [Dropped; 24] = [
        Dropped::Unnamed,
        Dropped::Refused,
        Dropped::TooLarge,
        Dropped::NotReading,
        Dropped::BufferFull,
        Dropped::Impostor,
        Dropped::ForeignName,
        Dropped::NameGone,
        Dropped::Unchecked,
        Dropped::ConnectedElsewhere,
        Dropped::RelativePath,
        Dropped::ReplyTooLarge,
        Dropped::DescriptorsTruncated,
        Dropped::TooManyInFlight,
        Dropped::RightsRefused,
        Dropped::SenderGone,
        Dropped::NoCredentials,
        Dropped::UpstreamUnreachable,
        Dropped::NoRelay,
        Dropped::UpstreamNotReading,
        Dropped::UpstreamGone,
        Dropped::UpstreamRefused,
        Dropped::ReplyNotWhole,
        Dropped::ReplyFailed,
    ];

    fn why(self) -> &'static str {
        match self {
            Dropped::Unnamed => {
                "from a sender with no address (bind the client's socket to get replies)"
            }
            Dropped::Refused => "from a uid not in --allow-uid",
            Dropped::TooLarge => "larger than 256 KiB",
            Dropped::NotReading => "whose sender was not reading its replies",
            Dropped::BufferFull => {
                "while the server's send buffer was full of replies that senders have not read"
            }
            Dropped::Impostor => {
                "whose sender's path no longer named a socket of its own (replaced or a symlink)"
            }
            Dropped::ForeignName => {
                "whose sender's abstract address is another user's socket in this server's \
                 network namespace (the sender is in another namespace, or the name changed \
                 hands)"
            }
            Dropped::NameGone => {
                "whose sender's abstract address names no socket here (closed before the \
                 reply, or in another network namespace)"
            }
            Dropped::Unchecked => {
                "whose sender's abstract address could not be checked yet (new names of \
                 connected sockets cost a scan of every socket; that user had its share)"
            }
            Dropped::ConnectedElsewhere => {
                "whose sender's socket is connected to another one (it takes datagrams from \
                 that one only)"
            }
            Dropped::RelativePath => {
                "from a sender bound to a relative path (bind it to an absolute one)"
            }
            Dropped::ReplyTooLarge => "whose reply is larger than the server's send buffer",
            Dropped::DescriptorsTruncated => {
                "whose descriptors the server could not take (near its descriptor limit; the \
                 kernel closed them)"
            }
            Dropped::TooManyInFlight => {
                "whose descriptors the kernel would not send back (too many in flight to \
                 senders that do not read)"
            }
            Dropped::RightsRefused => {
                "whose sender refuses passed descriptors (SO_PASSRIGHTS off), with the \
                 descriptors it passed"
            }
            Dropped::SenderGone => "whose sender had gone before its descriptors could go back",
            Dropped::NoCredentials => "without the sender's credentials",
            Dropped::UpstreamUnreachable => "for a new sender: the upstream could not be reached",
            Dropped::NoRelay => "for a new sender: the proxy could not set up its relay",
            Dropped::UpstreamNotReading => {
                "to the upstream, which was not reading (its queue full)"
            }
            Dropped::UpstreamGone => "to the upstream, which has gone away",
            Dropped::UpstreamRefused => "to the upstream, which would not take them",
            Dropped::ReplyNotWhole => {
                "from the upstream that the proxy could not take whole (too large, or their \
                 descriptors)"
            }
            Dropped::ReplyFailed => "from the upstream that could not be sent on to their sender",
        }
    }
}

/// Counts unanswered datagrams and logs them at most once every [`REPORT_EVERY`].
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    counts: [u64; Dropped::ALL.len()],
    /// Descriptors that came with unanswered datagrams, closed.
    descriptors: u64,
    /// How many came with the datagram being answered now.
    pub(super) passed_now: usize,
    reported_at: Option<Instant>,
}

impl DropLog {
    pub(crate) fn dropped(&mut self, why: Dropped) {
        self.counts[why as usize] += 1;
        self.descriptors += std::mem::take(&mut self.passed_now) as u64;
        let now = Instant::now();
        if self
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            self.report();
            self.reported_at = Some(now);
        }
    }

    pub(crate) fn report(&mut self) {
        for why in Dropped::ALL {
            let n = std::mem::take(&mut self.counts[why as usize]);
            if n > 0 {
                tracing::warn!(
                    "dropped {n} datagram{} {}",
                    if n == 1 { "" } else { "s" },
                    why.why()
                );
            }
        }
        let n = std::mem::take(&mut self.descriptors);
        if n > 0 {
            tracing::warn!("closed {n} passed descriptor(s) that came with dropped datagrams");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_place_in_the_count() {
        for (i, why) in Dropped::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i, "{why:?}");
        }
    }
}
