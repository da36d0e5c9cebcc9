//! `send`: the classic demo loop.

use std::io::{Read, Write};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use predicates::prelude::*;
use udsecho_harness::Server;

use crate::{LIMIT, bare_client, client, fake_server, one_line, wait_within};

#[test]
fn send_prints_each_message_and_echo_and_stops_after_count() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for framed in [false, true] {
        let mut cmd = client(server.socket());
        cmd.args(["send", "--count", "3", "--interval", "20ms"]);
        if framed {
            cmd.arg("--framed");
        }
        let out = cmd.assert().success().get_output().clone();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.matches("sent: olá mundo\n").count(), 3, "{text}");
        assert_eq!(text.matches("received: olá mundo\n").count(), 3, "{text}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "3 sent, 3 echoed intact\n"
        );
    }
}

#[test]
fn send_takes_the_socket_as_an_argument_before_or_after_the_subcommand() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    for args in [
        vec![socket, "send", "-n", "1", "-i", "1ms"],
        vec!["send", socket, "-n", "1", "-i", "1ms"],
        vec!["send", "-n", "1", "-i", "1ms", socket],
    ] {
        bare_client()
            .args(&args)
            .assert()
            .success()
            .stdout("sent: olá mundo\nreceived: olá mundo\n");
    }
}

#[test]
fn a_reply_that_comes_before_the_message_still_counts() {
    // `nc -lU` with the reply on its stdin answers as soon as the client connects.
    let (_dir, path) = fake_server(|mut stream| {
        stream.write_all("olá mundo".as_bytes()).unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    });
    client(&path)
        .args(["--timeout", "5s", "send", "-n", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("received: olá mundo"));
}

#[test]
fn send_detects_an_echo_that_differs_and_exits_3() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            buf[n / 2] ^= 0x01; // one flipped bit
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let out = client(&path)
        .args(["send", "-n", "2", "-i", "10ms", "--message", "abcdef"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: echo mismatch on message 1 at offset 3: sent \"abcdef\", received \"abceef\"",
            path.display()
        )
    );
}

#[test]
fn raw_send_against_a_framed_only_server_says_to_add_framed() {
    let server = Server::start(["--mode", "framed"]).unwrap();
    for message in ["olá mundo", "x", &"long ".repeat(100)] {
        let out = client(server.socket())
            .args(["send", "-n", "1", "-m", message])
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert_eq!(
            one_line(&out.stderr),
            format!(
                "udsecho-client: {}: the server speaks framed mode only; add --framed",
                server.socket().display()
            ),
            "message {message:?}"
        );
    }
}

#[test]
fn framed_send_against_a_raw_only_server_says_to_drop_framed() {
    let server = Server::start(["--mode", "raw"]).unwrap();
    let out = client(server.socket())
        .args(["send", "--framed", "-n", "1"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: the server echoed the preamble: it is in raw mode; drop --framed",
            server.socket().display()
        )
    );
}

#[test]
fn a_server_that_never_echoes_times_out() {
    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["--timeout", "300ms", "send", "--count", "1"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 300ms waiting for the echo of message 1",
            path.display()
        )
    );
}

#[test]
fn raw_send_without_count_reports_a_missing_echo_instead_of_sending_on() {
    // The echo of the first message is due within --timeout, even while more are sent.
    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["send", "--timeout", "1s"])
        .timeout(Duration::from_secs(2))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for the echo of message 1",
            path.display()
        )
    );
}

#[test]
fn framed_send_gives_up_on_a_server_that_never_answers_hello() {
    let (_dir, path) = crate::mute_server();
    client(&path)
        .args(["send", "--framed", "--timeout", "1s"])
        .timeout(Duration::from_secs(2))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "timed out after 1s waiting for the server's Hello",
        ));
}

#[test]
fn a_server_that_hangs_up_is_reported_as_closed_early() {
    for framed in [false, true] {
        let (_dir, path) = fake_server(drop);
        let mut cmd = client(&path);
        cmd.args(["send", "--count", "3", "--interval", "50ms"]);
        if framed {
            cmd.arg("--framed");
        }
        let out = cmd.assert().code(1).get_output().clone();
        let line = one_line(&out.stderr);
        assert!(line.contains("closed the connection early"), "{line}");
        assert!(!line.contains("os error"), "{line}");
    }
}

#[test]
fn a_server_that_closes_with_our_message_unread_is_reported_as_closed_early() {
    // Closing with unread input makes the kernel reset the connection (ECONNRESET on our
    // read), which is the same event for a person: the server hung up.
    let (_dir, path) = fake_server(|stream| {
        thread::sleep(Duration::from_millis(300));
        drop(stream);
    });
    client(&path)
        .args(["send", "--count", "3", "--interval", "50ms"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("closed the connection early"));
}

#[test]
fn send_without_count_runs_until_ctrl_c_then_prints_a_summary() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .arg("--socket")
        .arg(server.socket())
        .args(["send", "--interval", "20ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    udsecho_harness::signal(child.id(), udsecho_harness::Signal::INT).unwrap();
    let out = wait_within(child, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sent = stdout.matches("sent: olá mundo").count();
    assert!(sent >= 3, "kept sending until Ctrl-C: {stdout}");
    assert_eq!(stderr, format!("{sent} sent, {sent} echoed intact\n"));
}

#[test]
fn ctrl_c_on_a_terminal_prints_the_summary_on_its_own_line() {
    // A real terminal: `script` gives the client a pty, and ^C typed into it makes the line
    // discipline echo "^C" and send SIGINT, as for a person at the keyboard.
    let server = Server::start(Vec::<String>::new()).unwrap();
    let command = format!(
        "exec '{}' -s '{}' send -i 20ms",
        udsecho_harness::binary("udsecho-client").display(),
        server.socket().display()
    );
    let mut script = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("UDSECHO_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs the client on a pty");
    let mut terminal = script.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while seen.windows(9).filter(|w| w == b"received:").count() < 3 {
        let n = terminal.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "the client stopped early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    let mut keyboard = script.stdin.take().unwrap();
    keyboard.write_all(b"\x03").unwrap();
    let reader = thread::spawn(move || {
        let _ = terminal.read_to_end(&mut seen);
        seen
    });
    let status = wait_within(script, LIMIT).status;
    let screen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    drop(keyboard);
    assert!(status.success(), "{screen}");
    let last = screen.trim_end().rsplit("\r\n").next().unwrap().to_owned();
    assert!(
        last.ends_with("echoed intact") && !last.contains("^C") && last.contains(" sent, "),
        "the summary has a line of its own: {screen:?}"
    );
}

#[test]
fn send_ends_quietly_when_stdout_is_closed() {
    // `udsecho-client send | head -1`
    let server = Server::start(Vec::<String>::new()).unwrap();
    let mut child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .arg(server.socket())
        .args(["send", "-i", "1ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = wait_within(child, LIMIT);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}
