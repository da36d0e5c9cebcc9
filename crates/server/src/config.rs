//! What a server is told to do: parsed once at the edge (flags or a test), then read-only.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use udsecho_unix::SocketType;

use crate::fault::FaultSpec;
use crate::proxy::record::Recorder;
pub use udsecho_unix::socket::MAX_SOCKET_PATH;
pub use udsecho_unix::socket_dir::{DEFAULT_SOCKET_NAME, default_socket_dir};

/// How connections are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Detect per connection: the preamble means framed, anything else raw.
    #[default]
    Auto,
    /// Every connection is raw: bytes in, the same bytes out.
    Raw,
    /// Every connection must open with the preamble and speak frames.
    Framed,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "raw" => Ok(Mode::Raw),
            "framed" => Ok(Mode::Framed),
            other => Err(format!(
                "unknown mode {other:?} (expected auto, raw or framed)"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Raw => "raw",
            Mode::Framed => "framed",
        })
    }
}

/// Where a socket lives: a file, or a name in Linux's abstract namespace (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// A socket file on the filesystem; the server owns it while it runs.
    Path(PathBuf),
    /// A Linux abstract socket: no file, gone when the last descriptor closes.
    Abstract(String),
}

impl SocketAddress {
    /// Reads `@name` as abstract, anything else as a path.
    pub fn parse(s: &str) -> SocketAddress {
        match s.strip_prefix('@') {
            Some(name) => SocketAddress::Abstract(name.to_owned()),
            None => SocketAddress::Path(PathBuf::from(s)),
        }
    }

    /// The default socket, [`DEFAULT_SOCKET_NAME`] inside [`default_socket_dir`]: the path
    /// the client looks at when it is given none (both take it from `udsecho-unix`).
    pub fn default_path() -> SocketAddress {
        SocketAddress::Path(udsecho_unix::socket_dir::default_socket_path())
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Path(path) => write!(f, "{}", path.display()),
            SocketAddress::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// The socket file's permission bits unless `--socket-mode` says otherwise.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// Connections served at once unless `--max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16_384;

/// The longest a serving thread polls after its last echo unless `--busy-poll` says
/// otherwise: long enough to catch the next message of a client that blocks for each answer
/// (tens of microseconds on a busy machine), short enough to be no more than a wake-up's
/// worth of work when nothing comes. Longer (100 µs was measured) also keeps a thread
/// polling without pause for a client that sends every 80–100 µs, at four times the CPU per
/// round trip for no gain.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// The shortest `--busy-poll` window worth polling (besides 0, off): a window adapts in
/// steps of this, and one shorter would turn itself off after the first message.
pub const MIN_BUSY_POLL: Duration = Duration::from_micros(10);

/// How long a graceful shutdown may drain unless `--shutdown-timeout` says otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a running server needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (ignored when systemd passes a listener).
    pub socket: SocketAddress,
    /// Which kind of socket to serve (a socket systemd passes says its own type).
    pub socket_type: SocketType,
    /// How connections are interpreted.
    pub mode: Mode,
    /// The largest frame body `L` accepted in framed mode.
    pub max_frame: u32,
    /// Connections served at once; the next one waits in the listen backlog until a slot
    /// frees.
    pub max_connections: usize,
    /// Close a connection that neither sends nor accepts a byte for this long.
    pub idle_timeout: Option<Duration>,
    /// How long a graceful shutdown may take before open connections are cut.
    pub shutdown_timeout: Duration,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    /// If not empty, only peers with one of these uids are served.
    pub allow_uids: Vec<u32>,
    /// Threads serving a listener's connections, each with its own epoll set and its own
    /// connections (the caller's thread is the first). [`Config::new`] gives 1; the binary's
    /// default is [`default_threads`].
    pub threads: usize,
    /// How long a serving thread may keep polling for new events after its last echo before
    /// it sleeps (the longest window; it adapts below that). Zero: it sleeps at once.
    pub busy_poll: Duration,
    /// Faults to inject (`--fault`), each into every connection or a share of them.
    pub faults: Vec<FaultSpec>,
    /// Where the draws of the faults start (`--fault-seed`); `None`: from the clock, logged.
    pub fault_seed: Option<u64>,
    /// Proxy each connection to this socket instead of echoing it (`--upstream`).
    pub upstream: Option<SocketAddress>,
    /// Where a proxy records what crosses it (`--record`), started by the caller.
    pub recorder: Option<Recorder>,
    /// Serve one connection, then stop accepting and exit when it ends (`--once`, as `nc
    /// -lU` without `-k`). Stream and seqpacket listeners only: a datagram socket has no
    /// connections (the binary refuses the combination).
    pub once: bool,
}

impl Config {
    /// A configuration with the documented defaults, listening on `socket`.
    pub fn new(socket: SocketAddress) -> Self {
        Config {
            socket,
            socket_type: SocketType::Stream,
            mode: Mode::Auto,
            max_frame: udsecho_proto::DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            idle_timeout: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            socket_mode: DEFAULT_SOCKET_MODE,
            allow_uids: Vec::new(),
            threads: 1,
            busy_poll: DEFAULT_BUSY_POLL,
            faults: Vec::new(),
            fault_seed: None,
            upstream: None,
            recorder: None,
            once: false,
        }
    }
}

/// How many threads serve when `--threads` is not given: every core the process was given, or
/// half the machine when it was given all of it ([`udsecho_unix::threads::default_threads`]).
///
/// A server busy on every core would take the cores its own clients need: the peers of a Unix
/// socket always run on the same machine (measured in docs/performance.md: on 2 cores, a
/// second serving thread costs 1.5x the CPU per round trip of one, competing with the load
/// generator). Cores chosen for the server (`taskset`, cpusets, systemd's `CPUAffinity=`) are
/// all used.
pub fn default_threads() -> usize {
    udsecho_unix::threads::default_threads()
}
