//! Targets that attack the runner instead of the protocol, for the runner's own tests
//! (`tests/hostile.rs`): `hostile server MODE SOCKET [TOKEN]` and `hostile client MODE SOCKET`.
//!
//! None of them is a protocol implementation; each does one thing a careless runner does
//! not survive: trickles forever, floods, writes escape sequences, replaces the file its
//! stderr goes to, daemonises out of the runner's process group, never listens or never
//! connects (and `echo` is a plain raw echo server, like the Go tutorial's). TOKEN (any word)
//! is put on the command line of every process a mode leaves behind, so a test can look for
//! it in the process table.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

const GAP: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match argv.as_slice() {
        ["server", mode, socket, rest @ ..] => server(mode, socket, rest.first().copied()),
        ["client", mode, socket, ..] => client(mode, socket),
        _ => {
            eprintln!("usage: hostile server|client MODE SOCKET [TOKEN]");
            ExitCode::from(2)
        }
    }
}

fn forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Serves each connection with `serve` on a thread of its own, forever.
fn listen(socket: &str, serve: fn(UnixStream)) -> ExitCode {
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hostile: {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve(stream));
    }
    ExitCode::SUCCESS
}

/// Reads and drops everything the peer sends (on a thread of its own).
fn swallow(stream: &UnixStream) {
    if let Ok(mut reader) = stream.try_clone() {
        thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
    }
}

/// Echoes raw bytes until the peer's end of stream, then closes.
fn echo(mut stream: UnixStream) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let _ = std::io::copy(&mut reader, &mut stream);
}

fn server(mode: &str, socket: &str, token: Option<&str>) -> ExitCode {
    // Where the runner of the issue kept the command's stderr: next to the socket.
    let stderr_file = Path::new(socket).with_file_name("stderr");
    match mode {
        // Echoes, one byte every 300 ms, and never closes.
        "trickle" => listen(socket, |mut stream| {
            let mut input = Vec::new();
            let mut chunk = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(GAP));
            loop {
                if let Ok(n @ 1..) = stream.read(&mut chunk) {
                    input.extend_from_slice(&chunk[..n]);
                }
                if !input.is_empty() {
                    let byte = input.remove(0);
                    if stream.write_all(&[byte]).is_err() {
                        return;
                    }
                }
                thread::sleep(GAP);
            }
        }),
        // The largest length a frame can declare, then a byte every 300 ms, forever.
        "ff-trickle" => listen(socket, |mut stream| {
            swallow(&stream);
            if stream.write_all(&[0xff; 4]).is_err() {
                return;
            }
            while stream.write_all(b"x").is_ok() {
                thread::sleep(GAP);
            }
        }),
        // 100 MiB on stderr, a last line, and an exit before listening.
        "stderr-flood" => {
            let block = vec![b'#'; 64 * 1024];
            let mut err = std::io::stderr().lock();
            for _ in 0..1600 {
                if err.write_all(&block).is_err() {
                    break;
                }
            }
            let _ = err.write_all(b"\nhostile: the last line\n");
            ExitCode::FAILURE
        }
        // The file its stderr goes to replaced by a FIFO nobody writes.
        "stderr-fifo" => {
            let _ = std::fs::remove_file(&stderr_file);
            let made = rustix::fs::mknodat(
                rustix::fs::CWD,
                &stderr_file,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            );
            if let Err(e) = made {
                println!("hostile: mkfifo {}: {e}", stderr_file.display());
            }
            ExitCode::FAILURE
        }
        // The file its stderr goes to replaced by a symlink to /dev/zero.
        "stderr-zero" => {
            let _ = std::fs::remove_file(&stderr_file);
            let _ = std::os::unix::fs::symlink("/dev/zero", &stderr_file);
            ExitCode::FAILURE
        }
        // A last stderr line that clears the screen and writes a verdict of its own.
        "escape-stderr" => {
            eprintln!("\x1b[2J\x1b[H\x1b]0;owned\x07OK            every case");
            ExitCode::FAILURE
        }
        // Forks a raw echo server into a session of its own, waits until it listens, exits.
        "daemon" => {
            let Ok(me) = std::env::current_exe() else {
                return ExitCode::FAILURE;
            };
            let spawned = std::process::Command::new(me)
                .args(["server", "daemon-child", socket, token.unwrap_or("-")])
                .stdin(std::process::Stdio::null())
                .spawn();
            if spawned.is_err() {
                return ExitCode::FAILURE;
            }
            for _ in 0..500 {
                if UnixStream::connect(socket).is_ok() {
                    return ExitCode::SUCCESS;
                }
                thread::sleep(Duration::from_millis(10));
            }
            ExitCode::FAILURE
        }
        "daemon-child" => {
            if let Err(e) = rustix::process::setsid() {
                eprintln!("hostile: setsid: {e}");
            }
            listen(socket, echo)
        }
        // Not hostile: a plain raw echo server, like the Go tutorial's (no framed session).
        "echo" => listen(socket, echo),
        "never-listen" => forever(),
        _ => {
            eprintln!("hostile: unknown server mode {mode:?}");
            ExitCode::from(2)
        }
    }
}

/// A framed client's opening: the preamble and a Hello (version 1, max_frame 4096).
fn opening() -> Vec<u8> {
    let mut out = b"\0UDSECHO".to_vec();
    out.extend([0, 0, 0, 6, 0, 1, 0x80, 0x20, 0]);
    out
}

fn client(mode: &str, socket: &str) -> ExitCode {
    let connect = || match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hostile: {socket}: {e}");
            std::process::exit(1);
        }
    };
    match mode {
        // Connects and says nothing, forever.
        "hang" => {
            let _stream = connect();
            forever()
        }
        // Never connects, never exits.
        "hang-away" => forever(),
        // Exits 0 at once, without connecting.
        "exit0" => ExitCode::SUCCESS,
        // The opening, then Data frames as fast as the socket takes them, never reading.
        "flood" => {
            let mut stream = connect();
            let _ = stream.write_all(&opening());
            let mut frames = Vec::new();
            for _ in 0..64 {
                frames.extend([0, 0, 0, 101, 1]);
                frames.extend([b'f'; 100]);
            }
            while stream.write_all(&frames).is_ok() {}
            ExitCode::SUCCESS
        }
        // The opening, then a Data frame every 300 ms forever, reading what comes back.
        "frame-trickle" => {
            let mut stream = connect();
            swallow(&stream);
            let _ = stream.write_all(&opening());
            while stream.write_all(&[0, 0, 0, 3, 1, b'h', b'i']).is_ok() {
                thread::sleep(GAP);
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("hostile: unknown client mode {mode:?}");
            ExitCode::from(2)
        }
    }
}
