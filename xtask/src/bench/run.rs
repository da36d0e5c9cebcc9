//! One measured run: a fresh server on a fresh socket, the load generator against it (which
//! reads the server's CPU time and memory from `/proc` around its measured window), then the
//! server stopped. In the pipe scenario, one client with the bytes piped through it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::report::Report;
use serde::Serialize;
use udsecho_harness::short_temp_dir;

use super::peer::{Contender, Setup};
use super::scenario::{Load, Plan, Scenario};
use crate::child;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum Measured {
    /// The load generator's report.
    Load(Box<Report>),
    /// A pipe run.
    Pipe(PipeRun),
}

/// `head -c BYTES /dev/zero | CLIENT > /dev/null`, timed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PipeRun {
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) mb_per_sec: f64,
}

/// Measures `scenario` once against `who`.
pub(crate) fn one(
    setup: &Setup,
    plan: &Plan,
    scenario: &Scenario,
    who: Contender,
) -> Result<Measured, String> {
    if let Load::Pipe { bytes } = scenario.load {
        return pipe(setup, who, bytes).map(Measured::Pipe);
    }
    if who == Contender::Loopback {
        return loadgen(setup, plan, scenario.load, None).map(|r| Measured::Load(Box::new(r)));
    }
    let dir = short_temp_dir();
    if scenario.proxied && who != Contender::Epoll {
        let (proxied, socket) = setup.start_proxy(who, dir.path())?;
        let result = loadgen(
            setup,
            plan,
            scenario.load,
            Some((&socket, proxied.proxy.id())),
        );
        proxied.stop();
        return result.map(|r| Measured::Load(Box::new(r)));
    }
    let socket = dir.path().join("b.sock");
    let mut server = setup.start(who, &socket)?;
    let result = loadgen(setup, plan, scenario.load, Some((&socket, server.id())));
    child::stop(&mut server, Duration::from_secs(5));
    result.map(|r| Measured::Load(Box::new(r)))
}

/// MB/s one thread writes `bytes` to a fresh file in a run's directory (where the proxy's
/// recording goes), in 64 KiB writes as the recorder makes them (its buffer; a 64 KiB read's
/// line is 87 KB, one write of its own), flushed to the page cache
/// and not to the disk, as a recording is while it runs.
pub(crate) fn file_write_rate(bytes: u64) -> Result<f64, String> {
    use std::io::Write as _;
    let dir = short_temp_dir();
    let path = dir.path().join("write-rate");
    let chunk = vec![b'A'; 64 * 1024];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut written = 0;
    while written < bytes {
        file.write_all(&chunk)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written += chunk.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(written as f64 / seconds / 1e6)
}

/// Runs the generator against `target` (socket and server pid), or in loopback.
fn loadgen(
    setup: &Setup,
    plan: &Plan,
    load: Load,
    target: Option<(&Path, u32)>,
) -> Result<Report, String> {
    let mut cmd = Command::new(&setup.loadgen);
    match target {
        Some((socket, pid)) => {
            cmd.arg("--socket")
                .arg(socket)
                .args(["--server-pid", &pid.to_string()]);
        }
        None => {
            cmd.arg("--loopback");
        }
    }
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let window = match load {
        Load::Blocking { every_ms: Some(_) } => plan.trickle_window,
        _ => plan.window,
    };
    cmd.args([
        "--json",
        "--warmup",
        &ms(plan.warmup),
        "--duration",
        &ms(window),
    ]);
    let (mode, connections, size) = match load {
        Load::Pingpong {
            connections,
            size,
            pipeline,
            framed,
        } => {
            cmd.args(["--pipeline", &pipeline.to_string()]);
            if framed {
                cmd.arg("--framed");
            }
            ("pingpong", connections, size)
        }
        Load::Blocking { every_ms } => {
            cmd.arg("--blocking");
            if let Some(every) = every_ms {
                cmd.args(["--every", &format!("{every}ms")]);
            }
            ("pingpong", 1, 64)
        }
        Load::Stream { connections, write } => ("stream", connections, write),
        Load::Idle { connections } => ("idle", connections, 1),
        Load::Pipe { .. } => return Err("the pipe scenario has no load generator".to_owned()),
    };
    cmd.args([
        "--mode",
        mode,
        "--connections",
        &connections.to_string(),
        "--size",
        &size.to_string(),
    ]);
    // Connecting 10,000 sockets and the settle pauses come on top of the window.
    let within = plan.warmup + window + Duration::from_secs(120);
    let out =
        child::output_within(&mut cmd, b"", within).map_err(|e| format!("load generator: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "load generator failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "unreadable report from the load generator ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The client command line of a pipe contender.
fn pipe_client(setup: &Setup, who: Contender, socket: &Path) -> Result<Command, String> {
    let mut cmd = match who {
        Contender::ClientPipe => {
            let mut c = Command::new(&setup.client);
            c.arg("--socket").arg(socket);
            c
        }
        Contender::NcPipe => {
            let mut c = Command::new("nc");
            c.arg("-NU").arg(socket);
            c
        }
        Contender::SocatPipe => {
            let mut c = Command::new("socat");
            c.arg("-").arg(format!("UNIX-CONNECT:{}", socket.display()));
            c
        }
        other => return Err(format!("{} is not a pipe client", other.name())),
    };
    cmd.env_remove("UDSECHO_SOCKET");
    Ok(cmd)
}

/// `head -c BYTES /dev/zero | CLIENT`, through `sh` so the pipe is the kernel's, not ours.
fn piped(client: &Command, bytes: u64) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("n=$1; shift; head -c \"$n\" /dev/zero | \"$@\"")
        .arg("sh")
        .arg(bytes.to_string())
        .arg(client.get_program())
        .args(client.get_args());
    sh
}

/// Times `bytes` of zeros through client `who` against the epoll reference, output to
/// /dev/null as a user would.
fn pipe(setup: &Setup, who: Contender, bytes: u64) -> Result<PipeRun, String> {
    let dir = short_temp_dir();
    let socket = dir.path().join("p.sock");
    let mut server = setup.start(Contender::Epoll, &socket)?;
    let client = pipe_client(setup, who, &socket)?;
    let result = (|| {
        let started = Instant::now();
        let mut run = piped(&client, bytes)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let stderr = child::collect(run.stderr.take());
        let status = child::finish(&mut run, Duration::from_secs(600))?;
        let seconds = started.elapsed().as_secs_f64();
        if !status.success() {
            let err = stderr.join().unwrap_or_default();
            return Err(format!(
                "exited with {status}: {}",
                String::from_utf8_lossy(&err).trim()
            ));
        }
        Ok(PipeRun {
            bytes,
            seconds,
            mb_per_sec: bytes as f64 / seconds / 1e6,
        })
    })();
    child::stop(&mut server, Duration::from_secs(5));
    result
}

/// Before timing a pipe client (whose output goes to /dev/null), checks once that it really
/// passes everything through: 16 MiB of zeros in, exactly 16 MiB of zeros out.
pub(crate) fn pipe_check(setup: &Setup, who: Contender) -> Result<(), String> {
    const BYTES: usize = 16 << 20;
    let dir = short_temp_dir();
    let socket = dir.path().join("c.sock");
    let mut server = setup.start(Contender::Epoll, &socket)?;
    let client = pipe_client(setup, who, &socket)?;
    let out = child::output_within(
        &mut piped(&client, BYTES as u64),
        b"",
        Duration::from_secs(120),
    );
    child::stop(&mut server, Duration::from_secs(5));
    let out = out?;
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {}",
            who.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if out.stdout.len() != BYTES || out.stdout.iter().any(|&b| b != 0) {
        return Err(format!(
            "{} passed {} of {BYTES} bytes through{}",
            who.name(),
            out.stdout.len(),
            if out.stdout.len() == BYTES {
                ", altered"
            } else {
                ""
            }
        ));
    }
    Ok(())
}
