//! `udsecho-server`: flags in (`cli`), one line out on failure. The server itself is the
//! library.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use udsecho_server::logging::{self, Sink};
use udsecho_server::{
    Control, Inherited, ListenError, Listener, RecordError, Recorder, ServeError, Shutdown,
    Signals, SocketAddress,
};
use udsecho_unix::fd_limit::{Wanted, raise_fd_limit};
use udsecho_unix::generate;

use crate::cli::Cli;

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
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("--upstream {0} is this proxy's own socket: it would connect to itself")]
    OwnUpstream(SocketAddress),
}

fn main() -> ExitCode {
    // Release tooling only (`cargo xtask dist`): not a flag, so it is in no help text and no
    // completion.
    // `args_os`: a path that is not UTF-8 must not panic before clap can say so.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(args) = generate::requested(&args) {
        return match generate::generate(&args, cli::docs()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failed) if failed.status == 2 => {
                let _ = writeln!(std::io::stderr(), "udsecho-server: {}", failed.line);
                ExitCode::from(2)
            }
            Err(failed) => fail(&failed.line),
        };
    }
    let cli = Cli::parse_checked();
    // The socket's mode is set on the socket itself before bind (see socket_file); the umask
    // would only narrow it behind the user's back. The server creates no other file without an
    // explicit mode (the lock file is 0600, the default directory 0700, a recording 0600).
    rustix::process::umask(rustix::fs::Mode::empty());
    let log = match logging::init(cli.log_filter(), Sink::detect(), cli.timestamps()) {
        Ok(log) => log,
        Err(e) => {
            return fail(&format!(
                "cannot start the log writer's thread: {e} (this user may start no more \
                 threads: RLIMIT_NPROC, or a pids cgroup such as systemd's TasksMax=)"
            ));
        }
    };
    // As many connections as the hard limit allows (the soft limit is often 1024).
    if let Err(e) = raise_fd_limit(Wanted::Hard) {
        tracing::debug!("could not raise the open-file limit: {}", e.errno);
    }
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
    let (listener, mut config) = match handed_over {
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
    if let Some(upstream) = &config.upstream
        && is_own(&config.socket, upstream)
    {
        return Err(Failure::OwnUpstream(upstream.clone()));
    }
    let shutdown = Shutdown::new();
    let signals = tokio::spawn(signals.drive(shutdown.clone()));
    if cli.record.is_some() || cli.pcap.is_some() {
        let started = Recorder::start(
            cli.record.as_deref(),
            cli.pcap.as_deref(),
            config.socket_type,
        );
        // A FIFO nobody reads yet is waited for; a signal ends the wait (and the server,
        // its socket file removed as the listener goes).
        tokio::select! {
            started = started => config.recorder = Some(started?),
            () = shutdown.begun() => {
                signals.abort();
                return Ok(());
            }
        }
    }
    let control = match &cli.control {
        Some(address) => Some(Control::bind(address).await?),
        None => None,
    };
    let served = udsecho_server::run_with_control(listener, control, &config, shutdown).await;
    signals.abort();
    Ok(served?)
}

/// Whether `upstream` is the socket this server listens on (the same path, a link to it, the
/// same abstract name): a proxy connected to itself would take connections until it ran out
/// of descriptors.
fn is_own(socket: &SocketAddress, upstream: &SocketAddress) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (socket, upstream) {
        (SocketAddress::Path(own), SocketAddress::Path(up)) => {
            match (std::fs::metadata(own), std::fs::metadata(up)) {
                (Ok(own), Ok(up)) => own.dev() == up.dev() && own.ino() == up.ino(),
                _ => false,
            }
        }
        (SocketAddress::Abstract(own), SocketAddress::Abstract(up)) => own == up,
        _ => false,
    }
}
