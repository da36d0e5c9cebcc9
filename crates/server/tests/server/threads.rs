//! Thread-per-core (#20): every guarantee holds when connections are spread over several
//! serving threads, each with its own epoll set. (Every other test runs with the default too:
//! one thread per core here.)

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use rustix::process::Signal;
use udsecho_harness::{FramedPeer, Server, connect, random_payload, raw_round_trip};
use udsecho_proto::{Frame, GoodbyeReason};

const STOP: Duration = Duration::from_secs(10);

/// The server's threads, from `/proc/PID/task`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn threads_n_starts_n_serving_threads_and_every_connection_is_served() {
    let server = Server::start(["--threads", "4"]).unwrap();
    // The first connections land on every thread in turn; each is echoed whole.
    let peers: Vec<_> = (0..12u64)
        .map(|i| {
            let socket = server.socket().to_owned();
            thread::spawn(move || {
                let data = random_payload(200_000, i);
                assert_eq!(raw_round_trip(&socket, &data, 4096).unwrap(), data);
            })
        })
        .collect();
    for peer in peers {
        peer.join().unwrap();
    }
    // The main thread and three more (tokio's blocking pool may add threads, never fewer).
    assert!(thread_count(server.pid()) >= 4);
}

/// SIGTERM drains the connections of every thread: each framed peer gets every frame it sent,
/// then Goodbye; then the server exits 0 and removes its file.
#[test]
fn the_drain_reaches_every_threads_connections() {
    let mut server = Server::start(["--threads", "4"]).unwrap();
    let payloads: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(random_payload(300, i)))
        .collect();
    let mut peers: Vec<FramedPeer> = (0..8)
        .map(|_| FramedPeer::handshake(server.socket()).unwrap().0)
        .collect();
    for peer in &mut peers {
        for p in &payloads {
            peer.send(&Frame::Data(p.clone())).unwrap();
        }
    }
    server.signal(Signal::TERM).unwrap();
    for (n, peer) in peers.iter_mut().enumerate() {
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(
                peer.recv().unwrap(),
                Some(Frame::Data(p.clone())),
                "peer {n}, frame {i}"
            );
        }
        match peer.recv().unwrap() {
            Some(Frame::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::Shutdown),
            other => panic!("peer {n}: expected Goodbye, got {other:?}"),
        }
    }
    assert!(server.wait_exit(STOP).unwrap().success());
    assert!(!server.socket().exists());
}

/// `--max-connections` is one limit for the whole server, not one per thread.
#[test]
fn max_connections_is_one_limit_across_threads() {
    let server = Server::start(["--threads", "4", "--max-connections", "3"]).unwrap();
    let mut served: Vec<_> = (0..3)
        .map(|i| {
            let mut peer = connect(server.socket()).unwrap();
            peer.set_read_timeout(Some(STOP)).unwrap();
            peer.write_all(&[i]).unwrap();
            let mut byte = [0u8; 1];
            peer.read_exact(&mut byte).unwrap();
            peer
        })
        .collect();
    let mut fourth = connect(server.socket()).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    fourth.write_all(b"4").unwrap();
    let mut byte = [0u8; 1];
    assert!(
        fourth.read_exact(&mut byte).is_err(),
        "a fourth peer waits while three are served"
    );
    drop(served.pop());
    fourth.set_read_timeout(Some(STOP)).unwrap();
    fourth.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"4", "served once a slot freed, nothing lost");
}

/// `--idle-timeout` holds on every thread's connections.
#[test]
fn idle_timeouts_close_connections_on_every_thread() {
    let server = Server::start(["--threads", "3", "--idle-timeout", "200ms"]).unwrap();
    let mut silent: Vec<_> = (0..6).map(|_| connect(server.socket()).unwrap()).collect();
    for peer in &mut silent {
        peer.set_read_timeout(Some(STOP)).unwrap();
        assert_eq!(
            peer.read(&mut [0u8; 1]).unwrap(),
            0,
            "closed by the timeout"
        );
    }
}

/// Seqpacket connections spread over threads too, each message back whole.
#[test]
fn seqpacket_connections_are_served_on_several_threads() {
    use rustix::net::{
        AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    };
    let mut server = Server::start(["--threads", "3", "--type", "seqpacket"]).unwrap();
    let peers: Vec<_> = (0..6u8)
        .map(|i| {
            let fd = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            rustix::net::connect(&fd, &SocketAddrUnix::new(server.socket()).unwrap()).unwrap();
            rustix::net::sockopt::set_socket_timeout(
                &fd,
                rustix::net::sockopt::Timeout::Recv,
                Some(STOP),
            )
            .unwrap();
            (i, fd)
        })
        .collect();
    for (i, fd) in &peers {
        let message = vec![*i; 1000 + usize::from(*i)];
        rustix::net::send(fd, &message, SendFlags::empty()).unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, len) = rustix::net::recv(fd, &mut buf[..], RecvFlags::TRUNC).unwrap();
        assert_eq!((n, &buf[..n]), (len, &message[..]));
    }
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
}

/// By default the server serves on the cores it was given (`taskset`, cpusets, systemd's
/// `CPUAffinity=`), and on half the machine when it was given all of it (its clients need the
/// rest).
#[test]
fn the_default_follows_the_affinity_mask() {
    use std::process::{Command, Stdio};
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let mut masks = vec![("0".to_owned(), 1)];
    if cores >= 3 {
        masks.push(("0,1".to_owned(), 2));
    }
    // All of the machine: half of it.
    masks.push((format!("0-{}", cores - 1), (cores / 2).max(1)));
    for (mask, threads) in masks {
        let dir = udsecho_harness::short_temp_dir();
        let socket = dir.path().join("s.sock");
        let child = Command::new("taskset")
            .args(["-c", &mask])
            .arg(udsecho_harness::binary("udsecho-server"))
            .arg("--socket")
            .arg(&socket)
            .env_remove("UDSECHO_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + STOP;
        udsecho_harness::wait_for_socket(&socket, deadline, || false).unwrap();
        udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
        let out = udsecho_harness::output_within(child, STOP).unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        let line = log.lines().find(|l| l.contains("listening on")).unwrap();
        if threads == 1 {
            assert!(line.ends_with("(mode auto)"), "taskset -c {mask}: {line}");
        } else {
            assert!(
                line.ends_with(&format!(", {threads} threads)")),
                "taskset -c {mask}: {line}"
            );
        }
    }
}

/// A uid no other test runs as: `RLIMIT_NPROC` counts every thread of the server's user on
/// the machine, so a uid shared with other tests (`nobody`) would make the count depend on
/// them.
const THREADLESS_UID: u32 = 64_029;

/// A directory anyone may create a socket in, for a server run as [`THREADLESS_UID`].
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = udsecho_harness::short_temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// #29 row 4: a serving thread the system will not create (`RLIMIT_NPROC`, a pids cgroup such
/// as systemd's `TasksMax=`) used to panic the server ("Cannot drop a runtime in a context
/// where blocking is not allowed", exit 101): it serves on the threads it got, and says so.
/// Three tasks allowed: the main thread, the log writer and one serving thread.
#[test]
fn a_serving_thread_that_cannot_start_leaves_the_others_serving() {
    let dir = open_dir();
    let mut server = Server::builder()
        .socket(dir.path().join("s.sock"))
        .args(["--threads", "4", "--socket-mode", "0666"])
        .user(THREADLESS_UID, THREADLESS_UID)
        .process_limit(3)
        .start()
        .unwrap();
    for i in 0..4u64 {
        let data = random_payload(10_000, i);
        assert_eq!(raw_round_trip(server.socket(), &data, 1000).unwrap(), data);
    }
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
    let log = server.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("cannot start serving thread 2") && log.contains(", 2 threads)"),
        "{log}"
    );
}

/// And with no thread to spare for its log writer (`--nproc 1`): one line and exit 1, not a
/// panic.
#[test]
fn without_a_thread_for_its_log_writer_the_server_says_so_in_one_line() {
    let dir = open_dir();
    let mut server = Server::builder()
        .socket(dir.path().join("s.sock"))
        .user(THREADLESS_UID, THREADLESS_UID)
        .process_limit(1)
        .no_wait()
        .start()
        .unwrap();
    let status = server.wait_exit(STOP).unwrap();
    let log = server.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].starts_with("udsecho-server: cannot start the log writer's thread"),
        "{log}"
    );
}

/// #29 row 5: each serving thread holds descriptors of its own (an epoll set, wakers); with
/// `--threads 64` under `--nofile 128` they took all of them and every `accept` then failed
/// (EMFILE): the threads are capped so that room to accept remains, and the log says so.
#[test]
fn many_threads_under_a_small_descriptor_limit_leave_room_to_accept() {
    let server = Server::builder()
        .args(["--threads", "64"])
        .fd_limit(128)
        .start()
        .unwrap();
    let mut peers: Vec<_> = (0..30u8)
        .map(|i| {
            let mut peer = connect(server.socket()).unwrap();
            peer.set_read_timeout(Some(STOP)).unwrap();
            peer.write_all(&[i; 100]).unwrap();
            peer
        })
        .collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        let mut echo = [0u8; 100];
        peer.read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("peer {i}: {e}; server log:\n{}", server.stderr()));
        assert_eq!(echo, [i as u8; 100]);
    }
    // The log line travels through the server's log queue and a pipe: the echoes can come
    // back first.
    assert!(
        server.wait_stderr("listening on", STOP),
        "{}",
        server.stderr()
    );
    let log = server.stderr();
    let line = log.lines().find(|l| l.contains("listening on")).unwrap();
    assert!(!line.contains(", 64 threads)"), "{log}");
    assert!(log.contains("threads of the 64 asked for"), "{log}");
}
