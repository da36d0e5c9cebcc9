//! `cargo xtask e2e`: what only the whole release server shows, at full speed: many raw and
//! framed peers at once with random chunking, and a slow reader (the short-write path).
//!
//! Everything a single behaviour test can hold lives with the crate that owns the behaviour
//! (`crates/server/tests`, `crates/client/tests`: the demo loop, pipe and framed pipe, the
//! SIGTERM drain, stale sockets and restarts); it is not run again here.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use udsecho_harness::{FramedPeer, Server, connect, random_payload, raw_round_trip};

use crate::scenario::{Scenarios, ensure};

const LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn run() -> Result<(), String> {
    crate::tools::release_binaries()?;
    let mut s = Scenarios::new("e2e");
    s.run(
        "200 concurrent clients, random chunking, all intact",
        concurrent_clients,
    );
    s.run(
        "a slow reader still gets every byte (backpressure, no loss)",
        slow_reader,
    );
    s.finish()
}

fn server() -> Result<Server, String> {
    Server::start(Vec::<String>::new()).map_err(|e| format!("server did not start: {e}"))
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
                    peer.echo_all(&frames)
                        .map_err(|e| format!("framed client {i}: {e}"))?;
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
