//! The runner is never the victim: against targets that attack it (`examples/hostile.rs`)
//! every case ends within `--timeout` plus its bounded grace, memory stays bounded, no process
//! of the target outlives the run (a `setsid()` daemon included: checked in the process table
//! afterwards), the target's output is escaped in every report, and a target that cannot
//! start is one usage line (exit 2), not a FAILED line per case.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::{
    Token, client_cmd, example, hostile_cmd, kill_leftovers, run_cases, run_runner, server_cmd, set,
};

/// With `--timeout 1s`: the most one case may take (1 s, the runner's 3 s of grace, and
/// room for a loaded machine).
const CASE_LIMIT: Duration = Duration::from_millis(5500);

/// The limit for a whole run in these tests; a runner still running then is killed and the
/// test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the runner (`side` mode) against `hostile SIDE MODE`, on `cases` if given; the run,
/// and the word the target's processes carry on their command lines.
fn against(side: &str, mode: &str, cases: Option<&str>) -> (common::Run, Token) {
    let word = Token::new(mode);
    let cmd = hostile_cmd(side, mode, &word);
    let mut args = vec![side, "--cmd", &cmd];
    if let Some(cases) = cases {
        args.extend(["--cases", cases]);
    }
    (run_cases(&args, RUN_LIMIT), word)
}

fn no_leftovers(word: &Token) {
    let left = kill_leftovers(&word.0);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

fn assert_cases_in_time(run: &common::Run) {
    assert!(run.ended, "the runner had to be killed:\n{}", run.text());
    let (id, took) = run.longest_case();
    assert!(
        took <= CASE_LIMIT,
        "{id} took {took:?} (more than {CASE_LIMIT:?}):\n{}",
        run.text()
    );
}

fn assert_escaped(run: &common::Run) {
    for byte in [0x1b, 0x07, b'\r'] {
        assert!(
            !run.raw.contains(&byte),
            "the runner printed the target's byte {byte:#04x} as it is:\n{}",
            run.text()
        );
    }
}

fn one_line(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line: {text:?}");
    lines[0]
}

#[test]
fn a_missing_command_is_one_usage_line_exit_2() {
    for mode in ["server", "client"] {
        let run = run_cases(
            &[mode, "--cmd", "/nonexistent/udsecho-nothing {sock}"],
            RUN_LIMIT,
        );
        assert_eq!(run.code, Some(2), "{mode}: {}", run.text());
        let line = one_line(&run.stderr);
        assert!(
            line.contains("/nonexistent/udsecho-nothing") && line.contains("cannot start"),
            "{mode}: {line}"
        );
        assert!(run.stdout.trim().is_empty(), "{mode}: {}", run.text());
        assert!(run.elapsed < Duration::from_secs(5), "{}", run.text());
    }
}

#[test]
fn a_command_without_the_socket_placeholder_is_a_usage_error() {
    let run = run_cases(&["server", "--cmd", "true"], RUN_LIMIT);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(one_line(&run.stderr).contains("{sock}"), "{}", run.text());
}

/// `{sock}` becomes a quoted path outside quotes and the bare path inside them, so each
/// way of writing it gives the target the real path.
#[test]
fn the_placeholder_works_bare_and_inside_either_quotes() {
    let bin = example("mutant_server");
    for placeholder in ["{sock}", "'{sock}'", "\"{sock}\""] {
        let cmd = format!("{} {placeholder} none", bin.display());
        let run = run_cases(
            &["server", "--cmd", &cmd, "--cases", "1/preamble-framed"],
            RUN_LIMIT,
        );
        assert_eq!(run.code, Some(0), "{placeholder}: {}", run.text());
        assert_eq!(
            run.with("OK"),
            set(&["1/preamble-framed"]),
            "{}",
            run.text()
        );
    }
}

#[test]
fn a_server_that_never_listens_is_one_line_within_the_timeout() {
    let (run, word) = against("server", "never-listen", None);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        one_line(&run.stderr).contains("did not listen"),
        "{}",
        run.text()
    );
    assert!(run.elapsed < Duration::from_secs(5), "{}", run.text());
    no_leftovers(&word);
}

#[test]
fn a_server_that_exits_before_listening_is_one_escaped_line() {
    let (run, word) = against("server", "escape-stderr", None);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert_escaped(&run);
    let line = one_line(&run.stderr);
    assert!(
        line.contains("exited") && line.contains(r"\u{1b}[2J"),
        "{line}"
    );
    no_leftovers(&word);
}

/// A client's stderr in a FAILED line (the session went well, the exit status did not).
#[test]
fn a_client_stderr_line_in_a_verdict_is_escaped() {
    let run = run_cases(
        &[
            "client",
            "--cmd",
            &client_cmd("escape-stderr"),
            "--cases",
            "4/client-session",
        ],
        RUN_LIMIT,
    );
    assert_eq!(run.failed(), set(&["4/client-session"]), "{}", run.text());
    assert_escaped(&run);
    let detail = run.detail("4/client-session");
    assert!(detail.contains(r"\u{1b}[1A"), "{detail}");
    assert!(!detail.contains('\x1b'), "the JSON holds the raw escape");
}

#[test]
fn stderr_floods_and_files_swapped_for_fifos_or_dev_zero_cost_no_memory_and_no_hang() {
    for mode in ["stderr-flood", "stderr-fifo", "stderr-zero"] {
        let (run, word) = against("server", mode, None);
        assert!(run.ended, "{mode}: the runner hung:\n{}", run.text());
        assert_eq!(run.code, Some(2), "{mode}: {}", run.text());
        assert!(
            run.peak_kib < 48 * 1024,
            "{mode}: the runner held {} KiB",
            run.peak_kib
        );
        assert!(
            run.elapsed < Duration::from_secs(10),
            "{mode}: {}",
            run.text()
        );
        if mode == "stderr-flood" {
            assert!(
                one_line(&run.stderr).contains("hostile: the last line"),
                "{}",
                run.text()
            );
        }
        no_leftovers(&word);
    }
}

/// A server that trickles its answer a byte every 300 ms (each wait gets a byte well within
/// `--timeout`) used to keep a case running until killed.
#[test]
fn trickling_servers_end_each_case_in_time() {
    for mode in ["trickle", "ff-trickle"] {
        let (run, word) = against("server", mode, Some("2/raw-half-close,4/echo-in-order"));
        assert_cases_in_time(&run);
        assert!(
            run.failed().contains("2/raw-half-close"),
            "{mode}: {}",
            run.text()
        );
        assert!(
            run.elapsed < Duration::from_secs(25),
            "{mode}: {}",
            run.text()
        );
        no_leftovers(&word);
    }
}

#[test]
fn a_daemonising_server_leaves_no_process_behind() {
    let (run, word) = against("server", "daemon", Some("1/raw-fallback,2/raw-half-close"));
    assert_cases_in_time(&run);
    assert_eq!(run.with("OK").len(), 2, "{}", run.text());
    no_leftovers(&word);
}

#[test]
fn hanging_and_flooding_clients_end_each_case_in_time() {
    for mode in ["hang", "hang-away", "flood", "frame-trickle"] {
        let (run, word) = against("client", mode, Some("1/client-preamble,4/client-session"));
        assert_cases_in_time(&run);
        assert!(
            run.failed().contains("4/client-session"),
            "{mode}: {}",
            run.text()
        );
        assert!(
            run.peak_kib < 48 * 1024,
            "{mode}: the runner held {} KiB",
            run.peak_kib
        );
        no_leftovers(&word);
    }
}

#[test]
fn a_client_that_exits_0_without_connecting_is_named_as_such() {
    let (run, _) = against("client", "exit0", Some("4/client-session"));
    assert_eq!(run.failed(), set(&["4/client-session"]), "{}", run.text());
    let detail = run.detail("4/client-session");
    assert!(
        detail.contains("exited with status 0 without connecting"),
        "{detail}"
    );
}

/// The Go tutorial's kind of server: it echoes raw bytes and has no framed session. It is
/// said once, at the start, and the framed cases are UNIMPLEMENTED at once (not 43 timeouts);
/// `--require framed` (or `--strict`) makes them failures.
#[test]
fn a_raw_echo_server_is_recognised_at_once() {
    let word = Token::new("echo");
    let cmd = hostile_cmd("server", "echo", &word);
    let run = run_cases(&["server", "--cmd", &cmd], RUN_LIMIT);
    assert_eq!(run.code, Some(0), "{}", run.text());
    // Every case that needs a framed session is UNIMPLEMENTED; the others (raw mode, and a
    // connection closed before its first byte) run, and pass.
    let framed: BTreeSet<String> = run
        .cases()
        .filter(|c| c["needs"].as_array().unwrap().iter().any(|n| n == "framed"))
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let unimplemented = run.with("UNIMPLEMENTED");
    assert_eq!(unimplemented, framed, "{}", run.text());
    assert_eq!(
        run.with("OK").len() + framed.len(),
        run.verdicts().len(),
        "{}",
        run.text()
    );
    assert!(run.with("OK").contains("2/back-pressure"), "{}", run.text());
    let said: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("raw echo server"))
        .collect();
    assert_eq!(said.len(), 1, "{}", run.text());
    assert!(run.elapsed < Duration::from_secs(15), "{}", run.text());

    let strict = run_cases(&["server", "--cmd", &cmd, "--require", "framed"], RUN_LIMIT);
    assert_eq!(strict.code, Some(1), "{}", strict.text());
    assert_eq!(strict.failed(), unimplemented, "{}", strict.text());
    no_leftovers(&word);
}

/// With stderr a pipe nobody reads, an error still exits with its own status: the line
/// that cannot be written is dropped, not a panic (exit 101).
#[test]
fn an_error_with_stderr_closed_exits_with_its_status_not_a_panic() {
    for (args, code) in [
        (vec!["server", "--socket", "/nonexistent/x.sock"], 2),
        (vec!["server", "--cmd", "/nonexistent/prog {sock}"], 2),
        (
            vec!["server", "--cmd", &server_cmd("none"), "--cases", "nope"],
            2,
        ),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let run = run_runner(&args, RUN_LIMIT, Stdio::from(writer));
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.text());
    }
}
