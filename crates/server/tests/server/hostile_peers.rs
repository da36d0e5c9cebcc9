//! Issue #21: datagram, seqpacket, sd_notify and control frames under hostile peers. Each test
//! here failed against the server before its fix.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use rustix::process::Signal;
use udsecho_harness::{FramedPeer, Server, raw_round_trip, run_client, short_temp_dir};
use udsecho_proto::{Frame, Goodbye, GoodbyeReason, Hello};

const LIMIT: Duration = Duration::from_secs(10);

/// PROTOCOL.md 4.2: control frames up to 4096 bytes are accepted whatever `--max-frame` is,
/// so a tiny limit never locks out the project's own client or a long Hello agent.
#[test]
fn control_frames_pass_a_max_frame_smaller_than_them() {
    let server = Server::start(["--max-frame", "16"]).unwrap();
    let run = run_client(
        [
            server.socket().as_os_str(),
            "send".as_ref(),
            "--framed".as_ref(),
            "-n".as_ref(),
            "2".as_ref(),
            "-i".as_ref(),
            "1ms".as_ref(),
            "-m".as_ref(),
            "twelve bytes".as_ref(),
        ],
        b"",
        LIMIT,
    )
    .unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout_text().matches("received: twelve bytes").count(),
        2
    );

    let server = Server::start(["--max-frame", "1000"]).unwrap();
    let mut peer = FramedPeer::connect(server.socket()).unwrap();
    peer.send(&Frame::Hello(Hello::new(1, "a".repeat(4000))))
        .unwrap();
    let Some(Frame::Hello(answer)) = peer.recv().unwrap() else {
        panic!("a 4,000-byte agent is a legal Hello at --max-frame 1000");
    };
    assert_eq!(
        answer.max_frame, 1,
        "the client's own limit is the lower one"
    );
    // A peer that accepts 1-byte frames still says Goodbye, and is answered with Goodbye.
    peer.send(&Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
        .unwrap();
    match peer.recv().unwrap() {
        Some(Frame::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::Done),
        other => panic!("expected Goodbye, got {other:?}"),
    }
}

/// A service manager whose notify queue is full must not stop the server from serving, nor
/// SIGTERM from stopping it; READY=1 arrives once the queue has room.
#[test]
fn a_full_notify_socket_blocks_neither_serving_nor_shutdown() {
    let dir = short_temp_dir();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send_to(b"FILLER=1", &notify_path).is_ok() {
        queued += 1;
        assert!(queued < 100_000, "the notify queue never filled");
    }
    let mut server = Server::builder()
        .env("NOTIFY_SOCKET", &notify_path)
        .start()
        .unwrap();
    assert_eq!(
        raw_round_trip(server.socket(), b"still serving", 4).unwrap(),
        b"still serving"
    );
    // The supervisor wakes up: the queue drains, and READY=1 is among what follows.
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &String| m.lines().any(|l| l == "READY=1"))
    {
        let n = notify
            .recv(&mut buf)
            .expect("READY=1 arrives once there is room");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        seen.len(),
        queued + 1,
        "the fillers, then READY=1: {seen:?}"
    );
    let status = server.stop(Signal::TERM, LIMIT).unwrap();
    assert!(status.success(), "{}", server.stderr());
    assert!(!server.socket().exists(), "the socket file is removed");
}

/// SIGTERM stops a server whose supervisor never reads at all.
#[test]
fn sigterm_stops_a_server_whose_notify_socket_never_drains() {
    let dir = short_temp_dir();
    let notify_path = dir.path().join("notify");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    while filler.send_to(b"FILLER=1", &notify_path).is_ok() {}
    let mut server = Server::builder()
        .env("NOTIFY_SOCKET", &notify_path)
        .start()
        .unwrap();
    let status = server.stop(Signal::TERM, Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{}", server.stderr());
    assert!(!server.socket().exists(), "the socket file is removed");
}

/// sd_notify(3): `NOTIFY_SOCKET=@name` is an abstract socket.
#[test]
fn notify_socket_may_be_an_abstract_name() {
    let name = format!("udsecho-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let mut server = Server::builder()
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .start()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 on the abstract socket");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(server.stop(Signal::TERM, LIMIT).unwrap().success());
    let n = notify.recv(&mut buf).unwrap();
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}
