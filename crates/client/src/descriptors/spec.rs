//! What `--fd` takes: a descriptor number the client inherited, or a path ([`FdSpec`]), and
//! why one cannot be passed ([`FdError`]).

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::MAX_FDS;

/// What one `--fd` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdSpec {
    /// A descriptor this process inherited (`--fd 5` after `exec 5<file`).
    Inherited(RawFd),
    /// A file to open read-only.
    Path(PathBuf),
}

impl FdSpec {
    /// All digits is a descriptor number (a file named `3` is `./3`); anything else a path.
    pub fn parse(s: &str) -> Result<FdSpec, String> {
        if s.is_empty() {
            Err("the path must not be empty".to_owned())
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<RawFd>()
                .map(FdSpec::Inherited)
                .map_err(|_| format!("{s} is not a descriptor number (write ./{s} for a file)"))
        } else {
            Ok(FdSpec::Path(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for FdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdSpec::Inherited(n) => write!(f, "{n}"),
            // Escaped: a path's control characters must not start a line or drive a
            // terminal in an error message.
            FdSpec::Path(path) => {
                for c in path.to_string_lossy().chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A `--fd` that cannot be passed: the flag as given, and why.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// `--fd N` where this process has no descriptor N.
    #[error("--fd {0}: descriptor {0} is not open")]
    NotOpen(RawFd),
    /// Opening the path, or taking the inherited descriptor, failed (the cause is the source).
    #[error("--fd {spec}{}", if matches!(.spec, FdSpec::Inherited(_)) {
        ": cannot take the inherited descriptor (pidfd_getfd, Linux 5.6 and later)"
    } else { "" })]
    Unusable {
        /// The flag's value.
        spec: FdSpec,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// More than one message carries.
    #[error(
        "--fd is given {0} times; one message carries at most {MAX_FDS} descriptors (SCM_MAX_FD)"
    )]
    TooMany(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_a_descriptor_number_and_anything_else_a_path() {
        assert_eq!(FdSpec::parse("5"), Ok(FdSpec::Inherited(5)));
        assert_eq!(FdSpec::parse("./5"), Ok(FdSpec::Path("./5".into())));
        assert_eq!(
            FdSpec::parse("/etc/hosts"),
            Ok(FdSpec::Path("/etc/hosts".into()))
        );
        assert!(FdSpec::parse("99999999999").is_err());
        assert!(FdSpec::parse("").is_err());
    }

    /// Review F5: a path's control characters reached stderr raw.
    #[test]
    fn a_path_is_named_with_its_control_characters_escaped() {
        let spec = FdSpec::Path("/tmp/a\nb\u{1b}[2J".into());
        assert_eq!(spec.to_string(), "/tmp/a\\nb\\u{1b}[2J");
    }
}
