//! `udsecho-conformance`: runs PROTOCOL.md's cases against a server or a client
//! implementation and reports a verdict per case.

mod case;
mod client;
mod report;
mod server;
mod target;
mod wire;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::case::{Case, Outcome, Verdict, select};
use crate::client::ClientCtx;
use crate::server::{NEED_COMMAND, ServerCtx, ServerTarget};

/// Checks an implementation of udsecho's wire protocol (PROTOCOL.md) against its rules.
///
/// `server` tests a server: the runner is the client. `client` tests a client: the runner is
/// the server, on a fresh temporary socket per case. Every case has an id that names the
/// PROTOCOL.md section it checks (`3/length-over-max`, `4.1/negotiate-down`) and a verdict:
/// OK, NON-STRICT (allowed, not recommended: the reason is shown), UNIMPLEMENTED (an optional
/// feature is absent) or FAILED (with the bytes expected and seen, in hex). The summary's last
/// line is `N passed, N failed`.
///
/// Exit status: 0 when no case failed, 1 when one did (or the target could not be started),
/// 2 for bad flags.
#[derive(Debug, Parser)]
#[command(
    version,
    propagate_version = true,
    about,
    long_about,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Test a server implementation (the runner is its client)
    Server {
        /// A server already listening on this socket; all cases share it (4/shutdown-drains
        /// needs --cmd and is not run)
        #[arg(short, long, value_name = "PATH", required_unless_present_any = ["cmd", "list"], conflicts_with = "cmd")]
        socket: Option<PathBuf>,
        /// A command that serves on `{sock}`, started afresh for each case, run by `sh -c`,
        /// e.g. 'udsecho-server --socket {sock}'; SIGTERM must start its graceful shutdown
        #[arg(long, value_name = "COMMAND")]
        cmd: Option<String>,
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
struct Common {
    /// Run only these cases: ids, globs (`4.1/*`) or sections (`3.2`); repeat or separate
    /// with commas
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    cases: Vec<String>,
    /// Leave these cases out (same patterns as --cases)
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    exclude: Vec<String>,
    /// Also write the results as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the results as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// The longest any single wait may take (a peer silent for longer fails the case)
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
    /// List the selected cases (id and description) and run nothing
    #[arg(long)]
    list: bool,
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

fn main() -> ExitCode {
    // Release tooling only (`cargo xtask dist`): not a flag, so it is in no help text and no
    // completion.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.get(1).is_some_and(|a| a == "--generate") {
        return generate(&args[2..]);
    }
    let cli = Cli::parse();
    match cli.command {
        Mode::Server {
            socket,
            cmd,
            common,
        } => {
            let target = match (socket, cmd) {
                (Some(path), _) => ServerTarget::Socket(path),
                (None, Some(cmd)) => ServerTarget::Command(cmd),
                // Only with --list, which runs nothing.
                (None, None) => ServerTarget::Socket(PathBuf::new()),
            };
            let skip: &[&str] = match target {
                ServerTarget::Socket(_) => &NEED_COMMAND,
                ServerTarget::Command(_) => &[],
            };
            let timeout = common.timeout;
            if let (ServerTarget::Socket(path), false) = (&target, common.list)
                && let Err(e) = std::os::unix::net::UnixStream::connect(path)
            {
                eprintln!(
                    "udsecho-conformance: cannot connect to {}: {e}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
            run(
                "server",
                &server::cases(),
                &common,
                skip,
                |case| match ServerCtx::new(&target, timeout) {
                    Ok(mut ctx) => (case.run)(&mut ctx),
                    Err(e) => Verdict::Failed(format!("starting the server: {e}")),
                },
            )
        }
        Mode::Client { cmd, common } => {
            let mut ctx = ClientCtx::new(cmd.unwrap_or_default(), common.timeout);
            run("client", &client::cases(), &common, &[], |case| {
                (case.run)(&mut ctx)
            })
        }
    }
}

/// Selects, runs and reports; the exit status.
fn run<Ctx>(
    mode: &str,
    all: &[Case<Ctx>],
    common: &Common,
    skip: &[&str],
    mut one: impl FnMut(&Case<Ctx>) -> Verdict,
) -> ExitCode {
    let selected = match select(all, &common.cases, &common.exclude) {
        Ok(selected) => selected,
        Err(e) => {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit();
        }
    };
    let mut out = std::io::stdout().lock();
    if common.list {
        for case in &selected {
            let _ = writeln!(out, "{:<40} {}", case.id, case.description);
        }
        return ExitCode::SUCCESS;
    }
    let mut outcomes = Vec::new();
    let mut skipped = Vec::new();
    for case in selected {
        if skip.contains(&case.id) {
            skipped.push(case.id);
            continue;
        }
        let start = Instant::now();
        let verdict = one(case);
        let outcome = Outcome {
            id: case.id,
            description: case.description,
            verdict,
            duration: start.elapsed(),
        };
        let _ = report::line(&mut out, &outcome);
        let _ = out.flush();
        outcomes.push(outcome);
    }
    let _ = report::summary(&mut out, &outcomes, &skipped);
    let mut status = if outcomes.iter().any(|o| o.verdict.failed()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    let files: [(&Option<PathBuf>, report::Writer); 2] =
        [(&common.json, report::json), (&common.junit, report::junit)];
    for (path, write) in files {
        if let Some(path) = path
            && let Err(e) = write(path, mode, &outcomes)
        {
            eprintln!("udsecho-conformance: writing {}: {e}", path.display());
            status = ExitCode::FAILURE;
        }
    }
    status
}

/// `--generate man DIR` writes the man pages into DIR; `--generate bash|zsh|fish` prints a
/// completion script. Used by `cargo xtask dist`.
fn generate(args: &[String]) -> ExitCode {
    let written = match args {
        [what, dir] if what == "man" => man_pages(std::path::Path::new(dir)),
        [shell] => completions(shell),
        _ => Err(std::io::Error::other(
            "usage: udsecho-conformance --generate man DIR | bash | zsh | fish",
        )),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udsecho-conformance: --generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The man page's EXIT STATUS section.
const EXIT_STATUS: [(&str, &str); 3] = [
    (
        "0",
        "No case failed (OK, NON-STRICT and UNIMPLEMENTED all pass).",
    ),
    (
        "1",
        "At least one case FAILED, the implementation could not be started, or a report file could not be written.",
    ),
    (
        "2",
        "Bad flags or values, or a --cases/--exclude pattern that matches no case.",
    ),
];

/// The man page's ENVIRONMENT section.
const ENVIRONMENT: [(&str, &str); 1] = [(
    "PATH",
    "The --cmd command runs under sh -c with the runner's environment; {sock} is replaced by a quoted socket path.",
)];

fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = vec![command.clone()];
    pages.extend(command.get_subcommands().cloned());
    for (i, page) in pages.into_iter().enumerate() {
        let main_page = i == 0;
        let man = clap_mangen::Man::new(page)
            .source(concat!("udsecho-conformance ", env!("CARGO_PKG_VERSION")));
        let path = dir.join(man.get_filename());
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        if main_page {
            man.render_subcommands_section(&mut out)?;
        }
        roff_section(&mut out, "ENVIRONMENT", &ENVIRONMENT)?;
        roff_section(&mut out, "EXIT STATUS", &EXIT_STATUS)?;
        man.render_version_section(&mut out)?;
        out.flush()?;
        println!("{}", path.display());
    }
    Ok(())
}

/// A man page section of tagged paragraphs, in roff.
fn roff_section(out: &mut impl Write, title: &str, items: &[(&str, &str)]) -> std::io::Result<()> {
    fn escape(text: &str) -> String {
        let text = text.replace('\\', "\\e").replace('-', "\\-");
        if text.starts_with(['.', '\'']) {
            format!("\\&{text}")
        } else {
            text
        }
    }
    writeln!(out, ".SH \"{title}\"")?;
    for (term, text) in items {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(text))?;
    }
    Ok(())
}

fn completions(shell: &str) -> std::io::Result<()> {
    let shell: clap_complete::Shell = shell.parse().map_err(std::io::Error::other)?;
    let name = "udsecho-conformance";
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), name, &mut script);
    let mut script = String::from_utf8(script).map_err(std::io::Error::other)?;
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash labels a subcommand's case with each `-` of the binary's name
        // turned into `__subcmd__` but sets `cmd` with `-` turned into `__`, so no
        // subcommand's flags would complete (the client works around it the same way).
        script = script.replace(
            &format!("{}__subcmd__", name.replace('-', "__subcmd__")),
            &format!("{}__subcmd__", name.replace('-', "__")),
        );
    }
    std::io::stdout().write_all(script.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn case_ids_are_unique_and_name_a_section() {
        let mut ids: Vec<&str> = server::cases().iter().map(|c| c.id).collect();
        ids.extend(client::cases().iter().map(|c| c.id));
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "duplicate ids");
        for id in ids {
            let section = id.split('/').next().unwrap();
            assert!(
                [
                    "1", "2", "3", "3.1", "3.2", "3.3", "4", "4.1", "4.2", "4.3", "6"
                ]
                .contains(&section),
                "{id}"
            );
        }
    }
}
