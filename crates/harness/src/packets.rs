//! Message-oriented test peers: a datagram server that answers each datagram to its sender,
//! and a seqpacket server that hands each accepted connection to a closure. Both record what
//! they received, message by message, so a test can check boundaries as well as bytes.
//!
//! std has datagram sockets but no seqpacket; that one is built on rustix. Every blocking
//! call has a deadline (10 s), so a test that goes wrong fails instead of hanging.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType, sockopt,
};

/// How long any one blocking call of a peer may wait.
const DEADLINE: Duration = Duration::from_secs(10);

/// The largest message a peer reads (larger ones are recorded cut to this size).
const MAX_MESSAGE: usize = 1 << 20;

/// Where a datagram came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A Linux abstract address (the bytes after the leading NUL).
    Abstract(Vec<u8>),
    /// A socket file.
    Path(PathBuf),
    /// An unbound socket: it cannot be answered.
    Unnamed,
}

impl Sender {
    fn of(addr: &SocketAddr) -> Sender {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Some(name) = addr.as_abstract_name() {
                return Sender::Abstract(name.to_vec());
            }
        }
        match addr.as_pathname() {
            Some(path) => Sender::Path(path.to_owned()),
            None => Sender::Unnamed,
        }
    }
}

/// What a [`DatagramPeer`] does with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back to the sender, as one datagram.
    Reply(Vec<u8>),
    /// Send nothing back (a lost reply, as far as the sender can tell).
    Ignore,
    /// Send these bytes back, then close the socket (its file stays: a stale socket).
    ReplyThenClose(Vec<u8>),
}

/// One datagram a peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Who sent it.
    pub sender: Sender,
}

/// A datagram server on a socket file, answering in a thread until dropped.
#[derive(Debug)]
pub struct DatagramPeer {
    path: PathBuf,
    received: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl DatagramPeer {
    /// Binds `path` and answers each datagram (numbered from 0) as `answer` says.
    pub fn start(
        path: &Path,
        mut answer: impl FnMut(usize, &[u8]) -> Answer + Send + 'static,
    ) -> io::Result<DatagramPeer> {
        let socket = UnixDatagram::bind(path)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; MAX_MESSAGE];
                let mut index = 0;
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sender = Sender::of(&from);
                    received.lock().expect("never poisoned").push(Datagram {
                        bytes: buf[..n].to_vec(),
                        sender: sender.clone(),
                    });
                    let (reply, close) = match answer(index, &buf[..n]) {
                        Answer::Reply(bytes) => (Some(bytes), false),
                        Answer::Ignore => (None, false),
                        Answer::ReplyThenClose(bytes) => (Some(bytes), true),
                    };
                    index += 1;
                    if let (Some(reply), false) = (reply, sender == Sender::Unnamed) {
                        let _ = socket.set_write_timeout(Some(DEADLINE));
                        let _ = socket.send_to_addr(&reply, &from);
                    }
                    if close {
                        break;
                    }
                }
            })
        };
        Ok(DatagramPeer {
            path: path.to_owned(),
            received,
            stop,
            thread: Some(thread),
        })
    }

    /// An echo server: each datagram goes back to its sender unchanged.
    pub fn echo(path: &Path) -> io::Result<DatagramPeer> {
        DatagramPeer::start(path, |_, bytes| Answer::Reply(bytes.to_vec()))
    }

    /// The socket path it is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram received so far, in order.
    pub fn received(&self) -> Vec<Datagram> {
        self.received.lock().expect("never poisoned").clone()
    }
}

impl Drop for DatagramPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the thread's recv with one datagram from an unbound socket (it may be gone
        // already, after `ReplyThenClose`).
        if let Ok(waker) = UnixDatagram::unbound()
            && waker.set_nonblocking(true).is_ok()
        {
            // A full queue needs no wake-up: the thread finds the flag at its next recv.
            let _ = waker.send_to(b"", &self.path);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One accepted seqpacket connection, blocking, every call bounded by 10 s.
#[derive(Debug)]
pub struct SeqpacketConn {
    fd: OwnedFd,
}

impl SeqpacketConn {
    /// The next message; `None` when the client has shut down its write side (or closed).
    pub fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (_, n) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// Sends one message.
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        rustix::net::send(&self.fd, message, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Shuts down the write side: the client reads end-of-file.
    pub fn shutdown_write(&self) -> io::Result<()> {
        rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Write)?;
        Ok(())
    }
}

/// A seqpacket server on a socket file: each connection, one at a time, is handed to a
/// closure in a thread. Stops accepting when dropped.
#[derive(Debug)]
pub struct SeqpacketPeer {
    path: PathBuf,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SeqpacketPeer {
    /// Listens on `path` and calls `serve` for each connection; what `serve` records with
    /// the `record` it is given shows in [`SeqpacketPeer::received`].
    pub fn start(
        path: &Path,
        mut serve: impl FnMut(SeqpacketConn, &dyn Fn(&[u8])) + Send + 'static,
    ) -> io::Result<SeqpacketPeer> {
        let listener = seqpacket_socket()?;
        rustix::net::bind(&listener, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&listener, 16)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            thread::spawn(move || {
                let record = |message: &[u8]| {
                    received
                        .lock()
                        .expect("never poisoned")
                        .push(message.to_vec());
                };
                while let Ok(fd) = rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let _ =
                        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(DEADLINE));
                    let _ =
                        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(DEADLINE));
                    serve(SeqpacketConn { fd }, &record);
                }
            })
        };
        Ok(SeqpacketPeer {
            path: path.to_owned(),
            received,
            stop,
            thread: Some(thread),
        })
    }

    /// An echo server: each message goes back as one message, until the client's EOF.
    pub fn echo(path: &Path) -> io::Result<SeqpacketPeer> {
        SeqpacketPeer::start(path, |conn, record| {
            while let Ok(Some(message)) = conn.recv() {
                record(&message);
                if conn.send(&message).is_err() {
                    break;
                }
            }
        })
    }

    /// The socket path it listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message recorded so far, in order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("never poisoned").clone()
    }
}

impl Drop for SeqpacketPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept with one connection of our own.
        if let (Ok(waker), Ok(addr)) =
            (seqpacket_socket(), SocketAddrUnix::new(self.path.as_path()))
        {
            let _ = rustix::net::connect(waker.as_fd(), &addr);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A blocking seqpacket socket.
pub fn seqpacket_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}
