//! `send`'s check of what comes back ([`FdCheck`]): the n-th descriptor back is the same open
//! file description as the n-th sent, no more come back than were sent, and every echoed
//! message has brought its own.

use udsecho_unix::same_file::same_open_file;

use super::{Passing, Returned, close_aside};
use crate::error::ErrorKind;

/// `send`'s check that the descriptors coming back are those sent: the n-th back is the same
/// open file description as the n-th sent (`Passing` repeated once per message), no more come
/// back than were sent, and every echoed message has brought its own.
#[derive(Debug)]
pub(crate) struct FdCheck {
    passing: Passing,
    /// How many have come back and matched.
    back: u64,
}

impl FdCheck {
    pub(crate) fn new(passing: Passing) -> FdCheck {
        FdCheck { passing, back: 0 }
    }

    /// Checks what came back with `sent` messages out, then closes it: what matched here (ours
    /// hold the same open file, so these closes cannot wait), anything else aside.
    pub(crate) fn returned(&mut self, returned: Returned, sent: u64) -> Result<(), ErrorKind> {
        let per = self.passing.len() as u64;
        let total = self.back + returned.fds.len() as u64;
        // More than were sent is the server's doing, even when they also overflowed our limit.
        if total > sent * per {
            close_aside(returned.fds);
            return Err(ErrorKind::DescriptorMismatch {
                index: (self.back / per.max(1) + 1).min(sent.max(1)),
                detail: format!(
                    "{total} descriptor{} came back, more than the {} sent",
                    plural(total),
                    sent * per
                ),
            });
        }
        if returned.truncated {
            close_aside(returned.fds);
            return Err(ErrorKind::DescriptorLimit);
        }
        let mut fds = returned.fds.into_iter();
        while let Some(fd) = fds.next() {
            let (ours, spec) = self.passing.get((self.back % per) as usize);
            if !same_open_file(&fd, ours) {
                let detail =
                    format!("--fd {spec} came back as a different file (not the open file sent)");
                close_aside(std::iter::once(fd).chain(fds).collect());
                return Err(ErrorKind::DescriptorMismatch {
                    index: self.back / per + 1,
                    detail,
                });
            }
            self.back += 1;
        }
        Ok(())
    }

    /// `echoed` messages have come back whole: each must have brought its descriptors.
    pub(crate) fn echoed(&self, echoed: u64) -> Result<(), ErrorKind> {
        let per = self.passing.len() as u64;
        if self.back >= echoed * per {
            return Ok(());
        }
        let (_, spec) = self.passing.get((self.back % per) as usize);
        let index = self.back / per + 1;
        let missing = index * per - self.back;
        Err(ErrorKind::DescriptorMismatch {
            index,
            detail: format!(
                "--fd {spec}{} did not come back with the echo (the server dropped {})",
                if missing > 1 {
                    format!(" and {} more", missing - 1)
                } else {
                    String::new()
                },
                if missing > 1 { "them" } else { "it" }
            ),
        })
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    use crate::descriptors::FdSpec;

    /// Review F6: a server that floods descriptors past our limit was blamed on the limit
    /// (exit 1) instead of being a mismatch (exit 3).
    #[test]
    fn more_than_were_sent_is_a_mismatch_even_when_they_overflowed_our_limit() {
        let file = tempfile::tempfile().unwrap();
        let passing = Passing::open(&[FdSpec::Inherited(file.as_raw_fd())]).unwrap();
        let mut check = FdCheck::new(passing);
        let flood = Returned {
            fds: (0..3)
                .map(|_| file.as_fd().try_clone_to_owned().unwrap())
                .collect(),
            truncated: true,
        };
        let err = check.returned(flood, 1).unwrap_err();
        assert!(matches!(err, ErrorKind::DescriptorMismatch { .. }), "{err}");
    }

    #[test]
    fn the_check_wants_the_same_files_in_order_and_all_of_them() {
        let (a, b) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let passing = Passing::open(&[
            FdSpec::Inherited(a.as_raw_fd()),
            FdSpec::Inherited(b.as_raw_fd()),
        ])
        .unwrap();
        let back = |fds: &[&std::fs::File]| Returned {
            fds: fds
                .iter()
                .map(|f| f.as_fd().try_clone_to_owned().unwrap())
                .collect(),
            truncated: false,
        };
        let mut check = FdCheck::new(passing.clone());
        check.returned(back(&[&a, &b]), 1).unwrap();
        check.echoed(1).unwrap();
        let err = check.echoed(2).unwrap_err();
        assert!(err.to_string().contains("message 2"), "{err}");
        assert!(err.to_string().contains("dropped them"), "{err}");

        let mut swapped = FdCheck::new(passing.clone());
        let err = swapped.returned(back(&[&b, &a]), 1).unwrap_err();
        assert!(err.to_string().contains("as a different file"), "{err}");

        let mut extra = FdCheck::new(passing);
        let err = extra.returned(back(&[&a, &b, &a]), 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("3 descriptors came back, more than the 2"),
            "{err}"
        );
    }
}
