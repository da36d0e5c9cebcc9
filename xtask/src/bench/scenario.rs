//! What the bench measures: the scenarios, their units, and how long each run lasts.

use std::time::Duration;

use serde::Serialize;

/// How long and how often: the full run or `--quick`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Plan {
    /// Runs of every scenario against every contender (interleaved).
    pub(crate) reps: usize,
    /// Load before each measured window.
    #[serde(serialize_with = "seconds")]
    pub(crate) warmup: Duration,
    /// The measured window of each run.
    #[serde(serialize_with = "seconds")]
    pub(crate) window: Duration,
    /// The most connections any scenario opens (`--quick` scales 10,000 down).
    pub(crate) max_connections: usize,
    /// The most connections socat (a process pair per connection) is asked to serve.
    pub(crate) socat_max_connections: usize,
    /// Bytes piped through each client in the pipe scenario.
    pub(crate) pipe_bytes: u64,
    /// The measured window of the trickle scenario (one round trip per millisecond: long
    /// enough for thousands of samples).
    #[serde(serialize_with = "seconds")]
    pub(crate) trickle_window: Duration,
    pub(crate) quick: bool,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Plan {
    pub(crate) fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                reps: 1,
                warmup: Duration::from_millis(200),
                window: Duration::from_millis(500),
                max_connections: 2_000,
                socat_max_connections: 100,
                pipe_bytes: 128 << 20,
                trickle_window: Duration::from_secs(1),
                quick,
            }
        } else {
            Plan {
                reps: 3,
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(2),
                max_connections: 10_000,
                socat_max_connections: 1_000,
                pipe_bytes: 1 << 30,
                trickle_window: Duration::from_secs(10),
                quick,
            }
        }
    }
}

/// The load of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Load {
    /// `connections` each keep `pipeline` messages of `size` bytes in flight.
    Pingpong {
        connections: usize,
        size: usize,
        pipeline: usize,
        framed: bool,
    },
    /// `connections` each write `write`-byte chunks continuously and read the echo.
    Stream { connections: usize, write: usize },
    /// `connections` echo one byte each, then sit: server memory per connection.
    Idle { connections: usize },
    /// `head -c BYTES /dev/zero | CLIENT > /dev/null` against the epoll reference.
    Pipe { bytes: u64 },
    /// One connection, a client that blocks in `read` for each 64-byte echo (the way most
    /// programs talk): back to back, or one round trip every `every_ms` milliseconds (a
    /// trickle).
    Blocking { every_ms: Option<u64> },
}

/// One scenario: a name for people, the load, and whether it goes through a proxy.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) load: Load,
    /// The load goes through a proxy in front of the epoll reference (the proxy is what is
    /// measured; the reference alone, direct, is the yardstick).
    pub(crate) proxied: bool,
}

impl Scenario {
    /// `load` through a proxy (docs/proxy.md): udsecho-server --upstream, with and without
    /// --record, and socat, each in front of the epoll reference.
    fn proxied(load: Load) -> Scenario {
        let direct = Scenario::new(load);
        Scenario {
            name: format!("proxied {}", direct.name),
            load,
            proxied: true,
        }
    }

    fn new(load: Load) -> Scenario {
        let name = match load {
            Load::Pingpong {
                connections,
                size,
                pipeline,
                framed,
            } => {
                let kind = match (framed, pipeline) {
                    (false, _) => "ping-pong".to_owned(),
                    (true, 1) => "framed ping-pong".to_owned(),
                    (true, depth) => format!("framed pipelined (depth {depth})"),
                };
                format!(
                    "{kind} {}, {}",
                    bytes(size as u64),
                    count(connections, "connection")
                )
            }
            Load::Stream { connections, write } => format!(
                "stream {} writes, {}",
                bytes(write as u64),
                count(connections, "connection")
            ),
            Load::Idle { connections } => format!("{} idle", count(connections, "connection")),
            Load::Pipe { bytes: n } => format!("pipe {} through the client", bytes(n)),
            Load::Blocking { every_ms: None } => "blocking client 64 B, 1 connection".to_owned(),
            Load::Blocking { every_ms: Some(ms) } => {
                format!("trickle: blocking client 64 B every {ms} ms, 1 connection")
            }
        };
        Scenario {
            name,
            load,
            proxied: false,
        }
    }

    /// The unit of the headline figure.
    pub(crate) fn unit(&self) -> &'static str {
        match self.load {
            Load::Pingpong { pipeline: 1, .. } | Load::Blocking { .. } => "round trips/s",
            Load::Pingpong { .. } => "frames/s",
            Load::Stream { .. } | Load::Pipe { .. } => "MB/s",
            Load::Idle { .. } => "KiB server RSS per connection",
        }
    }

    /// Whether a larger headline figure is better (memory: smaller is).
    pub(crate) fn higher_is_better(&self) -> bool {
        !matches!(self.load, Load::Idle { .. })
    }

    /// The unit of CPU per unit of work, where the bench measures it.
    pub(crate) fn cpu_unit(&self) -> Option<&'static str> {
        match self.load {
            Load::Pingpong { .. } | Load::Blocking { .. } => Some("CPU µs per round trip"),
            Load::Stream { .. } => Some("CPU-s per GB"),
            Load::Idle { .. } | Load::Pipe { .. } => None,
        }
    }

    /// The connections it opens.
    pub(crate) fn connections(&self) -> usize {
        match self.load {
            Load::Pingpong { connections, .. }
            | Load::Stream { connections, .. }
            | Load::Idle { connections } => connections,
            Load::Pipe { .. } | Load::Blocking { .. } => 1,
        }
    }
}

/// Every scenario, in the order they run and print.
pub(crate) fn all(plan: &Plan) -> Vec<Scenario> {
    let most = plan.max_connections;
    let pingpong = |connections: usize, size: usize| Load::Pingpong {
        connections,
        size,
        pipeline: 1,
        framed: false,
    };
    let framed = |pipeline: usize| Load::Pingpong {
        connections: 1,
        size: 64,
        pipeline,
        framed: true,
    };
    let streams = |connections: usize| Load::Stream {
        connections,
        write: 64 * 1024,
    };
    let proxied = [
        pingpong(1, 64),
        Load::Blocking { every_ms: None },
        pingpong(100, 64),
        streams(1),
        streams(8),
    ]
    .into_iter()
    .map(Scenario::proxied);
    [
        pingpong(1, 64),
        Load::Blocking { every_ms: None },
        Load::Blocking { every_ms: Some(1) },
        pingpong(100, 64),
        pingpong(1_000, 64),
        pingpong(most, 64),
        pingpong(1, 16 * 1024),
        streams(1),
        streams(8),
        Load::Stream {
            connections: 1,
            write: 1024,
        },
        Load::Idle { connections: most },
        framed(1),
        framed(16),
        Load::Pipe {
            bytes: plan.pipe_bytes,
        },
    ]
    .into_iter()
    .map(Scenario::new)
    .chain(proxied)
    .collect()
}

/// `64 B`, `16 KiB`, `1 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut unit = 0;
    let mut v = n;
    while unit + 1 < UNITS.len() && v >= 1024 && v.is_multiple_of(1024) {
        v /= 1024;
        unit += 1;
    }
    format!("{v} {}", UNITS[unit])
}

/// `1 connection`, `10,000 connections`.
fn count(n: usize, what: &str) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} {what}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_runs() {
        let quick = all(&Plan::new(true));
        assert!(
            quick
                .iter()
                .any(|s| s.name == "ping-pong 64 B, 2,000 connections")
        );
        assert!(quick.iter().any(|s| s.name == "2,000 connections idle"));
        assert!(
            quick
                .iter()
                .any(|s| s.name == "pipe 128 MiB through the client")
        );
        let full = all(&Plan::new(false));
        assert!(
            full.iter()
                .any(|s| s.name == "ping-pong 16 KiB, 1 connection")
        );
        assert!(
            full.iter()
                .any(|s| s.name == "framed pipelined (depth 16) 64 B, 1 connection")
        );
        assert!(
            full.iter()
                .any(|s| s.name == "pipe 1 GiB through the client")
        );
        let proxied: Vec<&str> = full
            .iter()
            .filter(|s| s.proxied)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            proxied,
            [
                "proxied ping-pong 64 B, 1 connection",
                "proxied blocking client 64 B, 1 connection",
                "proxied ping-pong 64 B, 100 connections",
                "proxied stream 64 KiB writes, 1 connection",
                "proxied stream 64 KiB writes, 8 connections",
            ]
        );
    }
}
