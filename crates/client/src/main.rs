//! `udsecho-client`: flags in, one line out on failure.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum, ValueHint};
use udsecho_client::bench::{self, BenchOptions};
use udsecho_client::send::{self, SendOptions, SendSummary};
use udsecho_client::{ClientError, ErrorKind, SocketType, Target, pipe, report};

/// A client for udsecho (and any `nc -U` peer): pipe, send, bench.
///
/// With no subcommand it is a pipe, like `nc -U SOCKET`: stdin goes to the socket and the
/// socket to stdout; on stdin EOF it half-closes, prints the rest of the echo, and exits when
/// the server closes.
///
/// Exit status: 0 on success; 1 when the socket cannot be reached or the exchange fails (the
/// message names the socket and the cause); 2 for bad flags; 3 when an echo differed from what
/// was sent.
#[derive(Debug, Parser)]
#[command(
    name = "udsecho-client",
    version,
    propagate_version = true,
    about,
    long_about,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    path: SocketArg,

    /// Socket to connect to; `@name` is a Linux abstract socket
    /// [default: echo.sock in $XDG_RUNTIME_DIR/udsecho/, else /run/udsecho/ for root,
    /// /tmp/udsecho-$UID/ for others, as the server]
    #[arg(
        short,
        long,
        global = true,
        env = "UDSECHO_SOCKET",
        value_name = "PATH",
        value_parser = socket_path,
        value_hint = ValueHint::FilePath
    )]
    socket: Option<String>,

    /// Speak udsecho frames instead of raw bytes (stream only)
    #[arg(long, global = true)]
    framed: bool,

    /// The server's socket type: a byte stream (as nc -U), messages over a connection, or
    /// datagrams (replies come back to a private autobind address)
    #[arg(long = "type", global = true, value_name = "TYPE", value_enum, default_value_t = TypeArg::Stream)]
    socket_type: TypeArg,

    /// Short for --type datagram, as in nc
    #[arg(short = 'u', global = true)]
    datagram: bool,

    /// Give up connecting, or waiting for the server (handshake, each echo), after this long
    #[arg(long, global = true, value_name = "DUR", default_value = "10s", value_parser = positive_duration)]
    timeout: Duration,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The socket as a plain argument, as `nc -U SOCKET` takes it.
#[derive(Debug, Args)]
struct SocketArg {
    /// Socket to connect to, as with `nc -U` (the same as --socket)
    #[arg(value_name = "SOCKET", value_parser = socket_path, value_hint = ValueHint::FilePath)]
    path: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy stdin to the socket and the socket to stdout, like `nc -U` (the default)
    ///
    /// Binary-safe. On stdin EOF it half-closes and prints the rest of the echo until the
    /// server closes; after the server's EOF it still sends the rest of stdin. With --framed,
    /// each stdin line is sent as one Data frame and each echo printed as a line. With --type
    /// seqpacket each stdin read is one message; with --type datagram each line is one
    /// datagram, and it ends once stdin has ended and every reply has come (each due within
    /// --timeout).
    Pipe {
        #[command(flatten)]
        path: SocketArg,
    },
    /// Send a message every interval and check each echo (the classic demo)
    Send {
        #[command(flatten)]
        path: SocketArg,
        /// The message to send
        #[arg(short, long, value_name = "TEXT", default_value = "olá mundo", value_parser = non_empty_message)]
        message: String,
        /// Time between messages
        #[arg(short, long, value_name = "DUR", default_value = "400ms", value_parser = positive_duration)]
        interval: Duration,
        /// How many to send [default: until Ctrl-C]
        #[arg(short = 'n', long, value_name = "N", value_parser = parse_count)]
        count: Option<u64>,
    },
    /// Measure round trips/s, MB/s and latency against a server
    Bench {
        #[command(flatten)]
        path: SocketArg,
        /// Connections open at once
        #[arg(short, long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        connections: u32,
        /// How long to measure
        #[arg(short, long, value_name = "DUR", default_value = "5s", value_parser = positive_duration)]
        duration: Duration,
        /// Payload bytes per message (KiB/MiB suffixes allowed)
        #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
        size: usize,
        /// Raw bytes or framed Data frames (--framed is the same as --mode framed)
        #[arg(long, value_enum, default_value_t = BenchMode::Raw)]
        mode: BenchMode,
        /// Messages in flight per connection (1 = ping-pong)
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        pipeline: u32,
        /// Threads, each with its own runtime; connection i runs on thread i mod N [default:
        /// the cores given, or half the machine when given all of it]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

/// `--type`, as clap sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TypeArg {
    Stream,
    Seqpacket,
    Datagram,
}

impl From<TypeArg> for SocketType {
    fn from(arg: TypeArg) -> SocketType {
        match arg {
            TypeArg::Stream => SocketType::Stream,
            TypeArg::Seqpacket => SocketType::Seqpacket,
            TypeArg::Datagram => SocketType::Datagram,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchMode {
    Raw,
    Framed,
}

/// The longest duration any flag takes: beyond it a wait means "never", and deadlines
/// computed from it must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 400ms, 2s, 1m)"))?;
    if d.is_zero() {
        Err("must be more than 0 (write durations like 400ms, 2s, 1m)".to_owned())
    } else if d > MAX_DURATION {
        Err("at most 1 year".to_owned())
    } else {
        Ok(d)
    }
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

fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 (leave --count out to send until Ctrl-C)".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number of messages, at least 1)")),
    }
}

fn socket_path(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the socket path must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn non_empty_message(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the message must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

impl Cli {
    /// Parses the command line; exits 2 with clap's message on bad flags.
    fn parse_checked() -> (Cli, Target) {
        let matches = Cli::command()
            .try_get_matches()
            .unwrap_or_else(|e| hint_at_the_right_flag(e).exit());
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if cli.datagram {
            if cli.socket_type != TypeArg::Datagram
                && type_source(&matches) == Some(ValueSource::CommandLine)
            {
                usage_error(&format!(
                    "-u means --type datagram; it contradicts --type {}",
                    SocketType::from(cli.socket_type)
                ));
            }
            cli.socket_type = TypeArg::Datagram;
        }
        let framed = cli.framed
            || matches!(
                cli.command,
                Some(Command::Bench {
                    mode: BenchMode::Framed,
                    ..
                })
            );
        if let Some(Command::Bench {
            mode: BenchMode::Raw,
            ..
        }) = cli.command
            && cli.framed
            && matches
                .subcommand_matches("bench")
                .and_then(|bench| bench.value_source("mode"))
                == Some(ValueSource::CommandLine)
        {
            usage_error(
                "--framed contradicts --mode raw: bench speaks one or the other (--framed is \
                 --mode framed; drop one of them)",
            );
        }
        match cli.socket_type {
            TypeArg::Stream => {}
            TypeArg::Seqpacket if framed => usage_error(
                "--framed makes no sense with --type seqpacket: each message keeps its boundaries already",
            ),
            TypeArg::Datagram if framed => usage_error(
                "--framed makes no sense with --type datagram: each datagram is a message already",
            ),
            TypeArg::Seqpacket | TypeArg::Datagram => {}
        }
        let positional = match &cli.command {
            None => &cli.path,
            Some(
                Command::Pipe { path } | Command::Send { path, .. } | Command::Bench { path, .. },
            ) => {
                if cli.path.path.is_some() && path.path.is_some() {
                    usage_error("the socket is given twice, before and after the subcommand");
                }
                if path.path.is_some() { path } else { &cli.path }
            }
        };
        // An argument beats UDSECHO_SOCKET; against --socket it is a contradiction.
        let from_flag = matches!(socket_source(&matches), Some(ValueSource::CommandLine));
        let socket = match (&positional.path, &cli.socket) {
            (Some(arg), Some(flag)) if from_flag && arg != flag => usage_error(&format!(
                "the socket is given twice: `{flag}` with --socket and `{arg}` as an argument"
            )),
            (Some(arg), _) => Target::parse(arg),
            (None, Some(flag)) => Target::parse(flag),
            (None, None) => Target::default_path(),
        };
        (cli, socket)
    }
}

/// Where `--socket` came from (a global flag lands in the subcommand's matches when given
/// after it).
fn socket_source(matches: &clap::ArgMatches) -> Option<ValueSource> {
    global_source(matches, "socket")
}

/// Where `--type` came from.
fn type_source(matches: &clap::ArgMatches) -> Option<ValueSource> {
    global_source(matches, "socket_type")
}

/// Where the global flag `id` came from, given before or after the subcommand.
fn global_source(matches: &clap::ArgMatches, id: &str) -> Option<ValueSource> {
    let here = matches.value_source(id);
    match matches.subcommand() {
        Some((_, sub)) => match sub.value_source(id) {
            Some(ValueSource::CommandLine) => Some(ValueSource::CommandLine),
            _ => here,
        },
        None => here,
    }
}

/// A flag that belongs to another subcommand gets a usage error naming the right one (`send
/// -c 3`: the count is `-n`); any other parse error is clap's own.
fn hint_at_the_right_flag(error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = flag.split('=').next().unwrap_or(flag);
    let subcommand = std::env::args().skip(1).find_map(|a| match a.as_str() {
        "send" | "bench" | "pipe" => Some(a),
        _ => None,
    });
    let hint = match (subcommand.as_deref(), flag) {
        (Some("send"), "-c" | "--connections") => {
            "send counts with -n N (--count N); -c is bench's --connections"
        }
        (Some("bench"), "-n" | "--count") => {
            "bench counts connections with -c N (--connections N) and runs for -d DUR \
             (--duration DUR); -n is send's --count"
        }
        (Some("pipe") | None, "-n" | "--count" | "-c" | "--connections") => {
            "the pipe sends what stdin holds; -n N (--count) is send's, -c N (--connections) \
             bench's"
        }
        _ => return error,
    };
    Cli::command().error(
        ErrorKind::UnknownArgument,
        format!(
            "unexpected argument '{flag}' for {}: {hint}",
            subcommand.as_deref().unwrap_or("the pipe")
        ),
    )
}

/// The subcommand `word` was probably meant to be, when it names no socket: within two
/// edits of one, or the start of one (`sned`, `bnech`, `sen`). A word with a `/` or a `.`
/// looks like a path and gets no guess.
fn did_you_mean(word: &str) -> Option<&'static str> {
    if word.contains(['/', '.']) || word.is_empty() {
        return None;
    }
    ["send", "bench", "pipe"]
        .into_iter()
        .map(|name| (strsim::damerau_levenshtein(word, name), name))
        .filter(|&(distance, name)| distance <= 2 || (word.len() >= 2 && name.starts_with(word)))
        .min()
        .map(|(_, name)| name)
}

fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
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
    // Release tooling only (`cargo xtask dist`): not a flag, so it is in no help text and no
    // completion.
    // `args_os`: a path that is not UTF-8 must not panic before clap can say so.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--generate") {
        let args: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return generate(&args);
    }
    let (cli, target) = Cli::parse_checked();
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
    let result = match &cli.command {
        None | Some(Command::Pipe { .. }) if !cli.framed && cli.socket_type == TypeArg::Stream => {
            raw_pipe(&runtime, &cli, &target)
        }
        _ => runtime.block_on(run(&cli, &target)),
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
            if let (ErrorKind::NoSuchSocket, Some(word)) = (e.kind(), &cli.path.path)
                && let Some(meant) = did_you_mean(word)
            {
                line = format!("{word}: no such socket (did you mean '{meant}'?)");
            }
            eprintln!("udsecho-client: {line}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Raw pipe: connect within the runtime, then copy on plain threads (see `pipe::raw`).
fn raw_pipe(
    runtime: &tokio::runtime::Runtime,
    cli: &Cli,
    target: &Target,
) -> Result<(), ClientError> {
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
        std::fs::File::from(stdin),
        std::fs::File::from(stdout),
    )
}

async fn run(cli: &Cli, target: &Target) -> Result<(), ClientError> {
    let socket_type = SocketType::from(cli.socket_type);
    match &cli.command {
        None | Some(Command::Pipe { .. }) if socket_type != SocketType::Stream => {
            let socket = target.connect_messages(socket_type, cli.timeout).await?;
            pipe::messages(
                socket,
                target,
                cli.timeout,
                tokio::io::stdin(),
                tokio::io::stdout(),
            )
            .await
        }
        None | Some(Command::Pipe { .. }) => {
            let stream = target.connect(cli.timeout).await?;
            pipe::framed(
                stream,
                target,
                cli.timeout,
                tokio::io::stdin(),
                tokio::io::stdout(),
            )
            .await
        }
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
                framed: cli.framed,
                timeout: cli.timeout,
            };
            let ctrl_c = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let mut out = std::io::stdout();
            let summary = if socket_type == SocketType::Stream {
                let stream = target.connect(cli.timeout).await?;
                send::run(stream, target, &options, ctrl_c, &mut out).await?
            } else {
                let socket = target.connect_messages(socket_type, cli.timeout).await?;
                send::messages(socket, target, &options, ctrl_c, &mut out).await?
            };
            print_summary(&summary);
            Ok(())
        }
        Some(Command::Bench {
            connections,
            duration,
            size,
            mode,
            pipeline,
            threads,
            json,
            ..
        }) => {
            raise_fd_limit();
            let options = BenchOptions {
                connections: *connections as usize,
                threads: threads.map_or_else(bench::default_threads, |n| n as usize),
                duration: *duration,
                size: *size,
                framed: cli.framed || matches!(mode, BenchMode::Framed),
                socket_type,
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
                let what = match socket_type {
                    SocketType::Stream => format!("{} mode", report.mode),
                    other => other.to_string(),
                };
                writeln!(
                    out,
                    "{what}, {} connection{}, {} thread{}, pipeline {}, {} B messages, {:.1} s\n\
                     round trips/s: {:.0}\nMB/s:          {:.1}\n\
                     latency (µs):  p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
                    report.connections,
                    if report.connections == 1 { "" } else { "s" },
                    report.threads,
                    if report.threads == 1 { "" } else { "s" },
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
            written.map_err(|e| ClientError::new(target.clone(), ErrorKind::Stdout(e)))
        }
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
    eprintln!(
        "{fresh_line}{} sent, {} echoed intact{}",
        summary.sent,
        summary.received,
        if missing > 0 {
            format!(", {missing} not echoed before stopping")
        } else {
            String::new()
        }
    );
}

/// `--generate man DIR` writes a man page for the client and one per subcommand into DIR;
/// `--generate bash|zsh|fish` prints a completion script. Used by `cargo xtask dist`.
fn generate(args: &[String]) -> ExitCode {
    let written = match args {
        [what, dir] if what == "man" => man_pages(std::path::Path::new(dir)),
        [what] if what == "man" => {
            eprintln!(
                "udsecho-client: --generate man needs a directory: udsecho-client --generate man \
                 DIR (it writes udsecho-client.1 and one page per subcommand there)"
            );
            return ExitCode::from(2);
        }
        [shell] => completions(shell),
        _ => Err(std::io::Error::other(
            "usage: udsecho-client --generate man DIR | bash | zsh | fish",
        )),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udsecho-client: --generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The ENVIRONMENT section of every page: (variable, what it does).
const ENVIRONMENT: [(&str, &str); 3] = [
    (
        "UDSECHO_SOCKET",
        "The socket to connect to when neither a SOCKET argument nor --socket is given.",
    ),
    (
        "NO_COLOR",
        "Honoured trivially: the client writes no colour. The bench progress bar is drawn only when stdout is a terminal.",
    ),
    (
        "RUST_LOG",
        "Not read by the client, which writes no log; it filters the server's log (see udsecho-server(1)).",
    ),
];

/// The EXIT STATUS section of every page.
const EXIT_STATUS: [(&str, &str); 4] = [
    (
        "0",
        "Success. Also when stdout is closed by its reader (udsecho-client | head), as with nc.",
    ),
    (
        "1",
        "The socket cannot be reached (no such socket or directory, connection refused, permission denied, path too long, a server of another socket type, timed out), the server closed the connection early, went away or is in the other mode, a reply never came (datagrams can be dropped), or a protocol error. One line on stderr names the socket and the cause.",
    ),
    ("2", "Bad flags or values (usage error)."),
    ("3", "An echo differed from what was sent."),
];

fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = vec![command.clone()];
    pages.extend(command.get_subcommands().cloned());
    for (i, page) in pages.into_iter().enumerate() {
        let main_page = i == 0;
        let man = clap_mangen::Man::new(page)
            .source(concat!("udsecho-client ", env!("CARGO_PKG_VERSION")));
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
    // Without a subcommand the socket may come first (`udsecho-client SOCK`), but a shell's
    // completion reading `udsecho-client bench --` would then take `bench` for the socket
    // (zsh does, even for a hidden argument). Completions are made from the command without
    // that argument: they offer the subcommands there; `send SOCK` still completes files.
    let full = Cli::command();
    let mut command = clap::Command::new("udsecho-client")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(
            full.get_arguments()
                .filter(|a| a.get_id() != "path")
                .cloned(),
        )
        .subcommands(full.get_subcommands().cloned());
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    let mut script = String::from_utf8(script).map_err(std::io::Error::other)?;
    if shell == clap_complete::Shell::Bash {
        // clap_complete names a subcommand's case label after the binary with each `-` turned
        // into `__subcmd__` (`udsecho__subcmd__client__subcmd__bench`) but sets `cmd` with
        // `-` turned into `__` (`udsecho__client__subcmd__bench`), so no subcommand's flags
        // ever complete. Make the labels match.
        script = script.replace(
            &format!("{}__subcmd__", name.replace('-', "__subcmd__")),
            &format!("{}__subcmd__", name.replace('-', "__")),
        );
    }
    std::io::stdout().write_all(script.as_bytes())
}
