//! The runner, tested: udsecho's server and client, the proto crate's example server and the
//! bug-free mutants pass every case; each mutant (one deliberate bug, in
//! `examples/mutant_server/` and `examples/mutant_client.rs`) fails exactly the cases meant
//! to catch that bug; every MUST row of PROTOCOL.md §7 has a mutant that breaks it and fails.
//!
//! The binaries are the workspace's (`cargo test --workspace` builds them all, examples
//! included); each run goes through the released command line, with `--json` read back.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{client_cmd, example, run_cases, server_cmd, set};
use udsecho_harness::binary;

const LIMIT: Duration = Duration::from_secs(180);

const RAW_CASES: &[&str] = &[
    "1/raw-fallback",
    "1/raw-nul-prefix",
    "1/raw-prefix-pause",
    "1/raw-prefix-half-close",
    "2/raw-half-close",
    "2/back-pressure",
];

/// Each server mutant and the cases it fails, by the section of its bug.
const SERVER_MUTANTS: &[(&str, &[&str])] = &[
    // §1 and §2
    ("prefix-bytes-lost", &["1/raw-nul-prefix"]),
    ("detect-bytes-lost", RAW_CASES),
    ("no-pause", &["1/raw-prefix-pause"]),
    ("prefix-eof-dropped", &["1/raw-prefix-half-close"]),
    ("preamble-in-one-read", &["1/preamble-trickled"]),
    (
        "first-read-rest-dropped",
        &["1/preamble-and-frames-in-one-write", "6/session"],
    ),
    (
        "error-on-empty-connection",
        &["1/half-close-before-any-byte"],
    ),
    ("raw-no-half-close", RAW_CASES),
    (
        "drops-after-stall",
        &["2/back-pressure", "4/back-pressure", "4/shutdown-drains"],
    ),
    // §3
    (
        "length-after-kind",
        &["3/length-4gib", "6/too-large-4gib", "6/too-large-by-one"],
    ),
    ("limit-off-by-one", &["3/length-at-max"]),
    (
        "empty-frame-closes",
        &[
            "3/empty-frame",
            "4.3/other-connections-unaffected",
            "6/empty-frame",
        ],
    ),
    ("unknown-kind-waits", &["3/unknown-kind"]),
    ("header-in-pieces", &["3/header-split-bytewise"]),
    (
        "strict-hello",
        &["3.1/hello-appended-fields", "4.2/hello-at-4096"],
    ),
    ("agent-not-checked", &["3.1/hello-agent-not-utf8"]),
    (
        "answers-client-error",
        &[
            "3.2/error-from-client",
            "3.2/error-from-client-before-hello",
        ],
    ),
    ("unknown-reason-malformed", &["3.3/goodbye-unknown-reason"]),
    // §4
    (
        "no-hello-required",
        &[
            "4/hello-first",
            "4/goodbye-before-hello",
            "6/error-data-first",
        ],
    ),
    (
        "duplicate-hello-ok",
        &["4/duplicate-hello", "4.3/place-before-payload"],
    ),
    ("drops-empty-data", &["4/echo-in-order", "6/valid-vectors"]),
    (
        "goodbye-unanswered",
        &[
            "4/goodbye-done",
            "3/length-at-max",
            "3.3/goodbye-unknown-reason",
            "4/nothing-after-goodbye",
            "4.2/control-frame-above-max-frame",
            "6/valid-vectors",
            "6/session",
        ],
    ),
    ("echo-after-goodbye", &["4/nothing-after-goodbye"]),
    ("error-on-partial-header", &["4/partial-header-dropped"]),
    ("drain-drops-queued", &["4/shutdown-drains"]),
    ("goodbye-mid-frame", &["4/shutdown-mid-frame"]),
    ("no-negotiate-down", &["4.1/negotiate-down"]),
    ("accepts-version-zero", &["4.1/version-zero"]),
    ("limit-ignores-client", &["3/length-over-max"]),
    ("accepts-max-frame-zero", &["4.2/max-frame-zero"]),
    ("control-limited", &["4.2/control-frame-above-max-frame"]),
    ("payload-before-place", &["4.3/place-before-payload"]),
    ("error-before-echo", &["4.3/echoed-before-error"]),
    ("error-kills-server", &["4.3/other-connections-unaffected"]),
];

/// A SHOULD, not a MUST: breaking it is NON-STRICT, and FAILED only under `--strict`.
const HOLDS_FRAMES: &[&str] = &[
    "4/cut-through",
    "4/half-close-mid-data",
    "4/shutdown-mid-frame",
];

/// Each client mutant and the cases it fails (`None`: every case).
const CLIENT_MUTANTS: &[(&str, Option<&[&str]>)] = &[
    ("preamble-typo", None),
    (
        "strict-hello",
        Some(&["3.1/client-ignores-appended-fields"]),
    ),
    (
        "exit-zero-on-error",
        Some(&["3.2/client-error-frame", "3.2/client-unknown-error-code"]),
    ),
    ("error-on-goodbye", Some(&["3.3/client-goodbye-shutdown"])),
    ("one-read-per-frame", Some(&["4/client-split-reads"])),
    ("truncation-ok", Some(&["4/client-server-closes-mid-frame"])),
    ("max-frame-zero", Some(&["4/client-hello-first"])),
    (
        "accepts-any-version",
        Some(&["4.1/client-rejects-unknown-version"]),
    ),
    (
        "ignores-max-frame",
        Some(&["4.2/client-respects-max-frame"]),
    ),
    (
        "goodbye-reason-shutdown",
        Some(&[
            "3.1/client-ignores-appended-fields",
            "4/client-session",
            "4/client-split-reads",
        ]),
    ),
    (
        "escape-stderr",
        Some(&[
            "3.1/client-ignores-appended-fields",
            "4/client-session",
            "4/client-split-reads",
        ]),
    ),
];

/// Every case id of a mode.
fn all_ids(mode: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(binary("udsecho-conformance"))
        .args([mode, "--list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn udsecho_server_passes_every_case_strictly() {
    let server = binary("udsecho-server");
    let cmd = format!("{} -q --socket {{sock}}", server.display());
    let run = run_cases(&["server", "--cmd", &cmd, "--strict"], LIMIT);
    assert_eq!(run.failed(), set(&[]), "{}", run.text());
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert_eq!(run.with("OK").len(), run.verdicts().len(), "{}", run.text());
    assert!(
        run.stdout.trim_end().ends_with("passed, 0 failed"),
        "{}",
        run.text()
    );
}

#[test]
fn udsecho_client_passes_every_case() {
    let client = binary("udsecho-client");
    let cmd = format!("{} pipe --framed --socket {{sock}}", client.display());
    let run = run_cases(&["client", "--cmd", &cmd], LIMIT);
    assert_eq!(run.failed(), set(&[]), "{}", run.text());
    assert_eq!(run.code, Some(0));
}

/// Framed-only, no graceful shutdown, whole frames held: its raw cases are UNIMPLEMENTED (it
/// closes raw connections, as the text allows), and so is the drain (SIGTERM kills it); the
/// cut-through cases are NON-STRICT. `--require drain` makes the drain a failure, `--strict`
/// all of them.
#[test]
fn the_proto_example_server_passes_with_raw_mode_and_drain_unimplemented() {
    let cmd = format!("{} {{sock}}", example("framed_server").display());
    let run = run_cases(&["server", "--cmd", &cmd], LIMIT);
    assert_eq!(run.failed(), set(&[]), "{}", run.text());
    assert_eq!(run.code, Some(0));
    let mut unimplemented: Vec<&str> = RAW_CASES.to_vec();
    unimplemented.push("4/shutdown-drains");
    assert_eq!(
        run.with("UNIMPLEMENTED"),
        set(&unimplemented),
        "{}",
        run.text()
    );
    assert_eq!(run.with("NON-STRICT"), set(HOLDS_FRAMES), "{}", run.text());
    assert!(
        run.stdout
            .lines()
            .next()
            .unwrap_or("")
            .contains("framed-only"),
        "{}",
        run.text()
    );

    let drain = run_cases(&["server", "--cmd", &cmd, "--require", "drain"], LIMIT);
    assert_eq!(
        drain.failed(),
        set(&["4/shutdown-drains"]),
        "{}",
        drain.text()
    );
    assert_eq!(drain.code, Some(1));
    let strict = run_cases(&["server", "--cmd", &cmd, "--strict"], LIMIT);
    let mut all = unimplemented;
    all.extend(HOLDS_FRAMES);
    assert_eq!(strict.failed(), set(&all), "{}", strict.text());
}

#[test]
fn the_bug_free_mutants_pass_strictly() {
    let run = run_cases(&["server", "--cmd", &server_cmd("none"), "--strict"], LIMIT);
    assert_eq!(
        (run.failed(), run.code),
        (set(&[]), Some(0)),
        "{}",
        run.text()
    );
    assert_eq!(run.with("OK").len(), run.verdicts().len(), "{}", run.text());
    let run = run_cases(&["client", "--cmd", &client_cmd("none")], LIMIT);
    assert_eq!(
        (run.failed(), run.code),
        (set(&[]), Some(0)),
        "{}",
        run.text()
    );
}

/// Runs the server mutants whose bug is in one of `sections` (their first expected case's),
/// two at a time (a run mostly waits on the cases' own pauses).
fn server_mutants_fail_exactly_their_cases(sections: &[&str]) {
    let mutants: Vec<&(&str, &[&str])> = SERVER_MUTANTS
        .iter()
        .filter(|(_, expected)| sections.contains(&expected[0].split('/').next().unwrap()))
        .collect();
    let wrong: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = mutants
            .chunks(mutants.len().div_ceil(2))
            .map(|share| {
                scope.spawn(move || {
                    let mut wrong = Vec::new();
                    for (bug, expected) in share {
                        let run = run_cases(&["server", "--cmd", &server_cmd(bug)], LIMIT);
                        if run.failed() != set(expected) || run.code != Some(1) {
                            wrong.push(format!(
                                "mutant {bug}: expected exactly {expected:?} to fail\n{}",
                                run.text()
                            ));
                        }
                    }
                    wrong
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn server_mutants_of_sections_1_and_2_fail_exactly_their_cases() {
    server_mutants_fail_exactly_their_cases(&["1", "2"]);
}

#[test]
fn server_mutants_of_section_3_fail_exactly_their_cases() {
    server_mutants_fail_exactly_their_cases(&["3", "3.1", "3.2", "3.3"]);
}

#[test]
fn server_mutants_of_section_4_fail_exactly_their_cases() {
    server_mutants_fail_exactly_their_cases(&["4", "4.1", "4.2", "4.3", "6"]);
}

/// The first expected case of each mutant names the section the mutants are grouped by;
/// every section of the text has at least one.
#[test]
fn every_section_has_a_mutant() {
    let sections: BTreeSet<String> = SERVER_MUTANTS
        .iter()
        .flat_map(|(_, ids)| ids.iter())
        .map(|id| id.split('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        sections,
        set(&[
            "1", "2", "3", "3.1", "3.2", "3.3", "4", "4.1", "4.2", "4.3", "6"
        ])
    );
}

/// PROTOCOL.md §7: each MUST row names cases; some mutant breaking that rule fails one of
/// them (a row of `6/*` counts every case of §6). SHOULD rows: `holds-frames`.
#[test]
fn every_must_of_protocol_md_section_7_has_a_mutant_that_fails_it() {
    let text = include_str!("../../../PROTOCOL.md");
    let table = &text[text.find("## 7.").unwrap()..text.find("## 8.").unwrap()];
    let mut caught: BTreeSet<&str> = SERVER_MUTANTS
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    caught.extend(
        CLIENT_MUTANTS
            .iter()
            .flat_map(|(_, ids)| ids.unwrap_or(&[])),
    );
    caught.extend(HOLDS_FRAMES);
    let mut rows = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (ids, level) = (cells[1], cells[2]);
        assert!(
            level.starts_with("MUST") || level.starts_with("SHOULD"),
            "{row}"
        );
        let ids: Vec<&str> = ids.split('`').skip(1).step_by(2).collect();
        let hit = ids.iter().any(|id| match id.strip_suffix('*') {
            Some(prefix) => caught.iter().any(|c| c.starts_with(prefix)),
            None => caught.contains(id),
        });
        assert!(hit, "no mutant breaks the rule of {row}");
        rows += 1;
    }
    assert!(rows >= 30, "only {rows} rows read from §7");
}

/// A server that holds whole Data frames (allowed, not recommended): NON-STRICT, and under
/// `--strict` (or `--require cut-through`) FAILED.
#[test]
fn holding_whole_frames_is_non_strict_and_fails_under_strict() {
    let cmd = server_cmd("holds-frames");
    let run = run_cases(&["server", "--cmd", &cmd], LIMIT);
    assert_eq!(
        (run.failed(), run.code),
        (set(&[]), Some(0)),
        "{}",
        run.text()
    );
    assert_eq!(run.with("NON-STRICT"), set(HOLDS_FRAMES), "{}", run.text());
    for flag in [&["--strict"][..], &["--require", "cut-through"]] {
        let mut args = vec!["server", "--cmd", &cmd];
        args.extend(flag);
        let run = run_cases(&args, LIMIT);
        assert_eq!(run.failed(), set(HOLDS_FRAMES), "{flag:?}: {}", run.text());
        assert_eq!(run.code, Some(1));
    }
}

#[test]
fn each_client_mutant_fails_exactly_its_cases() {
    let all = all_ids("client");
    for (bug, expected) in CLIENT_MUTANTS {
        let expected = match expected {
            Some(ids) => set(ids),
            None => all.clone(),
        };
        let run = run_cases(&["client", "--cmd", &client_cmd(bug)], LIMIT);
        assert_eq!(run.failed(), expected, "mutant {bug}:\n{}", run.text());
        assert_eq!(run.code, Some(1), "mutant {bug}");
    }
}

#[test]
fn selection_reports_and_usage_errors() {
    let cmd = server_cmd("none");
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let out = std::process::Command::new(binary("udsecho-conformance"))
        .args([
            "server",
            "--cmd",
            &cmd,
            "--cases",
            "4.1/*,3/empty-frame",
            "--exclude",
            "4.1/version-zero",
            "--junit",
        ])
        .arg(&junit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("2 passed, 0 failed"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"4.1/negotiate-down\""), "{xml}");
    assert!(xml.contains("tests=\"2\" failures=\"0\""), "{xml}");

    let typo = std::process::Command::new(binary("udsecho-conformance"))
        .args(["server", "--cmd", &cmd, "--cases", "9/nothing"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no case matches \"9/nothing\""));

    let neither = std::process::Command::new(binary("udsecho-conformance"))
        .arg("server")
        .output()
        .unwrap();
    assert_eq!(neither.status.code(), Some(2));
}

/// A server that reads and never answers: the cases that need its Hello fail at once with
/// what the runner saw when it first asked (a timeout), not a wait each.
#[test]
fn a_server_that_never_answers_fails_with_a_timeout_not_a_hang() {
    let run = run_cases(
        &[
            "server",
            "--cmd",
            &server_cmd("silent"),
            "--cases",
            "1/preamble-framed,4/echo-in-order,4/hello-first",
        ],
        LIMIT,
    );
    assert_eq!(
        run.failed(),
        set(&["1/preamble-framed", "4/echo-in-order", "4/hello-first"]),
        "{}",
        run.text()
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.detail("1/preamble-framed").contains("timed out"),
        "{}",
        run.text()
    );
    assert!(run.elapsed < Duration::from_secs(12), "{}", run.text());
}
