//! The client's command line: its flags (clap derive), the combinations clap cannot check
//! (`-u` against `--type`, `--framed` against a message socket, the socket given twice), a
//! usage error that names the right flag, the typo hint for a subcommand, and what the man
//! pages say beyond the flags. Part of the binary, not of the library.

use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum, ValueHint};
use udsecho_client::{FdSpec, Misbehaviour, Passing, SocketType, Target, Transport, report};
use udsecho_fault::FaultSpec;
use udsecho_unix::fd_limit::{Wanted, raise_fd_limit};
use udsecho_unix::generate::Docs;

/// A client for udsecho (and any `nc -U` peer): pipe, send, bench.
///
/// With no subcommand it is a pipe, like `nc -U SOCKET`: stdin goes to the socket and the
/// socket to stdout; on stdin EOF it half-closes, prints the rest of the echo, and exits when
/// the server closes.
///
/// Exit status: 0 on success; 1 when the socket cannot be reached or the exchange fails (the
/// message names the socket and the cause); 2 for bad flags; 3 when an echo differed from what
/// was sent (its bytes, or the descriptors passed with --fd).
#[derive(Debug, Parser)]
#[command(
    name = "udsecho-client",
    version,
    propagate_version = true,
    about,
    long_about,
    max_term_width = 100
)]
pub(crate) struct Cli {
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

    #[command(flatten)]
    fds: FdArgs,

    /// Misbehave on purpose, to test a server (the raw stream pipe; repeatable):
    /// slicer=N[,gap=DUR] sends in slices of N bytes, stop_reading=N stops reading the answer
    /// after N bytes (and closes --timeout later), limit_data=N closes after sending N
    /// bytes, half_close=N shuts the write side after N bytes. docs/faults.md has the grammar
    #[arg(long = "fault", global = true, value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<FaultSpec>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// `--fault`: the grammar shared with the server (`udsecho-fault`).
fn parse_fault(s: &str) -> Result<FaultSpec, String> {
    FaultSpec::parse(s).map_err(|e| e.why)
}

/// `--fd`, on the pipe (with or without `pipe`) and on `send`.
#[derive(Debug, Args)]
pub(crate) struct FdArgs {
    /// Pass this open file with each message (SCM_RIGHTS; repeatable, at most 253)
    ///
    /// PATH is opened read-only; a number (all digits) is a descriptor this process
    /// inherited, as in `udsecho-client SOCK --fd 5 5<file` (a file named 3 is ./3). send
    /// checks that the same open files come back with each echo, in order; pipe closes what
    /// comes back.
    #[arg(long = "fd", value_name = "PATH|N", value_parser = FdSpec::parse, value_hint = ValueHint::FilePath)]
    fds: Vec<FdSpec>,
}

/// The socket as a plain argument, as `nc -U SOCKET` takes it.
#[derive(Debug, Args)]
pub(crate) struct SocketArg {
    /// Socket to connect to, as with `nc -U` (the same as --socket)
    #[arg(value_name = "SOCKET", value_parser = socket_path, value_hint = ValueHint::FilePath)]
    path: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Copy stdin to the socket and the socket to stdout, like `nc -U` (the default)
    ///
    /// Binary-safe. On stdin EOF it half-closes and prints the rest of the echo until the
    /// server closes; after the server's EOF it still sends the rest of stdin. With --framed,
    /// each stdin line is sent as one Data frame and each echo printed as a line. With --type
    /// seqpacket each stdin read is one message; with --type datagram each line is one
    /// datagram, and it ends once stdin has ended and every reply has come (each due within
    /// --timeout). With --fd each stdin read (each line, framed or datagram) carries those
    /// descriptors; descriptors that come back are closed.
    Pipe {
        #[command(flatten)]
        path: SocketArg,
        #[command(flatten)]
        fds: FdArgs,
    },
    /// Send a message every interval and check each echo (the classic demo)
    ///
    /// Prints `sent:` and `received:` lines and exits 3 if an echo differs. With --fd each
    /// message carries those descriptors, and the same open files must come back with the
    /// echoes, in order (exit 3 otherwise, naming the descriptor).
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
        #[command(flatten)]
        fds: FdArgs,
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
        /// Be a client that blocks in `read` for each echo (write, then sleep until the echo
        /// is back), the way most programs talk to a socket: one thread per connection, raw
        /// stream ping-pong only
        #[arg(long, conflicts_with = "threads")]
        blocking: bool,
        /// Poll the sockets this long after the last event before sleeping, so the figures
        /// are the server's, not this client's wake-ups (raw stream ping-pong; costs a core
        /// per thread while it runs) [default: 0, sleep at once]
        #[arg(long, value_name = "DUR", value_parser = parse_busy_poll)]
        busy_poll: Option<Duration>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Change a server's faults while it runs, through its control socket
    ///
    /// `udsecho-server --control PATH` takes one command a line: `add SPEC` (answers `ok
    /// ID`), `remove ID`, `list` (a line per fault), `clear`. The answer is printed; a
    /// refused command exits 1 with the server's reason. docs/faults.md has the grammar.
    Fault {
        /// The server's control socket (its --control)
        #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
        control: String,
        /// The command: add SPEC, remove ID, list or clear
        #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
        command: Vec<String>,
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
pub(crate) enum BenchMode {
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

/// `bench --busy-poll`: 0 (off) up to a second, as the server takes it.
fn parse_busy_poll(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 50us, 1ms)"))?;
    if d > Duration::from_secs(1) {
        return Err("must be at most 1s (0 turns polling off)".to_owned());
    }
    Ok(d)
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

/// What the command line asks for, checked: the flags no other combination can contradict.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// The subcommand; `None` is the pipe.
    pub(crate) command: Option<Command>,
    /// The socket: an argument, `--socket`, `UDSECHO_SOCKET` or the default.
    pub(crate) target: Target,
    /// The socket type, and raw or framed on a stream (`--framed` or `bench --mode framed`).
    pub(crate) transport: Transport,
    /// `--timeout`.
    pub(crate) timeout: Duration,
    /// The socket given before any subcommand (`udsecho-client sned`), for the typo hint.
    pub(crate) socket_word: Option<String>,
    /// What each message carries (`--fd`), opened or taken at startup.
    pub(crate) descriptors: Passing,
    /// What the pipe does wrong on purpose (`--fault`).
    pub(crate) misbehave: Misbehaviour,
}

impl Cli {
    /// Parses the command line; exits 2 with clap's message on bad flags.
    pub(crate) fn parse_checked() -> Invocation {
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
        if let Some(Command::Bench {
            blocking,
            busy_poll,
            pipeline,
            connections,
            ..
        }) = &cli.command
        {
            let raw_stream = !framed && cli.socket_type == TypeArg::Stream && *pipeline == 1;
            if (*blocking || busy_poll.is_some()) && !raw_stream {
                usage_error(&format!(
                    "{} applies to raw stream ping-pong only (no --framed, --type or \
                     --pipeline)",
                    if *blocking {
                        "--blocking"
                    } else {
                        "--busy-poll"
                    }
                ));
            }
            if *blocking && *connections > 1024 {
                usage_error("--blocking runs a thread per connection: at most 1024 connections");
            }
        }
        let transport = match cli.socket_type {
            TypeArg::Stream => Transport::Stream { framed },
            TypeArg::Seqpacket if framed => usage_error(
                "--framed makes no sense with --type seqpacket: each message keeps its boundaries already",
            ),
            TypeArg::Datagram if framed => usage_error(
                "--framed makes no sense with --type datagram: each datagram is a message already",
            ),
            TypeArg::Seqpacket => Transport::Seqpacket,
            TypeArg::Datagram => Transport::Datagram,
        };
        let positional = match &cli.command {
            None | Some(Command::Fault { .. }) => &cli.path,
            Some(
                Command::Pipe { path, .. }
                | Command::Send { path, .. }
                | Command::Bench { path, .. },
            ) => {
                if cli.path.path.is_some() && path.path.is_some() {
                    usage_error("the socket is given twice, before and after the subcommand");
                }
                if path.path.is_some() { path } else { &cli.path }
            }
        };
        // An argument beats UDSECHO_SOCKET; against --socket it is a contradiction.
        let from_flag = matches!(socket_source(&matches), Some(ValueSource::CommandLine));
        let target = match (&positional.path, &cli.socket) {
            (Some(arg), Some(flag)) if from_flag && arg != flag => usage_error(&format!(
                "the socket is given twice: `{flag}` with --socket and `{arg}` as an argument"
            )),
            (Some(arg), _) => Target::parse(arg),
            (None, Some(flag)) => Target::parse(flag),
            (None, None) => Target::default_path(),
        };
        let descriptors = open_descriptors(&cli);
        let misbehave = Misbehaviour::new(&cli.faults).unwrap_or_else(|e| usage_error(&e));
        let raw_pipe = matches!(cli.command, None | Some(Command::Pipe { .. }))
            && transport == (Transport::Stream { framed: false });
        if !misbehave.is_none() && !raw_pipe {
            usage_error("--fault goes with the raw stream pipe (no subcommand, or pipe)");
        }
        Invocation {
            command: cli.command,
            target,
            transport,
            timeout: cli.timeout,
            socket_word: cli.path.path,
            descriptors,
            misbehave,
        }
    }
}

/// The `--fd` descriptors, in the order given (those before the subcommand first), opened
/// now: a path that cannot be opened, or a number that is not open, is a usage error naming
/// it and the OS's reason.
fn open_descriptors(cli: &Cli) -> Passing {
    let mut specs = cli.fds.fds.clone();
    match &cli.command {
        Some(Command::Pipe { fds, .. } | Command::Send { fds, .. }) => {
            specs.extend(fds.fds.iter().cloned());
        }
        Some(Command::Bench { .. }) if !specs.is_empty() => {
            usage_error("--fd goes with pipe and send; bench passes no descriptors")
        }
        Some(Command::Fault { .. }) if !specs.is_empty() => {
            usage_error("--fd goes with pipe and send; fault passes no descriptors")
        }
        Some(Command::Bench { .. } | Command::Fault { .. }) | None => {}
    }
    if specs.is_empty() {
        return Passing::none();
    }
    // Room to take back what is passed while still holding our own (a message's descriptors
    // come back before the client lets go of its copies).
    let _ = raise_fd_limit(Wanted::Hard);
    Passing::open(&specs).unwrap_or_else(|e| usage_error(&report(&e)))
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
pub(crate) fn did_you_mean(word: &str) -> Option<&'static str> {
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
        "The socket cannot be reached (no such socket or directory, connection refused, permission denied, path too long, a server of another socket type, timed out), the server closed the connection early, went away or is in the other mode, a reply never came (datagrams can be dropped), the client's descriptor limit was reached by descriptors coming back (--fd), or a protocol error. One line on stderr names the socket and the cause.",
    ),
    (
        "2",
        "Bad flags or values (usage error), also a --fd path that cannot be opened or a --fd number that is not open.",
    ),
    (
        "3",
        "An echo differed from what was sent: its bytes, or with --fd its descriptors (dropped, another open file, or more than were sent).",
    ),
];

/// What `--generate` makes the man pages and completions from.
pub(crate) fn docs() -> Docs {
    // Without a subcommand the socket may come first (`udsecho-client SOCK`), but a shell's
    // completion reading `udsecho-client bench --` would then take `bench` for the socket
    // (zsh does, even for a hidden argument). Completions are made from the command without
    // that argument: they offer the subcommands there; `send SOCK` still completes files.
    let full = Cli::command();
    let completion = clap::Command::new("udsecho-client")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(
            full.get_arguments()
                .filter(|a| a.get_id() != "path")
                .cloned(),
        )
        .subcommands(full.get_subcommands().cloned());
    Docs {
        command: Cli::command(),
        completion,
        man_pages: Some("udsecho-client.1 and one page per subcommand"),
        environment: &ENVIRONMENT,
        exit_status: &EXIT_STATUS,
    }
}
