//! `udsecho-server`: flags in, one line out on failure. The server itself is the library.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use udsecho_server::logging::{self, Sink};
use udsecho_server::{
    Config, DEFAULT_SOCKET_MODE, Inherited, ListenError, Listener, Mode, ServeError, Shutdown,
    Signals, SocketAddress, SocketType,
};

/// A Unix-domain-socket echo server.
///
/// Echoes every byte back in raw mode (what `nc -U` and `socat` speak) and every Data frame
/// back in framed mode (udsecho's length-prefixed protocol, see PROTOCOL.md). In auto mode it
/// tells them apart per connection. SIGINT, SIGTERM or SIGHUP drains every connection, removes
/// the socket file and exits 0; a second one (or SIGQUIT) closes every connection at once.
/// SIGUSR1, SIGUSR2 and SIGALRM are ignored.
///
/// Exit status: 0 after a clean shutdown, 1 when the server cannot start (the message names
/// the socket and the cause), 2 for bad flags.
#[derive(Debug, Parser)]
#[command(version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Socket to listen on; `@name` is a Linux abstract socket (no file)
    /// [default: echo.sock in $XDG_RUNTIME_DIR/udsecho/, else /run/udsecho/ for root,
    /// /tmp/udsecho-$UID/ for others; a 0700 directory the server creates]
    #[arg(short, long, env = "UDSECHO_SOCKET", value_name = "PATH", value_parser = parse_socket)]
    socket: Option<SocketAddress>,

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
    inetd: bool,

    /// How to read stream connections: detect per connection, or force one mode
    /// (seqpacket and datagram sockets are raw: they have their own message boundaries)
    #[arg(long, value_enum, default_value_t = CliMode::Auto)]
    mode: CliMode,

    /// Largest frame body accepted in framed mode (bytes; KiB/MiB suffixes allowed)
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_size)]
    max_frame: u32,

    /// Connections served at once; further peers wait in the listen backlog until one ends
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = parse_at_least_one)]
    max_connections: u32,

    /// Close a connection after this long without a byte moving (e.g. 30s, 5m) [default: never]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    idle_timeout: Option<Duration>,

    /// How long a graceful shutdown may drain connections before cutting them (0s: no drain)
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Permission bits of the socket file, in octal; it is never more open than this, not even
    /// for an instant [default: 0600]. Not for @name: abstract sockets have no file
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    socket_mode: Option<u32>,

    /// Serve only peers with this user (name or uid, checked with SO_PEERCRED); repeat for
    /// several
    #[arg(long = "allow-uid", value_name = "USER", value_parser = parse_user)]
    allow_uids: Vec<u32>,

    /// Threads serving connections, each with its own connections and its own epoll set
    /// (thread-per-core) [default: one per core this process may run on, as taskset, cpusets
    /// or systemd's CPUAffinity= allow]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// Log more: -v shows connections and each echo (`echo: ...`), -vv everything
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Log only warnings and errors (RUST_LOG, when set, overrides -v and -q)
    #[arg(short, long)]
    quiet: bool,
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
    fn config(&self, socket: SocketAddress) -> Config {
        let mut config = Config::new(socket);
        config.mode = match self.mode {
            CliMode::Auto => Mode::Auto,
            CliMode::Raw => Mode::Raw,
            CliMode::Framed => Mode::Framed,
        };
        config.max_frame = self.max_frame;
        config.max_connections = self.max_connections as usize;
        config.idle_timeout = self.idle_timeout;
        config.shutdown_timeout = self.shutdown_timeout;
        config.socket_mode = self.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE);
        config.allow_uids = self.allow_uids.clone();
        config.socket_type = self.socket_type();
        config.threads = self
            .threads
            .map_or_else(udsecho_server::default_threads, usize::from);
        config
    }

    fn socket_type(&self) -> SocketType {
        match (self.datagram, self.socket_type) {
            (true, _) | (false, CliType::Datagram) => SocketType::Datagram,
            (false, CliType::Seqpacket) => SocketType::Seqpacket,
            (false, CliType::Stream) => SocketType::Stream,
        }
    }

    /// Parses the command line; exits 2 with clap's message on bad flags.
    fn parse_checked() -> Cli {
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

    fn log_filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "info",
            (false, 1) => "debug",
            (false, _) => "trace",
        }
    }
}

/// Why the server stopped with a failure: one line for a person.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Listen(#[from] ListenError),
    #[error("{0}")]
    Serve(#[from] ServeError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Lets the server hold as many connections as the hard limit allows (the soft limit is
/// often 1024).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("could not raise the open-file limit: {e}");
        }
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
    let cli = Cli::parse_checked();
    // The socket's mode is set on the socket itself before bind (see socket_file); the umask
    // would only narrow it behind the user's back. The server creates no other file without an
    // explicit mode (the lock file is 0600, the default directory 0700).
    rustix::process::umask(rustix::fs::Mode::empty());
    let log = logging::init(cli.log_filter(), Sink::detect());
    raise_fd_limit();
    let result = start(&cli);
    // Queued log lines go out before the final line, so it is the last thing printed.
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Writes `udsecho-server: MESSAGE`; a closed stderr loses the line, nothing else, and a
/// stderr that is the peer's connection (`--inetd`) gets nothing.
fn fail(message: &dyn std::fmt::Display) -> ExitCode {
    if !logging::stderr_is_stdin() {
        let _ = writeln!(std::io::stderr(), "udsecho-server: {message}");
    }
    ExitCode::FAILURE
}

fn start(cli: &Cli) -> Result<(), Failure> {
    // Read LISTEN_FDS before any thread exists: it clears the variables.
    let inherited = if cli.inetd {
        None
    } else {
        Listener::from_systemd()?
    };
    // This thread accepts, handles signals and serves its share of the connections; the
    // server starts the other serving threads (`Config::threads`) itself.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)?;
    runtime.block_on(serve(cli, inherited))
}

async fn serve(cli: &Cli, inherited: Option<Inherited>) -> Result<(), Failure> {
    // Signal handlers first: a signal that arrives as soon as the socket exists must drain,
    // not kill.
    let signals = Signals::install().map_err(Failure::Signals)?;
    let handed_over = match inherited {
        Some(inherited) => Some(Listener::inherited(inherited)?),
        None if cli.inetd => Some(Listener::inetd()?),
        None => None,
    };
    let (listener, config) = match handed_over {
        // The socket's own type decides, whatever --type says.
        Some(listener) => {
            let mut config = cli.config(SocketAddress::parse(listener.name()));
            config.socket_type = listener.socket_type();
            (listener, config)
        }
        None => {
            let socket = match &cli.socket {
                Some(socket) => socket.clone(),
                None => Listener::default_socket()?,
            };
            let config = cli.config(socket);
            let listener =
                Listener::bind(&config.socket, config.socket_mode, config.socket_type).await?;
            (listener, config)
        }
    };
    let shutdown = Shutdown::new();
    let signals = tokio::spawn(signals.drive(shutdown.clone()));
    let served = udsecho_server::run(listener, &config, shutdown).await;
    signals.abort();
    Ok(served?)
}

/// `--generate man DIR` writes the man page into DIR; `--generate bash|zsh|fish` prints a
/// completion script. Used by `cargo xtask dist`.
fn generate(args: &[String]) -> ExitCode {
    let written = match args {
        [what, dir] if what == "man" => man_page(std::path::Path::new(dir)),
        [what] if what == "man" => {
            let _ = writeln!(
                std::io::stderr(),
                "udsecho-server: --generate man needs a directory: udsecho-server --generate man \
                 DIR (it writes udsecho-server.1 there)"
            );
            return ExitCode::from(2);
        }
        [shell] => completions(shell),
        _ => Err(std::io::Error::other(
            "usage: udsecho-server --generate man DIR | bash | zsh | fish",
        )),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("--generate: {e}")),
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

fn man_page(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let man = clap_mangen::Man::new(Cli::command());
    let path = dir.join(man.get_filename());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    roff_section(&mut out, "ENVIRONMENT", &ENVIRONMENT)?;
    roff_section(&mut out, "EXIT STATUS", &EXIT_STATUS)?;
    man.render_version_section(&mut out)?;
    out.flush()?;
    println!("{}", path.display());
    Ok(())
}

/// A man page section of tagged paragraphs, in roff.
fn roff_section(
    out: &mut impl std::io::Write,
    title: &str,
    items: &[(&str, &str)],
) -> std::io::Result<()> {
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
    use std::io::Write;
    let shell: clap_complete::Shell = shell.parse().map_err(std::io::Error::other)?;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "udsecho-server", &mut script);
    std::io::stdout().write_all(&script)
}
