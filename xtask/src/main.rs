//! `cargo xtask`: the project's automation, in Rust (no shell scripts to keep in sync).
//!
//! - `ci`: every check in order, fail fast (the steps are `ci::STEPS`, also listed by `--help`).
//! - `e2e`: what only the whole release binaries show.
//! - `nc-compat`: OpenBSD `nc` and `socat` against our binaries, both directions.
//! - `examples`: the proto crate's examples, run for real.
//! - `conformance`: `udsecho-conformance` against the release server and client, and against
//!   the Go tutorial's server and socat (raw echo servers: checks the verdicts it gives them).
//! - `dist`: what a release ships.
//! - `bench`: udsecho against the epoll reference and other echo servers.
//! - `soak`: mixed faults against the server, with memory and descriptor checks.
//! - `fuzz`: the cargo-fuzz targets (not part of `ci`; the property tests are).

mod bench;
mod child;
mod ci;
mod conformance;
mod dist;
mod e2e;
mod examples;
mod fuzz;
mod nc_compat;
mod scenario;
mod soak;
mod tools;

use std::process::ExitCode;

fn usage() -> String {
    let steps: Vec<&str> = ci::STEPS.iter().map(|(name, _)| *name).collect();
    format!(
        "\
usage: cargo xtask <task>

tasks:
  ci          every check, stopping at the first failure (what .ci/run calls):
              {}
  e2e         what only the whole release binaries show (mixed concurrent peers, a slow reader)
  nc-compat   OpenBSD nc and socat against our server and client
  examples    run the proto crate's examples against each other and against the server
  conformance udsecho-conformance against the release server (--strict) and client (JUnit
              reports in target/conformance/), then against the Go tutorial server and socat
              (raw echo servers: their verdicts are checked)
  dist        stripped release tarball per target, with man pages, completions and
              SHA256SUMS, in target/dist/ [--target TRIPLE]...
  soak        mixed-fault load with memory and fd checks [--seconds N, default 30]
  fuzz        every cargo-fuzz target under fuzz/ [--seconds N, default 60]
  bench       udsecho against the epoll reference, plain tokio, Go and socat, under one load
              generator; results in target/bench/ [--quick] [--only TEXT]
",
        steps.join(", ")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("e2e") => e2e::run(),
        Some("nc-compat") => nc_compat::run(),
        Some("dist") => dist::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("examples") => examples::run(),
        Some("conformance") => conformance::run(),
        Some("-h" | "--help" | "help") => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("xtask: unknown task {other:?}\n\n{}", usage());
            return ExitCode::from(2);
        }
        None => {
            eprint!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
