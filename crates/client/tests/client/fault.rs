//! Faults and the client: `udsecho-client fault` against `udsecho-server --control` (faults
//! added and removed while connections are open), and the client as a misbehaving client
//! (`--fault` on the raw and framed pipes and on `send`) against fake servers that record
//! what they see.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use udsecho_harness::{Server, Signal, short_temp_dir};

use std::sync::mpsc::{Receiver, channel};

use crate::{LIMIT, bare_client, fake_server};

/// Asserts that at least `least` has passed since `since`.
fn at_least(since: Instant, least: Duration) {
    let took = since.elapsed();
    assert!(took >= least, "{took:?}, expected at least {least:?}");
}

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

/// A fake server that reads until EOF (or a reset), recording each read (`echo`: writing
/// each back at once), then sends `answer` and closes; the reads come back through the
/// channel.
fn recording_server(
    echo: bool,
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
            if echo {
                let _ = stream.write_all(&chunk[..n]);
            }
            reads.push(chunk[..n].to_vec());
        }
        let _ = stream.write_all(answer);
        let _ = tx.send(reads);
    });
    (dir, path, rx)
}

/// The pipe to `path` with `extra` flags (`--framed`), `--fault fault` and a `--timeout` of
/// one second, fed `stdin`.
fn pipe_with(
    path: &std::path::Path,
    extra: &[&str],
    fault: &str,
    stdin: &[u8],
) -> udsecho_harness::ClientRun {
    let mut args = vec![path.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.extend(["--fault", fault, "--timeout", "1s"].map(std::ffi::OsStr::new));
    udsecho_harness::run_client(args, stdin, LIMIT).unwrap()
}

/// The fake server's writes (what [`write_until_blocked`] sent back) blocked: far less went
/// in than a client that reads would have taken.
fn writes_blocked(written: &Receiver<usize>) {
    let total = written.recv_timeout(LIMIT).unwrap();
    assert!(
        total < 16 << 20,
        "the server wrote {total} bytes: the client kept reading"
    );
}

/// Writes `block` again and again until a write has waited 300 ms (or 64 MiB went): how
/// many bytes went.
fn write_until_blocked(stream: &mut UnixStream, block: &[u8]) -> usize {
    stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut total = 0usize;
    while total < 64 << 20 {
        match stream.write(block) {
            Ok(n) => total += n,
            Err(_) => break,
        }
    }
    total
}

#[test]
fn pipe_slicer_sends_in_slices_with_a_gap() {
    let (_dir, path, reads) = recording_server(false, b"");
    let started = Instant::now();
    let run = pipe_with(&path, &[], "slicer=2,gap=40ms", b"abcdefgh");
    assert!(run.status.success(), "{}", run.stderr);
    let reads = reads.recv_timeout(LIMIT).unwrap();
    assert!(reads.iter().all(|r| r.len() <= 2), "{reads:?}");
    assert_eq!(reads.concat(), b"abcdefgh");
    at_least(started, Duration::from_millis(120));
}

#[test]
fn pipe_limit_data_closes_in_the_middle_of_a_message() {
    let (_dir, path, reads) = recording_server(false, b"too late");
    let run = pipe_with(&path, &[], "limit_data=5", b"hello world\n");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(reads.recv_timeout(LIMIT).unwrap().concat(), b"hello");
    assert_eq!(run.stdout, b"", "the client closed: nothing more is read");
}

#[test]
fn pipe_half_close_shuts_the_write_side_early_and_reads_on() {
    let (_dir, path, reads) = recording_server(false, b"the answer");
    let run = pipe_with(&path, &[], "half_close=3", b"abcdef");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(reads.recv_timeout(LIMIT).unwrap().concat(), b"abc");
    assert_eq!(run.stdout, b"the answer");
}

#[test]
fn pipe_stop_reading_makes_the_servers_writes_block() {
    let (tx, written) = channel();
    let (_dir, path) = fake_server(move |mut stream| {
        let _ = tx.send(write_until_blocked(&mut stream, &[b'w'; 4096]));
    });
    let run = pipe_with(&path, &[], "stop_reading=1KiB", b"");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout.len(), 1024);
    writes_blocked(&written);
}

#[test]
fn a_servers_fault_is_refused_by_the_client() {
    let (_dir, path, _reads) = recording_server(false, b"");
    let run = pipe_with(&path, &[], "latency=1s", b"");
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("server's fault"), "{}", run.stderr);
}

/// What a framed fake server saw: the size of each read after the opening, and every byte
/// the client sent (the opening included).
#[derive(Debug)]
struct FramedSeen {
    reads: Vec<usize>,
    total: usize,
}

/// A framed server that answers the Hello, then reads until EOF or the client's Goodbye.
/// Each Data frame is echoed at once (`at_once`), or only at the end (EOF or Goodbye: then a
/// client that half-closed must read on to see them); a Goodbye is answered with one. What it
/// saw comes back through the channel.
fn framed_server(at_once: bool) -> (tempfile::TempDir, std::path::PathBuf, Receiver<FramedSeen>) {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;
    use udsecho_proto::{Frame, FrameCodec, Goodbye, GoodbyeReason, Hello};
    let (tx, rx) = channel();
    let (dir, path) = fake_server(move |mut stream| {
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let opening = crate::wrong_server::swallow_opening(&mut stream);
        let encode = |frame: Frame| {
            let mut out = BytesMut::new();
            frame.encode(&mut out, u32::MAX).unwrap();
            out
        };
        stream
            .write_all(&encode(Frame::Hello(Hello::new(1 << 20, "fake"))))
            .unwrap();
        let mut seen = FramedSeen {
            reads: Vec::new(),
            total: opening,
        };
        let (mut codec, mut input, mut echoes) = (FrameCodec::new(), BytesMut::new(), Vec::new());
        let mut chunk = [0u8; 4096];
        'reading: while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            seen.reads.push(n);
            seen.total += n;
            input.extend_from_slice(&chunk[..n]);
            while let Ok(Some(frame)) = codec.decode(&mut input) {
                match frame {
                    Frame::Data(payload) if at_once => {
                        let _ = stream.write_all(&encode(Frame::Data(payload)));
                    }
                    Frame::Data(payload) => echoes.push(payload),
                    Frame::Goodbye(_) => {
                        for payload in echoes.drain(..) {
                            let _ = stream.write_all(&encode(Frame::Data(payload)));
                        }
                        let bye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Done));
                        let _ = stream.write_all(&encode(bye));
                        break 'reading;
                    }
                    _ => {}
                }
            }
        }
        for payload in echoes {
            let _ = stream.write_all(&encode(Frame::Data(payload)));
        }
        let _ = tx.send(seen);
    });
    (dir, path, rx)
}

#[test]
fn framed_pipe_slicer_sends_its_frames_in_slices_with_a_gap() {
    let (_dir, path, seen) = framed_server(false);
    let started = Instant::now();
    let run = pipe_with(&path, &["--framed"], "slicer=2,gap=40ms", b"abcdefgh\n");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, b"abcdefgh\n", "the echo, whole");
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert!(seen.reads.iter().all(|&n| n <= 2), "{:?}", seen.reads);
    // The Data frame (13 bytes) and the Goodbye: ten slices at least, 40 ms apart.
    assert!(seen.reads.len() >= 10, "{:?}", seen.reads);
    at_least(started, Duration::from_millis(360));
}

#[test]
fn framed_pipe_limit_data_closes_in_the_middle_of_a_frame() {
    let (_dir, path, seen) = framed_server(true);
    let line = [b'x'; 200];
    let run = pipe_with(
        &path,
        &["--framed"],
        "limit_data=100",
        &[&line[..], b"\n"].concat(),
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, b"", "the frame was cut: no echo");
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert_eq!(seen.total, 100, "exactly 100 bytes, the opening included");
}

#[test]
fn framed_pipe_half_close_shuts_the_write_side_mid_frame_and_prints_the_rest() {
    let (_dir, path, seen) = framed_server(false);
    let long = [b'y'; 200];
    let stdin = [&b"one\n"[..], &long[..], b"\n"].concat();
    let run = pipe_with(&path, &["--framed"], "half_close=100", &stdin);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout, b"one\n",
        "echoed after our half-close, and printed"
    );
    assert_eq!(seen.recv_timeout(LIMIT).unwrap().total, 100);
}

#[test]
fn framed_pipe_stop_reading_makes_the_servers_writes_block() {
    use bytes::BytesMut;
    use udsecho_proto::{Frame, Hello};
    let (tx, written) = channel();
    let (_dir, path) = fake_server(move |mut stream| {
        crate::wrong_server::swallow_opening(&mut stream);
        let mut out = BytesMut::new();
        Frame::Hello(Hello::new(1 << 20, "fake"))
            .encode(&mut out, u32::MAX)
            .unwrap();
        stream.write_all(&out).unwrap();
        let mut frame = BytesMut::new();
        Frame::Data(vec![b'w'; 1000].into())
            .encode(&mut frame, u32::MAX)
            .unwrap();
        let _ = tx.send(write_until_blocked(&mut stream, &frame));
    });
    let run = pipe_with(&path, &["--framed"], "stop_reading=4KiB", b"");
    assert!(run.status.success(), "{}", run.stderr);
    // The Hello and four frames of 1005 bytes fit in 4 KiB; the fifth is cut by the stop.
    let line = [&[b'w'; 1000][..], b"\n"].concat();
    assert_eq!(run.stdout, line.repeat(4));
    writes_blocked(&written);
}

#[test]
fn send_slicer_sends_each_message_in_slices_and_checks_every_echo() {
    let (_dir, path, reads) = recording_server(true, b"");
    bare_client()
        .arg(&path)
        .args(["send", "-n", "2", "-i", "50ms", "-m", "hello"])
        .args(["--fault", "slicer=2,gap=20ms"])
        .assert()
        .success()
        .stdout("sent: hello\nreceived: hello\nsent: hello\nreceived: hello\n")
        .stderr("2 sent, 2 echoed intact\n");
    let reads = reads.recv_timeout(LIMIT).unwrap();
    assert!(reads.iter().all(|r| r.len() <= 2), "{reads:?}");
    assert_eq!(reads.concat(), b"hellohello");
}

#[test]
fn framed_send_slicer_cuts_the_frames_and_checks_every_echo() {
    let (_dir, path, seen) = framed_server(true);
    bare_client()
        .arg(&path)
        .args(["send", "--framed", "-n", "2", "-i", "50ms", "-m", "hello"])
        .args(["--fault", "slicer=3,gap=5ms"])
        .assert()
        .success()
        .stderr("2 sent, 2 echoed intact\n");
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert!(seen.reads.iter().all(|&n| n <= 3), "{:?}", seen.reads);
}

#[test]
fn the_client_takes_faults_only_where_they_make_sense() {
    for (args, says) in [
        (
            &["send", "--fault", "half_close=3"][..],
            "send takes --fault slicer only",
        ),
        (
            &["--type", "seqpacket", "--fault", "slicer=1"],
            "--fault goes with a stream",
        ),
        (
            &["--fault", "slicer=1", "bench"],
            "--fault goes with the pipe and send",
        ),
        (&["--fault", "slicer=1@50%"], "no share"),
    ] {
        let stderr = crate::usage_error(args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
