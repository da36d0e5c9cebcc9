//! `cargo xtask nc-compat`: the standard Unix tools against our binaries, both directions.

use std::io::Write;
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
    let result = (|| {
        wait_for_socket(&path, Instant::now() + LIMIT, || false).map_err(|e| e.to_string())?;
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
    })();
    child::kill(&mut socat);
    result
}
