//! What a connection costs the server, whatever the peer declares or withholds: measured as
//! the growth of the server's resident memory over many connections held open at once.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use udsecho_harness::{FramedPeer, Server, connect, open_fds, raise_fd_limit, rss_kib};
use udsecho_proto::{Kind, PREAMBLE};

/// Waits until the server holds `fds` descriptors (every connection accepted), then a moment
/// more for their tasks to reach their first wait.
fn wait_for_fds(server: &Server, fds: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(server.pid()).unwrap() < fds {
        assert!(
            Instant::now() < deadline,
            "the server did not accept them all"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
}

/// One measurement at a time: they hold thousands of descriptors each, and a neighbour's
/// connections would blur nothing here but could exhaust the test's own descriptor limit.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Warms the server up (threads, scratch buffers, allocator arenas) so that what follows
/// measures connections, not the first use of everything.
fn warmed_up(args: &[&str]) -> Server {
    raise_fd_limit();
    let server = Server::start(args.iter().copied()).unwrap();
    let warm: Vec<_> = (0..200)
        .map(|i| {
            let mut peer = connect(server.socket()).unwrap();
            peer.write_all(&[b'w'; 16][..(i % 16) + 1]).unwrap();
            peer
        })
        .collect();
    for mut peer in warm {
        let mut byte = [0u8; 1];
        peer.read_exact(&mut byte).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    server
}

#[test]
fn ten_thousand_idle_connections_cost_at_most_1_kib_each() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 10_000;
    let server = warmed_up(&[]);
    let base_fds = open_fds(server.pid()).unwrap();
    let before = rss_kib(server.pid()).unwrap();
    let peers: Vec<UnixStream> = (0..N).map(|_| connect(server.socket()).unwrap()).collect();
    wait_for_fds(&server, base_fds + N);
    let after = rss_kib(server.pid()).unwrap();
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / N as f64;
    assert!(
        per_conn <= 1024.0,
        "{per_conn:.0} bytes per idle connection (RSS {before} -> {after} KiB)"
    );
    drop(peers);
}

#[test]
fn two_thousand_connections_stalled_in_a_frame_header_cost_at_most_8_kib_each() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 2_000;
    let server = warmed_up(&[]);
    let base_fds = open_fds(server.pid()).unwrap();
    let before = rss_kib(server.pid()).unwrap();
    let peers: Vec<FramedPeer> = (0..N)
        .map(|_| {
            let (mut peer, _hello) = FramedPeer::handshake(server.socket()).unwrap();
            // Three bytes of a Data frame's four length bytes, then nothing.
            peer.send_raw(&[0, 0, 1]).unwrap();
            peer
        })
        .collect();
    wait_for_fds(&server, base_fds + N);
    let after = rss_kib(server.pid()).unwrap();
    let per_conn = (after.saturating_sub(before)) as f64 / N as f64;
    assert!(
        per_conn <= 8.0,
        "{per_conn:.2} KiB per connection stalled in a header (RSS {before} -> {after} KiB)"
    );
    drop(peers);
}

#[test]
fn a_hundred_connections_stalled_inside_4_mib_frames_grow_the_server_by_under_64_mib() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 100;
    const FRAME: u32 = 4 << 20;
    const SENT: usize = 2 << 20;
    let server = warmed_up(&[]);
    let before = rss_kib(server.pid()).unwrap();
    let mut readers = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..N {
        let (peer, _hello) = FramedPeer::handshake(server.socket()).unwrap();
        let mut stream = peer.stream().try_clone().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Whatever comes back is read, so the server is never held up by us: what it keeps
        // is its own choice.
        readers.push(thread::spawn(move || {
            let mut sink = vec![0u8; 64 * 1024];
            let mut total = 0;
            while total < SENT {
                match stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        }));
        peers.push(peer);
    }
    let mut header = BytesMut::new();
    header.put_u32(FRAME);
    header.put_u8(Kind::Data as u8);
    let half = vec![0x5au8; SENT];
    for peer in &mut peers {
        peer.send_raw(&header).unwrap();
    }
    for peer in &mut peers {
        peer.send_raw(&half).unwrap();
    }
    // Every connection is now halfway through a 4 MiB frame and stays there.
    thread::sleep(Duration::from_millis(500));
    let after = rss_kib(server.pid()).unwrap();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB for {N} connections inside 4 MiB frames ({before} -> {after})"
    );
    drop(peers);
    for reader in readers {
        let _ = reader.join();
    }
}

#[test]
fn the_preamble_alone_is_not_a_stalled_frame_either() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A peer that opened framed mode and never said Hello holds nothing but its socket.
    let server = warmed_up(&[]);
    let base_fds = open_fds(server.pid()).unwrap();
    let before = rss_kib(server.pid()).unwrap();
    let peers: Vec<UnixStream> = (0..2_000)
        .map(|_| {
            let mut peer = connect(server.socket()).unwrap();
            peer.write_all(&PREAMBLE).unwrap();
            peer.write_all(&[0, 0]).unwrap();
            peer
        })
        .collect();
    wait_for_fds(&server, base_fds + peers.len());
    let after = rss_kib(server.pid()).unwrap();
    let per_conn = (after.saturating_sub(before)) as f64 / peers.len() as f64;
    assert!(per_conn <= 8.0, "{per_conn:.2} KiB per connection");
}

/// Seqpacket peers that send large messages and never read their echoes: the messages wait in
/// the kernel, charged to the peers, not in the server (issue #21: 1,000 such peers sending
/// 150 KB messages took the server from 4 MB to 152 MB). Once they read, every message comes
/// back whole and in order.
#[test]
fn seqpacket_peers_that_never_read_leave_their_messages_in_the_kernel() {
    use rustix::net::{
        AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 200;
    const SIZE: usize = 150_000;
    raise_fd_limit();
    let server = Server::start(["--type", "seqpacket"]).unwrap();
    let connect = || {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        rustix::net::connect(&fd, &SocketAddrUnix::new(server.socket()).unwrap()).unwrap();
        fd
    };
    let message = |peer: usize, i: usize| -> Vec<u8> {
        (0..SIZE).map(|j| (peer * 7 + i * 13 + j) as u8).collect()
    };
    let recv_one = |fd: &std::os::fd::OwnedFd| -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; SIZE + 1];
        loop {
            match rustix::net::recv(fd, &mut buf[..], RecvFlags::TRUNC) {
                Ok((n, len)) => {
                    assert_eq!(n, len, "a whole message");
                    buf.truncate(n);
                    return buf;
                }
                Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("no echo: {e}"),
            }
        }
    };
    // Warm up: one large message there and back (the scratch buffer, a large one's buffer).
    let warm = connect();
    rustix::net::send(&warm, &message(0, 0), SendFlags::empty()).unwrap();
    assert_eq!(recv_one(&warm), message(0, 0));
    drop(warm);
    thread::sleep(Duration::from_millis(300));
    let before = rss_kib(server.pid()).unwrap();

    let mut peers = Vec::new();
    for p in 0..N {
        let fd = connect();
        let mut sent = 0;
        while sent < 6 {
            match rustix::net::send(&fd, &message(p, sent), SendFlags::empty()) {
                Ok(_) => sent += 1,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => panic!("peer {p}: {e}"),
            }
        }
        assert!(sent >= 2, "peer {p} could send only {sent}");
        peers.push((fd, sent));
    }
    thread::sleep(Duration::from_millis(800));
    let after = rss_kib(server.pid()).unwrap();
    let grew = after.saturating_sub(before);
    assert!(
        grew < 8 * 1024,
        "{N} peers not reading {SIZE}-byte echoes grew the server by {grew} KiB"
    );
    // Nothing lost: each peer now reads, and gets every message it sent, in order, whole.
    for (p, (fd, sent)) in peers.iter().enumerate() {
        for i in 0..*sent {
            assert!(recv_one(fd) == message(p, i), "peer {p}, message {i}");
        }
    }
}
