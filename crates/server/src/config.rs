//! What a server is told to do: parsed once at the edge (flags or a test), then read-only.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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

/// Which kind of Unix socket to serve.
///
/// The client has its own `SocketType`, the kind it connects with: the two binaries never
/// depend on each other, and `udsecho-proto`, the one crate they share, knows bytes, not
/// sockets. Both spell the kinds as `--type` takes them (`stream`, `seqpacket`, `datagram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketType {
    /// `SOCK_STREAM`: a byte stream (what `nc -U` speaks); raw and framed modes.
    #[default]
    Stream,
    /// `SOCK_SEQPACKET`: connections of messages; each message is echoed as one message.
    Seqpacket,
    /// `SOCK_DGRAM`: no connections; each datagram is answered to its sender's address.
    Datagram,
}

impl SocketType {
    /// The socket type as the kernel names it.
    pub(crate) fn raw(self) -> rustix::net::SocketType {
        match self {
            SocketType::Stream => rustix::net::SocketType::STREAM,
            SocketType::Seqpacket => rustix::net::SocketType::SEQPACKET,
            SocketType::Datagram => rustix::net::SocketType::DGRAM,
        }
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketType::Stream => "stream",
            SocketType::Seqpacket => "seqpacket",
            SocketType::Datagram => "datagram",
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

/// The longest `sun_path` the kernel takes: 108 bytes, one kept for the trailing NUL.
pub const MAX_SOCKET_PATH: usize = 107;

impl SocketAddress {
    /// Reads `@name` as abstract, anything else as a path.
    pub fn parse(s: &str) -> SocketAddress {
        match s.strip_prefix('@') {
            Some(name) => SocketAddress::Abstract(name.to_owned()),
            None => SocketAddress::Path(PathBuf::from(s)),
        }
    }

    /// The default socket, `echo.sock` inside [`default_socket_dir`]. The client computes
    /// the same path.
    pub fn default_path() -> SocketAddress {
        SocketAddress::Path(default_socket_dir().join(DEFAULT_SOCKET_NAME))
    }
}

/// The file name of the default socket inside [`default_socket_dir`].
pub const DEFAULT_SOCKET_NAME: &str = "echo.sock";

/// The directory of the default socket: one only this user can use, like tmux's
/// `/tmp/tmux-UID/`, so nobody else can plant names next to the socket or squat its path.
///
/// `$XDG_RUNTIME_DIR/udsecho` when that variable names a directory of this user's with no
/// access for others (as the XDG spec requires; an inherited one is ignored); otherwise
/// `/run/udsecho` for root and `$TMPDIR/udsecho-UID` (`/tmp/udsecho-UID`) for everyone else.
/// The server creates it `0700` and refuses it unless it is a real directory owned by its uid
/// with no access for group or others.
///
/// The client computes the same directory with a copy of this function: the binaries never
/// depend on each other, and `udsecho-proto` knows no paths.
pub fn default_socket_dir() -> PathBuf {
    let euid = rustix::process::geteuid();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if is_own_private_dir(std::path::Path::new(&dir), euid.as_raw()) => {
            PathBuf::from(dir).join("udsecho")
        }
        _ if euid.is_root() => PathBuf::from("/run/udsecho"),
        _ => std::env::temp_dir().join(format!("udsecho-{}", euid.as_raw())),
    }
}

/// `XDG_RUNTIME_DIR` is trusted only if it is what the XDG spec promises: an absolute path to
/// a real directory owned by this user with no access for others. An inherited variable (`su`
/// without `-` keeps the caller's) must not send root's socket into a directory its owner
/// controls.
fn is_own_private_dir(dir: &std::path::Path, euid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.is_absolute()
        && std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == euid && m.mode() & 0o077 == 0)
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
/// (tens of microseconds on a busy machine), short enough to be nothing beside a wake-up's
/// worth of work when nothing comes.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

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
        }
    }
}

/// How many threads serve when `--threads` is not given: every core the process was given, or
/// half the machine when it was given all of it.
///
/// The cores given are its affinity mask (what `taskset`, cgroup cpusets and systemd's
/// `CPUAffinity=` set) and a cgroup CPU quota, as the standard library reads them. When they
/// are fewer than the machine's online cores, someone chose them for the server: it uses them
/// all. When the server may run everywhere, it takes half (at least one): the peers of a Unix
/// socket always run on the same machine, and a server busy on every core would take the
/// cores its own clients need (measured in docs/performance.md: on 2 cores, a second serving
/// thread costs 1.5x the CPU per round trip of one, competing with the load generator).
pub fn default_threads() -> usize {
    let given = std::thread::available_parallelism().map_or(1, usize::from);
    threads_for(given, online_cores())
}

/// [`default_threads`] for `given` cores out of `online`.
fn threads_for(given: usize, online: Option<usize>) -> usize {
    match online {
        Some(online) if given < online => given,
        _ => (given / 2).max(1),
    }
}

/// The machine's online cores, from `/sys/devices/system/cpu/online` (`0-3,8-11`).
fn online_cores() -> Option<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    list.trim().split(',').try_fold(0, |count, range| {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let cpu = range.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        Some(count + last.checked_sub(first)? + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_chosen_for_the_server_are_all_used_and_a_whole_machine_is_halved() {
        // taskset -c 0-7 on a 16-core machine: all eight.
        assert_eq!(threads_for(8, Some(16)), 8);
        // Nothing chosen: half of 16, half of 2, and never none.
        assert_eq!(threads_for(16, Some(16)), 8);
        assert_eq!(threads_for(2, Some(2)), 1);
        assert_eq!(threads_for(1, Some(1)), 1);
        // The online count unknown: as if the whole machine.
        assert_eq!(threads_for(4, None), 2);
    }

    #[test]
    fn the_online_core_list_is_counted() {
        // This machine's, whatever it is: at least one core, and the affinity mask within it.
        let online = online_cores().expect("/sys/devices/system/cpu/online is readable");
        assert!(online >= 1);
        assert!(std::thread::available_parallelism().unwrap().get() <= online);
    }
}
