//! `--fault` on seqpacket and datagram proxies: each fault as a client sees it through the
//! proxy (the upstream a udsecho echo of the same type), the seeded choices replayed, a fault
//! added through `--control` reaching what is open, `-v` naming the fault, and what is still
//! refused.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::net::SendFlags;
use udsecho_harness::{Server, short_temp_dir};

use crate::faults::{at_least, next_message, seqpacket, sooner_than};
use crate::faults_datagram::{control, replies, replies_per_named_sender, replies_to, sender};
use crate::proxy::proxy_to;

const STOP: Duration = Duration::from_secs(10);

/// An echo server of `kind` (`seqpacket`, `datagram`), and a proxy of that kind in front of
/// it with `faults` and `more` flags.
fn proxy_of(kind: &str, faults: &[&str], more: &[&str]) -> (Server, Server) {
    let upstream = Server::start(["--type", kind]).unwrap();
    let mut args = vec!["--type", kind];
    for fault in faults {
        args.extend(["--fault", fault]);
    }
    args.extend(more);
    let proxy = proxy_to(upstream.socket(), &args);
    (upstream, proxy)
}

/// Sends `sent` through a seqpacket proxy with `faults` and `more` flags, then the end; the
/// messages that come back before the end (or before none comes for 500 ms).
fn through_seqpacket(faults: &[&str], more: &[&str], sent: &[&[u8]]) -> Vec<Vec<u8>> {
    let (_upstream, proxy) = proxy_of("seqpacket", faults, more);
    let fd = seqpacket(proxy.socket());
    for message in sent {
        rustix::net::send(&fd, message, SendFlags::empty()).unwrap();
    }
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    while let Ok(Some(message)) = next_message(&fd) {
        got.push(message);
    }
    got
}

const SENT: [&[u8]; 2] = [b"first", b"second"];

/// The message faults as a client of a message proxy sees them: `through(fault)` is what
/// came back for [`SENT`] through a proxy with `fault`.
fn message_faults_hold(through: impl Fn(&str) -> Vec<Vec<u8>>) {
    assert_eq!(through("truncate=99"), SENT, "as sent");
    assert!(through("loss=1").is_empty());
    assert_eq!(
        through("duplicate=1"),
        [&b"first"[..], b"first", b"second", b"second"]
    );
    assert_eq!(through("reorder=1"), [&b"second"[..], b"first"]);
    assert_eq!(through("truncate=3"), [&b"fir"[..], b"sec"]);
}

#[test]
fn seqpacket_proxy_loses_duplicates_reorders_and_truncates_what_goes_to_the_client() {
    message_faults_hold(|fault| through_seqpacket(&[fault], &[], &SENT));
    assert_eq!(
        through_seqpacket(&["reorder=1"], &[], &[b"alone"]),
        [b"alone"],
        "a message held back with none after it goes before the end"
    );
}

#[test]
fn seqpacket_proxy_loss_sends_nothing_back_and_the_connection_goes_on() {
    let (_upstream, proxy) = proxy_of("seqpacket", &["loss=1"], &[]);
    let fd = seqpacket(proxy.socket());
    for message in SENT {
        rustix::net::send(&fd, message, SendFlags::empty()).unwrap();
        assert_eq!(
            next_message(&fd),
            Err(rustix::io::Errno::AGAIN),
            "nothing, and not the end"
        );
    }
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    assert_eq!(next_message(&fd), Ok(None), "the end comes as an end");
}

#[test]
fn seqpacket_proxy_latency_holds_each_message_back() {
    let (_upstream, proxy) = proxy_of("seqpacket", &["latency=300ms"], &[]);
    let fd = seqpacket(proxy.socket());
    for message in SENT {
        let sent = Instant::now();
        rustix::net::send(&fd, message, SendFlags::empty()).unwrap();
        assert_eq!(next_message(&fd), Ok(Some(message.to_vec())));
        at_least(sent, Duration::from_millis(300));
    }
}

#[test]
fn seqpacket_proxy_limit_data_cuts_the_message_that_reaches_it_and_closes() {
    let got = through_seqpacket(&["limit_data=5"], &[], &[b"abc", b"defg"]);
    assert_eq!(got, [&b"abc"[..], b"de"]);
}

#[test]
fn seqpacket_proxy_limit_data_0_closes_without_sending_an_empty_message() {
    let (_upstream, proxy) = proxy_of("seqpacket", &["limit_data=0"], &[]);
    let fd = seqpacket(proxy.socket());
    // With SO_PASSCRED every message carries its sender's credentials, an empty one too;
    // the end carries none: so a read of 0 bytes tells which it was.
    rustix::net::sockopt::set_socket_passcred(&fd, true).unwrap();
    rustix::net::send(&fd, b"abc", SendFlags::empty()).unwrap();
    let mut buf = [0u8; 16];
    let got = udsecho_unix::passing::recv(
        fd.as_fd(),
        &mut buf,
        rustix::net::RecvFlags::empty(),
        0,
        true,
    )
    .unwrap();
    assert_eq!(got.len, 0, "nothing of the message goes");
    assert!(
        got.creds.is_none(),
        "the proxy sent an empty message before its end"
    );
}

#[test]
fn seqpacket_proxy_corrupt_flips_the_byte_at_its_offset_of_the_clients_messages() {
    let got = through_seqpacket(&["corrupt=4"], &[], &[b"abc", b"defg"]);
    assert_eq!(got, [b"abc".to_vec(), vec![b'd', b'e' ^ 0xff, b'f', b'g']]);
    // A duplicate is a clean copy: the offset falls in one of them.
    let got = through_seqpacket(&["corrupt=1", "duplicate=1"], &[], &[b"ab"]);
    assert_eq!(got, [vec![b'a', b'b' ^ 0xff], b"ab".to_vec()]);
}

#[test]
fn seqpacket_proxy_withholds_the_upstreams_descriptors_on_demand() {
    use udsecho_harness::descriptors::{recv_with_fds, send_with_fds};
    let back = |faults: &[&str]| {
        let (_upstream, proxy) = proxy_of("seqpacket", faults, &[]);
        let fd = seqpacket(proxy.socket());
        let (read, _write) = std::io::pipe().unwrap();
        send_with_fds(fd.as_fd(), b"x", &[read.as_fd()], None).unwrap();
        let mut buf = [0u8; 16];
        let got = recv_with_fds(fd.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"x", "{faults:?}");
        got.fds.len()
    };
    assert_eq!(back(&[]), 1, "without the fault it comes back");
    assert_eq!(back(&["withhold_fds"]), 0);
}

#[test]
fn seqpacket_proxy_reset_peer_closes_at_once_or_when_due() {
    let (_upstream, proxy) = proxy_of("seqpacket", &["reset_peer"], &[]);
    let fd = seqpacket(proxy.socket());
    let _ = rustix::net::send(&fd, b"hello", SendFlags::empty());
    assert_eq!(next_message(&fd), Ok(None));

    let (_upstream, proxy) = proxy_of("seqpacket", &["reset_peer=400ms"], &[]);
    let fd = seqpacket(proxy.socket());
    let opened = Instant::now();
    rustix::net::send(&fd, b"early", SendFlags::empty()).unwrap();
    assert_eq!(
        next_message(&fd),
        Ok(Some(b"early".to_vec())),
        "served until then"
    );
    let end = loop {
        match next_message(&fd) {
            Err(rustix::io::Errno::AGAIN) => continue,
            other => break other,
        }
    };
    assert_eq!(end, Ok(None));
    at_least(opened, Duration::from_millis(400));
    sooner_than(opened, Duration::from_secs(3));
}

/// A message held back by `fault` in a seqpacket proxy (with `--shutdown-timeout 5s`) goes
/// out at once when SIGTERM comes: well within the timeout, then the end.
fn seqpacket_drain_sends_what_is_held(fault: &str) {
    let (_upstream, mut proxy) = proxy_of("seqpacket", &[fault], &["--shutdown-timeout", "5s"]);
    let fd = seqpacket(proxy.socket());
    rustix::net::send(&fd, b"held back", SendFlags::empty()).unwrap();
    assert_eq!(next_message(&fd), Err(rustix::io::Errno::AGAIN), "held");
    let wait = Some(Duration::from_secs(2));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, wait)
        .unwrap();
    let signalled = Instant::now();
    proxy.signal(udsecho_harness::Signal::TERM).unwrap();
    assert_eq!(
        next_message(&fd),
        Ok(Some(b"held back".to_vec())),
        "the drain lifts {fault}"
    );
    sooner_than(signalled, Duration::from_secs(2));
    rustix::net::shutdown(&fd, rustix::net::Shutdown::Write).unwrap();
    assert_eq!(next_message(&fd), Ok(None));
    assert!(
        proxy.wait_exit(STOP).unwrap().success(),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn sigterm_sends_the_message_a_reorder_held_back_in_a_seqpacket_proxy() {
    seqpacket_drain_sends_what_is_held("reorder=1");
}

#[test]
fn sigterm_cuts_the_latency_of_a_message_short_in_a_seqpacket_proxy() {
    seqpacket_drain_sends_what_is_held("latency=10s");
}

/// Which of 16 messages come back through a seqpacket proxy with `loss=0.5` and `seed`.
fn kept(seed: &str) -> Vec<u8> {
    let sent: Vec<[u8; 1]> = (0..16u8).map(|i| [i]).collect();
    let sent: Vec<&[u8]> = sent.iter().map(|m| &m[..]).collect();
    through_seqpacket(&["loss=0.5"], &["--fault-seed", seed], &sent)
        .iter()
        .map(|m| m[0])
        .collect()
}

#[test]
fn seqpacket_proxy_draws_replay_with_the_same_seed() {
    let first = kept("7");
    assert!(!first.is_empty() && first.len() < 16, "{first:?}");
    assert_eq!(kept("7"), first);
}

/// A proxy of `kind` with `-v` and a control socket (at `PATH`, in `DIR`), in front of an
/// echo: `(DIR, PATH, echo, proxy)`.
fn controlled(kind: &str) -> (tempfile::TempDir, std::path::PathBuf, Server, Server) {
    let dir = short_temp_dir();
    let path = dir.path().join("control.sock");
    let (upstream, proxy) = proxy_of(kind, &[], &["-v", "--control", path.to_str().unwrap()]);
    (dir, path, upstream, proxy)
}

#[test]
fn a_fault_added_through_control_reaches_an_open_seqpacket_proxy_connection() {
    let (_dir, path, _upstream, proxy) = controlled("seqpacket");
    let fd = seqpacket(proxy.socket());
    let round_trip = |message: &[u8]| {
        rustix::net::send(&fd, message, SendFlags::empty()).unwrap();
        next_message(&fd)
    };
    assert_eq!(round_trip(b"healthy"), Ok(Some(b"healthy".to_vec())));
    assert_eq!(control(&path, "add truncate=3"), "ok 1\n");
    assert_eq!(round_trip(b"shortened"), Ok(Some(b"sho".to_vec())));
    assert!(
        proxy.wait_stderr("fault: truncate=3", STOP),
        "-v says which fault hit the connection: {}",
        proxy.stderr()
    );
    assert_eq!(control(&path, "add loss=1"), "ok 2\n");
    assert_eq!(round_trip(b"lost"), Err(rustix::io::Errno::AGAIN));
    assert_eq!(control(&path, "clear"), "ok 2\n");
    assert_eq!(round_trip(b"healed"), Ok(Some(b"healed".to_vec())));
}

/// Sends `sent` from one bound sender through a datagram proxy with `faults` and `more`
/// flags; the replies, until none comes for 500 ms.
fn through_datagram(faults: &[&str], more: &[&str], sent: &[&[u8]]) -> Vec<Vec<u8>> {
    let (_upstream, proxy) = proxy_of("datagram", faults, more);
    replies_to(proxy.socket(), sent)
}

#[test]
fn datagram_proxy_loses_duplicates_reorders_and_truncates_replies() {
    message_faults_hold(|fault| through_datagram(&[fault], &[], &SENT));
}

#[test]
fn datagram_proxy_latency_holds_each_reply_back() {
    let (_upstream, proxy) = proxy_of("datagram", &["latency=300ms"], &[]);
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c.sock");
    socket.set_read_timeout(Some(STOP)).unwrap();
    let sent = Instant::now();
    socket.send_to(b"ping", proxy.socket()).unwrap();
    let mut buf = [0u8; 16];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    at_least(sent, Duration::from_millis(300));
}

/// Which of 12 datagrams, sent one at a time (a queue that overflows would drop some at
/// random), get their reply through a datagram proxy with `loss=0.5` and `seed`.
fn answered(seed: &str) -> Vec<u8> {
    let (_upstream, proxy) = proxy_of("datagram", &["loss=0.5"], &["--fault-seed", seed]);
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c.sock");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    (0..12u8)
        .filter(|&i| {
            socket.send_to(&[i], proxy.socket()).unwrap();
            matches!(socket.recv(&mut buf), Ok(1)) && buf[0] == i
        })
        .collect()
}

#[test]
fn datagram_proxy_draws_and_shares_replay_with_the_same_seed() {
    let first = answered("7");
    assert!(!first.is_empty() && first.len() < 12, "{first:?}");
    assert_eq!(answered("7"), first);
    // A share hits senders, all of their replies or none, the same ones on every run.
    let per_sender = |seed| {
        let (_upstream, proxy) = proxy_of("datagram", &["loss=1@50%"], &["--fault-seed", seed]);
        replies_per_named_sender(proxy.socket(), "udsecho-proxy-fault-test")
    };
    let first = per_sender("42");
    assert!(
        first.iter().all(|&n| n == 0 || n == 2),
        "a sender is hit for all its replies or none: {first:?}"
    );
    assert!(first.contains(&0) && first.contains(&2), "{first:?}");
    assert_eq!(per_sender("42"), first);
}

#[test]
fn datagram_proxy_takes_faults_through_control_and_names_them_with_verbose() {
    let (dir, path, _upstream, proxy) = controlled("datagram");
    let socket = sender(dir.path(), "c.sock");
    socket.send_to(b"healthy", proxy.socket()).unwrap();
    assert_eq!(replies(&socket), [b"healthy"]);
    assert_eq!(control(&path, "add loss=1"), "ok 1\n");
    socket.send_to(b"lost", proxy.socket()).unwrap();
    assert!(replies(&socket).is_empty());
    assert!(
        proxy.wait_stderr("fault: loss=1: a reply to ", STOP),
        "{}",
        proxy.stderr()
    );
    assert_eq!(control(&path, "remove 1"), "ok\n");
    socket.send_to(b"healed", proxy.socket()).unwrap();
    assert_eq!(replies(&socket), [b"healed"]);
}

/// A reply held back by `fault` in a datagram proxy (with `--shutdown-timeout 5s`) goes
/// out at once when SIGTERM comes, well within the timeout.
fn datagram_drain_sends_what_is_held(fault: &str) {
    let (_upstream, mut proxy) = proxy_of("datagram", &[fault], &["--shutdown-timeout", "5s"]);
    let dir = short_temp_dir();
    let socket = sender(dir.path(), "c.sock");
    socket.send_to(b"held back", proxy.socket()).unwrap();
    assert!(replies(&socket).is_empty(), "held");
    let signalled = Instant::now();
    proxy.signal(udsecho_harness::Signal::TERM).unwrap();
    socket.set_read_timeout(Some(STOP)).unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"held back", "the drain lifts {fault}");
    sooner_than(signalled, Duration::from_secs(2));
    assert!(
        proxy.wait_exit(STOP).unwrap().success(),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn sigterm_sends_the_reply_a_reorder_held_back_in_a_datagram_proxy() {
    datagram_drain_sends_what_is_held("reorder=1");
}

#[test]
fn sigterm_cuts_the_latency_of_a_reply_short_in_a_datagram_proxy() {
    datagram_drain_sends_what_is_held("latency=10s");
}

#[test]
fn faults_a_proxy_does_not_apply_are_refused_in_one_line_with_exit_2() {
    for (args, applies) in [
        (
            &["--fault", "timeout"][..],
            "a stream proxy applies latency, ",
        ),
        (&["--fault", "loss=0.5"], "a stream proxy applies latency, "),
        (
            &["--type", "seqpacket", "--fault", "slicer=1"],
            "a seqpacket proxy applies loss, ",
        ),
        (
            &["--type", "seqpacket", "--fault", "answer=no"],
            "a seqpacket proxy applies loss, ",
        ),
        (
            &["--type", "datagram", "--fault", "withhold_fds"],
            "a datagram proxy applies loss, ",
        ),
        (
            &["--type", "datagram", "--fault", "reset_peer"],
            "a datagram proxy applies loss, ",
        ),
    ] {
        let out = std::process::Command::new(udsecho_harness::binary("udsecho-server"))
            .args([
                "--upstream",
                "/tmp/x.sock",
                "--socket",
                "/tmp/never-bound.sock",
            ])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: --fault ") && first.contains(applies),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn sigterm_sends_every_relays_held_reply_in_a_datagram_proxy() {
    // Many relays, each holding a reply back for `reorder`, all quiet for longer than the
    // drain waits for quiet: each held reply must still go before its relay is closed.
    let (_upstream, mut proxy) = proxy_of(
        "datagram",
        &["reorder=1"],
        &["--shutdown-timeout", "5s", "-v"],
    );
    let dir = short_temp_dir();
    let senders: Vec<_> = (0..40)
        .map(|i| sender(dir.path(), &format!("c{i}.sock")))
        .collect();
    for (i, socket) in senders.iter().enumerate() {
        // One at a time: a burst would overflow the upstream's queue (10 datagrams by
        // default), and those the proxy drops, as the kernel would.
        socket
            .send_to(format!("held {i}").as_bytes(), proxy.socket())
            .unwrap();
        let held = format!("c{i}.sock: held back");
        assert!(proxy.wait_stderr(&held, STOP), "{}", proxy.stderr());
    }
    // Every relay quiet for longer than the drain's wait for quiet (100 ms).
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal(udsecho_harness::Signal::TERM).unwrap();
    for (i, socket) in senders.iter().enumerate() {
        socket.set_read_timeout(Some(STOP)).unwrap();
        let mut buf = [0u8; 64];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("sender {i}: {e}; the proxy said:\n{}", proxy.stderr()));
        assert_eq!(&buf[..n], format!("held {i}").as_bytes());
    }
    assert!(
        proxy.wait_exit(STOP).unwrap().success(),
        "{}",
        proxy.stderr()
    );
}
