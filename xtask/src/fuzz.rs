//! `cargo xtask fuzz [--seconds N]`: every cargo-fuzz target under `fuzz/`, one after the
//! other, for N seconds in all (default 60), starting from the seed corpus in
//! `fuzz/corpus/<target>` (new inputs go to `target/fuzz-corpus/`, so the tree stays clean).
//!
//! cargo-fuzz passes nightly-only sanitizer flags to rustc. This machine has one stable
//! toolchain, so on stable the runs set `RUSTC_BOOTSTRAP=1`, which lets stable rustc accept
//! them. A crash leaves its input in `fuzz/artifacts/<target>/`: fix the bug, then copy the
//! input into the seed corpus as a regression case.

use std::process::Command;

use crate::scenario::Scenarios;
use crate::tools::{root, target_dir};

const TARGETS: [&str; 3] = ["decode", "detect", "connection"];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let seconds = crate::tools::seconds_arg(args, 60)?;
    ensure_cargo_fuzz()?;
    let per_target = (seconds / TARGETS.len() as u64).max(5);
    let mut s = Scenarios::new("fuzz");
    for target in TARGETS {
        s.run(&format!("{target} for {per_target} s"), || {
            run_target(target, per_target)
        });
    }
    s.finish()
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    let have = crate::tools::cargo_command()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    crate::tools::cargo(&["install", "cargo-fuzz", "--locked"])
}

fn run_target(target: &str, seconds: u64) -> Result<(), String> {
    let fuzz_dir = root().join("fuzz");
    let work = target_dir().join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let mut cmd = crate::tools::cargo_command();
    cmd.current_dir(&fuzz_dir)
        .args(["fuzz", "run", target])
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // The connection target keeps one server alive for the whole run, on purpose.
        .arg("-detect_leaks=0");
    if !rustc_is_nightly() {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        if let Some(done) = log.lines().rev().find(|l| l.starts_with("Done ")) {
            println!("    {done}");
        }
        Ok(())
    } else {
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                    && !l.trim_start().starts_with("at ")
            })
            .collect();
        let start = tail.len().saturating_sub(25);
        Err(format!(
            "finding or failure (input saved under fuzz/artifacts/{target}/):\n{}",
            tail[start..].join("\n")
        ))
    }
}

fn rustc_is_nightly() -> bool {
    Command::new("rustc")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"))
}
