//! `cargo xtask bench [--quick] [--only TEXT]`: udsecho side by side with the physical-limit
//! reference (a minimal epoll echo, `xtask/fixtures/epoll-echo`) and the servers people run
//! (plain tokio, the Go tutorial server, socat), all under one load generator
//! (`xtask/fixtures/loadgen`: one thread, one epoll set, every echoed byte verified, the
//! server's CPU read from /proc). Runs are interleaved (A B C, A B C, ...) so drift on the
//! machine hits every server alike.
//!
//! - `scenario`: what is measured, and for how long (`Plan`: full or `--quick`);
//! - `peer`: who is measured, and how to build, start and stop each;
//! - `run`: one measured run;
//! - `report`: medians, ratios, and `target/bench/results.md`, `results.json` (tables only:
//!   the hand-written SVG chart is gone, #19);
//! - `scaling`: `--scaling`, each server at 1, 2, 4, ... threads pinned to half the cores,
//!   the multi-threaded generator on the other half.
//!
//! A benchmark, not a test: it fails only when a run fails (an echo mismatch, a server that
//! does not start), never on a figure.

mod peer;
mod report;
mod run;
mod scaling;
mod scenario;

use std::fs;
use std::path::Path;
use std::time::Instant;

use self::peer::{Contender, Setup};
use self::report::{Column, Results, Row};
use self::scenario::{Load, Plan};

const USAGE: &str = "usage: cargo xtask bench [--quick] [--only TEXT] [--scaling]
  --quick      one short run per cell (what `cargo xtask ci` runs as a smoke check)
  --only TEXT  only the scenarios whose name contains TEXT (e.g. --only stream)
  --scaling    server on half the cores, loadgen on the other half: each server at
               1, 2, 4, ... threads (on 2 cores: 1 + 1, and it says it cannot scale)";

/// The command-line options.
#[derive(Debug)]
struct Options {
    quick: bool,
    only: Option<String>,
    scaling: bool,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        only: None,
        scaling: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--scaling" => opts.scaling = true,
            "--only" => {
                let text = args.next().ok_or(format!("--only needs a text\n{USAGE}"))?;
                opts.only = Some(text.clone());
            }
            other => return Err(format!("unknown bench option {other:?}\n{USAGE}")),
        }
    }
    if opts.scaling && opts.only.is_some() {
        return Err(format!(
            "--scaling has its own scenarios; --only does not apply\n{USAGE}"
        ));
    }
    Ok(opts)
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let opts = options(args)?;
    if opts.scaling {
        return scaling::run(opts.quick);
    }
    let plan = Plan::new(opts.quick);
    let scenarios: Vec<_> = scenario::all(&plan)
        .into_iter()
        .filter(|s| {
            opts.only
                .as_ref()
                .is_none_or(|o| s.name.contains(o.as_str()))
        })
        .collect();
    if scenarios.is_empty() {
        return Err(format!(
            "no scenario name contains {:?}",
            opts.only.unwrap_or_default()
        ));
    }
    udsecho_harness::raise_fd_limit();
    crate::tools::release_binaries_and(&["tokio-echo", "epoll-echo", "loadgen"])?;
    let out_dir = crate::tools::target_dir().join("bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let setup = Setup::new(&out_dir);

    let mut rows: Vec<Row> = scenarios
        .into_iter()
        .map(|scenario| Row {
            columns: setup
                .contenders(&scenario, &plan)
                .into_iter()
                .map(|contender| Column {
                    contender,
                    runs: Vec::new(),
                })
                .collect(),
            scenario,
        })
        .collect();
    check_pipe_clients(&setup, &rows)?;

    // Measured before any run, on a quiet machine: what a recording can be written at.
    let records = rows
        .iter()
        .any(|r| r.column(Contender::ProxyRecording).is_some());
    let file_write_mb_per_sec = if records {
        Some(run::file_write_rate(plan.pipe_bytes.min(512 << 20))?)
    } else {
        None
    };
    let total: usize = plan.reps * rows.iter().map(|r| r.columns.len()).sum::<usize>();
    let started = Instant::now();
    let mut done = 0;
    for rep in 1..=plan.reps {
        for row in &mut rows {
            for column in &mut row.columns {
                done += 1;
                eprint!(
                    "bench [{done}/{total}] run {rep}: {} — {} ... ",
                    row.scenario.name,
                    column.contender.name()
                );
                let measured =
                    run::one(&setup, &plan, &row.scenario, column.contender).map_err(|e| {
                        format!(
                            "{} against {}: {e}",
                            row.scenario.name,
                            column.contender.name()
                        )
                    })?;
                eprintln!("ok ({:.0} s elapsed)", started.elapsed().as_secs_f64());
                column.runs.push(measured);
            }
        }
    }

    let results = Results {
        machine: machine(),
        command: if opts.quick {
            "cargo xtask bench --quick".to_owned()
        } else {
            "cargo xtask bench".to_owned()
        },
        plan,
        file_write_mb_per_sec,
        rows,
    };
    let md = results.markdown();
    write(&out_dir.join("results.md"), &md)?;
    write(&out_dir.join("results.json"), &results.json()?)?;
    println!("{md}");
    println!(
        "wrote {}/results.md, results.json ({:.0} s)",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    if setup.go_echo.is_none() {
        println!("note: `go` is not installed (apt-get install golang-go); no Go column");
    }
    Ok(())
}

/// The pipe scenario times clients writing to /dev/null; first make sure each one really
/// passes every byte through.
fn check_pipe_clients(setup: &Setup, rows: &[Row]) -> Result<(), String> {
    for row in rows
        .iter()
        .filter(|r| matches!(r.scenario.load, Load::Pipe { .. }))
    {
        for column in &row.columns {
            run::pipe_check(setup, column.contender)
                .map_err(|e| format!("pipe check of {}: {e}", column.contender.name()))?;
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Cores, CPU model and kernel, for the report's first line.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::peer::Contender;
    use super::*;

    #[test]
    fn bad_options_are_one_clear_error() {
        assert!(
            options(&["--only".to_owned()])
                .unwrap_err()
                .starts_with("--only needs")
        );
        assert!(
            options(&["--fast".to_owned()])
                .unwrap_err()
                .contains("unknown bench option")
        );
        let o = options(&["--quick".to_owned(), "--only".to_owned(), "idle".to_owned()]).unwrap();
        assert!(o.quick && o.only.as_deref() == Some("idle") && !o.scaling);
        let o = options(&["--scaling".to_owned(), "--quick".to_owned()]).unwrap();
        assert!(o.scaling && o.quick);
        assert!(
            options(&["--scaling".to_owned(), "--only".to_owned(), "x".to_owned()])
                .unwrap_err()
                .contains("--only does not apply")
        );
    }

    #[test]
    fn contender_roles_name_one_reference_per_table() {
        assert_eq!(Contender::Epoll.role(), peer::Role::Reference);
        assert_eq!(Contender::NcPipe.role(), peer::Role::Reference);
    }
}
