//! Reaching the socket: every way it can fail, one line naming the path, exit 1.

use std::os::unix::net::UnixListener;

use assert_cmd::Command;
use udsecho_harness::short_temp_dir;

use crate::{bare_client, client, client_without_access, one_line};

fn failure_line(cmd: &mut Command) -> String {
    let out = cmd.assert().code(1).get_output().clone();
    one_line(&out.stderr)
}

#[test]
fn no_such_socket_names_the_path_and_how_to_start_a_server_there() {
    let dir = short_temp_dir();
    let path = dir.path().join("missing.sock");
    assert_eq!(
        failure_line(&mut client(&path)),
        format!(
            "udsecho-client: {0}: no such socket (is the server running? start it with `udsecho-server -s {0}`)",
            path.display()
        )
    );
}

#[test]
fn a_missing_directory_is_named_without_suggesting_a_server_there() {
    let dir = short_temp_dir();
    let path = dir.path().join("not-here").join("echo.sock");
    assert_eq!(
        failure_line(&mut client(&path)),
        format!(
            "udsecho-client: {}: no such directory {}",
            path.display(),
            dir.path().join("not-here").display()
        )
    );
}

#[test]
fn a_path_over_the_sun_path_limit_says_how_long_it_is() {
    let path = format!("/tmp/{}.sock", "a".repeat(120));
    assert_eq!(path.len(), 130);
    assert_eq!(
        failure_line(bare_client().args(["-s", &path])),
        format!("udsecho-client: {path}: socket path is 130 bytes, the limit is 107")
    );
}

#[test]
fn stale_socket_file_is_connection_refused() {
    let dir = short_temp_dir();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert_eq!(
        failure_line(&mut client(&path)),
        format!(
            "udsecho-client: {}: connection refused (a stale socket file with no server behind it; start the server, it replaces the file)",
            path.display()
        )
    );
}

#[test]
fn an_abstract_name_with_nothing_listening_says_so_without_a_socket_file() {
    let name = format!("@udsecho-test-nobody-{}", std::process::id());
    assert_eq!(
        failure_line(bare_client().args(["-s", &name])),
        format!(
            "udsecho-client: {name}: connection refused (no server is listening on this abstract name)"
        )
    );
}

#[test]
fn permission_denied_names_the_path() {
    let dir = short_temp_dir();
    let path = dir.path().join("closed.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    assert_eq!(
        failure_line(&mut client_without_access(&path)),
        format!(
            "udsecho-client: {}: permission denied (check the socket's mode and owner, or the server's --socket-mode)",
            path.display()
        )
    );
}

#[test]
fn a_file_that_is_not_a_socket_is_named() {
    let dir = short_temp_dir();
    let path = dir.path().join("plain");
    std::fs::write(&path, "not a socket").unwrap();
    assert_eq!(
        failure_line(&mut client(&path)),
        format!("udsecho-client: {}: not a socket", path.display())
    );
}
