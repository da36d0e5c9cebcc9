//! What the runner's integration tests share: the examples' paths, running the runner under
//! a limit (killed, and reported, if it does not end by itself) while watching its peak
//! memory, its JSON results, and the process table.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Resource, Rlimit, Signal};
use udsecho_harness::{bin_dir, binary};

/// An example binary of this crate (`cargo test` builds them).
pub fn example(name: &str) -> PathBuf {
    let path = bin_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples",
        path.display()
    );
    path
}

/// `mutant_server {sock} BUG`.
pub fn server_cmd(bug: &str) -> String {
    format!("{} {{sock}} {bug}", example("mutant_server").display())
}

/// `mutant_client {sock} BUG`.
pub fn client_cmd(bug: &str) -> String {
    format!("{} {{sock}} {bug}", example("mutant_client").display())
}

/// `hostile server|client MODE {sock} TOKEN`.
pub fn hostile_cmd(side: &str, mode: &str, token: &Token) -> String {
    format!(
        "{} {side} {mode} {{sock}} {}",
        example("hostile").display(),
        token.0
    )
}

/// A word no other test uses, put on a target's command line to find its processes in the
/// process table; whatever still carries it is killed when this is dropped, even when the
/// test failed first (a runner killed at its limit leaves its target behind).
#[derive(Debug)]
pub struct Token(pub String);

impl Token {
    pub fn new(name: &str) -> Token {
        Token(format!("hostile-{name}-{}", std::process::id()))
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        kill_leftovers(&self.0);
    }
}

/// What one run of the runner did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (None: killed by a signal, or by us at the limit).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The raw bytes of stdout and stderr together (to look for escape sequences).
    pub raw: Vec<u8>,
    /// The `--json` file, when there was one.
    pub json: Option<serde_json::Value>,
    pub elapsed: Duration,
    /// The most memory the runner held (VmHWM), in KiB.
    pub peak_kib: u64,
    /// False when the runner had to be killed at the limit.
    pub ended: bool,
}

impl Run {
    /// Every case's verdict word, by id.
    pub fn verdicts(&self) -> BTreeMap<String, String> {
        self.cases()
            .map(|c| (str_of(&c["id"]), str_of(&c["verdict"])))
            .collect()
    }

    /// The ids of the cases with this verdict.
    pub fn with(&self, verdict: &str) -> BTreeSet<String> {
        self.verdicts()
            .into_iter()
            .filter(|(_, v)| v == verdict)
            .map(|(id, _)| id)
            .collect()
    }

    pub fn failed(&self) -> BTreeSet<String> {
        self.with("FAILED")
    }

    /// A case's detail line.
    pub fn detail(&self, id: &str) -> String {
        self.cases()
            .find(|c| c["id"] == id)
            .map(|c| str_of(&c["detail"]))
            .unwrap_or_else(|| panic!("no case {id} in {}", self.stdout))
    }

    /// The longest a case took.
    pub fn longest_case(&self) -> (String, Duration) {
        self.cases()
            .map(|c| {
                let ms = c["duration_ms"].as_u64().unwrap_or(u64::MAX);
                (str_of(&c["id"]), Duration::from_millis(ms))
            })
            .max_by_key(|(_, d)| *d)
            .unwrap_or_default()
    }

    /// The cases of the JSON report.
    pub fn cases(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "no JSON; exit {:?}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })["cases"]
            .as_array()
            .expect("the JSON lists the cases")
            .iter()
    }

    /// Everything it printed, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Runs the runner with `args` plus `--timeout 1s --json FILE`, killed after `limit`.
pub fn run_cases(args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--timeout".into(), "1s".into(), "--json".into()]);
    all.push(json.display().to_string());
    let mut run = run_runner(&all, limit, Stdio::piped());
    run.json = std::fs::read_to_string(&json)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    run
}

/// Runs the runner with exactly `args`, its stderr sent to `stderr` (piped: captured),
/// killed after `limit`. Its address space is capped at 2 GiB, so a runner that reads
/// without bound fails instead of taking the machine with it.
pub fn run_runner(args: &[String], limit: Duration, stderr: Stdio) -> Run {
    let start = Instant::now();
    let mut child = Command::new(binary("udsecho-conformance"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let cap = Rlimit {
        current: Some(2 << 30),
        maximum: Some(2 << 30),
    };
    let _ = rustix::process::prlimit(Some(pid), Resource::As, cap);
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let mut peak_kib = 0;
    let mut ended = true;
    let status = loop {
        if let Some(kib) = vm_hwm(child.id()) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            ended = false;
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            break child.wait().unwrap();
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let mut raw = stdout.clone();
    raw.extend(&stderr);
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        raw,
        json: None,
        elapsed,
        peak_kib,
        ended,
    }
}

/// Reads a pipe to its end on a thread, keeping at most 1 MiB.
fn collect(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                if kept.len() < 1 << 20 {
                    kept.extend_from_slice(&chunk[..n]);
                }
            }
        }
        kept
    })
}

/// The peak resident set of a process, in KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The processes whose command line holds `word` (not counting zombies), killed with
/// SIGKILL so a failing test leaves nothing behind either; their command lines.
pub fn kill_leftovers(word: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmdline.contains(word) && !zombie && pid != std::process::id() as i32 {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            found.push(cmdline.trim().to_owned());
        }
    }
    found
}

/// Sets of ids, for assertions.
pub fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}
