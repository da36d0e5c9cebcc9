//! Issue #21: datagram, seqpacket, sd_notify and control frames under hostile peers. Each test
//! here failed against the server before its fix.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use udsecho_harness::{
    FramedPeer, Server, output_within, raw_round_trip, run_client, short_temp_dir,
};
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

/// The Python interpreter for hostile peers: the system's where there is one, since another
/// user may not reach a per-user install (pyenv under /root).
pub(crate) fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Runs a Python snippet (the peers here need what std cannot do: a chosen abstract name
/// inside another network namespace, a relative bind). `prefix` goes before `python3`
/// (`unshare -r -n`); `cwd` is its working directory.
fn python(prefix: &[&str], cwd: &Path, script: &str) -> std::process::Output {
    let python3 = python3();
    let (program, args) = match prefix.split_first() {
        Some((first, rest)) => (*first, [rest, &[python3, "-c", script]].concat()),
        None => (python3, vec!["-c", script]),
    };
    let child = Command::new(program)
        .args(&args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}): .ci/run installs python3"));
    output_within(child, LIMIT).unwrap()
}

/// Can this machine make a network namespace without privilege (`unshare -r -n`)?
pub(crate) fn user_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-r", "-n", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The attacking sender's script (`out`) ran to its end, and `socket` (`whose` names it for
/// the panic) received nothing from the server before its read timeout.
pub(crate) fn the_sender_ran_and_nothing_reached(
    out: &std::process::Output,
    socket: &std::os::unix::net::UnixDatagram,
    whose: &str,
) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 256];
    if let Ok(n) = socket.recv(&mut buf) {
        panic!(
            "{whose} got {:?} from the server",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// Security (#21 item 1): a sender in a network namespace of its own binds an abstract name
/// that, in the server's namespace, belongs to another service, and sends to the server
/// through its path. A reply by that name would land at the other service, from the server's
/// address and with its credentials: none may.
#[test]
fn a_reply_never_goes_to_an_abstract_name_from_another_network_namespace() {
    if !user_namespaces_work() {
        eprintln!("skipped: user namespaces are off here (`unshare -r -n true` fails)");
        return;
    }
    let server = Server::start(["--type", "datagram", "--socket-mode", "0666"]).unwrap();
    let name = format!("udsecho-test-victim-{}", std::process::id());
    let victim =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.bind('\\0{name}')\n\
         s.sendto(b'FORGED by a neighbour', {:?})\n",
        server.socket().to_str().unwrap()
    );
    // Another user: the server's own user may of course talk to its own sockets.
    let out = python(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-r",
            "-n",
        ],
        Path::new("/"),
        &script,
    );
    the_sender_ran_and_nothing_reached(&out, &victim, "the host's socket");
    // A sender of this namespace on an abstract name is still answered.
    let ours = UnixDatagram::bind_addr(
        &SocketAddr::from_abstract_name(format!("{name}-ours").as_bytes()).unwrap(),
    )
    .unwrap();
    ours.set_read_timeout(Some(LIMIT)).unwrap();
    ours.send_to(b"hello", server.socket()).unwrap();
    let mut buf = [0u8; 256];
    let n = ours.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    let mut server = server;
    assert!(server.stop(Signal::TERM, LIMIT).unwrap().success());
    assert!(
        server
            .stderr()
            .contains("whose sender's abstract address is another user's socket"),
        "the drop is counted and said: {}",
        server.stderr()
    );
}

/// A sender bound to a relative path: the name is relative to the sender's working directory,
/// not the server's, so the server must not resolve it in its own (where another socket of
/// the same name may live).
#[test]
fn a_relative_sender_path_is_not_resolved_in_the_servers_directory() {
    let server_dir = short_temp_dir();
    let sender_dir = short_temp_dir();
    let decoy = UnixDatagram::bind(server_dir.path().join("rel.sock")).unwrap();
    decoy
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut server = Server::builder()
        .args(["--type", "datagram"])
        .current_dir(server_dir.path())
        .start()
        .unwrap();
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.bind('rel.sock')\n\
         s.sendto(b'for my own rel.sock', {:?})\n",
        server.socket().to_str().unwrap()
    );
    let out = python(&[], sender_dir.path(), &script);
    the_sender_ran_and_nothing_reached(&out, &decoy, "the server's own rel.sock");
    assert!(server.stop(Signal::TERM, LIMIT).unwrap().success());
    assert!(
        server.stderr().contains("bound to a relative path"),
        "{}",
        server.stderr()
    );
}

/// A bound datagram socket in `dir` that gives up on a reply after `wait`.
fn sender(dir: &Path, name: &str, wait: Duration) -> UnixDatagram {
    let socket = UnixDatagram::bind(dir.join(name)).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket
}

/// Senders that never read their replies, each sending `count` datagrams of `size` bytes.
fn hogs(dir: &Path, server: &Path, n: usize, size: usize, count: usize) -> Vec<UnixDatagram> {
    (0..n)
        .map(|i| {
            let hog = sender(dir, &format!("hog-{size}-{i}"), LIMIT);
            for _ in 0..count {
                hog.send_to(&vec![b'h'; size], server).unwrap();
            }
            hog
        })
        .collect()
}

/// Denial of service (#21 item 2): replies unread by their senders are charged to the
/// server's send buffer, shared by all. One sender holding 200 KB replies, or four holding
/// 50 KB ones, used to stop every reply to everyone.
#[test]
fn senders_that_never_read_do_not_stop_replies_to_others() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let _big = hogs(dir.path(), server.socket(), 1, 200_000, 12);
    let _medium = hogs(dir.path(), server.socket(), 4, 50_000, 12);
    std::thread::sleep(Duration::from_millis(300));
    let polite = sender(dir.path(), "polite", Duration::from_secs(2));
    let mut buf = [0u8; 64];
    for i in 0..20u8 {
        polite.send_to(&[i; 10], server.socket()).unwrap();
        let n = polite
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i} never came ({e})"));
        assert_eq!(&buf[..n], &[i; 10]);
    }
}

/// Where that promise stops: when non-readers together hold more than the whole send buffer
/// (16 MiB for a root server: eight senders each holding eleven 200 KB replies), replies to
/// everyone are dropped, and the log says why instead of blaming the senders who read.
#[test]
fn a_full_send_buffer_is_named_as_such_in_the_log() {
    let mut server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let _hogs = hogs(dir.path(), server.socket(), 9, 200_000, 12);
    std::thread::sleep(Duration::from_millis(300));
    let polite = sender(dir.path(), "polite", Duration::from_millis(300));
    polite.send_to(b"anyone?", server.socket()).unwrap();
    let mut buf = [0u8; 64];
    let answered = polite.recv(&mut buf).is_ok();
    assert!(server.stop(Signal::TERM, LIMIT).unwrap().success());
    let log = server.stderr();
    assert!(!answered, "9 x 11 x 200 KB is more than the 16 MiB buffer");
    assert!(
        log.contains("while the server's send buffer was full"),
        "the drop is put on the full buffer: {log}"
    );
}

/// Replies up to the largest datagram the server reads (256 KiB) fit its send buffer; they
/// used to fail with EMSGSIZE past 212,960 bytes and vanish from the count.
#[test]
fn a_quarter_mebibyte_datagram_comes_back_whole() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let client = sender(dir.path(), "big", LIMIT);
    rustix::net::sockopt::set_socket_send_buffer_size_force(&client, 1 << 20)
        .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(&client, 1 << 20))
        .unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&client, 1 << 20)
        .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(&client, 1 << 20))
        .unwrap();
    let datagram: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
    client.send_to(&datagram, server.socket()).unwrap();
    let mut buf = vec![0u8; 300_000];
    let n = client.recv(&mut buf).expect("the reply");
    assert!(buf[..n] == datagram[..], "{n} bytes back");
}

/// A seqpacket peer's empty message is a message, not the end: with more behind it and a
/// half-close after them, every message comes back, the empty one included, then the end.
#[test]
fn an_empty_seqpacket_message_is_not_the_end_of_the_stream() {
    let server = Server::start(["--type", "seqpacket"]).unwrap();
    an_empty_message_comes_back_then_the_end(&server);
}

/// Sends `server` (seqpacket) an empty message, `A` and `B`, half-closes, and expects the
/// three back, then the end.
pub(crate) fn an_empty_message_comes_back_then_the_end(server: &Server) {
    use rustix::net::{
        AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    };
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::connect(&fd, &SocketAddrUnix::new(server.socket()).unwrap()).unwrap();
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, Some(LIMIT))
        .unwrap();
    for message in [&b""[..], b"A", b"B"] {
        rustix::net::send(&fd, message, SendFlags::empty()).unwrap();
    }
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        match rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(e) => panic!("after {got:?}: {e}; the server's log:\n{}", server.stderr()),
        }
    }
    assert_eq!(
        got,
        [b"".to_vec(), b"A".to_vec(), b"B".to_vec()],
        "{}",
        server.stderr()
    );
    // Then the end: a zero-length read with the peer's side shut.
    let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()).unwrap();
    assert_eq!(n, 0);
}

/// The second review's bypass: the process stays in the server's network namespace (its
/// credentials name it) while one of its threads unshares a namespace of its own, binds the
/// host service's abstract name there and sends. Any user can do this; the reply must still
/// not reach the host's socket of that name.
#[test]
fn a_thread_in_another_network_namespace_cannot_borrow_a_name_of_ours() {
    if !user_namespaces_work() {
        eprintln!("skipped: user namespaces are off here (`unshare -r -n true` fails)");
        return;
    }
    let server = Server::start(["--type", "datagram", "--socket-mode", "0666"]).unwrap();
    let name = format!("udsecho-test-victim2-{}", std::process::id());
    let victim =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let script = format!(
        "import ctypes, socket, threading\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         assert libc.unshare(0x10000000) == 0\n\
         def alone():\n\
         \x20   assert libc.unshare(0x40000000) == 0\n\
         \x20   s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         \x20   s.bind('\\0{name}')\n\
         \x20   s.sendto(b'FORGED from a thread', {:?})\n\
         t = threading.Thread(target=alone)\n\
         t.start(); t.join()\n",
        server.socket().to_str().unwrap()
    );
    let out = python(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        Path::new("/"),
        &script,
    );
    the_sender_ran_and_nothing_reached(&out, &victim, "the host's socket");
}
