//! `--busy-poll`: a serving thread that has just echoed polls for new events for a bounded
//! while, then sleeps; off, it sleeps at once; an idle server never polls. These tests
//! measure the server's CPU time, never its speed: the bounds are loose (a poll that ran at
//! all, a poll that ended), so they hold on a loaded machine.

use std::thread;
use std::time::Duration;

use udsecho_harness::{Server, connect, cpu_time, raw_round_trip};

/// The server's CPU time over `window`, from now.
fn cpu_over(server: &Server, window: Duration) -> Duration {
    let before = cpu_time(server.pid()).unwrap();
    thread::sleep(window);
    cpu_time(server.pid()).unwrap() - before
}

/// Echoes a few messages, so that the serving thread has just worked.
fn echo_a_little(server: &Server) {
    for i in 0..20u8 {
        let data = vec![i; 64];
        assert_eq!(raw_round_trip(server.socket(), &data, 64).unwrap(), data);
    }
}

#[test]
fn with_busy_poll_off_a_server_that_just_echoed_uses_no_cpu() {
    let server = Server::start(["--busy-poll", "0", "--threads", "2"]).unwrap();
    echo_a_little(&server);
    let used = cpu_over(&server, Duration::from_secs(1));
    assert!(used <= Duration::from_millis(20), "{used:?} in 1 s");
}

/// The window starts at its longest: after the echoes the thread polls for about 300 ms (it
/// uses CPU), then sleeps (it uses none), though connections stay open.
#[test]
fn a_thread_that_echoed_polls_for_its_window_then_sleeps() {
    let server = Server::start(["--busy-poll", "300ms", "--threads", "1"]).unwrap();
    let _open = connect(server.socket()).unwrap();
    echo_a_little(&server);
    let polling = cpu_over(&server, Duration::from_millis(900));
    assert!(
        polling >= Duration::from_millis(20),
        "it polled: {polling:?}"
    );
    assert!(
        polling <= Duration::from_millis(700),
        "the poll is bounded by its window: {polling:?} in 900 ms"
    );
    let asleep = cpu_over(&server, Duration::from_secs(1));
    assert!(asleep <= Duration::from_millis(20), "{asleep:?} in 1 s");
}

/// With the default window, 100 idle connections cost no CPU: polling follows echoes only.
#[test]
fn an_idle_server_never_polls() {
    let server = Server::start(["--threads", "2"]).unwrap();
    let open: Vec<_> = (0..100)
        .map(|_| connect(server.socket()).unwrap())
        .collect();
    echo_a_little(&server);
    thread::sleep(Duration::from_millis(200));
    let used = cpu_over(&server, Duration::from_secs(2));
    assert!(used <= Duration::from_millis(20), "{used:?} in 2 s");
    drop(open);
}

/// A server that has served nothing does not poll, whatever its window: no thread starts by
/// polling.
#[test]
fn a_server_that_has_served_nothing_does_not_poll() {
    let server = Server::start(["--busy-poll", "1s", "--threads", "2"]).unwrap();
    let used = cpu_over(&server, Duration::from_millis(1500));
    assert!(used <= Duration::from_millis(100), "{used:?} in 1.5 s");
}
