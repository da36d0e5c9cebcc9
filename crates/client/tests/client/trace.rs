//! `--trace`: what was sent and received, as hex and text on stderr (like `socat -x -v`), so
//! stdout stays the echo.

use udsecho_harness::{Server, run_client};

use crate::LIMIT;

/// The trace records of `stderr`: (direction, length, offset) from each `> N bytes at
/// offset M` or `< ...` line.
fn records(stderr: &str) -> Vec<(char, usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let dir = l.chars().next().filter(|c| matches!(c, '>' | '<'))?;
            let mut words = l[1..].split_whitespace();
            let len = words.next()?.parse().ok()?;
            let offset = words.nth(3)?.parse().ok()?;
            Some((dir, len, offset))
        })
        .collect()
}

#[test]
fn trace_shows_the_raw_pipe_s_bytes_on_stderr_and_leaves_stdout_alone() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    let run = run_client(["--trace", socket], b"hi\n\x01", LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, b"hi\n\x01");
    let recs = records(&run.stderr);
    assert_eq!(recs.first(), Some(&('>', 4, 0)), "{}", run.stderr);
    let received: usize = recs.iter().filter(|r| r.0 == '<').map(|r| r.1).sum();
    assert_eq!(received, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("00000000  68 69 0a 01                                       |hi..|"),
        "{}",
        run.stderr
    );
}

#[test]
fn trace_shows_a_framed_send_s_frames_and_a_seqpacket_pipe_s_messages() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let socket = server.socket().to_str().unwrap();
    let run = run_client(
        [
            "--trace", socket, "send", "-n", "1", "--framed", "-m", "hey",
        ],
        b"",
        LIMIT,
    )
    .unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    // The preamble and the Hello go out first; stdout has only send's lines.
    assert!(
        run.stderr.contains("00 55 44 53 45 43 48 4f"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stdout_text().contains("00 55"),
        "{}",
        run.stdout_text()
    );
    let recs = records(&run.stderr);
    assert!(recs.iter().any(|r| r.0 == '<'), "{}", run.stderr);

    let server = Server::start(["--type", "seqpacket"]).unwrap();
    let socket = server.socket().to_str().unwrap();
    let run = run_client(["--trace", "--type", "seqpacket", socket], b"abc", LIMIT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, b"abc");
    assert_eq!(
        records(&run.stderr),
        [('>', 3, 0), ('<', 3, 0)],
        "{}",
        run.stderr
    );
}

#[test]
fn trace_makes_no_sense_with_bench() {
    let stderr = crate::usage_error(&["--trace", "bench"]);
    assert!(stderr.contains("--trace"), "{stderr}");
}
