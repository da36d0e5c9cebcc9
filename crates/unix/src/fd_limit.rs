//! Raising the open-file limit (`RLIMIT_NOFILE`): the soft limit is often 1024, far below
//! what a server holding connections, a load generator opening them, or a client taking back
//! the descriptors it passed may need. Each binary asks for what it wants ([`Wanted`]) and
//! decides what a failure means (the server logs it, the client's bench ignores it, the
//! client refuses to start under ten).

use std::fmt;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// How far to raise the soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// As far as the hard limit allows.
    Hard,
    /// At least this many, within the hard limit (a soft limit already as high is left as it
    /// is; a hard limit below it is as far as it goes).
    AtLeast(u64),
    /// At least this many, raising the hard limit too where the process may (root, or
    /// `CAP_SYS_RESOURCE`); else as far as the hard limit allows.
    BeyondHard(u64),
}

/// The limit could not be raised: the system's refusal, and the soft limit still in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitError {
    /// Why `setrlimit` failed.
    pub errno: rustix::io::Errno,
    /// The soft limit in force (`None`: unlimited).
    pub limit: Option<u64>,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Some(limit) => write!(f, "the descriptor limit stays {limit}: {}", self.errno),
            None => write!(f, "{}", self.errno),
        }
    }
}

impl std::error::Error for LimitError {}

/// Raises this process's soft descriptor limit as `wanted` says (children inherit it); the
/// soft limit now in force (`None`: unlimited).
///
/// ```
/// use udsecho_unix::fd_limit::{Wanted, raise_fd_limit};
///
/// let now = raise_fd_limit(Wanted::AtLeast(64))?;
/// assert!(now.is_none_or(|n| n >= 64));
/// # Ok::<(), udsecho_unix::fd_limit::LimitError>(())
/// ```
pub fn raise_fd_limit(wanted: Wanted) -> Result<Option<u64>, LimitError> {
    let limit = getrlimit(Resource::Nofile);
    let refused = |errno| LimitError {
        errno,
        limit: limit.current,
    };
    let to_hard = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match wanted {
        Wanted::Hard if below(limit.current, limit.maximum) => setrlimit(Resource::Nofile, to_hard)
            .map(|()| limit.maximum)
            .map_err(refused),
        Wanted::AtLeast(n) => {
            let soft = Some(limit.maximum.map_or(n, |hard| n.min(hard)));
            if !below(limit.current, soft) {
                return Ok(limit.current);
            }
            let raised = Rlimit {
                current: soft,
                maximum: limit.maximum,
            };
            setrlimit(Resource::Nofile, raised)
                .map(|()| soft)
                .map_err(refused)
        }
        Wanted::BeyondHard(n) if below(limit.current, Some(n)) => {
            let raised = Rlimit {
                current: Some(n),
                maximum: if below(limit.maximum, Some(n)) {
                    Some(n)
                } else {
                    limit.maximum
                },
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => Ok(Some(n)),
                Err(_) if below(limit.current, limit.maximum) => {
                    setrlimit(Resource::Nofile, to_hard)
                        .map(|()| limit.maximum)
                        .map_err(refused)
                }
                Err(errno) => Err(refused(errno)),
            }
        }
        _ => Ok(limit.current),
    }
}

/// Whether limit `a` is below `b`, where `None` is unlimited (not the smallest, as `Option`'s
/// own order would have it).
fn below(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_is_above_every_limit() {
        assert!(below(Some(1024), None));
        assert!(!below(None, Some(1024)));
        assert!(!below(None, None));
        assert!(below(Some(1), Some(2)));
        assert!(!below(Some(2), Some(2)));
    }

    #[test]
    fn a_limit_already_high_enough_is_left_alone() {
        let before = getrlimit(Resource::Nofile);
        assert_eq!(raise_fd_limit(Wanted::AtLeast(3)), Ok(before.current));
        assert_eq!(raise_fd_limit(Wanted::BeyondHard(3)), Ok(before.current));
        let after = getrlimit(Resource::Nofile);
        assert_eq!(
            (after.current, after.maximum),
            (before.current, before.maximum)
        );
    }
}
