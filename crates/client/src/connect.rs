//! Connecting to a [`Target`] with errors a person understands: a stream (tokio's
//! `UnixStream`), a seqpacket or datagram [`MessageSocket`], or whichever a [`Transport`]
//! asks for ([`Connection`]). What the error says comes from what the path holds, the default
//! directory's safety, and which type the server really listens with.

use std::io;
use std::time::Duration;

use rustix::net::SocketAddrUnix;
use tokio::net::UnixStream;
use udsecho_unix::socket::socket;
use udsecho_unix::socket_dir::{default_socket_dir, private_dir_problem};

use crate::error::{ClientError, ErrorKind};
use crate::message::MessageSocket;
use crate::target::{SocketType, Target, Transport};

/// A connection opened for a [`Transport`].
#[derive(Debug)]
pub enum Connection {
    /// A connected stream, raw or framed.
    Stream {
        /// The connected socket.
        stream: UnixStream,
        /// Speak frames on it.
        framed: bool,
    },
    /// A connected seqpacket or datagram socket.
    Messages(MessageSocket),
}

impl Target {
    /// Connects the socket `transport` needs, for at most `timeout` (see [`Target::connect`]
    /// and [`Target::connect_messages`]).
    pub async fn open(
        &self,
        transport: Transport,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        match transport {
            Transport::Stream { framed } => Ok(Connection::Stream {
                stream: self.connect(timeout).await?,
                framed,
            }),
            Transport::Seqpacket | Transport::Datagram => self
                .connect_messages(transport.socket_type(), timeout)
                .await
                .map(Connection::Messages),
        }
    }

    /// Connects, retrying while the server's backlog is full, for at most `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<UnixStream, ClientError> {
        self.check_reachable()?;
        let attempt = async {
            loop {
                match self.connect_once().await {
                    // A full backlog: the server is there, just busy accepting.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(self.connect_error(e, SocketType::Stream).at(self)),
            Err(_) => Err(ErrorKind::timed_out("connecting", timeout).at(self)),
        }
    }

    /// Connects a seqpacket or datagram socket (`kind`), retrying while a seqpacket
    /// server's backlog is full, for at most `timeout`. A datagram socket is first bound to
    /// an autobind address, where the server's replies come back.
    pub async fn connect_messages(
        &self,
        kind: SocketType,
        timeout: Duration,
    ) -> Result<MessageSocket, ClientError> {
        self.check_reachable()?;
        let io = |doing, source| ErrorKind::Io { doing, source }.at(self);
        let fd = socket(kind).map_err(|e| io("creating the socket", e))?;
        if kind == SocketType::Datagram {
            rustix::net::bind(&fd, &SocketAddrUnix::new_unnamed())
                .map_err(|e| io("binding a private address for the replies", e.into()))?;
        }
        let addr = self.address().map_err(|e| io("connecting", e))?;
        let attempt = async {
            loop {
                match rustix::net::connect(&fd, &addr) {
                    Err(rustix::io::Errno::AGAIN) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => MessageSocket::new(fd, kind).map_err(|e| io("setting up the socket", e)),
            Ok(Err(e)) => Err(self.connect_error(e.into(), kind).at(self)),
            Err(_) => Err(ErrorKind::timed_out("connecting", timeout).at(self)),
        }
    }

    /// What must hold before any connect: the address fits, and the default directory is
    /// private.
    fn check_reachable(&self) -> Result<(), ClientError> {
        let (len, max) = self.len_and_max();
        if len > max {
            return Err(ErrorKind::PathTooLong { len, max }.at(self));
        }
        self.check_default_dir()
    }

    /// Which type the server at this address listens with, found by connecting a
    /// non-blocking socket of each other type: the kernel checks the type before anything
    /// else (`EPROTOTYPE`), so a connect that gets past it, or only finds the backlog full,
    /// has the right one. A datagram connect sends nothing; a stream or seqpacket one is a
    /// connection the server sees open and close at once (only ever on this error path).
    fn probe_type(&self, not: SocketType) -> Option<SocketType> {
        let addr = self.address().ok()?;
        SocketType::ALL
            .into_iter()
            .filter(|&kind| kind != not)
            .find(|&kind| {
                socket(kind).is_ok_and(|fd| {
                    matches!(
                        rustix::net::connect(&fd, &addr),
                        Ok(()) | Err(rustix::io::Errno::AGAIN)
                    )
                })
            })
    }

    async fn connect_once(&self) -> io::Result<UnixStream> {
        match self {
            Target::Path(path) => UnixStream::connect(path).await,
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                stream.set_nonblocking(true)?;
                UnixStream::from_std(stream)
            }
            #[cfg(not(target_os = "linux"))]
            Target::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets are only available on Linux",
            )),
        }
    }

    fn connect_error(&self, e: io::Error, kind: SocketType) -> ErrorKind {
        if e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) {
            return ErrorKind::WrongType {
                ours: kind,
                theirs: self.probe_type(kind),
            };
        }
        match (e.kind(), self) {
            (io::ErrorKind::NotFound, Target::Path(path)) => match path.parent() {
                // Not "start a server there": no server can bind in a missing directory.
                // (The default directory is the exception: the server creates it.)
                Some(dir)
                    if !dir.as_os_str().is_empty()
                        && !dir.exists()
                        && dir != default_socket_dir() =>
                {
                    ErrorKind::NoSuchDirectory(dir.to_owned())
                }
                _ => ErrorKind::NoSuchSocket,
            },
            (io::ErrorKind::ConnectionRefused, Target::Path(path)) if !is_socket(path) => {
                ErrorKind::NotASocket
            }
            (io::ErrorKind::ConnectionRefused, Target::Path(_)) => ErrorKind::Stale,
            (io::ErrorKind::ConnectionRefused, Target::Abstract(_)) => ErrorKind::NotListening,
            (io::ErrorKind::PermissionDenied, _) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io {
                doing: "connecting",
                source: e,
            },
        }
    }

    /// A socket in the default directory is trusted only if that directory is private to this
    /// user, as the server requires: otherwise anyone could have created it first and be
    /// listening there.
    fn check_default_dir(&self) -> Result<(), ClientError> {
        let Target::Path(path) = self else {
            return Ok(());
        };
        let dir = default_socket_dir();
        if path.parent() != Some(dir.as_path()) {
            return Ok(());
        }
        // A missing directory is fine here: connecting then says "no such socket".
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            return Ok(());
        };
        match private_dir_problem(&meta) {
            None => Ok(()),
            Some(why) => Err(ErrorKind::UnsafeDirectory { dir, why }.at(self)),
        }
    }
}

fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
