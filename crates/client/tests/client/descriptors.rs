//! `--fd`: descriptors passed with each message (`SCM_RIGHTS`) against the real server in
//! every socket type and mode, `--fd N` with a descriptor the client inherits from a shell,
//! the usage errors, and `send`'s exit 3 against peers that drop descriptors or return other
//! files (small servers in test threads, reading with `recvmsg`).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use predicates::prelude::*;
use udsecho_harness::Server;
use udsecho_harness::descriptors::{recv_with_fds, send_with_fds};

use crate::{LIMIT, bare_client, client, fake_server, one_line, usage_error};

/// The server flags and client flags of each socket type and mode.
const TRANSPORTS: [(&[&str], &[&str]); 4] = [
    (&[], &[]),
    (&[], &["--framed"]),
    (&["--type", "seqpacket"], &["--type", "seqpacket"]),
    (&["--type", "datagram"], &["--type", "datagram"]),
];

/// Two small files to pass, in a fresh directory.
fn two_files() -> (tempfile::TempDir, [std::path::PathBuf; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let files = [dir.path().join("first.txt"), dir.path().join("second.txt")];
    for file in &files {
        std::fs::write(file, b"contents").unwrap();
    }
    (dir, files)
}

/// The client run by bash, so that it can inherit descriptors: `script` is run first (e.g.
/// `exec 5<"$1"`), then the client with `args`; `$1` is `file`.
fn client_in_bash(script: &str, file: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{script}; exec \"$0\" \"${{@:2}}\""))
        .arg(udsecho_harness::binary("udsecho-client"))
        .arg(file)
        .args(args)
        .env_remove("UDSECHO_SOCKET")
        .timeout(LIMIT);
    cmd
}

#[test]
fn send_with_fd_paths_gets_the_same_open_files_back_in_every_socket_type_and_mode() {
    let (_dir, [first, second]) = two_files();
    for (server_args, client_args) in TRANSPORTS {
        let server = Server::start(server_args.iter().chain(&["-v"])).unwrap();
        let out = client(server.socket())
            .args(client_args)
            .args(["send", "-n", "3", "-i", "1ms", "-m", "hi", "--fd"])
            .arg(&first)
            .arg("--fd")
            .arg(&second)
            .assert()
            .success()
            .get_output()
            .clone();
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "3 sent, 3 echoed intact\n",
            "{client_args:?}"
        );
        let described = format!(
            "[with 2 descriptors: file {}, file {}]",
            first.display(),
            second.display()
        );
        // The server may log an echo after sending it: wait for all three lines.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server.stderr().matches(&described).count() < 3
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            server.stderr().matches(&described).count(),
            3,
            "{client_args:?}: each message carries {described}: {}",
            server.stderr()
        );
    }
}

#[test]
fn send_passes_253_descriptors_with_each_message_the_most_one_message_carries() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let mut cmd = client(server.socket());
    cmd.args(["send", "-n", "2", "-i", "1ms"]);
    for _ in 0..253 {
        cmd.args(["--fd", "/dev/null"]);
    }
    cmd.assert().success().stderr("2 sent, 2 echoed intact\n");
}

#[test]
fn the_pipe_passes_fd_paths_with_each_message_in_every_socket_type_and_mode() {
    let (_dir, [first, _]) = two_files();
    for (server_args, client_args) in TRANSPORTS {
        let server = Server::start(server_args.iter().chain(&["-v"])).unwrap();
        client(server.socket())
            .args(client_args)
            .arg("pipe")
            .arg("--fd")
            .arg(&first)
            .write_stdin("one\n")
            .assert()
            .success()
            .stdout("one\n")
            .stderr("");
        let described = format!("[with 1 descriptor: file {}]", first.display());
        assert!(
            server.wait_stderr(&described, Duration::from_secs(5)),
            "{client_args:?}: the server saw no {described}: {}",
            server.stderr()
        );
    }
    // Without a subcommand, as `nc -U` is used.
    let server = Server::start(["-v"]).unwrap();
    client(server.socket())
        .arg("--fd")
        .arg(&first)
        .write_stdin("two\n")
        .assert()
        .success()
        .stdout("two\n");
    assert!(server.wait_stderr("[with 1 descriptor: file ", Duration::from_secs(5)));
}

#[test]
fn an_inherited_descriptor_number_is_passed_as_the_same_open_file() {
    let (_dir, [first, _]) = two_files();
    let server = Server::start(["-v"]).unwrap();
    let socket = server.socket().to_str().unwrap();
    // No file named 5 exists where the client runs: 5 can only be the descriptor.
    client_in_bash(
        "exec 5<\"$1\"; cd /",
        &first,
        &[
            socket, "send", "-n", "2", "-i", "1ms", "-m", "hi", "--fd", "5",
        ],
    )
    .assert()
    .success()
    .stderr("2 sent, 2 echoed intact\n");
    let described = format!("echo: hi [with 1 descriptor: file {}]", first.display());
    assert!(
        server.wait_stderr(&described, Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_descriptor_number_that_is_not_open_is_a_usage_error_naming_it() {
    let out = client_in_bash(
        "exec 9<&-",
        Path::new("unused"),
        &["-s", "/nonexistent/never-used.sock", "send", "--fd", "9"],
    )
    .assert()
    .code(2)
    .get_output()
    .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().next(),
        Some("error: --fd 9: descriptor 9 is not open"),
        "{stderr}"
    );
}

#[test]
fn an_fd_path_that_cannot_be_opened_is_a_usage_error_naming_it_and_why() {
    let stderr = usage_error(&["pipe", "--fd", "/nonexistent/passed.txt"]);
    assert_eq!(
        stderr.lines().next(),
        Some("error: --fd /nonexistent/passed.txt: No such file or directory (os error 2)"),
        "{stderr}"
    );
}

#[test]
fn more_fds_than_one_message_carries_is_a_usage_error() {
    let mut args = vec!["send"];
    for _ in 0..254 {
        args.extend(["--fd", "/dev/null"]);
    }
    let stderr = usage_error(&args);
    assert_eq!(
        stderr.lines().next(),
        Some(
            "error: --fd is given 254 times; one message carries at most 253 descriptors \
             (SCM_MAX_FD)"
        ),
        "{stderr}"
    );
}

#[test]
fn fd_is_refused_with_bench_and_help_says_how_to_name_a_file_called_3() {
    let stderr = usage_error(&["--fd", "/dev/null", "bench"]);
    assert!(
        stderr.starts_with("error: --fd goes with pipe and send; bench passes no descriptors"),
        "{stderr}"
    );
    bare_client()
        .args(["send", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--fd <PATH|N>").and(predicate::str::contains("./3")));
}

/// A stream server in a thread that reads with room for descriptors and answers each read
/// with its bytes and what `answer` makes of the descriptors that came.
fn descriptor_server(
    answer: impl Fn(Vec<OwnedFd>) -> Vec<OwnedFd> + Send + 'static,
) -> (tempfile::TempDir, std::path::PathBuf) {
    fake_server(move |stream: UnixStream| {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(got) = recv_with_fds(stream.as_fd(), &mut buf) {
            if got.len == 0 {
                break;
            }
            let back = answer(got.fds);
            let back: Vec<_> = back.iter().map(|fd| fd.as_fd()).collect();
            if send_with_fds(stream.as_fd(), &buf[..got.len], &back, None).is_err() {
                break;
            }
        }
    })
}

fn send_one_with(socket: &Path, file: &Path) -> String {
    let out = client(socket)
        .args(["send", "-n", "1", "-m", "hi", "--fd"])
        .arg(file)
        .assert()
        .code(3)
        .get_output()
        .clone();
    one_line(&out.stderr)
}

#[test]
fn send_exits_3_when_the_server_drops_the_descriptors() {
    let (_dir, [first, _]) = two_files();
    // A plain echo, as nc or socat: its `read` makes the kernel close the descriptors.
    let (_sock_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        send_one_with(&path, &first),
        format!(
            "udsecho-client: {}: descriptor mismatch on message 1: --fd {} did not come back \
             with the echo (the server dropped it)",
            path.display(),
            first.display()
        )
    );
}

#[test]
fn send_exits_3_when_another_open_file_of_the_same_path_comes_back() {
    let (_dir, [first, _]) = two_files();
    // The same file, opened again: same inode, another open file description.
    let reopen = first.clone();
    let (_sock_dir, path) = descriptor_server(move |fds| {
        fds.iter()
            .map(|_| OwnedFd::from(std::fs::File::open(&reopen).unwrap()))
            .collect()
    });
    assert_eq!(
        send_one_with(&path, &first),
        format!(
            "udsecho-client: {}: descriptor mismatch on message 1: --fd {} came back as a \
             different file (not the open file sent)",
            path.display(),
            first.display()
        )
    );
}

#[test]
fn send_exits_3_when_more_descriptors_come_back_than_were_sent() {
    let (_dir, [first, _]) = two_files();
    let (_sock_dir, path) = descriptor_server(|fds| {
        let twice: Vec<OwnedFd> = fds.iter().map(|fd| fd.try_clone().unwrap()).collect();
        fds.into_iter().chain(twice).collect()
    });
    assert_eq!(
        send_one_with(&path, &first),
        format!(
            "udsecho-client: {}: descriptor mismatch on message 1: 2 descriptors came back, \
             more than the 1 sent",
            path.display()
        )
    );
}

#[test]
fn descriptors_the_client_cannot_take_back_are_an_error_that_says_so() {
    // 60 descriptors passed, a limit of 90: room to start (about 70 in use: the 60, stdio,
    // the runtime, the socket, and whatever the test inherited), not for the 60 coming back,
    // so the kernel closes some and says so (MSG_CTRUNC).
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    let mut args = vec![socket, "send", "-n", "1"];
    for _ in 0..60 {
        args.extend(["--fd", "/dev/null"]);
    }
    let out = client_in_bash("ulimit -n 90", Path::new("unused"), &args)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {socket}: the client's descriptor limit was reached: the kernel \
             closed descriptors the server sent back (raise `ulimit -n`)"
        )
    );
}

/// The same in the raw pipe: the bytes that came with the descriptors the client could not
/// take still reach stdout before the error (they were dropped before).
#[test]
fn the_pipe_writes_the_bytes_before_saying_descriptors_were_lost() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    let mut args = vec![socket];
    for _ in 0..60 {
        args.extend(["--fd", "/dev/null"]);
    }
    let out = client_in_bash("ulimit -n 90", Path::new("unused"), &args)
        .write_stdin("every byte\n")
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "every byte\n");
    assert!(
        one_line(&out.stderr).ends_with(
            "the client's descriptor limit was reached: the kernel \
             closed descriptors the server sent back (raise `ulimit -n`)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP connection whose last close waits out `linger` (`SO_LINGER`): its unsent data can
/// never drain, since the far end (in the listener's backlog, kept alive with it) never
/// reads. What a hostile server can hand back as a descriptor.
fn lingering_tcp(linger: Duration) -> (std::net::TcpListener, std::net::TcpStream) {
    use rustix::net::sockopt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
    let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    sockopt::set_socket_send_buffer_size(&tcp, 4096).unwrap();
    tcp.set_nonblocking(true).unwrap();
    loop {
        match (&tcp).write(&[b'x'; 4096]) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the TCP connection: {e}"),
        }
    }
    sockopt::set_socket_linger(&tcp, Some(linger)).unwrap();
    (listener, tcp)
}

/// How long a lingering socket handed back would hold up a client that closes it itself.
const LINGER: Duration = Duration::from_secs(12);

/// A stream server that echoes each read with a lingering TCP socket attached instead of the
/// descriptors that came (its own copy closed: the client's is the last).
fn lingering_server() -> (tempfile::TempDir, std::path::PathBuf) {
    let keep = std::sync::Mutex::new(Vec::new());
    descriptor_server(move |_fds| {
        let (listener, tcp) = lingering_tcp(LINGER);
        keep.lock().unwrap().push(listener);
        vec![OwnedFd::from(tcp)]
    })
}

/// A framed server: answers the handshake, then each Data frame as `answer` says (given the
/// socket and the frame's payload). Frames are read with their descriptors, which it drops.
fn framed_server(
    answer: impl Fn(&UnixStream, &[u8]) -> std::io::Result<()> + Send + 'static,
) -> (tempfile::TempDir, std::path::PathBuf) {
    use udsecho_proto::{DEFAULT_MAX_FRAME, Frame, Hello, PREAMBLE};
    fake_server(move |stream: UnixStream| {
        let mut input = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut greeted = false;
        loop {
            // Whole frames first (after the preamble).
            let start = if greeted { 0 } else { PREAMBLE.len() };
            if input.len() >= start + 4 {
                let len = u32::from_be_bytes(input[start..start + 4].try_into().unwrap()) as usize;
                if input.len() >= start + 4 + len {
                    let frame: Vec<u8> = input.drain(..start + 4 + len).skip(start).collect();
                    let reply = if greeted {
                        answer(&stream, &frame[5..])
                    } else {
                        greeted = true;
                        let mut hello = bytes::BytesMut::new();
                        Frame::Hello(Hello::new(DEFAULT_MAX_FRAME, "fake"))
                            .encode(&mut hello, DEFAULT_MAX_FRAME)
                            .unwrap();
                        (&stream).write_all(&hello)
                    };
                    if reply.is_err() {
                        return;
                    }
                    continue;
                }
            }
            match recv_with_fds(stream.as_fd(), &mut buf) {
                Ok(got) if got.len > 0 => input.extend_from_slice(&buf[..got.len]),
                _ => return,
            }
        }
    })
}

/// A Data frame's header: its length (the kind byte and `payload` bytes) and kind.
fn data_header(payload: u32) -> [u8; 5] {
    let [a, b, c, d] = (payload + 1).to_be_bytes();
    [a, b, c, d, 0x01]
}

/// #29 row 6: the client closed what came back on its own thread, so a server could hand back
/// a socket whose close lingers (`SO_LINGER` with unsent data) and hold the client past its
/// `--timeout` (`send` exited 3 after 21 s with `--timeout 3s`; the framed send and the pipe
/// after 20 s). What it does not keep is closed aside, as the server does.
#[test]
fn a_lingering_socket_handed_back_does_not_hold_the_client_past_its_timeout() {
    let within = Duration::from_secs(6);
    // send, raw: the socket is not the file sent (exit 3).
    let (_dir, path) = lingering_server();
    let started = std::time::Instant::now();
    let out = client(&path)
        .args([
            "--timeout",
            "3s",
            "send",
            "-n",
            "1",
            "-m",
            "hi",
            "--fd",
            "/dev/null",
        ])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert!(
        started.elapsed() < within,
        "send took {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    // send, framed.
    let keep = std::sync::Mutex::new(Vec::new());
    let (_dir, path) = framed_server(move |stream, payload| {
        let (listener, tcp) = lingering_tcp(LINGER);
        keep.lock().unwrap().push(listener);
        let mut frame = data_header(payload.len() as u32).to_vec();
        frame.extend_from_slice(payload);
        send_with_fds(stream.as_fd(), &frame, &[tcp.as_fd()], None).map(drop)
    });
    let started = std::time::Instant::now();
    client(&path)
        .args(["--timeout", "3s", "--framed", "send", "-n", "1", "-m", "hi"])
        .args(["--fd", "/dev/null"])
        .assert()
        .code(3);
    assert!(
        started.elapsed() < within,
        "framed send took {:?}",
        started.elapsed()
    );
    // The raw pipe closes what comes back, then ends at the server's EOF.
    let (_dir, path) = lingering_server();
    let started = std::time::Instant::now();
    client(&path)
        .args(["--timeout", "3s", "--fd", "/dev/null"])
        .write_stdin("hi\n")
        .assert()
        .success()
        .stdout("hi\n");
    assert!(
        started.elapsed() < within,
        "the pipe took {:?}",
        started.elapsed()
    );
}

/// What a server that floods descriptors does after the first Data frame: announces an echo
/// of 1 MB, then sends it a byte at a time, each byte with 253 descriptors (of one file), 40
/// times (10,120 descriptors), then waits for the client to go.
fn flooding_server() -> (tempfile::TempDir, std::path::PathBuf) {
    framed_server(|stream, _payload| {
        let file = std::fs::File::open("/dev/null")?;
        let fds = [file.as_fd(); 253];
        send_with_fds(stream.as_fd(), &data_header(1_000_000), &[], None)?;
        for _ in 0..40 {
            send_with_fds(stream.as_fd(), b"x", &fds, None)?;
        }
        let mut rest = [0u8; 1024];
        while (&*stream).read(&mut rest).is_ok_and(|n| n > 0) {}
        Err(std::io::ErrorKind::ConnectionAborted.into())
    })
}

/// #29 row 7: in framed mode the client kept every descriptor that came back until the frame
/// they came with was complete: a server returning 253 per byte of an endless frame made it
/// hold its whole descriptor limit (19,987) before it gave up. `send` now stops at the first
/// descriptor that cannot be one it sent (exit 3), and the framed pipe closes what comes back
/// as it comes.
#[test]
fn a_framed_flood_of_descriptors_is_stopped_at_the_first_one() {
    let (_dir, path) = flooding_server();
    let started = std::time::Instant::now();
    let out = client(&path)
        .args(["--timeout", "5s", "--framed", "send", "-n", "1", "-m", "hi"])
        .args(["--fd", "/dev/null"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert!(
        one_line(&out.stderr).ends_with("253 descriptors came back, more than the 1 sent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // The framed pipe keeps none of them: its open descriptors stay far below the 10,120 it
    // held before. Each read's 253 are closed on a thread of their own, which on a busy
    // machine lags the reads by a few batches (700 to 1,025 seen on two cores): ten reads'
    // worth is the bound.
    let (_dir, path) = flooding_server();
    let mut pipe = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .arg("--socket")
        .arg(&path)
        .args(["--framed", "--timeout", "20s", "--fd", "/dev/null"])
        .env_remove("UDSECHO_SOCKET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = pipe.stdin.take().unwrap();
    stdin.write_all(b"hi\n").unwrap();
    let pid = pipe.id();
    let open = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    // Wait until the flood has been read (the client's open descriptors settle), then count.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut most = 0;
    while std::time::Instant::now() < deadline {
        most = most.max(open());
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = pipe.kill();
    let _ = pipe.wait();
    assert!(most < 2_530, "the framed pipe held {most} descriptors");
}
