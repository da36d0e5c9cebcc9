//! `cargo xtask bench [--quick]`: udsecho side by side with the echo servers people actually
//! run, under the same load generator (`udsecho-client bench`), interleaved (A B C, A B C, ...)
//! so drift on the machine hits every server alike.
//!
//! Writes `target/bench/results.md`, `results.json` and `chart.svg`. A benchmark, not a test:
//! it fails only when a run fails (an echo mismatch, a server that does not start).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udsecho_harness::{short_temp_dir, wait_for_socket};

use crate::tools::root;

/// A server under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Udsecho,
    Socat,
    Tokio,
    Go,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Udsecho => "udsecho",
            Peer::Socat => "socat fork EXEC:cat",
            Peer::Tokio => "plain tokio",
            Peer::Go => "Go tutorial",
        }
    }
}

/// What a scenario measures and how.
#[derive(Clone)]
enum Load {
    /// `udsecho-client bench` with these flags; the metric is read from its JSON.
    Client {
        args: Vec<&'static str>,
        metric: &'static str,
    },
    /// This many connections that each echo one byte, then sit idle; server RSS per
    /// connection.
    Idle { connections: usize },
}

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    load: Load,
    /// Framed scenarios run against udsecho only (nobody else speaks the protocol).
    udsecho_only: bool,
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let rt = |name, args: Vec<&'static str>| Scenario {
        name,
        unit: "round trips/s",
        higher_is_better: true,
        load: Load::Client {
            args,
            metric: "round_trips_per_sec",
        },
        udsecho_only: false,
    };
    let stream = |name, args: Vec<&'static str>| Scenario {
        name,
        unit: "MB/s",
        higher_is_better: true,
        load: Load::Client {
            args,
            metric: "mb_per_sec",
        },
        udsecho_only: false,
    };
    let mut list = vec![
        rt(
            "ping-pong 64 B, 1 connection",
            vec!["--connections", "1", "--size", "64"],
        ),
        rt(
            "ping-pong 64 B, 100 connections",
            vec!["--connections", "100", "--size", "64"],
        ),
        rt(
            "ping-pong 64 B, 1000 connections",
            vec!["--connections", "1000", "--size", "64"],
        ),
        rt(
            "ping-pong 16 KiB, 1 connection",
            vec!["--connections", "1", "--size", "16KiB"],
        ),
        stream(
            "stream 64 KiB writes, 1 connection",
            vec!["--connections", "1", "--size", "64KiB", "--pipeline", "8"],
        ),
        stream(
            "stream 64 KiB writes, 8 connections",
            vec!["--connections", "8", "--size", "64KiB", "--pipeline", "8"],
        ),
        Scenario {
            name: "10,000 idle connections",
            unit: "KiB server RSS per connection",
            higher_is_better: false,
            load: Load::Idle {
                connections: if quick { 2_000 } else { 10_000 },
            },
            udsecho_only: false,
        },
    ];
    let mut framed = |name, args: Vec<&'static str>, unit| {
        list.push(Scenario {
            name,
            unit,
            higher_is_better: true,
            load: Load::Client {
                args,
                metric: "round_trips_per_sec",
            },
            udsecho_only: true,
        })
    };
    framed(
        "framed ping-pong 64 B, 1 connection",
        vec!["--connections", "1", "--size", "64", "--mode", "framed"],
        "round trips/s",
    );
    framed(
        "framed pipelined 64 B, depth 16, 1 connection",
        vec![
            "--connections",
            "1",
            "--size",
            "64",
            "--mode",
            "framed",
            "--pipeline",
            "16",
        ],
        "frames/s",
    );
    if quick {
        for s in &mut list {
            if s.name.starts_with("10,000") {
                s.name = "2,000 idle connections (quick)";
            }
        }
    }
    list
}

/// Everything the runs need: binaries and which peers are available.
struct Setup {
    client: PathBuf,
    server: PathBuf,
    tokio_echo: PathBuf,
    go_echo: Option<PathBuf>,
    socat: bool,
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 3 };
    let duration = if quick { "1s" } else { "4s" };
    udsecho_harness::raise_fd_limit();

    crate::tools::release_binaries_and(&["tokio-echo"])?;
    let out_dir = crate::tools::target_dir().join("bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let setup = Setup {
        client: udsecho_harness::binary("udsecho-client"),
        server: udsecho_harness::binary("udsecho-server"),
        tokio_echo: udsecho_harness::binary("tokio-echo"),
        go_echo: build_go(&out_dir),
        socat: crate::tools::ensure_nc_and_socat().is_ok(),
    };
    let mut peers = vec![Peer::Udsecho, Peer::Tokio];
    if setup.go_echo.is_some() {
        peers.push(Peer::Go);
    }
    if setup.socat {
        peers.push(Peer::Socat);
    }

    // `--only TEXT` keeps the scenarios whose name contains TEXT (for working on one).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let scenarios: Vec<Scenario> = scenarios(quick)
        .into_iter()
        .filter(|s| only.is_none_or(|o| s.name.contains(o.as_str())))
        .collect();
    let mut results: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); peers.len()]; scenarios.len()];
    let total: usize = reps
        * scenarios
            .iter()
            .map(|s| peers.iter().filter(|p| applies(s, **p)).count())
            .sum::<usize>();
    let mut done = 0;
    let started = Instant::now();
    for rep in 1..=reps {
        for (si, scenario) in scenarios.iter().enumerate() {
            for (pi, &peer) in peers.iter().enumerate() {
                if !applies(scenario, peer) {
                    continue;
                }
                done += 1;
                eprint!(
                    "bench [{done}/{total}] rep {rep}: {} — {} ... ",
                    scenario.name,
                    peer.name()
                );
                let value = run_one(&setup, peer, scenario, duration)
                    .map_err(|e| format!("{} against {}: {e}", scenario.name, peer.name()))?;
                eprintln!(
                    "{value:.1} {} ({:.0} s elapsed)",
                    scenario.unit,
                    started.elapsed().as_secs_f64()
                );
                results[si][pi].push(value);
            }
        }
    }

    let report = Report {
        machine: machine(),
        command: if quick {
            "cargo xtask bench --quick"
        } else {
            "cargo xtask bench"
        },
        reps,
        duration,
        peers: &peers,
        scenarios: &scenarios,
        results: &results,
    };
    let md = report.markdown();
    write(&out_dir.join("results.md"), &md)?;
    write(&out_dir.join("results.json"), &report.json())?;
    write(&out_dir.join("chart.svg"), &report.svg())?;
    println!("{md}");
    println!(
        "wrote {}/results.md, results.json, chart.svg",
        out_dir.display()
    );
    if setup.go_echo.is_none() {
        println!("note: `go` is not installed (apt-get install golang-go); the Go column is empty");
    }
    Ok(())
}

fn applies(scenario: &Scenario, peer: Peer) -> bool {
    match peer {
        Peer::Udsecho => true,
        // A process pair per connection: 10,000 of them is not a benchmark of socat.
        Peer::Socat => !scenario.udsecho_only && !matches!(scenario.load, Load::Idle { .. }),
        _ => !scenario.udsecho_only,
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds the Go tutorial server with the system Go, installing golang-go with apt-get when
/// this user can; `None` (and an empty column) otherwise.
fn build_go(out_dir: &Path) -> Option<PathBuf> {
    let have_go = |cmd: &str| {
        Command::new(cmd)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let go = ["go", "/usr/lib/go/bin/go"]
        .into_iter()
        .find(|g| have_go(g))
        .map(str::to_owned)
        .or_else(|| {
            if rustix::process::geteuid().is_root() {
                eprintln!("bench: installing golang-go with apt-get for the Go peer");
                let ok = Command::new("apt-get")
                    .args(["install", "-y", "-qq", "golang-go"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .is_ok_and(|s| s.success());
                (ok && have_go("go")).then(|| "go".to_owned())
            } else {
                None
            }
        })?;
    let binary = out_dir.join("go-echo");
    let source = root().join("xtask/fixtures/go-echo/main.go");
    let built = Command::new(go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GOCACHE", out_dir.join("go-cache"))
        .env("GO111MODULE", "off")
        .status()
        .is_ok_and(|s| s.success());
    built.then_some(binary)
}

/// Starts one server on a fresh socket and waits until it accepts.
fn start(setup: &Setup, peer: Peer, socket: &Path) -> Result<Child, String> {
    let mut cmd = match peer {
        Peer::Udsecho => {
            let mut c = Command::new(&setup.server);
            c.arg("--socket").arg(socket).arg("--quiet");
            c
        }
        Peer::Tokio => {
            let mut c = Command::new(&setup.tokio_echo);
            c.arg(socket);
            c
        }
        Peer::Go => {
            let mut c = Command::new(setup.go_echo.as_ref().ok_or("no Go peer")?);
            c.arg(socket);
            c
        }
        Peer::Socat => {
            let mut c = Command::new("socat");
            c.arg(format!(
                "UNIX-LISTEN:{},fork,backlog=4096",
                socket.display()
            ))
            .arg("EXEC:cat");
            c
        }
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    wait_for_socket(socket, Instant::now() + Duration::from_secs(10), || false)
        .map_err(|e| format!("never accepted: {e}"))?;
    Ok(child)
}

fn stop(mut child: Child) {
    let _ = udsecho_harness::signal(child.id(), udsecho_harness::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_one(setup: &Setup, peer: Peer, scenario: &Scenario, duration: &str) -> Result<f64, String> {
    let dir = short_temp_dir();
    let socket = dir.path().join("b.sock");
    let server = start(setup, peer, &socket)?;
    let pid = server.id();
    let result = match &scenario.load {
        Load::Client { args, metric } => client_run(setup, &socket, args, metric, duration),
        Load::Idle { connections } => idle_run(&socket, pid, *connections),
    };
    stop(server);
    result
}

fn client_run(
    setup: &Setup,
    socket: &Path,
    args: &[&str],
    metric: &str,
    duration: &str,
) -> Result<f64, String> {
    let out = Command::new(&setup.client)
        .arg("--socket")
        .arg(socket)
        .args([
            "--timeout",
            "30s",
            "bench",
            "--json",
            "--duration",
            duration,
        ])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run the client: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let json = String::from_utf8_lossy(&out.stdout);
    json_number(&json, metric).ok_or_else(|| format!("no {metric} in the client's output: {json}"))
}

/// The number after `"key":` in a flat JSON object.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let after = json.split_once(&format!("\"{key}\":"))?.1;
    let end = after.find([',', '}', '\n']).unwrap_or(after.len());
    after[..end].trim().parse().ok()
}

/// Opens `n` connections that each echo one byte (so the server has really served them),
/// lets them sit, and returns the server's RSS growth per connection in KiB.
fn idle_run(socket: &Path, pid: u32, n: usize) -> Result<f64, String> {
    std::thread::sleep(Duration::from_millis(200));
    let before = udsecho_harness::rss_kib(pid).map_err(|e| e.to_string())?;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = UnixStream::connect(socket).map_err(|e| format!("connection {i}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"x")
            .map_err(|e| format!("connection {i}: {e}"))?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("connection {i}: no echo: {e}"))?;
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = udsecho_harness::rss_kib(pid).map_err(|e| e.to_string())?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

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

struct Report<'a> {
    machine: String,
    command: &'static str,
    reps: usize,
    duration: &'static str,
    peers: &'a [Peer],
    scenarios: &'a [Scenario],
    results: &'a [Vec<Vec<f64>>],
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if !n.is_multiple_of(2) => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        let whole = v.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.2}")
    }
}

impl Report<'_> {
    /// udsecho's median over the best other server's median, oriented so above 1 means
    /// udsecho wins.
    fn ratio(&self, si: usize) -> Option<f64> {
        let ours = median(&self.results[si][0])?;
        let scenario = &self.scenarios[si];
        let peers = self.results[si].iter().skip(1).filter_map(|r| median(r));
        let best = if scenario.higher_is_better {
            peers.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))))?
        } else {
            peers.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))))?
        };
        Some(if scenario.higher_is_better {
            ours / best
        } else {
            best / ours.max(1e-9)
        })
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Machine: {}. Command: `{}` ({} repetition(s) of {} per run, servers interleaved; \
             median, min–max in brackets). Ratio: udsecho against the best other server \
             (above 1.00× means udsecho wins).\n",
            self.machine, self.command, self.reps, self.duration
        );
        let _ = write!(md, "| scenario | unit |");
        for p in self.peers {
            let _ = write!(md, " {} |", p.name());
        }
        let _ = writeln!(md, " ratio |");
        let _ = write!(md, "|---|---|");
        for _ in self.peers {
            let _ = write!(md, "---:|");
        }
        let _ = writeln!(md, "---:|");
        for (si, s) in self.scenarios.iter().enumerate() {
            let _ = write!(md, "| {} | {} |", s.name, s.unit);
            for runs in &self.results[si] {
                match median(runs) {
                    Some(m) if runs.len() > 1 => {
                        let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let _ = write!(
                            md,
                            " {} [{}–{}] |",
                            fmt_value(m),
                            fmt_value(lo),
                            fmt_value(hi)
                        );
                    }
                    Some(m) => {
                        let _ = write!(md, " {} |", fmt_value(m));
                    }
                    None => md.push_str(" — |"),
                }
            }
            match self.ratio(si) {
                Some(r) => {
                    let _ = writeln!(md, " {r:.2}× |");
                }
                None => md.push_str(" — |\n"),
            }
        }
        md
    }

    fn json(&self) -> String {
        let mut j = String::new();
        let _ = write!(
            j,
            "{{\n  \"machine\": {:?},\n  \"command\": {:?},\n  \"repetitions\": {},\n  \"duration\": {:?},\n  \"scenarios\": [",
            self.machine, self.command, self.reps, self.duration
        );
        for (si, s) in self.scenarios.iter().enumerate() {
            let _ = write!(
                j,
                "{}\n    {{\n      \"name\": {:?},\n      \"unit\": {:?},\n      \"higher_is_better\": {},\n      \"ratio_to_best_peer\": {},\n      \"servers\": {{",
                if si > 0 { "," } else { "" },
                s.name,
                s.unit,
                s.higher_is_better,
                self.ratio(si)
                    .map_or("null".to_owned(), |r| format!("{r:.4}"))
            );
            let mut first = true;
            for (pi, p) in self.peers.iter().enumerate() {
                let runs = &self.results[si][pi];
                let Some(m) = median(runs) else { continue };
                let list: Vec<String> = runs.iter().map(|v| format!("{v:.3}")).collect();
                let _ = write!(
                    j,
                    "{}\n        {:?}: {{ \"median\": {m:.3}, \"runs\": [{}] }}",
                    if first { "" } else { "," },
                    p.name(),
                    list.join(", ")
                );
                first = false;
            }
            j.push_str("\n      }\n    }");
        }
        j.push_str("\n  ]\n}\n");
        j
    }

    /// One row of bars per scenario, each scaled to the best server in that scenario, so the
    /// chart reads at a glance: the longest bar wins (shortest for memory).
    fn svg(&self) -> String {
        const COLORS: [&str; 4] = ["#d9480f", "#1c7ed6", "#2f9e44", "#7048e8"];
        let bar_h = 14;
        let label_w = 330;
        let bar_w = 420;
        let row_h = bar_h * self.peers.len() as i32 + 22;
        let legend_h = 30;
        let height = legend_h + row_h * self.scenarios.len() as i32 + 20;
        let width = label_w + bar_w + 140;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for (pi, p) in self.peers.iter().enumerate() {
            let x = 10 + pi as i32 * 190;
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"8\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"18\">{}</text>",
                COLORS[pi % COLORS.len()],
                x + 16,
                p.name()
            );
        }
        for (si, s) in self.scenarios.iter().enumerate() {
            let top = legend_h + si as i32 * row_h;
            let medians: Vec<Option<f64>> = self.results[si].iter().map(|r| median(r)).collect();
            let max = medians
                .iter()
                .flatten()
                .copied()
                .fold(0.0, f64::max)
                .max(1e-9);
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text><text x=\"10\" y=\"{}\" fill=\"#555\">{}{}</text>",
                top + 14,
                s.name,
                top + 28,
                s.unit,
                if s.higher_is_better {
                    " (longer is better)"
                } else {
                    " (shorter is better)"
                }
            );
            for (pi, m) in medians.iter().enumerate() {
                let Some(m) = m else { continue };
                let y = top + 4 + pi as i32 * bar_h;
                let w = ((m / max) * f64::from(bar_w)).max(1.0) as i32;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                    bar_h - 2,
                    COLORS[pi % COLORS.len()],
                    label_w + w + 6,
                    y + bar_h - 4,
                    fmt_value(*m)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}
