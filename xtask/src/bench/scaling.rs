//! `cargo xtask bench --scaling [--quick]`: how each server scales with its threads. The
//! cores this process may run on are split in two halves: the server is pinned to the first
//! (`taskset -c`), the load generator to the second with one thread per core. Each server
//! (the epoll reference, udsecho-server `--threads N`, plain tokio with N workers) runs at
//! 1, 2, 4, ... threads up to the half, interleaved, at 100, 1,000 and 10,000 connections of
//! 64 B ping-pong. Reported per cell: round trips/s and the speed-up over the same server's
//! one thread, the server's cores busy and CPU per round trip (`/proc/PID/stat`), p99, the
//! server's context switches per 1,000 round trips (every thread's `/proc/PID/task/*/status`), and
//! how busy the generator was on its own cores (its headroom).
//!
//! With fewer than 4 cores there is no scaling to show: it says so and runs 1 + 1.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::report::Report;
use serde::Serialize;
use udsecho_harness::short_temp_dir;

use super::peer::{Contender, Setup, taskset};
use super::report::number;

/// The servers compared, in column order: the limit first.
const SERVERS: [Contender; 3] = [Contender::Epoll, Contender::Udsecho, Contender::Tokio];

/// How the cores are shared and what runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Layout {
    /// The server's cores, as a `taskset -c` list.
    pub(crate) server_cpus: String,
    /// The generator's cores, likewise.
    pub(crate) generator_cpus: String,
    /// Generator threads: one per generator core.
    pub(crate) generator_threads: usize,
    /// Server thread counts: 1, 2, 4, ... up to the server's cores.
    pub(crate) threads: Vec<usize>,
}

impl Layout {
    /// Splits `cpus` (the allowed cores, ascending) into two halves.
    pub(crate) fn split(cpus: &[usize]) -> Result<Layout, String> {
        let half = cpus.len() / 2;
        if half == 0 {
            return Err(format!(
                "the scaling bench needs at least 2 cores, this process may use {}",
                cpus.len()
            ));
        }
        let list = |c: &[usize]| c.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let mut threads: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|&n| n <= half)
            .collect();
        if threads.last() != Some(&half) {
            threads.push(half);
        }
        Ok(Layout {
            server_cpus: list(&cpus[..half]),
            generator_cpus: list(&cpus[half..2 * half]),
            generator_threads: half,
            threads,
        })
    }

    /// Whether there is any scaling to see.
    pub(crate) fn scales(&self) -> bool {
        self.generator_threads >= 2
    }
}

/// `0-3,8,10-11` (as in `Cpus_allowed_list`) to `[0, 1, 2, 3, 8, 10, 11]`.
pub(crate) fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("unreadable CPU list {list:?}");
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let n: usize = part.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if from > to {
            return Err(bad());
        }
        cpus.extend(from..=to);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The cores this process may run on (its affinity mask: what `taskset`, cpusets and
/// systemd's `CPUAffinity=` set).
fn allowed_cpus() -> Result<Vec<usize>, String> {
    let status =
        fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or("no Cpus_allowed_list in /proc/self/status")?;
    parse_cpu_list(list)
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    server: Contender,
    connections: usize,
    threads: usize,
    runs: Vec<Report>,
}

impl Cell {
    fn median(&self, f: impl Fn(&Report) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    fn rate(&self) -> Option<f64> {
        self.median(|r| Some(r.round_trips_per_sec))
    }
}

pub(crate) fn run(quick: bool) -> Result<(), String> {
    if !crate::tools::have("taskset") {
        return Err("the scaling bench pins with `taskset` (apt-get install util-linux)".into());
    }
    let layout = Layout::split(&allowed_cpus()?)?;
    if !layout.scales() {
        println!(
            "bench --scaling: {} core(s) here: cannot show scaling; running 1 server thread \
             (core {}) + 1 generator thread (core {}) to check the mode end to end",
            layout.generator_threads * 2,
            layout.server_cpus,
            layout.generator_cpus
        );
    }
    let (reps, warmup, window, counts): (usize, _, _, &[usize]) = if quick {
        (
            1,
            Duration::from_millis(200),
            Duration::from_millis(500),
            &[100],
        )
    } else {
        (
            3,
            Duration::from_millis(500),
            Duration::from_secs(3),
            &[100, 1_000, 10_000],
        )
    };
    udsecho_harness::raise_fd_limit();
    crate::tools::release_binaries_and(&["tokio-echo", "epoll-echo", "loadgen"])?;
    let out_dir = crate::tools::target_dir().join("bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let setup = Setup::new(&out_dir);

    let mut cells: Vec<Cell> = Vec::new();
    for &connections in counts {
        for &threads in &layout.threads {
            for server in SERVERS {
                cells.push(Cell {
                    server,
                    connections,
                    threads,
                    runs: Vec::new(),
                });
            }
        }
    }
    let total = reps * cells.len();
    let started = Instant::now();
    let mut done = 0;
    // Interleaved: every cell once, then every cell again.
    for rep in 1..=reps {
        for cell in &mut cells {
            done += 1;
            eprint!(
                "bench --scaling [{done}/{total}] run {rep}: {} connections, {} × {} ... ",
                cell.connections,
                cell.server.name(),
                cell.threads
            );
            let report = one(&setup, &layout, cell, warmup, window).map_err(|e| {
                format!(
                    "{} with {} threads at {} connections: {e}",
                    cell.server.name(),
                    cell.threads,
                    cell.connections
                )
            })?;
            eprintln!("ok ({:.0} s elapsed)", started.elapsed().as_secs_f64());
            cell.runs.push(report);
        }
    }
    let md = markdown(&layout, &cells, reps, window, quick);
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "machine": super::machine(),
        "layout": layout,
        "reps": reps,
        "window_seconds": window.as_secs_f64(),
        "cells": cells,
    }))
    .map_err(|e| format!("cannot write scaling.json: {e}"))?;
    super::write(&out_dir.join("scaling.md"), &md)?;
    super::write(&out_dir.join("scaling.json"), &json)?;
    println!("{md}");
    println!(
        "wrote {}/scaling.md, scaling.json ({:.0} s)",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One run: the server pinned to its half with `threads` threads, the generator pinned to
/// the other half with one thread per core.
fn one(
    setup: &Setup,
    layout: &Layout,
    cell: &Cell,
    warmup: Duration,
    window: Duration,
) -> Result<Report, String> {
    let dir = short_temp_dir();
    let socket = dir.path().join("s.sock");
    let mut server = setup.start_pinned(
        cell.server,
        &socket,
        Some((cell.threads, &layout.server_cpus)),
    )?;
    let result = loadgen(
        setup,
        layout,
        cell.connections,
        &socket,
        server.id(),
        warmup,
        window,
    );
    crate::child::stop(&mut server, Duration::from_secs(5));
    result
}

fn loadgen(
    setup: &Setup,
    layout: &Layout,
    connections: usize,
    socket: &Path,
    pid: u32,
    warmup: Duration,
    window: Duration,
) -> Result<Report, String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut cmd = Command::new(&setup.loadgen);
    cmd.arg("--socket")
        .arg(socket)
        .args(["--server-pid", &pid.to_string(), "--json"])
        .args(["--warmup", &ms(warmup), "--duration", &ms(window)])
        .args(["--connections", &connections.to_string(), "--size", "64"])
        .args(["--threads", &layout.generator_threads.to_string()]);
    let mut cmd = taskset(&layout.generator_cpus, &cmd);
    let within = warmup + window + Duration::from_secs(120);
    let out =
        crate::child::output_within(&mut cmd, b"", within).map_err(|e| format!("loadgen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "loadgen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable loadgen report: {e}"))
}

fn markdown(layout: &Layout, cells: &[Cell], reps: usize, window: Duration, quick: bool) -> String {
    let mut md = String::from("# udsecho scaling benchmark\n\n");
    let _ = writeln!(
        md,
        "Machine: {}. Server pinned to cores {}, loadgen to cores {} with {} thread(s) (one \
         epoll set each, every byte verified). 64 B ping-pong; {}; a cell is the median of \
         the runs.{}\n",
        super::machine(),
        layout.server_cpus,
        layout.generator_cpus,
        layout.generator_threads,
        if quick {
            format!(
                "one {:.1} s run per cell (--quick: a smoke check, not figures)",
                window.as_secs_f64()
            )
        } else {
            format!(
                "{reps} interleaved runs of {:.0} s per cell",
                window.as_secs_f64()
            )
        },
        if layout.scales() {
            ""
        } else {
            " **This machine has too few cores to show scaling: 1 server thread + 1 \
             generator thread only.**"
        }
    );
    let mut counts: Vec<usize> = cells.iter().map(|c| c.connections).collect();
    counts.dedup();
    let find = |server, connections, threads| {
        cells
            .iter()
            .find(|c| c.server == server && c.connections == connections && c.threads == threads)
    };
    let show = |v: Option<f64>| v.map_or("—".to_owned(), number);
    for connections in counts {
        let _ = writeln!(md, "## {connections} connections\n");
        // The curve: round trips/s per thread count, speed-up over one thread.
        let mut head = vec!["server threads".to_owned()];
        head.extend(
            SERVERS
                .iter()
                .map(|s| format!("{}, round trips/s", s.name())),
        );
        head.push("udsecho ÷ reference".to_owned());
        let _ = writeln!(md, "| {} |", head.join(" | "));
        let _ = writeln!(md, "|---:|{}", "---:|".repeat(head.len() - 1));
        for &threads in &layout.threads {
            let mut row = vec![threads.to_string()];
            for server in SERVERS {
                let rate = find(server, connections, threads).and_then(Cell::rate);
                let one = find(server, connections, 1).and_then(Cell::rate);
                row.push(match (rate, one) {
                    (Some(r), Some(o)) if o > 0.0 => format!("{} ({:.2}×)", number(r), r / o),
                    (r, _) => show(r),
                });
            }
            let ratio = find(Contender::Udsecho, connections, threads)
                .and_then(Cell::rate)
                .zip(find(Contender::Epoll, connections, threads).and_then(Cell::rate))
                .map_or("—".to_owned(), |(u, e)| format!("{:.2}×", u / e));
            row.push(ratio);
            let _ = writeln!(md, "| {} |", row.join(" | "));
        }
        // The detail: cost per round trip and the generator's headroom.
        let _ = writeln!(
            md,
            "\n| server | threads | server cores busy | server CPU µs per round trip | p99 µs \
             | context switches per 1,000 round trips | generator cores busy (of {}) |\n\
             |---|---:|---:|---:|---:|---:|---:|",
            layout.generator_threads
        );
        for server in SERVERS {
            for &threads in &layout.threads {
                let Some(c) = find(server, connections, threads) else {
                    continue;
                };
                let _ = writeln!(
                    md,
                    "| {} | {threads} | {} | {} | {} | {} | {} |",
                    server.name(),
                    show(c.median(|r| r.server.as_ref().map(|s| s.cores))),
                    show(c.median(|r| r.server.as_ref()?.us_per_round_trip)),
                    show(c.median(|r| r.latency_us.as_ref().map(|l| l.p99))),
                    show(c.median(|r| r.server_switches.as_ref()?.per_round_trip.map(|p| p * 1e3))),
                    show(c.median(|r| Some(r.generator.cores))),
                );
            }
        }
        md.push('\n');
    }
    md.push_str(
        "Speed-up in brackets: the server's round trips/s over its own one-thread figure. \
         Context switches: voluntary + involuntary of all the server's threads over the \
         window, per 1,000 round trips (a thread-per-core server at load makes few; threads that \
         hand work to each other sleep and wake per hand-off). The generator has headroom \
         while its cores busy stay below its thread count, and when it drives the reference \
         harder than the server under test at the same threads.\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("5").unwrap(), [5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }

    #[test]
    fn halves_and_thread_counts() {
        let l = Layout::split(&(0..16).collect::<Vec<_>>()).unwrap();
        assert_eq!(l.server_cpus, "0,1,2,3,4,5,6,7");
        assert_eq!(l.generator_cpus, "8,9,10,11,12,13,14,15");
        assert_eq!(l.threads, [1, 2, 4, 8]);
        assert!(l.scales());
        let l = Layout::split(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap();
        assert_eq!(l.threads, [1, 2, 4, 6]);
        // Two cores: 1 + 1, and it says it cannot scale.
        let l = Layout::split(&[0, 1]).unwrap();
        assert_eq!(
            (l.server_cpus.as_str(), l.generator_cpus.as_str()),
            ("0", "1")
        );
        assert_eq!(l.threads, [1]);
        assert!(!l.scales());
        assert!(Layout::split(&[3]).is_err());
    }
}
