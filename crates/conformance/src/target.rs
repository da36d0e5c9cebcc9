//! The implementation under test: a server at a socket path, or a command started on a
//! fresh temp socket (`{sock}` in it is replaced by the socket's path), killed afterwards.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// Why a target could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("cannot create a temporary directory: {0}")]
    TempDir(io::Error),
    #[error("cannot start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` exited ({status}) before it listened on {}{stderr}", socket.display())]
    ExitedEarly {
        command: String,
        status: ExitStatus,
        socket: PathBuf,
        stderr: String,
    },
    #[error("`{command}` did not listen on {} within {timeout:?}", socket.display())]
    NeverListened {
        command: String,
        socket: PathBuf,
        timeout: Duration,
    },
    #[error("cannot listen on {}: {source}", socket.display())]
    Listen { socket: PathBuf, source: io::Error },
}

/// `'...'` quoting for sh.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A command started for one case, in its own process group (killed as a whole).
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    command: String,
    stderr_path: PathBuf,
    /// The socket path `{sock}` stands for; the directory holding it lives as long as this.
    pub(crate) socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `template` with `{sock}` replaced, `stdin` as its standard input (none:
    /// /dev/null). `prepare` runs first, with the socket path (a client's runner binds there).
    pub(crate) fn start<T>(
        template: &str,
        stdin: Option<Vec<u8>>,
        prepare: impl FnOnce(&Path) -> Result<T, TargetError>,
    ) -> Result<(Process, T), TargetError> {
        let dir = tempfile::Builder::new()
            .prefix("udsecho-conf")
            .tempdir_in("/tmp")
            .map_err(TargetError::TempDir)?;
        let socket = dir.path().join("s.sock");
        let stderr_path = dir.path().join("stderr");
        let prepared = prepare(&socket)?;
        let command = template.replace("{sock}", &shell_quote(&socket));
        let stderr = File::create(&stderr_path).map_err(TargetError::TempDir)?;
        let mut child = Command::new("sh")
            .arg("-c")
            // `exec`: the signal for a graceful shutdown reaches the command, not a shell.
            .arg(format!("exec {command}"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| TargetError::Spawn {
                command: command.clone(),
                source,
            })?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A client that never reads its stdin must not block the runner.
            thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let process = Process {
            child,
            command,
            stderr_path,
            socket,
            _dir: dir,
        };
        Ok((process, prepared))
    }

    /// Waits until the socket accepts a connection (a server command).
    pub(crate) fn wait_listening(&mut self, timeout: Duration) -> Result<(), TargetError> {
        let deadline = Instant::now() + timeout;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TargetError::ExitedEarly {
                    command: self.command.clone(),
                    status,
                    socket: self.socket.clone(),
                    stderr: self
                        .stderr_line()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                return Err(TargetError::NeverListened {
                    command: self.command.clone(),
                    socket: self.socket.clone(),
                    timeout,
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The command's process id.
    fn pid(&self) -> Option<Pid> {
        i32::try_from(self.child.id()).ok().and_then(Pid::from_raw)
    }

    /// Asks the command to shut down gracefully (SIGTERM).
    pub(crate) fn terminate(&self) -> Result<(), String> {
        let pid = self.pid().ok_or("no process id")?;
        rustix::process::kill_process(pid, Signal::TERM).map_err(|e| format!("SIGTERM: {e}"))
    }

    /// Waits up to `timeout` for the command to exit.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// Whether the command has exited.
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last line the command wrote to stderr, if any.
    pub(crate) fn stderr_line(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.stderr_path).ok()?;
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(200).collect())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts one connection on `listener` within `timeout`, unless `gave_up` says the peer
/// will never come.
pub(crate) fn accept(
    listener: &UnixListener,
    timeout: Duration,
    mut gave_up: impl FnMut() -> bool,
) -> Result<Option<UnixStream>, io::Error> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(Some(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if gave_up() || Instant::now() >= deadline {
                    return Ok(None);
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}
