//! Who is measured: the servers (udsecho, the epoll reference, plain tokio, the Go tutorial
//! server, socat), the generator alone (`--loopback`), in the pipe scenario the clients
//! (udsecho-client, OpenBSD `nc`, socat), and in the proxied scenarios the proxies in front of
//! the epoll reference (udsecho-server --upstream, with and without --record, and socat). How
//! to build, start and stop each.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::scenario::{Load, Plan, Scenario};

/// One column of the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Contender {
    Udsecho,
    Epoll,
    /// The epoll reference polling for 50 µs after its last event before it sleeps: the
    /// fastest possible answer to a client that blocks for each one.
    EpollPolling,
    Tokio,
    Go,
    Socat,
    /// No server: the generator echoes through socket pairs in its own thread.
    Loopback,
    /// Pipe scenario: `udsecho-client -s SOCKET`.
    ClientPipe,
    /// Pipe scenario: `nc -NU SOCKET`.
    NcPipe,
    /// Pipe scenario: `socat - UNIX-CONNECT:SOCKET`.
    SocatPipe,
    /// Proxied scenarios: `udsecho-server --upstream REFERENCE`.
    Proxy,
    /// Proxied scenarios: the same with `--record FILE.jsonl` (a file in the run's directory).
    ProxyRecording,
    /// Proxied scenarios: `socat UNIX-LISTEN:SOCKET,fork UNIX-CONNECT:REFERENCE`.
    SocatProxy,
}

/// What a column is to the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// What the project ships.
    Ours,
    /// The yardstick the ratios are taken against.
    Reference,
    /// Other software people use.
    Peer,
    /// The load generator's own ceiling, shown only as headroom evidence.
    Headroom,
}

impl Contender {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Udsecho => "udsecho",
            Contender::Epoll => "epoll reference",
            Contender::EpollPolling => "epoll reference, polling 50 µs",
            Contender::Tokio => "plain tokio",
            Contender::Go => "Go tutorial",
            Contender::Socat => "socat fork EXEC:cat",
            Contender::Loopback => "generator alone (loopback)",
            Contender::ClientPipe => "udsecho-client",
            Contender::NcPipe => "nc -NU",
            Contender::SocatPipe => "socat -",
            Contender::Proxy => "udsecho --upstream",
            Contender::ProxyRecording => "udsecho --upstream --record",
            Contender::SocatProxy => "socat fork UNIX-CONNECT",
        }
    }

    pub(crate) fn role(self) -> Role {
        match self {
            Contender::Udsecho
            | Contender::ClientPipe
            | Contender::Proxy
            | Contender::ProxyRecording => Role::Ours,
            Contender::Epoll | Contender::EpollPolling | Contender::NcPipe => Role::Reference,
            Contender::Loopback => Role::Headroom,
            Contender::Tokio
            | Contender::Go
            | Contender::Socat
            | Contender::SocatPipe
            | Contender::SocatProxy => Role::Peer,
        }
    }
}

/// The built binaries and which optional peers this machine has.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) server: PathBuf,
    pub(crate) client: PathBuf,
    pub(crate) epoll_echo: PathBuf,
    pub(crate) tokio_echo: PathBuf,
    pub(crate) loadgen: PathBuf,
    pub(crate) go_echo: Option<PathBuf>,
    pub(crate) socat: bool,
    pub(crate) nc: bool,
}

impl Setup {
    /// Finds the release binaries (built by the caller) and builds the Go peer.
    pub(crate) fn new(out_dir: &Path) -> Setup {
        let nc_and_socat = crate::tools::ensure_nc_and_socat().is_ok();
        Setup {
            server: udsecho_harness::binary("udsecho-server"),
            client: udsecho_harness::binary("udsecho-client"),
            epoll_echo: udsecho_harness::binary("epoll-echo"),
            tokio_echo: udsecho_harness::binary("tokio-echo"),
            loadgen: udsecho_harness::binary("loadgen"),
            // Without Go (and no way to install it), the Go column is left out.
            go_echo: crate::tools::build_go(out_dir).ok(),
            socat: nc_and_socat || crate::tools::have("socat"),
            nc: nc_and_socat,
        }
    }

    /// The columns of `scenario`, in print order: ours, the reference, the peers, and the
    /// generator alone where it applies.
    pub(crate) fn contenders(&self, scenario: &Scenario, plan: &Plan) -> Vec<Contender> {
        let mut list = Vec::new();
        if scenario.proxied {
            // The reference, direct, is what the proxies' ratios are taken against.
            list.extend([
                Contender::Proxy,
                Contender::ProxyRecording,
                Contender::Epoll,
            ]);
            if self.socat {
                list.push(Contender::SocatProxy);
            }
            return list;
        }
        match scenario.load {
            Load::Pingpong { framed: true, .. } => list.push(Contender::Udsecho),
            Load::Pipe { .. } => {
                list.push(Contender::ClientPipe);
                if self.nc {
                    list.push(Contender::NcPipe);
                }
                if self.socat {
                    list.push(Contender::SocatPipe);
                }
            }
            // The reference that polls comes first: it is the one ratios are taken against.
            Load::Blocking { .. } => {
                list.extend([
                    Contender::Udsecho,
                    Contender::EpollPolling,
                    Contender::Epoll,
                    Contender::Tokio,
                ]);
                if self.go_echo.is_some() {
                    list.push(Contender::Go);
                }
            }
            Load::Pingpong { .. } | Load::Stream { .. } | Load::Idle { .. } => {
                list.extend([Contender::Udsecho, Contender::Epoll, Contender::Tokio]);
                if self.go_echo.is_some() {
                    list.push(Contender::Go);
                }
                // A process pair per connection: thousands of them measure fork, not echo.
                let idle = matches!(scenario.load, Load::Idle { .. });
                if self.socat && !idle && scenario.connections() <= plan.socat_max_connections {
                    list.push(Contender::Socat);
                }
                // Two descriptors per loopback connection, under this process's hard limit.
                if !idle && loopback_fits(scenario.connections()) {
                    list.push(Contender::Loopback);
                }
            }
        }
        list
    }

    /// Starts server `who` on `socket` and waits until it accepts.
    pub(crate) fn start(&self, who: Contender, socket: &Path) -> Result<Child, String> {
        self.start_pinned(who, socket, None)
    }

    /// Starts server `who` on `socket`, with `threads` serving threads on the cores `cpus`
    /// (a `taskset -c` list) when `pinned` says so, and waits until it accepts.
    pub(crate) fn start_pinned(
        &self,
        who: Contender,
        socket: &Path,
        pinned: Option<(usize, &str)>,
    ) -> Result<Child, String> {
        let threads = pinned.map(|(n, _)| n.to_string());
        let mut cmd = match (who, &threads) {
            (Contender::Udsecho, _) => {
                let mut c = Command::new(&self.server);
                c.arg("--socket").arg(socket).arg("--quiet");
                if let Some(n) = &threads {
                    c.args(["--threads", n]);
                }
                c
            }
            (Contender::Epoll | Contender::EpollPolling | Contender::Tokio, _) => {
                let program = if who == Contender::Tokio {
                    &self.tokio_echo
                } else {
                    &self.epoll_echo
                };
                let mut c = Command::new(program);
                if let Some(n) = &threads {
                    c.args(["--threads", n]);
                }
                if who == Contender::EpollPolling {
                    c.args(["--spin", "50"]);
                }
                c.arg(socket);
                c
            }
            (_, Some(_)) => return Err(format!("{} has no thread count", who.name())),
            (Contender::ClientPipe | Contender::NcPipe | Contender::SocatPipe, None) => {
                let mut c = Command::new(&self.epoll_echo);
                c.arg(socket);
                c
            }
            (Contender::Go, None) => {
                let mut c = Command::new(self.go_echo.as_ref().ok_or("no Go peer was built")?);
                c.arg(socket);
                c
            }
            (Contender::Socat, None) => {
                let mut c = Command::new("socat");
                c.arg(format!(
                    "UNIX-LISTEN:{},fork,backlog=4096",
                    socket.display()
                ))
                .arg("EXEC:cat");
                c
            }
            (Contender::Loopback, None) => {
                return Err("the loopback has no server".to_owned());
            }
            (Contender::Proxy | Contender::ProxyRecording | Contender::SocatProxy, None) => {
                return Err(format!("{} needs an upstream (start_proxy)", who.name()));
            }
        };
        if let Some((_, cpus)) = pinned {
            cmd = taskset(cpus, &cmd);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Err(e) = udsecho_harness::wait_for_socket(socket, deadline, || false) {
            crate::child::kill(&mut child);
            return Err(format!("never accepted on {}: {e}", socket.display()));
        }
        Ok(child)
    }
}

/// A proxy and the epoll reference behind it.
pub(crate) struct Proxied {
    pub(crate) proxy: Child,
    pub(crate) upstream: Child,
}

impl Proxied {
    /// Stops the proxy, then the reference.
    pub(crate) fn stop(mut self) {
        crate::child::stop(&mut self.proxy, Duration::from_secs(5));
        crate::child::stop(&mut self.upstream, Duration::from_secs(5));
    }
}

impl Setup {
    /// Starts the epoll reference on `dir`/up.sock and proxy `who` in front of it on
    /// `dir`/p.sock (returned), recording into `dir` for [`Contender::ProxyRecording`]; waits
    /// until both accept.
    pub(crate) fn start_proxy(
        &self,
        who: Contender,
        dir: &Path,
    ) -> Result<(Proxied, PathBuf), String> {
        let up = dir.join("up.sock");
        let front = dir.join("p.sock");
        let mut upstream = self.start(Contender::Epoll, &up)?;
        let mut cmd = match who {
            Contender::Proxy | Contender::ProxyRecording => {
                let mut c = Command::new(&self.server);
                c.arg("--socket")
                    .arg(&front)
                    .arg("--upstream")
                    .arg(&up)
                    .arg("--quiet");
                if who == Contender::ProxyRecording {
                    c.arg("--record").arg(dir.join("record.jsonl"));
                }
                c
            }
            Contender::SocatProxy => {
                let mut c = Command::new("socat");
                c.arg(format!("UNIX-LISTEN:{},fork,backlog=4096", front.display()))
                    .arg(format!("UNIX-CONNECT:{}", up.display()));
                c
            }
            other => {
                crate::child::stop(&mut upstream, Duration::from_secs(5));
                return Err(format!("{} is not a proxy", other.name()));
            }
        };
        let proxy = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start: {e}"));
        let mut proxy = match proxy {
            Ok(p) => p,
            Err(e) => {
                crate::child::stop(&mut upstream, Duration::from_secs(5));
                return Err(e);
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Err(e) = udsecho_harness::wait_for_socket(&front, deadline, || false) {
            crate::child::kill(&mut proxy);
            crate::child::stop(&mut upstream, Duration::from_secs(5));
            return Err(format!("never accepted on {}: {e}", front.display()));
        }
        Ok((Proxied { proxy, upstream }, front))
    }
}

/// `cmd` run by `taskset -c CPUS`: its affinity is set before it starts, so every thread it
/// makes inherits it (setting it on a running pid reaches only that one thread).
pub(crate) fn taskset(cpus: &str, cmd: &Command) -> Command {
    let mut pinned = Command::new("taskset");
    pinned
        .arg("-c")
        .arg(cpus)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    pinned
}

/// Whether the generator can hold both ends of `connections` socket pairs.
pub(crate) fn loopback_fits(connections: usize) -> bool {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit
        .maximum
        .is_none_or(|max| max >= 2 * connections as u64 + 64)
}
