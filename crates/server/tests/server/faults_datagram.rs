//! `--fault` on a datagram socket: each message fault as a sender sees it, the share of
//! senders drawn from the seed (the same senders on every run), descriptors withheld or
//! added, `-v` naming the fault and the sender, a fault changed at run time, and the drain
//! answering a datagram held back.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::net::{RecvFlags, SendFlags, SocketAddrUnix};
use udsecho_harness::{Server, Signal, short_temp_dir};

use crate::faults::{escaped_line, message_faults_hold, sooner_than};

const STOP: Duration = Duration::from_secs(10);
/// How long a sender waits for a reply before it counts the reply as not coming.
const QUIET: Duration = Duration::from_millis(500);

fn datagram_server(faults: &[&str], more: &[&str]) -> Server {
    let mut args = vec!["--type".to_owned(), "datagram".to_owned()];
    for fault in faults {
        args.push("--fault".to_owned());
        args.push((*fault).to_owned());
    }
    args.extend(more.iter().map(|a| (*a).to_owned()));
    Server::start(args).unwrap_or_else(|e| panic!("{faults:?}: {e}"))
}

/// A sender bound to `name` in `dir`, whose reads wait [`QUIET`] at most.
pub(crate) fn sender(dir: &Path, name: &str) -> UnixDatagram {
    let socket = UnixDatagram::bind(dir.join(name)).unwrap();
    socket.set_read_timeout(Some(QUIET)).unwrap();
    socket
}

/// Every reply until none comes for [`QUIET`].
pub(crate) fn replies(socket: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// The replies to `sent`, from a server with `fault`.
fn datagram_echoes(fault: &str, sent: &[&[u8]]) -> Vec<Vec<u8>> {
    let server = datagram_server(&[fault], &[]);
    replies_to(server.socket(), sent)
}

/// The replies to `sent` from one bound sender to `to`, until none comes for [`QUIET`].
pub(crate) fn replies_to(to: &Path, sent: &[&[u8]]) -> Vec<Vec<u8>> {
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c.sock");
    for datagram in sent {
        socket.send_to(datagram, to).unwrap();
    }
    replies(&socket)
}

#[test]
fn datagrams_are_lost_duplicated_reordered_truncated_and_answered_on_demand() {
    message_faults_hold(datagram_echoes);
    assert!(
        datagram_echoes("drop=100%", &[&b"one"[..]]).is_empty(),
        "loss's other name"
    );
}

/// A datagram socket bound to the abstract name `name`, whose reads wait [`QUIET`] at most.
fn abstract_sender(name: &str) -> OwnedFd {
    let fd = crate::socket_types::abstract_datagram(name);
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, Some(QUIET))
        .unwrap();
    fd
}

/// For twelve senders (abstract names, the same on every call) sending two datagrams each to
/// a server with `loss=1@50%` and `seed`: how many replies each got.
fn replies_per_sender(seed: &str) -> Vec<usize> {
    let server = datagram_server(&["loss=1@50%"], &["--fault-seed", seed]);
    replies_per_named_sender(server.socket(), "udsecho-fault-test")
}

/// For twelve senders (abstract names `PREFIX-PID-N`, the same on every call) sending two
/// datagrams each to `to`: how many replies each got.
pub(crate) fn replies_per_named_sender(to: &Path, prefix: &str) -> Vec<usize> {
    let to = SocketAddrUnix::new(to).unwrap();
    (0..12)
        .map(|i| {
            let name = format!("{prefix}-{}-{i}", std::process::id());
            let fd = abstract_sender(&name);
            for datagram in [&b"one"[..], b"two"] {
                rustix::net::sendto(&fd, datagram, SendFlags::empty(), &to).unwrap();
            }
            let mut buf = [0u8; 16];
            let mut got = 0;
            while rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()).is_ok() {
                got += 1;
            }
            got
        })
        .collect()
}

#[test]
fn a_share_hits_the_same_senders_on_every_run_and_all_of_their_datagrams() {
    let first = replies_per_sender("42");
    assert!(
        first.iter().all(|&n| n == 0 || n == 2),
        "a sender is hit for all its datagrams or none: {first:?}"
    );
    assert!(
        first.contains(&0) && first.contains(&2),
        "half of 12 senders: {first:?}"
    );
    assert_eq!(replies_per_sender("42"), first);
}

/// Sends "x" with one descriptor to a datagram server with `fault`; how many came back.
fn descriptors_back(fault: &str) -> usize {
    use udsecho_harness::descriptors::{recv_with_fds, send_with_fds};
    let server = datagram_server(&[fault], &[]);
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c.sock");
    socket.set_read_timeout(Some(STOP)).unwrap();
    let (read, _write) = std::io::pipe().unwrap();
    send_with_fds(socket.as_fd(), b"x", &[read.as_fd()], Some(server.socket())).unwrap();
    let mut buf = [0u8; 16];
    let got = recv_with_fds(socket.as_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..got.len], b"x", "{fault}");
    got.fds.len()
}

#[test]
fn a_datagrams_descriptors_are_withheld_or_one_added_on_demand() {
    assert_eq!(descriptors_back("truncate=99"), 1, "no descriptor fault");
    assert_eq!(descriptors_back("withhold_fds"), 0);
    assert_eq!(descriptors_back("extra_fd"), 2);
}

#[test]
fn verbose_names_the_fault_and_the_sender_escaped() {
    let server = datagram_server(&["loss=1"], &["-v"]);
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c\u{1b}[31m.sock");
    socket.send_to(b"lost", server.socket()).unwrap();
    assert!(server.wait_stderr("dropped", STOP), "{}", server.stderr());
    let line = escaped_line(&server, "fault: loss=1: a datagram from ");
    assert!(line.ends_with(": dropped"), "{line}");
    assert!(line.contains("c\\u{1b}[31m.sock"), "{line}");
}

/// One command on the control socket at `path`, and its answer line.
pub(crate) fn control(path: &Path, command: &str) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(STOP)).unwrap();
    writeln!(stream, "{command}").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    answer
}

#[test]
fn a_fault_added_at_run_time_reaches_the_datagram_socket_and_removing_it_heals_it() {
    let dir = short_temp_dir();
    let path = dir.path().join("control.sock");
    let server = datagram_server(&[], &["--control", path.to_str().unwrap()]);
    let socket = sender(dir.path(), "c.sock");
    socket.send_to(b"healthy", server.socket()).unwrap();
    assert_eq!(replies(&socket), [b"healthy"]);
    assert_eq!(control(&path, "add loss=1"), "ok 1\n");
    socket.send_to(b"lost", server.socket()).unwrap();
    assert!(replies(&socket).is_empty());
    assert_eq!(control(&path, "remove 1"), "ok\n");
    socket.send_to(b"healed", server.socket()).unwrap();
    assert_eq!(replies(&socket), [b"healed"]);
}

#[test]
fn sigterm_answers_the_datagram_a_reorder_held_back() {
    let mut server = datagram_server(&["reorder=1"], &["--shutdown-timeout", "20s"]);
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c.sock");
    socket.send_to(b"held back", server.socket()).unwrap();
    assert!(replies(&socket).is_empty(), "held for the next datagram");
    let signalled = Instant::now();
    server.signal(Signal::TERM).unwrap();
    socket.set_read_timeout(Some(STOP)).unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"held back", "the drain lifts the fault");
    let status = server.wait_exit(STOP).unwrap();
    assert!(status.success(), "{}", server.stderr());
    sooner_than(signalled, Duration::from_secs(5));
}
