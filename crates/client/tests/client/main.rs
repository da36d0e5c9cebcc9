//! The client binary against our server and against small misbehaving test servers.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use udsecho_harness::{Server, checksum, random_payload, run_client, short_temp_dir};

const LIMIT: Duration = Duration::from_secs(20);

fn client(socket: &Path) -> Command {
    let mut cmd = Command::new(udsecho_harness::binary("udsecho-client"));
    cmd.env_remove("UDSECHO_SOCKET")
        .arg("--socket")
        .arg(socket)
        .timeout(LIMIT);
    cmd
}

/// A one-shot test server on a fresh socket: `serve` gets the accepted connection.
fn fake_server(
    serve: impl FnOnce(std::os::unix::net::UnixStream) + Send + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let dir = short_temp_dir();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve(stream);
        }
    });
    (dir, path)
}

#[test]
fn pipe_round_trips_a_binary_mebibyte_and_exits_0_on_stdin_eof() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let data = random_payload(1 << 20, 42);
    let socket = server.socket().to_str().unwrap();
    let run = run_client(["--socket", socket], &data, LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout.len(), data.len());
    assert_eq!(checksum(&run.stdout), checksum(&data));
    // `pipe` spelled out, and --socket after the subcommand.
    let run = run_client(["pipe", "--socket", socket], b"hi\n", LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, b"hi\n");
}

#[test]
fn pipe_half_closes_so_the_peer_sees_eof_and_its_reply_still_prints() {
    // A peer that reads to EOF first, then answers: only works if the client half-closes
    // and keeps reading.
    let (_dir, path) = fake_server(|mut stream| {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        stream
            .write_all(format!("got {} bytes", all.len()).as_bytes())
            .unwrap();
    });
    client(&path)
        .write_stdin("12345")
        .assert()
        .success()
        .stdout("got 5 bytes");
}

#[test]
fn framed_pipe_sends_lines_as_frames_and_prints_each_echo() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    client(server.socket())
        .arg("--framed")
        .write_stdin("first line\nsecond\n\nlast without newline")
        .assert()
        .success()
        .stdout("first line\nsecond\n\nlast without newline\n");
}

#[test]
fn framed_pipe_shows_a_server_error_frame_and_exits_1() {
    let server = Server::start(["--max-frame", "16"]).unwrap();
    client(server.socket())
        .arg("--framed")
        .write_stdin("this line is longer than sixteen bytes\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("FrameTooLarge"))
        .stderr(predicate::str::contains(server.socket().to_str().unwrap()));
}

#[test]
fn send_prints_each_message_and_echo_and_stops_after_count() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for framed in [false, true] {
        let mut cmd = client(server.socket());
        cmd.args(["send", "--count", "3", "--interval", "20ms"]);
        if framed {
            cmd.arg("--framed");
        }
        let out = cmd.assert().success().get_output().stdout.clone();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("sent: olá mundo\n").count(), 3, "{text}");
        assert_eq!(text.matches("received: olá mundo\n").count(), 3, "{text}");
    }
}

#[test]
fn send_detects_an_echo_that_differs_and_exits_3() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            buf[n / 2] ^= 0x01; // one flipped bit
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    client(&path)
        .args([
            "send",
            "--count",
            "2",
            "--interval",
            "10ms",
            "--message",
            "abcdef",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("mismatch"))
        .stderr(predicate::str::contains("abcdef"));
}

#[test]
fn no_such_socket_names_the_path() {
    let dir = short_temp_dir();
    let path = dir.path().join("missing.sock");
    client(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(path.to_str().unwrap()))
        .stderr(predicate::str::contains("no such socket"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn stale_socket_file_is_connection_refused() {
    let dir = short_temp_dir();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    client(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("connection refused"))
        .stderr(predicate::str::contains("stale"));
}

#[test]
fn permission_denied_names_the_path() {
    let dir = short_temp_dir();
    let path = dir.path().join("closed.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(udsecho_harness::binary("udsecho-client"));
        cmd
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        Command::new(udsecho_harness::binary("udsecho-client"))
    };
    cmd.arg("--socket").arg(&path).timeout(LIMIT);
    cmd.assert()
        .code(1)
        .stderr(predicate::str::contains(path.to_str().unwrap()))
        .stderr(predicate::str::contains("permission denied"));
}

#[test]
fn a_server_that_never_echoes_times_out() {
    let (_dir, path) = fake_server(|stream| {
        thread::sleep(Duration::from_secs(5));
        drop(stream);
    });
    client(&path)
        .args(["--timeout", "300ms", "send", "--count", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("timed out"))
        .stderr(predicate::str::contains(path.to_str().unwrap()));
}

#[test]
fn a_server_that_hangs_up_is_reported_as_closed_early() {
    let (_dir, path) = fake_server(drop);
    client(&path)
        .args(["send", "--count", "3", "--interval", "50ms"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("closed the connection early"));
}

#[test]
fn bench_reports_sane_json_against_our_server() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for mode in ["raw", "framed"] {
        for pipeline in ["1", "8"] {
            let out = client(server.socket())
                .args([
                    "bench",
                    "--connections",
                    "4",
                    "--duration",
                    "300ms",
                    "--size",
                    "1KiB",
                ])
                .args(["--mode", mode, "--pipeline", pipeline, "--json"])
                .assert()
                .success()
                .get_output()
                .stdout
                .clone();
            let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(report["mode"], mode);
            assert_eq!(report["connections"], 4);
            assert_eq!(report["size"], 1024);
            let trips = report["round_trips"].as_u64().unwrap();
            assert!(trips > 0, "{report}");
            let rate = report["round_trips_per_sec"].as_f64().unwrap();
            let secs = report["seconds"].as_f64().unwrap();
            assert!((rate * secs - trips as f64).abs() < 1.0, "{report}");
            let l = &report["latency_us"];
            assert!(l["p50"].as_f64().unwrap() > 0.0);
            assert!(
                l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["p999"].as_f64(),
                "{report}"
            );
        }
    }
}

#[test]
fn bench_fails_when_echoes_are_corrupted() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0
                || stream
                    .write_all(&buf[..n].iter().map(|b| !b).collect::<Vec<_>>())
                    .is_err()
            {
                break;
            }
        }
    });
    client(&path)
        .args(["bench", "--duration", "300ms", "--json"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("mismatch"));
}

#[test]
fn send_without_count_runs_until_ctrl_c_then_prints_a_summary() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .arg("--socket")
        .arg(server.socket())
        .args(["send", "--interval", "20ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    udsecho_harness::signal(child.id(), udsecho_harness::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sent = stdout.matches("sent: olá mundo").count();
    assert!(sent >= 3, "kept sending until Ctrl-C: {stdout}");
    assert!(
        stderr
            .trim()
            .ends_with(&format!("{sent} sent, {sent} echoed intact")),
        "one-line summary: {stderr}"
    );
}

#[test]
fn a_server_that_closes_with_our_message_unread_is_reported_as_closed_early() {
    // Closing with unread input makes the kernel reset the connection (ECONNRESET on our
    // read), which is the same event for a person: the server hung up.
    let (_dir, path) = fake_server(|stream| {
        thread::sleep(Duration::from_millis(300));
        drop(stream);
    });
    client(&path)
        .args(["send", "--count", "3", "--interval", "50ms"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("closed the connection early"));
}
