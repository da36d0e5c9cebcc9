//! Readiness for systemd (`Type=notify`): `READY=1` once the socket is served, `STOPPING=1`
//! when the drain begins. A no-op without `NOTIFY_SOCKET`.
//!
//! Notifying never blocks serving or shutdown. A service manager that is wedged or slow
//! leaves its socket's queue full, and a plain blocking `send` would then hold the runtime's
//! thread (no connection served, SIGTERM not handled). So each notification is first sent
//! without waiting; if the queue is full it goes to a thread of its own, which keeps trying
//! for [`PATIENCE`] and then drops it with a log line. Once that thread exists every later
//! notification goes through it too, so `STOPPING=1` never overtakes `READY=1`.
//!
//! `NOTIFY_SOCKET` is a path (`/run/systemd/notify`) or, as sd_notify(3) allows, an abstract
//! name (`@name`). A failure to notify is logged, never fatal: the service manager's own
//! timeout says the rest.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

/// How long the background thread waits for the service manager to take one notification.
const PATIENCE: Duration = Duration::from_secs(30);

/// The socket is bound and served.
pub(crate) fn ready(name: &str) {
    send(format!("READY=1\nSTATUS=serving {name}\n"));
}

/// The shutdown began: no new connections, the open ones are being drained.
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=draining\n".to_owned());
}

/// The notifications waiting for the background thread, once there is one.
static BACKLOG: Mutex<Option<Sender<String>>> = Mutex::new(None);

fn send(message: String) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut backlog = BACKLOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(queue) = backlog.as_ref() {
        // Behind the ones already waiting, in order, through the thread's own socket.
        if queue.send(message).is_err() {
            tracing::warn!("sd_notify: the notifying thread is gone; a notification was dropped");
        }
        return;
    }
    let (socket, to) = match open(&target) {
        Ok(pair) => pair,
        Err(why) => {
            tracing::warn!("NOTIFY_SOCKET={}: {why}", target.to_string_lossy());
            return;
        }
    };
    match rustix::net::sendto(
        &socket,
        message.as_bytes(),
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        &to,
    ) {
        Ok(_) => {}
        Err(Errno::AGAIN) => {
            tracing::info!(
                "sd_notify: the service manager's queue is full; notifying from another thread"
            );
            *backlog = later(socket, to, message);
        }
        Err(e) => tracing::warn!("sd_notify to {}: {e}", target.to_string_lossy()),
    }
}

/// The socket to notify through and the address to notify, from `NOTIFY_SOCKET`.
fn open(target: &OsStr) -> Result<(OwnedFd, SocketAddrUnix), String> {
    let bytes = target.as_bytes();
    let to = match bytes.first() {
        Some(b'@') => SocketAddrUnix::new_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddrUnix::new(bytes),
        _ => return Err("not an absolute path or an @abstract name; not notifying".to_owned()),
    }
    .map_err(|e| format!("not a usable socket address ({e})"))?;
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot create a socket to notify through ({e})"))?;
    Ok((socket, to))
}

/// Starts the thread that delivers `first` and every later notification, each within
/// [`PATIENCE`]; returns its queue, or `None` if no thread could be started.
fn later(socket: OwnedFd, to: SocketAddrUnix, first: String) -> Option<Sender<String>> {
    let (queue, waiting) = mpsc::channel::<String>();
    queue.send(first).ok()?;
    let started = std::thread::Builder::new()
        .name("sd-notify".to_owned())
        .spawn(move || {
            let timeout = rustix::net::sockopt::set_socket_timeout(
                &socket,
                rustix::net::sockopt::Timeout::Send,
                Some(PATIENCE),
            );
            if let Err(e) = timeout {
                tracing::debug!("sd_notify: no send timeout ({e})");
            }
            for message in waiting {
                let what = message.lines().next().unwrap_or_default().to_owned();
                match rustix::net::sendto(&socket, message.as_bytes(), SendFlags::NOSIGNAL, &to)
                {
                    Ok(_) => tracing::debug!("sd_notify: {what} delivered late"),
                    Err(Errno::AGAIN) => tracing::warn!(
                        "sd_notify: the service manager took no notification for {}; {what} dropped",
                        humantime::format_duration(PATIENCE)
                    ),
                    Err(e) => tracing::warn!("sd_notify: {what} not delivered ({e})"),
                }
            }
        });
    match started {
        Ok(_) => Some(queue),
        Err(e) => {
            tracing::warn!("sd_notify: cannot start a thread to notify from ({e}); dropped");
            None
        }
    }
}
