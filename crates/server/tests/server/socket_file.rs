//! The socket file's lifecycle: each case of the spec.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use udsecho_harness::{Server, Signal, binary, raw_round_trip, short_temp_dir};

const STOP: Duration = Duration::from_secs(10);

/// Runs the server expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(binary("udsecho-server"))
        .args(args)
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn sigterm_and_sigint_remove_the_socket_file_and_exit_0() {
    for sig in [Signal::TERM, Signal::INT] {
        let mut server = Server::start(Vec::<String>::new()).unwrap();
        let path = server.socket().to_owned();
        assert!(path.exists());
        let status = server.stop(sig, STOP).unwrap();
        assert!(status.success(), "{sig:?}: {status}; {}", server.stderr());
        assert!(!path.exists(), "{sig:?}: socket file removed");
        let lock = format!("{}.lock", path.display());
        assert!(!Path::new(&lock).exists(), "{sig:?}: lock file removed");
    }
}

#[test]
fn socket_file_is_0600_by_default_and_follows_socket_mode() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let mode = std::fs::metadata(server.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let server = Server::start(["--socket-mode", "0660"]).unwrap();
    let mode = std::fs::metadata(server.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn live_server_is_left_alone_and_the_second_exits_1() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let path = server.socket().to_str().unwrap().to_owned();
    let stderr = refused(&["--socket", &path]);
    assert!(
        stderr.contains(&path) && stderr.contains("already listening"),
        "{stderr}"
    );
    assert_eq!(
        raw_round_trip(server.socket(), b"still served", 4).unwrap(),
        b"still served"
    );
}

#[test]
fn a_foreign_live_socket_is_left_alone() {
    let dir = short_temp_dir();
    let path = dir.path().join("s.sock");
    let _foreign = UnixListener::bind(&path).unwrap(); // like `nc -lU`
    let stderr = refused(&["--socket", path.to_str().unwrap()]);
    assert!(stderr.contains("already listening"), "{stderr}");
    assert!(path.exists());
    assert!(
        !dir.path().join("s.sock.lock").exists(),
        "no stray lock file"
    );
}

#[test]
fn stale_socket_is_replaced() {
    let dir = short_temp_dir();
    let path = dir.path().join("s.sock");
    drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
    assert!(path.exists());
    let server = Server::builder().socket(&path).start().unwrap();
    assert_eq!(raw_round_trip(&path, b"fresh", 5).unwrap(), b"fresh");
    assert!(server.wait_stderr("stale", STOP), "{}", server.stderr());
}

#[test]
fn restart_after_sigkill_works_at_once() {
    let dir = short_temp_dir();
    let path = dir.path().join("s.sock");
    let mut first = Server::builder().socket(&path).start().unwrap();
    first.stop(Signal::KILL, STOP).unwrap();
    assert!(path.exists(), "SIGKILL leaves the file behind");
    let _second = Server::builder().socket(&path).start().unwrap();
    assert_eq!(raw_round_trip(&path, b"again", 5).unwrap(), b"again");
}

#[test]
fn a_lock_file_left_by_sigkill_is_removed_by_the_next_server_at_its_clean_shutdown() {
    let dir = short_temp_dir();
    let path = dir.path().join("s.sock");
    let lock = dir.path().join("s.sock.lock");
    let mut first = Server::builder().socket(&path).start().unwrap();
    first.stop(Signal::KILL, STOP).unwrap();
    assert!(lock.exists(), "SIGKILL leaves the lock file behind");
    let mut second = Server::builder().socket(&path).start().unwrap();
    assert_eq!(raw_round_trip(&path, b"again", 5).unwrap(), b"again");
    assert!(second.stop(Signal::TERM, STOP).unwrap().success());
    assert!(!path.exists(), "socket file removed: {}", second.stderr());
    assert!(
        !lock.exists(),
        "reused lock file removed: {}",
        second.stderr()
    );
}

#[test]
fn a_path_that_is_not_a_socket_is_refused_and_never_deleted() {
    let dir = short_temp_dir();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "precious").unwrap();
    let stderr = refused(&["--socket", path.to_str().unwrap()]);
    assert!(
        stderr.contains(path.to_str().unwrap()) && stderr.contains("not a socket"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn too_long_path_names_the_path_and_the_limit() {
    let long = format!("/tmp/{}.sock", "x".repeat(110));
    let stderr = refused(&["--socket", &long]);
    assert!(stderr.contains(&long) && stderr.contains("107"), "{stderr}");
}

#[test]
fn missing_directory_names_the_path_and_the_directory() {
    let dir = short_temp_dir();
    let path = dir.path().join("nope/s.sock");
    let stderr = refused(&["--socket", path.to_str().unwrap()]);
    assert!(
        stderr.contains(path.to_str().unwrap()) && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn no_permission_names_the_path() {
    let dir = short_temp_dir();
    let locked = dir.path().join("ro");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let path = locked.join("s.sock");
    let mut cmd = if rustix::process::geteuid().is_root() {
        // Root ignores directory permissions: run the server as nobody.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(binary("udsecho-server"));
        cmd
    } else {
        Command::new(binary("udsecho-server"))
    };
    let out = cmd.arg("--socket").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(path.to_str().unwrap()) && stderr.contains("permission denied"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "directory {} is not writable by this user",
            locked.display()
        )),
        "names the directory: {stderr}"
    );
}

#[test]
fn a_replaced_file_is_not_deleted_on_shutdown() {
    let mut server = Server::start(Vec::<String>::new()).unwrap();
    let path = server.socket().to_owned();
    std::fs::rename(&path, path.with_extension("old")).unwrap();
    std::fs::write(&path, "someone else's").unwrap();
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    assert!(server.stderr().contains("replaced"), "{}", server.stderr());
}

#[test]
fn servers_started_at_once_on_one_path_leave_exactly_one_serving() {
    for stale in [false, true] {
        let dir = short_temp_dir();
        let path = dir.path().join("s.sock");
        if stale {
            drop(UnixListener::bind(&path).unwrap());
        }
        let mut servers: Vec<Server> = (0..6)
            .map(|_| Server::builder().socket(&path).no_wait().start().unwrap())
            .collect();
        // The losers exit quickly; the winner keeps serving. Wait until five have exited (or
        // 10 s pass, and the count below says what happened), then give a sixth a moment to
        // show it would have exited too.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline
            && servers.iter().filter(|s| s.has_exited()).count() < 5
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut running = Vec::new();
        for (i, server) in servers.iter_mut().enumerate() {
            match server.wait_exit(Duration::from_millis(1)) {
                Ok(status) => {
                    assert_eq!(status.code(), Some(1), "server {i}: {}", server.stderr());
                    assert!(
                        server.stderr().contains("already listening"),
                        "{}",
                        server.stderr()
                    );
                }
                Err(_) => running.push(i),
            }
        }
        assert_eq!(
            running.len(),
            1,
            "stale={stale}: exactly one serves, running: {running:?}"
        );
        let winner = &mut servers[running[0]];
        assert_eq!(raw_round_trip(&path, b"the one", 3).unwrap(), b"the one");
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
        assert!(winner.stop(Signal::TERM, STOP).unwrap().success());
        assert!(!path.exists(), "inode {ino} removed by its owner");
    }
}

#[test]
fn abstract_socket_serves_without_a_file() {
    let name = format!("@udsecho-test-{}", std::process::id());
    let mut server = Server::builder().socket(&name).start().unwrap();
    assert_eq!(
        raw_round_trip(Path::new(&name), b"abstract", 8).unwrap(),
        b"abstract"
    );
    let stderr = refused(&["--socket", &name]);
    assert!(stderr.contains(&name), "{stderr}");
    assert!(server.stop(Signal::TERM, STOP).unwrap().success());
}
