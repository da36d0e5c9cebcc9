//! The client's command line: its flags (clap derive) and what the man pages say beyond them.
//! Part of the binary, not of the library.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the flags, as clap reads them |
//! | `values.rs` | the parsers of flag values (durations, sizes, counts) |
//! | `checks.rs` | the combinations clap cannot check (`-u` against `--type`, `--framed` against a message socket, the socket given twice, nc's `-l`), a usage error that names the right flag, the typo hint for a subcommand; what comes out is an [`Invocation`] |

mod checks;
mod values;

use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum, ValueHint};
use udsecho_client::{FdSpec, SocketType};
use udsecho_fault::FaultSpec;
use udsecho_unix::generate::Docs;

pub(crate) use self::checks::{Invocation, did_you_mean};
use self::values::{
    non_empty_message, parse_busy_poll, parse_count, parse_fault, parse_size, positive_duration,
    report_interval, socket_path,
};

/// A client for udsecho (and any `nc -U` peer): pipe, send, bench, fault.
///
/// With no subcommand it is a pipe, like `nc -U SOCKET`: stdin goes to the socket and the
/// socket to stdout; on stdin EOF it half-closes, prints the rest of the echo, and exits when
/// the server closes.
///
/// nc's habits are accepted: -U (the socket is always a Unix socket) and -N (the pipe
/// half-closes on stdin EOF anyway) change nothing, so `udsecho-client -NU SOCKET` is
/// `udsecho-client SOCKET`; -l is answered with what to run instead (udsecho-server).
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

    /// Show every byte sent and received on stderr, as hex and text with its offset (like
    /// socat -x -v); stdout stays the echo. For the pipe and send, not bench
    #[arg(long, global = true)]
    trace: bool,

    #[command(flatten)]
    nc: NcHabits,

    #[command(flatten)]
    fds: FdArgs,

    #[command(flatten)]
    faults: FaultArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

/// nc's flags, as someone coming from `nc -U` types them: accepted where they mean what the
/// client does anyway, answered with what to type where they do not (`-l`). Hidden: the
/// long help and the README say so once.
#[derive(Debug, Args)]
pub(crate) struct NcHabits {
    /// nc -U: the socket is a Unix socket (it always is)
    #[arg(short = 'U', global = true, hide = true)]
    unix: bool,
    /// nc -N: half-close on stdin EOF (the pipe always does)
    #[arg(short = 'N', global = true, hide = true)]
    half_close: bool,
    /// nc -l: listen (the server's job)
    #[arg(short = 'l', global = true, hide = true)]
    listen: bool,
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

/// `--fault`, on the pipe (with or without `pipe`) and on `send`.
#[derive(Debug, Args)]
pub(crate) struct FaultArgs {
    /// Misbehave on purpose, to test a server (a stream; repeatable)
    ///
    /// slicer=N[,gap=DUR] sends in slices of at most N bytes, GAP apart (default 10ms);
    /// stop_reading=N reads no more of the answer after N bytes (and closes --timeout
    /// later); limit_data=N closes after sending N bytes, even mid-message; half_close=N
    /// shuts the write side after sending N bytes and reads on. The pipe takes all four,
    /// raw or --framed; send takes slicer (it checks every echo). Once the fault has taken
    /// effect, the end it brings exits 0. docs/faults.md has the grammar.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<FaultSpec>,
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
        #[command(flatten)]
        faults: FaultArgs,
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
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Measure round trips/s, MB/s and latency against a server
    ///
    /// MB/s counts the payload echoed back (round trips × --size, in 10^6 bytes a second);
    /// as much again went to the server. Ctrl-C stops early and prints what was measured so
    /// far. A server run with -v logs every echo: against it the figures measure its logging
    /// (udsecho-server -v serves about 9× fewer round trips), so benchmark it without -v.
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
        /// Print a line every DUR on stderr: the round trips/s and MB/s of that interval
        /// (instead of the progress bar)
        #[arg(short, long, value_name = "DUR", value_parser = report_interval)]
        interval: Option<Duration>,
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
