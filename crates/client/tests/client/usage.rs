//! Flags that cannot work are usage errors (exit 2) with a line saying what is allowed;
//! nothing panics.

use predicates::prelude::*;

use crate::{bare_client, usage_error};

/// The `error:` line of a clap usage error.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
}

#[test]
fn zero_and_absurd_values_are_usage_errors_that_say_what_is_allowed() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["send", "-i", "0", "-n", "2"],
            "error: invalid value '0' for '--interval <DUR>': must be more than 0",
        ),
        (
            &["send", "-n", "0"],
            "error: invalid value '0' for '--count <N>': must be at least 1 (leave --count out to send until Ctrl-C)",
        ),
        (
            &["send", "-m", ""],
            "error: invalid value '' for '--message <TEXT>': the message must not be empty",
        ),
        (
            &["bench", "-c", "0"],
            "error: invalid value '0' for '--connections <N>': 0 is not in 1..=1000000",
        ),
        (
            &["bench", "-d", "0s"],
            "error: invalid value '0s' for '--duration <DUR>': must be more than 0",
        ),
        (
            &["bench", "-d", "2000000years"],
            "error: invalid value '2000000years' for '--duration <DUR>': at most 1 year",
        ),
        (
            &["bench", "--pipeline", "100000000"],
            "error: invalid value '100000000' for '--pipeline <N>': 100000000 is not in 1..=65536",
        ),
        (
            &["bench", "--threads", "0"],
            "error: invalid value '0' for '--threads <N>': 0 is not in 1..=1024",
        ),
        (
            &["--timeout", "0ms", "send"],
            "error: invalid value '0ms' for '--timeout <DUR>': must be more than 0",
        ),
    ];
    for (args, line) in cases {
        let stderr = usage_error(args);
        assert!(error_line(&stderr).starts_with(line), "{args:?}: {stderr}");
    }
}

#[test]
fn an_empty_socket_path_is_a_usage_error() {
    for args in [&["-s", ""][..], &[""], &["send", ""]] {
        let out = bare_client()
            .args(args)
            .assert()
            .code(2)
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            error_line(&stderr).contains("the socket path must not be empty"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn two_different_sockets_are_a_usage_error() {
    let stderr = usage_error(&["/tmp/other.sock"]);
    assert!(
        error_line(&stderr).contains("the socket is given twice"),
        "{stderr}"
    );
}

#[test]
fn help_texts_read_alike() {
    let out = bare_client()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    let help = String::from_utf8_lossy(&out.stdout);
    let pipe = help
        .lines()
        .find(|l| l.trim_start().starts_with("pipe "))
        .unwrap_or_else(|| panic!("no pipe line in {help}"));
    let description = pipe.trim_start()["pipe".len()..].trim_start();
    assert!(
        description.starts_with(|c: char| c.is_uppercase()),
        "capitalised like the others: {pipe:?}"
    );

    let out = bare_client()
        .args(["bench", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    let help = String::from_utf8_lossy(&out.stdout);
    let framed = help
        .lines()
        .skip_while(|l| !l.contains("--framed"))
        .take(2)
        .collect::<String>();
    assert!(!framed.is_empty(), "{help}");
    assert!(!framed.contains("pipe"), "bench's --framed: {framed:?}");
}

#[test]
fn u_with_another_type_is_a_usage_error() {
    let stderr = usage_error(&["-u", "--type", "seqpacket"]);
    assert!(
        error_line(&stderr).contains("-u means --type datagram"),
        "{stderr}"
    );
    let stderr = usage_error(&["--type", "packet"]);
    assert!(
        error_line(&stderr).starts_with("error: invalid value 'packet' for '--type <TYPE>'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[possible values: stream, seqpacket, datagram]"),
        "{stderr}"
    );
}

#[test]
fn a_flag_of_another_subcommand_gets_a_hint_at_the_right_one() {
    let stderr = usage_error(&["send", "-c", "3"]);
    assert!(
        error_line(&stderr)
            .contains("send counts with -n N (--count N); -c is bench's --connections"),
        "{stderr}"
    );
    let stderr = usage_error(&["bench", "-n", "3"]);
    assert!(
        error_line(&stderr).contains("bench counts connections with -c N"),
        "{stderr}"
    );
}

#[test]
fn bench_framed_with_mode_raw_is_refused_as_a_contradiction() {
    for args in [
        &["bench", "--framed", "--mode", "raw"][..],
        &["--framed", "bench", "--mode", "raw"],
    ] {
        let stderr = usage_error(args);
        assert!(
            error_line(&stderr).contains("--framed contradicts --mode raw"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn generate_man_without_a_directory_says_what_it_needs() {
    let out = bare_client()
        .args(["--generate", "man"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--generate man needs a directory: udsecho-client --generate man DIR"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid variant"), "{stderr}");
}

#[test]
fn a_mistyped_subcommand_is_still_a_socket_but_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    for (typo, meant) in [
        ("sned", "send"),
        ("bnech", "bench"),
        ("piep", "pipe"),
        ("sen", "send"),
    ] {
        let out = bare_client()
            .current_dir(dir.path())
            .arg(typo)
            .write_stdin("hi\n")
            .assert()
            .code(1)
            .get_output()
            .clone();
        let line = crate::one_line(&out.stderr);
        assert!(
            line.contains(&format!("udsecho-client: {typo}: "))
                && line.ends_with(&format!("(did you mean '{meant}'?)")),
            "{typo}: {line}"
        );
    }
    // A word far from every subcommand, or a path, gets no hint.
    for other in ["echo.sock", "./send"] {
        let out = bare_client()
            .current_dir(dir.path())
            .arg(other)
            .write_stdin("hi\n")
            .assert()
            .code(1)
            .get_output()
            .clone();
        let line = crate::one_line(&out.stderr);
        assert!(!line.contains("did you mean"), "{other}: {line}");
    }
}

/// Under a descriptor limit too low to run, the client says so in one line and exits 1: tokio's
/// signal handling panicked there before (review of #22, F8).
#[test]
fn a_descriptor_limit_too_low_to_run_is_one_line_not_a_panic() {
    let out = assert_cmd::Command::new("prlimit")
        .arg("--nofile=6")
        .arg(udsecho_harness::binary("udsecho-client"))
        .args(["--socket", "/nonexistent/x.sock", "send", "-m", "hi"])
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "udsecho-client: the descriptor limit (6) is too low to run: it needs at least 10 \
         (raise `ulimit -n`)"
    );
}

/// With stderr a pipe nobody reads (closed), an error still exits with its own status: the
/// line that cannot be written is dropped, not a panic (exit 101).
#[test]
fn an_error_with_stderr_closed_exits_with_its_status_not_a_panic() {
    use std::process::{Command, Stdio};
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(udsecho_harness::binary("udsecho-client"))
        .args(["--socket", "/nonexistent/x.sock", "send", "-m", "hi"])
        .stdout(Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

/// Someone coming from nc types `-U SOCK` and `-NU SOCK` (#34): the client connects to a Unix
/// socket and half-closes on EOF anyway, so these are accepted, before or after a subcommand.
#[test]
fn nc_habits_u_and_n_are_accepted_and_change_nothing() {
    let server = udsecho_harness::Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    for args in [
        vec!["-U", socket],
        vec!["-NU", socket],
        vec!["-N", "-U", socket],
        vec!["pipe", "-U", socket],
    ] {
        let out = bare_client()
            .args(&args)
            .write_stdin("hello\n")
            .assert()
            .get_output()
            .clone();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"hello\n", "{args:?}");
    }
    bare_client()
        .args(["-U", socket, "send", "-n", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("received: olá mundo"));
}

/// `nc -lU SOCK` listens; the client cannot, and says in one line what to type instead, not
/// clap's `tip: to pass '-l' as a value, use '-- -l'`.
#[test]
fn nc_listen_flag_on_the_client_says_what_to_type_instead() {
    for args in [["-lU", "/tmp/x.sock"], ["-l", "/tmp/x.sock"]] {
        let stderr = usage_error(&args);
        assert!(!stderr.contains("tip:"), "{args:?}: {stderr}");
        assert!(
            error_line(&stderr).contains("udsecho-server -s SOCK")
                && error_line(&stderr).contains("--once"),
            "{args:?}: {stderr}"
        );
    }
}

/// `udsecho-client sned /tmp/echo.sock`: the typo hint works with a socket after the word too.
#[test]
fn a_mistyped_subcommand_followed_by_a_socket_gets_the_hint() {
    for (typo, meant) in [("sned", "send"), ("bnech", "bench"), ("piep", "pipe")] {
        let stderr = usage_error(&[typo, "/tmp/echo.sock"]);
        assert!(
            error_line(&stderr).contains(&format!("did you mean '{meant}'?")),
            "{typo}: {stderr}"
        );
        assert!(!stderr.contains("tip:"), "{stderr}");
    }
}
