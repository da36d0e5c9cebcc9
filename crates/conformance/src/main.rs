//! `udsecho-conformance`: runs PROTOCOL.md's cases against a server or a client
//! implementation and reports a verdict per case.

mod case;
mod cli;
mod client;
mod report;
mod server;
mod target;
mod wire;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, Parser};
use udsecho_unix::generate;

use crate::case::{Case, Feature, Need, Outcome, Verdict, select};
use crate::cli::{Cli, Common, Mode};
use crate::client::ClientCtx;
use crate::server::{Profile, ServerCtx, ServerTarget};

/// Exit status for bad flags and for a target that cannot be started or reached.
const USAGE: u8 = 2;

/// One line to stderr, dropped if nobody can read it (a closed stderr must not turn an
/// error into a panic).
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "udsecho-conformance: {line}");
}

fn main() -> ExitCode {
    // Release tooling only (`cargo xtask dist`): not a flag, so it is in no help text and no
    // completion.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.get(1).is_some_and(|a| a == "--generate") {
        return match generate::generate(&args[2..], cli::docs()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failed) => {
                say(format_args!("{}", failed.line));
                ExitCode::from(failed.status)
            }
        };
    }
    let cli = Cli::parse();
    // Before any target starts: whatever it forks and orphans comes back to the runner.
    target::become_subreaper();
    let status = match cli.command {
        Mode::Server {
            socket,
            cmd,
            require,
            strict,
            common,
        } => {
            let required = if strict {
                vec![
                    Feature::Framed,
                    Feature::Raw,
                    Feature::Drain,
                    Feature::CutThrough,
                ]
            } else {
                require
            };
            let target = match (socket, cmd) {
                (Some(path), _) => ServerTarget::Socket(path),
                (None, Some(cmd)) => ServerTarget::Command(cmd),
                // Only with --list, which runs nothing.
                (None, None) => ServerTarget::Socket(PathBuf::new()),
            };
            run_server(&target, &common, &required)
        }
        Mode::Client { cmd, common } => run_client(cmd.unwrap_or_default(), &common),
    };
    target::kill_descendants();
    status
}

/// A `--cmd` must say where the socket is.
fn check_template(cmd: &str) -> Result<(), ExitCode> {
    if cmd.contains("{sock}") {
        return Ok(());
    }
    say(format_args!(
        "--cmd {:?} has no {{sock}}: the runner cannot tell the command which socket to use",
        report::printable(cmd)
    ));
    Err(ExitCode::from(USAGE))
}

fn run_server(target: &ServerTarget, common: &Common, required: &[Feature]) -> ExitCode {
    let all = server::cases();
    let selected = selection(&all, common);
    if common.list {
        return list(&selected);
    }
    if let ServerTarget::Command(cmd) = target
        && let Err(status) = check_template(cmd)
    {
        return status;
    }
    if let ServerTarget::Socket(path) = target
        && let Err(e) = std::os::unix::net::UnixStream::connect(path)
    {
        say(format_args!(
            "cannot connect to {}: {e}",
            report::printable(&path.display().to_string())
        ));
        return ExitCode::from(USAGE);
    }
    // Start it once, and look at what it speaks. A target that cannot start is one line.
    let profile = match ServerCtx::new(target, common.timeout, None) {
        Ok(ctx) => Profile::probe(&ctx),
        Err(e) => {
            say(format_args!("{e}"));
            return ExitCode::from(USAGE);
        }
    };
    let mut out = std::io::stdout().lock();
    let line = profile.line();
    let _ = report::target(&mut out, &line);
    let mut skipped = Vec::new();
    let outcomes = run_cases(&selected, &mut out, |case| {
        if case.needs.contains(&Need::Signal) && matches!(target, ServerTarget::Socket(_)) {
            skipped.push(case.id);
            return None;
        }
        let verdict = profile.verdict(case.needs).unwrap_or_else(|| {
            match ServerCtx::new(target, common.timeout, Some(&profile)) {
                Ok(mut ctx) => (case.run)(&mut ctx),
                Err(e) => Verdict::Failed(format!("starting the server: {e}")),
            }
        });
        Some(verdict.held_to(required))
    });
    let _ = report::summary(&mut out, &outcomes, &skipped);
    finish(
        common,
        report::Run {
            mode: "server",
            target: Some(&line),
        },
        &outcomes,
    )
}

fn run_client(cmd: String, common: &Common) -> ExitCode {
    let all = client::cases();
    let selected = selection(&all, common);
    if common.list {
        return list(&selected);
    }
    if let Err(status) = check_template(&cmd) {
        return status;
    }
    let mut ctx = ClientCtx::new(cmd, common.timeout);
    let mut out = std::io::stdout().lock();
    let mut cannot_start = None;
    let outcomes = run_cases(&selected, &mut out, |case| {
        if cannot_start.is_some() {
            return None;
        }
        ctx.begin();
        let verdict = (case.run)(&mut ctx);
        cannot_start = ctx.cannot_start.take();
        cannot_start.is_none().then_some(verdict)
    });
    if let Some(line) = cannot_start {
        say(format_args!("{line}"));
        return ExitCode::from(USAGE);
    }
    let _ = report::summary(&mut out, &outcomes, &[]);
    finish(
        common,
        report::Run {
            mode: "client",
            target: None,
        },
        &outcomes,
    )
}

/// The cases `--cases`/`--exclude` select; a pattern that matches nothing is a usage error.
fn selection<'a, Ctx>(all: &'a [Case<Ctx>], common: &Common) -> Vec<&'a Case<Ctx>> {
    match select(all, &common.cases, &common.exclude) {
        Ok(selected) => selected,
        Err(e) => {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit();
        }
    }
}

/// `--list`: ids and descriptions, nothing run.
fn list<Ctx>(selected: &[&Case<Ctx>]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for case in selected {
        let _ = writeln!(out, "{:<40} {}", case.id, case.description);
    }
    ExitCode::SUCCESS
}

/// Runs each case through `one` (None: not run), printing its line as it finishes (a
/// detail only when it differs from the one just printed: forty cases UNIMPLEMENTED for one
/// reason say it once).
fn run_cases<Ctx>(
    selected: &[&Case<Ctx>],
    out: &mut impl Write,
    mut one: impl FnMut(&Case<Ctx>) -> Option<Verdict>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for case in selected {
        let start = Instant::now();
        let Some(verdict) = one(case) else {
            continue;
        };
        let outcome = Outcome {
            id: case.id,
            description: case.description,
            needs: case.needs,
            verdict,
            duration: start.elapsed(),
        };
        let repeated = outcomes
            .last()
            .is_some_and(|last: &Outcome| last.verdict.detail() == outcome.verdict.detail());
        let _ = report::line(out, &outcome, !repeated);
        let _ = out.flush();
        outcomes.push(outcome);
    }
    outcomes
}

/// Writes the report files; the exit status.
fn finish(common: &Common, run: report::Run<'_>, outcomes: &[Outcome]) -> ExitCode {
    let mut status = if outcomes.iter().any(|o| o.verdict.failed()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    let files: [(&Option<PathBuf>, report::Writer); 2] =
        [(&common.json, report::json), (&common.junit, report::junit)];
    for (path, write) in files {
        if let Some(path) = path
            && let Err(e) = write(path, run, outcomes)
        {
            say(format_args!("writing {}: {e}", path.display()));
            status = ExitCode::FAILURE;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Only the shutdown cases signal the server; every case but the one about an empty
    /// connection needs one mode or the other.
    #[test]
    fn what_each_server_case_needs_is_declared() {
        for case in server::cases() {
            let signals = case.needs.contains(&Need::Signal);
            assert_eq!(signals, case.id.starts_with("4/shutdown-"), "{}", case.id);
            let modes = [Need::Framed, Need::Raw]
                .iter()
                .filter(|n| case.needs.contains(n));
            let expected = usize::from(case.id != "1/half-close-before-any-byte");
            assert_eq!(modes.count(), expected, "{}", case.id);
        }
    }
}
