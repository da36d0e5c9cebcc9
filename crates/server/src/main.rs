//! `udsecho-server`: flags in, one line out on failure. The server itself is the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use udsecho_server::{Config, Listener, Mode, Shutdown, SocketAddress};

/// A Unix-domain-socket echo server.
///
/// Echoes every byte back in raw mode (what `nc -U` and `socat` speak) and every Data frame
/// back in framed mode (udsecho's length-prefixed protocol, see PROTOCOL.md). In auto mode it
/// tells them apart per connection. SIGINT or SIGTERM drains every connection, removes the
/// socket file and exits 0; a second signal stops at once.
///
/// Exit status: 0 after a clean shutdown, 1 when the server cannot start (the message names
/// the socket and the cause), 2 for bad flags.
#[derive(Debug, Parser)]
#[command(version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Print a man page (`man`) or shell completions (`bash`, `zsh`, `fish`) and exit
    #[arg(long, hide = true, value_name = "WHAT", value_parser = ["man", "bash", "zsh", "fish"])]
    generate: Option<String>,

    /// Socket to listen on; `@name` is a Linux abstract socket (no file)
    /// [default: $XDG_RUNTIME_DIR/udsecho.sock, else /tmp/udsecho-$UID.sock]
    #[arg(short, long, env = "UDSECHO_SOCKET", value_name = "PATH")]
    socket: Option<String>,

    /// How to read connections: detect per connection, or force one mode
    #[arg(long, value_enum, default_value_t = CliMode::Auto)]
    mode: CliMode,

    /// Largest frame body accepted in framed mode (bytes; KiB/MiB suffixes allowed)
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_size)]
    max_frame: u32,

    /// Connections served at once; further peers wait in the listen backlog until one ends
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Close a connection after this long without a byte moving (e.g. 30s, 5m) [default: never]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,

    /// How long a graceful shutdown may drain connections before cutting them
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Permission bits of the socket file, in octal; it is never more open than this
    #[arg(long, value_name = "OCTAL", default_value = "0600", value_parser = parse_mode)]
    socket_mode: u32,

    /// Serve only peers with this uid (checked with SO_PEERCRED); repeat for several
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,

    /// Log more: -v shows connections and each echo (`echo: ...`), -vv everything
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Log only warnings and errors (RUST_LOG, when set, overrides -v and -q)
    #[arg(short, long)]
    quiet: bool,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 400ms, 2s, 1m)"))
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
    fn config(&self) -> Config {
        let socket = match &self.socket {
            Some(s) => SocketAddress::parse(s),
            None => SocketAddress::default_path(),
        };
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
        config.socket_mode = self.socket_mode;
        config.allow_uids = self.allow_uids.clone();
        config
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
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
    let cli = Cli::parse();
    if let Some(what) = &cli.generate {
        return generate(what);
    }
    init_logging(cli.verbose, cli.quiet);
    raise_fd_limit();
    // Read LISTEN_FDS before any thread exists: it clears the variables.
    let inherited = match Listener::from_systemd() {
        Ok(inherited) => inherited,
        Err(e) => return fail(&e),
    };
    let config = cli.config();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(serve(config, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("udsecho-server: {message}");
    ExitCode::FAILURE
}

async fn serve(
    config: Config,
    inherited: Option<std::os::unix::net::UnixListener>,
) -> Result<(), String> {
    // Signal handlers first: a SIGTERM that arrives as soon as the socket exists must drain,
    // not kill.
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| format!("installing the SIGINT handler: {e}"))?;
    let listener = match inherited {
        Some(listener) => Listener::inherited(listener),
        None => Listener::bind(&config.socket, config.socket_mode).await,
    }
    .map_err(|e| e.to_string())?;

    let shutdown = Shutdown::new();
    let signals = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} }
            tracing::info!("signal received: draining (a second signal stops at once)");
            shutdown.begin();
            tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} }
            tracing::warn!("second signal: closing every connection now");
            shutdown.force();
        }
    });
    udsecho_server::run(listener, &config, shutdown).await;
    signals.abort();
    Ok(())
}

/// Writes the man page or a completion script, generated from the flag definitions.
fn generate(what: &str) -> ExitCode {
    let mut command = Cli::command();
    let mut out = std::io::stdout();
    let written = match what {
        "man" => clap_mangen::Man::new(command).render(&mut out),
        shell => match shell.parse::<clap_complete::Shell>() {
            Ok(shell) => {
                clap_complete::generate(shell, &mut command, "udsecho-server", &mut out);
                Ok(())
            }
            Err(e) => Err(std::io::Error::other(e)),
        },
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udsecho-server: --generate {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
