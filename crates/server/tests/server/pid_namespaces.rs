//! A server in a pid namespace of its own (as in a container) and peers outside it (on the
//! host): the kernel reports such a peer's pid as 0, since the server cannot see its process.
//! Its uid is known all the same, and its messages are answered as anyone's; only the log
//! cannot name its pid.
//!
//! The server runs under `unshare --user --map-root-user --pid --fork --mount-proc`: the test's
//! own user is root in there, so `--allow-uid 0` admits the test. Where user namespaces are
//! off, the tests say so and return.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use udsecho_harness::{Server, raw_round_trip, short_temp_dir};

use crate::hostile_peers::{an_empty_message_comes_back_then_the_end, user_namespaces_work};

const LIMIT: Duration = Duration::from_secs(10);

/// The server's command runs in new user, pid and mount namespaces; the test's uid is root
/// there. Killing `unshare` (the harness does on drop) kills the server.
const IN_A_PID_NAMESPACE: [&str; 7] = [
    "unshare",
    "--user",
    "--map-root-user",
    "--pid",
    "--kill-child",
    "--mount-proc",
    "--",
];

/// A server started with `args` in a pid namespace of its own, or `None` (and a word on
/// stderr) where namespaces cannot be made.
fn in_a_pid_namespace(args: &[&str]) -> Option<Server> {
    if !user_namespaces_work() {
        eprintln!("skipped: user namespaces are off here (`unshare -r -n true` fails)");
        return None;
    }
    let server = Server::builder()
        .args(args.iter().copied())
        .wrapped(IN_A_PID_NAMESPACE)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    Some(server)
}

/// A stream peer outside the server's pid namespace was given no uid at all (the pid 0 that
/// `SO_PEERCRED` reported was read into a type that cannot hold 0, and the whole answer was
/// lost), so `--allow-uid` turned it away, and `-v` logged `pid=0`. It is served, and the log
/// says its pid is unknown.
#[test]
fn a_stream_peer_in_another_pid_namespace_is_served_and_its_pid_logged_as_unknown() {
    let Some(server) = in_a_pid_namespace(&["-v", "--allow-uid", "0"]) else {
        return;
    };
    let echo = raw_round_trip(server.socket(), b"hello", 5)
        .unwrap_or_else(|e| panic!("{e}; the server's log:\n{}", server.stderr()));
    assert_eq!(echo, b"hello", "{}", server.stderr());
    assert!(
        server.wait_stderr("pid=unknown (another pid namespace) uid=0", LIMIT),
        "{}",
        server.stderr()
    );
    assert!(!server.stderr().contains("pid=0"), "{}", server.stderr());
}

/// A datagram from outside the server's pid namespace came with credentials whose pid is 0;
/// read into a type that cannot hold 0 they were taken for none, and every such datagram was
/// dropped (logged as "from a uid not in --allow-uid", with no --allow-uid given). With a
/// permitted uid it is answered as any other.
#[test]
fn a_datagram_from_another_pid_namespace_is_answered() {
    let Some(server) = in_a_pid_namespace(&["--type", "datagram", "--allow-uid", "0"]) else {
        return;
    };
    let dir = short_temp_dir();
    let client = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client.send_to(b"hello", server.socket()).unwrap();
    let mut buf = [0u8; 64];
    let n = client
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no reply: {e}; the server's log:\n{}", server.stderr()));
    assert_eq!(&buf[..n], b"hello");
}

/// A seqpacket connection tells an empty message from the end of the stream by the
/// credentials every message carries; those of a peer outside the server's pid namespace
/// were taken for none, so its empty message ended the connection. It is echoed like the
/// others, then the end.
#[test]
fn an_empty_seqpacket_message_from_another_pid_namespace_is_not_the_end() {
    let Some(server) = in_a_pid_namespace(&["--type", "seqpacket"]) else {
        return;
    };
    an_empty_message_comes_back_then_the_end(&server);
}
