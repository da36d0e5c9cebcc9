//! The combinations of flags clap cannot check, the usage error that names the right flag,
//! and the typo hint: what turns what clap read ([`Cli`]) into what the client runs
//! ([`Invocation`]).

use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use udsecho_client::{Misbehaviour, Passing, SocketType, Target, Transport, report};
use udsecho_unix::fd_limit::{Wanted, raise_fd_limit};

use super::{BenchMode, Cli, Command, TypeArg};

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
    /// `--trace`: every byte sent and received, on stderr.
    pub(crate) trace: bool,
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
        if cli.nc.listen {
            usage_error(
                "-l: udsecho-client connects, it does not listen; to serve a socket run \
                 `udsecho-server -s SOCK` (add --once to serve one peer and exit, as nc -lU \
                 does)",
            );
        }
        if cli.trace && matches!(cli.command, Some(Command::Bench { .. })) {
            usage_error(
                "--trace goes with the pipe and send; bench would trace every round trip \
                 (use the pipe or send to see the bytes)",
            );
        }
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
        let misbehave = misbehaviour(&cli, transport);
        Invocation {
            command: cli.command,
            target,
            transport,
            timeout: cli.timeout,
            socket_word: cli.path.path,
            descriptors,
            trace: cli.trace,
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

/// The `--fault` specs, in the order given (those before the subcommand first), checked:
/// the client's faults only, on a stream; `send` takes slices only (it checks every echo).
fn misbehaviour(cli: &Cli, transport: Transport) -> Misbehaviour {
    let mut specs = cli.faults.faults.clone();
    if let Some(Command::Pipe { faults, .. } | Command::Send { faults, .. }) = &cli.command {
        specs.extend(faults.faults.iter().cloned());
    }
    let misbehave = Misbehaviour::new(&specs).unwrap_or_else(|e| usage_error(&e));
    if misbehave.is_none() {
        return misbehave;
    }
    match (&cli.command, transport) {
        (_, Transport::Seqpacket | Transport::Datagram) => usage_error(
            "--fault goes with a stream: a message socket's messages cannot be sliced or cut \
             (udsecho-server --fault has the message faults)",
        ),
        (None | Some(Command::Pipe { .. }), _) => {}
        (Some(Command::Send { .. }), _) if misbehave.only_slices() => {}
        (Some(Command::Send { .. }), _) => usage_error(
            "send takes --fault slicer only: it checks every echo, so it cannot stop reading \
             or end its side early (the pipe can)",
        ),
        (Some(Command::Bench { .. } | Command::Fault { .. }), _) => {
            usage_error("--fault goes with the pipe and send")
        }
    }
    misbehave
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
    if let Some(hint) = mistyped_subcommand_before(flag) {
        return Cli::command().error(ErrorKind::InvalidSubcommand, hint);
    }
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

/// `udsecho-client sned /tmp/echo.sock`: clap takes `sned` for the socket and then finds a
/// second word it has no place for. When that word (`unexpected`) follows one close to a
/// subcommand, the typo is the reason: say which subcommand was meant.
fn mistyped_subcommand_before(unexpected: &str) -> Option<String> {
    if unexpected.starts_with('-') {
        return None;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let at = args.iter().position(|a| a == unexpected)?;
    let word = args[..at].last()?;
    let meant = did_you_mean(word)?;
    Some(format!(
        "'{word}' is not a subcommand and the socket is one word, so '{unexpected}' has no \
         place (did you mean '{meant}'?)"
    ))
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
