//! The client binary against our server, against small misbehaving test servers, and as a
//! user's shell sees it (usage errors, man pages, completions). One test binary, a module per
//! concern.

mod bench;
mod connect;
mod datagram;
mod descriptors;
mod docs;
mod fault;
mod pipe;
mod readme;
mod send;
mod seqpacket;
mod trace;
mod usage;
mod wrong_server;

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

/// How long any one client run may take before the test calls it hung.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// The client binary with no socket chosen and `UDSECHO_SOCKET` cleared.
pub(crate) fn bare_client() -> Command {
    let mut cmd = Command::new(udsecho_harness::binary("udsecho-client"));
    cmd.env_remove("UDSECHO_SOCKET")
        .env_remove("RUST_LOG")
        .timeout(LIMIT);
    cmd
}

/// Runs the client with `args` (a socket that is never reached) and returns its stderr,
/// checking the exit status is 2 and nothing panicked.
pub(crate) fn usage_error(args: &[&str]) -> String {
    let out = bare_client()
        .args(["-s", "/nonexistent/never-used.sock"])
        .args(args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("panicked").not())
        .get_output()
        .clone();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The client binary pointed at `socket` with `--socket`.
pub(crate) fn client(socket: &Path) -> Command {
    let mut cmd = bare_client();
    cmd.arg("--socket").arg(socket);
    cmd
}

/// The client pointed at `socket` (with `--socket`), run by someone who may not write to
/// it: as root, the client runs as `nobody` and the socket is made `0600` in a directory
/// anyone may enter; otherwise the socket is made `0000`.
pub(crate) fn client_without_access(socket: &Path) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let mut cmd = if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(dir) = socket.parent() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(udsecho_harness::binary("udsecho-client"));
        cmd
    } else {
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        Command::new(udsecho_harness::binary("udsecho-client"))
    };
    cmd.env_remove("UDSECHO_SOCKET")
        .arg("--socket")
        .arg(socket)
        .timeout(LIMIT);
    cmd
}

/// A one-shot test server on a fresh socket: `serve` gets the accepted connection.
pub(crate) fn fake_server(
    serve: impl FnOnce(UnixStream) + Send + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let dir = udsecho_harness::short_temp_dir();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve(stream);
        }
    });
    (dir, path)
}

/// A server that accepts, reads everything it is sent and never answers.
pub(crate) fn mute_server() -> (tempfile::TempDir, PathBuf) {
    fake_server(|mut stream| {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    })
}

/// Waits for `child` to exit, killing it (and failing) after `within`; collects its output.
pub(crate) fn wait_within(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the client was still running after {within:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The lines of `output`, sorted (for output whose interleaving depends on timing).
/// `send -n 2` of `message` over `--type kind` succeeds with both echoes intact (compared as
/// lines in any order: the second message may leave before the first echo is back).
pub(crate) fn send_twice(socket: &Path, kind: &str, message: &str) -> std::process::Output {
    let out = client(socket)
        .args(["--type", kind, "send", "-n", "2", "-i", "1ms"])
        .args(["--message", message])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(
        sorted_lines(&out.stdout),
        [
            format!("received: {message}"),
            format!("received: {message}"),
            format!("sent: {message}"),
            format!("sent: {message}")
        ],
        "{} B",
        message.len()
    );
    out
}

pub(crate) fn sorted_lines(output: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(output)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The one line the client printed on stderr (fails if there is not exactly one).
pub(crate) fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {text:?}");
    lines[0].to_owned()
}
