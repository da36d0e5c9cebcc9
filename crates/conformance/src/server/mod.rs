//! Cases that test a server: the runner is the client. One module per PROTOCOL.md section.

mod detect;
mod frames;
mod session;
mod vectors;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use crate::case::{Case, Verdict};
use crate::target::{Process, TargetError};
use crate::wire::{self, Conn, Got, PREAMBLE, PeerHello};

/// Where the server under test is.
#[derive(Debug, Clone)]
pub(crate) enum ServerTarget {
    /// A server already listening there; every case shares it.
    Socket(PathBuf),
    /// A command started per case on a fresh socket (`{sock}`).
    Command(String),
}

/// What a server case works with.
#[derive(Debug)]
pub(crate) struct ServerCtx {
    socket: PathBuf,
    /// The server process of this case, when the runner started it.
    process: Option<Process>,
    /// The longest any single wait may take.
    pub(crate) timeout: Duration,
}

/// Cases that signal the server process, so only run when the runner starts it (`--cmd`).
pub(crate) const NEED_COMMAND: [&str; 1] = ["4/shutdown-drains"];

impl ServerCtx {
    /// Sets up the target for one case: starts the command and waits until it listens.
    pub(crate) fn new(target: &ServerTarget, timeout: Duration) -> Result<Self, TargetError> {
        match target {
            ServerTarget::Socket(path) => Ok(ServerCtx {
                socket: path.clone(),
                process: None,
                timeout,
            }),
            ServerTarget::Command(template) => {
                let (mut process, ()) = Process::start(template, None, |_| Ok(()))?;
                process.wait_listening(timeout.max(Duration::from_secs(10)))?;
                Ok(ServerCtx {
                    socket: process.socket.clone(),
                    process: Some(process),
                    timeout,
                })
            }
        }
    }

    /// A new connection to the server.
    pub(crate) fn connect(&self) -> Result<Conn, String> {
        let stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("connecting to {}: {e}", self.socket.display()))?;
        Ok(Conn::new(stream, self.timeout))
    }

    /// A connection that has sent the preamble.
    pub(crate) fn framed(&self) -> Result<Conn, String> {
        let mut conn = self.connect()?;
        conn.send(&PREAMBLE)?;
        Ok(conn)
    }

    /// A connection after the Hello exchange, the client's Hello offering `max_frame`. The
    /// server's answer must be a valid Hello of version 1.
    pub(crate) fn greeted(&self, max_frame: u32) -> Result<(Conn, PeerHello), String> {
        let mut conn = self.framed()?;
        conn.send(&wire::hello(1, max_frame))?;
        let hello = conn.expect_hello()?;
        check_server_hello(&hello)?;
        Ok((conn, hello))
    }

    /// Asks the server process to shut down gracefully.
    pub(crate) fn terminate(&self) -> Result<(), String> {
        self.process
            .as_ref()
            .ok_or("needs --cmd: the runner did not start the server")?
            .terminate()
    }

    /// Whether the server answers raw connections (auto mode). A framed-only server is
    /// conformant (PROTOCOL.md §1): it answers them with an Error frame, or closes.
    pub(crate) fn speaks_raw(&self) -> Result<bool, String> {
        let mut conn = self.connect()?;
        let probe = b"udsecho-conformance raw probe\n";
        conn.send(probe)?;
        conn.half_close()?;
        let back = conn.raw(probe.len())?;
        // The probe starts with `u`: an echo of it, even a wrong one, cannot look like a frame.
        let refused = back.first() == Some(&0) && back.get(4) == Some(&wire::ERROR);
        Ok(!(back.is_empty() || refused))
    }
}

/// The server's Hello: version 1, a `max_frame` of at least 1.
fn check_server_hello(hello: &PeerHello) -> Result<(), String> {
    if hello.version != 1 {
        return Err(format!(
            "the server's Hello chose version {}; the client offered 1",
            hello.version
        ));
    }
    if hello.max_frame == 0 {
        return Err("the server's Hello has max_frame 0".to_owned());
    }
    Ok(())
}

/// For raw-mode cases: UNIMPLEMENTED when the server is framed-only.
pub(crate) fn needs_raw(ctx: &ServerCtx) -> Result<Option<Verdict>, String> {
    Ok((!ctx.speaks_raw()?).then(|| {
        Verdict::Unimplemented(
            "raw mode (auto detection): the server answers raw bytes with an Error frame or a \
             close, as a framed-only server may"
                .to_owned(),
        )
    }))
}

/// Sends `input` from one thread while reading on this one, after `read_after`, until the
/// server closes (the writer half-closes when done). Returns everything read.
pub(crate) fn pump(
    conn: &mut Conn,
    input: Vec<u8>,
    read_after: Duration,
    expected_len: usize,
) -> Result<Vec<u8>, String> {
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let timeout = conn.timeout;
    let sender = thread::spawn(move || -> Result<(), String> {
        use std::io::Write;
        writer
            .set_write_timeout(Some(timeout + read_after))
            .map_err(|e| e.to_string())?;
        for chunk in input.chunks(16 * 1024) {
            writer
                .write_all(chunk)
                .map_err(|e| format!("sending: {e} (the server stopped reading)"))?;
        }
        writer
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())
    });
    thread::sleep(read_after);
    let mut got = Vec::new();
    while got.len() < expected_len {
        let part = conn.raw(expected_len - got.len())?;
        if part.is_empty() {
            break;
        }
        got.extend(part);
    }
    let sent = sender
        .join()
        .map_err(|_| "the sending thread panicked".to_owned())?;
    sent?;
    Ok(got)
}

/// The first place two byte strings differ, for a report.
pub(crate) fn first_difference(want: &[u8], got: &[u8]) -> String {
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    format!(
        "{} bytes expected, {} received; first difference at byte {at}: expected [{}], saw [{}]",
        want.len(),
        got.len(),
        wire::hex(want.get(at..).unwrap_or_default()),
        wire::hex(got.get(at..).unwrap_or_default())
    )
}

/// `got` must be exactly what was expected, then the end of the stream.
pub(crate) fn expect_end(conn: &mut Conn) -> Result<(), String> {
    match conn.next()? {
        Got::Eof => Ok(()),
        other => Err(wire::mismatch("the end of the stream", None, &other)),
    }
}

/// Every server case, in PROTOCOL.md order.
pub(crate) fn cases() -> Vec<Case<ServerCtx>> {
    let mut all = Vec::new();
    all.extend(detect::cases());
    all.extend(frames::cases());
    all.extend(session::cases());
    all.extend(vectors::cases());
    all
}
