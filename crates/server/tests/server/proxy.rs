//! `--upstream`: the server as a proxy. The upstream is a second udsecho-server (an echo) or
//! a socket this test serves itself; the client is this test, or udsecho-client.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use udsecho_harness::descriptors::{read_stream_with_fds, same_open_file, send_with_fds};
use udsecho_harness::{
    FramedPeer, Server, Signal, raw_round_trip, rss_kib, run_client, short_temp_dir,
};

const STOP: Duration = Duration::from_secs(10);

/// An echo server, and a proxy in front of it with `args`.
fn echo_behind_proxy(args: &[&str]) -> (Server, Server) {
    let upstream = Server::start(["--mode", "raw"]).unwrap();
    let proxy = proxy_to(upstream.socket(), args);
    (upstream, proxy)
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(STOP)).unwrap();
    stream.set_write_timeout(Some(STOP)).unwrap();
    stream
}

#[test]
fn bytes_come_through_both_ways_intact() {
    let (_upstream, proxy) = echo_behind_proxy(&[]);
    assert_eq!(raw_round_trip(proxy.socket(), b"x", 1).unwrap(), b"x");
    let mib = udsecho_harness::random_payload(1 << 20, 7);
    let back = raw_round_trip(proxy.socket(), &mib, 10_000).unwrap();
    assert!(
        back == mib,
        "1 MiB came back changed ({} bytes)",
        back.len()
    );
}

/// A proxy to `upstream` with `args`, once it listens. Not probed with a connection as the
/// harness does, which would be proxied too: each test's first connection is conn 1, and
/// the upstream sees only the proxy's check at start before it.
pub(crate) fn proxy_to(upstream: &Path, args: &[&str]) -> Server {
    let proxy = Server::builder()
        .args(["--upstream".as_ref(), upstream.as_os_str()])
        .args(args)
        .no_wait()
        .start()
        .unwrap();
    assert!(
        proxy.wait_stderr("listening on", STOP),
        "{}",
        proxy.stderr()
    );
    proxy
}

/// The upstream's first connection is the proxy's check at start: it is let go.
fn upstream_after_check<T: Send + 'static>(
    serve: impl FnOnce(UnixStream) -> T + Send + 'static,
) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<T>) {
    let dir = short_temp_dir();
    let path = dir.path().join("up.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = thread::spawn(move || {
        let (check, _) = listener.accept().unwrap();
        drop(check);
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(STOP)).unwrap();
        serve(stream)
    });
    (dir, path, handle)
}

#[test]
fn the_clients_half_close_reaches_the_upstream_which_can_still_answer() {
    let (_dir, path, upstream) = upstream_after_check(|mut stream| {
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        stream.write_all(b"answer after your EOF").unwrap();
        got
    });
    let proxy = proxy_to(&path, &[]);
    let mut client = connect(proxy.socket());
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(upstream.join().unwrap(), b"request");
    assert_eq!(answer, b"answer after your EOF");
}

#[test]
fn the_upstreams_half_close_reaches_the_client_which_can_still_send() {
    let (_dir, path, upstream) = upstream_after_check(|mut stream| {
        stream.write_all(b"banner").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    });
    let proxy = proxy_to(&path, &[]);
    let mut client = connect(proxy.socket());
    let mut banner = Vec::new();
    client.read_to_end(&mut banner).unwrap();
    assert_eq!(banner, b"banner", "then EOF");
    client.write_all(b"still talking").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(upstream.join().unwrap(), b"still talking");
}

#[test]
fn descriptors_go_through_to_the_upstream_and_back_as_the_same_open_files() {
    let (_upstream, proxy) = echo_behind_proxy(&[]);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"0123456789").unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    let stream = connect(proxy.socket());
    send_with_fds(
        stream.as_fd(),
        b"with two",
        &[file.as_fd(), pipe_r.as_fd()],
        None,
    )
    .unwrap();
    let (echo, fds) = read_stream_with_fds(stream.as_fd(), 8).unwrap();
    assert_eq!(echo, b"with two");
    assert_eq!(fds.len(), 2, "both came back");
    assert!(fds.iter().all(|(at, _)| *at == 0), "with the first byte");
    let fds: Vec<OwnedFd> = fds.into_iter().map(|(_, fd)| fd).collect();
    assert!(same_open_file(&fds[0], &file));
    assert!(same_open_file(&fds[1], &pipe_r));
    // The same open file: reading through the one that came back moves ours.
    let mut back = File::from(fds[0].try_clone().unwrap());
    let mut first = [0u8; 4];
    back.read_exact(&mut first).unwrap();
    let mut rest = String::new();
    file.read_to_string(&mut rest).unwrap();
    assert_eq!((&first, rest.as_str()), (b"0123", "456789"));

    // And the client's own check: `send --fd` sees the same open files come back.
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("passed.txt");
    std::fs::write(&passed, b"contents").unwrap();
    let run = run_client(
        [
            "--socket".as_ref(),
            proxy.socket().as_os_str(),
            "send".as_ref(),
            "-n".as_ref(),
            "3".as_ref(),
            "-i".as_ref(),
            "1ms".as_ref(),
            "-m".as_ref(),
            "hi".as_ref(),
            "--fd".as_ref(),
            passed.as_os_str(),
        ],
        b"",
        STOP,
    )
    .unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stderr, "3 sent, 3 echoed intact\n");
}

#[test]
fn an_upstream_that_never_reads_stops_the_client_not_the_proxys_memory() {
    let (_dir, path, upstream) = upstream_after_check(|stream| {
        // Holds the connection, reads nothing, until the test is done.
        thread::sleep(Duration::from_secs(4));
        drop(stream);
    });
    let proxy = proxy_to(&path, &[]);
    let before = rss_kib(proxy.pid()).unwrap();
    let client = connect(proxy.socket());
    client.set_nonblocking(true).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    let mut sent = 0usize;
    let mut stalled_since = Instant::now();
    // Write until the writes have blocked for half a second straight.
    while stalled_since.elapsed() < Duration::from_millis(500) {
        match (&client).write(&block) {
            Ok(n) => {
                sent += n;
                stalled_since = Instant::now();
                assert!(sent < 64 << 20, "64 MiB went in and nothing blocked");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let after = rss_kib(proxy.pid()).unwrap();
    // The kernel's buffers on three sockets and one 64 KiB read: a few MiB at most.
    assert!(
        sent < 16 << 20,
        "{sent} bytes went in before the writes blocked"
    );
    assert!(
        after < before + 4 * 1024,
        "the proxy grew from {before} KiB to {after} KiB"
    );
    drop(client);
    upstream.join().unwrap();
}

#[test]
fn an_upstream_that_is_down_is_one_warning_and_the_client_is_closed() {
    let dir = short_temp_dir();
    let missing = dir.path().join("nobody.sock");
    let proxy = proxy_to(&missing, &[]);
    assert!(
        proxy.wait_stderr("serving anyway", STOP),
        "a warning at start: {}",
        proxy.stderr()
    );
    let mut client = connect(proxy.socket());
    client.write_all(b"anyone?").ok();
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert!(got.is_empty(), "nothing came back: {got:?}");
    let line = format!("upstream {}: ", missing.display());
    assert!(proxy.wait_stderr("closing the client's connection", STOP));
    let stderr = proxy.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("closing the client's connection"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&line) && lines[0].contains("no such socket"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_accepting_and_open_connections_go_on_until_they_end() {
    let (_upstream, mut proxy) = echo_behind_proxy(&[]);
    let mut client = connect(proxy.socket());
    client.write_all(b"before").unwrap();
    let mut got = [0u8; 6];
    client.read_exact(&mut got).unwrap();
    proxy.signal(Signal::TERM).unwrap();
    // The socket goes: no new client.
    let deadline = Instant::now() + STOP;
    while UnixStream::connect(proxy.socket()).is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        thread::sleep(Duration::from_millis(10));
    }
    client.write_all(b"after the signal").unwrap();
    let mut got = [0u8; 16];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after the signal");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(proxy.wait_exit(STOP).unwrap().success());
}

#[test]
fn after_sigterm_a_connection_still_open_at_the_shutdown_timeout_is_closed() {
    let (_upstream, mut proxy) = echo_behind_proxy(&["--shutdown-timeout", "300ms"]);
    let mut client = connect(proxy.socket());
    client.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    client.read_exact(&mut got).unwrap();
    let signalled = Instant::now();
    let status = proxy.stop(Signal::TERM, STOP).unwrap();
    assert!(status.success());
    assert!(signalled.elapsed() >= Duration::from_millis(300));
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

/// The recording's lines, parsed.
fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A data line's bytes: its `text` when it has one, else its `base64`; exactly one is there,
/// and `text` is chosen for UTF-8 with no NUL (docs/proxy.md).
fn decoded(line: &serde_json::Value) -> Vec<u8> {
    let bytes = match (line.get("text"), line.get("base64")) {
        (Some(text), None) => text.as_str().unwrap().as_bytes().to_vec(),
        (None, Some(base64)) => base64::engine::general_purpose::STANDARD
            .decode(base64.as_str().unwrap())
            .unwrap(),
        _ => panic!("text or base64, one of them: {line}"),
    };
    let texty = !bytes.contains(&0) && std::str::from_utf8(&bytes).is_ok();
    assert_eq!(
        line.get("text").is_some(),
        texty,
        "text exactly when it can be: {line}"
    );
    bytes
}

#[test]
fn the_recording_accounts_for_every_byte_in_order_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let (_upstream, mut proxy) = echo_behind_proxy(&["--record", record.to_str().unwrap()]);
    let mut client = connect(proxy.socket());
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let piece = format!("line {i}\n\x1b");
        client.write_all(piece.as_bytes()).unwrap();
        sent.extend_from_slice(piece.as_bytes());
        if i % 5 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let big = udsecho_harness::random_payload(300_000, 3);
    sent.extend_from_slice(&big);
    let writer = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            client.write_all(&big).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert!(echoed == sent);
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());

    let lines = read_jsonl(&record);
    // The proxy's own check of the upstream is no connection of the proxy's: conn 1 is ours.
    assert!(lines.iter().all(|l| l["conn"] == 1), "one connection");
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"open"));
    assert_eq!(events.last(), Some(&"close"));
    let open = &lines[0];
    assert_eq!(open["peer"]["pid"], std::process::id());
    assert_eq!(open["peer"]["uid"], rustix::process::getuid().as_raw());
    assert_eq!(open["upstream"], _upstream.socket().to_str().unwrap());
    let mut last_t = 0.0;
    for line in &lines {
        let t = line["t"].as_f64().unwrap();
        assert!(t >= last_t, "time goes forward: {line}");
        last_t = t;
    }
    for (dir, want) in [("to_upstream", &sent), ("to_client", &echoed)] {
        let mut got = Vec::new();
        let mut eof = false;
        for line in lines.iter().filter(|l| l["dir"] == dir) {
            match line["event"].as_str().unwrap() {
                "data" => {
                    assert!(!eof, "{dir}: data after EOF");
                    let bytes = decoded(line);
                    assert_eq!(line["len"], bytes.len());
                    assert!(!bytes.is_empty());
                    assert_eq!(line["fds"], serde_json::json!([]));
                    got.extend_from_slice(&bytes);
                }
                "eof" => eof = true,
                other => panic!("{dir}: unexpected {other}"),
            }
        }
        assert!(eof, "{dir}: the half-close is recorded");
        assert!(
            &got == want,
            "{dir}: {} bytes recorded of {}",
            got.len(),
            want.len()
        );
    }
    // Both forms are there: the first lines are text, the random bytes are not.
    assert!(lines.iter().any(|l| l.get("text").is_some()));
    assert!(lines.iter().any(|l| l.get("base64").is_some()));
    let close = lines.last().unwrap();
    assert_eq!(close["to_upstream"], sent.len());
    assert_eq!(close["to_client"], echoed.len());
}

#[test]
fn the_recording_names_passed_descriptors_and_decodes_a_framed_session() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let upstream = Server::start(Vec::<String>::new()).unwrap();
    let mut proxy = proxy_to(upstream.socket(), &["--record", record.to_str().unwrap()]);

    let passed = dir.path().join("passed file.txt");
    std::fs::write(&passed, b"x").unwrap();
    let file = File::open(&passed).unwrap();
    let stream = connect(proxy.socket());
    send_with_fds(stream.as_fd(), b"raw with a file", &[file.as_fd()], None).unwrap();
    let (echo, fds) = read_stream_with_fds(stream.as_fd(), 15).unwrap();
    assert_eq!((echo.as_slice(), fds.len()), (&b"raw with a file"[..], 1));
    drop(stream);

    let (mut framed, _hello) = FramedPeer::handshake(proxy.socket()).unwrap();
    framed
        .echo_all(&[
            bytes::Bytes::from_static(b"one"),
            bytes::Bytes::from(vec![9u8; 100_000]),
        ])
        .unwrap();
    framed.finish().unwrap();
    while framed.recv().unwrap().is_some() {}
    drop(framed);
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());

    let lines = read_jsonl(&record);
    let with_fd: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "data" && l["fds"] != serde_json::json!([]))
        .collect();
    assert_eq!(
        with_fd.len(),
        2,
        "the read that brought it, and the echo that carried it back"
    );
    for line in &with_fd {
        assert_eq!(
            line["fds"],
            serde_json::json!([{"kind": "file", "path": passed.to_str().unwrap()}])
        );
        assert_eq!(line["text"], "raw with a file");
    }
    // conn 2 is the framed one: its frames, in order, each direction.
    for (dir, agent) in [("to_upstream", "harness"), ("to_client", "udsecho/")] {
        let frames: Vec<serde_json::Value> = lines
            .iter()
            .filter(|l| l["conn"] == 2 && l["dir"] == dir && l["event"] == "data")
            .flat_map(|l| l["frames"].as_array().cloned().unwrap_or_default())
            .collect();
        let kinds: Vec<&str> = frames.iter().map(|f| f["kind"].as_str().unwrap()).collect();
        // (The upstream may end with a Goodbye.)
        assert_eq!(kinds[..3], ["hello", "data", "data"], "{dir}: {frames:?}");
        assert!(
            frames[0]["decoded"].as_str().unwrap().contains(agent),
            "{dir}: {}",
            frames[0]
        );
        assert_eq!(frames[1]["len"], 4);
        assert_eq!(frames[2]["len"], 100_001);
    }
}

#[test]
fn verbose_shows_each_read_with_its_size_descriptors_and_escaped_bytes() {
    let (_upstream, mut proxy) = echo_behind_proxy(&["-v"]);
    let passed = tempfile::NamedTempFile::new().unwrap();
    let stream = connect(proxy.socket());
    send_with_fds(
        stream.as_fd(),
        b"GET / HTTP/1.1\r\n",
        &[passed.as_file().as_fd()],
        None,
    )
    .unwrap();
    let (echo, _fds) = read_stream_with_fds(stream.as_fd(), 16).unwrap();
    assert_eq!(echo, b"GET / HTTP/1.1\r\n");
    let want = format!(
        "> conn 1 to_upstream 16 bytes, 1 fd (file {}): GET / HTTP/1.1\\r\\n",
        passed.path().display()
    );
    assert!(proxy.wait_stderr(&want, STOP), "{}", proxy.stderr());
    assert!(proxy.wait_stderr("< conn 1 to_client 16 bytes, 1 fd", STOP));
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(proxy.wait_stderr("> conn 1 to_upstream EOF", STOP));
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());
}

#[test]
fn bad_proxy_flags_are_one_line_and_exit_2() {
    for args in [
        &["--record", "x.jsonl"][..],
        &["--pcap", "x.pcapng"],
        &["--upstream", "", "--type", "datagram"],
        &["--upstream", "/tmp/x.sock", "--fault", "timeout"],
        &["--upstream", "/tmp/x.sock", "-u", "--fault", "reset_peer"],
    ] {
        let out = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
            .args(args)
            .args(["--socket", "/tmp/never-bound.sock"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

/// One message from a seqpacket socket, with its descriptors; a buffer of 256 KiB, so a
/// message cut short would show as `cut`.
fn recv_message(fd: &OwnedFd, proxy: &Server) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = vec![0u8; 256 * 1024];
    let got = udsecho_harness::descriptors::recv_with_fds(fd.as_fd(), &mut buf)
        .unwrap_or_else(|e| panic!("{e}; the proxy's stderr:\n{}", proxy.stderr()));
    assert!(!got.cut, "the message came whole");
    buf.truncate(got.len);
    (buf, got.fds)
}

#[test]
fn seqpacket_messages_keep_their_boundaries_both_ways_with_their_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let up = short_temp_dir();
    let upstream = udsecho_harness::SeqpacketPeer::echo(&up.path().join("up.sock")).unwrap();
    let mut proxy = proxy_to(
        upstream.path(),
        &["--type", "seqpacket", "--record", record.to_str().unwrap()],
    );
    let client = super::socket_types::seqpacket(proxy.socket());
    // 100,000 bytes: more than the proxy's 64 KiB buffer.
    let sizes = [1usize, 1000, 100_000];
    let messages: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| udsecho_harness::random_payload(n, n as u64))
        .collect();
    for message in &messages {
        send_with_fds(client.as_fd(), message, &[], None).unwrap();
    }
    for message in &messages {
        let (back, _) = recv_message(&client, &proxy);
        assert!(
            &back == message,
            "a {}-byte message came back as {}",
            message.len(),
            back.len()
        );
    }
    rustix::net::shutdown(&client, rustix::net::Shutdown::Write).unwrap();
    let (end, _) = recv_message(&client, &proxy);
    assert!(end.is_empty(), "then the end");
    drop(client);
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());
    // The upstream got them as the same messages, one each.
    let received = upstream.received();
    assert_eq!(
        received.len(),
        3,
        "{:?}",
        received.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(received == messages);
    let lens: Vec<u64> = read_jsonl(&record)
        .iter()
        .filter(|l| l["event"] == "data" && l["dir"] == "to_upstream")
        .map(|l| l["len"].as_u64().unwrap())
        .collect();
    assert_eq!(lens, [1, 1000, 100_000], "one event a message");

    // Descriptors, and an empty message, through to an echo server and back.
    let upstream = Server::start(["--type", "seqpacket"]).unwrap();
    let proxy = proxy_to(upstream.socket(), &["--type", "seqpacket"]);
    let client = super::socket_types::seqpacket(proxy.socket());
    let file = tempfile::tempfile().unwrap();
    send_with_fds(client.as_fd(), b"with a file", &[file.as_fd()], None).unwrap();
    send_with_fds(client.as_fd(), b"", &[], None).unwrap();
    send_with_fds(client.as_fd(), b"after", &[], None).unwrap();
    let (back, fds) = recv_message(&client, &proxy);
    assert_eq!((back.as_slice(), fds.len()), (&b"with a file"[..], 1));
    assert!(same_open_file(&fds[0], &file));
    let (empty, _) = recv_message(&client, &proxy);
    assert!(empty.is_empty());
    let (after, _) = recv_message(&client, &proxy);
    assert_eq!(after, b"after", "an empty message is not the end");
}

#[test]
fn datagrams_go_through_a_relay_per_sender_and_each_gets_its_own_replies() {
    use std::os::unix::net::UnixDatagram;
    use udsecho_harness::{DatagramPeer, Sender};
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let up = short_temp_dir();
    let upstream = DatagramPeer::echo(&up.path().join("up.sock")).unwrap();
    let mut proxy = proxy_to(
        upstream.path(),
        &["--type", "datagram", "--record", record.to_str().unwrap()],
    );
    let here = short_temp_dir();
    let clients: Vec<UnixDatagram> = (0..2)
        .map(|i| {
            let client = UnixDatagram::bind(here.path().join(format!("c{i}.sock"))).unwrap();
            client.connect(proxy.socket()).unwrap();
            client.set_read_timeout(Some(STOP)).unwrap();
            client
        })
        .collect();
    let sent: Vec<Vec<Vec<u8>>> = (0..2u64)
        .map(|i| {
            [1usize, 1000, 60_000]
                .iter()
                .map(|&n| udsecho_harness::random_payload(n, n as u64 + 7 * i))
                .collect()
        })
        .collect();
    for (client, datagrams) in clients.iter().zip(&sent) {
        for datagram in datagrams {
            client.send(datagram).unwrap();
        }
    }
    let mut buf = vec![0u8; 256 * 1024];
    for (client, datagrams) in clients.iter().zip(&sent) {
        for datagram in datagrams {
            let n = client
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{e}: {}", proxy.stderr()));
            assert!(
                &buf[..n] == datagram.as_slice(),
                "{n} bytes for {}",
                datagram.len()
            );
        }
    }
    // The upstream saw two senders (the relays, autobound), each with one client's datagrams.
    let received = upstream.received();
    assert_eq!(received.len(), 6);
    let mut senders: Vec<Sender> = received.iter().map(|d| d.sender.clone()).collect();
    senders.dedup();
    assert_eq!(senders.len(), 2, "{senders:?}");
    assert!(senders.iter().all(|s| matches!(s, Sender::Abstract(_))));
    for sender in &senders {
        let theirs: Vec<&Vec<u8>> = received
            .iter()
            .filter(|d| &d.sender == sender)
            .map(|d| &d.bytes)
            .collect();
        assert!(
            sent.iter()
                .any(|mine| mine.iter().collect::<Vec<_>>() == theirs)
        );
    }
    // A sender with no address cannot be answered: dropped, and said.
    let unnamed = UnixDatagram::unbound().unwrap();
    unnamed.send_to(b"who am I", proxy.socket()).unwrap();
    assert!(
        proxy.wait_stderr("from a sender with no address", STOP),
        "{}",
        proxy.stderr()
    );
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());
    let lines = read_jsonl(&record);
    let opens: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "open").collect();
    assert_eq!(opens.len(), 2, "a relay a sender");
    assert!(opens.iter().all(|o| o["peer"]["pid"] == std::process::id()));
    for conn in [1, 2] {
        let lens = |dir: &str| -> Vec<u64> {
            lines
                .iter()
                .filter(|l| l["conn"] == conn && l["event"] == "data" && l["dir"] == dir)
                .map(|l| l["len"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(lens("to_upstream"), [1, 1000, 60_000], "conn {conn}");
        assert_eq!(lens("to_client"), [1, 1000, 60_000], "conn {conn}");
        let close = lines
            .iter()
            .find(|l| l["conn"] == conn && l["event"] == "close")
            .expect("each relay's close is recorded");
        assert_eq!(close["to_upstream"], 61_001);
        assert_eq!(close["to_client"], 61_001);
    }

    // Descriptors go through with a datagram and come back with its reply.
    let upstream = Server::start(["--type", "datagram"]).unwrap();
    let proxy = proxy_to(upstream.socket(), &["--type", "datagram"]);
    let client = UnixDatagram::bind(here.path().join("fd.sock")).unwrap();
    client.set_read_timeout(Some(STOP)).unwrap();
    let file = tempfile::tempfile().unwrap();
    send_with_fds(
        client.as_fd(),
        b"with a file",
        &[file.as_fd()],
        Some(proxy.socket()),
    )
    .unwrap();
    let got = udsecho_harness::descriptors::recv_with_fds(client.as_fd(), &mut buf)
        .unwrap_or_else(|e| panic!("{e}: {}", proxy.stderr()));
    assert_eq!((&buf[..got.len], got.fds.len()), (&b"with a file"[..], 1));
    assert!(same_open_file(&got.fds[0], &file));
}

#[test]
fn datagram_relays_are_bounded_and_expire_when_idle() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let up = short_temp_dir();
    let upstream = udsecho_harness::DatagramPeer::echo(&up.path().join("up.sock")).unwrap();
    let mut proxy = proxy_to(
        upstream.path(),
        &[
            "-u",
            "--max-connections",
            "1",
            "--idle-timeout",
            "300ms",
            "-v",
            "--record",
            record.to_str().unwrap(),
        ],
    );
    let here = short_temp_dir();
    let mut buf = [0u8; 16];
    let mut ask = |name: &str, what: &[u8]| {
        let client = UnixDatagram::bind(here.path().join(name)).unwrap();
        client.set_read_timeout(Some(STOP)).unwrap();
        client.send_to(what, proxy.socket()).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], what);
    };
    // One relay at most: the second sender's takes the first's place.
    ask("a.sock", b"from a");
    ask("b.sock", b"from b");
    assert!(
        proxy.wait_stderr("relay closed conn=1", STOP),
        "{}",
        proxy.stderr()
    );
    // Idle past --idle-timeout: the second closes too.
    assert!(
        proxy.wait_stderr("relay closed conn=2", STOP),
        "{}",
        proxy.stderr()
    );
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());
    let events: Vec<(u64, String)> = read_jsonl(&record)
        .iter()
        .map(|l| {
            (
                l["conn"].as_u64().unwrap(),
                l["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let of = |conn: u64| -> Vec<&str> {
        events
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, e)| e.as_str())
            .collect()
    };
    assert_eq!(of(1), ["open", "data", "data", "close"]);
    assert_eq!(of(2), ["open", "data", "data", "close"]);
}

#[test]
fn a_datagram_from_a_uid_not_allowed_is_not_forwarded() {
    use std::os::unix::net::UnixDatagram;
    let up = short_temp_dir();
    let upstream = udsecho_harness::DatagramPeer::echo(&up.path().join("up.sock")).unwrap();
    let someone_else = (rustix::process::getuid().as_raw() + 1).to_string();
    let proxy = proxy_to(upstream.path(), &["-u", "--allow-uid", &someone_else]);
    let here = short_temp_dir();
    let client = UnixDatagram::bind(here.path().join("c.sock")).unwrap();
    client.send_to(b"let me in", proxy.socket()).unwrap();
    assert!(
        proxy.wait_stderr("from a uid not in --allow-uid", STOP),
        "{}",
        proxy.stderr()
    );
    assert!(upstream.received().is_empty());
}

/// A captured packet: its comment, and the IPv4 packet.
type Packet = (Option<String>, Vec<u8>);

/// The packets of a pcapng file, and the interface's name.
fn read_pcapng(path: &Path) -> (Option<String>, Vec<Packet>) {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut reader = PcapNgReader::new(File::open(path).unwrap()).unwrap();
    let (mut name, mut packets) = (None, Vec::new());
    while let Some(block) = reader.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(idb) => {
                assert_eq!(idb.linktype, pcap_file::DataLink::IPV4);
                for option in idb.options {
                    if let InterfaceDescriptionOption::IfName(n) = option {
                        name = Some(n.into_owned());
                    }
                }
            }
            Block::EnhancedPacket(epb) => {
                let comment = epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                });
                assert_eq!(epb.original_len as usize, epb.data.len());
                packets.push((comment, epb.data.into_owned()));
            }
            _ => {}
        }
    }
    (name, packets)
}

/// One direction's TCP payload, put back in sequence order, and the flags seen.
fn reassemble(packets: &[Packet], to_port: u16) -> (Vec<u8>, Vec<&'static str>) {
    use etherparse::{SlicedPacket, TransportSlice};
    let mut segments = Vec::new();
    let mut flags = Vec::new();
    for (_, packet) in packets {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("a TCP segment")
        };
        if tcp.destination_port() != to_port {
            continue;
        }
        if tcp.syn() {
            flags.push("syn");
        }
        if tcp.fin() {
            flags.push("fin");
        }
        if tcp.rst() {
            flags.push("rst");
        }
        if !tcp.payload().is_empty() {
            segments.push((tcp.sequence_number(), tcp.payload().to_vec()));
        }
    }
    segments.sort_by_key(|(seq, _)| *seq);
    let mut stream = Vec::new();
    let mut next = segments.first().map_or(1, |(seq, _)| *seq);
    assert_eq!(next, 1, "data starts after the SYN");
    for (seq, payload) in segments {
        assert_eq!(seq, next, "no gap, no overlap");
        next += payload.len() as u32;
        stream.extend_from_slice(&payload);
    }
    (stream, flags)
}

#[test]
fn the_pcapng_shows_an_http_exchange_over_a_unix_socket_as_tcp_to_port_80() {
    let request = b"GET /version HTTP/1.1\r\nHost: docker\r\n\r\n";
    let response =
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Version\":\"27.0\"}\n";
    let (_dir, path, upstream) = upstream_after_check(move |mut stream| {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the request ends with a blank line");
            got.extend_from_slice(&chunk[..n]);
        }
        stream.write_all(response).unwrap();
        got
    });
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("capture.pcapng");
    let mut proxy = proxy_to(&path, &["--pcap", pcap.to_str().unwrap()]);
    let mut client = connect(proxy.socket());
    client.write_all(request).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, response);
    assert_eq!(upstream.join().unwrap(), request);
    drop(client);
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());

    let (name, packets) = read_pcapng(&pcap);
    assert_eq!(name.as_deref(), proxy.socket().to_str());
    let first = packets[0].0.as_deref().unwrap_or_default();
    assert!(
        first.contains(&format!("client pid {} uid ", std::process::id())),
        "the first packet names the client: {first}"
    );
    let (to_upstream, client_flags) = reassemble(&packets, 80);
    let (to_client, upstream_flags) = reassemble(&packets, 49153);
    assert_eq!(to_upstream, request, "the HTTP request, whole");
    assert!(to_upstream.starts_with(b"GET /version HTTP/1.1\r\n"));
    assert_eq!(to_client, response);
    assert_eq!(client_flags, ["syn", "fin"]);
    assert_eq!(upstream_flags, ["syn", "fin"]);
}

#[test]
fn the_pcapng_shows_messages_as_udp_with_descriptors_in_comments() {
    use etherparse::{SlicedPacket, TransportSlice};
    let upstream = Server::start(["--type", "seqpacket"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("capture.pcapng");
    let mut proxy = proxy_to(
        upstream.socket(),
        &["--type", "seqpacket", "--pcap", pcap.to_str().unwrap()],
    );
    let client = super::socket_types::seqpacket(proxy.socket());
    let file = tempfile::NamedTempFile::new().unwrap();
    send_with_fds(client.as_fd(), b"one", &[file.as_file().as_fd()], None).unwrap();
    send_with_fds(client.as_fd(), b"two", &[], None).unwrap();
    for _ in 0..2 {
        recv_message(&client, &proxy);
    }
    drop(client);
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());
    let (_, packets) = read_pcapng(&pcap);
    let mut seen = Vec::new();
    for (comment, packet) in &packets {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("a UDP datagram")
        };
        seen.push((
            udp.destination_port(),
            udp.payload().to_vec(),
            comment.clone(),
        ));
    }
    // Each direction in order, one datagram a message, whatever their interleaving.
    let to = |port: u16| -> Vec<&[u8]> {
        seen.iter()
            .filter(|(p, _, _)| *p == port)
            .map(|(_, b, _)| b.as_slice())
            .collect()
    };
    assert_eq!(to(9), [&b"one"[..], b"two"], "to the upstream");
    assert_eq!(to(49153), [&b"one"[..], b"two"], "back to the client");
    let first = seen[0].2.as_deref().unwrap_or_default();
    assert!(first.contains("client pid"), "{first}");
    assert!(
        first.contains(&format!(
            "1 passed descriptor(s): file {}",
            file.path().display()
        )),
        "{first}"
    );
}

/// Reads until the proxy closes; each read's length, and how long it all took.
fn reads_until_closed(stream: &mut UnixStream) -> (Vec<u8>, Vec<usize>, Duration) {
    let started = Instant::now();
    let (mut all, mut reads) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                reads.push(n);
                all.extend_from_slice(&chunk[..n]);
            }
        }
    }
    (all, reads, started.elapsed())
}

#[test]
fn fault_latency_holds_back_what_goes_to_the_client() {
    let (_upstream, proxy) = echo_behind_proxy(&["--fault", "latency=300ms"]);
    let mut client = connect(proxy.socket());
    let sent = Instant::now();
    client.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn fault_slicer_gives_the_client_the_bytes_in_slices_with_gaps() {
    let (_upstream, proxy) = echo_behind_proxy(&["--fault", "slicer=1,gap=30ms"]);
    let mut client = connect(proxy.socket());
    client.write_all(b"hello").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (all, reads, took) = reads_until_closed(&mut client);
    assert_eq!(all, b"hello");
    // One byte every 30 ms: five reads when the client keeps up (a client descheduled for
    // longer than a gap finds two slices in one read, so only "several" is asserted), and
    // never faster than the gaps allow.
    assert!(reads.len() >= 3, "{reads:?}");
    assert!(took >= Duration::from_millis(120), "{took:?}");
}

#[test]
fn fault_limit_data_closes_the_client_after_that_many_bytes() {
    let (_upstream, proxy) = echo_behind_proxy(&["--fault", "limit_data=5"]);
    let mut client = connect(proxy.socket());
    client.write_all(b"hello world").unwrap();
    let (all, _, _) = reads_until_closed(&mut client);
    assert_eq!(all, b"hello");
}

#[test]
fn fault_reset_peer_closes_the_connection_when_it_is_due() {
    let (_upstream, proxy) = echo_behind_proxy(&["--fault", "reset_peer=400ms"]);
    let mut client = connect(proxy.socket());
    let opened = Instant::now();
    client.write_all(b"early").unwrap();
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early", "served until then");
    let (rest, _, _) = reads_until_closed(&mut client);
    assert!(rest.is_empty());
    let closed = opened.elapsed();
    assert!(
        closed >= Duration::from_millis(400) && closed < Duration::from_secs(3),
        "{closed:?}"
    );
    // reset_peer with no delay: nothing at all.
    let (_upstream, proxy) = echo_behind_proxy(&["--fault", "reset_peer"]);
    let mut client = connect(proxy.socket());
    let _ = client.write_all(b"hello");
    let (all, _, took) = reads_until_closed(&mut client);
    assert!(
        all.is_empty() && took < Duration::from_secs(2),
        "{all:?} {took:?}"
    );
}

/// What a client of a proxy with `fault` and `--shutdown-timeout 5s` gets of `sent` (written,
/// then its end) when SIGTERM comes 300 ms later, and how long after the signal the end
/// came; the proxy exits well.
fn drained_through(fault: &str, sent: &[u8]) -> (Vec<u8>, Duration) {
    let (_upstream, mut proxy) = echo_behind_proxy(&["--fault", fault, "--shutdown-timeout", "5s"]);
    let mut client = connect(proxy.socket());
    client.write_all(sent).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    proxy.signal(Signal::TERM).unwrap();
    let (all, _, _) = reads_until_closed(&mut client);
    let took = signalled.elapsed();
    assert!(
        proxy.wait_exit(STOP).unwrap().success(),
        "{}",
        proxy.stderr()
    );
    (all, took)
}

#[test]
fn sigterm_cuts_a_delay_or_a_gap_in_progress_short() {
    // The drain lifts the faults: what was held goes out at once, then the end, well before
    // --shutdown-timeout.
    let (all, took) = drained_through("latency=10s", b"ping");
    assert_eq!(all, b"ping");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let sent = udsecho_harness::random_payload(64, 3);
    let (all, took) = drained_through("slicer=1,gap=1s", &sent);
    assert!(all == sent, "{all:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// The recording's lines so far, while the proxy runs (a line being written is left out).
fn lines_so_far(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_recording_is_followed_live_and_an_idle_recorder_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let (_upstream, proxy) = echo_behind_proxy(&["--record", record.to_str().unwrap()]);
    let mut client = connect(proxy.socket());
    client.write_all(b"live").unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).unwrap();
    // The connection stays open and nothing more comes: the lines are in the file anyway,
    // as `tail -f` would show them.
    let deadline = Instant::now() + Duration::from_secs(2);
    let texts = loop {
        let texts: Vec<String> = lines_so_far(&record)
            .iter()
            .filter(|l| l["event"] == "data")
            .map(|l| format!("{} {}", l["dir"], l["text"]))
            .collect();
        if texts.len() == 2 || Instant::now() > deadline {
            break texts;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        texts,
        [r#""to_upstream" "live""#, r#""to_client" "live""#],
        "within 2 s, without the proxy stopping"
    );
    // Idle, the writer parks: through a second of nothing it does not wake up (a writer that
    // napped on would wake a thousand times).
    thread::sleep(Duration::from_millis(100));
    let before = writer_wakeups(proxy.pid());
    thread::sleep(Duration::from_secs(1));
    let wakeups = writer_wakeups(proxy.pid()) - before;
    assert!(
        wakeups < 5,
        "the idle writer woke {wakeups} times in a second"
    );
    drop(client);
}

/// How many times the recording's writer thread has slept and been woken.
fn writer_wakeups(pid: u32) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() != "udsecho-record" {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap();
        return line.trim().parse().unwrap();
    }
    panic!("no udsecho-record thread in {pid}");
}

/// An upstream that answers only once it has the whole `want`-byte request, as an HTTP server
/// waits for its headers: a proxy that leaves part of a request in its socket hangs it.
fn upstream_wanting(want: usize) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<Vec<u8>>) {
    upstream_after_check(move |mut stream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut got = vec![0u8; want];
        let read = stream.read_exact(&mut got);
        if read.is_ok() {
            stream.write_all(b"OK").unwrap();
        }
        got.truncate(if read.is_ok() { want } else { 0 });
        got
    })
}

/// The upstream's two-byte answer, if it comes within 5 s.
fn answer_of(client: &mut UnixStream) -> Option<[u8; 2]> {
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = [0u8; 2];
    client.read_exact(&mut answer).ok().map(|()| answer)
}

#[test]
fn a_request_split_by_a_passed_descriptor_reaches_the_upstream_whole() {
    // The kernel ends a stream read at the bytes that carried descriptors: the read is short
    // with more queued behind it, which is not an empty queue.
    let (_dir, path, upstream) = upstream_wanting(20);
    let proxy = proxy_to(&path, &[]);
    let mut client = connect(proxy.socket());
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    send_with_fds(client.as_fd(), b"0123456789", &[pipe_r.as_fd()], None).unwrap();
    client.write_all(b"abcdefghij").unwrap();
    let answered = answer_of(&mut client);
    assert_eq!(upstream.join().unwrap(), b"0123456789abcdefghij");
    assert_eq!(answered, Some(*b"OK"));
}

#[test]
fn a_request_split_by_an_out_of_band_byte_reaches_the_upstream_whole() {
    // A stream read stops at the out-of-band mark (the proxy reads it in line).
    let (_dir, path, upstream) = upstream_wanting(9);
    let proxy = proxy_to(&path, &[]);
    let mut client = connect(proxy.socket());
    client.write_all(b"abcd").unwrap();
    rustix::net::send(&client, b"!", rustix::net::SendFlags::OOB).unwrap();
    client.write_all(b"efgh").unwrap();
    let answered = answer_of(&mut client);
    assert_eq!(upstream.join().unwrap(), b"abcd!efgh");
    assert_eq!(answered, Some(*b"OK"));
}

#[test]
fn a_recording_that_takes_no_more_writes_is_abandoned_at_the_second_signal() {
    // The recording goes to a FIFO whose reader never reads: the writer blocks for good once
    // the pipe is full. SIGTERM drains and then waits for the recording; a second signal
    // must end the proxy anyway, its socket file removed.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stuck.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap()
    };
    let (_upstream, mut proxy) = echo_behind_proxy(&["--record", fifo.to_str().unwrap()]);
    let socket = proxy.socket().to_owned();
    let mut client = connect(&socket);
    let sent = udsecho_harness::random_payload(1 << 20, 9);
    let writer = {
        let mut client = client.try_clone().unwrap();
        let sent = sent.clone();
        thread::spawn(move || {
            client.write_all(&sent).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert!(
        echoed == sent,
        "forwarding goes on while the recording is stuck"
    );
    drop(client);

    proxy.signal(Signal::TERM).unwrap();
    assert!(
        proxy.wait_stderr("events queued (a second signal abandons them)", STOP),
        "{}",
        proxy.stderr()
    );
    assert!(
        !proxy.has_exited(),
        "it waits for the recording after one signal"
    );
    proxy.signal(Signal::TERM).unwrap();
    let status = proxy.wait_exit(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(proxy.stderr().contains("abandoned at the forced shutdown"));
    assert!(!socket.exists(), "the socket file is removed");
}

/// A FIFO at `name` in a new directory.
fn fifo(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join(name);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    (dir, fifo)
}

/// A proxy in front of a raw echo, recording to `record`, started without waiting for it to
/// listen.
fn proxy_recording_to(record: &Path) -> (Server, Server) {
    let upstream = Server::start(["--mode", "raw"]).unwrap();
    let proxy = Server::builder()
        .args(["--upstream".as_ref(), upstream.socket().as_os_str()])
        .args(["--record".as_ref(), record.as_os_str()])
        .no_wait()
        .start()
        .unwrap();
    (upstream, proxy)
}

#[test]
fn a_recording_fifo_nobody_reads_is_waited_for_and_sigterm_ends_the_wait() {
    let (_dir, fifo) = fifo("later.jsonl");
    let (_upstream, mut proxy) = proxy_recording_to(&fifo);
    let socket = proxy.socket().to_owned();
    let want = format!("{}: a FIFO nobody reads yet", fifo.display());
    assert!(proxy.wait_stderr(&want, STOP), "{}", proxy.stderr());
    proxy.signal(Signal::TERM).unwrap();
    let status = proxy.wait_exit(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{status:?}: {}", proxy.stderr());
    assert!(!socket.exists(), "the socket file is removed");
}

#[test]
fn a_recording_fifo_is_written_once_its_reader_comes() {
    let (_dir, fifo) = fifo("live.jsonl");
    let (_upstream, mut proxy) = proxy_recording_to(&fifo);
    assert!(
        proxy.wait_stderr("a FIFO nobody reads yet", STOP),
        "{}",
        proxy.stderr()
    );
    let reader = {
        let fifo = fifo.clone();
        thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    assert!(
        proxy.wait_stderr("listening on", STOP),
        "{}",
        proxy.stderr()
    );
    let mut client = connect(proxy.socket());
    client.write_all(b"through the fifo").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"through the fifo");
    drop(client);
    assert!(proxy.stop(Signal::TERM, STOP).unwrap().success());
    let recorded = reader.join().unwrap();
    assert!(
        recorded.contains(r#""text":"through the fifo"}"#),
        "{recorded}"
    );
}

#[test]
fn record_and_pcap_naming_one_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("both");
    std::fs::write(&file, "kept").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let upstream = Server::start(["--mode", "raw"]).unwrap();
    for (record, pcap) in [(&file, &file), (&file, &link)] {
        std::fs::write(&file, "kept").unwrap();
        let child = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
            .args(["--upstream".as_ref(), upstream.socket().as_os_str()])
            .args(["--record".as_ref(), record.as_os_str()])
            .args(["--pcap".as_ref(), pcap.as_os_str()])
            .args(["--socket".as_ref(), dir.path().join("p.sock").as_os_str()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = udsecho_harness::output_within(child, STOP).unwrap();
        assert_eq!(out.status.code(), Some(1), "{pcap:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!(
            "udsecho-server: {}: cannot start the capture: --record writes this file",
            pcap.display()
        );
        assert!(stderr.contains(&want), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!dir.path().join("p.sock").exists());
        let kept = std::fs::read_to_string(&file).unwrap();
        assert_eq!(kept, "kept", "refused before the file was truncated");
    }
}

#[test]
fn record_and_pcap_may_both_go_to_dev_null() {
    let (_upstream, proxy) = echo_behind_proxy(&["--record", "/dev/null", "--pcap", "/dev/null"]);
    let mut client = connect(proxy.socket());
    client.write_all(b"measured").unwrap();
    let mut buf = [0u8; 8];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"measured");
}

#[test]
fn idle_timeout_closes_a_proxied_connection_nothing_crosses_and_spares_a_busy_one() {
    let (_upstream, proxy) = echo_behind_proxy(&["--idle-timeout", "400ms"]);
    let mut quiet = connect(proxy.socket());
    let mut busy = connect(proxy.socket());
    quiet.write_all(b"once").unwrap();
    let mut buf = [0u8; 4];
    quiet.read_exact(&mut buf).unwrap();
    let opened = Instant::now();
    // The busy one talks every 100 ms for 1.2 s, three idle times.
    while opened.elapsed() < Duration::from_millis(1200) {
        busy.write_all(b"ping").unwrap();
        busy.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping", "the busy connection is still served");
        thread::sleep(Duration::from_millis(100));
    }
    // The quiet one was closed meanwhile: its read ends.
    let mut rest = Vec::new();
    assert_eq!(quiet.read_to_end(&mut rest).unwrap(), 0);
}

/// What comes back through a proxy with `--idle-timeout 400ms` and `fault` for `sent`, read
/// to the end (the proxy's close) or for 10 s.
fn echoed_with_idle_timeout_and(fault: &str, sent: &[u8]) -> Vec<u8> {
    let (_upstream, proxy) = echo_behind_proxy(&["--idle-timeout", "400ms", "--fault", fault]);
    let mut client = connect(proxy.socket());
    client.write_all(sent).unwrap();
    let mut echoed = vec![0u8; sent.len()];
    let mut got = 0;
    while got < sent.len() {
        match client.read(&mut echoed[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    echoed.truncate(got);
    echoed
}

#[test]
fn idle_timeout_counts_each_piece_that_crosses_not_only_whole_reads() {
    // 16 KiB in 256-byte slices 20 ms apart: 1.3 s of bytes crossing, none of it idle.
    let sent = udsecho_harness::random_payload(16 * 1024, 5);
    assert!(echoed_with_idle_timeout_and("slicer=256,gap=20ms", &sent) == sent);
}

#[test]
fn idle_timeout_does_not_count_the_time_a_fault_holds_bytes_back() {
    // The echo is in the proxy, held back by `latency` for longer than the idle time.
    assert_eq!(
        echoed_with_idle_timeout_and("latency=1s", b"hello"),
        b"hello"
    );
}

#[test]
fn the_smallest_idle_timeout_closes_a_quiet_proxied_connection_at_once() {
    let (_upstream, proxy) = echo_behind_proxy(&["--idle-timeout", "3ns"]);
    let mut quiet = connect(proxy.socket());
    quiet
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        quiet.read_to_end(&mut rest).unwrap(),
        0,
        "closed, not left open"
    );
}

#[test]
fn a_new_recording_is_readable_by_its_owner_alone() {
    // What crossed (tokens, passwords) is in it, and the server clears its umask for the
    // socket's mode: the files get an explicit one.
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("seen.jsonl");
    let pcap = dir.path().join("seen.pcapng");
    let (_upstream, proxy) = echo_behind_proxy(&[
        "--record",
        jsonl.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    use std::os::unix::fs::PermissionsExt;
    for file in [&jsonl, &pcap] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
    drop(proxy);
}

#[test]
fn a_proxy_whose_upstream_is_its_own_socket_is_refused_in_one_line() {
    let dir = short_temp_dir();
    let own = dir.path().join("p.sock");
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&own, &link).unwrap();
    for upstream in [own.as_os_str(), link.as_os_str(), "@loop.sock".as_ref()] {
        let socket = if upstream == "@loop.sock" {
            "@loop.sock".as_ref()
        } else {
            own.as_os_str()
        };
        let child = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
            .args(["--socket".as_ref(), socket])
            .args(["--upstream".as_ref(), upstream])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = udsecho_harness::output_within(child, STOP).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{upstream:?}: {stderr}");
        assert!(stderr.contains("is this proxy's own socket"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!own.exists(), "the socket file is removed");
    }
}
