//! The client as a misbehaving client (`--fault`), for testing servers: the faults of the
//! shared grammar (`udsecho-fault`) that a client can commit on a stream — slices with a
//! gap, stop reading, close mid-message, half-close early — merged into one
//! [`Misbehaviour`]. The raw pipe's two threads consult it directly; the framed pipe and
//! `send` through their `FdStream`, which keeps a [`Progress`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
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

    /// Whether it only sends in slices (all `send` takes: it checks every echo, so it
    /// cannot stop reading or end its side early).
    pub fn only_slices(&self) -> bool {
        Misbehaviour {
            slices: None,
            ..self.clone()
        }
        .is_none()
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

/// A misbehaviour in progress on an async stream (`FdStream`: the framed pipe, `send`):
/// what was sent and read so far, the gap after a slice, and how sending ended.
#[derive(Debug)]
pub(crate) struct Progress {
    what: Misbehaviour,
    sent: u64,
    received: u64,
    /// The gap after the last slice: the next write waits for it.
    gap: Option<Pin<Box<Sleep>>>,
    /// Sending ended on purpose (`limit_data`: closed; `half_close`: half-closed).
    ended: Option<SendEnd>,
}

impl Progress {
    /// `None` when `what` does nothing wrong.
    pub(crate) fn new(what: &Misbehaviour) -> Option<Progress> {
        (!what.is_none()).then(|| Progress {
            what: what.clone(),
            sent: 0,
            received: 0,
            gap: None,
            ended: None,
        })
    }

    /// Before writing `len` bytes: how many may go now (pending while a slice's gap runs),
    /// or how sending ends — ended already, or here, at the limit (the caller shuts the
    /// socket down as [`Progress::ended`] says, once).
    pub(crate) fn poll_allowance(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<Result<usize, SendEnd>> {
        if let Some(gap) = &mut self.gap {
            ready!(gap.as_mut().poll(cx));
            self.gap = None;
        }
        if let Some(end) = self.ended {
            return Poll::Ready(Err(end));
        }
        let mut allowed = len;
        if let Some((left, end)) = self.what.send_limit(self.sent) {
            if left == 0 {
                self.ended = Some(end);
                return Poll::Ready(Err(end));
            }
            allowed = allowed.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        if let Some((size, _)) = self.what.slices {
            allowed = allowed.min(size);
        }
        Poll::Ready(Ok(allowed))
    }

    /// `n` bytes went out: the next slice waits for the gap; at the limit, sending ends now
    /// (returned once, for the caller to shut the socket down).
    pub(crate) fn wrote(&mut self, n: usize) -> Option<SendEnd> {
        self.sent += n as u64;
        if let Some((_, gap)) = self.what.slices {
            self.gap = Some(Box::pin(tokio::time::sleep(gap)));
        }
        match self.what.send_limit(self.sent) {
            Some((0, end)) if self.ended.is_none() => {
                self.ended = Some(end);
                Some(end)
            }
            _ => None,
        }
    }

    /// How much of `len` the next read may take; `None` once reading has stopped
    /// (`stop_reading`).
    pub(crate) fn read_allowance(&self, len: usize) -> Option<usize> {
        match self.what.stop_reading {
            Some(stop) => match stop.saturating_sub(self.received) {
                0 => None,
                left => Some(len.min(usize::try_from(left).unwrap_or(usize::MAX))),
            },
            None => Some(len),
        }
    }

    /// `n` bytes were read.
    pub(crate) fn read(&mut self, n: usize) {
        self.received += n as u64;
    }

    /// Whether the misbehaviour has taken effect: sending ended, or reading stopped. From
    /// then on the exchange cannot end as a well-behaved one would, and that is not an error.
    pub(crate) fn took_effect(&self) -> bool {
        self.ended.is_some() || self.read_allowance(1).is_none()
    }

    /// How sending ended, if it did.
    pub(crate) fn ended(&self) -> Option<SendEnd> {
        self.ended
    }
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
        assert!(
            Misbehaviour::new(&specs(&["slicer=3"]))
                .unwrap()
                .only_slices()
        );
        assert!(!m.only_slices());
    }

    async fn allowance(p: &mut Progress, len: usize) -> Result<usize, SendEnd> {
        std::future::poll_fn(|cx| p.poll_allowance(cx, len)).await
    }

    #[tokio::test(start_paused = true)]
    async fn progress_slices_limits_and_stops_as_asked() {
        let m = Misbehaviour::new(&specs(&[
            "slicer=4,gap=10ms",
            "half_close=6",
            "stop_reading=3",
        ]))
        .unwrap();
        let mut p = Progress::new(&m).unwrap();
        assert_eq!(p.read_allowance(10), Some(3));
        p.read(3);
        assert_eq!(p.read_allowance(10), None, "stopped reading");
        assert!(p.took_effect());
        let started = tokio::time::Instant::now();
        assert_eq!(allowance(&mut p, 10).await, Ok(4), "a slice");
        assert_eq!(p.wrote(4), None);
        assert_eq!(allowance(&mut p, 10).await, Ok(2), "up to the half-close");
        assert!(
            started.elapsed() >= Duration::from_millis(10),
            "after the gap"
        );
        assert_eq!(
            p.wrote(2),
            Some(SendEnd::HalfClose),
            "ends at the limit, once"
        );
        assert_eq!(allowance(&mut p, 10).await, Err(SendEnd::HalfClose));
        assert_eq!(p.ended(), Some(SendEnd::HalfClose));
        assert!(Progress::new(&Misbehaviour::default()).is_none());
    }
}
