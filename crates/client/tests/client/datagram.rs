//! `--type datagram` (`-u`): each datagram answered by one, against the harness's datagram
//! peer (socat's `UNIX-RECVFROM` is exercised by `cargo xtask nc-compat`). Replies come back
//! to an autobound abstract address: nothing to create or remove on disk.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use udsecho_harness::{
    Answer, DatagramPeer, Sender, SeqpacketPeer, Server, random_payload, run_client, short_temp_dir,
};

use crate::{LIMIT, client, one_line, wait_within};

const SIZES: [usize; 3] = [1, 1000, 60_000];

#[test]
fn datagram_send_gets_datagrams_of_1_1000_and_60000_bytes_back_whole_and_in_order() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    for size in SIZES {
        let message = "d".repeat(size);
        crate::send_twice(peer.path(), "datagram", &message);
    }
    let sizes: Vec<usize> = peer.received().iter().map(|d| d.bytes.len()).collect();
    assert_eq!(
        sizes,
        [1, 1, 1000, 1000, 60_000, 60_000],
        "one datagram per send"
    );
}

#[test]
fn u_is_short_for_type_datagram() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    client(peer.path())
        .args(["-u", "send", "-n", "1", "-m", "via -u"])
        .assert()
        .success()
        .stdout("sent: via -u\nreceived: via -u\n");
    assert_eq!(peer.received().len(), 1);
}

#[test]
fn datagram_pipe_sends_each_line_as_one_datagram_and_prints_every_reply() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    let mut input = b"one\ntwo\n\n".to_vec();
    let long_line = random_payload(60_000, 1)
        .into_iter()
        .filter(|&b| b != b'\n')
        .collect::<Vec<u8>>();
    input.extend_from_slice(&long_line);
    input.extend_from_slice(b"\nlast, without a newline");
    let socket = peer.path().to_str().unwrap();
    let run = run_client(["-u", socket], &input, LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let datagrams: Vec<Vec<u8>> = peer.received().into_iter().map(|d| d.bytes).collect();
    let mut long = long_line.clone();
    long.push(b'\n');
    assert_eq!(
        datagrams,
        [
            b"one\n".to_vec(),
            b"two\n".to_vec(),
            b"\n".to_vec(),
            long,
            b"last, without a newline".to_vec()
        ]
    );
    assert!(run.stdout == input, "every reply printed, in order");
}

#[test]
fn datagram_pipe_cuts_a_line_longer_than_64_kib_into_datagrams_of_64_kib() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    let input = vec![b'x'; 150_000];
    let run = run_client(["-u", peer.path().to_str().unwrap()], &input, LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let sizes: Vec<usize> = peer.received().iter().map(|d| d.bytes.len()).collect();
    assert_eq!(sizes, [65_536, 65_536, 150_000 - 2 * 65_536]);
    assert_eq!(run.stdout.len(), input.len());
}

#[test]
fn datagram_pipe_fails_after_timeout_naming_the_replies_that_never_came() {
    let dir = short_temp_dir();
    // Drops the second datagram: its reply never comes.
    let peer = DatagramPeer::start(&dir.path().join("dg.sock"), |i, bytes| match i {
        1 => Answer::Ignore,
        _ => Answer::Reply(bytes.to_vec()),
    })
    .unwrap();
    let socket = peer.path().to_str().unwrap();
    let run = run_client(["-u", "--timeout", "500ms", socket], b"a\nb\nc\n", LIMIT).unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.stdout, b"a\nc\n", "the replies that came are printed");
    assert_eq!(
        one_line(run.stderr.as_bytes()),
        format!(
            "udsecho-client: {socket}: timed out after 500ms waiting for 1 of 3 replies (datagrams can be dropped)"
        )
    );
}

#[test]
fn datagram_send_says_how_many_replies_were_lost() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::start(&dir.path().join("dg.sock"), |i, bytes| match i {
        1 => Answer::Ignore,
        _ => Answer::Reply(bytes.to_vec()),
    })
    .unwrap();
    let out = client(peer.path())
        .args(["-u", "--timeout", "1s", "send", "-n", "3", "-i", "10ms"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    // Every echo is alike, so which one is missing cannot be told: how many can.
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for 1 of 3 replies (datagrams can be dropped)",
            peer.path().display()
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("received: ")
            .count(),
        2
    );
}

#[test]
fn datagram_send_detects_a_reply_that_differs_and_exits_3() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::start(&dir.path().join("dg.sock"), |_, bytes| {
        Answer::Reply(bytes[..bytes.len() - 1].to_vec())
    })
    .unwrap();
    let out = client(peer.path())
        .args(["-u", "send", "-n", "1", "-m", "abcdef"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: echo mismatch on message 1 at offset 5: sent \"abcdef\", received \"abcde\"",
            peer.path().display()
        )
    );
}

#[test]
fn datagram_send_reports_a_server_that_went_away() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::start(&dir.path().join("dg.sock"), |_, bytes| {
        Answer::ReplyThenClose(bytes.to_vec())
    })
    .unwrap();
    // The peer closes as soon as it has answered; the next message is 200 ms later.
    let out = client(peer.path())
        .args(["-u", "send", "-n", "3", "-i", "200ms"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: the server went away (its socket was closed after 1 sent and 1 echoed)",
            peer.path().display()
        )
    );
}

#[test]
fn the_client_receives_on_an_autobound_abstract_address_and_leaves_no_file() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    let before: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    client(peer.path())
        .args(["-u", "send", "-n", "1"])
        .assert()
        .success();
    let received = peer.received();
    let Sender::Abstract(name) = &received[0].sender else {
        panic!(
            "the reply address is {:?}, not abstract",
            received[0].sender
        );
    };
    // Linux autobind: five hex digits in the abstract namespace.
    assert!(
        name.len() == 5 && name.iter().all(u8::is_ascii_hexdigit),
        "{name:?}"
    );
    let after: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(
        new.iter().all(|p| !p.to_string_lossy().contains("udsecho")),
        "{new:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the peer's socket"
    );
}

#[test]
fn datagram_bench_measures_round_trips() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    for pipeline in ["1", "4"] {
        let out = client(peer.path())
            .args(["-u", "bench", "-c", "2", "-d", "200ms", "--size", "1000"])
            .args(["--pipeline", pipeline, "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(report["socket_type"], "datagram", "{report}");
        assert!(report["round_trips"].as_u64().unwrap() > 0, "{report}");
    }
}

#[test]
fn datagram_against_a_stream_or_seqpacket_server_names_the_type_it_has() {
    let dir = short_temp_dir();
    let stream = dir.path().join("stream.sock");
    let _listener = UnixListener::bind(&stream).unwrap();
    let seqpacket = SeqpacketPeer::echo(&dir.path().join("sp.sock")).unwrap();
    for (path, theirs) in [
        (stream.as_path(), "stream"),
        (seqpacket.path(), "seqpacket"),
    ] {
        let out = client(path)
            .args(["-u", "send", "-n", "1"])
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert_eq!(
            one_line(&out.stderr),
            format!(
                "udsecho-client: {}: not a datagram socket: the server there is a {theirs} socket (try --type {theirs})",
                path.display()
            )
        );
    }
}

#[test]
fn datagram_connect_errors_read_as_for_stream() {
    let dir = short_temp_dir();
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a socket").unwrap();
    for (path, cause) in [
        (
            &missing,
            format!(
                "no such socket (is the server running? start it with `udsecho-server -s {}`)",
                missing.display()
            ),
        ),
        (
            &stale,
            "connection refused (a stale socket file with no server behind it; start the server, it replaces the file)"
                .to_owned(),
        ),
        (&plain, "not a socket".to_owned()),
    ] {
        let out = client(path)
            .arg("-u")
            .write_stdin("x\n")
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert_eq!(
            one_line(&out.stderr),
            format!("udsecho-client: {}: {cause}", path.display())
        );
    }
}

#[test]
fn datagram_permission_denied_names_the_path() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    let out = crate::client_without_access(peer.path())
        .arg("-u")
        .write_stdin("x\n")
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: permission denied (check the socket's mode and owner, or the server's --socket-mode)",
            peer.path().display()
        )
    );
    assert!(peer.received().is_empty());
}

#[test]
fn datagram_pipe_reports_a_server_that_went_away() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    let path = peer.path().to_owned();
    let mut child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .arg("-u")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let mut echo = [0u8; 6];
    stdout.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"first\n");
    // The server's socket closes (its file stays); the next line has nowhere to go.
    drop(peer);
    stdin.write_all(b"second\n").unwrap();
    let out = wait_within(child, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: the server went away (its socket was closed after 1 datagram from stdin)",
            path.display()
        )
    );
}

#[test]
fn a_message_over_the_kernel_limit_says_what_the_limit_is() {
    let dir = short_temp_dir();
    let peer = DatagramPeer::echo(&dir.path().join("dg.sock")).unwrap();
    // The limit is the socket's send buffer less 32 bytes; a new socket has the default.
    let probe = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let max = rustix::net::sockopt::socket_send_buffer_size(&probe).unwrap() - 32;
    let size = (max + 1).to_string();
    let out = client(peer.path())
        .args(["-u", "bench", "-d", "1s", "--size", &size])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: a message of {size} bytes is more than a datagram socket can send here (at most {max} bytes)",
            peer.path().display()
        )
    );
    assert!(peer.received().is_empty());
}

#[test]
fn datagram_against_udsecho_server_gets_every_reply_whole() {
    let server = Server::start(["--type", "datagram"]).unwrap();
    let socket = server.socket().to_str().unwrap();
    for size in SIZES {
        let message = "g".repeat(size);
        let run = run_client(
            ["-u", socket, "send", "-n", "3", "-i", "1ms", "-m", &message],
            b"",
            LIMIT,
        )
        .unwrap();
        assert!(run.status.success(), "{size} B: {}", run.stderr);
        assert_eq!(run.stderr, "3 sent, 3 echoed intact\n", "{size} B");
    }
    // udsecho-server drops a reply it cannot queue for a client that is not reading: the
    // pipe must never let that happen to it, however fast stdin comes.
    let lines: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let run = run_client(["-u", socket], lines.as_bytes(), LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout_text() == lines,
        "{} of {} bytes came back",
        run.stdout.len(),
        lines.len()
    );
    let out = client(server.socket())
        .args([
            "-u",
            "bench",
            "-c",
            "2",
            "-d",
            "200ms",
            "--pipeline",
            "4",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(report["round_trips"].as_u64().unwrap() > 0, "{report}");
}
