//! `cargo xtask soak --seconds N`: a mixed-fault load against the release server, while its
//! memory and descriptors are sampled. Well-behaved clients check every byte; around them,
//! clients half-close, vanish mid-stream, never read, trickle bytes (slowloris), send
//! oversized and malformed frames, and flood past `--max-connections`.
//!
//! Pass criteria, printed at the end: no corrupted or lost byte for well-behaved clients; peak
//! RSS bounded during the load; RSS and fd count back near the baseline once it stops; the server still serving; a
//! SIGTERM drain that exits 0 and removes the socket file.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use udsecho_harness::{FramedPeer, Server, Signal, connect, random_payload, raw_round_trip};
use udsecho_proto::{ErrorCode, Frame};

use crate::scenario::{Scenarios, ensure};

const MAX_CONNECTIONS: usize = 256;
/// Memory the server may keep above its warmed-up baseline after the load (allocator caches,
/// thread-local scratch buffers): a leak of even 1 KiB per connection over a soak exceeds it.
const RSS_SLACK_KIB: u64 = 16 * 1024;
const FD_SLACK: usize = 4;
/// Memory the server may use above the baseline while the load runs: every connection may
/// hold one read's worth (64 KiB) or a frame step (256 KiB); a few hundred connections, mostly
/// idle, stay well under this.
const PEAK_SLACK_KIB: u64 = 24 * 1024;

/// Counters shared by every load thread.
#[derive(Default)]
struct Tally {
    verified_bytes: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
    faults: AtomicU64,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failures.lock().expect("never poisoned").push(why);
    }
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let seconds = crate::tools::seconds_arg(args, 30)?;
    crate::tools::release_binaries()?;
    let max = MAX_CONNECTIONS.to_string();
    let mut server = Server::start([
        "--max-connections",
        max.as_str(),
        "--idle-timeout",
        "2s",
        "--max-frame",
        "1MiB",
        "--shutdown-timeout",
        "5s",
    ])
    .map_err(|e| format!("server did not start: {e}"))?;
    let socket = server.socket().to_owned();
    let pid = server.pid();
    let tally = Arc::new(Tally::default());
    let mut s = Scenarios::new("soak");

    // Warm up with well-behaved traffic only, then take the baseline.
    run_load(&socket, Duration::from_secs(2), &tally, false);
    thread::sleep(Duration::from_millis(500));
    let (base_rss, base_fds) = (rss_kib(pid)?, fd_count(pid)?);
    println!("soak: baseline after warm-up: {base_rss} KiB RSS, {base_fds} fds");

    let peak = Arc::new(AtomicU64::new(base_rss));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    run_load(&socket, Duration::from_secs(seconds), &tally, true);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    println!(
        "soak: {:.0} s of mixed load: {} MB verified, {} faulty connections, peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        tally.verified_bytes.load(Ordering::Relaxed) / 1_000_000,
        tally.faults.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed)
    );

    let failures = tally.failures.lock().expect("never poisoned").clone();
    s.run("well-behaved clients: every byte echoed intact", || {
        ensure(failures.is_empty(), || {
            format!("{} failures; first: {}", failures.len(), failures[0])
        })?;
        ensure(tally.verified_bytes.load(Ordering::Relaxed) > 0, || {
            "no traffic was verified".to_owned()
        })
    });
    // Idle-timeout (2 s) and linger let the faulty connections go; then memory and fds settle.
    thread::sleep(Duration::from_secs(4));
    s.run("RSS stayed bounded during the load", || {
        let peak = peak.load(Ordering::Relaxed);
        ensure(peak <= base_rss + PEAK_SLACK_KIB, || {
            format!(
                "peak RSS {peak} KiB, baseline {base_rss} KiB: more than {PEAK_SLACK_KIB} KiB \
                 held for a few hundred connections (an unbounded per-connection buffer?)"
            )
        })
    });
    s.run("RSS back near the baseline after the load", || {
        let rss = rss_kib(pid)?;
        ensure(rss <= base_rss + RSS_SLACK_KIB, || {
            format!("RSS {rss} KiB after the load, baseline {base_rss} KiB, allowed slack {RSS_SLACK_KIB} KiB")
        })
    });
    s.run("open descriptors back to the baseline", || {
        let fds = fd_count(pid)?;
        ensure(fds <= base_fds + FD_SLACK, || {
            format!("{fds} fds open after the load, baseline {base_fds}")
        })
    });
    s.run("the server still serves", || {
        let echo = raw_round_trip(&socket, b"still alive", 3).map_err(|e| e.to_string())?;
        ensure(echo == b"still alive", || {
            format!("got {:?}", String::from_utf8_lossy(&echo))
        })
    });
    s.run(
        "SIGTERM under load drains (framed peers: every frame, then Goodbye), exits 0, removes the file",
        || sigterm_under_load(&mut server),
    );
    s.finish()
}

/// Runs every kind of client for `duration`; `faults` adds the misbehaving ones.
fn run_load(socket: &Path, duration: Duration, tally: &Arc<Tally>, faults: bool) {
    let deadline = Instant::now() + duration;
    let mut threads = Vec::new();
    let mut spawn = |f: fn(&Path, u64, &Tally), copies: u64| {
        for i in 0..copies {
            let (socket, tally) = (socket.to_owned(), tally.clone());
            threads.push(thread::spawn(move || {
                let mut round = 0;
                while Instant::now() < deadline {
                    f(&socket, i * 1_000_003 + round, &tally);
                    round += 1;
                }
            }));
        }
    };
    spawn(good_raw, 6);
    spawn(good_framed, 3);
    spawn(half_closer, 2);
    if faults {
        spawn(vanisher, 2);
        spawn(never_reads, 2);
        spawn(slowloris, 2);
        spawn(bad_frames, 2);
        spawn(flood, 1);
    }
    for t in threads {
        let _ = t.join();
    }
}

fn good_raw(socket: &Path, seed: u64, tally: &Tally) {
    let data = random_payload(1_000 + (seed as usize * 7_919) % 200_000, seed);
    match raw_round_trip(socket, &data, 1 + (seed as usize * 131) % 16_000) {
        Ok(echo) if echo == data => {
            tally
                .verified_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(echo) => tally.fail(format!(
            "raw client {seed}: sent {} bytes, got {} back or different",
            data.len(),
            echo.len()
        )),
        Err(e) => tally.fail(format!("raw client {seed}: {e}")),
    }
}

fn good_framed(socket: &Path, seed: u64, tally: &Tally) {
    let result = (|| -> Result<u64, String> {
        let (mut peer, _) = FramedPeer::handshake(socket).map_err(|e| e.to_string())?;
        let frames: Vec<Bytes> = (0..32)
            .map(|k| {
                Bytes::from(random_payload(
                    (seed as usize + k * 97) % 3_000,
                    seed + k as u64,
                ))
            })
            .collect();
        peer.echo_all(&frames)?;
        Ok(frames.iter().map(|f| f.len() as u64).sum())
    })();
    match result {
        Ok(bytes) => {
            tally.verified_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Err(e) => tally.fail(format!("framed client {seed}: {e}")),
    }
}

fn half_closer(socket: &Path, seed: u64, tally: &Tally) {
    // One write, half-close at once, then read: the whole echo must still come back.
    let data = random_payload(100 + (seed as usize % 50_000), seed);
    let result = (|| -> std::io::Result<Vec<u8>> {
        let mut stream = connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(&data)?;
        stream.shutdown(Shutdown::Write)?;
        let mut echo = Vec::new();
        stream.read_to_end(&mut echo)?;
        Ok(echo)
    })();
    match result {
        Ok(echo) if echo == data => {
            tally
                .verified_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(echo) => tally.fail(format!(
            "half-closer {seed}: {} of {} bytes, or different",
            echo.len(),
            data.len()
        )),
        Err(e) => tally.fail(format!("half-closer {seed}: {e}")),
    }
}

fn vanisher(socket: &Path, seed: u64, tally: &Tally) {
    tally.faults.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut stream) = connect(socket) {
        let _ = stream.write_all(&random_payload(300_000, seed));
        // Dropped with its echo unread.
    }
}

fn never_reads(socket: &Path, seed: u64, tally: &Tally) {
    tally.faults.fetch_add(1, Ordering::Relaxed);
    let Ok(mut stream) = connect(socket) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(Duration::from_millis(300)));
    let chunk = random_payload(64 * 1024, seed);
    // Write until the buffers on both sides are full: the server must stop reading. (A
    // server that kept reading would take all 16 MiB and hold it: the peak-RSS check.)
    for _ in 0..256 {
        match stream.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => return,
        }
    }
    thread::sleep(Duration::from_secs(1));
}

fn slowloris(socket: &Path, seed: u64, tally: &Tally) {
    tally.faults.fetch_add(1, Ordering::Relaxed);
    let Ok((mut peer, _)) = FramedPeer::handshake(socket) else {
        return;
    };
    // Announce a frame of 1 MiB - 1 and trickle it: the server holds a bounded buffer.
    let _ = peer.send_raw(&[0x00, 0x0f, 0xff, 0xff, 0x01]);
    for k in 0..4 {
        if peer.send_raw(&random_payload(16, seed + k)).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

fn bad_frames(socket: &Path, seed: u64, tally: &Tally) {
    tally.faults.fetch_add(1, Ordering::Relaxed);
    let (bytes, code): (&[u8], ErrorCode) = match seed % 4 {
        0 => (b"\xff\xff\xff\xff", ErrorCode::FrameTooLarge),
        1 => (b"\x00\x00\x00\x00", ErrorCode::EmptyFrame),
        2 => (b"\x00\x00\x00\x01\x09", ErrorCode::UnknownKind),
        _ => (b"\x00\x00\x00\x03\x01hi", ErrorCode::UnexpectedFrame),
    };
    let Ok(mut peer) = udsecho_harness::FramedPeer::connect(socket) else {
        return;
    };
    if peer.send_raw(bytes).is_err() {
        return;
    }
    match peer.recv() {
        Ok(Some(Frame::Error(e))) if e.code == code => {}
        // Under a flood the server may not have reached us before our deadline; only a
        // wrong answer is a failure.
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
        other => tally.fail(format!(
            "bad frame {seed}: expected Error {code:?}, got {other:?}"
        )),
    }
}

fn flood(socket: &Path, _seed: u64, tally: &Tally) {
    tally.faults.fetch_add(1, Ordering::Relaxed);
    // Twice the limit at once: the extra peers wait in the backlog, nobody is refused service
    // for long, and the server does not fall over.
    let held: Vec<_> = (0..MAX_CONNECTIONS * 2)
        .filter_map(|_| connect(socket).ok())
        .collect();
    thread::sleep(Duration::from_millis(500));
    drop(held);
}

fn sigterm_under_load(server: &mut Server) -> Result<(), String> {
    let socket: PathBuf = server.socket().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            let (socket, stop, tally) = (socket.clone(), stop.clone(), tally.clone());
            thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    // After the signal, connections are refused: that is fine; a wrong echo
                    // on a connection that was served is not.
                    let data = random_payload(20_000, i * 1_000 + k);
                    if let Ok(echo) = raw_round_trip(&socket, &data, 4_096)
                        && echo != data[..echo.len().min(data.len())]
                    {
                        tally.fail(format!("client {i}: echo differs during the drain"));
                    }
                    k += 1;
                }
            })
        })
        .collect();
    // Framed peers with frames in flight at the signal: all of them back, then Goodbye.
    let mut framed = Vec::new();
    for i in 0..4u64 {
        let (mut peer, _) = FramedPeer::handshake(&socket).map_err(|e| e.to_string())?;
        let frames: Vec<Bytes> = (0..40)
            .map(|k| Bytes::from(random_payload(900, i * 100 + k)))
            .collect();
        for f in &frames {
            peer.send(&Frame::Data(f.clone()))
                .map_err(|e| e.to_string())?;
        }
        framed.push((peer, frames));
    }
    thread::sleep(Duration::from_millis(300));
    server.signal(Signal::TERM).map_err(|e| e.to_string())?;
    for (i, (mut peer, frames)) in framed.into_iter().enumerate() {
        for (k, f) in frames.iter().enumerate() {
            match peer.recv() {
                Ok(Some(Frame::Data(echo))) if echo == f => {}
                other => tally.fail(format!(
                    "framed peer {i}: frame {k} sent before SIGTERM came back as {other:?}"
                )),
            }
        }
        match peer.recv() {
            Ok(Some(Frame::Goodbye(g))) if g.reason == udsecho_proto::GoodbyeReason::Shutdown => {}
            other => tally.fail(format!(
                "framed peer {i}: expected Goodbye(Shutdown), got {other:?}"
            )),
        }
    }
    let status = server
        .wait_exit(Duration::from_secs(15))
        .map_err(|e| e.to_string());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let status = status?;
    ensure(status.success(), || {
        format!("exit status {status}; stderr:\n{}", server.stderr())
    })?;
    ensure(!socket.exists(), || {
        format!("{} still exists after SIGTERM", socket.display())
    })?;
    let failures = tally.failures.lock().expect("never poisoned").clone();
    ensure(failures.is_empty(), || {
        format!(
            "{} failures; first: {}",
            failures.len(),
            failures[..failures.len().min(3)].join("; ")
        )
    })
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    udsecho_harness::rss_kib(pid).map_err(|e| format!("server gone? {e}"))
}

fn fd_count(pid: u32) -> Result<usize, String> {
    udsecho_harness::open_fds(pid).map_err(|e| format!("server gone? {e}"))
}
