//! `pipe` (the default): like `nc -U`, both directions ending independently.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use predicates::prelude::*;
use udsecho_harness::{Server, checksum, random_payload, run_client};

use crate::{LIMIT, client, fake_server, one_line, wait_within};

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
fn pipe_sends_all_of_stdin_to_a_server_that_half_closes_first() {
    // What `nc -N -lU` with no input does: shut down its write side at once, then read
    // until the client's EOF. Every byte piped in must still arrive.
    let (got_tx, got) = mpsc::channel();
    let (_dir, path) = fake_server(move |mut stream| {
        stream.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all);
        let _ = got_tx.send(all);
    });
    let data = random_payload(1 << 20, 13);
    let run = run_client(["--socket", path.to_str().unwrap()], &data, LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let received = got.recv_timeout(LIMIT).unwrap();
    assert_eq!(received.len(), data.len(), "bytes the server received");
    assert_eq!(checksum(&received), checksum(&data));
}

#[test]
fn pipe_ends_quietly_with_exit_0_when_its_stdout_reader_goes_away() {
    // `udsecho-client < big | head -c 100`: like nc, a closed stdout is a normal end.
    let server = Server::start(Vec::<String>::new()).unwrap();
    let mut child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .arg(server.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let block = random_payload(1 << 20, 5);
        for _ in 0..64 {
            if stdin.write_all(&block).is_err() {
                break;
            }
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 100];
    stdout.read_exact(&mut head).unwrap();
    drop(stdout);
    let out = wait_within(child, LIMIT);
    let _ = feeder.join();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn pipe_fails_when_the_server_closes_without_reading_what_was_sent() {
    // A uid the server does not allow: it accepts, then closes without reading.
    let server = Server::start(["--allow-uid", "4000000"]).unwrap();
    let out = client(server.socket())
        .write_stdin("ping\n")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with(&format!(
            "udsecho-client: {}: the server closed the connection early",
            server.socket().display()
        )),
        "{line}"
    );
    // It read nothing: the likely causes are named (#34), not `it read nothing from stdin`.
    assert!(
        line.contains("--allow-uid") && line.contains("limit"),
        "names the likely causes: {line}"
    );
    assert!(!line.contains("it read nothing from stdin"), "{line}");
}

/// Raw input that happens to begin with the framed preamble makes an auto-mode server read a
/// framed session, which it then refuses: the client must not say the server is framed-only
/// (it is not), but why this input was taken for frames.
#[test]
fn raw_input_that_begins_with_the_preamble_is_not_blamed_on_a_framed_only_server() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    let mut input = udsecho_proto::PREAMBLE.to_vec();
    input.extend_from_slice(b"hello world\n");
    let run = run_client(["--socket", socket], &input, LIMIT).unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        !run.stderr.contains("the server speaks framed mode only"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("stdin began with the framed preamble")
            && run.stderr.contains("--mode raw"),
        "{}",
        run.stderr
    );
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
    // A server that answers the Hello, then refuses the first Data frame with an Error.
    let (_dir, path) = fake_server(|mut stream| {
        use std::io::{Read, Write};
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        stream.read_exact(&mut vec![0u8; len]).unwrap();
        let mut out = bytes::BytesMut::new();
        udsecho_proto::Frame::Hello(udsecho_proto::Hello::new(1 << 20, "fake"))
            .encode(&mut out, u32::MAX)
            .unwrap();
        udsecho_proto::Frame::Error(udsecho_proto::ErrorFrame::new(
            udsecho_proto::ErrorCode::FrameTooLarge,
            "frame length 39 exceeds max_frame 16",
        ))
        .encode(&mut out, u32::MAX)
        .unwrap();
        let _ = stream.write_all(&out);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    client(&path)
        .arg("--framed")
        .write_stdin("this line is longer than sixteen bytes\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("FrameTooLarge"))
        .stderr(predicate::str::contains(path.to_str().unwrap()));
}

/// A line longer than the server's limit is refused before it is sent, saying both sizes.
#[test]
fn framed_pipe_refuses_a_line_over_the_servers_max_frame() {
    let server = Server::start(["--max-frame", "16"]).unwrap();
    client(server.socket())
        .arg("--framed")
        .write_stdin("this line is longer than sixteen bytes\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exceeds max_frame 16"))
        .stderr(predicate::str::contains(server.socket().to_str().unwrap()));
}

#[test]
fn framed_pipe_against_a_raw_only_server_says_to_drop_framed() {
    let server = Server::start(["--mode", "raw"]).unwrap();
    let out = client(server.socket())
        .arg("--framed")
        .write_stdin("hello\n")
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: the server echoed the preamble: it is in raw mode; drop --framed",
            server.socket().display()
        )
    );
}

#[test]
fn framed_pipe_gives_up_on_a_server_that_never_answers_hello() {
    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["--framed", "--timeout", "1s"])
        .write_stdin("hello\n")
        .timeout(Duration::from_secs(2))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for the server's Hello",
            path.display()
        )
    );
}

#[test]
fn framed_pipe_gives_up_on_a_server_that_sends_part_of_a_hello() {
    let (_dir, path) = fake_server(|mut stream| {
        // A frame header announcing 20 bytes, then three of them.
        let _ = stream.write_all(&[0, 0, 0, 20, 0x00, 1, 2]);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    });
    client(&path)
        .args(["--framed", "--timeout", "1s", "pipe"])
        .write_stdin("hello\n")
        .timeout(Duration::from_secs(2))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("timed out after 1s"));
}

#[test]
fn the_socket_path_can_be_given_as_an_argument_like_nc() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    for args in [vec![socket], vec!["pipe", socket], vec![socket, "pipe"]] {
        let run = run_client(args.clone(), b"positional\n", LIMIT).unwrap();
        assert!(run.status.success(), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, b"positional\n", "{args:?}");
    }
}

#[test]
fn a_raw_pipe_to_a_framed_only_server_says_so_and_fails() {
    let server = Server::start(["--mode", "framed"]).unwrap();
    let socket = server.socket().to_str().unwrap();
    let run = run_client(["--socket", socket], b"hello\n", LIMIT).unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "the Error frame is not printed: {:?}",
        run.stdout
    );
    assert!(
        run.stderr.contains(&format!(
            "{socket}: the server speaks framed mode only; add --framed"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_raw_pipe_stays_byte_transparent_for_bytes_that_look_like_an_error_frame() {
    // An Error frame, as a framed-only server would send it, piped through a raw echo server:
    // it is what was sent, so it is printed as it is.
    let frame = b"\x00\x00\x00\x06\x02\x01\x03abc".to_vec();
    let server = Server::start(["--mode", "raw"]).unwrap();
    let socket = server.socket().to_str().unwrap();
    let run = run_client(["--socket", socket], &frame, LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, frame);
    // A peer that answers with such bytes after reading something else, then more: printed.
    let (_dir, path) = crate::fake_server(|mut stream| {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        stream
            .write_all(b"\x00\x00\x00\x06\x02\x01\x03abc and more")
            .unwrap();
    });
    client(&path)
        .write_stdin("x")
        .assert()
        .success()
        .stdout(predicate::eq(
            &b"\x00\x00\x00\x06\x02\x01\x03abc and more"[..],
        ));
}
