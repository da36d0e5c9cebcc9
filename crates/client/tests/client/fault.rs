//! `udsecho-client fault` against `udsecho-server --control`: faults added and removed while
//! connections are open.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use udsecho_harness::{Server, Signal, short_temp_dir};

use crate::bare_client;

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
