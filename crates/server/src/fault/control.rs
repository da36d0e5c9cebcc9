//! The control socket (`--control PATH`): faults added and removed while the server runs, so
//! a test can break an open connection and heal it again (Toxiproxy's model, over a Unix
//! socket).
//!
//! It is a stream socket made like the main one (`socket_file`: mode 0600, never through a
//! link, removed at the end only if it is still ours); an `@name` socket serves only peers of
//! the server's own uid (or root). The protocol is one command a line, one answer a line
//! (`list` answers a line per fault first); docs/faults.md has it:
//!
//! ```text
//! add SPEC      -> ok ID
//! remove ID     -> ok
//! list          -> fault ID SPEC ... then ok N
//! clear         -> ok N
//! (anything else, or a bad spec) -> error WHY
//! ```

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::table::Faults;
use crate::config::{SocketAddress, SocketType};
use crate::listen_error::ListenError;
use crate::listener::{Listener, Socket};
use crate::server::accept;
use crate::shutdown::Shutdown;
use udsecho_fault::FaultSpec;

/// The longest command line: a spec with a path in it fits many times over.
const MAX_LINE: usize = 4096;

/// A bound control socket (see the module's doc). Its file is removed when it drops.
#[derive(Debug)]
pub struct Control {
    listener: Listener,
}

impl Control {
    /// Binds the control socket at `address`, as the main socket is bound (mode 0600).
    pub async fn bind(address: &SocketAddress) -> Result<Control, ListenError> {
        let listener = Listener::bind(address, 0o600, SocketType::Stream).await?;
        Ok(Control { listener })
    }

    /// How the socket is named in logs.
    pub fn name(&self) -> &str {
        &self.listener.name
    }
}

/// Serves the control socket until the shutdown begins, each client on a task of its own.
pub(crate) async fn serve_control(control: Control, faults: Arc<Faults>, shutdown: Shutdown) {
    let Socket::Stream(listener) = &control.listener.socket else {
        return;
    };
    tracing::info!("control socket on {}", control.name());
    loop {
        let accepted = tokio::select! {
            () = shutdown.begun() => return,
            accepted = accept(listener) => accepted,
        };
        let fd = match accepted {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!("control: accept: {e}");
                // Out of descriptors or the like: let connections that end give some back.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !trusted(&fd) {
            tracing::warn!("control: a peer of another user; closing");
            continue;
        }
        let faults = faults.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.begun() => {}
                served = client(fd, &faults) => if let Err(e) = served {
                    tracing::debug!("control: {e}");
                },
            }
        });
    }
}

/// Only our own user (or root) may change the faults: the file's mode says so for a path,
/// and this for an abstract name, which has no file.
fn trusted(fd: &OwnedFd) -> bool {
    let me = rustix::process::geteuid().as_raw();
    udsecho_unix::credentials::of_peer(fd).is_ok_and(|cred| cred.uid == me || cred.uid == 0)
}

/// Answers one control client's commands until it closes.
async fn client(fd: OwnedFd, faults: &Faults) -> io::Result<()> {
    let mut stream = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let answer = command(String::from_utf8_lossy(&line).trim(), faults);
            stream.write_all(answer.as_bytes()).await?;
        }
        if buf.len() > MAX_LINE {
            stream
                .write_all(b"error the line is longer than 4096 bytes\n")
                .await?;
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // A last command without its newline counts too.
            if !buf.is_empty() {
                let answer = command(String::from_utf8_lossy(&buf).trim(), faults);
                stream.write_all(answer.as_bytes()).await?;
            }
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Carries out one command line; returns the answer, each line ending in a newline.
pub(crate) fn command(line: &str, faults: &Faults) -> String {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    match (verb, rest) {
        ("add", "") => "error add needs a fault: add SPEC\n".to_owned(),
        ("add", spec) => match FaultSpec::parse(spec) {
            Ok(spec) if !spec.fault.for_server() => {
                format!("error {} is a client's fault\n", spec.fault.name())
            }
            Ok(spec) => {
                let text = spec.text().to_owned();
                let id = faults.add(spec);
                tracing::info!("control: fault {id} added: {text}");
                format!("ok {id}\n")
            }
            Err(e) => format!("error {}\n", one_line(&e.to_string())),
        },
        ("remove", id) => match id.parse::<u64>() {
            Ok(id) if faults.remove(id) => {
                tracing::info!("control: fault {id} removed");
                "ok\n".to_owned()
            }
            Ok(id) => format!("error no fault {id}\n"),
            Err(_) => "error remove needs a fault's number: remove ID\n".to_owned(),
        },
        ("list", "") => {
            let list = faults.list();
            let mut out = String::new();
            for (id, spec) in &list {
                out.push_str(&format!("fault {id} {}\n", one_line(spec.text())));
            }
            out.push_str(&format!("ok {}\n", list.len()));
            out
        }
        ("clear", "") => {
            let n = faults.clear();
            tracing::info!("control: {n} fault(s) cleared");
            format!("ok {n}\n")
        }
        ("", "") => "error empty command (add SPEC, remove ID, list, clear)\n".to_owned(),
        _ => format!(
            "error unknown command {:?} (add SPEC, remove ID, list, clear)\n",
            one_line(line)
        ),
    }
}

/// Text from a peer or a spec on one line: line breaks and controls escaped.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    crate::echo_log::escape_into(text.as_bytes(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_answer_one_line_each() {
        let faults = Faults::new(Vec::new(), 1);
        assert_eq!(command("add latency=10ms", &faults), "ok 1\n");
        assert_eq!(command("add slicer=1,gap=1ms@50%", &faults), "ok 2\n");
        assert_eq!(
            command("list", &faults),
            "fault 1 latency=10ms\nfault 2 slicer=1,gap=1ms@50%\nok 2\n"
        );
        assert_eq!(command("remove 1", &faults), "ok\n");
        assert_eq!(command("remove 1", &faults), "error no fault 1\n");
        assert_eq!(command("clear", &faults), "ok 1\n");
        assert_eq!(command("list", &faults), "ok 0\n");
        let bad = command("add lag=1s", &faults);
        assert!(
            bad.starts_with("error bad fault \"lag=1s\": unknown fault"),
            "{bad}"
        );
        let unknown = command("frobnicate\u{1b}[31m", &faults);
        assert!(unknown.starts_with("error unknown command"), "{unknown}");
        assert!(!unknown.contains('\u{1b}'), "{unknown}");
        assert_eq!(unknown.matches('\n').count(), 1);
    }
}
