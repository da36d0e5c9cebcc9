//! `udsecho-client`: flags in, one line out on failure.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use udsecho_client::bench::{self, BenchOptions};
use udsecho_client::send::{self, SendOptions};
use udsecho_client::{ClientError, Target, pipe};

/// A client for udsecho (and any `nc -U` peer): pipe, send, bench.
///
/// With no subcommand it is a pipe, like `nc -U PATH`: stdin goes to the socket and the socket
/// to stdout; on stdin EOF it half-closes, prints the rest of the echo, and exits when the
/// server closes.
///
/// Exit status: 0 on success; 1 when the socket cannot be reached or the exchange fails (the
/// message names the socket and the cause); 2 for bad flags; 3 when an echo differed from what
/// was sent.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about,
    max_term_width = 100,
    args_conflicts_with_subcommands = false
)]
struct Cli {
    /// Print a man page (`man`) or shell completions (`bash`, `zsh`, `fish`) and exit
    #[arg(long, hide = true, value_name = "WHAT", value_parser = ["man", "bash", "zsh", "fish"])]
    generate: Option<String>,

    /// Socket to connect to; `@name` is a Linux abstract socket
    /// [default: echo.sock in $XDG_RUNTIME_DIR/udsecho/, else /run/udsecho/ for root,
    /// /tmp/udsecho-$UID/ for others, as the server]
    #[arg(
        short,
        long,
        global = true,
        env = "UDSECHO_SOCKET",
        value_name = "PATH"
    )]
    socket: Option<String>,

    /// Speak udsecho frames instead of raw bytes (pipe: one frame per stdin line)
    #[arg(long, global = true)]
    framed: bool,

    /// Give up connecting, or waiting for an echo, after this long
    #[arg(long, global = true, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// stdin to the socket, the socket to stdout (the default)
    Pipe,
    /// Send a message every interval and check each echo (the classic demo)
    Send {
        /// The message to send
        #[arg(short, long, default_value = "olá mundo")]
        message: String,
        /// Time between messages
        #[arg(short, long, value_name = "DUR", default_value = "400ms", value_parser = parse_duration)]
        interval: Duration,
        /// How many to send [default: until Ctrl-C]
        #[arg(short = 'n', long, value_name = "N")]
        count: Option<u64>,
    },
    /// Measure round trips/s, MB/s and latency against a server
    Bench {
        /// Connections open at once
        #[arg(short, long, value_name = "N", default_value_t = 1)]
        connections: usize,
        /// How long to measure
        #[arg(short, long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Payload bytes per message (KiB/MiB suffixes allowed)
        #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
        size: usize,
        /// raw bytes or framed Data frames
        #[arg(long, value_enum, default_value_t = BenchMode::Raw)]
        mode: BenchMode,
        /// Messages in flight per connection (1 = ping-pong)
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        pipeline: u32,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchMode {
    Raw,
    Framed,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 400ms, 2s, 1m)"))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let bytes = s
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("{e} (write sizes like 64, 16KiB, 1MiB)"))?
        .as_u64();
    match usize::try_from(bytes) {
        Ok(0) => Err("must be at least 1 byte".to_owned()),
        Ok(n) if n <= 64 << 20 => Ok(n),
        _ => Err("at most 64MiB".to_owned()),
    }
}

/// Lets bench open as many connections as the hard limit allows.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(what) = &cli.generate {
        return generate(what);
    }
    let target = match &cli.socket {
        Some(s) => Target::parse(s),
        None => Target::default_path(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("udsecho-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&cli, &target));
    // A stdin read may still be parked on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udsecho-client: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: &Cli, target: &Target) -> Result<(), ClientError> {
    let socket = target.to_string();
    match &cli.command {
        None | Some(Command::Pipe) => {
            let stream = target.connect(cli.timeout).await?;
            if cli.framed {
                pipe::framed(stream, &socket, tokio::io::stdin(), tokio::io::stdout()).await
            } else {
                pipe::raw(stream, &socket, tokio::io::stdin(), tokio::io::stdout()).await
            }
        }
        Some(Command::Send {
            message,
            interval,
            count,
        }) => {
            let stream = target.connect(cli.timeout).await?;
            let options = SendOptions {
                message: message.clone().into(),
                interval: *interval,
                count: *count,
                framed: cli.framed,
                timeout: cli.timeout,
            };
            let ctrl_c = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let mut out = std::io::stdout();
            let summary = send::run(stream, &socket, &options, ctrl_c, &mut out).await?;
            let missing = summary.sent - summary.received;
            eprintln!(
                "{} sent, {} echoed intact{}",
                summary.sent,
                summary.received,
                if missing > 0 {
                    format!(", {missing} not echoed before stopping")
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Some(Command::Bench {
            connections,
            duration,
            size,
            mode,
            pipeline,
            json,
        }) => {
            raise_fd_limit();
            let options = BenchOptions {
                connections: (*connections).max(1),
                duration: *duration,
                size: *size,
                framed: cli.framed || matches!(mode, BenchMode::Framed),
                pipeline: *pipeline as usize,
                timeout: cli.timeout,
                progress: bench::stdout_is_terminal() && !json,
            };
            let report = bench::run(target, &options).await?;
            let mut out = std::io::stdout();
            let written = if *json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                writeln!(
                    out,
                    "{} mode, {} connection(s), pipeline {}, {} B messages, {:.1} s\n\
                     round trips/s: {:.0}\nMB/s:          {:.1}\n\
                     latency (µs):  p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
                    report.mode,
                    report.connections,
                    report.pipeline,
                    report.size,
                    report.seconds,
                    report.round_trips_per_sec,
                    report.mb_per_sec,
                    report.latency_us.p50,
                    report.latency_us.p99,
                    report.latency_us.p999,
                    report.latency_us.max
                )
            };
            written.map_err(|e| ClientError::Io {
                socket: "stdout".to_owned(),
                what: "writing",
                source: e,
            })
        }
    }
}

/// Writes the man page or a completion script, generated from the flag definitions.
fn generate(what: &str) -> ExitCode {
    let mut command = Cli::command();
    let mut out = std::io::stdout();
    let written = match what {
        "man" => clap_mangen::Man::new(command).render(&mut out),
        shell => match shell.parse::<clap_complete::Shell>() {
            Ok(shell) => {
                clap_complete::generate(shell, &mut command, "udsecho-client", &mut out);
                Ok(())
            }
            Err(e) => Err(std::io::Error::other(e)),
        },
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udsecho-client: --generate {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
