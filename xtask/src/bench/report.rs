//! The results of a bench run and their two forms: `results.md` for people (tables with
//! medians, ranges and ratios) and `results.json` for tools (serde, every run's full report).
//! Both are built from one list of the figures a run yields ([`Figure`]): a table shows one
//! figure (or, for latency, three), and the JSON lists them all. There is no chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::peer::{Contender, Role};
use super::run::Measured;
use super::scenario::{Load, Plan, Scenario};

/// Everything measured.
#[derive(Debug)]
pub(crate) struct Results {
    pub(crate) machine: String,
    pub(crate) command: String,
    pub(crate) plan: Plan,
    pub(crate) rows: Vec<Row>,
    /// MB/s one thread writes to a file in the runs' directory with nothing else running
    /// (measured when a proxied scenario records): the ceiling of a recording.
    pub(crate) file_write_mb_per_sec: Option<f64>,
}

/// One scenario and its columns.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) scenario: Scenario,
    pub(crate) columns: Vec<Column>,
}

/// One contender's runs of one scenario.
#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) contender: Contender,
    pub(crate) runs: Vec<Measured>,
}

/// Median and range of some runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: usize,
}

impl Stats {
    fn of(mut values: Vec<f64>) -> Option<Stats> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => values[n / 2],
            _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        Some(Stats {
            median,
            min: values[0],
            max: values[n - 1],
            runs: n,
        })
    }
}

/// A figure one run yields. The tables show them and `results.json` lists every one, both
/// from this one list, so the two forms cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Figure {
    /// Round trips/s, MB/s, or KiB per idle connection: the scenario's unit.
    Headline,
    /// The server's CPU per round trip (µs) or per GB (s).
    ServerCpu,
    /// The generator's CPU per unit, as the server's.
    GeneratorCpu,
    /// Cores the generator kept busy in the window.
    GeneratorCores,
    /// Latency percentiles, µs.
    P50,
    P99,
    P999,
}

impl Figure {
    const ALL: [Figure; 7] = [
        Figure::Headline,
        Figure::ServerCpu,
        Figure::GeneratorCpu,
        Figure::GeneratorCores,
        Figure::P50,
        Figure::P99,
        Figure::P999,
    ];

    /// This figure of one run of a scenario with `load`, where it has one.
    fn of(self, m: &Measured, load: Load) -> Option<f64> {
        let report = || match m {
            Measured::Load(r) => Some(&**r),
            Measured::Pipe(_) => None,
        };
        let latency = || report()?.latency_us.as_ref();
        match self {
            Figure::Headline => match (m, load) {
                (Measured::Pipe(p), _) => Some(p.mb_per_sec),
                (Measured::Load(r), Load::Idle { .. }) => {
                    r.idle.as_ref().map(|i| i.kib_per_connection)
                }
                (Measured::Load(r), Load::Stream { .. }) => Some(r.mb_per_sec),
                (Measured::Load(r), _) => Some(r.round_trips_per_sec),
            },
            Figure::ServerCpu => per_unit(report()?.server.as_ref()?, load),
            Figure::GeneratorCpu => per_unit(&report()?.generator, load),
            Figure::GeneratorCores => {
                let r = report()?;
                (r.seconds > 0.0).then_some(r.generator.cores)
            }
            Figure::P50 => latency().map(|l| l.p50),
            Figure::P99 => latency().map(|l| l.p99),
            Figure::P999 => latency().map(|l| l.p999),
        }
    }

    /// Whether a larger value is better in `scenario` (decides the best peer).
    fn higher_is_better(self, scenario: &Scenario) -> bool {
        match self {
            Figure::Headline => scenario.higher_is_better(),
            _ => false,
        }
    }
}

impl Measured {
    fn report(&self) -> Option<&loadgen::report::Report> {
        match self {
            Measured::Load(r) => Some(r),
            Measured::Pipe(_) => None,
        }
    }
}

fn per_unit(cpu: &loadgen::report::CpuUse, load: Load) -> Option<f64> {
    match load {
        Load::Pingpong { .. } | Load::Blocking { .. } => cpu.us_per_round_trip,
        Load::Stream { .. } => cpu.s_per_gb,
        Load::Idle { .. } | Load::Pipe { .. } => None,
    }
}

impl Column {
    fn stats(&self, f: impl Fn(&Measured) -> Option<f64>) -> Option<Stats> {
        Stats::of(self.runs.iter().filter_map(f).collect())
    }

    /// `figure` over this column's runs of a scenario with `load`.
    fn figure(&self, figure: Figure, load: Load) -> Option<Stats> {
        self.stats(|m| figure.of(m, load))
    }
}

impl Row {
    pub(crate) fn column(&self, who: Contender) -> Option<&Column> {
        self.columns.iter().find(|c| c.contender == who)
    }

    fn with_role(&self, role: Role) -> impl Iterator<Item = &Column> {
        self.columns
            .iter()
            .filter(move |c| c.contender.role() == role)
    }

    fn median_of(&self, column: &Column, f: &impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
        column.stats(f).map(|s| s.median)
    }

    /// Ours ÷ the reference and ours ÷ the best peer, of `figure`.
    fn figure_ratios(&self, figure: Figure) -> (Option<f64>, Option<f64>) {
        let load = self.scenario.load;
        self.ratios(
            |m| figure.of(m, load),
            figure.higher_is_better(&self.scenario),
        )
    }

    /// Ours ÷ the reference, and ours ÷ the best peer, of the figure `f` (`higher`: whether
    /// larger is better, which decides the best peer).
    fn ratios(
        &self,
        f: impl Fn(&Measured) -> Option<f64>,
        higher: bool,
    ) -> (Option<f64>, Option<f64>) {
        let ours = self
            .with_role(Role::Ours)
            .next()
            .and_then(|c| self.median_of(c, &f));
        let reference = self
            .with_role(Role::Reference)
            .next()
            .and_then(|c| self.median_of(c, &f));
        let best = self
            .with_role(Role::Peer)
            .filter_map(|c| self.median_of(c, &f))
            .reduce(|a, b| if (b > a) == higher { b } else { a });
        let ratio = |other: Option<f64>| match (ours, other) {
            (Some(o), Some(x)) if x > 1e-9 => Some(o / x),
            _ => None,
        };
        (ratio(reference), ratio(best))
    }
}

/// Columns of the server tables, in order.
const SERVERS: [Contender; 6] = [
    Contender::Udsecho,
    Contender::EpollPolling,
    Contender::Epoll,
    Contender::Tokio,
    Contender::Go,
    Contender::Socat,
];
/// Columns of the proxy table, in order.
const PROXIES: [Contender; 4] = [
    Contender::Proxy,
    Contender::ProxyRecording,
    Contender::Epoll,
    Contender::SocatProxy,
];
const PIPE_CLIENTS: [Contender; 3] = [
    Contender::ClientPipe,
    Contender::NcPipe,
    Contender::SocatPipe,
];

/// A markdown table: the first `left` columns left-aligned, the rest right-aligned.
struct Table {
    head: Vec<String>,
    left: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: Vec<String>, left: usize) -> Table {
        Table {
            head,
            left,
            rows: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let rule: Vec<String> = (0..self.head.len())
            .map(|i| if i < self.left { "---" } else { "---:" }.to_owned())
            .collect();
        let mut out = line(&self.head) + &line(&rule);
        for row in &self.rows {
            out += &line(row);
        }
        out
    }
}

/// `1,234,567` from 100 up, two decimals below.
pub(crate) fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        let digits = (v.round() as i64).to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && c != '-' && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"))
}

impl Results {
    fn ranges(&self) -> bool {
        self.plan.reps > 1
    }

    /// A cell: the median, with `[min–max]` when there were several runs.
    fn cell(&self, stats: Option<Stats>) -> String {
        match stats {
            None => "—".to_owned(),
            Some(s) if self.ranges() && s.runs > 1 => {
                format!("{} [{}–{}]", number(s.median), number(s.min), number(s.max))
            }
            Some(s) => number(s.median),
        }
    }

    fn server_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| !r.scenario.proxied && !matches!(r.scenario.load, Load::Pipe { .. }))
    }

    /// The servers that appear anywhere, in column order.
    fn servers(&self) -> Vec<Contender> {
        SERVERS
            .into_iter()
            .filter(|s| self.server_rows().any(|r| r.column(*s).is_some()))
            .collect()
    }

    pub(crate) fn markdown(&self) -> String {
        let mut md = String::from("# udsecho benchmark\n\n");
        let runs = if self.ranges() {
            format!(
                "{} runs per cell, servers interleaved, {:.1} s warm-up then {:.1} s measured \
                 each; a cell is the median, with the min–max of the runs in brackets",
                self.plan.reps,
                self.plan.warmup.as_secs_f64(),
                self.plan.window.as_secs_f64()
            )
        } else {
            format!(
                "one {:.1} s run per cell (after {:.1} s of warm-up): a smoke check, with no \
                 ranges; not for comparing servers",
                self.plan.window.as_secs_f64(),
                self.plan.warmup.as_secs_f64()
            )
        };
        let _ = writeln!(
            md,
            "Machine: {}. Command: `{}`: {runs}. Load: `loadgen` (xtask/fixtures/loadgen), one \
             thread and one epoll set, every echoed byte verified; it shares the machine with \
             the server. Ratios are udsecho ÷ the epoll reference (in the blocking-client rows, \
             the reference that polls for 50 µs before it sleeps) and udsecho ÷ the best peer \
             (plain tokio, Go, socat); whether above 1 is good depends on the table.\n",
            self.machine, self.command
        );
        md += &self.throughput_table();
        md += &self.cpu_table();
        md += &self.latency_table();
        md += &self.headroom_table();
        md += &self.pipe_table();
        md += &self.proxy_table();
        md += &self.notes();
        md
    }

    fn server_head(&self, first: &[&str], last: &[&str]) -> Vec<String> {
        first
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.servers().iter().map(|s| s.name().to_owned()))
            .chain(last.iter().map(|s| (*s).to_owned()))
            .collect()
    }

    /// A table of one figure: a row per scenario that has it, a column per server, and the
    /// two ratios.
    fn figure_table(
        &self,
        figure: Figure,
        unit: impl Fn(&Scenario) -> Option<&'static str>,
        title_and_intro: &str,
    ) -> String {
        let mut t = Table::new(
            self.server_head(&["scenario", "unit"], &["÷ reference", "÷ best peer"]),
            2,
        );
        for row in self.server_rows() {
            let Some(unit) = unit(&row.scenario) else {
                continue;
            };
            let load = row.scenario.load;
            let mut cells = vec![row.scenario.name.clone(), unit.to_owned()];
            for s in self.servers() {
                cells.push(self.cell(row.column(s).and_then(|c| c.figure(figure, load))));
            }
            let (to_ref, to_best) = row.figure_ratios(figure);
            cells.extend([ratio(to_ref), ratio(to_best)]);
            t.rows.push(cells);
        }
        if t.rows.is_empty() {
            return String::new();
        }
        format!("{title_and_intro}\n\n{}\n", t.render())
    }

    fn throughput_table(&self) -> String {
        self.figure_table(
            Figure::Headline,
            |s| Some(s.unit()),
            "## Throughput and memory\n\nRound trips/s and MB/s: higher is better. KiB per idle \
             connection: lower is better.",
        )
    }

    fn cpu_table(&self) -> String {
        self.figure_table(
            Figure::ServerCpu,
            Scenario::cpu_unit,
            "## Server CPU per unit of work\n\nThe server's user + system time (all threads and \
             children, from /proc/PID/stat) over the measured window, per round trip or per \
             GB echoed. Lower is better.",
        )
    }

    fn latency_table(&self) -> String {
        let mut t = Table::new(self.server_head(&["scenario"], &["p99 ÷ reference"]), 1);
        for row in self.server_rows() {
            if !matches!(
                row.scenario.load,
                Load::Pingpong { .. } | Load::Blocking { .. }
            ) {
                continue;
            }
            let load = row.scenario.load;
            let mut cells = vec![row.scenario.name.clone()];
            for s in self.servers() {
                let Some(c) = row.column(s) else {
                    cells.push("—".to_owned());
                    continue;
                };
                let m = |figure| {
                    c.figure(figure, load)
                        .map_or("—".to_owned(), |s| number(s.median))
                };
                cells.push(format!(
                    "{} / {} / {}",
                    m(Figure::P50),
                    m(Figure::P99),
                    m(Figure::P999)
                ));
            }
            cells.push(ratio(row.figure_ratios(Figure::P99).0));
            t.rows.push(cells);
        }
        if t.rows.is_empty() {
            return String::new();
        }
        format!(
            "## Latency\n\nSend to complete echo, µs, p50 / p99 / p99.9 (medians over the runs). \
             Lower is better; the p99 ratio shows fairness under load.\n\n{}\n",
            t.render()
        )
    }

    fn headroom_table(&self) -> String {
        let mut t = Table::new(
            [
                "scenario",
                "generator cores, driving udsecho",
                "generator ÷ udsecho, CPU per unit",
                "generator cores, driving the reference",
                "generator ÷ reference, CPU per unit",
                "generator alone (loopback)",
                "loopback ÷ fastest server",
            ]
            .map(str::to_owned)
            .to_vec(),
            1,
        );
        for row in self.server_rows() {
            let load = row.scenario.load;
            if !matches!(
                load,
                Load::Pingpong { framed: false, .. } | Load::Stream { .. }
            ) {
                continue;
            }
            let med = |who: Contender, f: &dyn Fn(&Measured) -> Option<f64>| {
                row.column(who).and_then(|c| c.stats(f)).map(|s| s.median)
            };
            // Per run: the generator's CPU per unit over the server's, then the median.
            let relative = |who: Contender| {
                med(who, &|m| {
                    Some(Figure::GeneratorCpu.of(m, load)? / Figure::ServerCpu.of(m, load)?)
                })
            };
            let show = |v: Option<f64>| v.map_or("—".to_owned(), number);
            let headline = |m: &Measured| Figure::Headline.of(m, load);
            let cores = |m: &Measured| Figure::GeneratorCores.of(m, load);
            let alone = med(Contender::Loopback, &headline);
            let fastest = SERVERS
                .into_iter()
                .filter_map(|s| med(s, &headline))
                .reduce(f64::max);
            t.rows.push(vec![
                row.scenario.name.clone(),
                show(med(Contender::Udsecho, &cores)),
                ratio(relative(Contender::Udsecho)),
                show(med(Contender::Epoll, &cores)),
                ratio(relative(Contender::Epoll)),
                alone.map_or("—".to_owned(), |a| {
                    format!("{} {}", number(a), row.scenario.unit())
                }),
                ratio(alone.zip(fastest).map(|(a, f)| a / f)),
            ]);
        }
        if t.rows.is_empty() {
            return String::new();
        }
        format!(
            "## Load generator headroom\n\nHow busy the generator was (1.00 = one core for the \
             whole window) and what it spent per round trip or GB relative to the server it \
             drove. In `--loopback` there is no server: the generator echoes through socket \
             pairs in its own thread with the epoll reference's echo code, so one core does the \
             generator's work and a server's.\n\n{}\n",
            t.render()
        )
    }

    fn pipe_table(&self) -> String {
        let Some(row) = self
            .rows
            .iter()
            .find(|r| matches!(r.scenario.load, Load::Pipe { .. }))
        else {
            return String::new();
        };
        let clients: Vec<Contender> = PIPE_CLIENTS
            .into_iter()
            .filter(|c| row.column(*c).is_some())
            .collect();
        let head = ["scenario", "unit"]
            .into_iter()
            .map(str::to_owned)
            .chain(clients.iter().map(|c| c.name().to_owned()))
            .chain(["÷ nc".to_owned(), "÷ socat".to_owned()])
            .collect();
        let mut t = Table::new(head, 2);
        let load = row.scenario.load;
        let mut cells = vec![row.scenario.name.clone(), "MB/s".to_owned()];
        for c in &clients {
            cells.push(
                self.cell(
                    row.column(*c)
                        .and_then(|c| c.figure(Figure::Headline, load)),
                ),
            );
        }
        let (to_nc, to_socat) = row.figure_ratios(Figure::Headline);
        cells.extend([ratio(to_nc), ratio(to_socat)]);
        t.rows.push(cells);
        format!(
            "## The client as a pipe\n\n`head -c N /dev/zero | CLIENT > /dev/null` against the \
             epoll reference, wall time from start to exit; each client first passed 16 MiB \
             through intact. Higher is better.\n\n{}\n",
            t.render()
        )
    }

    /// The proxied scenarios: each proxy's figure and CPU, and its ratios to the reference
    /// alone (direct) and to socat's proxy.
    fn proxy_table(&self) -> String {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.scenario.proxied).collect();
        if rows.is_empty() {
            return String::new();
        }
        let mut head = vec!["scenario".to_owned(), "unit".to_owned()];
        head.extend(PROXIES.iter().map(|c| c.name().to_owned()));
        head.extend(
            [
                "--upstream ÷ direct",
                "--record ÷ direct",
                "--upstream ÷ socat",
                "--record ÷ socat",
                "CPU per unit: --upstream / --record / socat",
                "generator cores",
            ]
            .map(str::to_owned),
        );
        let mut t = Table::new(head, 2);
        for row in rows {
            let load = row.scenario.load;
            let med = |who: Contender, figure: Figure| {
                row.column(who)
                    .and_then(|c| c.figure(figure, load))
                    .map(|s| s.median)
            };
            let to = |ours: Contender, other: Contender| {
                let (o, x) = (med(ours, Figure::Headline)?, med(other, Figure::Headline)?);
                (x > 1e-9).then_some(o / x)
            };
            let show = |v: Option<f64>| v.map_or("—".to_owned(), number);
            let mut cells = vec![row.scenario.name.clone(), row.scenario.unit().to_owned()];
            for who in PROXIES {
                cells.push(
                    self.cell(
                        row.column(who)
                            .and_then(|c| c.figure(Figure::Headline, load)),
                    ),
                );
            }
            cells.extend([
                ratio(to(Contender::Proxy, Contender::Epoll)),
                ratio(to(Contender::ProxyRecording, Contender::Epoll)),
                ratio(to(Contender::Proxy, Contender::SocatProxy)),
                ratio(to(Contender::ProxyRecording, Contender::SocatProxy)),
                format!(
                    "{} / {} / {} {}",
                    show(med(Contender::Proxy, Figure::ServerCpu)),
                    show(med(Contender::ProxyRecording, Figure::ServerCpu)),
                    show(med(Contender::SocatProxy, Figure::ServerCpu)),
                    row.scenario.cpu_unit().unwrap_or_default()
                ),
                format!(
                    "{} / {} / {}",
                    show(med(Contender::Proxy, Figure::GeneratorCores)),
                    show(med(Contender::ProxyRecording, Figure::GeneratorCores)),
                    show(med(Contender::SocatProxy, Figure::GeneratorCores)),
                ),
            ]);
            t.rows.push(cells);
        }
        format!(
            "## Through a proxy\n\nThe same load through a proxy in front of the epoll \
             reference: `udsecho-server --upstream` (docs/proxy.md), the same with `--record` \
             to a JSONL file in the run's directory, and `socat UNIX-LISTEN:…,fork \
             UNIX-CONNECT:…`; \"epoll reference\" is the reference alone, direct, which a \
             proxy's extra hop each way cannot beat (about half of it is the ceiling). CPU is \
             the proxy's (all threads and children; the reference's is not counted). Higher \
             is better.\n\n{}\n{}",
            t.render(),
            self.recording_ceiling()
        )
    }

    /// What the file system allows a recording of streams: one writer thread writes every
    /// byte both ways in base64, 8/3 of the bytes forwarded.
    fn recording_ceiling(&self) -> String {
        let Some(rate) = self.file_write_mb_per_sec else {
            return String::new();
        };
        let ceiling = rate * 3.0 / 8.0;
        let mut out = format!(
            "The recording's ceiling: one thread writes {} MB/s to a file in the runs' \
             directory with nothing else running (64 KiB writes of a fresh file, as the \
             recorder writes); a recorded stream of random bytes (base64, both ways) writes \
             8/3 of what it forwards, so --record cannot forward more than {} MB/s of streams \
             on this machine.",
            number(rate),
            number(ceiling)
        );
        for row in self.rows.iter().filter(|r| r.scenario.proxied) {
            if !matches!(row.scenario.load, Load::Stream { .. }) {
                continue;
            }
            let recorded = row
                .column(Contender::ProxyRecording)
                .and_then(|c| c.figure(Figure::Headline, row.scenario.load));
            if let Some(recorded) = recorded {
                let _ = write!(
                    out,
                    " {}: {} of that ceiling.",
                    row.scenario.name,
                    ratio(Some(recorded.median / ceiling))
                );
            }
        }
        out + "\n\n"
    }

    /// Runs in which some connections never completed a round trip in the window.
    fn notes(&self) -> String {
        let mut notes = String::new();
        for row in self.server_rows() {
            for c in &row.columns {
                for r in c.runs.iter().filter_map(Measured::report) {
                    if r.mode == loadgen::report::Mode::Pingpong
                        && r.connections_served < r.connections
                    {
                        let _ = writeln!(
                            notes,
                            "- {} against {}: only {} of {} connections completed a round trip \
                             in the window (the others were starved).",
                            row.scenario.name,
                            c.contender.name(),
                            r.connections_served,
                            r.connections
                        );
                    }
                }
            }
        }
        for row in self.server_rows() {
            let loopback_missing = row.column(Contender::Loopback).is_none()
                && matches!(
                    row.scenario.load,
                    Load::Pingpong { framed: false, .. } | Load::Stream { .. }
                )
                && !super::peer::loopback_fits(row.scenario.connections());
            if loopback_missing {
                let _ = writeln!(
                    notes,
                    "- {}: no loopback run (it needs two descriptors per connection, above this \
                     machine's open-file limit).",
                    row.scenario.name
                );
            }
        }
        if notes.is_empty() {
            notes
        } else {
            format!("## Notes\n\n{notes}\n")
        }
    }

    /// Every figure of every column, with the ratios of the ones the tables compare: built
    /// from [`Figure::ALL`], as the tables are.
    pub(crate) fn json(&self) -> Result<String, String> {
        #[derive(Serialize)]
        struct JsonColumn<'a> {
            name: &'static str,
            role: Role,
            figures: BTreeMap<Figure, Stats>,
            runs: &'a [Measured],
        }
        #[derive(Serialize)]
        struct Ratios {
            to_reference: Option<f64>,
            to_best_peer: Option<f64>,
        }
        #[derive(Serialize)]
        struct JsonRow<'a> {
            name: &'a str,
            load: Load,
            unit: &'static str,
            higher_is_better: bool,
            cpu_unit: Option<&'static str>,
            ratios: BTreeMap<Figure, Ratios>,
            columns: Vec<JsonColumn<'a>>,
        }
        #[derive(Serialize)]
        struct Json<'a> {
            machine: &'a str,
            command: &'a str,
            plan: Plan,
            file_write_mb_per_sec: Option<f64>,
            scenarios: Vec<JsonRow<'a>>,
        }
        let scenarios = self
            .rows
            .iter()
            .map(|row| {
                let load = row.scenario.load;
                let ratios = [Figure::Headline, Figure::ServerCpu, Figure::P99]
                    .into_iter()
                    .map(|figure| {
                        let (to_reference, to_best_peer) = row.figure_ratios(figure);
                        (
                            figure,
                            Ratios {
                                to_reference,
                                to_best_peer,
                            },
                        )
                    })
                    .collect();
                JsonRow {
                    name: &row.scenario.name,
                    load,
                    unit: row.scenario.unit(),
                    higher_is_better: row.scenario.higher_is_better(),
                    cpu_unit: row.scenario.cpu_unit(),
                    ratios,
                    columns: row
                        .columns
                        .iter()
                        .map(|c| JsonColumn {
                            name: c.contender.name(),
                            role: c.contender.role(),
                            figures: Figure::ALL
                                .into_iter()
                                .filter_map(|f| Some((f, c.figure(f, load)?)))
                                .collect(),
                            runs: &c.runs,
                        })
                        .collect(),
                }
            })
            .collect();
        serde_json::to_string_pretty(&Json {
            machine: &self.machine,
            command: &self.command,
            plan: self.plan,
            file_write_mb_per_sec: self.file_write_mb_per_sec,
            scenarios,
        })
        .map_err(|e| format!("cannot write results.json: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        let s = Stats::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stats::of(vec![1.0, 4.0]).unwrap().median, 2.5);
        assert!(Stats::of(Vec::new()).is_none());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(123.4), "123");
        assert_eq!(number(42.25), "42.2");
        assert_eq!(number(1.756), "1.76");
    }

    #[test]
    fn quick_results_promise_no_ranges() {
        let results = Results {
            machine: "test".to_owned(),
            command: "cargo xtask bench --quick".to_owned(),
            plan: Plan::new(true),
            rows: Vec::new(),
            file_write_mb_per_sec: None,
        };
        let md = results.markdown();
        assert!(!md.contains("in brackets"), "{md}");
        let full = Results {
            plan: Plan::new(false),
            ..results
        };
        assert!(full.markdown().contains("min–max of the runs in brackets"));
    }
}
