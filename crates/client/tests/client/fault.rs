//! `udsecho-client fault` against `udsecho-server --control`: faults added and removed while
//! connections are open.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use udsecho_harness::{Server, Signal, short_temp_dir};

use std::sync::mpsc::{Receiver, channel};

use crate::{LIMIT, bare_client, fake_server};

/// One round trip of `message`, and how long it took.
fn round_trip(stream: &mut UnixStream, message: &[u8]) -> Duration {
    let sent = Instant::now();
    stream.write_all(message).unwrap();
    let mut echo = vec![0u8; message.len()];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(echo, message);
    sent.elapsed()
}

#[test]
fn a_fault_added_at_run_time_reaches_an_open_connection_and_removing_it_heals_it() {
    let dir = short_temp_dir();
    let control = dir.path().join("control.sock");
    let mut server = Server::start(["--control".as_ref(), control.as_os_str()]).unwrap();
    let mode = std::fs::metadata(&control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "made like the main socket");
    let mut stream = UnixStream::connect(server.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(round_trip(&mut stream, b"healthy") < Duration::from_millis(300));

    let fault = |args: &[&str]| {
        let mut cmd = bare_client();
        cmd.arg("fault").arg("--control").arg(&control).args(args);
        cmd.assert()
    };
    fault(&["add", "latency=400ms"])
        .success()
        .stdout(predicate::eq("ok 1\n"));
    // The same connection, opened before the fault.
    assert!(round_trip(&mut stream, b"slowed") >= Duration::from_millis(400));
    fault(&["list"])
        .success()
        .stdout(predicate::eq("fault 1 latency=400ms\nok 1\n"));
    fault(&["remove", "1"])
        .success()
        .stdout(predicate::eq("ok\n"));
    assert!(round_trip(&mut stream, b"healed") < Duration::from_millis(300));

    fault(&["remove", "1"])
        .code(1)
        .stderr(predicate::str::contains("control: no fault 1"));
    fault(&["add", "lag=1s"])
        .code(1)
        .stderr(predicate::str::contains("unknown fault \"lag\""));
    fault(&["clear"]).success().stdout(predicate::eq("ok 0\n"));

    server.signal(Signal::TERM).unwrap();
    assert!(server.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(!control.exists(), "the control socket goes with the server");
}

#[test]
fn fault_names_a_control_socket_that_is_not_there() {
    let dir = short_temp_dir();
    let missing = dir.path().join("nothing.sock");
    bare_client()
        .arg("fault")
        .arg("--control")
        .arg(&missing)
        .arg("list")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("nothing.sock")
                .and(predicate::str::contains("no such socket")),
        );
}

/// A fake server that reads until EOF (or a reset), recording each read's size, then sends
/// `answer` and closes; the reads come back through the channel.
fn recording_server(
    answer: &'static [u8],
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Receiver<Vec<Vec<u8>>>,
) {
    let (tx, rx) = channel();
    let (dir, path) = fake_server(move |mut stream| {
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let mut reads = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            reads.push(chunk[..n].to_vec());
        }
        let _ = stream.write_all(answer);
        let _ = tx.send(reads);
    });
    (dir, path, rx)
}

fn pipe_with(path: &std::path::Path, fault: &str, stdin: &[u8]) -> udsecho_harness::ClientRun {
    let args = [
        path.as_os_str(),
        "--fault".as_ref(),
        fault.as_ref(),
        "--timeout".as_ref(),
        "1s".as_ref(),
    ];
    udsecho_harness::run_client(args, stdin, LIMIT).unwrap()
}

#[test]
fn pipe_slicer_sends_in_slices_with_a_gap() {
    let (_dir, path, reads) = recording_server(b"");
    let started = Instant::now();
    let run = pipe_with(&path, "slicer=2,gap=40ms", b"abcdefgh");
    assert!(run.status.success(), "{}", run.stderr);
    let reads = reads.recv_timeout(LIMIT).unwrap();
    assert!(reads.iter().all(|r| r.len() <= 2), "{reads:?}");
    assert_eq!(reads.concat(), b"abcdefgh");
    assert!(
        started.elapsed() >= Duration::from_millis(120),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn pipe_limit_data_closes_in_the_middle_of_a_message() {
    let (_dir, path, reads) = recording_server(b"too late");
    let run = pipe_with(&path, "limit_data=5", b"hello world\n");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(reads.recv_timeout(LIMIT).unwrap().concat(), b"hello");
    assert_eq!(run.stdout, b"", "the client closed: nothing more is read");
}

#[test]
fn pipe_half_close_shuts_the_write_side_early_and_reads_on() {
    let (_dir, path, reads) = recording_server(b"the answer");
    let run = pipe_with(&path, "half_close=3", b"abcdef");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(reads.recv_timeout(LIMIT).unwrap().concat(), b"abc");
    assert_eq!(run.stdout, b"the answer");
}

#[test]
fn pipe_stop_reading_makes_the_servers_writes_block() {
    let (tx, written) = channel();
    let (_dir, path) = fake_server(move |mut stream| {
        stream
            .set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let block = [b'w'; 4096];
        let mut total = 0usize;
        while total < 64 << 20 {
            match stream.write(&block) {
                Ok(n) => total += n,
                Err(_) => break,
            }
        }
        let _ = tx.send(total);
    });
    let run = pipe_with(&path, "stop_reading=1KiB", b"");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout.len(), 1024);
    let total = written.recv_timeout(LIMIT).unwrap();
    assert!(
        total < 16 << 20,
        "the server wrote {total} bytes: the client kept reading"
    );
}

#[test]
fn a_servers_fault_is_refused_by_the_client() {
    let (_dir, path, _reads) = recording_server(b"");
    let run = pipe_with(&path, "latency=1s", b"");
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("server's fault"), "{}", run.stderr);
}
