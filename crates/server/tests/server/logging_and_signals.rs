//! Signals and logging as supervisors, terminals and pipelines use them: every stopping signal
//! cleans up, the others are harmless, and a log stream that breaks, fills or is not a
//! terminal never changes what the server does.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udsecho_harness::{
    Server, Signal, binary, connect, output_within, raw_round_trip, short_temp_dir, signal,
    wait_for_socket,
};

const STOP: Duration = Duration::from_secs(10);

#[test]
fn sighup_drains_and_removes_the_socket_like_sigterm() {
    let mut server = Server::start(["-v"]).unwrap();
    let path = server.socket().to_owned();
    let mut peer = connect(&path).unwrap();
    peer.write_all(b"sent before the hangup").unwrap();
    // The echo proves the server has read it; the drain must still close cleanly.
    let mut echo = [0u8; 22];
    peer.read_exact(&mut echo).unwrap();
    let status = server.stop(Signal::HUP, STOP).unwrap();
    assert!(status.success(), "{status}: {}", server.stderr());
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(!path.exists(), "socket file removed");
    assert!(!Path::new(&format!("{}.lock", path.display())).exists());
    assert!(server.stderr().contains("SIGHUP"), "{}", server.stderr());
}

#[test]
fn sigquit_cuts_every_connection_at_once_and_still_cleans_up() {
    let mut server = Server::start(["--shutdown-timeout", "60s"]).unwrap();
    let path = server.socket().to_owned();
    // A peer that never reads would hold a graceful drain for the full 60 s.
    let mut stuck = connect(&path).unwrap();
    stuck
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while stuck.write_all(&chunk).is_ok() {}
    let started = Instant::now();
    let status = server.stop(Signal::QUIT, STOP).unwrap();
    assert!(status.success(), "{status}: {}", server.stderr());
    assert!(started.elapsed() < Duration::from_secs(5), "no drain wait");
    assert!(!path.exists(), "socket file removed");
}

#[test]
fn usr1_usr2_and_alrm_are_ignored() {
    let mut server = Server::start(Vec::<String>::new()).unwrap();
    for sig in [Signal::USR1, Signal::USR2, Signal::ALARM] {
        server.signal(sig).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !server.has_exited(),
            "{sig:?} killed it: {}",
            server.stderr()
        );
        assert_eq!(
            raw_round_trip(server.socket(), b"still", 5).unwrap(),
            b"still"
        );
    }
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
    assert!(!server.socket().exists());
}

#[test]
fn socket_mode_on_an_abstract_socket_is_a_usage_error() {
    let child = Command::new(binary("udsecho-server"))
        .args(["--socket", "@udsecho-mode-test", "--socket-mode", "0666"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, STOP).unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("abstract sockets have no file") && stderr.contains("--allow-uid"),
        "{stderr}"
    );
}

/// Spawns the server on a fresh socket with `stderr` as its standard error.
fn spawn_with_stderr(dir: &Path, args: &[&str], stderr: Stdio, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(binary("udsecho-server"));
    cmd.arg("--socket")
        .arg(dir.join("s.sock"))
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let child = cmd.spawn().unwrap();
    wait_for_socket(
        &dir.join("s.sock"),
        Instant::now() + Duration::from_secs(10),
        || false,
    )
    .unwrap();
    child
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    signal(child.id(), Signal::TERM).unwrap();
    let deadline = Instant::now() + STOP;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop within {STOP:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_closed_stderr_pipe_never_stops_the_server() {
    for args in [&[][..], &["-v"][..], &["-vv"][..]] {
        let dir = short_temp_dir();
        let mut child = spawn_with_stderr(dir.path(), args, Stdio::piped(), &[]);
        // The log reader goes away, like `2>&1 | head -1` after its line.
        drop(child.stderr.take());
        for round in 0..20 {
            let payload = format!("round {round}\nwith a newline");
            let echo = raw_round_trip(
                &dir.path().join("s.sock"),
                payload.as_bytes(),
                payload.len(),
            );
            assert_eq!(echo.unwrap(), payload.as_bytes(), "{args:?}");
        }
        let status = stop(&mut child);
        assert!(status.success(), "{args:?}: {status}");
        assert!(
            !dir.path().join("s.sock").exists(),
            "{args:?}: socket file removed"
        );
    }
}

#[test]
fn a_log_file_gets_plain_lines_without_escape_codes() {
    let dir = short_temp_dir();
    let log = dir.path().join("server.log");
    let file = fs::File::create(&log).unwrap();
    let mut child = spawn_with_stderr(dir.path(), &["-v"], Stdio::from(file), &[]);
    assert_eq!(
        raw_round_trip(&dir.path().join("s.sock"), b"hello", 5).unwrap(),
        b"hello"
    );
    assert!(stop(&mut child).success());
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO listening on"), "{text}");
    assert!(text.contains("echo: hello"), "{text}");
    assert!(!text.contains('\x1b'), "escape codes in a file: {text:?}");
}

#[test]
fn under_journald_lines_carry_their_priority_and_no_colour() {
    let dir = short_temp_dir();
    let log = dir.path().join("journal");
    let file = fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut child = spawn_with_stderr(
        dir.path(),
        &[],
        Stdio::from(file),
        &[("JOURNAL_STREAM", stream)],
    );
    assert!(stop(&mut child).success());
    let text = fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("<6>listening on"), "{text:?}");
    assert!(!text.contains('\x1b') && !text.contains("INFO"), "{text:?}");
}

/// Runs the server under `script`, so that its stderr is a terminal.
fn on_a_terminal(no_color: bool) -> String {
    let dir = short_temp_dir();
    let socket = dir.path().join("s.sock");
    let transcript = dir.path().join("typescript");
    let server = format!(
        "{} --socket {} 2>&1",
        binary("udsecho-server").display(),
        socket.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &server])
        .arg(&transcript)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_socket(&socket, Instant::now() + Duration::from_secs(10), || false).unwrap();
    // `script` forwards signals to nothing; stop the server by its socket's owner pid.
    let pid = server_pid(&socket);
    signal(pid, Signal::TERM).unwrap();
    let _ = child.wait();
    fs::read_to_string(&transcript).unwrap()
}

/// The pid of the `udsecho-server` whose command line names `socket`.
fn server_pid(socket: &Path) -> u32 {
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with(binary("udsecho-server").to_str().unwrap())
            && cmdline.contains(socket.to_str().unwrap())
        {
            return pid;
        }
    }
    panic!("no server for {}", socket.display());
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        return; // util-linux's script is not installed
    }
    let coloured = on_a_terminal(false);
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = on_a_terminal(true);
    assert!(plain.contains("listening on"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "NO_COLOR: {plain:?}");
}

#[test]
fn out_of_descriptors_the_accept_error_is_logged_once_then_summarised_and_serving_resumes() {
    let dir = short_temp_dir();
    let socket = dir.path().join("s.sock");
    let log = dir.path().join("server.log");
    let mut child = Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(binary("udsecho-server"))
        .arg("--socket")
        .arg(&socket)
        .arg("-q")
        .env_remove("LISTEN_FDS")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_socket(&socket, Instant::now() + Duration::from_secs(10), || false).unwrap();
    let peers: Vec<_> = (0..100).map(|_| connect(&socket).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(5));
    let text = fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("accept on")).count();
    assert!((1..=3).contains(&lines), "{lines} lines in 5 s:\n{text}");
    assert!(text.contains("Too many open files"), "{text}");
    drop(peers);
    // Descriptors come back: the server serves new peers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match raw_round_trip(&socket, b"back", 4) {
            Ok(echo) if echo == b"back" => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("not serving again: {other:?}\n{text}"),
        }
    }
    assert!(stop(&mut child).success());
}

#[test]
fn an_accept_error_that_cannot_heal_ends_the_server_with_one_line() {
    if Command::new("strace").arg("-V").output().is_err() {
        return;
    }
    let dir = short_temp_dir();
    let socket = dir.path().join("s.sock");
    // The second accept fails with EINVAL, as on a socket that is not listening.
    let child = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args([
            "-e",
            "trace=accept4",
            "-e",
            "inject=accept4:error=EINVAL:when=2",
        ])
        .arg(binary("udsecho-server"))
        .arg("--socket")
        .arg(&socket)
        .arg("-q")
        .env_remove("LISTEN_FDS")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&socket, Instant::now() + Duration::from_secs(20), || false).unwrap();
    // The first accept is the readiness probe's; this one meets the injected error.
    let _ = connect(&socket);
    let out = output_within(child, STOP).unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("udsecho-server: ") && last.contains("Invalid argument"),
        "{stderr}"
    );
    assert!(!socket.exists(), "the socket file is still cleaned up");
}

#[test]
fn each_read_is_one_echo_line_and_a_peer_cannot_forge_a_log_line() {
    let dir = short_temp_dir();
    let log = dir.path().join("server.log");
    let mut child = spawn_with_stderr(
        dir.path(),
        &["-v"],
        Stdio::from(fs::File::create(&log).unwrap()),
        &[],
    );
    let socket = dir.path().join("s.sock");
    // The tutorial's message, in one write: detection must not split it into two lines.
    let ola = "olá mundo".as_bytes();
    assert_eq!(raw_round_trip(&socket, ola, ola.len()).unwrap(), ola);
    let forged = b"hi\n WARN fake line\x1b[31m\n";
    assert_eq!(
        raw_round_trip(&socket, forged, forged.len()).unwrap(),
        forged
    );
    assert!(stop(&mut child).success());
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.ends_with("echo: olá mundo")),
        "one line for one read: {text}"
    );
    assert!(!text.lines().any(|l| l.ends_with("echo: do")), "{text}");
    assert!(
        text.contains(r"echo: hi\n WARN fake line\u{1b}[31m"),
        "escaped on one line: {text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("WARN fake")),
        "a forged line: {text}"
    );
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// `--timestamps rfc3339` starts each line with the wall-clock time in UTC, `--timestamps
/// uptime` with the seconds since the server started (monotonic); without the flag lines
/// carry no time (a supervisor's journal adds its own).
#[test]
fn timestamps_on_log_lines_are_an_option() {
    let first_line = |args: &[&str]| {
        let dir = short_temp_dir();
        let log = dir.path().join("server.log");
        let file = fs::File::create(&log).unwrap();
        let mut child = spawn_with_stderr(dir.path(), args, Stdio::from(file), &[]);
        assert!(stop(&mut child).success());
        let text = fs::read_to_string(&log).unwrap();
        text.lines().next().unwrap_or_default().to_owned()
    };
    let line = first_line(&["--timestamps", "rfc3339"]);
    let (stamp, rest) = line.split_once(' ').unwrap();
    let bytes = stamp.as_bytes();
    assert!(
        stamp.len() >= 20
            && bytes[4] == b'-'
            && bytes[10] == b'T'
            && stamp.ends_with('Z')
            && stamp[..4].parse::<u32>().is_ok_and(|y| y >= 2024),
        "{line}"
    );
    assert!(rest.trim_start().starts_with("INFO listening on"), "{line}");

    let line = first_line(&["--timestamps", "uptime"]);
    let (stamp, rest) = line.trim_start().split_once(' ').unwrap();
    let seconds: f64 = stamp.strip_suffix('s').unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&seconds), "{line}");
    assert!(rest.trim_start().starts_with("INFO listening on"), "{line}");

    assert!(first_line(&[]).starts_with(" INFO listening on"));
}
