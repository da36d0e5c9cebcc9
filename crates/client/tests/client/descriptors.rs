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
