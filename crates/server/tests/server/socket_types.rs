//! The other Unix socket types and the ways supervisors hand sockets over: seqpacket and
//! datagram echo, systemd `Accept=yes`, `--inetd`, and `sd_notify` readiness.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use udsecho_harness::{Server, Signal, binary, raw_round_trip, short_temp_dir};

const STOP: Duration = Duration::from_secs(10);
const SIZES: [usize; 3] = [1, 1000, 60_000];

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A blocking seqpacket connection to `path`.
pub(crate) fn seqpacket(path: &Path) -> OwnedFd {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::connect(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    let timeout = Some(Duration::from_secs(10));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, timeout)
        .unwrap();
    fd
}

/// A datagram socket bound to the abstract name `name`.
pub(crate) fn abstract_datagram(name: &str) -> OwnedFd {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let address = SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap();
    rustix::net::bind(&fd, &address).unwrap();
    fd
}

/// Receives one message; returns it and its whole length (larger than the buffer if cut).
fn recv_message(fd: &OwnedFd) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; 128 * 1024];
    let (n, len) = rustix::net::recv(fd, &mut buf[..], RecvFlags::TRUNC).unwrap();
    buf.truncate(n);
    (buf, len)
}

#[test]
fn seqpacket_messages_come_back_as_single_messages() {
    let server = Server::start(["--type", "seqpacket"]).unwrap_or_else(|e| panic!("{e}"));
    let fd = seqpacket(server.socket());
    // All three in flight at once: boundaries must survive, not just content.
    for (i, len) in SIZES.into_iter().enumerate() {
        rustix::net::send(&fd, &payload(len, i as u8), SendFlags::empty()).unwrap();
    }
    for (i, len) in SIZES.into_iter().enumerate() {
        let (message, whole) = recv_message(&fd);
        assert_eq!(whole, len, "one message of {len} bytes");
        assert!(message == payload(len, i as u8), "message {i} intact");
    }
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    let (rest, _) = recv_message(&fd);
    assert!(
        rest.is_empty(),
        "the server closes after the peer's shutdown"
    );
}

#[test]
fn seqpacket_drains_on_sigterm_and_removes_its_file() {
    let mut server = Server::start(["--type", "seqpacket"]).unwrap();
    let fd = seqpacket(server.socket());
    for i in 0..50u8 {
        rustix::net::send(&fd, &payload(100, i), SendFlags::empty()).unwrap();
    }
    let status = server.stop(Signal::TERM, STOP).unwrap();
    assert!(status.success(), "{}", server.stderr());
    for i in 0..50u8 {
        let (message, _) = recv_message(&fd);
        assert!(message == payload(100, i), "message {i} of the drain");
    }
    assert!(!server.socket().exists());
}

/// A bound datagram client, like `nc -uU` or `socat UNIX-SENDTO:...,bind=...`.
fn bound_client(dir: &Path) -> UnixDatagram {
    let client = UnixDatagram::bind(dir.join("client.sock")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
}

#[test]
fn datagrams_come_back_whole_and_in_order_to_their_sender() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let client = bound_client(dir.path());
    for (i, len) in SIZES.into_iter().enumerate() {
        client
            .send_to(&payload(len, i as u8), server.socket())
            .unwrap();
    }
    let mut buf = vec![0u8; 128 * 1024];
    for (i, len) in SIZES.into_iter().enumerate() {
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(n, len, "datagram {i}");
        assert!(buf[..n] == payload(len, i as u8), "datagram {i} intact");
        assert_eq!(from.as_pathname(), Some(server.socket()));
    }
}

#[test]
fn an_unnamed_sender_is_counted_and_dropped_and_disturbs_nobody() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let unnamed = UnixDatagram::unbound().unwrap();
    for _ in 0..100 {
        unnamed.send_to(b"who am I", server.socket()).unwrap();
    }
    let client = bound_client(dir.path());
    client.send_to(b"still answered", server.socket()).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still answered");
    assert!(
        server.wait_stderr("with no address", STOP),
        "{}",
        server.stderr()
    );
    let lines = server.stderr().matches("dropped").count();
    assert!(
        lines <= 2,
        "at most a line every few seconds: {}",
        server.stderr()
    );
}

#[test]
fn a_client_on_an_abstract_address_gets_its_replies() {
    let server = Server::start(["-u"]).unwrap();
    let fd = abstract_datagram(&format!("udsecho-test-client-{}", std::process::id()));
    let to = SocketAddrUnix::new(server.socket()).unwrap();
    rustix::net::sendto(&fd, b"abstract", SendFlags::empty(), &to).unwrap();
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(10)),
    )
    .unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()).unwrap();
    assert_eq!(&buf[..n], b"abstract");
}

#[test]
fn a_stale_datagram_socket_is_replaced_and_a_live_one_refused() {
    let dir = short_temp_dir();
    let path = dir.path().join("d.sock");
    drop(UnixDatagram::bind(&path).unwrap());
    let mut server = Server::builder()
        .socket(&path)
        .args(["--type", "datagram"])
        .start()
        .unwrap();
    // A second server, of any type, sees a live socket there.
    for kind in ["stream", "datagram"] {
        let out = Command::new(binary("udsecho-server"))
            .args(["--socket", path.to_str().unwrap(), "--type", kind])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind}: {stderr}");
        assert!(stderr.contains("already listening"), "{kind}: {stderr}");
    }
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
    assert!(!path.exists());
}

#[test]
fn framed_mode_needs_a_stream_socket() {
    for kind in ["seqpacket", "datagram"] {
        let out = Command::new(binary("udsecho-server"))
            .args([
                "--type",
                kind,
                "--mode",
                "framed",
                "--socket",
                "/tmp/never.sock",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--mode framed needs --type stream"),
            "{stderr}"
        );
    }
}

/// `systemd-socket-activate` with `--accept`: a server process per connection, each handed
/// its connection as fd 3 (`Accept=yes`).
#[test]
fn systemd_accept_yes_serves_each_connection_and_leaves_the_socket() {
    let dir = short_temp_dir();
    let path = dir.path().join("accept.sock");
    let mut activator = Command::new("systemd-socket-activate")
        .args(["--accept", "--listen"])
        .arg(&path)
        .arg(binary("udsecho-server"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) is installed");
    wait_for_file(&path);
    for round in ["first", "second"] {
        let echo = raw_round_trip(&path, round.as_bytes(), 2).unwrap();
        assert_eq!(echo, round.as_bytes(), "{round} connection");
    }
    let _ = activator.kill();
    let _ = activator.wait();
    let mut stderr = String::new();
    let _ = activator.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(path.exists(), "the socket is systemd's: {stderr}");
    assert!(!stderr.contains("Invalid argument"), "{stderr}");
}

#[test]
fn inetd_mode_serves_the_connection_on_standard_input() {
    let dir = short_temp_dir();
    let path = dir.path().join("inetd.sock");
    let mut activator = Command::new("systemd-socket-activate")
        .args(["--inetd", "--accept", "--listen"])
        .arg(&path)
        .arg(binary("udsecho-server"))
        .arg("--inetd")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate is installed");
    wait_for_file(&path);
    let data = payload(200_000, 9);
    assert_eq!(raw_round_trip(&path, &data, 7_000).unwrap(), data);
    let _ = activator.kill();
    let _ = activator.wait();
}

#[test]
fn inetd_without_a_socket_on_stdin_says_so() {
    let out = Command::new(binary("udsecho-server"))
        .arg("--inetd")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--inetd: standard input is not a socket"),
        "{stderr}"
    );
}

#[test]
fn notify_socket_gets_ready_then_stopping() {
    let dir = short_temp_dir();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(STOP)).unwrap();
    let mut server = Server::builder()
        .env("NOTIFY_SOCKET", &notify_path)
        .start()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
    let n = notify.recv(&mut buf).unwrap();
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + STOP;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A datagram's reply goes to the socket that sent it, never through a name swapped in since:
/// here the sender's path has become a symlink to another socket (think `/dev/log`).
#[test]
fn a_datagram_reply_never_follows_a_symlink_at_the_senders_path() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let victim = UnixDatagram::bind(dir.path().join("victim.sock")).unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = UnixDatagram::bind(dir.path().join("x")).unwrap();
    std::fs::rename(dir.path().join("x"), dir.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("victim.sock"), dir.path().join("x")).unwrap();
    sender
        .send_to(b"PRIORITY=0 forged", server.socket())
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        victim.recv(&mut buf).is_err(),
        "the reply went through the symlink"
    );
    assert!(
        server.wait_stderr("replaced or a symlink", STOP),
        "{}",
        server.stderr()
    );
    // A sender whose socket file now belongs to someone else gets no reply either.
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let other = UnixDatagram::bind(dir.path().join("owned")).unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::os::unix::fs::lchown(dir.path().join("owned"), Some(65534), None).unwrap();
    other.send_to(b"not mine", server.socket()).unwrap();
    assert!(
        other.recv(&mut buf).is_err(),
        "replied to a socket of another owner"
    );
}

/// Classic inetd passes the connection as stdin, stdout *and* stderr: a log line would be
/// data for the peer.
#[test]
fn inetd_with_stderr_on_the_connection_sends_the_peer_nothing_but_its_echo() {
    use std::io::Write;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd =
        |s: &std::os::unix::net::UnixStream| Stdio::from(OwnedFd::from(s.try_clone().unwrap()));
    let mut child = Command::new(binary("udsecho-server"))
        .args(["--inetd", "-vv"])
        .stdin(fd(&theirs))
        .stdout(fd(&theirs))
        .stderr(fd(&theirs))
        .spawn()
        .unwrap();
    drop(theirs);
    let mut ours = ours;
    ours.set_read_timeout(Some(STOP)).unwrap();
    ours.write_all(b"ping\n").unwrap();
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    ours.read_to_end(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "ping\n");
    assert!(child.wait().unwrap().success());
}
