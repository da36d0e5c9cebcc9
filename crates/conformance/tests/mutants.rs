//! The runner, tested: udsecho's server and client, the proto crate's example server and the
//! bug-free mutants pass every case; each mutant (one deliberate bug, in
//! `examples/mutant_server.rs` and `examples/mutant_client.rs`) fails exactly the cases meant
//! to catch that bug — at least one mutant per PROTOCOL.md section.
//!
//! The binaries are the workspace's (`cargo test --workspace` builds them all, examples
//! included); each run goes through the released command line, with `--json` read back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use udsecho_harness::{bin_dir, binary};

fn example(name: &str) -> PathBuf {
    let path = bin_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --workspace` builds the examples",
        path.display()
    );
    path
}

/// Runs the runner with `args`; returns the ids of the FAILED cases and the exit code.
fn run(args: &[&str]) -> (BTreeSet<String>, i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let out = Command::new(binary("udsecho-conformance"))
        .args(args)
        .args(["--timeout", "1s", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let failed = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "FAILED")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    (failed, out.status.code().unwrap_or(-1), stdout)
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn server_cmd(bug: &str) -> String {
    format!("{} {{sock}} {bug}", example("mutant_server").display())
}

fn client_cmd(bug: &str) -> String {
    format!("{} {{sock}} {bug}", example("mutant_client").display())
}

/// Every server case id.
fn all_ids(mode: &str) -> BTreeSet<String> {
    let out = Command::new(binary("udsecho-conformance"))
        .args([mode, "--list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn udsecho_server_passes_every_case() {
    let server = binary("udsecho-server");
    let cmd = format!("{} -q --socket {{sock}}", server.display());
    let (failed, code, stdout) = run(&["server", "--cmd", &cmd]);
    assert_eq!(failed, set(&[]), "{stdout}");
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("4/shutdown-drains"), "{stdout}");
    assert!(stdout.trim_end().ends_with("passed, 0 failed"), "{stdout}");
}

#[test]
fn udsecho_client_passes_every_case() {
    let client = binary("udsecho-client");
    let cmd = format!("{} pipe --framed --socket {{sock}}", client.display());
    let (failed, code, stdout) = run(&["client", "--cmd", &cmd]);
    assert_eq!(failed, set(&[]), "{stdout}");
    assert_eq!(code, 0);
}

#[test]
fn the_proto_example_server_passes_with_raw_mode_and_shutdown_unimplemented() {
    let cmd = format!("{} {{sock}}", example("framed_server").display());
    let (failed, code, stdout) = run(&["server", "--cmd", &cmd]);
    assert_eq!(failed, set(&[]), "{stdout}");
    assert_eq!(code, 0);
    assert!(stdout.contains("UNIMPLEMENTED 1/raw-fallback"), "{stdout}");
}

#[test]
fn the_bug_free_mutants_pass() {
    let (failed, code, stdout) = run(&["server", "--cmd", &server_cmd("none")]);
    assert_eq!((failed, code), (set(&[]), 0), "{stdout}");
    let (failed, code, stdout) = run(&["client", "--cmd", &client_cmd("none")]);
    assert_eq!((failed, code), (set(&[]), 0), "{stdout}");
}

#[test]
fn each_server_mutant_fails_exactly_its_cases() {
    let raw_endings = [
        "1/raw-fallback",
        "1/raw-nul-prefix",
        "1/raw-prefix-pause",
        "1/raw-prefix-half-close",
        "2/raw-half-close",
        "2/back-pressure",
    ];
    let mutants: [(&str, &[&str]); 12] = [
        ("prefix-bytes-lost", &["1/raw-nul-prefix"]),
        ("no-pause", &["1/raw-prefix-pause"]),
        ("raw-no-half-close", &raw_endings),
        (
            "length-after-kind",
            &["3/length-4gib", "6/too-large-4gib", "6/too-large-by-one"],
        ),
        (
            "strict-hello",
            &["3.1/hello-appended-fields", "4.2/hello-at-4096"],
        ),
        (
            "answers-client-error",
            &[
                "3.2/error-from-client",
                "3.2/error-from-client-before-hello",
            ],
        ),
        ("unknown-reason-malformed", &["3.3/goodbye-unknown-reason"]),
        ("echo-after-goodbye", &["4/nothing-after-goodbye"]),
        ("no-negotiate-down", &["4.1/negotiate-down"]),
        ("limit-ignores-client", &["3/length-over-max"]),
        ("control-limited", &["4.2/control-frame-above-max-frame"]),
        ("payload-before-place", &["4.3/place-before-payload"]),
    ];
    let mut sections = BTreeSet::new();
    for (bug, expected) in mutants {
        let (failed, code, stdout) = run(&["server", "--cmd", &server_cmd(bug)]);
        assert_eq!(failed, set(expected), "mutant {bug}:\n{stdout}");
        assert_eq!(code, 1, "mutant {bug}");
        for id in expected {
            sections.insert(id.split('/').next().unwrap().to_owned());
        }
    }
    assert_eq!(
        sections,
        set(&[
            "1", "2", "3", "3.1", "3.2", "3.3", "4", "4.1", "4.2", "4.3", "6"
        ])
    );
}

#[test]
fn each_client_mutant_fails_exactly_its_cases() {
    let all = all_ids("client");
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mutants: [(&str, &[&str]); 9] = [
        ("preamble-typo", &all),
        ("strict-hello", &["3.1/client-ignores-appended-fields"]),
        (
            "exit-zero-on-error",
            &["3.2/client-error-frame", "3.2/client-unknown-error-code"],
        ),
        ("error-on-goodbye", &["3.3/client-goodbye-shutdown"]),
        ("one-read-per-frame", &["4/client-split-reads"]),
        ("truncation-ok", &["4/client-server-closes-mid-frame"]),
        ("max-frame-zero", &["4/client-hello-first"]),
        (
            "accepts-any-version",
            &["4.1/client-rejects-unknown-version"],
        ),
        ("ignores-max-frame", &["4.2/client-respects-max-frame"]),
    ];
    for (bug, expected) in mutants {
        let (failed, code, stdout) = run(&["client", "--cmd", &client_cmd(bug)]);
        assert_eq!(failed, set(expected), "mutant {bug}:\n{stdout}");
        assert_eq!(code, 1, "mutant {bug}");
    }
}

#[test]
fn selection_reports_and_usage_errors() {
    let cmd = server_cmd("none");
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let out = Command::new(binary("udsecho-conformance"))
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

    let typo = Command::new(binary("udsecho-conformance"))
        .args(["server", "--cmd", &cmd, "--cases", "9/nothing"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no case matches \"9/nothing\""));

    let neither = Command::new(binary("udsecho-conformance"))
        .arg("server")
        .output()
        .unwrap();
    assert_eq!(neither.status.code(), Some(2));
}

#[test]
fn a_server_that_never_answers_fails_with_a_timeout_not_a_hang() {
    let start = std::time::Instant::now();
    let (failed, code, stdout) = run(&[
        "server",
        "--cmd",
        &server_cmd("silent"),
        "--cases",
        "1/preamble-framed,4/echo-in-order",
    ]);
    assert_eq!(
        failed,
        set(&["1/preamble-framed", "4/echo-in-order"]),
        "{stdout}"
    );
    assert_eq!(code, 1);
    assert!(stdout.contains("timed out"), "{stdout}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}
