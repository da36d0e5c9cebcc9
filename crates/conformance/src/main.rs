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

use crate::case::{Case, Outcome, Verdict, select};
use crate::cli::{Cli, Common, Mode};
use crate::client::ClientCtx;
use crate::server::{NEED_COMMAND, ServerCtx, ServerTarget};

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
                eprintln!("udsecho-conformance: {}", failed.line);
                ExitCode::from(failed.status)
            }
        };
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
}
