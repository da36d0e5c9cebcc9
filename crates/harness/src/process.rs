//! Server and client processes.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open};

use crate::bins::binary;
use crate::fixtures::short_temp_dir;
use crate::peers::wait_for_socket;

/// Sends `sig` to the process `pid`.
pub fn signal(pid: u32, sig: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other("not a valid pid"))?;
    rustix::process::kill_process(pid, sig).map_err(io::Error::from)
}

/// How to start a server.
#[derive(Debug, Default)]
pub struct ServerBuilder {
    socket: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    no_wait: bool,
    /// Run as this (uid, gid) through `setpriv`, with no supplementary groups.
    user: Option<(u32, u32)>,
    /// Leave `--socket` out: the server picks its default, expected at `socket`.
    default_socket: bool,
    /// The server's working directory, if not the test's.
    current_dir: Option<PathBuf>,
    /// Start it under this descriptor limit (soft and hard), through `prlimit`.
    fd_limit: Option<u64>,
    /// Start it under this limit on its user's processes and threads (soft and hard), through
    /// `prlimit`.
    process_limit: Option<u64>,
    /// A command the server is started through (its program and arguments come after).
    wrapper: Vec<OsString>,
}

impl ServerBuilder {
    /// Run under this open-file limit (`prlimit --nofile=N`: soft and hard, so the server
    /// cannot raise it).
    pub fn fd_limit(mut self, n: u64) -> Self {
        self.fd_limit = Some(n);
        self
    }

    /// Run under this limit on the processes and threads of the server's user
    /// (`prlimit --nproc=N`: soft and hard). The kernel counts every thread of that user on
    /// the machine, and never limits root: use it with [`ServerBuilder::user`], with a uid
    /// nothing else runs as.
    pub fn process_limit(mut self, n: u64) -> Self {
        self.process_limit = Some(n);
        self
    }

    /// Starts the server through `command` (a program and its arguments), which is given the
    /// server's program and arguments after its own: `["unshare", "-n"]` runs it in a network
    /// namespace of its own. Its pid must become the server's (`exec`).
    pub fn wrapped<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = command.into_iter().map(Into::into).collect();
        self
    }

    /// Listen on this path (or `@name`) instead of a fresh temp socket.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Extra flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the server.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes an environment variable the server would inherit.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Runs the server as another user (`setpriv --reuid --regid --clear-groups`; the test
    /// must run as root).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Starts the server without `--socket`, so it serves its default socket, which the test
    /// expects at `path` (used to wait for readiness and by [`Server::socket`]).
    pub fn default_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self.default_socket = true;
        self
    }

    /// Do not wait for the socket to accept (for servers expected to fail).
    pub fn no_wait(mut self) -> Self {
        self.no_wait = true;
        self
    }

    /// Runs the server in `dir` (its working directory).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Starts the server and, unless `no_wait`, waits up to 10 s until it accepts.
    pub fn start(self) -> io::Result<Server> {
        let (socket, dir) = match self.socket {
            Some(path) => (path, None),
            None => {
                let dir = short_temp_dir();
                (dir.path().join("s.sock"), Some(dir))
            }
        };
        let mut cmd = match self.user {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(binary("udsecho-server"));
                cmd
            }
            None => Command::new(binary("udsecho-server")),
        };
        if let Some((program, args)) = self.wrapper.split_first() {
            let inner = cmd;
            cmd = Command::new(program);
            cmd.args(args)
                .arg(inner.get_program())
                .args(inner.get_args());
        }
        if self.fd_limit.is_some() || self.process_limit.is_some() {
            let inner = cmd;
            cmd = Command::new("prlimit");
            if let Some(n) = self.fd_limit {
                cmd.arg(format!("--nofile={n}"));
            }
            if let Some(n) = self.process_limit {
                cmd.arg(format!("--nproc={n}"));
            }
            cmd.arg("--")
                .arg(inner.get_program())
                .args(inner.get_args());
        }
        if !self.default_socket {
            cmd.arg("--socket").arg(&socket);
        }
        cmd.env_remove("UDSECHO_SOCKET");
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        cmd.args(&self.args)
            .envs(self.env)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("stderr buffer")
                        .extend_from_slice(&chunk[..n]);
                }
            });
        }
        let server = Server {
            child,
            socket,
            stderr,
            _dir: dir,
        };
        if !self.no_wait {
            server.wait_ready(Duration::from_secs(10))?;
        }
        Ok(server)
    }
}

/// A running `udsecho-server`. Killed (SIGKILL) and reaped on drop if still running.
#[derive(Debug)]
pub struct Server {
    child: Child,
    socket: PathBuf,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Keeps the temp directory (and so the socket path) alive as long as the server.
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh temp socket with these flags, accepting connections.
    pub fn start<I, S>(args: I) -> io::Result<Server>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Server::builder().args(args).start()
    }

    /// Configures a server before starting it.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Waits until the socket accepts a connection, failing early if the server exits.
    pub fn wait_ready(&self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        wait_for_socket(&self.socket, deadline, || self.has_exited()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "server on {} not ready: {e}; its stderr:\n{}",
                    self.socket.display(),
                    self.stderr()
                ),
            )
        })
    }

    /// Has the server process exited (reaped or not)?
    pub fn has_exited(&self) -> bool {
        // `try_wait` needs &mut; peek through /proc instead so a shared handle can ask.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        match stat {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The socket path it was told to listen on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Waits up to `within` for `needle` to appear in the server's stderr (log lines are
    /// written by a background thread, a moment after what they describe).
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.stderr().contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        signal(self.child.id(), sig)
    }

    /// Waits up to `within` for the server to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> io::Result<ExitStatus> {
        match wait_timeout(&mut self.child, within)? {
            Some(status) => {
                // Let the stderr reader catch the last lines.
                thread::sleep(Duration::from_millis(20));
                Ok(status)
            }
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "server still running after {within:?}; stderr:\n{}",
                    self.stderr()
                ),
            )),
        }
    }

    /// Sends `sig` and waits up to `within` for the exit status.
    pub fn stop(&mut self, sig: Signal, within: Duration) -> io::Result<ExitStatus> {
        self.signal(sig)?;
        self.wait_exit(within)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a client run produced.
#[derive(Debug)]
pub struct ClientRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl ClientRun {
    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `udsecho-client` with `args`, feeding `stdin` and closing it, and kills it if it has
/// not finished within `within`.
pub fn run_client<I, S>(args: I, stdin: &[u8], within: Duration) -> io::Result<ClientRun>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut child = Command::new(binary("udsecho-client"))
        .args(&args)
        .env_remove("UDSECHO_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let feeder = thread::spawn(move || {
        // The client may exit before reading everything; that is for the test to judge.
        let _ = input.write_all(&data);
    });
    let output = output_within(child, within)
        .map_err(|e| io::Error::new(e.kind(), format!("udsecho-client {args:?}: {e}")))?;
    let _ = feeder.join();
    let (status, stdout) = (output.status, output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Ok(ClientRun {
        status,
        stdout,
        stderr,
    })
}

/// Waits for `child` (stdout and stderr piped) while threads collect both, so a chatty child
/// never blocks on a full pipe; kills it if it has not exited within `within` (the error then
/// carries what it wrote to stderr).
pub fn output_within(mut child: Child, within: Duration) -> io::Result<Output> {
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = wait_timeout(&mut child, within)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "did not finish within {within:?}; stderr: {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        )),
    }
}

/// Waits up to `within` for `child` to exit and reaps it; `None` if it is still running then.
///
/// On Linux 5.3+ it waits on a pidfd, which becomes readable the moment the child exits: no
/// polling interval, no sleep. Elsewhere it falls back to checking every 5 ms. Every wait for
/// a child here, and in `cargo xtask`, goes through it.
pub fn wait_timeout(child: &mut Child, within: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let deadline = Instant::now() + within;
    match pidfd_open(Pid::from_child(child), PidfdFlags::empty()) {
        Ok(pidfd) => loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = Timespec::try_from(left).map_err(io::Error::other)?;
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return child.try_wait(),
                Ok(_) => return child.wait().map(Some),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        },
        Err(_) => loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        },
    }
}

/// The resident memory of process `pid`, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// The CPU time process `pid` has used so far, all its threads (user + system, from
/// `/proc/PID/stat`; in clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from after its last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15: the 12th and 13th after the name.
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(Duration::from_millis((user + system) * 10)),
        _ => Err(io::Error::other(format!(
            "no CPU times in /proc/{pid}/stat"
        ))),
    }
}

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Raises this process's open-file limit (children inherit it), so a test can hold thousands
/// of connections: to 65536 where allowed (root may raise the hard limit), else the soft limit
/// to the hard one.
pub fn raise_fd_limit() {
    use udsecho_unix::fd_limit::{Wanted, raise_fd_limit};
    // A test that needs more than it got says so itself, with what it could not open.
    let _ = raise_fd_limit(Wanted::BeyondHard(65_536));
}
