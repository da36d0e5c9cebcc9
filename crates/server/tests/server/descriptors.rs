//! Descriptors passed over the socket (`SCM_RIGHTS`) come back with their echo, in every
//! socket type and mode; bounded per connection and in total; truncation ends a connection
//! with its error; nothing leaks. The peer is this test process, the server the real binary.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio_util::codec::Decoder;
use udsecho_harness::descriptors::{
    read_stream_with_fds, recv_with_fds, same_open_file, send_with_fds,
};
use udsecho_harness::{Server, open_fds, short_temp_dir};
use udsecho_proto::{ErrorCode, Frame, FrameCodec, Hello, PREAMBLE};

const STOP: Duration = Duration::from_secs(10);

/// The descriptors a test passes: a file with known contents, both ends of a pipe, a memfd,
/// and one end of a socket pair (a socket passed over the socket).
struct Kit {
    file: File,
    pipe: (OwnedFd, OwnedFd),
    memfd: OwnedFd,
    pair: (UnixStream, UnixStream),
}

impl Kit {
    fn new() -> Kit {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let memfd =
            rustix::fs::memfd_create("udsecho-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        Kit {
            file,
            pipe: std::io::pipe()
                .map(|(r, w)| (OwnedFd::from(r), OwnedFd::from(w)))
                .unwrap(),
            memfd,
            pair: UnixStream::pair().unwrap(),
        }
    }

    fn all(&self) -> Vec<BorrowedFd<'_>> {
        vec![
            self.file.as_fd(),
            self.pipe.0.as_fd(),
            self.memfd.as_fd(),
            self.pair.0.as_fd(),
        ]
    }

    /// What came back is what was sent, in order, and each works as the original does.
    fn check(&self, back: &[OwnedFd]) {
        let sent = self.all();
        assert_eq!(back.len(), sent.len(), "every descriptor comes back");
        for (i, (a, b)) in sent.iter().zip(back).enumerate() {
            assert!(same_open_file(a, b), "descriptor {i} is the same open file");
        }
        // A read through the returned file moves the original's offset.
        let mut again = File::from(back[0].try_clone().unwrap());
        let mut first = [0u8; 3];
        again.read_exact(&mut first).unwrap();
        let mut rest = String::new();
        (&self.file).read_to_string(&mut rest).unwrap();
        (&self.file).seek(SeekFrom::Start(0)).unwrap();
        assert_eq!((&first, rest.as_str()), (b"012", "3456789"));
        // The returned socket still talks to its pair.
        let mut returned = UnixStream::from(back[3].try_clone().unwrap());
        returned.write_all(b"over the pair").unwrap();
        let mut got = [0u8; 13];
        (&self.pair.1).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"over the pair");
    }
}

fn connect(server: &Server) -> UnixStream {
    let stream = UnixStream::connect(server.socket()).unwrap();
    stream.set_read_timeout(Some(STOP)).unwrap();
    stream
}

#[test]
fn raw_and_auto_streams_echo_descriptors_with_the_read_they_came_with() {
    for mode in ["raw", "auto"] {
        let server = Server::start(["--mode", mode]).unwrap();
        let kit = Kit::new();
        let stream = connect(&server);
        send_with_fds(stream.as_fd(), b"first", &[], None).unwrap();
        let (echo, fds) = read_stream_with_fds(stream.as_fd(), 5).unwrap();
        assert_eq!((echo.as_slice(), fds.len()), (&b"first"[..], 0), "{mode}");
        send_with_fds(stream.as_fd(), b"with four", &kit.all(), None).unwrap();
        let (echo, fds) = read_stream_with_fds(stream.as_fd(), 9).unwrap();
        assert_eq!(echo, b"with four", "{mode}");
        assert!(
            fds.iter().all(|(at, _)| *at == 0),
            "{mode}: with the first byte"
        );
        let fds: Vec<OwnedFd> = fds.into_iter().map(|(_, fd)| fd).collect();
        kit.check(&fds);
    }
}

/// Reads frames (and the descriptors that came with their bytes) until `n` frames are in.
fn read_frames(stream: &UnixStream, n: usize) -> (Vec<Frame>, Vec<OwnedFd>) {
    let mut codec = FrameCodec::with_max_frame(u32::MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while frames.len() < n {
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        if frames.len() >= n {
            break;
        }
        let got = recv_with_fds(stream.as_fd(), &mut chunk).unwrap();
        if got.len == 0 {
            break;
        }
        fds.extend(got.fds);
        buf.extend_from_slice(&chunk[..got.len]);
    }
    (frames, fds)
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out, u32::MAX).unwrap();
    out.to_vec()
}

fn framed_session(server: &Server) -> UnixStream {
    let stream = connect(server);
    let mut hello = PREAMBLE.to_vec();
    hello.extend(encode(&Frame::Hello(Hello::new(1 << 20, "test"))));
    send_with_fds(stream.as_fd(), &hello, &[], None).unwrap();
    let (frames, _) = read_frames(&stream, 1);
    assert!(matches!(frames[..], [Frame::Hello(_)]), "{frames:?}");
    stream
}

#[test]
fn framed_data_frames_bring_their_descriptors_back() {
    for mode in ["auto", "framed"] {
        let server = Server::start(["--mode", mode]).unwrap();
        let kit = Kit::new();
        let stream = framed_session(&server);
        // A whole frame with its descriptors.
        let frame = encode(&Frame::Data(b"one frame".as_slice().into()));
        send_with_fds(stream.as_fd(), &frame, &kit.all(), None).unwrap();
        let (frames, fds) = read_frames(&stream, 1);
        assert_eq!(
            frames,
            [Frame::Data(b"one frame".as_slice().into())],
            "{mode}"
        );
        kit.check(&fds);
        // Descriptors on the bytes that end a frame come back with the echo of those bytes.
        let frame = encode(&Frame::Data(b"split in two".as_slice().into()));
        send_with_fds(stream.as_fd(), &frame[..8], &[], None).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        send_with_fds(stream.as_fd(), &frame[8..], &kit.all(), None).unwrap();
        let (frames, fds) = read_frames(&stream, 1);
        assert_eq!(
            frames,
            [Frame::Data(b"split in two".as_slice().into())],
            "{mode}"
        );
        kit.check(&fds);
    }
}

/// A seqpacket socket connected to `server`, whose reads give up after `timeout`.
fn seqpacket_peer(server: &Server, timeout: Duration) -> OwnedFd {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::connect(
        &socket,
        &rustix::net::SocketAddrUnix::new(server.socket()).unwrap(),
    )
    .unwrap();
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(timeout),
    )
    .unwrap();
    socket
}

#[test]
fn a_seqpacket_message_and_an_empty_one_bring_their_descriptors_back() {
    let server = Server::start(["--type", "seqpacket"]).unwrap();
    let kit = Kit::new();
    let socket = seqpacket_peer(&server, STOP);
    send_with_fds(socket.as_fd(), b"a message", &kit.all(), None).unwrap();
    send_with_fds(socket.as_fd(), b"", &kit.all()[..1], None).unwrap();
    let mut buf = [0u8; 64];
    let got = recv_with_fds(socket.as_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..got.len], b"a message");
    kit.check(&got.fds);
    let got = recv_with_fds(socket.as_fd(), &mut buf).unwrap();
    assert_eq!(
        (got.len, got.fds.len()),
        (0, 1),
        "the empty message and its descriptor"
    );
    assert!(same_open_file(&got.fds[0], &kit.file));
}

#[test]
fn a_datagram_brings_its_descriptors_back_to_its_sender() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let dir = short_temp_dir();
    let client = UnixDatagram::bind(dir.path().join("c.sock")).unwrap();
    client.set_read_timeout(Some(STOP)).unwrap();
    let kit = Kit::new();
    send_with_fds(
        client.as_fd(),
        b"a datagram",
        &kit.all(),
        Some(server.socket()),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let got = recv_with_fds(client.as_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..got.len], b"a datagram");
    kit.check(&got.fds);
}

/// Datagrams and seqpacket messages are read with their senders' credentials, and their
/// descriptors come as numbers that the reading thread takes over through a socket pair of
/// its own (`udsecho-unix`'s `passing`): 200 of each, with three descriptors, leave nothing
/// open but that pair.
#[test]
fn descriptors_read_with_credentials_leave_nothing_open() {
    for kind in ["datagram", "seqpacket"] {
        let server = Server::start(["--type", kind, "--threads", "1"]).unwrap();
        let baseline = baseline(&server);
        let kit = Kit::new();
        let three = &kit.all()[..3];
        let dir = short_temp_dir();
        let socket = if kind == "datagram" {
            let client = UnixDatagram::bind(dir.path().join("c.sock")).unwrap();
            client.set_read_timeout(Some(STOP)).unwrap();
            OwnedFd::from(client)
        } else {
            seqpacket_peer(&server, STOP)
        };
        let to = (kind == "datagram").then(|| server.socket());
        let mut buf = [0u8; 64];
        for i in 0..200 {
            let message = format!("message {i:03}");
            send_with_fds(socket.as_fd(), message.as_bytes(), three, to).unwrap();
            let got = recv_with_fds(socket.as_fd(), &mut buf).unwrap();
            assert_eq!(&buf[..got.len], message.as_bytes(), "{kind}");
            assert_eq!(got.fds.len(), 3, "{kind}: message {i}");
        }
        drop(socket);
        let settled = settles_to(&server, baseline + 2);
        assert!(
            settled <= baseline + 2,
            "{kind}: {settled} descriptors open, {baseline} before"
        );
    }
}

/// The server's descriptor count once the harness's readiness probe has been closed.
fn baseline(server: &Server) -> usize {
    std::thread::sleep(Duration::from_millis(200));
    open_fds(server.pid()).unwrap()
}

/// Waits until the server's descriptor count is back to `baseline`.
fn settles_to(server: &Server, baseline: usize) -> usize {
    let started = Instant::now();
    loop {
        let now = open_fds(server.pid()).unwrap();
        if now <= baseline || started.elapsed() > STOP {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_hundred_messages_with_three_descriptors_each_and_nothing_leaks() {
    let server = Server::start(["--mode", "raw"]).unwrap();
    let baseline = baseline(&server);
    let kit = Kit::new();
    let three = &kit.all()[..3];
    let stream = connect(&server);
    for i in 0..300 {
        let message = format!("message {i:03}");
        send_with_fds(stream.as_fd(), message.as_bytes(), three, None).unwrap();
        let (echo, fds) = read_stream_with_fds(stream.as_fd(), message.len()).unwrap();
        assert_eq!(echo, message.as_bytes());
        assert_eq!(fds.len(), 3, "message {i}");
        for ((_, back), sent) in fds.iter().zip(three) {
            assert!(same_open_file(back, sent), "message {i}");
        }
    }
    drop(stream);
    let settled = settles_to(&server, baseline);
    assert!(
        settled <= baseline,
        "{settled} descriptors open, {baseline} before"
    );
}

/// Peers that pass a message's worth of descriptors again and again and never read their
/// echo cannot take the server's descriptors from everyone else: under a limit of 1,024 the
/// server stops reading them (or refuses what it cannot take) and still accepts and serves.
#[test]
fn forty_peers_hoarding_descriptors_do_not_starve_a_well_behaved_one() {
    let server = Server::builder()
        .args(["--mode", "raw"])
        .fd_limit(1024)
        .start()
        .unwrap();
    let baseline = baseline(&server);
    let file = tempfile::tempfile().unwrap();
    let offered = [file.as_fd(); 250];
    let block = vec![b'h'; 64 * 1024];
    let mut hoarders = Vec::new();
    for _ in 0..40 {
        let stream = connect(&server);
        stream.set_nonblocking(true).unwrap();
        for _ in 0..5 {
            // A peer the server stops reading blocks here: that is the point.
            let _ = send_with_fds(stream.as_fd(), &block, &offered, None);
        }
        hoarders.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let held = open_fds(server.pid()).unwrap();
    assert!(held < 1024, "{held} descriptors open");
    // A new peer is accepted and served, byte for byte.
    for _ in 0..3 {
        let echo = udsecho_harness::raw_round_trip(server.socket(), b"still served", 4).unwrap();
        assert_eq!(echo, b"still served");
    }
    assert!(!server.has_exited());
    assert!(
        !server.stderr().contains("accept"),
        "no accept error: {}",
        server.stderr()
    );
    drop(hoarders);
    let settled = settles_to(&server, baseline);
    assert!(
        settled <= baseline,
        "{settled} descriptors open, {baseline} before"
    );
}

/// A connection that passes descriptors waits while as many as it passed last would not fit,
/// and is served again as soon as room frees. Under a limit of 400, less 64 kept in reserve
/// and the server's own, idle connections are opened until about 6 are left: a message with
/// three is served; with five more connections open the next one waits (about 1 left), and
/// goes on once eight close.
#[test]
fn a_passer_waiting_for_room_goes_on_when_room_frees() {
    let limit = 400;
    let server = Server::builder()
        .args(["--mode", "raw"])
        .fd_limit(limit)
        .start()
        .unwrap();
    let file = tempfile::tempfile().unwrap();
    let three = [file.as_fd(); 3];
    // Connections surely accepted: each has had a round trip.
    let open = |n: usize| -> Vec<UnixStream> {
        (0..n)
            .map(|_| {
                let stream = connect(&server);
                (&stream).write_all(b".").unwrap();
                let mut dot = [0u8; 1];
                (&stream).read_exact(&mut dot).unwrap();
                stream
            })
            .collect()
    };
    // What the server has open is its own and its connections: the rest, less the reserve,
    // is the room. The passer will be one more connection.
    let own = baseline(&server);
    let mut idle = open(usize::try_from(limit).unwrap() - 64 - own - 1 - 6);

    let passer = connect(&server);
    send_with_fds(passer.as_fd(), b"one", &three, None).unwrap();
    let (echo, fds) = read_stream_with_fds(passer.as_fd(), 3).unwrap();
    assert_eq!((echo.as_slice(), fds.len()), (&b"one"[..], 3));

    // Three more do not fit now: the passer's next message waits...
    idle.extend(open(5));
    send_with_fds(passer.as_fd(), b"two", &three, None).unwrap();
    passer
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 8];
    let waited = recv_with_fds(passer.as_fd(), &mut buf);
    assert!(
        waited
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "served without room for what it passed last: {:?}",
        waited.map(|r| r.len)
    );
    // ...while others are served as ever...
    let echo = udsecho_harness::raw_round_trip(server.socket(), b"others", 3).unwrap();
    assert_eq!(echo, b"others");
    // ...and goes on once connections close.
    idle.truncate(idle.len() - 8);
    passer.set_read_timeout(Some(STOP)).unwrap();
    let (echo, fds) = read_stream_with_fds(passer.as_fd(), 3).unwrap();
    assert_eq!((echo.as_slice(), fds.len()), (&b"two"[..], 3));
    assert!(fds.iter().all(|(_, fd)| same_open_file(fd, &file)));
}

/// A connection never holds more than one message's worth, however its descriptors arrive:
/// one held with a detection prefix (no echo yet), then 253 more, is a truncation — the bytes
/// come back with at most 253 descriptors, then the end and its log line — not an echo the
/// kernel refuses (it took 254 before, and the echo failed with EINVAL, losing the bytes).
#[test]
fn a_prefix_holding_one_descriptor_and_a_full_message_more_is_a_truncation() {
    let server = Server::start(["--mode", "auto"]).unwrap();
    let file = tempfile::tempfile().unwrap();
    let peer = connect(&server);
    send_with_fds(peer.as_fd(), b"\0", &[file.as_fd()], None).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    send_with_fds(peer.as_fd(), b"raw bytes", &[file.as_fd(); 253], None).unwrap();
    let (echo, fds) = read_stream_with_fds(peer.as_fd(), usize::MAX).unwrap();
    assert_eq!(echo, b"\0raw bytes", "every byte comes back");
    assert!(fds.len() <= 253, "{} descriptors came back", fds.len());
    assert!(server.wait_stderr("could not take the descriptors", STOP));
    assert!(
        !server.stderr().contains("Invalid argument"),
        "{}",
        server.stderr()
    );
}

/// Under a descriptor limit too small for a whole message's worth (300: 64 kept in reserve,
/// 253 would never fit beside a few connections), a peer that passed one descriptor is still
/// read: it waits for room for as many as it passed, not for 253 (it waited forever before).
#[test]
fn under_a_small_limit_a_peer_that_passed_one_descriptor_is_still_served() {
    let short = Duration::from_secs(3);
    let file = tempfile::tempfile().unwrap();
    let stream_server = Server::builder()
        .args(["--mode", "raw"])
        .fd_limit(300)
        .start()
        .unwrap();
    let peer = connect(&stream_server);
    peer.set_read_timeout(Some(short)).unwrap();
    send_with_fds(peer.as_fd(), b"one", &[file.as_fd()], None).unwrap();
    let (echo, fds) = read_stream_with_fds(peer.as_fd(), 3).unwrap();
    assert_eq!((echo.as_slice(), fds.len()), (&b"one"[..], 1));
    (&peer).write_all(b"two").unwrap();
    let mut two = [0u8; 3];
    (&peer)
        .read_exact(&mut two)
        .expect("the next bytes are echoed too");
    assert_eq!(&two, b"two");

    let seqpacket_server = Server::builder()
        .args(["--type", "seqpacket"])
        .fd_limit(300)
        .start()
        .unwrap();
    let socket = seqpacket_peer(&seqpacket_server, short);
    send_with_fds(socket.as_fd(), b"one", &[file.as_fd()], None).unwrap();
    send_with_fds(socket.as_fd(), b"two", &[], None).unwrap();
    let mut buf = [0u8; 8];
    let got = recv_with_fds(socket.as_fd(), &mut buf).unwrap();
    assert_eq!((&buf[..got.len], got.fds.len()), (&b"one"[..], 1));
    let got = recv_with_fds(socket.as_fd(), &mut buf).expect("the next message is echoed too");
    assert_eq!(&buf[..got.len], b"two");
}

/// Closing the last reference to a passed TCP socket with `SO_LINGER` and unsent data waits
/// out its linger time (the peer's choice). The server closes what it cannot return away from
/// its serving threads: a bystander on the same, only, thread is answered at once (it waited
/// the whole 8 s before).
#[test]
fn a_lingering_socket_the_server_closes_stalls_nobody() {
    use rustix::net::sockopt;
    let server = Server::start(["--mode", "auto", "--threads", "1"]).unwrap();
    // A TCP connection whose unsent data cannot drain: the far end never reads.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
    let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    sockopt::set_socket_send_buffer_size(&tcp, 4096).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let chunk = [b'x'; 4096];
    loop {
        match (&tcp).write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the TCP connection: {e}"),
        }
    }
    sockopt::set_socket_linger(&tcp, Some(Duration::from_secs(8))).unwrap();

    let bystander = connect(&server);
    let peer = connect(&server);
    // Held with a detection prefix; then ours go, and the server's is the last reference.
    send_with_fds(peer.as_fd(), b"\0", &[tcp.as_fd()], None).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(tcp);
    drop(peer);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    (&bystander).write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    (&bystander).read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the bystander waited {:?}",
        started.elapsed()
    );
}

/// When the server is not root, the kernel charges every descriptor in flight in its echoes
/// to the server's user, up to its descriptor limit: a peer that passes many and never reads
/// its echoes makes the kernel refuse (`ETOOMANYREFS`) the next peer's. That peer still gets
/// its bytes back and keeps its connection; its descriptors are closed with a log line (the
/// connection was ended, its bytes lost).
#[test]
fn descriptors_the_kernel_will_not_send_back_leave_the_bytes_and_the_connection() {
    use std::os::unix::fs::PermissionsExt;
    let dir = short_temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let server = Server::builder()
        .socket(dir.path().join("s.sock"))
        .args(["--mode", "raw", "--threads", "1", "--socket-mode", "0666"])
        .user(65534, 65534)
        .fd_limit(1024)
        .start()
        .unwrap();
    let file = tempfile::tempfile().unwrap();
    let hoarder = connect(&server);
    for _ in 0..5 {
        send_with_fds(hoarder.as_fd(), b"A", &[file.as_fd(); 253], None).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));

    let victim = connect(&server);
    send_with_fds(victim.as_fd(), b"hello", &[file.as_fd()], None).unwrap();
    let (echo, fds) = read_stream_with_fds(victim.as_fd(), 5).unwrap();
    assert_eq!((echo.as_slice(), fds.len()), (&b"hello"[..], 0));
    assert!(server.wait_stderr("the kernel would not send them back", STOP));
    (&victim).write_all(b"again").unwrap();
    let mut again = [0u8; 5];
    (&victim).read_exact(&mut again).unwrap();
    assert_eq!(&again, b"again");
    drop(hoarder);
}

/// The descriptors passed ones may not take include the server's own, which grow with its
/// serving threads (an epoll set and wakers each, about 4): 40 threads asked for under a
/// limit of 300 start while they hold at most half of it (about 36 threads, 145
/// descriptors); 64 kept in reserve and those leave room for about 90, so 100 passed at once
/// are a truncation. (With a flat reserve of 64 they were taken, and on a many-core machine
/// hoarders could then use the descriptors `accept` needs.)
#[test]
fn the_server_keeps_its_own_descriptors_per_thread_out_of_reach() {
    let server = Server::builder()
        .args(["--mode", "raw", "--threads", "40"])
        .fd_limit(300)
        .start()
        .unwrap();
    let own = baseline(&server);
    // More than 136 of its own leave room for fewer than 100 (300 - 64 - own - the peer's).
    assert!(
        (137..=150).contains(&own),
        "the threads hold {own} descriptors"
    );
    let file = tempfile::tempfile().unwrap();
    let peer = connect(&server);
    send_with_fds(peer.as_fd(), b"hundred", &[file.as_fd(); 100], None).unwrap();
    let (echo, fds) = read_stream_with_fds(peer.as_fd(), usize::MAX).unwrap();
    assert_eq!(echo, b"hundred");
    assert!(fds.len() < 100, "{} came back", fds.len());
    assert!(server.wait_stderr("could not take the descriptors", STOP));
    // Others are served as ever.
    let echo = udsecho_harness::raw_round_trip(server.socket(), b"next", 4).unwrap();
    assert_eq!(echo, b"next");
}

/// The kernel truncates what the server cannot take (`MSG_CTRUNC`): the connection gets its
/// bytes back, then ends with an error (an Error frame in framed mode) and a log line.
#[test]
fn descriptors_the_server_cannot_take_end_that_connection_with_an_error() {
    // 80 descriptors: the server keeps 64 in reserve, so a message of 40 cannot fit.
    let server = Server::builder().fd_limit(80).start().unwrap();
    let file = tempfile::tempfile().unwrap();
    let forty = [file.as_fd(); 40];

    let raw = connect(&server);
    send_with_fds(raw.as_fd(), b"too many", &forty, None).unwrap();
    let (echo, _) = read_stream_with_fds(raw.as_fd(), usize::MAX).unwrap();
    assert_eq!(echo, b"too many", "the bytes come back, then the end");

    let framed = framed_session(&server);
    let frame = encode(&Frame::Data(b"too many".as_slice().into()));
    send_with_fds(framed.as_fd(), &frame, &forty, None).unwrap();
    let (frames, _) = read_frames(&framed, 2);
    assert_eq!(frames[0], Frame::Data(b"too many".as_slice().into()));
    assert!(
        matches!(&frames[1], Frame::Error(e) if e.code == ErrorCode::DescriptorsTruncated),
        "{frames:?}"
    );
    assert!(server.wait_stderr("could not take the descriptors", STOP));
    // Others are served as before.
    let echo = udsecho_harness::raw_round_trip(server.socket(), b"next", 4).unwrap();
    assert_eq!(echo, b"next");
}

/// `-v` names what came: how many descriptors, and what each is.
#[test]
fn verbose_echo_lines_say_which_descriptors_came() {
    let server = Server::start(["-v", "--mode", "raw"]).unwrap();
    let kit = Kit::new();
    let stream = connect(&server);
    send_with_fds(stream.as_fd(), b"look\n", &kit.all(), None).unwrap();
    let _ = read_stream_with_fds(stream.as_fd(), 5).unwrap();
    assert!(
        server.wait_stderr("echo: look [with 4 descriptors: file ", STOP),
        "{}",
        server.stderr()
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains(", pipe, memfd udsecho-test, socket (unix stream)]"),
        "{stderr}"
    );
}
