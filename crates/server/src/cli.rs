//! The server's command line: its flags (clap derive), the checks clap cannot make, the
//! [`Config`] they ask for, and what the man page says beyond the flags. Part of the binary,
//! not of the library.

use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use udsecho_server::{
    Config, DEFAULT_BUSY_POLL, DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SOCKET_MODE, FaultSpec, MIN_BUSY_POLL, Mode, SocketAddress, SocketType, proxy_applies,
};
use udsecho_unix::generate::Docs;

/// A Unix-domain-socket echo server.
///
/// Echoes every byte back in raw mode (what `nc -U` and `socat` speak) and every Data frame
/// back in framed mode (udsecho's length-prefixed protocol, see PROTOCOL.md). In auto mode it
/// tells them apart per connection. SIGINT, SIGTERM or SIGHUP drains every connection, removes
/// the socket file and exits 0; a second one (or SIGQUIT) closes every connection at once.
/// SIGUSR1, SIGUSR2 and SIGALRM are ignored.
///
/// nc's habits are accepted: -l (listen), -U (a Unix socket), -k (keep listening) and -N
/// change nothing, so `udsecho-server -lU SOCKET` serves SOCKET; `nc -lU` without -k, which
/// serves one peer, is --once.
///
/// Exit status: 0 after a clean shutdown, 1 when the server cannot start (the message names
/// the socket and the cause), 2 for bad flags.
#[derive(Debug, Parser)]
#[command(version, about, long_about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Socket to listen on; `@name` is a Linux abstract socket (no file)
    /// [default: echo.sock in $XDG_RUNTIME_DIR/udsecho/, else /run/udsecho/ for root,
    /// /tmp/udsecho-$UID/ for others; a 0700 directory the server creates]
    #[arg(short, long, env = "UDSECHO_SOCKET", value_name = "PATH", value_parser = parse_socket)]
    pub(crate) socket: Option<SocketAddress>,

    /// Socket to listen on, as a plain argument (the same as --socket, as the client takes it)
    #[arg(value_name = "SOCKET", value_parser = parse_socket, conflicts_with = "inetd")]
    path: Option<SocketAddress>,

    /// Socket type: stream (what nc -U speaks), seqpacket (each message echoed as one
    /// message), or datagram (each datagram answered to its sender)
    #[arg(long = "type", value_enum, default_value_t = CliType::Stream)]
    socket_type: CliType,

    /// Short for --type datagram (as in nc -u)
    #[arg(short = 'u', conflicts_with = "socket_type")]
    datagram: bool,

    /// Serve the one socket on standard input (inetd, systemd Accept=yes with
    /// StandardInput=socket, ucspi-unix unixserver, s6-ipcserver), then exit
    #[arg(long, conflicts_with_all = ["socket", "socket_mode", "socket_type", "datagram"])]
    pub(crate) inetd: bool,

    /// How to read stream connections: detect per connection, or force one mode
    /// (seqpacket and datagram sockets are raw: they have their own message boundaries)
    #[arg(long, value_enum, default_value_t = CliMode::Auto)]
    mode: CliMode,

    /// Largest frame body accepted in framed mode (bytes; KiB/MiB suffixes allowed)
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_size)]
    max_frame: u32,

    /// Connections served at once; further peers wait in the listen backlog until one ends
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_at_least_one)]
    max_connections: u32,

    /// Close a connection after this long without a byte moving (e.g. 30s, 5m) [default: never]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    idle_timeout: Option<Duration>,

    /// How long a graceful shutdown may drain connections before cutting them (0s: no drain)
    #[arg(long, value_name = "DUR", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT.into(), value_parser = parse_shutdown_timeout)]
    shutdown_timeout: humantime::Duration,

    /// Permission bits of the socket file, in octal; it is never more open than this, not even
    /// for an instant [default: 0600]. Not for @name: abstract sockets have no file
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    socket_mode: Option<u32>,

    /// Serve only peers with this user (name or uid, checked with SO_PEERCRED); repeat for
    /// several
    #[arg(long = "allow-uid", value_name = "USER", value_parser = parse_user)]
    allow_uids: Vec<u32>,

    /// Threads serving connections (1 to 1024), each with its own connections and its own
    /// epoll set (thread-per-core); fewer serve, with a warning, when the system will not
    /// create more or they would leave less than half of the descriptor limit to connections
    /// [default: one per core this process may run on, as taskset, cpusets or systemd's
    /// CPUAffinity= allow; half the machine when that is all of it]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// After its last echo, a serving thread keeps polling for new events this long at most
    /// before it sleeps, so a client that waits for each answer gets the next one without a
    /// wake-up (10us to 1s; 0: sleep at once). The cost: up to a core per thread while its
    /// clients send within the window, and this much after each burst; the window shrinks to
    /// nothing when messages come farther apart, and an idle server never polls. Use 0 when
    /// serving threads and the clients' threads together outnumber the cores
    #[arg(long, value_name = "DUR", default_value_t = DEFAULT_BUSY_POLL.into(), value_parser = parse_busy_poll)]
    busy_poll: humantime::Duration,

    /// Misbehave on purpose: a fault such as latency=100ms~20ms, slicer=1,gap=10ms,
    /// stop_reading=1KiB, limit_data=5, timeout, reset_peer, slow_close=1s, corrupt,
    /// answer=TEXT, answer_file=PATH, error_after=N, goodbye_after=N, withhold_fds,
    /// extra_fd; loss=P, duplicate=P, reorder=P, truncate=N for seqpacket and datagram
    /// messages. `@0.25` after it: a quarter of the connections (of a datagram socket's
    /// senders). Repeat for several; docs/faults.md has the grammar and which fault works on
    /// which socket type
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<FaultSpec>,

    /// Where the random draws of --fault start (which connections a share hits, jitter,
    /// loss): the same seed replays the same choices [default: from the clock, logged]
    #[arg(long, value_name = "N")]
    fault_seed: Option<u64>,

    /// A control socket (made like --socket: mode 0600) that takes `add SPEC`, `remove ID`,
    /// `list` and `clear`, one a line, to change the faults while the server runs
    /// (`udsecho-client fault` speaks it)
    #[arg(long, value_name = "PATH", value_parser = parse_socket, conflicts_with = "inetd")]
    pub(crate) control: Option<SocketAddress>,

    /// Be a proxy: connect each client to this socket (a path, or @name) and forward
    /// bytes and passed descriptors both ways instead of echoing (docs/proxy.md). An upstream
    /// that does not answer at start is a warning: each connection tries it again. --fault
    /// applies to what goes to the client (which faults, by socket type: docs/proxy.md)
    #[arg(long, value_name = "TARGET", value_parser = parse_socket)]
    pub(crate) upstream: Option<SocketAddress>,

    /// With --upstream: record every read each way, with its descriptors, the client's
    /// credentials, opens and closes, as JSON lines (docs/proxy.md has the schema)
    #[arg(long, value_name = "FILE.jsonl", requires = "upstream")]
    pub(crate) record: Option<std::path::PathBuf>,

    /// With --upstream: record as pcapng for Wireshark, each stream connection a synthetic
    /// TCP connection 127.0.0.1 -> 127.0.0.2:80 (so HTTP shows as HTTP), messages as UDP
    #[arg(long, value_name = "FILE.pcapng", requires = "upstream")]
    pub(crate) pcap: Option<std::path::PathBuf>,

    /// Serve one connection, then exit when it ends, as nc -lU does without -k: further peers
    /// are refused meanwhile (the listening socket is closed); a signal drains it as any
    /// connection. Stream and seqpacket only (datagram sockets have no connections); a peer
    /// turned away by --allow-uid does not count, a probe that connects and leaves does
    #[arg(long, conflicts_with = "inetd")]
    once: bool,

    /// Log more: -v shows connections and each echo (`echo: ...`), -vv everything. Each echo
    /// is a log line: a benchmark against a -v server measures its logging (about 9× fewer
    /// round trips), so benchmark without -v
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Log only warnings and errors (RUST_LOG, when set, overrides -v and -q)
    #[arg(short, long)]
    quiet: bool,

    /// Start each log line with the time: rfc3339 (the wall clock in UTC, to the
    /// microsecond) or uptime (seconds since the server started, monotonic) [default: none]
    #[arg(long, value_name = "KIND", value_enum)]
    timestamps: Option<Timestamps>,

    #[command(flatten)]
    nc: NcHabits,
}

/// nc's flags, as someone coming from `nc -lU` types them: all of them are what the server
/// does anyway. Hidden: the long help and the README say so once.
#[derive(Debug, clap::Args)]
struct NcHabits {
    /// nc -l: listen (the server always does)
    #[arg(short = 'l', hide = true)]
    listen: bool,
    /// nc -U: a Unix socket (it always is)
    #[arg(short = 'U', hide = true)]
    unix: bool,
    /// nc -k: keep listening after a peer (the default; --once is nc without -k)
    #[arg(short = 'k', hide = true, conflicts_with = "once")]
    keep: bool,
    /// nc -N: shut down the write side at EOF (the server does after echoing a peer's EOF)
    #[arg(short = 'N', hide = true)]
    half_close: bool,
}

/// `--timestamps`: what each log line starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Timestamps {
    /// The wall clock, UTC, RFC 3339 (2026-12-07T18:00:00.123456Z)
    Rfc3339,
    /// Seconds since the server started, from the monotonic clock (0.001234s)
    Uptime,
}

impl From<Timestamps> for udsecho_server::logging::Timestamps {
    fn from(t: Timestamps) -> Self {
        match t {
            Timestamps::Rfc3339 => udsecho_server::logging::Timestamps::Rfc3339,
            Timestamps::Uptime => udsecho_server::logging::Timestamps::Uptime,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CliType {
    /// SOCK_STREAM: bytes (raw or framed)
    Stream,
    /// SOCK_SEQPACKET: connections of messages
    Seqpacket,
    /// SOCK_DGRAM: datagrams, answered to their sender's address
    Datagram,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliMode {
    /// Preamble means framed, anything else raw
    Auto,
    /// Every connection is raw
    Raw,
    /// Every connection must be framed
    Framed,
}

/// The longest duration a flag takes: beyond it, deadlines stop meaning anything.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 400ms, 2s, 1m)"))?;
    if d > MAX_DURATION {
        return Err("must be at most 100 years".to_owned());
    }
    Ok(d)
}

/// `--shutdown-timeout`: any duration, 0 included; held as humantime's, whose `Display` shows
/// the default in `--help` as the config states it.
fn parse_shutdown_timeout(s: &str) -> Result<humantime::Duration, String> {
    parse_duration(s).map(humantime::Duration::from)
}

/// `--busy-poll`: zero (off), or from the shortest window worth polling up to a second.
fn parse_busy_poll(s: &str) -> Result<humantime::Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(1) {
        return Err("must be at most 1s (0 turns polling off)".to_owned());
    }
    if !d.is_zero() && d < MIN_BUSY_POLL {
        return Err(format!(
            "must be 0 (off) or at least {} (a shorter window turns itself off)",
            humantime::Duration::from(MIN_BUSY_POLL)
        ));
    }
    Ok(d.into())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be longer than 0 (leave the flag out for no limit)".to_owned()),
        d => Ok(d),
    }
}

fn parse_at_least_one(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number from 1 to {})", u32::MAX)),
    }
}

/// `--fault`: the grammar is the library's ([`FaultSpec::parse`]); clap adds the flag's name.
fn parse_fault(s: &str) -> Result<FaultSpec, String> {
    let spec = FaultSpec::parse(s).map_err(|e| e.why)?;
    if !spec.fault.for_server() {
        return Err(format!(
            "{} is a client's fault (udsecho-client pipe --fault)",
            spec.fault.name()
        ));
    }
    Ok(spec)
}

fn parse_socket(s: &str) -> Result<SocketAddress, String> {
    match s {
        "" => Err(
            "the socket path is empty (give a path, or @name for an abstract socket)".to_owned(),
        ),
        "@" => Err("the abstract socket name after @ is empty".to_owned()),
        s => Ok(SocketAddress::parse(s)),
    }
}

/// A user name or a numeric uid, as `--allow-uid` takes it.
fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!(
            "no user named {s:?} (give a user name or a numeric uid)"
        )),
        Err(e) => Err(format!("looking up user {s:?}: {e}")),
    }
}

fn parse_size(s: &str) -> Result<u32, String> {
    let bytes = s
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("{e} (write sizes like 65536, 64KiB, 8MiB)"))?
        .as_u64();
    match u32::try_from(bytes) {
        Ok(0) => Err("must be at least 1 byte".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{bytes} bytes is above the protocol's limit of 4 GiB - 1"
        )),
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("expected octal permission bits such as 0600 or 660".to_owned()),
    }
}

impl Cli {
    /// The configuration these flags ask for; `socket` is where to listen (flag, environment
    /// or the prepared default).
    pub(crate) fn config(&self, socket: SocketAddress) -> Config {
        let mut config = Config::new(socket);
        config.mode = match self.mode {
            CliMode::Auto => Mode::Auto,
            CliMode::Raw => Mode::Raw,
            CliMode::Framed => Mode::Framed,
        };
        config.max_frame = self.max_frame;
        config.max_connections = self.max_connections as usize;
        config.idle_timeout = self.idle_timeout;
        config.shutdown_timeout = *self.shutdown_timeout;
        config.socket_mode = self.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE);
        config.allow_uids = self.allow_uids.clone();
        config.socket_type = self.socket_type();
        config.threads = self
            .threads
            .map_or_else(udsecho_server::default_threads, usize::from);
        config.busy_poll = *self.busy_poll;
        config.faults = self.faults.clone();
        config.fault_seed = self.fault_seed;
        config.upstream = self.upstream.clone();
        config.once = self.once;
        config
    }

    /// What log lines start with (`--timestamps`).
    pub(crate) fn timestamps(&self) -> udsecho_server::logging::Timestamps {
        self.timestamps
            .map_or(udsecho_server::logging::Timestamps::None, Into::into)
    }

    fn socket_type(&self) -> SocketType {
        match (self.datagram, self.socket_type) {
            (true, _) | (false, CliType::Datagram) => SocketType::Datagram,
            (false, CliType::Seqpacket) => SocketType::Seqpacket,
            (false, CliType::Stream) => SocketType::Stream,
        }
    }

    /// Parses the command line; exits 2 with clap's message on bad flags.
    pub(crate) fn parse_checked() -> Cli {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        // An argument beats UDSECHO_SOCKET; against --socket it is a contradiction.
        if let Some(path) = cli.path.take() {
            let from_flag = matches.value_source("socket") == Some(ValueSource::CommandLine);
            match &cli.socket {
                Some(flag) if from_flag && *flag != path => {
                    Cli::command()
                        .error(
                            clap::error::ErrorKind::ArgumentConflict,
                            format!(
                                "the socket is given twice: `{flag}` with --socket and `{path}` \
                                 as an argument"
                            ),
                        )
                        .exit();
                }
                _ => cli.socket = Some(path),
            }
        }
        if let Err(e) = cli.check() {
            e.exit();
        }
        cli
    }

    /// Flag combinations clap cannot check on its own.
    fn check(&self) -> Result<(), clap::Error> {
        if let (Some(SocketAddress::Abstract(name)), Some(_)) = (&self.socket, self.socket_mode) {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--socket-mode cannot apply to @{name}: abstract sockets have no file and no \
                     file permissions; --allow-uid is their access control"
                ),
            ));
        }
        let kind = self.socket_type();
        if self.upstream.is_some()
            && let Some(spec) = self.faults.iter().find(|s| !proxy_applies(kind, &s.fault))
        {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--fault {}: a {kind} proxy applies {} (to what goes to the client)",
                    spec.fault.name(),
                    udsecho_server::proxy_faults(kind)
                ),
            ));
        }
        if self.once && kind == SocketType::Datagram {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--once serves one connection, and a datagram socket has none (each datagram is \
                 answered on its own); leave --once out, or use --type stream or seqpacket",
            ));
        }
        if kind != SocketType::Stream && matches!(self.mode, CliMode::Framed) {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--mode framed needs --type stream: a {kind} socket already keeps message \
                     boundaries, so every message is echoed as it is"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn log_filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "info",
            (false, 1) => "debug",
            (false, _) => "trace",
        }
    }
}

/// The man page's ENVIRONMENT section: (variable, what it does).
const ENVIRONMENT: [(&str, &str); 5] = [
    (
        "UDSECHO_SOCKET",
        "The socket to listen on when --socket is not given.",
    ),
    (
        "RUST_LOG",
        "A tracing filter (e.g. debug, or warn,udsecho_server=trace); when set it overrides -v and -q.",
    ),
    (
        "NO_COLOR",
        "When set (and not empty), log lines carry no colour. Colour is used only when stderr is a terminal.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when stderr goes to the journal: each line then starts with its syslog priority (<6>, <4>...) instead of a level word, without colour.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID",
        "systemd socket activation: serve the listening socket passed as descriptor 3, and never unlink it.",
    ),
];

/// The man page's EXIT STATUS section.
const EXIT_STATUS: [(&str, &str); 3] = [
    (
        "0",
        "A clean shutdown: after SIGINT, SIGTERM or SIGHUP (drain, then remove the socket file), or SIGQUIT (cut every connection, remove the file).",
    ),
    (
        "1",
        "The server cannot start or cannot go on serving; one line on stderr names the socket and the cause (a live server there, not a socket, path too long, missing directory, permission denied).",
    ),
    ("2", "Bad flags or values (usage error)."),
];

/// What `--generate` makes the man page and completions from.
pub(crate) fn docs() -> Docs {
    Docs {
        command: Cli::command(),
        completion: Cli::command(),
        man_pages: Some("udsecho-server.1"),
        environment: &ENVIRONMENT,
        exit_status: &EXIT_STATUS,
    }
}
