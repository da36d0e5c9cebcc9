//! `--fault` on stream and seqpacket connections: each fault as a client sees it, the seeded
//! choice of connections, `-v`, and the drain on SIGTERM with a fault active. (Datagram
//! sockets: `faults_datagram.rs`.)

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::net::{RecvFlags, SendFlags};
use udsecho_harness::{FramedPeer, Server, Signal, connect, short_temp_dir};
use udsecho_proto::{ErrorCode, Frame, GoodbyeReason};

const STOP: Duration = Duration::from_secs(10);

fn faulty(faults: &[&str]) -> Server {
    let mut args = Vec::new();
    for fault in faults {
        args.push("--fault".to_owned());
        args.push((*fault).to_owned());
    }
    Server::start(args).unwrap_or_else(|e| panic!("{faults:?}: {e}"))
}

fn client(server: &Server) -> UnixStream {
    let stream = connect(server.socket()).unwrap();
    stream.set_read_timeout(Some(STOP)).unwrap();
    stream.set_write_timeout(Some(STOP)).unwrap();
    stream
}

/// Asserts that at least `least` has passed since `since`.
pub(crate) fn at_least(since: Instant, least: Duration) {
    let took = since.elapsed();
    assert!(took >= least, "{took:?}, expected at least {least:?}");
}

/// Asserts that less than `most` has passed since `since`.
pub(crate) fn sooner_than(since: Instant, most: Duration) {
    let took = since.elapsed();
    assert!(took < most, "{took:?}, expected less than {most:?}");
}

/// Everything until EOF, or until the peer resets the connection (a close with our bytes
/// unread): what arrived before either.
fn read_to_close(stream: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading after {} bytes: {e}", out.len()),
        }
    }
}

#[test]
fn latency_holds_each_echo_at_least_the_delay() {
    let server = faulty(&["latency=300ms"]);
    let mut stream = client(&server);
    for _ in 0..2 {
        let sent = Instant::now();
        stream.write_all(b"ping").unwrap();
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping");
        at_least(sent, Duration::from_millis(300));
    }
}

#[test]
fn jitter_stays_within_its_bounds() {
    let server = faulty(&["latency=200ms~100ms"]);
    let mut stream = client(&server);
    for _ in 0..3 {
        let sent = Instant::now();
        stream.write_all(b"j").unwrap();
        let mut echo = [0u8; 1];
        stream.read_exact(&mut echo).unwrap();
        let waited = sent.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
    }
}

#[test]
fn slicer_echoes_in_slices_with_a_gap() {
    let server = faulty(&["slicer=3,gap=50ms"]);
    let mut stream = client(&server);
    let message = b"0123456789abcdefghij";
    let sent = Instant::now();
    stream.write_all(message).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while got.len() < message.len() {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0 && n <= 3, "a read of {n} bytes, slices are 3");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, message);
    // Seven slices, six gaps between them.
    at_least(sent, Duration::from_millis(300));
}

#[test]
fn bandwidth_limits_the_echo_rate() {
    let server = faulty(&["bandwidth=8KiB"]);
    let mut stream = client(&server);
    let data = vec![b'b'; 8 * 1024];
    let sent = Instant::now();
    stream.write_all(&data).unwrap();
    let mut echo = vec![0u8; data.len()];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(echo, data);
    // A second's worth, in 20 ms portions: the first goes at once.
    at_least(sent, Duration::from_millis(900));
}

#[test]
fn stop_reading_makes_the_peers_writes_block() {
    let server = faulty(&["stop_reading=1KiB"]);
    let mut stream = client(&server);
    stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let block = vec![b's'; 16 * 1024];
    let mut written = 0usize;
    loop {
        match stream.write(&block) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(written < 64 << 20, "64 MiB went in: the server still reads");
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut echoed = 0;
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        assert!(n > 0, "no EOF: the connection stays open");
        echoed += n;
    }
    assert_eq!(
        echoed, 1024,
        "exactly what was read before the stop comes back"
    );
}

#[test]
fn limit_data_closes_after_n_bytes_mid_message() {
    let server = faulty(&["limit_data=5"]);
    let mut stream = client(&server);
    stream.write_all(b"hello world\n").unwrap();
    assert_eq!(read_to_close(&mut stream), b"hello");
}

#[test]
fn timeout_never_answers_even_after_a_half_close() {
    let server = faulty(&["timeout"]);
    let mut stream = client(&server);
    stream.write_all(b"anyone there?\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut chunk = [0u8; 64];
    let err = stream.read(&mut chunk).expect_err("no answer, no EOF");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
}

#[test]
fn timeout_with_a_duration_closes_without_a_word() {
    let server = faulty(&["timeout=300ms"]);
    let mut stream = client(&server);
    let opened = Instant::now();
    stream.write_all(b"ping\n").unwrap();
    assert_eq!(read_to_close(&mut stream), b"");
    at_least(opened, Duration::from_millis(300));
}

#[test]
fn reset_peer_closes_at_once() {
    let server = faulty(&["reset_peer"]);
    let mut stream = client(&server);
    let opened = Instant::now();
    let _ = stream.write_all(b"hello\n");
    assert_eq!(read_to_close(&mut stream), b"");
    sooner_than(opened, Duration::from_secs(2));
}

#[test]
fn reset_peer_with_a_duration_closes_no_sooner() {
    let server = faulty(&["reset_peer=400ms"]);
    let mut stream = client(&server);
    let opened = Instant::now();
    stream.write_all(b"hello\n").unwrap();
    assert_eq!(read_to_close(&mut stream), b"", "closed unanswered");
    at_least(opened, Duration::from_millis(400));
    sooner_than(opened, Duration::from_secs(5));
}

#[test]
fn slow_close_delays_the_servers_close_after_the_half_close() {
    let server = faulty(&["slow_close=400ms"]);
    let mut stream = client(&server);
    stream.write_all(b"bye").unwrap();
    let closed = Instant::now();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut stream), b"bye");
    at_least(closed, Duration::from_millis(400));
}

#[test]
fn corrupt_inverts_the_byte_at_its_offset() {
    let server = faulty(&["corrupt=2"]);
    let mut stream = client(&server);
    stream.write_all(b"ab").unwrap();
    let mut first = [0u8; 2];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"ab");
    stream.write_all(b"cdef").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut stream), [b'c' ^ 0xff, b'd', b'e', b'f']);
}

#[test]
fn answer_replaces_each_line_with_the_canned_reply() {
    let server = faulty(&["answer=pong\\n"]);
    let mut stream = client(&server);
    stream.write_all(b"ping\nping\nunfinished").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut stream), b"pong\npong\n");
}

#[test]
fn answer_file_answers_with_its_lines_in_turn() {
    let dir = short_temp_dir();
    let file = dir.path().join("answers");
    std::fs::write(&file, "one\ntwo").unwrap();
    let server = faulty(&[&format!("answer_file={}", file.display())]);
    let mut stream = client(&server);
    stream.write_all(b"a\nb\nc\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut stream), b"one\ntwo\none\n");
}

/// The next frame is Goodbye (`Done`).
fn expect_goodbye(peer: &mut FramedPeer) {
    match peer.recv().unwrap() {
        Some(Frame::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::Done),
        other => panic!("expected Goodbye, got {other:?}"),
    }
}

fn data(payload: &'static [u8]) -> Frame {
    Frame::Data(Bytes::from_static(payload))
}

#[test]
fn goodbye_after_n_frames_ends_a_framed_session() {
    let server = faulty(&["goodbye_after=2"]);
    let (mut peer, _hello) = FramedPeer::handshake(server.socket()).unwrap();
    for payload in [&b"one"[..], b"two", b"three"] {
        peer.send(&data(payload)).unwrap();
    }
    assert_eq!(peer.recv().unwrap(), Some(data(b"one")));
    assert_eq!(peer.recv().unwrap(), Some(data(b"two")));
    expect_goodbye(&mut peer);
}

#[test]
fn goodbye_after_zero_frames_says_goodbye_right_after_the_hello() {
    let server = faulty(&["goodbye_after=0"]);
    let (mut peer, _hello) = FramedPeer::handshake(server.socket()).unwrap();
    peer.send(&data(b"never echoed")).unwrap();
    expect_goodbye(&mut peer);
}

#[test]
fn error_after_n_frames_sends_the_error_code_asked_for() {
    let server = faulty(&["error_after=1,code=9"]);
    let (mut peer, _hello) = FramedPeer::handshake(server.socket()).unwrap();
    peer.send(&data(b"one")).unwrap();
    peer.send(&data(b"two")).unwrap();
    assert_eq!(peer.recv().unwrap(), Some(data(b"one")));
    match peer.recv().unwrap() {
        Some(Frame::Error(e)) => assert_eq!(e.code, ErrorCode::Other(9)),
        other => panic!("expected Error, got {other:?}"),
    }
}

#[test]
fn faults_shape_a_framed_echo_too() {
    let server = faulty(&["slicer=4,gap=20ms"]);
    let (mut peer, _hello) = FramedPeer::handshake(server.socket()).unwrap();
    peer.send(&data(b"sliced into pieces")).unwrap();
    assert_eq!(peer.recv().unwrap(), Some(data(b"sliced into pieces")));
}

/// Which connections `timeout@0.5` hits: `true` for those that got no echo.
fn silenced(seed: &str) -> Vec<bool> {
    let server = Server::start(["--fault", "timeout@0.5", "--fault-seed", seed]).unwrap();
    (0..12)
        .map(|_| {
            // One after the other: connection numbers follow the order of connecting.
            let mut stream = client(&server);
            stream.write_all(b"x").unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut echo = [0u8; 1];
            stream.read_exact(&mut echo).is_err()
        })
        .collect()
}

#[test]
fn the_seeded_choice_of_connections_is_the_same_on_every_run() {
    let first = silenced("42");
    assert!(
        first.contains(&true) && first.contains(&false),
        "half of 12 connections: {first:?}"
    );
    assert_eq!(silenced("42"), first);
}

#[test]
fn verbose_says_which_fault_hit_which_connection() {
    let server = Server::start(["-v", "--fault", "corrupt@100%", "--fault-seed", "7"]).unwrap();
    let mut stream = client(&server);
    stream.write_all(b"\x1b[31mred\n").unwrap();
    let mut echo = [0u8; 9];
    stream.read_exact(&mut echo).unwrap();
    assert!(server.wait_stderr("echo:", STOP), "{}", server.stderr());
    let line = escaped_line(&server, "fault: corrupt@100%");
    assert!(line.contains("conn{id=1"), "{line}");
    assert!(server.stderr().contains("fault seed 7"));
}

/// The server's log line that holds `needle`, once no line holds an escape character: what
/// a peer sent (bytes, an address) is escaped.
pub(crate) fn escaped_line(server: &Server, needle: &str) -> String {
    let stderr = server.stderr();
    assert!(
        !stderr.contains('\u{1b}'),
        "a peer's bytes unescaped: {stderr}"
    );
    stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in {stderr}"))
        .to_owned()
}

#[test]
fn a_bad_fault_is_one_line_and_exit_2() {
    let out = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
        .args(["--fault", "latency=soon", "-s", "/nonexistent/s.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fault"), "{stderr}");
    assert!(
        stderr.contains("latency=soon") || stderr.contains("\"soon\""),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// With each fault active, SIGTERM still drains (what was sent comes back, unless the fault
/// drops it) and the server exits 0 well within `--shutdown-timeout`.
#[test]
fn sigterm_still_drains_with_a_fault_active() {
    for (fault, comes_back) in [
        ("latency=30s", &b"drain me"[..]),
        ("slicer=1,gap=1s", b"drain me"),
        ("bandwidth=1", b"drain me"),
        ("stop_reading=2", b"drain me"),
        ("slow_close=30s", b"drain me"),
        ("timeout", b""),
    ] {
        let mut server = Server::start(["--fault", fault, "--shutdown-timeout", "20s"]).unwrap();
        let mut stream = client(&server);
        stream.write_all(b"drain me").unwrap();
        // Let the server take the bytes (and the fault hold them).
        std::thread::sleep(Duration::from_millis(200));
        let signalled = Instant::now();
        server.signal(Signal::TERM).unwrap();
        assert_eq!(read_to_close(&mut stream), comes_back, "{fault}");
        let status = server.wait_exit(STOP).unwrap();
        assert!(status.success(), "{fault}: {}", server.stderr());
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "{fault}: {:?}",
            signalled.elapsed()
        );
    }
}

/// A blocking seqpacket connection to `path` whose reads wait 500 ms at most.
pub(crate) fn seqpacket(path: &Path) -> OwnedFd {
    let fd = crate::socket_types::seqpacket(path);
    let timeout = Some(Duration::from_millis(500));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, timeout)
        .unwrap();
    fd
}

/// The messages that come back for `sent`, until a read waits 500 ms or the server closes.
fn seqpacket_echoes(fault: &str, sent: &[&[u8]]) -> Vec<Vec<u8>> {
    let server = Server::start(["--type", "seqpacket", "--fault", fault]).unwrap();
    let fd = seqpacket(server.socket());
    for message in sent {
        rustix::net::send(&fd, message, SendFlags::empty()).unwrap();
    }
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok((n, _)) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()) {
        if n == 0 {
            break;
        }
        got.push(buf[..n].to_vec());
    }
    got
}

/// The message faults as a peer of a message socket sees them, the same on seqpacket and
/// datagram: `echoes(fault, sent)` is what came back for `sent` from a server with `fault`.
pub(crate) fn message_faults_hold(echoes: impl Fn(&str, &[&[u8]]) -> Vec<Vec<u8>>) {
    let sent: [&[u8]; 2] = [b"first", b"second"];
    assert_eq!(echoes("truncate=99", &sent), sent, "as sent");
    assert!(echoes("loss=1", &sent).is_empty());
    assert!(echoes("timeout", &sent).is_empty());
    assert_eq!(
        echoes("duplicate=1", &sent),
        [&b"first"[..], b"first", b"second", b"second"]
    );
    assert_eq!(echoes("reorder=1", &sent), [&b"second"[..], b"first"]);
    assert_eq!(echoes("truncate=3", &sent), [&b"fir"[..], b"sec"]);
    assert_eq!(echoes("answer=ok", &sent), [&b"ok"[..], b"ok"]);
    let dir = short_temp_dir();
    let file = dir.path().join("answers");
    std::fs::write(&file, "one\ntwo\n").unwrap();
    let answer_file = format!("answer_file={}", file.display());
    assert_eq!(echoes(&answer_file, &sent), [&b"one\n"[..], b"two\n"]);
}

#[test]
fn seqpacket_messages_are_lost_duplicated_reordered_and_truncated_on_demand() {
    message_faults_hold(seqpacket_echoes);
}

/// A seqpacket connection to a server with `fault`, its reads waiting 500 ms at most.
fn seqpacket_with(fault: &str) -> (Server, OwnedFd) {
    let server = Server::start(["--type", "seqpacket", "--fault", fault]).unwrap();
    let fd = seqpacket(server.socket());
    (server, fd)
}

/// The next message, `None` at EOF or a reset, `Err` when none came within the read timeout.
pub(crate) fn next_message(fd: &OwnedFd) -> Result<Option<Vec<u8>>, rustix::io::Errno> {
    let mut buf = vec![0u8; 4096];
    match rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()) {
        Ok((0, _)) | Err(rustix::io::Errno::CONNRESET) => Ok(None),
        Ok((n, _)) => Ok(Some(buf[..n].to_vec())),
        Err(e) => Err(e),
    }
}

#[test]
fn seqpacket_stop_reading_leaves_messages_queued_until_the_peers_sends_block() {
    let (_server, fd) = seqpacket_with("stop_reading=10");
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Send,
        Some(Duration::from_millis(300)),
    )
    .unwrap();
    let mut sent = 0;
    loop {
        match rustix::net::send(&fd, b"four", SendFlags::empty()) {
            Ok(_) => sent += 1,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            sent < 1_000_000,
            "a million messages went in: the server still reads"
        );
    }
    let mut echoed = 0;
    while let Ok(Some(message)) = next_message(&fd) {
        assert_eq!(message, b"four");
        echoed += 1;
    }
    // Whole messages: the one that reaches 10 bytes is the last read.
    assert_eq!(echoed, 3, "{sent} sent");
}

#[test]
fn seqpacket_timeout_answers_nothing_not_even_the_end() {
    let (_server, fd) = seqpacket_with("timeout");
    rustix::net::send(&fd, b"anyone?", SendFlags::empty()).unwrap();
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    assert_eq!(next_message(&fd), Err(rustix::io::Errno::AGAIN));
}

#[test]
fn seqpacket_reset_peer_closes_at_once() {
    let (_server, fd) = seqpacket_with("reset_peer");
    let opened = Instant::now();
    let _ = rustix::net::send(&fd, b"hello", SendFlags::empty());
    let long = Some(Duration::from_secs(5));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, long)
        .unwrap();
    assert_eq!(next_message(&fd), Ok(None));
    sooner_than(opened, Duration::from_secs(2));
}

#[test]
fn seqpacket_slow_close_echoes_then_waits_before_closing() {
    let (_server, fd) = seqpacket_with("slow_close=400ms");
    rustix::net::send(&fd, b"bye", SendFlags::empty()).unwrap();
    let closed = Instant::now();
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    let long = Some(Duration::from_secs(5));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, long)
        .unwrap();
    assert_eq!(next_message(&fd), Ok(Some(b"bye".to_vec())));
    assert_eq!(next_message(&fd), Ok(None));
    at_least(closed, Duration::from_millis(400));
}

/// Sends "x" with one descriptor (a pipe's read end) to a server with `fault`; returns how
/// many descriptors came back with the echo.
fn descriptors_back(fault: &str) -> usize {
    use std::os::fd::AsFd;
    use udsecho_harness::descriptors::{read_stream_with_fds, send_with_fds};
    let server = faulty(&[fault]);
    let stream = client(&server);
    let (read, _write) = std::io::pipe().unwrap();
    send_with_fds(stream.as_fd(), b"x", &[read.as_fd()], None).unwrap();
    let (bytes, fds) = read_stream_with_fds(stream.as_fd(), 1).unwrap();
    assert_eq!(bytes, b"x", "{fault}");
    fds.len()
}

#[test]
fn descriptors_are_withheld_or_one_added_on_demand() {
    assert_eq!(
        descriptors_back("corrupt=99"),
        1,
        "no descriptor fault: it comes back"
    );
    assert_eq!(descriptors_back("withhold_fds"), 0);
    assert_eq!(descriptors_back("extra_fd"), 2);
}

/// [`descriptors_back`] on a seqpacket connection: one message with one descriptor.
fn seqpacket_descriptors_back(fault: &str) -> usize {
    use std::os::fd::AsFd;
    use udsecho_harness::descriptors::{recv_with_fds, send_with_fds};
    let (_server, fd) = seqpacket_with(fault);
    let (read, _write) = std::io::pipe().unwrap();
    send_with_fds(fd.as_fd(), b"x", &[read.as_fd()], None).unwrap();
    let mut buf = [0u8; 16];
    let got = recv_with_fds(fd.as_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..got.len], b"x", "{fault}");
    got.fds.len()
}

#[test]
fn seqpacket_descriptors_are_withheld_or_one_added_on_demand() {
    assert_eq!(seqpacket_descriptors_back("truncate=99"), 1);
    assert_eq!(seqpacket_descriptors_back("withhold_fds"), 0);
    assert_eq!(seqpacket_descriptors_back("extra_fd"), 2);
}
