//! Cases that test a server: the runner is the client. One module per PROTOCOL.md section,
//! and `probe`, which looks once at what the server speaks before the cases run.

mod detect;
mod frames;
mod probe;
mod session;
mod shutdown;
mod vectors;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

pub(crate) use probe::Profile;

use crate::case::{Case, GRACE};
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
    /// When the case's time is up (`--timeout` plus [`GRACE`] from its start).
    pub(crate) deadline: Instant,
    /// Set when the probe saw no answer to a Hello at all: why. Cases that need a session
    /// stop at once with it instead of each waiting out the same silence.
    no_session: Option<String>,
}

impl ServerCtx {
    /// Sets up the target for one case: starts the command and waits until it listens. The
    /// case's clock starts here.
    pub(crate) fn new(
        target: &ServerTarget,
        timeout: Duration,
        profile: Option<&Profile>,
    ) -> Result<Self, TargetError> {
        let deadline = Instant::now() + timeout + GRACE;
        let (socket, process) = match target {
            ServerTarget::Socket(path) => (path.clone(), None),
            ServerTarget::Command(template) => {
                let (mut process, ()) = Process::start(template, None, |_| Ok(()))?;
                process.wait_listening((Instant::now() + timeout).min(deadline))?;
                (process.socket.clone(), Some(process))
            }
        };
        Ok(ServerCtx {
            socket,
            process,
            timeout,
            deadline,
            no_session: profile.and_then(Profile::silence),
        })
    }

    /// A new connection to the server.
    pub(crate) fn connect(&self) -> Result<Conn, String> {
        let stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("connecting to {}: {e}", self.socket.display()))?;
        Ok(Conn::new(stream, self.timeout, self.deadline))
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
        if let Some(why) = &self.no_session {
            return Err(format!("expected a Hello frame; {why}"));
        }
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

/// Sends `input` from one thread while reading on this one, after `read_after`, until the
/// server closes (the writer half-closes when done). Returns everything read. Both sides
/// stop at the case's deadline.
pub(crate) fn pump(
    conn: &mut Conn,
    input: Vec<u8>,
    read_after: Duration,
    expected_len: usize,
) -> Result<Vec<u8>, String> {
    let writer = conn.try_clone().map_err(|e| e.to_string())?;
    let (timeout, deadline) = (conn.timeout, conn.deadline);
    let sender = thread::spawn(move || -> Result<(), String> {
        // The first writes may wait for the reader's pause as well.
        wire::write_until(&writer, &input, timeout + read_after, deadline)
            .map_err(|e| format!("{e} (the server stopped reading)"))?;
        writer
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())
    });
    conn.pause(read_after);
    let mut got = Vec::new();
    while got.len() < expected_len {
        let part = conn.raw(expected_len - got.len())?;
        if part.is_empty() {
            break;
        }
        got.extend(part);
    }
    if got.len() < expected_len {
        // The writer may be blocked on a server that stopped reading: free it now.
        conn.cut();
    }
    let sent = sender
        .join()
        .map_err(|_| "the sending thread panicked".to_owned())?;
    if got.len() == expected_len {
        sent?;
    }
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

/// The end of the stream must come next.
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
