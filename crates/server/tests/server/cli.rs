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
