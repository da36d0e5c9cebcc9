//! Echo in every mode, as a peer sees it.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use udsecho_harness::{FramedPeer, Server, checksum, connect, random_payload, raw_round_trip};
use udsecho_proto::{ErrorCode, Frame, Goodbye, GoodbyeReason, Hello, PREAMBLE};

#[test]
fn raw_bytes_come_back_intact_in_every_mode_that_allows_raw() {
    for mode in ["auto", "raw"] {
        let server = Server::start(["--mode", mode]).unwrap();
        let data = random_payload(1 << 20, 1);
        let echoed = raw_round_trip(server.socket(), &data, 7_919).unwrap();
        assert_eq!(echoed.len(), data.len(), "mode {mode}: length");
        assert_eq!(checksum(&echoed), checksum(&data), "mode {mode}: content");
    }
}

#[test]
fn raw_client_starting_with_nul_is_echoed_in_auto_mode() {
    let server = Server::start(["--mode", "auto"]).unwrap();
    assert_eq!(
        raw_round_trip(server.socket(), b"\0hello", 1).unwrap(),
        b"\0hello"
    );
    // The preamble's first six bytes then something else: raw, every byte back.
    assert_eq!(
        raw_round_trip(server.socket(), b"\0UDSECxyz", 3).unwrap(),
        b"\0UDSECxyz"
    );
}

#[test]
fn preamble_prefix_then_half_close_is_echoed() {
    let server = Server::start(["--mode", "auto"]).unwrap();
    assert_eq!(
        raw_round_trip(server.socket(), b"\0UDS", 4).unwrap(),
        b"\0UDS"
    );
}

#[test]
fn preamble_prefix_then_a_pause_becomes_raw() {
    let server = Server::start(["--mode", "auto"]).unwrap();
    let mut stream = connect(server.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"\0UD").unwrap();
    let start = Instant::now();
    let mut got = [0u8; 3];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"\0UD");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(90),
        "the server waited for the pause ({waited:?})"
    );
    // From then on the connection is raw, even if the rest of the preamble follows.
    stream.write_all(b"SECHO").unwrap();
    let mut rest = [0u8; 5];
    stream.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"SECHO");
}

#[test]
fn half_close_gets_every_byte_then_eof() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let mut stream = connect(server.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"last words").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"last words");
}

#[test]
fn framed_session_hello_then_data_in_order() {
    for mode in ["auto", "framed"] {
        let server = Server::start(["--mode", mode, "--max-frame", "1MiB"]).unwrap();
        let (mut peer, hello) = FramedPeer::handshake(server.socket()).unwrap();
        assert_eq!(hello.version, 1);
        assert_eq!(
            hello.max_frame,
            1 << 20,
            "the server announces the limit it enforces"
        );
        let payloads: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(random_payload(i * 37 % 5000, i as u64)))
            .collect();
        // Pipelined: everything goes out before anything is read.
        let writer = {
            let mut stream = peer.stream().try_clone().unwrap();
            let payloads = payloads.clone();
            thread::spawn(move || {
                let mut out = bytes::BytesMut::new();
                for p in payloads {
                    Frame::Data(p).encode(&mut out, u32::MAX).unwrap();
                }
                stream.write_all(&out).unwrap();
            })
        };
        for (i, expected) in payloads.iter().enumerate() {
            assert_eq!(
                peer.recv().unwrap(),
                Some(Frame::Data(expected.clone())),
                "frame {i}"
            );
        }
        writer.join().unwrap();
        peer.send(&Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
            .unwrap();
        assert_eq!(
            peer.recv().unwrap(),
            Some(Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
        );
        assert_eq!(peer.recv().unwrap(), None, "then the server closes");
    }
}

#[test]
fn framed_half_close_echoes_then_closes() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let (mut peer, _) = FramedPeer::handshake(server.socket()).unwrap();
    peer.send(&Frame::Data(Bytes::from_static(b"one"))).unwrap();
    peer.send(&Frame::Data(Bytes::from_static(b"two"))).unwrap();
    peer.finish().unwrap();
    assert_eq!(
        peer.recv().unwrap(),
        Some(Frame::Data(Bytes::from_static(b"one")))
    );
    assert_eq!(
        peer.recv().unwrap(),
        Some(Frame::Data(Bytes::from_static(b"two")))
    );
    assert_eq!(peer.recv().unwrap(), None);
}

/// Sends `bytes` after the preamble and expects one Error frame with `code`, then EOF.
fn expect_error(server: &Server, before: Option<Frame>, bytes: &[u8], code: ErrorCode) {
    let mut peer = FramedPeer::connect(server.socket()).unwrap();
    if let Some(frame) = before {
        peer.send(&frame).unwrap();
        assert!(matches!(peer.recv().unwrap(), Some(Frame::Hello(_))));
    }
    peer.send_raw(bytes).unwrap();
    match peer.recv().unwrap() {
        Some(Frame::Error(e)) => assert_eq!(e.code, code, "message: {}", e.message),
        other => panic!("expected an Error frame {code:?}, got {other:?}"),
    }
    assert_eq!(
        peer.recv().unwrap(),
        None,
        "the server closes after the Error"
    );
}

fn hello() -> Option<Frame> {
    Some(Frame::Hello(Hello::new(
        udsecho_proto::DEFAULT_MAX_FRAME,
        "test",
    )))
}

#[test]
fn every_protocol_violation_gets_its_error_frame_and_others_never_notice() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    // A well-behaved session that stays open through all of it.
    let (mut bystander, _) = FramedPeer::handshake(server.socket()).unwrap();

    expect_error(
        &server,
        None,
        b"\x00\x00\x00\x03\x01hi",
        ErrorCode::UnexpectedFrame,
    );
    expect_error(
        &server,
        None,
        b"\x00\x00\x00\x02\x03\x00",
        ErrorCode::UnexpectedFrame,
    );
    expect_error(&server, None, b"\x00\x00\x00\x00", ErrorCode::EmptyFrame);
    expect_error(
        &server,
        None,
        b"\x00\x00\x00\x01\x09",
        ErrorCode::UnknownKind,
    );
    expect_error(
        &server,
        None,
        b"\x00\x00\x00\x02\x00\x01",
        ErrorCode::Malformed,
    );
    // Version 0 is below every version the server speaks.
    expect_error(
        &server,
        None,
        b"\x00\x00\x00\x06\x00\x00\x80\x80\x04\x00",
        ErrorCode::UnsupportedVersion,
    );
    expect_error(
        &server,
        hello(),
        b"\x00\x00\x00\x06\x00\x01\x80\x80\x04\x00",
        ErrorCode::UnexpectedFrame,
    );
    expect_error(
        &server,
        hello(),
        b"\x00\x00\x00\x01\x07",
        ErrorCode::UnknownKind,
    );
    expect_error(
        &server,
        hello(),
        b"\xff\xff\xff\xff",
        ErrorCode::FrameTooLarge,
    );

    bystander
        .send(&Frame::Data(Bytes::from_static(b"still here")))
        .unwrap();
    assert_eq!(
        bystander.recv().unwrap(),
        Some(Frame::Data(Bytes::from_static(b"still here")))
    );
}

#[test]
fn frames_before_a_violation_are_echoed_first() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let (mut peer, _) = FramedPeer::handshake(server.socket()).unwrap();
    let mut bytes = bytes::BytesMut::new();
    Frame::Data(Bytes::from_static(b"kept"))
        .encode(&mut bytes, u32::MAX)
        .unwrap();
    bytes.extend_from_slice(b"\x00\x00\x00\x01\x42");
    peer.send_raw(&bytes).unwrap();
    assert_eq!(
        peer.recv().unwrap(),
        Some(Frame::Data(Bytes::from_static(b"kept")))
    );
    assert!(
        matches!(peer.recv().unwrap(), Some(Frame::Error(e)) if e.code == ErrorCode::UnknownKind)
    );
}

#[test]
fn a_4_gib_length_gets_an_error_frame_and_memory_stays_flat() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let before = udsecho_harness::rss_kib(server.pid()).unwrap();
    for _ in 0..50 {
        expect_error(
            &server,
            hello(),
            b"\xff\xff\xff\xff",
            ErrorCode::FrameTooLarge,
        );
    }
    // Frames announced at the limit but never completed cost a bounded step, not 8 MiB each.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut peer = FramedPeer::connect(server.socket()).unwrap();
        peer.send(&hello().unwrap()).unwrap();
        assert!(matches!(peer.recv().unwrap(), Some(Frame::Hello(_))));
        peer.send_raw(b"\x00\x80\x00\x00\x01partial").unwrap();
        stalled.push(peer);
    }
    thread::sleep(Duration::from_millis(200));
    let after = udsecho_harness::rss_kib(server.pid()).unwrap();
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB (20 stalled 8 MiB frames would be 160 MiB)"
    );
}

#[test]
fn forced_framed_mode_refuses_a_raw_client_with_an_error_frame() {
    let server = Server::start(["--mode", "framed"]).unwrap();
    let mut stream = connect(server.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"hello there").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let mut buf = bytes::BytesMut::from(&reply[..]);
    let frame = tokio_util::codec::Decoder::decode(&mut udsecho_proto::FrameCodec::new(), &mut buf)
        .unwrap();
    assert!(
        matches!(frame, Some(Frame::Error(ref e)) if e.code == ErrorCode::UnexpectedFrame),
        "{frame:?}"
    );
}

#[test]
fn forced_raw_mode_echoes_the_preamble_too() {
    let server = Server::start(["--mode", "raw"]).unwrap();
    let mut data = PREAMBLE.to_vec();
    data.extend_from_slice(b"\x00\x00\x00\x01\x01");
    assert_eq!(raw_round_trip(server.socket(), &data, 64).unwrap(), data);
}

#[test]
fn many_concurrent_raw_clients_with_random_chunks_all_get_their_bytes() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let path = server.socket().to_owned();
    let clients: Vec<_> = (0..64u64)
        .map(|i| {
            let path = path.clone();
            thread::spawn(move || {
                let data = random_payload(20_000 + (i as usize) * 311, i);
                let echoed = raw_round_trip(&path, &data, 1 + (i as usize * 97) % 4000).unwrap();
                assert!(echoed == data, "client {i} got different bytes back");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_peer_that_never_reads_is_not_buffered_without_limit_and_others_are_served() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let before = udsecho_harness::rss_kib(server.pid()).unwrap();
    let mut hog = connect(server.socket()).unwrap();
    hog.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    let mut written = 0usize;
    // Write until the kernel says no: both socket buffers are full and the server has stopped
    // reading from this peer.
    while written < 256 << 20 && hog.write_all(&chunk).is_ok() {
        written += chunk.len();
    }
    assert!(
        written < 64 << 20,
        "the server kept reading ({written} bytes) from a peer that never reads"
    );
    // Everyone else is still served.
    let data = random_payload(256 * 1024, 9);
    assert_eq!(raw_round_trip(server.socket(), &data, 4096).unwrap(), data);
    let after = udsecho_harness::rss_kib(server.pid()).unwrap();
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} to {after} KiB for one stuck peer"
    );
    // And the stuck peer still gets its bytes, in order, once it reads.
    hog.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = vec![0u8; 64 * 1024];
    hog.read_exact(&mut first).unwrap();
    assert!(first.iter().all(|&b| b == 0x5a));
}

/// A Unix stream read stops at a chunk that carries passed descriptors even when more is
/// queued: the server must not take a short read for an empty socket (it once did, and the
/// rest of the data waited forever).
#[test]
fn a_read_cut_short_by_passed_descriptors_loses_nothing() {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;

    let server = Server::start(Vec::<String>::new()).unwrap();
    for round in 0..5 {
        let mut stream = connect(server.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let data = random_payload(100_000, round);
        let passed = std::fs::File::open("/dev/null").unwrap();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let fds = [passed.as_fd()];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        // One sendmsg: the kernel splits it into chunks, the descriptor riding on the first.
        let sent = rustix::net::sendmsg(
            &stream,
            &[IoSlice::new(&data)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        stream.write_all(&data[sent..]).unwrap();
        // No half-close: its EOF event would wake the server and hide a stranded read.
        let mut echo = vec![0u8; data.len()];
        stream
            .read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("round {round}: the echo stopped short: {e}"));
        assert_eq!(checksum(&echo), checksum(&data));
    }
}

/// An out-of-band byte (`send(MSG_OOB)`, Linux 5.15+) is echoed in its place, and the bytes
/// after it are not left unread: a read stops at the out-of-band mark, so a short read there
/// does not mean the socket is empty. The bytes are queued before the server accepts (the
/// only slot is taken), so no readiness event comes after the first read to rescue them.
#[test]
fn an_out_of_band_byte_is_echoed_in_place_and_what_follows_it_too() {
    use rustix::net::SendFlags;
    let server = Server::start(["--mode", "raw", "--max-connections", "1"]).unwrap();
    let first = connect(server.socket()).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&first).write_all(b"1").unwrap();
    let mut one = [0u8; 1];
    (&first).read_exact(&mut one).unwrap();

    let peer = connect(server.socket()).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustix::net::send(&peer, b"abc", SendFlags::empty()).unwrap();
    rustix::net::send(&peer, b"x", SendFlags::OOB).unwrap();
    rustix::net::send(&peer, b"def", SendFlags::empty()).unwrap();
    drop(first);
    let mut echoed = [0u8; 7];
    (&peer)
        .read_exact(&mut echoed)
        .expect("every byte echoed, the out-of-band one in its place");
    assert_eq!(&echoed, b"abcxdef");
}
