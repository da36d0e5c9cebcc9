//! `bench`: the load generator.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use predicates::prelude::*;
use udsecho_harness::Server;

use crate::{client, fake_server, one_line};

#[test]
fn bench_reports_sane_json_against_our_server() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for mode in ["raw", "framed"] {
        for pipeline in ["1", "8"] {
            let out = client(server.socket())
                .args([
                    "bench",
                    "--connections",
                    "4",
                    "--duration",
                    "300ms",
                    "--size",
                    "1KiB",
                ])
                .args(["--mode", mode, "--pipeline", pipeline, "--json"])
                .assert()
                .success()
                .get_output()
                .stdout
                .clone();
            let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(report["mode"], mode);
            assert_eq!(report["connections"], 4);
            assert_eq!(report["size"], 1024);
            let trips = report["round_trips"].as_u64().unwrap();
            assert!(trips > 0, "{report}");
            let rate = report["round_trips_per_sec"].as_f64().unwrap();
            let secs = report["seconds"].as_f64().unwrap();
            assert!((rate * secs - trips as f64).abs() < 1.0, "{report}");
            let l = &report["latency_us"];
            assert!(l["p50"].as_f64().unwrap() > 0.0);
            assert!(
                l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["p999"].as_f64(),
                "{report}"
            );
        }
    }
}

#[test]
fn bench_text_report_counts_connections_in_words() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for (connections, threads, words) in [
        ("1", "1", "1 connection, 1 thread,"),
        ("3", "2", "3 connections, 2 threads,"),
    ] {
        client(server.socket())
            .args([
                "bench",
                "-c",
                connections,
                "--threads",
                threads,
                "-d",
                "100ms",
            ])
            .assert()
            .success()
            .stdout(predicate::str::starts_with(format!("raw mode, {words}")));
    }
}

#[test]
fn bench_fails_when_echoes_are_corrupted() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0
                || stream
                    .write_all(&buf[..n].iter().map(|b| !b).collect::<Vec<_>>())
                    .is_err()
            {
                break;
            }
        }
    });
    client(&path)
        .args(["bench", "--duration", "300ms", "--json"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("mismatch"));
}

#[test]
fn framed_bench_gives_up_on_a_server_that_never_answers_hello() {
    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["--timeout", "1s", "bench", "--mode", "framed", "-d", "5s"])
        .timeout(Duration::from_secs(2))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for the server's Hello",
            path.display()
        )
    );
}

#[test]
fn raw_bench_against_a_framed_only_server_says_to_add_framed() {
    let server = Server::start(["--mode", "framed"]).unwrap();
    let out = client(server.socket())
        .args(["bench", "-d", "1s"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: the server speaks framed mode only; add --framed",
            server.socket().display()
        )
    );
}

/// Runs `bench` with `args` and `--json` against `socket`, and returns the report after the
/// checks every report must pass: round trips were made, and their rate times the seconds is
/// their count.
fn json_report(socket: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = client(socket)
        .arg("bench")
        .args(args)
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let trips = report["round_trips"].as_u64().unwrap();
    assert!(trips > 0, "{args:?}: {report}");
    let rate = report["round_trips_per_sec"].as_f64().unwrap();
    let secs = report["seconds"].as_f64().unwrap();
    assert!(
        (rate * secs - trips as f64).abs() < 1.0,
        "{args:?}: {report}"
    );
    report
}

#[test]
fn bench_spreads_connections_over_threads_in_every_stream_mode() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for mode in ["raw", "framed"] {
        for pipeline in ["1", "8"] {
            let args = [
                "-c",
                "5",
                "--threads",
                "2",
                "-d",
                "200ms",
                "--size",
                "100",
                "--mode",
                mode,
                "--pipeline",
                pipeline,
            ];
            let report = json_report(server.socket(), &args);
            assert_eq!(report["threads"], 2, "{report}");
            assert_eq!(report["connections"], 5, "{report}");
            assert_eq!(report["mode"], mode, "{report}");
        }
    }
}

#[test]
fn more_threads_than_connections_use_one_thread_per_connection() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let report = json_report(
        server.socket(),
        &["-c", "3", "--threads", "8", "-d", "200ms"],
    );
    assert_eq!(report["threads"], 3, "{report}");
    assert_eq!(report["connections"], 3, "{report}");
}

#[test]
fn seqpacket_and_datagram_bench_run_on_threads() {
    for kind in ["seqpacket", "datagram"] {
        let server = Server::start(["--type", kind]).unwrap();
        for pipeline in ["1", "4"] {
            let out = client(server.socket())
                .args(["--type", kind, "bench", "-c", "4", "--threads", "2"])
                .args(["-d", "200ms", "--pipeline", pipeline, "--json"])
                .assert()
                .success()
                .get_output()
                .stdout
                .clone();
            let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(report["socket_type"], kind, "{report}");
            assert_eq!(report["threads"], 2, "{report}");
            assert!(report["round_trips"].as_u64().unwrap() > 0, "{report}");
        }
    }
}

/// A raw echo server that counts the bytes it echoes over all its connections, and inverts
/// every byte on the connection it accepts `corrupt`-th (counting from 0), if any.
fn counting_server(corrupt: Option<usize>) -> (tempfile::TempDir, PathBuf, Arc<AtomicU64>) {
    let dir = udsecho_harness::short_temp_dir();
    let path = dir.path().join("count.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let echoed = Arc::new(AtomicU64::new(0));
    let count = echoed.clone();
    thread::spawn(move || {
        for (k, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { break };
            let count = count.clone();
            thread::spawn(move || echo_counting(stream, &count, corrupt == Some(k)));
        }
    });
    (dir, path, echoed)
}

fn echo_counting(mut stream: UnixStream, count: &AtomicU64, corrupt: bool) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        if corrupt {
            buf[..n].iter_mut().for_each(|b| *b = !*b);
        }
        // Counted before it goes out: whatever the client has received is counted.
        count.fetch_add(n as u64, Ordering::SeqCst);
        if stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

#[test]
fn every_round_trip_on_every_thread_is_counted_once() {
    // Ping-pong stops after a whole echo and pipelined waits for every echo, so the bytes the
    // server echoed are exactly the round trips reported times their size.
    for pipeline in ["1", "4"] {
        let (_dir, path, echoed) = counting_server(None);
        let report = json_report(
            &path,
            &[
                "-c",
                "6",
                "--threads",
                "3",
                "-d",
                "200ms",
                "--size",
                "100",
                "--pipeline",
                pipeline,
            ],
        );
        assert_eq!(report["threads"], 3, "{report}");
        let trips = report["round_trips"].as_u64().unwrap();
        assert_eq!(echoed.load(Ordering::SeqCst), trips * 100, "{report}");
    }
}

#[test]
fn a_corrupted_echo_on_any_thread_fails_the_whole_bench() {
    let (_dir, path, _) = counting_server(Some(3));
    let out = client(&path)
        .args(["bench", "-c", "4", "--threads", "2", "-d", "5s"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(line.contains("mismatch"), "{line}");
}

/// Raw ping-pong runs on each thread's own epoll loop; these hold it to what the task loops
/// did. A message bigger than the socket buffers is written in pieces as the socket makes
/// room, while its echo is read: every byte is counted once.
#[test]
fn raw_ping_pong_of_messages_bigger_than_the_socket_buffers_counts_every_byte() {
    let (_dir, path, echoed) = counting_server(None);
    let size = 1 << 20;
    let report = json_report(
        &path,
        &["-c", "2", "--threads", "1", "-d", "300ms", "--size", "1MiB"],
    );
    let trips = report["round_trips"].as_u64().unwrap();
    assert_eq!(echoed.load(Ordering::SeqCst), trips * size, "{report}");
}

#[test]
fn raw_bench_gives_up_on_a_server_that_never_echoes() {
    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["--timeout", "1s", "bench", "-d", "5s"])
        .timeout(Duration::from_secs(3))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for the echo of message 1",
            path.display()
        )
    );
}

#[test]
fn raw_bench_reports_a_server_that_hangs_up_mid_echo() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 64];
        // Half of the first echo, then gone.
        if stream.read_exact(&mut buf).is_ok() {
            let _ = stream.write_all(&buf[..32]);
        }
    });
    let out = client(&path)
        .args(["--timeout", "2s", "bench", "-d", "5s"])
        .timeout(Duration::from_secs(4))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(
        line.contains("closed") && line.contains("in the middle of the benchmark"),
        "{line}"
    );
}

/// Reads `child`'s stderr until a line containing `needle`; returns the lines read.
fn stderr_until(stderr: &mut impl std::io::BufRead, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "stderr ended before {needle:?}: {lines:?}");
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return lines;
        }
    }
}

/// Ctrl-C on a long run prints what was measured so far, as `ping` does (#34), and exits 0.
#[test]
fn ctrl_c_prints_what_the_bench_measured_so_far() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let mut child = std::process::Command::new(udsecho_harness::binary("udsecho-client"))
        .env_remove("UDSECHO_SOCKET")
        .arg("-s")
        .arg(server.socket())
        .args(["bench", "-d", "60s", "--interval", "100ms"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    // Measuring has begun once the first interval line is out.
    stderr_until(&mut stderr, "round trips/s");
    udsecho_harness::signal(child.id(), udsecho_harness::Signal::INT).unwrap();
    let out = crate::wait_within(child, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert!(
        stdout.contains("interrupted after") && stdout.contains(" s of 1m\n"),
        "{stdout}"
    );
    let rate: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("round trips/s:"))
        .unwrap_or_else(|| panic!("no rate in {stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{stdout}");
}

/// `--interval DUR` prints a line per interval on stderr (stdout stays the report, also
/// with --json).
#[test]
fn interval_prints_a_line_per_interval_on_stderr() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let out = client(server.socket())
        .args(["bench", "-d", "1s", "--interval", "250ms", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["round_trips"].as_u64().unwrap() > 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" round trips/s, ") && l.contains(" MB/s"))
        .collect();
    assert!((3..=5).contains(&lines.len()), "{stderr}");
    assert!(lines[0].starts_with("0.2"), "{stderr}");
}

/// The progress bar shows the duration asked for (`-d 2s`: `/2s`), not an estimate.
#[test]
fn the_progress_bar_shows_the_duration_asked_for() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    let command = format!(
        "exec '{}' -s '{}' bench -d 2s",
        udsecho_harness::binary("udsecho-client").display(),
        server.socket().display()
    );
    let out = assert_cmd::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("UDSECHO_SOCKET")
        .timeout(Duration::from_secs(20))
        .assert()
        .success()
        .get_output()
        .clone();
    let screen = String::from_utf8_lossy(&out.stdout);
    let shown: Vec<&str> = screen
        .match_indices('/')
        .filter_map(|(i, _)| {
            let rest = &screen[i + 1..];
            let end = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
            let word = &rest[..end];
            (word.len() > 1
                && word.ends_with('s')
                && word[..word.len() - 1].chars().all(|c| c.is_ascii_digit()))
            .then_some(word)
        })
        .collect();
    assert!(!shown.is_empty(), "no progress bar: {screen:?}");
    assert!(shown.iter().all(|w| *w == "2s"), "{shown:?} in {screen:?}");
}

/// `--help` says what MB/s counts, and that a server run with -v measures its logging.
#[test]
fn bench_help_says_what_mb_s_counts_and_warns_about_a_verbose_server() {
    let out = crate::bare_client()
        .args(["bench", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    // Words, whatever the wrapping.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("MB/s counts the payload echoed back"),
        "{help}"
    );
    assert!(help.contains("-v logs every echo"), "{help}");
}

/// A mismatch in random payload shows hex from where it differs, with the offset, never
/// mojibake (`sent "�v6t�y�ꋎ\u{15}…"`).
#[test]
fn a_binary_mismatch_shows_the_offset_and_hex() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 4096];
        let mut first = true;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            if first && n > 5 {
                buf[5] ^= 0xff;
                first = false;
            }
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let out = client(&path)
        .args(["bench", "-d", "1s", "--size", "64"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(line.contains("mismatch on message 1 at offset 5"), "{line}");
    assert!(!line.contains('\u{FFFD}'), "{line}");
    // Hex bytes: pairs of hex digits separated by spaces.
    assert!(
        line.split(' ')
            .filter(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .count()
            >= 8,
        "{line}"
    );
}

/// `--blocking` (a client that sleeps in `read` for each echo, a thread per connection) and
/// `--busy-poll` (the client polls before it sleeps) keep every promise of the event loop:
/// each round trip counted once, every byte checked, a silent server and a hang-up reported.
#[test]
fn a_blocking_or_polling_client_counts_every_round_trip_once() {
    for flags in [
        &["--blocking"][..],
        &["--blocking", "--busy-poll", "200us"],
        &["--busy-poll", "200us"],
    ] {
        let (_dir, path, echoed) = counting_server(None);
        let mut args = vec!["-c", "3", "-d", "200ms", "--size", "100"];
        args.extend_from_slice(flags);
        let report = json_report(&path, &args);
        let trips = report["round_trips"].as_u64().unwrap();
        assert!(trips > 0, "{flags:?}: {report}");
        assert_eq!(echoed.load(Ordering::SeqCst), trips * 100, "{flags:?}");
        let blocking = flags.contains(&"--blocking");
        assert_eq!(report["blocking"], blocking, "{report}");
        assert_eq!(report["threads"], if blocking { 3 } else { 1 }, "{report}");
        assert_eq!(report["busy_poll_us"], u64::from(flags.len() > 1) * 200);
    }
}

#[test]
fn a_blocking_client_reports_a_corrupted_echo_a_silent_server_and_a_hang_up() {
    let (_dir, path, _) = counting_server(Some(0));
    let out = client(&path)
        .args(["bench", "--blocking", "-d", "5s"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert!(one_line(&out.stderr).contains("mismatch"));

    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["--timeout", "1s", "bench", "--blocking", "-d", "5s"])
        .timeout(Duration::from_secs(3))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for the echo of message 1",
            path.display()
        )
    );

    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 64];
        if stream.read_exact(&mut buf).is_ok() {
            let _ = stream.write_all(&buf[..32]);
        }
    });
    let out = client(&path)
        .args(["--timeout", "2s", "bench", "--blocking", "-d", "5s"])
        .timeout(Duration::from_secs(4))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(line.contains("in the middle of the benchmark"), "{line}");
}

#[test]
fn blocking_and_busy_poll_are_for_raw_stream_ping_pong() {
    for flags in [
        &["--blocking", "--framed"][..],
        &["--busy-poll", "50us", "--pipeline", "4"],
        &["--blocking", "--threads", "2"],
        &["--busy-poll", "2s"],
    ] {
        client(std::path::Path::new("/nonexistent/x.sock"))
            .arg("bench")
            .args(flags)
            .assert()
            .code(2);
    }
}
