//! Graceful drain, connection limits, idle timeout, peer credentials, socket activation.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use udsecho_harness::{
    FramedPeer, Server, Signal, StreamingPeer, connect, random_payload, raw_round_trip,
    short_temp_dir, wait_for_socket,
};
use udsecho_proto::{Frame, GoodbyeReason};

const STOP: Duration = Duration::from_secs(10);

#[test]
fn sigterm_during_raw_traffic_echoes_every_byte_sent_before_it() {
    let mut server = Server::start(Vec::<String>::new()).unwrap();
    // Each client sends its block over and over until the server goes away.
    let clients: Vec<StreamingPeer> = (0..8u64)
        .map(|i| StreamingPeer::start(server.socket(), random_payload(1 << 20, i), 4096).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let before: Vec<usize> = clients.iter().map(StreamingPeer::sent).collect();
    server.signal(Signal::TERM).unwrap();
    let status = server.wait_exit(STOP).unwrap();
    assert!(status.success(), "{}", server.stderr());
    for (i, (client, sent_before)) in clients.into_iter().zip(before).enumerate() {
        let echoed = client
            .finish()
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(sent_before > 0, "client {i} was sending");
        assert!(
            echoed >= sent_before,
            "client {i}: sent {sent_before} bytes before SIGTERM, got {echoed} back"
        );
    }
    assert!(!server.socket().exists());
}

#[test]
fn sigterm_gives_framed_peers_their_frames_then_goodbye() {
    let mut server = Server::start(Vec::<String>::new()).unwrap();
    let (mut peer, _) = FramedPeer::handshake(server.socket()).unwrap();
    // Small enough to sit in the socket buffers without anyone reading yet.
    let payloads: Vec<Bytes> = (0..100)
        .map(|i| Bytes::from(random_payload(500, i)))
        .collect();
    for p in &payloads {
        peer.send(&Frame::Data(p.clone())).unwrap();
    }
    server.signal(Signal::TERM).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(
            peer.recv().unwrap(),
            Some(Frame::Data(p.clone())),
            "frame {i}"
        );
    }
    match peer.recv().unwrap() {
        Some(Frame::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::Shutdown),
        other => panic!("expected Goodbye, got {other:?}"),
    }
    assert!(server.wait_exit(STOP).unwrap().success());
}

#[test]
fn shutdown_timeout_cuts_a_peer_that_never_reads() {
    let mut server = Server::start(["--shutdown-timeout", "300ms"]).unwrap();
    let mut stuck = connect(server.socket()).unwrap();
    stuck
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Fill both socket buffers: the server blocks writing the echo nobody reads.
    let chunk = vec![7u8; 64 * 1024];
    while stuck.write_all(&chunk).is_ok() {}
    server.signal(Signal::TERM).unwrap();
    let status = server.wait_exit(STOP).unwrap();
    assert!(status.success(), "{}", server.stderr());
    assert!(
        server.stderr().contains("shutdown-timeout"),
        "{}",
        server.stderr()
    );
}

#[test]
fn max_connections_makes_the_next_peer_wait_until_a_slot_frees() {
    let server = Server::start(["--max-connections", "1"]).unwrap();
    let mut first = connect(server.socket()).unwrap();
    first.write_all(b"a").unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).unwrap();

    let mut second = connect(server.socket()).unwrap(); // queued in the backlog
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    second.write_all(b"b").unwrap();
    assert!(
        second.read_exact(&mut byte).is_err(),
        "not served while the slot is taken"
    );

    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    second.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"b", "served once the slot freed, nothing lost");
}

#[test]
fn idle_connections_are_closed_after_idle_timeout() {
    let server = Server::start(["--idle-timeout", "200ms"]).unwrap();
    // Raw: echo, then silence, then EOF.
    let mut raw = connect(server.socket()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"x").unwrap();
    let mut got = Vec::new();
    raw.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"x");
    // Framed: Goodbye with the reason.
    let (mut peer, _) = FramedPeer::handshake(server.socket()).unwrap();
    match peer.recv().unwrap() {
        Some(Frame::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::IdleTimeout),
        other => panic!("expected Goodbye, got {other:?}"),
    }
    // A connection that never sent a byte is closed too.
    let mut silent = connect(server.socket()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(silent.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn allow_uid_serves_listed_peers_and_closes_others() {
    let me = rustix::process::getuid().as_raw().to_string();
    let server = Server::start(["--allow-uid", &me]).unwrap();
    assert_eq!(raw_round_trip(server.socket(), b"me", 2).unwrap(), b"me");

    let other = if me == "4242" { "4343" } else { "4242" };
    let server = Server::start(["--allow-uid", other]).unwrap();
    let echoed = raw_round_trip(server.socket(), b"not me", 6);
    assert!(
        echoed.map(|e| e.is_empty()).unwrap_or(true),
        "nothing is echoed to a stranger"
    );
    assert!(
        server.wait_stderr("--allow-uid", Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
}

#[test]
fn socket_activation_serves_the_inherited_listener_and_never_unlinks_it() {
    let dir = short_temp_dir();
    let path = dir.path().join("activated.sock");
    // systemd's own test tool: it binds the path, and on the first connection execs the server
    // with the listener as fd 3 and LISTEN_FDS/LISTEN_PID set. (Handing a descriptor over by
    // hand from a multi-threaded test races with every other test's spawns.)
    let mut child = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&path)
        .arg(udsecho_harness::binary("udsecho-server"))
        .args(["--socket", "/nonexistent/ignored.sock"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) is installed");
    wait_for_socket(&path, std::time::Instant::now() + STOP, || false).unwrap();
    assert_eq!(
        raw_round_trip(&path, b"activated", 9).unwrap(),
        b"activated"
    );
    udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("from systemd"), "{stderr}");
    assert!(path.exists(), "systemd's socket file is left in place");
}
