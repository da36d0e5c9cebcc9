//! `cargo xtask nc-compat`: the standard Unix tools against our binaries, both directions,
//! for each socket type: stream (`nc -U`, `socat UNIX-CONNECT`, `nc -lU`), seqpacket (socat
//! `type=5`) and datagram (`nc -uU`, socat `UNIX-SENDTO` and `UNIX-RECVFROM`).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use udsecho_harness::{Server, random_payload, run_client, short_temp_dir, wait_for_socket};

use crate::child;
use crate::scenario::{Scenarios, ensure, same_bytes};

const LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn run() -> Result<(), String> {
    crate::tools::ensure_nc_and_socat()?;
    crate::tools::release_binaries()?;
    let mut s = Scenarios::new("nc-compat");
    for mode in ["auto", "raw"] {
        s.run(
            &format!("printf | nc -NU against the server (--mode {mode})"),
            || nc_client(mode),
        );
        s.run(
            &format!("socat - UNIX-CONNECT against the server (--mode {mode})"),
            || socat_client(mode),
        );
    }
    s.run("256 KiB of binary through nc -NU", nc_binary);
    s.run(
        "udsecho-client send against nc -lU (the message arrives)",
        client_send_to_nc,
    );
    s.run(
        "classic flow: nc -lU sock && rm sock, with udsecho-client as the sender",
        classic_nc_flow,
    );
    s.run(
        "256 KiB of binary from udsecho-client into nc -lU",
        client_binary_to_nc,
    );
    s.run(
        "udsecho-client send against socat UNIX-LISTEN,fork EXEC:cat",
        client_against_socat,
    );
    s.run(
        "udsecho-client send --fd against socat EXEC:cat: the dropped descriptor exits 3",
        client_fd_against_socat,
    );
    for kind in [Kind::Seqpacket, Kind::Datagram] {
        s.run(
            &format!(
                "udsecho-client --type {}: 1 B, 1000 B, 60,000 B {}s whole through {}",
                kind.name(),
                kind.unit(),
                kind.socat_server()
            ),
            || client_messages_against_socat(kind),
        );
    }
    s.run(
        "printf | nc -uU against the server (--type datagram)",
        nc_datagram_client,
    );
    s.run(
        "socat - UNIX-CONNECT,type=5 against the server (--type seqpacket)",
        socat_seqpacket_client,
    );
    s.run(
        "socat - UNIX-SENDTO,bind against the server (--type datagram)",
        socat_datagram_client,
    );
    s.finish()
}

/// Runs `cmd` with `input` on stdin; returns stdout, failing after `LIMIT`.
fn output_of(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>, String> {
    let out = child::output_within(cmd, input, LIMIT)?;
    succeeded(out.status, &out.stderr)?;
    Ok(out.stdout)
}

/// Waits for a child whose stdout `reader` is collecting; kills it after `within`.
fn wait_and_collect(
    mut child: Child,
    reader: thread::JoinHandle<Vec<u8>>,
    within: Duration,
) -> Result<Vec<u8>, String> {
    let stderr = child::collect(child.stderr.take());
    let status = child::finish(&mut child, within)?;
    succeeded(status, &stderr.join().unwrap_or_default())?;
    Ok(reader.join().unwrap_or_default())
}

fn succeeded(status: std::process::ExitStatus, stderr: &[u8]) -> Result<(), String> {
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "exited with {status}: {}",
            String::from_utf8_lossy(stderr).trim()
        ))
    }
}

fn nc_client(mode: &str) -> Result<(), String> {
    let server = Server::start(["--mode", mode]).map_err(|e| e.to_string())?;
    let out = output_of(
        Command::new("nc").arg("-NU").arg(server.socket()),
        b"hello from nc\n",
    )?;
    ensure(out == b"hello from nc\n", || {
        format!("nc printed {:?}", String::from_utf8_lossy(&out))
    })
}

fn socat_client(mode: &str) -> Result<(), String> {
    let server = Server::start(["--mode", mode]).map_err(|e| e.to_string())?;
    let target = format!("UNIX-CONNECT:{}", server.socket().display());
    let data = random_payload(64 * 1024, 5);
    let out = output_of(Command::new("socat").args(["-t", "5", "-", &target]), &data)?;
    same_bytes("socat got back", &out, &data)
}

fn nc_binary() -> Result<(), String> {
    let server = Server::start(Vec::<String>::new()).map_err(|e| e.to_string())?;
    // Starts with NUL and part of the preamble: auto mode must still see raw.
    let mut data = b"\0UDSE".to_vec();
    data.extend(random_payload(256 * 1024, 9));
    let out = output_of(Command::new("nc").arg("-NU").arg(server.socket()), &data)?;
    same_bytes("nc got back", &out, &data)
}

fn client_send_to_nc() -> Result<(), String> {
    let dir = short_temp_dir();
    let path = dir.path().join("nc.sock");
    // nc -lU does not echo; what it reads from its stdin goes back to the client, so give it
    // the echo the client expects.
    let (nc, printed) = nc_listener(&path, "olá mundo".as_bytes())?;
    let run = run_client(
        [
            "--socket",
            path.to_str().expect("UTF-8"),
            "send",
            "--count",
            "1",
        ],
        b"",
        LIMIT,
    )
    .map_err(|e| e.to_string())?;
    let printed = wait_and_collect(nc, printed, LIMIT)?;
    ensure(run.status.success(), || {
        format!("client failed: {}", run.stderr)
    })?;
    ensure(printed == "olá mundo".as_bytes(), || {
        format!(
            "nc -lU printed {:?}, expected the message",
            String::from_utf8_lossy(&printed)
        )
    })
}

/// Starts `nc -lU path` with `reply` on its stdin (what it sends to whoever connects),
/// capturing what it prints, once its socket file exists.
fn nc_listener(path: &Path, reply: &[u8]) -> Result<(Child, thread::JoinHandle<Vec<u8>>), String> {
    let mut child = Command::new("nc")
        .arg("-lU")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start nc -lU: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let reply = reply.to_vec();
    wait_for_listening_file(path, &mut child)?;
    // What nc sends back, then EOF on its stdin.
    thread::spawn(move || stdin.write_all(&reply));
    let printed = child::collect(child.stdout.take());
    Ok((child, printed))
}

/// Waits for `nc -lU` (run by `child`) to create its socket file. Probing with a connection
/// would use up nc's one accept, so this watches the file; it appears at bind, just before
/// listen, hence the short grace after it.
fn wait_for_listening_file(path: &Path, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        if Instant::now() > deadline {
            child::kill(child);
            return Err("nc -lU never created its socket".to_owned());
        }
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(50));
    Ok(())
}

fn classic_nc_flow() -> Result<(), String> {
    let dir = short_temp_dir();
    let path = dir.path().join("classic.sock");
    let script = format!("nc -lU '{0}' && rm '{0}'", path.display());
    let mut shell = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_for_listening_file(&path, &mut shell)?;
    let run = run_client(["--socket", path.to_str().expect("UTF-8")], b"hi\n", LIMIT)
        .map_err(|e| e.to_string())?;
    ensure(run.status.success(), || {
        format!("client failed: {}", run.stderr)
    })?;
    let printed = child::collect(shell.stdout.take());
    let printed = wait_and_collect(shell, printed, LIMIT)?;
    ensure(printed == b"hi\n", || {
        format!("nc printed {:?}", String::from_utf8_lossy(&printed))
    })?;
    ensure(!path.exists(), || {
        "nc exited non-zero, so `rm sock` did not run".to_owned()
    })
}

fn client_binary_to_nc() -> Result<(), String> {
    let dir = short_temp_dir();
    let path = dir.path().join("bin.sock");
    let (nc, printed) = nc_listener(&path, b"")?;
    let data = random_payload(256 * 1024, 3);
    let run = run_client(["--socket", path.to_str().expect("UTF-8")], &data, LIMIT)
        .map_err(|e| e.to_string())?;
    ensure(run.status.success(), || {
        format!("client failed: {}", run.stderr)
    })?;
    let printed = wait_and_collect(nc, printed, LIMIT)?;
    same_bytes("nc -lU received", &printed, &data)
}

fn client_against_socat() -> Result<(), String> {
    with_socat_cat(|path| {
        let run = run_client(
            [
                "--socket",
                path.to_str().expect("UTF-8"),
                "send",
                "--count",
                "3",
                "--interval",
                "20ms",
            ],
            b"",
            LIMIT,
        )
        .map_err(|e| e.to_string())?;
        ensure(run.status.success(), || {
            format!("client failed: {}", run.stderr)
        })?;
        ensure(
            run.stdout_text().matches("received: olá mundo").count() == 3,
            || run.stdout_text(),
        )
    })
}

/// socat, like nc, drops passed descriptors (its `read` makes the kernel close them): the
/// bytes come back, the descriptor does not, and `send --fd` says so with exit 3.
fn client_fd_against_socat() -> Result<(), String> {
    with_socat_cat(|path| {
        let run = run_client(
            [
                "--socket",
                path.to_str().expect("UTF-8"),
                "send",
                "--count",
                "1",
                "--fd",
                "/dev/null",
            ],
            b"",
            LIMIT,
        )
        .map_err(|e| e.to_string())?;
        ensure(run.status.code() == Some(3), || {
            format!("client exited {:?}: {}", run.status, run.stderr)
        })?;
        ensure(
            run.stderr.contains(
                "descriptor mismatch on message 1: --fd /dev/null did not come back with the \
                 echo (the server dropped it)",
            ),
            || run.stderr.clone(),
        )
    })
}

/// Runs `scenario` with `socat UNIX-LISTEN:PATH,fork EXEC:cat` serving PATH.
fn with_socat_cat(scenario: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), String> {
    let dir = short_temp_dir();
    let path = dir.path().join("socat.sock");
    let listen = format!("UNIX-LISTEN:{},fork", path.display());
    let mut socat = Command::new("socat")
        .args([&listen, "EXEC:cat"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start socat: {e}"))?;
    let result = wait_for_socket(&path, Instant::now() + LIMIT, || exited(socat.id()))
        .map_err(|e| format!("socat never listened on {}: {e}", path.display()))
        .and_then(|()| scenario(&path));
    child::kill(&mut socat);
    result
}

/// Whether the child `pid` has exited (a zombie, or gone): a socat that fails at once is
/// given up on at once, not after [`LIMIT`].
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A socket type other than stream, as the scenarios name and start it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Seqpacket,
    Datagram,
}

impl Kind {
    /// The value of `--type`.
    fn name(self) -> &'static str {
        match self {
            Kind::Seqpacket => "seqpacket",
            Kind::Datagram => "datagram",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Seqpacket => "message",
            Kind::Datagram => "datagram",
        }
    }

    /// The socat echo server for this type. socat reads and writes 8 KiB at a time unless
    /// told otherwise (`-b`): a larger message would be cut (a seqpacket or datagram read
    /// takes one message and drops what does not fit), so it gets 128 KiB. `EXEC:cat` keeps
    /// boundaries only one message at a time: cat may pass two queued ones on in one write.
    fn socat_server(self) -> &'static str {
        match self {
            Kind::Seqpacket => "socat -b 131072 UNIX-LISTEN:PATH,type=5,fork EXEC:cat",
            Kind::Datagram => "socat -b 131072 UNIX-RECVFROM:PATH,fork EXEC:cat",
        }
    }
}

/// A server run by socat, in a process group of its own: with `fork` it leaves a child per
/// connection (or per datagram), and dropping this ends the whole group.
struct Socat {
    child: Child,
}

impl Socat {
    /// Starts `command` (words, `PATH` standing for `path`) and waits until `path` is there
    /// and answers (a probe of the wrong type counts: see `wait_for_socket`).
    fn start(command: &str, path: &Path) -> Result<Socat, String> {
        let path_text = path.to_str().expect("temp paths are UTF-8");
        let words: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|w| w.replace("PATH", path_text))
            .collect();
        let child = Command::new("socat")
            .args(&words)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start socat: {e}"))?;
        let pid = child.id();
        let socat = Socat { child };
        wait_for_socket(path, Instant::now() + LIMIT, || exited(pid))
            .map_err(|e| format!("{command}: never listened on {}: {e}", path.display()))?;
        Ok(socat)
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        if let Some(group) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
        child::stop(&mut self.child, Duration::from_secs(2));
    }
}

/// Our client against socat's seqpacket or datagram echo: `send` checks that each message
/// of each size comes back whole; a line through the pipe comes back as it went.
fn client_messages_against_socat(kind: Kind) -> Result<(), String> {
    let dir = short_temp_dir();
    let path = dir.path().join("socat.sock");
    let _socat = Socat::start(kind.socat_server(), &path)?;
    let socket = path.to_str().expect("UTF-8");
    let type_name = kind.name();
    for size in [1, 1000, 60_000] {
        let message = "x".repeat(size);
        let run = run_client(
            [
                "--type", type_name, socket, "send", "-n", "2", "-i", "20ms", "-m", &message,
            ],
            b"",
            LIMIT,
        )
        .map_err(|e| e.to_string())?;
        ensure(run.status.success(), || {
            format!("{size} B: client failed: {}", run.stderr)
        })?;
        // The second message may go out before the first echo is back: lines, not order.
        let mut lines: Vec<String> = run.stdout_text().lines().map(str::to_owned).collect();
        lines.sort();
        let want = [
            format!("received: {message}"),
            format!("received: {message}"),
            format!("sent: {message}"),
            format!("sent: {message}"),
        ];
        ensure(lines == want, || {
            format!("{size} B: the client printed {} bytes", run.stdout.len())
        })?;
    }
    let run = run_client(["--type", type_name, socket], b"through the pipe\n", LIMIT)
        .map_err(|e| e.to_string())?;
    ensure(run.status.success(), || {
        format!("pipe: client failed: {}", run.stderr)
    })?;
    same_bytes("the pipe printed", &run.stdout, b"through the pipe\n")
}

fn nc_datagram_client() -> Result<(), String> {
    let server = Server::start(["--type", "datagram"]).map_err(|e| e.to_string())?;
    // -w 1: nc -u has no end of stream; it leaves 1 s after the last reply.
    let out = output_of(
        Command::new("nc")
            .args(["-uU", "-w", "1"])
            .arg(server.socket()),
        b"hello from nc -uU\n",
    )?;
    same_bytes("nc -uU printed", &out, b"hello from nc -uU\n")
}

fn socat_seqpacket_client() -> Result<(), String> {
    let server = Server::start(["--type", "seqpacket"]).map_err(|e| e.to_string())?;
    let target = format!("UNIX-CONNECT:{},type=5", server.socket().display());
    // socat sends each 8 KiB read as one message; each comes back as one.
    let data = random_payload(64 * 1024, 11);
    let out = output_of(Command::new("socat").args(["-t", "5", "-", &target]), &data)?;
    same_bytes("socat got back", &out, &data)
}

fn socat_datagram_client() -> Result<(), String> {
    let server = Server::start(["--type", "datagram"]).map_err(|e| e.to_string())?;
    let dir = short_temp_dir();
    // socat's replies come back to the file it binds (and removes when it exits).
    let target = format!(
        "UNIX-SENDTO:{},bind={}",
        server.socket().display(),
        dir.path().join("socat-client.sock").display()
    );
    let data = b"hello from socat UNIX-SENDTO\n";
    let out = output_of(Command::new("socat").args(["-t", "1", "-", &target]), data)?;
    same_bytes("socat got back", &out, data)
}
