//! `--type seqpacket`: one message per send, each reply one message, against a seqpacket
//! echo peer (the harness's; socat's `type=5` is exercised by `cargo xtask nc-compat`).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use predicates::prelude::*;
use udsecho_harness::{
    SeqpacketPeer, Server, random_payload, run_client, seqpacket_socket, short_temp_dir,
};

use crate::{LIMIT, bare_client, client, one_line, wait_within};

const SIZES: [usize; 3] = [1, 1000, 60_000];

#[test]
fn seqpacket_send_gets_messages_of_1_1000_and_60000_bytes_back_whole() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::echo(&dir.path().join("sp.sock")).unwrap();
    for size in SIZES {
        let message = "m".repeat(size);
        let out = crate::send_twice(peer.path(), "seqpacket", &message);
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "2 sent, 2 echoed intact\n"
        );
    }
    let sizes: Vec<usize> = peer.received().iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [1, 1, 1000, 1000, 60_000, 60_000],
        "one message per send"
    );
}

#[test]
fn seqpacket_pipe_sends_each_read_as_one_message_and_prints_each_reply() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::echo(&dir.path().join("sp.sock")).unwrap();
    let mut child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .args(["--type", "seqpacket"])
        .arg(peer.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // One write at a time, each echo read before the next write: each write is one read
    // for the client, so one message.
    for (i, size) in SIZES.into_iter().enumerate() {
        let message = random_payload(size, i as u64);
        stdin.write_all(&message).unwrap();
        let mut echo = vec![0u8; size];
        stdout.read_exact(&mut echo).unwrap();
        assert!(echo == message, "the echo of {size} B differs");
    }
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = wait_within(child, LIMIT);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(out.status.success());
    assert!(rest.is_empty(), "{} bytes more", rest.len());
    let sizes: Vec<usize> = peer.received().iter().map(Vec::len).collect();
    assert_eq!(sizes, SIZES, "one message per read, boundaries kept");
}

#[test]
fn seqpacket_pipe_half_closes_on_stdin_eof_and_prints_replies_until_the_server_closes() {
    // A peer that answers only after our EOF: works only if the client shuts down its
    // write side and keeps reading.
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::start(&dir.path().join("sp.sock"), |conn, record| {
        let mut count = 0;
        while let Ok(Some(message)) = conn.recv() {
            record(&message);
            count += 1;
        }
        let _ = conn.send(format!("got {count} messages\n").as_bytes());
        let _ = conn.send(b"bye\n");
    })
    .unwrap();
    client(peer.path())
        .args(["--type", "seqpacket"])
        .write_stdin("hello")
        .assert()
        .success()
        .stdout("got 1 messages\nbye\n");
    assert_eq!(peer.received(), [b"hello".to_vec()]);
}

#[test]
fn seqpacket_bench_measures_round_trips_of_whole_messages() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::echo(&dir.path().join("sp.sock")).unwrap();
    for pipeline in ["1", "4"] {
        let out = client(peer.path())
            .args([
                "--type",
                "seqpacket",
                "bench",
                "-d",
                "200ms",
                "--size",
                "1000",
            ])
            .args(["--pipeline", pipeline, "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(report["socket_type"], "seqpacket", "{report}");
        assert!(report["round_trips"].as_u64().unwrap() > 0, "{report}");
    }
    assert!(peer.received().iter().all(|m| m.len() == 1000));
}

#[test]
fn seqpacket_send_reports_a_server_that_never_answers_within_timeout() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::start(&dir.path().join("sp.sock"), |conn, _| {
        while let Ok(Some(_)) = conn.recv() {}
    })
    .unwrap();
    let out = client(peer.path())
        .args([
            "--type",
            "seqpacket",
            "--timeout",
            "300ms",
            "send",
            "-n",
            "1",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 300ms waiting for the echo of message 1",
            peer.path().display()
        )
    );
}

#[test]
fn seqpacket_send_reports_a_server_that_hangs_up_as_closed_early() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::start(&dir.path().join("sp.sock"), |conn, _| {
        if let Ok(Some(message)) = conn.recv() {
            let _ = conn.send(&message);
        }
    })
    .unwrap();
    let out = client(peer.path())
        .args(["--type", "seqpacket", "send", "-n", "3", "-i", "50ms"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with(&format!(
            "udsecho-client: {}: the server closed the connection early",
            peer.path().display()
        )),
        "{line}"
    );
    assert!(line.contains("1 echoed"), "{line}");
}

#[test]
fn seqpacket_against_a_stream_server_names_the_type_it_has() {
    let dir = short_temp_dir();
    let path = dir.path().join("stream.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let out = client(&path)
        .args(["--type", "seqpacket", "send", "-n", "1"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: not a seqpacket socket: the server there is a stream socket (try --type stream)",
            path.display()
        )
    );
}

#[test]
fn stream_against_a_seqpacket_server_names_the_type_it_has() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::echo(&dir.path().join("sp.sock")).unwrap();
    let out = client(peer.path())
        .write_stdin("hello")
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: not a stream socket: the server there is a seqpacket socket (try --type seqpacket)",
            peer.path().display()
        )
    );
}

#[test]
fn seqpacket_connect_errors_read_as_for_stream() {
    let dir = short_temp_dir();
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    {
        let fd = seqpacket_socket().unwrap();
        rustix::net::bind(
            &fd,
            &rustix::net::SocketAddrUnix::new(stale.as_path()).unwrap(),
        )
        .unwrap();
    }
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
    ] {
        let out = client(path)
            .args(["--type", "seqpacket"])
            .write_stdin("x")
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
fn framed_makes_no_sense_with_seqpacket_or_datagram() {
    for kind in ["seqpacket", "datagram"] {
        for args in [
            &["--framed"][..],
            &["send", "--framed"],
            &["bench", "--mode", "framed"],
        ] {
            bare_client()
                .args(["-s", "/nonexistent/never-used.sock", "--type", kind])
                .args(args)
                .assert()
                .code(2)
                .stderr(predicate::str::contains(format!(
                    "--framed makes no sense with --type {kind}"
                )))
                .stderr(predicate::str::contains("panicked").not());
        }
    }
}

#[test]
fn seqpacket_pipe_fails_when_the_server_closes_without_reading_stdin() {
    let dir = short_temp_dir();
    let peer = SeqpacketPeer::start(&dir.path().join("sp.sock"), |conn, _| drop(conn)).unwrap();
    let out = client(peer.path())
        .args(["--type", "seqpacket"])
        .write_stdin("ping\n")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with(&format!(
            "udsecho-client: {}: the server closed the connection early",
            peer.path().display()
        )),
        "{line}"
    );
    // It read nothing: the likely causes are named (#34), not `it read nothing from stdin`.
    // Whether the client's send or its read meets the close first is timing: the send says
    // "before reading anything", the read "before answering anything".
    assert!(
        (line.contains("before reading anything") || line.contains("before answering anything"))
            && line.contains("--allow-uid")
            && line.contains("limit"),
        "names the likely causes: {line}"
    );
}

#[test]
fn seqpacket_against_udsecho_server_keeps_every_message_whole() {
    let server = Server::start(["--type", "seqpacket"]).unwrap();
    let socket = server.socket().to_str().unwrap();
    for size in SIZES {
        let message = "s".repeat(size);
        let run = run_client(
            [
                "--type",
                "seqpacket",
                socket,
                "send",
                "-n",
                "3",
                "-i",
                "1ms",
                "-m",
                &message,
            ],
            b"",
            LIMIT,
        )
        .unwrap();
        assert!(run.status.success(), "{size} B: {}", run.stderr);
        assert_eq!(run.stderr, "3 sent, 3 echoed intact\n", "{size} B");
    }
    let data = random_payload(1 << 20, 7);
    let run = run_client(["--type", "seqpacket", socket], &data, LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stdout == data, "a binary mebibyte through the pipe");
    let out = client(server.socket())
        .args([
            "--type",
            "seqpacket",
            "bench",
            "-c",
            "2",
            "-d",
            "200ms",
            "--pipeline",
            "4",
        ])
        .args(["--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(report["round_trips"].as_u64().unwrap() > 0, "{report}");
}
