//! `cargo xtask e2e`: the release binaries end to end, as a user runs them.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use udsecho_harness::{
    FramedPeer, Server, Signal, StreamingPeer, checksum, connect, random_payload, raw_round_trip,
    run_client, short_temp_dir,
};
use udsecho_proto::{Frame, GoodbyeReason};

use crate::scenario::{Scenarios, ensure};

const LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn run() -> Result<(), String> {
    crate::tools::release_binaries()?;
    let mut s = Scenarios::new("e2e");
    s.run("seed demo: server + send --count 5", seed_demo);
    s.run("pipe mode: 1 MiB of binary through the client", pipe_binary);
    s.run("framed pipe: lines in, lines out", framed_pipe);
    s.run(
        "200 concurrent clients, random chunking, all intact",
        concurrent_clients,
    );
    s.run(
        "a slow reader still gets every byte (backpressure, no loss)",
        slow_reader,
    );
    s.run(
        "SIGTERM during traffic: nothing lost, file removed, exit 0",
        sigterm_during_traffic,
    );
    s.run(
        "SIGKILL leaves a stale socket; a restart replaces it",
        stale_restart,
    );
    s.finish()
}

fn server() -> Result<Server, String> {
    Server::start(Vec::<String>::new()).map_err(|e| format!("server did not start: {e}"))
}

fn seed_demo() -> Result<(), String> {
    let server = server()?;
    let socket = server.socket().to_str().expect("temp paths are UTF-8");
    let run = run_client(
        [
            "--socket",
            socket,
            "send",
            "--count",
            "5",
            "--interval",
            "50ms",
        ],
        b"",
        LIMIT,
    )
    .map_err(|e| e.to_string())?;
    let out = run.stdout_text();
    ensure(run.status.success(), || {
        format!("client failed: {}", run.stderr)
    })?;
    ensure(out.matches("sent: olá mundo").count() == 5, || {
        format!("expected 5 `sent:` lines:\n{out}")
    })?;
    ensure(out.matches("received: olá mundo").count() == 5, || {
        format!("expected 5 `received:` lines (the server must echo every message):\n{out}")
    })
}

fn pipe_binary() -> Result<(), String> {
    let server = server()?;
    let socket = server.socket().to_str().expect("temp paths are UTF-8");
    let data = random_payload(1 << 20, 11);
    let run = run_client(["--socket", socket], &data, LIMIT).map_err(|e| e.to_string())?;
    ensure(run.status.success(), || {
        format!("client failed: {}", run.stderr)
    })?;
    ensure(run.stdout.len() == data.len(), || {
        format!(
            "sent {} bytes, got {} back (the tail is lost: half-close must flush what is pending)",
            data.len(),
            run.stdout.len()
        )
    })?;
    ensure(checksum(&run.stdout) == checksum(&data), || {
        "the echo differs from the input".to_owned()
    })
}

fn framed_pipe() -> Result<(), String> {
    let server = server()?;
    let socket = server.socket().to_str().expect("temp paths are UTF-8");
    let input = "olá mundo\nsecond line\n\nlast";
    let run = run_client(["--socket", socket, "--framed"], input.as_bytes(), LIMIT)
        .map_err(|e| e.to_string())?;
    ensure(run.status.success(), || {
        format!("client failed: {}", run.stderr)
    })?;
    ensure(run.stdout_text() == format!("{input}\n"), || {
        format!("got {:?}", run.stdout_text())
    })
}

fn concurrent_clients() -> Result<(), String> {
    let server = server()?;
    let path = server.socket().to_owned();
    let workers: Vec<_> = (0..200u64)
        .map(|i| {
            let path = path.clone();
            thread::spawn(move || -> Result<(), String> {
                let data = random_payload(8_000 + (i as usize * 7_919) % 60_000, i);
                if i % 4 == 0 {
                    // A framed peer: the same data as frames of random sizes.
                    let (mut peer, _) =
                        FramedPeer::handshake(&path).map_err(|e| format!("client {i}: {e}"))?;
                    let mut frames = Vec::new();
                    let mut rest = &data[..];
                    let mut step = 1 + i as usize % 977;
                    while !rest.is_empty() {
                        let n = step.min(rest.len());
                        frames.push(Bytes::copy_from_slice(&rest[..n]));
                        rest = &rest[n..];
                        step = step * 7 % 4093 + 1;
                    }
                    for f in &frames {
                        peer.send(&Frame::Data(f.clone()))
                            .map_err(|e| format!("client {i}: {e}"))?;
                    }
                    for (k, f) in frames.iter().enumerate() {
                        match peer.recv() {
                            Ok(Some(Frame::Data(echo))) if echo == f => {}
                            other => {
                                return Err(format!("framed client {i}, frame {k}: got {other:?}"));
                            }
                        }
                    }
                    Ok(())
                } else {
                    let chunk = 1 + (i as usize * 131) % 5_000;
                    let echo = raw_round_trip(&path, &data, chunk)
                        .map_err(|e| format!("client {i}: {e}"))?;
                    ensure(echo == data, || {
                        format!(
                            "raw client {i}: sent {} bytes, got {} back, content differs",
                            data.len(),
                            echo.len()
                        )
                    })
                }
            })
        })
        .collect();
    let errors: Vec<String> = workers
        .into_iter()
        .filter_map(|w| {
            w.join()
                .unwrap_or_else(|_| Err("a client thread panicked".to_owned()))
                .err()
        })
        .collect();
    ensure(errors.is_empty(), || {
        format!(
            "{} of 200 clients failed; first: {}",
            errors.len(),
            errors[0]
        )
    })
}

fn slow_reader() -> Result<(), String> {
    let server = server()?;
    let stream = connect(server.socket()).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(LIMIT))
        .map_err(|e| e.to_string())?;
    let data = random_payload(4 << 20, 77);
    let writer = {
        let mut stream = stream.try_clone().map_err(|e| e.to_string())?;
        let data = data.clone();
        thread::spawn(move || {
            let sent = stream.write_all(&data);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            sent
        })
    };
    // Read in small sips with pauses: the server's writes fill our socket buffer and come back
    // short, so it must keep what it could not write and stop reading until it can.
    let mut echoed = Vec::with_capacity(data.len());
    let mut sip = [0u8; 8192];
    let mut reads = 0u32;
    loop {
        let n = (&stream)
            .read(&mut sip)
            .map_err(|e| format!("after {} bytes: {e}", echoed.len()))?;
        if n == 0 {
            break;
        }
        echoed.extend_from_slice(&sip[..n]);
        reads += 1;
        if reads.is_multiple_of(64) {
            thread::sleep(Duration::from_millis(5));
        }
    }
    writer
        .join()
        .map_err(|_| "writer panicked".to_owned())?
        .map_err(|e| format!("writing: {e}"))?;
    ensure(echoed.len() == data.len(), || {
        format!(
            "sent {} bytes, got {} back: the server dropped what a short write left over",
            data.len(),
            echoed.len()
        )
    })?;
    ensure(echoed == data, || {
        "the echo differs from what was sent".to_owned()
    })
}

fn sigterm_during_traffic() -> Result<(), String> {
    let mut server = server()?;
    let raw_clients = (0..6u64)
        .map(|i| StreamingPeer::start(server.socket(), random_payload(256 * 1024, i), 3_001))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let (mut framed, _) = FramedPeer::handshake(server.socket()).map_err(|e| e.to_string())?;
    let frames: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(random_payload(700, 100 + i)))
        .collect();
    for f in &frames {
        framed
            .send(&Frame::Data(f.clone()))
            .map_err(|e| e.to_string())?;
    }
    thread::sleep(Duration::from_millis(300));
    let sent_before: Vec<usize> = raw_clients.iter().map(StreamingPeer::sent).collect();
    server.signal(Signal::TERM).map_err(|e| e.to_string())?;
    for (k, f) in frames.iter().enumerate() {
        match framed.recv() {
            Ok(Some(Frame::Data(echo))) if echo == f => {}
            other => {
                return Err(format!(
                    "framed peer: frame {k} sent before SIGTERM came back as {other:?}"
                ));
            }
        }
    }
    match framed.recv() {
        Ok(Some(Frame::Goodbye(g))) if g.reason == GoodbyeReason::Shutdown => {}
        other => {
            return Err(format!(
                "framed peer: expected Goodbye(Shutdown) after the echoes, got {other:?}"
            ));
        }
    }
    let status = server.wait_exit(LIMIT).map_err(|e| e.to_string())?;
    ensure(status.success(), || {
        format!(
            "server exit status {status} after SIGTERM; stderr:\n{}",
            server.stderr()
        )
    })?;
    for (i, (client, before)) in raw_clients.into_iter().zip(sent_before).enumerate() {
        let echoed = client
            .finish()
            .map_err(|e| format!("raw client {i}: {e}"))?;
        ensure(echoed >= before, || {
            format!(
                "raw client {i}: {before} bytes sent before SIGTERM, only {echoed} echoed (bytes were lost, in the echo loop or the drain)"
            )
        })?;
    }
    ensure(!server.socket().exists(), || {
        format!(
            "{} still exists after SIGTERM: the server must remove its socket file",
            server.socket().display()
        )
    })
}

fn stale_restart() -> Result<(), String> {
    let dir = short_temp_dir();
    let path = dir.path().join("echo.sock");
    let mut first = Server::builder()
        .socket(&path)
        .start()
        .map_err(|e| e.to_string())?;
    first.stop(Signal::KILL, LIMIT).map_err(|e| e.to_string())?;
    ensure(path.exists(), || {
        "SIGKILL should leave the socket file behind".to_owned()
    })?;
    let mut second = Server::builder()
        .socket(&path)
        .start()
        .map_err(|e| format!("restart on a stale socket failed: {e}"))?;
    let echo = raw_round_trip(&path, b"after restart", 5).map_err(|e| e.to_string())?;
    ensure(echo == b"after restart", || format!("got {echo:?}"))?;
    let status = second
        .stop(Signal::TERM, LIMIT)
        .map_err(|e| e.to_string())?;
    ensure(status.success(), || format!("exit status {status}"))?;
    ensure(!path.exists(), || {
        "the socket file is still there after SIGTERM: the server must remove it".to_owned()
    })
}
