//! The client as a misbehaving client (`pipe --fault`), for testing servers: the faults of
//! the shared grammar (`udsecho-fault`) that a client can commit on a raw stream — slices
//! with a gap, stop reading, close mid-message, half-close early — merged into what the raw
//! pipe's two threads consult.

use std::time::Duration;

use udsecho_fault::{Fault, FaultSpec};

/// What the pipe does wrong on purpose; the default does nothing wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// `slicer`: stdin goes out in writes of at most this many bytes, this far apart.
    pub slices: Option<(usize, Duration)>,
    /// `stop_reading`: the client reads at most this many bytes of the answer, then no more.
    pub stop_reading: Option<u64>,
    /// `limit_data`: after sending this many bytes the client closes the connection, even in
    /// the middle of a message.
    pub close_after: Option<u64>,
    /// `half_close`: after sending this many bytes the client shuts its write side and sends
    /// no more, but reads on.
    pub half_close_after: Option<u64>,
}

impl Misbehaviour {
    /// The faults `specs` ask for (a later one of a kind replaces an earlier one). A fault
    /// only a server can commit, or a share of connections (a client has one), is refused
    /// with the reason.
    pub fn new(specs: &[FaultSpec]) -> Result<Misbehaviour, String> {
        let mut m = Misbehaviour::default();
        for spec in specs {
            if spec.share_ppm < 1_000_000 {
                return Err(format!(
                    "{spec}: a client has one connection, so no share (@) of them"
                ));
            }
            match spec.fault {
                Fault::Slicer { size, gap } => m.slices = Some((size, gap)),
                Fault::StopReading { after } => m.stop_reading = Some(after),
                Fault::LimitData { bytes } => m.close_after = Some(bytes),
                Fault::HalfClose { after } => m.half_close_after = Some(after),
                _ => {
                    return Err(format!(
                        "{spec}: the client can do slicer, stop_reading, limit_data and \
                         half_close; {} is a server's fault (udsecho-server --fault)",
                        spec.fault.name()
                    ));
                }
            }
        }
        Ok(m)
    }

    /// Whether it does anything wrong at all.
    pub fn is_none(&self) -> bool {
        *self == Misbehaviour::default()
    }

    /// How many more bytes may be sent after `sent` before the close or the half-close,
    /// and which of the two comes there.
    pub(crate) fn send_limit(&self, sent: u64) -> Option<(u64, SendEnd)> {
        let close = self.close_after.map(|n| (n, SendEnd::Close));
        let half = self.half_close_after.map(|n| (n, SendEnd::HalfClose));
        let first = match (close, half) {
            (Some(c), Some(h)) => Some(if c.0 <= h.0 { c } else { h }),
            (c, h) => c.or(h),
        };
        first.map(|(n, end)| (n.saturating_sub(sent), end))
    }
}

/// How sending ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendEnd {
    /// Close the connection (both directions).
    Close,
    /// Shut down the write side; read on.
    HalfClose,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(texts: &[&str]) -> Vec<FaultSpec> {
        texts.iter().map(|t| FaultSpec::parse(t).unwrap()).collect()
    }

    #[test]
    fn the_client_takes_its_four_faults_and_refuses_the_rest() {
        let m = Misbehaviour::new(&specs(&[
            "slicer=2,gap=5ms",
            "half_close=10",
            "limit_data=4",
        ]))
        .unwrap();
        assert_eq!(m.slices, Some((2, Duration::from_millis(5))));
        assert_eq!(m.send_limit(1), Some((3, SendEnd::Close)));
        assert_eq!(m.send_limit(9), Some((0, SendEnd::Close)));
        let e = Misbehaviour::new(&specs(&["latency=1s"])).unwrap_err();
        assert!(e.contains("server's fault"), "{e}");
        let e = Misbehaviour::new(&specs(&["slicer=1@50%"])).unwrap_err();
        assert!(e.contains("no share"), "{e}");
        assert!(Misbehaviour::new(&[]).unwrap().is_none());
    }
}
