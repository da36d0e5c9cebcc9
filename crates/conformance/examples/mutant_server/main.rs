//! A small, blocking, thread-per-connection implementation of a PROTOCOL.md server, written
//! for the runner's own tests: `mutant_server SOCKET [BUG]`.
//!
//! Without BUG it passes every case, graceful shutdown included (SIGTERM: stop accepting,
//! finish the Data frame being echoed, echo what is queued, Goodbye (Shutdown)). With BUG it
//! carries that one deliberate bug, and `tests/mutants.rs` checks that exactly the cases meant
//! to catch it fail. It uses nothing from udsecho but the constants; SIGTERM comes through
//! tokio's signal handling (the workspace forbids `unsafe`).

mod bug;
mod conn;
mod serve;

use bug::Bug;
use serve::serve;

use std::io;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PREAMBLE: &[u8; 8] = b"\0UDSECHO";
const MAX_FRAME: u32 = 8 * 1024 * 1024;
const MAX_CONTROL: u32 = 4096;

/// Set once SIGTERM arrived: sessions drain and say Goodbye (Shutdown).
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Connections being served; the process exits when none is left after SIGTERM.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// How often a framed session blocked in a read looks at `SHUTDOWN`.
const POLL: Duration = Duration::from_millis(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, bug) = match args.as_slice() {
        [socket] => (socket.clone(), Bug::None),
        [socket, bug] => match Bug::parse(bug) {
            Some(bug) => (socket.clone(), bug),
            None => {
                eprintln!("mutant_server: unknown bug {bug:?}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: mutant_server SOCKET [BUG]");
            std::process::exit(2);
        }
    };
    // The handler is in place before the socket exists: a SIGTERM can never kill it.
    let sigterm = match on_sigterm(socket.clone()) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("mutant_server: SIGTERM handler: {e}");
            std::process::exit(1);
        }
    };
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mutant_server: {socket}: {e}");
            std::process::exit(1);
        }
    };
    std::thread::spawn(sigterm);
    for stream in listener.incoming().flatten() {
        if SHUTDOWN.load(Ordering::SeqCst) {
            break;
        }
        let active = Active::new();
        std::thread::spawn(move || {
            let _ = serve(stream, bug);
            drop(active);
        });
    }
}

/// Installs the SIGTERM handler now; the returned function waits for the signal, then lets
/// the sessions drain (at most 3 s) and exits 0.
fn on_sigterm(socket: String) -> io::Result<impl FnOnce() + Send + 'static> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut term = {
        let _entered = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
    };
    Ok(move || {
        if runtime.block_on(term.recv()).is_none() {
            return;
        }
        SHUTDOWN.store(true, Ordering::SeqCst);
        // Stop accepting: nobody new can connect.
        let _ = std::fs::remove_file(&socket);
        let deadline = Instant::now() + Duration::from_secs(3);
        while ACTIVE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        std::process::exit(0);
    })
}

/// One connection being served (counted in `ACTIVE` while it lives).
struct Active;

impl Active {
    fn new() -> Active {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
