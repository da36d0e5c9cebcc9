//! `--once`: serve one connection, then exit, as `nc -lU` does without `-k`.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use udsecho_harness::{Server, Signal};

const WITHIN: Duration = Duration::from_secs(10);

/// A `--once` server of `args`, started without the readiness probe (a probe would be the one
/// connection it serves): ready once it logs that it listens.
fn once(args: &[&str]) -> Server {
    let server = Server::builder()
        .args(["--once"].iter().chain(args).copied())
        .no_wait()
        .start()
        .unwrap();
    assert!(
        server.wait_stderr("listening on", WITHIN),
        "{}",
        server.stderr()
    );
    server
}

#[test]
fn once_serves_one_connection_then_exits_0_and_removes_the_socket() {
    for kind in ["stream", "seqpacket"] {
        let mut server = once(&["--type", kind]);
        let socket = server.socket().to_owned();
        let reply = if kind == "stream" {
            let mut peer = UnixStream::connect(&socket).unwrap();
            peer.write_all(b"only one").unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            peer.read_to_end(&mut reply).unwrap();
            reply
        } else {
            let peer = udsecho_harness::seqpacket_socket().unwrap();
            let addr = rustix::net::SocketAddrUnix::new(socket.as_path()).unwrap();
            rustix::net::connect(&peer, &addr).unwrap();
            rustix::net::send(&peer, b"only one", rustix::net::SendFlags::empty()).unwrap();
            let mut reply = vec![0u8; 64];
            let (n, _) =
                rustix::net::recv(&peer, &mut reply[..], rustix::net::RecvFlags::empty()).unwrap();
            reply.truncate(n);
            reply
        };
        assert_eq!(reply, b"only one", "{kind}");
        let status = server.wait_exit(WITHIN).unwrap();
        assert!(status.success(), "{kind}: {}", server.stderr());
        assert!(!socket.exists(), "{kind}: the socket file is removed");
    }
}

#[test]
fn once_stops_accepting_after_the_first_connection() {
    let mut server = once(&[]);
    let socket = server.socket().to_owned();
    let mut first = UnixStream::connect(&socket).unwrap();
    first.write_all(b"a").unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).unwrap();
    // The first is being served: nobody else is.
    let second = UnixStream::connect(&socket);
    assert!(second.is_err(), "a second peer was accepted");
    drop(first);
    assert!(server.wait_exit(WITHIN).unwrap().success());
}

#[test]
fn once_drains_its_connection_on_sigterm_like_any_other() {
    let mut server = once(&[]);
    let mut peer = UnixStream::connect(server.socket()).unwrap();
    peer.write_all(b"abc").unwrap();
    let mut echo = [0u8; 3];
    peer.read_exact(&mut echo).unwrap();
    peer.write_all(b"def").unwrap();
    server.signal(Signal::TERM).unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"def", "what was sent before the signal is echoed");
    assert!(server.wait_exit(WITHIN).unwrap().success());
}

#[test]
fn once_is_refused_for_datagram_sockets() {
    let out = assert_cmd::Command::new(udsecho_harness::binary("udsecho-server"))
        .env_remove("UDSECHO_SOCKET")
        .args(["--once", "-u", "-s", "/nonexistent/x.sock"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--once") && stderr.contains("datagram"),
        "{stderr}"
    );
}
