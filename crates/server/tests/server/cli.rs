//! Command-line behaviour: flags, exit codes, error lines.

use assert_cmd::Command;
use predicates::prelude::*;

fn server() -> Command {
    let mut cmd = Command::new(udsecho_harness::binary("udsecho-server"));
    cmd.env_remove("UDSECHO_SOCKET").env_remove("LISTEN_FDS");
    cmd
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let assert = server().arg("--help").assert().success();
    let help = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    for flag in [
        "--socket",
        "UDSECHO_SOCKET",
        "--mode",
        "--max-frame",
        "--max-connections",
        "--idle-timeout",
        "--shutdown-timeout",
        "--socket-mode",
        "--allow-uid",
        "--busy-poll",
        "[default: 100us]",
        "--verbose",
        "--quiet",
        "Exit status",
        "[default: 8MiB]",
        "[default: 0600]",
        "XDG_RUNTIME_DIR",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn version_names_the_version() {
    server()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_flag_values_exit_2_with_a_hint() {
    server()
        .args(["--idle-timeout", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("400ms"));
    server()
        .args(["--max-frame", "5GiB"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("4 GiB"));
    server()
        .args(["--mode", "fancy"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("auto"));
    server()
        .args(["--socket-mode", "rwx"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("octal"));
    server()
        .args(["--busy-poll", "2s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at most 1s"));
}

#[test]
fn socket_comes_from_the_environment_too() {
    let dir = udsecho_harness::short_temp_dir();
    let path = dir.path().join("file");
    std::fs::write(&path, "x").unwrap();
    server()
        .env("UDSECHO_SOCKET", &path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(path.to_str().unwrap()))
        .stderr(predicate::str::contains("not a socket"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn the_socket_may_be_given_as_an_argument_like_the_clients() {
    use udsecho_harness::{Signal, raw_round_trip};
    let dir = udsecho_harness::short_temp_dir();
    let path = dir.path().join("s.sock");
    // `udsecho-server PATH`, as `udsecho-client PATH` (the harness always passes --socket).
    let child = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
        .arg(&path)
        .env_remove("UDSECHO_SOCKET")
        .env_remove("LISTEN_FDS")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while raw_round_trip(&path, b"hi", 2).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "never served {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!path.exists());
}

#[test]
fn two_different_sockets_are_a_usage_error() {
    let assert = server()
        .args(["-s", "/tmp/a.sock", "/tmp/b.sock"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("the socket is given twice: `/tmp/a.sock` with --socket and `/tmp/b.sock` as an argument"),
        "{stderr}"
    );
}

#[test]
fn generate_man_without_a_directory_says_what_it_needs() {
    let assert = server().args(["--generate", "man"]).assert().code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("--generate man needs a directory: udsecho-server --generate man DIR"),
        "{stderr}"
    );
}

/// `--generate man DIR` lists the pages it wrote on stdout; with nobody reading (a closed
/// pipe) it panicked (`println!`, exit 101) instead of saying so.
#[test]
fn generate_man_into_a_closed_pipe_is_one_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
        .args(["--generate", "man"])
        .arg(dir.path())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.starts_with("udsecho-server: --generate: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn zero_limits_say_what_is_allowed() {
    server()
        .args(["--max-connections", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must be at least 1"));
}

/// `nc -lU SOCK` habits (#34): -l (listen), -U (a Unix socket), -k (keep listening) and -N are
/// what the server does anyway, so `udsecho-server -lU SOCK` serves as `udsecho-server SOCK`.
#[test]
fn nc_habits_l_u_k_and_n_are_accepted() {
    for args in [&["-lU"][..], &["-l", "-U"], &["-lkU"], &["-N"]] {
        let dir = udsecho_harness::short_temp_dir();
        let socket = dir.path().join("nc.sock");
        let mut server = udsecho_harness::Server::builder()
            .socket(&socket)
            .args(args.iter().copied())
            .start()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(
            udsecho_harness::raw_round_trip(&socket, b"hi", 2).unwrap(),
            b"hi",
            "{args:?}"
        );
        let status = server
            .stop(
                udsecho_harness::Signal::TERM,
                std::time::Duration::from_secs(10),
            )
            .unwrap();
        assert!(status.success(), "{args:?}: {}", server.stderr());
    }
}

/// Where -v is documented, it says what it costs a benchmark.
#[test]
fn help_says_that_verbose_logging_slows_a_benchmark() {
    let assert = server().arg("--help").assert().success();
    let help = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(help.contains("benchmark"), "{help}");
    assert!(help.contains("--once"), "{help}");
    assert!(help.contains("--timestamps"), "{help}");
}
