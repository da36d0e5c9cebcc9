//! `cargo xtask conformance`: `udsecho-conformance` against both release binaries, the way
//! another implementation would run it (docs/conformance.md), the server held to the whole
//! text (`--strict`); then against implementations nobody here wrote — the Go tutorial's echo
//! server and `socat ... EXEC:cat`, raw echo servers both — checking the verdicts the runner
//! gives them and that it gives them quickly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::child;
use crate::tools::{build_go, ensure_nc_and_socat, release_binaries_and, target_dir};

/// How long the runner may take on a raw echo server (it takes about 1.5 s: the framed
/// cases are decided by its first probe, not each by a timeout).
const RAW_ECHO_LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn run() -> Result<(), String> {
    release_binaries_and(&["udsecho-conformance"])?;
    let bin = target_dir().join("release");
    let runner = bin.join("udsecho-conformance");
    let server = format!(
        "{} -q --socket {{sock}}",
        bin.join("udsecho-server").display()
    );
    let client = format!(
        "{} pipe --framed --socket {{sock}}",
        bin.join("udsecho-client").display()
    );
    let reports = target_dir().join("conformance");
    std::fs::create_dir_all(&reports).map_err(|e| format!("{}: {e}", reports.display()))?;
    for (mode, cmd, strict) in [("server", &server, true), ("client", &client, false)] {
        println!("conformance: {mode}: {cmd}");
        let mut command = Command::new(&runner);
        command.args([mode, "--cmd", cmd.as_str()]);
        if strict {
            command.arg("--strict");
        }
        command
            .arg("--junit")
            .arg(reports.join(format!("{mode}.xml")));
        let status = command
            .status()
            .map_err(|e| format!("cannot run {}: {e}", runner.display()))?;
        if !status.success() {
            return Err(format!(
                "udsecho-{mode} failed conformance cases ({status})"
            ));
        }
    }
    let go = build_go(&reports)?;
    ensure_nc_and_socat()?;
    let others = [
        ("go-echo", format!("{} {{sock}}", go.display())),
        ("socat", "socat UNIX-LISTEN:{sock},fork EXEC:cat".to_owned()),
    ];
    for (name, cmd) in others {
        raw_echo_verdicts(&runner, name, &cmd, &reports)?;
    }
    Ok(())
}

/// Runs the runner against a raw echo server that `cmd` starts, and checks what it says: a
/// raw echo server (its first line), every case that needs a framed session UNIMPLEMENTED
/// for want of one, every other case (raw mode, and a connection closed before any byte) OK,
/// exit 0, within [`RAW_ECHO_LIMIT`].
fn raw_echo_verdicts(runner: &Path, name: &str, cmd: &str, reports: &Path) -> Result<(), String> {
    println!("conformance: {name} (a raw echo server nobody here wrote): {cmd}");
    let json = reports.join(format!("{name}.json"));
    let start = Instant::now();
    let out = child::output_within(
        Command::new(runner)
            .args(["server", "--cmd", cmd, "--json"])
            .arg(&json),
        b"",
        RAW_ECHO_LIMIT,
    )?;
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wrong = |why: String| {
        format!(
            "udsecho-conformance against {name}: {why}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    if !out.status.success() {
        return Err(wrong(format!("exited with {}", out.status)));
    }
    let text =
        std::fs::read_to_string(&json).map_err(|e| wrong(format!("{}: {e}", json.display())))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| wrong(format!("its JSON: {e}")))?;
    let target = doc["target"].as_str().unwrap_or_default();
    if !target.contains("a raw echo server") {
        return Err(wrong(format!(
            "the first line does not name a raw echo server: {target:?}"
        )));
    }
    let cases = doc["cases"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for case in cases {
        let id = case["id"].as_str().unwrap_or_default();
        let verdict = case["verdict"].as_str().unwrap_or_default();
        let detail = case["detail"].as_str().unwrap_or_default();
        let framed = case["needs"]
            .as_array()
            .is_some_and(|needs| needs.iter().any(|n| n == "framed"));
        let expected = if framed {
            verdict == "UNIMPLEMENTED" && detail.starts_with("framed mode")
        } else {
            verdict == "OK"
        };
        if !expected {
            return Err(wrong(format!("{id} is {verdict} ({detail})")));
        }
    }
    let ok = cases.iter().filter(|c| c["verdict"] == "OK").count();
    if ok == 0 {
        return Err(wrong("no raw case ran".to_owned()));
    }
    println!(
        "conformance: {name}: recognised as a raw echo server; {ok} raw cases OK, {} framed \
         cases UNIMPLEMENTED, in {:.1} s",
        cases.len() - ok,
        took.as_secs_f64()
    );
    Ok(())
}
