//! `udsecho-client`: flags in (`cli`), one line out on failure: runs the pipe, send or bench
//! the command line asks for over its transport, and prints the error chain once.

mod cli;

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use udsecho_client::bench::{self, BenchOptions};
use udsecho_client::send::{self, SendOptions, SendSummary};
use udsecho_client::{ClientError, ErrorKind, SocketType, Transport, pipe, report};
use udsecho_unix::fd_limit::{Wanted, raise_fd_limit};
use udsecho_unix::generate;

use crate::cli::{Cli, Command, Invocation, did_you_mean};

/// The fewest descriptors the client runs with: standard streams, the runtime's epoll set,
/// waker and signal pipe, the socket, a pidfd, and a few spare. Below that tokio's signal
/// handling panics instead of failing, so the client says so first.
const FEWEST_DESCRIPTORS: u64 = 10;

/// Raises a soft descriptor limit below [`FEWEST_DESCRIPTORS`] as far as the hard one allows;
/// `Err` with the limit when that is still too few.
fn enough_descriptors() -> Result<(), u64> {
    match raise_fd_limit(Wanted::AtLeast(FEWEST_DESCRIPTORS)) {
        Ok(Some(limit)) if limit < FEWEST_DESCRIPTORS => Err(limit),
        Ok(_) => Ok(()),
        Err(e) => Err(e.limit.unwrap_or(u64::MAX)),
    }
}

/// Writes one line to stderr. A stderr nobody reads (a closed pipe) drops it: the exit status
/// still says what happened, where `eprintln!` would panic.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn main() -> ExitCode {
    // Release tooling only (`cargo xtask dist`): not a flag, so it is in no help text and no
    // completion.
    // `args_os`: a path that is not UTF-8 must not panic before clap can say so.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(args) = generate::requested(&args) {
        return match generate::generate(&args, cli::docs()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failed) => {
                say(format_args!("udsecho-client: {}", failed.line));
                ExitCode::from(failed.status)
            }
        };
    }
    if let Err(limit) = enough_descriptors() {
        say(format_args!(
            "udsecho-client: the descriptor limit ({limit}) is too low to run: it needs at least \
             {FEWEST_DESCRIPTORS} (raise `ulimit -n`)"
        ));
        return ExitCode::from(1);
    }
    let cli = Cli::parse_checked();
    if cli.trace {
        udsecho_client::trace::enable();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(format_args!(
                "udsecho-client: cannot start the runtime: {e}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        None | Some(Command::Pipe { .. })
            if cli.transport == (Transport::Stream { framed: false }) =>
        {
            raw_pipe(&runtime, &cli)
        }
        _ => runtime.block_on(run(&cli)),
    };
    // A stdin read may still be parked on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `udsecho-client ... | head`: the reader has what it wanted.
        Err(e) if e.is_closed_stdout() => ExitCode::SUCCESS,
        Err(e) => {
            let mut line = report(&e);
            // `udsecho-client sned`: the word is a socket path (the nc habit), but when no such
            // socket exists it was probably a subcommand.
            if let (ErrorKind::NoSuchSocket, Some(word)) = (e.kind(), &cli.socket_word)
                && let Some(meant) = did_you_mean(word)
            {
                line = format!("{word}: no such socket (did you mean '{meant}'?)");
            }
            say(format_args!("udsecho-client: {line}"));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Raw pipe: connect within the runtime, then copy on plain threads (see `pipe::raw`).
fn raw_pipe(runtime: &tokio::runtime::Runtime, cli: &Invocation) -> Result<(), ClientError> {
    let target = &cli.target;
    let at = |kind| ClientError::new(target.clone(), kind);
    let stream = runtime.block_on(target.connect(cli.timeout))?;
    let stream = stream.into_std().map_err(|e| {
        at(ErrorKind::Io {
            doing: "setting up the socket",
            source: e,
        })
    })?;
    // Our own handles on fds 0 and 1, so reads and writes go straight to the kernel (std's
    // stdout is line-buffered and locked).
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| at(ErrorKind::Stdin(e)))?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| at(ErrorKind::Stdout(e)))?;
    pipe::raw(
        stream,
        target,
        &cli.descriptors,
        &cli.misbehave,
        cli.timeout,
        std::fs::File::from(stdin),
        std::fs::File::from(stdout),
    )
}

async fn run(cli: &Invocation) -> Result<(), ClientError> {
    let target = &cli.target;
    let socket_type = cli.transport.socket_type();
    match &cli.command {
        // A raw stream pipe does not come here: it runs on threads (`raw_pipe`).
        None | Some(Command::Pipe { .. }) => match cli.transport {
            Transport::Stream { .. } => {
                let stream = target.connect(cli.timeout).await?;
                pipe::framed(
                    stream,
                    target,
                    cli.timeout,
                    &cli.descriptors,
                    &cli.misbehave,
                    tokio::io::stdin(),
                    tokio::io::stdout(),
                )
                .await
            }
            Transport::Seqpacket | Transport::Datagram => {
                let socket = target.connect_messages(socket_type, cli.timeout).await?;
                pipe::messages(
                    socket,
                    target,
                    cli.timeout,
                    &cli.descriptors,
                    tokio::io::stdin(),
                    tokio::io::stdout(),
                )
                .await
            }
        },
        Some(Command::Send {
            message,
            interval,
            count,
            ..
        }) => {
            let options = SendOptions {
                message: message.clone().into(),
                interval: *interval,
                count: *count,
                timeout: cli.timeout,
                descriptors: cli.descriptors.clone(),
                misbehave: cli.misbehave.clone(),
            };
            let mut out = std::io::stdout();
            let connection = target.open(cli.transport, cli.timeout).await?;
            let summary = send::run(connection, target, &options, ctrl_c(), &mut out).await?;
            print_summary(&summary);
            Ok(())
        }
        Some(Command::Fault { control, command }) => {
            let control = udsecho_client::Target::parse(control);
            let answer =
                udsecho_client::control::command(&control, &command.join(" "), cli.timeout).await?;
            let mut out = std::io::stdout().lock();
            for line in answer {
                // A closed stdout loses the answer, not the command: it was carried out.
                let _ = writeln!(out, "{line}");
            }
            Ok(())
        }
        Some(Command::Bench {
            connections,
            duration,
            size,
            pipeline,
            threads,
            blocking,
            busy_poll,
            json,
            interval,
            ..
        }) => {
            // As many connections as the hard limit allows; fewer is what bench reports.
            let _ = raise_fd_limit(Wanted::Hard);
            let options = BenchOptions {
                connections: *connections as usize,
                threads: match (*blocking, threads) {
                    // A blocking client is a thread per connection.
                    (true, _) => *connections as usize,
                    (false, Some(n)) => *n as usize,
                    (false, None) => bench::default_threads(),
                },
                duration: *duration,
                size: *size,
                transport: cli.transport,
                pipeline: *pipeline as usize,
                timeout: cli.timeout,
                blocking: *blocking,
                busy_poll: busy_poll.unwrap_or_default(),
                // The --interval lines are the progress, on stderr.
                progress: bench::stdout_is_terminal() && !json && interval.is_none(),
                interval: *interval,
            };
            let report = bench::run(target, &options, ctrl_c()).await?;
            let mut out = std::io::stdout();
            let written = if *json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                let mut what = match socket_type {
                    SocketType::Stream => format!("{} mode", report.mode),
                    other => other.to_string(),
                };
                if report.blocking {
                    what.push_str(", blocking client");
                }
                if report.busy_poll_us > 0 {
                    what.push_str(&format!(", polling {} µs", report.busy_poll_us));
                }
                let seconds = if report.interrupted {
                    format!(
                        "interrupted after {:.1} s of {}",
                        report.seconds,
                        humantime::format_duration(*duration)
                    )
                } else {
                    format!("{:.1} s", report.seconds)
                };
                writeln!(
                    out,
                    "{what}, {} connection{}, {} thread{}, pipeline {}, {} B messages, {seconds}\n\
                     round trips/s: {:.0}\nMB/s:          {:.1}\n\
                     latency (µs):  p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
                    report.connections,
                    if report.connections == 1 { "" } else { "s" },
                    report.threads,
                    if report.threads == 1 { "" } else { "s" },
                    report.pipeline,
                    report.size,
                    report.round_trips_per_sec,
                    report.mb_per_sec,
                    report.latency_us.p50,
                    report.latency_us.p99,
                    report.latency_us.p999,
                    report.latency_us.max
                )
            };
            written.map_err(|e| ClientError::new(target.clone(), ErrorKind::Stdout(e)))
        }
    }
}

/// Resolves on Ctrl-C (SIGINT); never, where the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `N sent, M echoed intact`, on stderr. After Ctrl-C on a terminal the cursor sits after the
/// `^C` the terminal echoed, so the line starts on a fresh one.
fn print_summary(summary: &SendSummary) {
    let missing = summary.sent - summary.received;
    let fresh_line = if summary.stopped && std::io::stderr().is_terminal() {
        "\n"
    } else {
        ""
    };
    say(format_args!(
        "{fresh_line}{} sent, {} echoed intact{}",
        summary.sent,
        summary.received,
        if missing > 0 {
            format!(", {missing} not echoed before stopping")
        } else {
            String::new()
        }
    ));
}
