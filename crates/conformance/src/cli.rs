//! The conformance runner's command line: its flags (clap derive) and what the man pages say
//! beyond them. Part of the binary; `main.rs` runs what it asks for.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use udsecho_unix::generate::Docs;

use crate::case::Feature;

/// Checks an implementation of udsecho's wire protocol (PROTOCOL.md) against its rules.
///
/// `server` tests a server: the runner is the client. `client` tests a client: the runner is
/// the server, on a fresh temporary socket per case. Every case has an id that names the
/// PROTOCOL.md section it checks (`3/length-over-max`, `4.1/negotiate-down`) and a verdict:
/// OK, NON-STRICT (allowed, not recommended: the reason is shown), UNIMPLEMENTED (an optional
/// feature is absent, and the target was seen doing what an implementation without it may
/// do) or FAILED (with the bytes expected and seen, in hex). The summary's last line is
/// `N passed, N failed`.
///
/// Exit status: 0 when no case failed, 1 when one did, 2 for bad flags or a target that
/// cannot be started or reached.
#[derive(Debug, Parser)]
#[command(
    version,
    propagate_version = true,
    about,
    long_about,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Mode,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Mode {
    /// Test a server implementation (the runner is its client)
    Server {
        /// A server already listening on this socket; all cases share it (the shutdown cases
        /// signal the server: they need --cmd and are not run)
        #[arg(short, long, value_name = "PATH", required_unless_present_any = ["cmd", "list"], conflicts_with = "cmd")]
        socket: Option<PathBuf>,
        /// A command that serves on `{sock}`, started afresh for each case, run by `sh -c`,
        /// e.g. 'udsecho-server --socket {sock}'; SIGTERM must start its graceful shutdown
        #[arg(long, value_name = "COMMAND")]
        cmd: Option<String>,
        /// Hold the server to these optional behaviours: a case that finds one absent
        /// (UNIMPLEMENTED) or not done as recommended (NON-STRICT) fails
        #[arg(long, value_name = "FEATURE", value_delimiter = ',')]
        require: Vec<Feature>,
        /// Require every optional behaviour (--require framed,raw,drain,cut-through): the
        /// whole text, as udsecho-server holds itself to it
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Test a client implementation (the runner is its server)
    Client {
        /// A command that connects to `{sock}`, sends its standard input as Data frames in a
        /// framed session, and exits 0 when the session went well, e.g.
        /// 'udsecho-client pipe --framed --socket {sock}'
        #[arg(long, value_name = "COMMAND", required_unless_present = "list")]
        cmd: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Run only these cases: ids, globs (`4.1/*`) or sections (`3.2`); repeat or separate
    /// with commas
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub(crate) cases: Vec<String>,
    /// Leave these cases out (same patterns as --cases)
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub(crate) exclude: Vec<String>,
    /// Also write the results as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Also write the results as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) junit: Option<PathBuf>,
    /// The longest any single wait may take (a peer silent for longer fails the case); a
    /// case as a whole ends within this plus 3 s, whatever the target does
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_timeout)]
    pub(crate) timeout: Duration,
    /// List the selected cases (id and description) and run nothing
    #[arg(long)]
    pub(crate) list: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 500ms, 5s)"))?;
    if d < Duration::from_millis(300) || d > Duration::from_secs(3600) {
        return Err(
            "must be between 300ms and 1h (the protocol's pause alone is 200 ms)".to_owned(),
        );
    }
    Ok(d)
}

/// The man page's EXIT STATUS section.
const EXIT_STATUS: [(&str, &str); 3] = [
    (
        "0",
        "No case failed (OK, NON-STRICT and UNIMPLEMENTED all pass).",
    ),
    (
        "1",
        "At least one case FAILED, or a report file could not be written.",
    ),
    (
        "2",
        "Bad flags or values, a --cases/--exclude pattern that matches no case, a --cmd without {sock}, or a target that cannot be started or reached (one line on stderr, no case run).",
    ),
];

/// The man page's ENVIRONMENT section.
const ENVIRONMENT: [(&str, &str); 1] = [(
    "PATH",
    "The --cmd command runs under sh -c with the runner's environment; {sock} is replaced by the socket path, quoted where it stands outside quotes.",
)];

/// What `--generate` makes the man pages and completions from.
pub(crate) fn docs() -> Docs {
    Docs {
        command: Cli::command(),
        completion: Cli::command(),
        // `--generate man` without a directory is read as a shell name, as it always was.
        man_pages: None,
        environment: &ENVIRONMENT,
        exit_status: &EXIT_STATUS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
