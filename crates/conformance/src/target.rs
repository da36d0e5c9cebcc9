//! The implementation under test when the runner starts it: a command run on a fresh temp
//! socket (`{sock}` in it is replaced by the socket's path), and everything it started
//! killed afterwards.
//!
//! The target is not trusted. Its stderr goes to a pipe of which only the last 4 KiB are
//! kept (never a file it could swap, never read whole); every wait has a deadline; and
//! cleanup kills every descendant, not only its process group: the runner is a child
//! subreaper ([`become_subreaper`]), so a process that calls `setsid()` and is orphaned
//! comes back to the runner instead of init, and is found and killed.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};

use crate::report::printable;

/// How much of the target's stderr is kept: enough for its last lines.
const STDERR_TAIL: usize = 4096;

/// Why a target could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("cannot create a temporary directory: {0}")]
    TempDir(io::Error),
    #[error("cannot start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("cannot start `{command}`: it exited ({}) before it listened on {}{stderr}", status_text(*status), socket.display())]
    ExitedEarly {
        command: String,
        status: ExitStatus,
        socket: PathBuf,
        stderr: String,
    },
    #[error("cannot start `{command}`: it did not listen on {} within {waited:?} (is {{sock}} where it listens?)", socket.display())]
    NeverListened {
        command: String,
        socket: PathBuf,
        waited: Duration,
    },
    #[error("cannot listen on {}: {source}", socket.display())]
    Listen { socket: PathBuf, source: io::Error },
}

/// `status 0`, `signal 9`.
pub(crate) fn status_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Makes the runner the reaper of its orphaned descendants (Linux's child subreaper), so a
/// target that daemonises (`setsid()`, double fork) still has the runner as an ancestor and
/// is killed with the rest. Elsewhere, or if refused, cleanup covers what is still attached.
pub(crate) fn become_subreaper() {
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// `{sock}` in `template` replaced by `path`, written for `sh` wherever it stands: quoted
/// (`'…'`) outside quotes, as it is inside single or double quotes, so `{sock}`, `'{sock}'`
/// and `"{sock}"` all give the command the real path. (The runner's paths hold no quote,
/// `$`, backslash or backquote.)
pub(crate) fn substitute(template: &str, path: &Path) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let path = path.display().to_string();
    let quoted = format!("'{}'", path.replace('\'', r"'\''"));
    let (mut out, mut quote, mut escaped) = (String::new(), Quote::None, false);
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if !escaped && let Some(after) = rest.strip_prefix("{sock}") {
            out += if quote == Quote::None { &quoted } else { &path };
            rest = after;
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        if escaped {
            escaped = false;
            continue;
        }
        quote = match (quote, c) {
            (Quote::None | Quote::Double, '\\') => {
                escaped = true;
                quote
            }
            (Quote::None, '\'') => Quote::Single,
            (Quote::None, '"') => Quote::Double,
            (Quote::Single, '\'') | (Quote::Double, '"') => Quote::None,
            _ => quote,
        };
    }
    out
}

/// The last bytes a target wrote to stderr, filled by a thread that reads the pipe to its
/// end.
#[derive(Debug, Default)]
struct Tail {
    /// The kept bytes, and whether the pipe has ended.
    state: Mutex<(Vec<u8>, bool)>,
    ended: Condvar,
}

impl Tail {
    /// Reads `pipe` to its end on a thread of its own, keeping the last [`STDERR_TAIL`]
    /// bytes. (It ends when every holder of the write end has closed it: when the target
    /// and all it started are gone.)
    fn follow(pipe: io::PipeReader) -> Arc<Tail> {
        let tail = Arc::new(Tail::default());
        let filling = Arc::clone(&tail);
        thread::spawn(move || {
            let mut pipe = pipe;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut state = filling.state.lock().unwrap_or_else(|e| e.into_inner());
                state.0.extend_from_slice(&chunk[..n]);
                let over = state.0.len().saturating_sub(STDERR_TAIL);
                state.0.drain(..over);
            }
            let mut state = filling.state.lock().unwrap_or_else(|e| e.into_inner());
            state.1 = true;
            filling.ended.notify_all();
        });
        tail
    }

    /// The last non-empty line, escaped and cut to 200 characters; waits up to `settle` for
    /// the pipe to end first (a target that just exited may have lines still in the pipe).
    fn last_line(&self, settle: Duration) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = self
            .ended
            .wait_timeout_while(state, settle, |s| !s.1)
            .unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&state.0);
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| printable(&l.chars().take(200).collect::<String>()))
    }
}

/// A command started for one case, in its own process group; it and every process it
/// started are killed when this is dropped.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    command: String,
    stderr: Arc<Tail>,
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
        let prepared = prepare(&socket)?;
        let command = substitute(template, &socket);
        let spawn_error = |source| TargetError::Spawn {
            command: printable(&command),
            source,
        };
        let (reader, writer) = io::pipe().map_err(spawn_error)?;
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
            .stderr(writer)
            .process_group(0)
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A client that never reads its stdin must not block the runner; the thread
            // ends when the client (and all it started) is killed.
            thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let process = Process {
            child,
            command,
            stderr: Tail::follow(reader),
            socket,
            _dir: dir,
        };
        Ok((process, prepared))
    }

    /// Waits until the socket accepts a connection (a server command), until `deadline`.
    pub(crate) fn wait_listening(&mut self, deadline: Instant) -> Result<(), TargetError> {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.status() {
                return Err(TargetError::ExitedEarly {
                    command: printable(&self.command),
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
                    command: printable(&self.command),
                    socket: self.socket.clone(),
                    waited: start.elapsed(),
                });
            }
            thread::sleep(Duration::from_millis(5));
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

    /// Waits until `deadline` for the command to exit.
    pub(crate) fn wait(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// How the command exited, if it has.
    pub(crate) fn status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last line the command wrote to stderr, if any (escaped).
    pub(crate) fn stderr_line(&self) -> Option<String> {
        self.stderr.last_line(Duration::from_millis(100))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        kill_descendants();
        let _ = self.child.wait();
    }
}

/// One process from `/proc/PID/stat`: its parent, and whether it is a zombie.
fn stat(pid: &str) -> Option<(i32, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let zombie = fields.next()? == "Z";
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, zombie))
}

/// The runner's descendants, from the process table: (pid, zombie).
fn descendants() -> Vec<(Pid, bool)> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(i32, i32, bool)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let pid: i32 = name.parse().ok()?;
            let (ppid, zombie) = stat(name)?;
            Some((pid, ppid, zombie))
        })
        .collect();
    let mut found: Vec<(Pid, bool)> = Vec::new();
    let mut parents = vec![me];
    while let Some(parent) = parents.pop() {
        for &(pid, ppid, zombie) in &table {
            if ppid == parent
                && let Some(p) = Pid::from_raw(pid)
                && !found.iter().any(|(f, _)| *f == p)
            {
                found.push((p, zombie));
                parents.push(pid);
            }
        }
    }
    found
}

/// Kills every descendant of the runner (the target and whatever it started, however it
/// left its process group) and reaps the ones that became the runner's children, until the
/// process table shows none alive (a bounded number of rounds: a fork at the wrong moment is
/// caught by the next one).
pub(crate) fn kill_descendants() {
    for _ in 0..50 {
        let found = descendants();
        let alive: Vec<Pid> = found.iter().filter(|(_, z)| !z).map(|(p, _)| *p).collect();
        for pid in &alive {
            let _ = rustix::process::kill_process(*pid, Signal::KILL);
        }
        // Orphans come back to the runner (a subreaper) as zombies: reap them.
        while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
        if alive.is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Accepts one connection on `listener` until `deadline`, unless `gave_up` says the peer
/// will never come.
pub(crate) fn accept(
    listener: &UnixListener,
    deadline: Instant,
    mut gave_up: impl FnMut() -> bool,
) -> Result<Option<UnixStream>, io::Error> {
    listener.set_nonblocking(true)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_placeholder_is_quoted_for_where_it_stands() {
        let p = Path::new("/tmp/d/s.sock");
        assert_eq!(substitute("srv {sock}", p), "srv '/tmp/d/s.sock'");
        assert_eq!(substitute("srv '{sock}'", p), "srv '/tmp/d/s.sock'");
        assert_eq!(substitute("srv \"{sock}\"", p), "srv \"/tmp/d/s.sock\"");
        assert_eq!(
            substitute("srv --at=\"x {sock}\" '\"' {sock}", p),
            "srv --at=\"x /tmp/d/s.sock\" '\"' '/tmp/d/s.sock'"
        );
        assert_eq!(
            substitute("a \\'{sock}", p),
            "a \\''/tmp/d/s.sock'",
            "an escaped quote opens nothing"
        );
    }

    #[test]
    fn a_process_line_is_parsed_past_its_name() {
        let me = std::process::id().to_string();
        let (ppid, zombie) = stat(&me).unwrap();
        assert!(ppid > 0 && !zombie);
    }

    #[test]
    fn only_the_tail_of_stderr_is_kept_and_escaped() {
        let (reader, mut writer) = io::pipe().unwrap();
        let tail = Tail::follow(reader);
        for _ in 0..1000 {
            writer.write_all(&[b'#'; 1000]).unwrap();
        }
        writer.write_all(b"\nlast \x1b[2J line\n\n").unwrap();
        drop(writer);
        let line = tail.last_line(Duration::from_secs(5)).unwrap();
        assert_eq!(line, r"last \u{1b}[2J line");
        assert!(tail.state.lock().unwrap().0.len() <= STDERR_TAIL);
    }
}
