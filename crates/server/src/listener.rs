//! What the server serves: a socket of any Unix type bound at a path (its lifecycle lives in
//! `socket_file`) or a Linux abstract name, or a socket handed over by systemd or inetd.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tokio::net::UnixDatagram;

use udsecho_unix::registration::register;

use crate::config::{MAX_SOCKET_PATH, SocketAddress, SocketType};
use crate::listen_error::ListenError;
use crate::socket_file::{self, SocketFile};

/// What the server serves: a socket that takes connections, a datagram socket, or one
/// connection a supervisor accepted for it.
#[derive(Debug)]
pub(crate) enum Socket {
    /// A listening stream socket.
    Stream(AsyncFd<OwnedFd>),
    /// A listening seqpacket socket.
    Seqpacket(AsyncFd<OwnedFd>),
    /// A bound datagram socket.
    Datagram(UnixDatagram),
    /// One connected stream socket (systemd `Accept=yes`, `--inetd`): serve it, then stop.
    OneStream(OwnedFd),
    /// One connected seqpacket socket.
    OneSeqpacket(OwnedFd),
}

impl Socket {
    /// Wraps a bound, non-blocking socket of type `kind`; `listening` tells a listener from a
    /// connection. Must be called inside the runtime.
    fn new(fd: OwnedFd, kind: SocketType, listening: bool) -> io::Result<Socket> {
        Ok(match (kind, listening) {
            (SocketType::Stream, true) => Socket::Stream(register(fd)?),
            (SocketType::Stream, false) => Socket::OneStream(fd),
            (SocketType::Seqpacket, true) => Socket::Seqpacket(register(fd)?),
            (SocketType::Seqpacket, false) => Socket::OneSeqpacket(fd),
            (SocketType::Datagram, _) => Socket::Datagram(UnixDatagram::from_std(fd.into())?),
        })
    }

    /// The kind of socket it is.
    pub(crate) fn kind(&self) -> SocketType {
        match self {
            Socket::Stream(_) | Socket::OneStream(_) => SocketType::Stream,
            Socket::Seqpacket(_) | Socket::OneSeqpacket(_) => SocketType::Seqpacket,
            Socket::Datagram(_) => SocketType::Datagram,
        }
    }
}

/// A socket to serve, and the socket file this server owns, if any.
#[derive(Debug)]
pub struct Listener {
    /// What to serve; dropped first at shutdown so no new peer gets in.
    pub(crate) socket: Socket,
    /// The file to remove at the end; `None` for abstract and inherited sockets.
    pub(crate) owned_file: Option<SocketFile>,
    /// How to name this socket in logs.
    pub(crate) name: String,
}

/// A socket systemd passed (`LISTEN_FDS`), taken before any thread starts.
#[derive(Debug)]
pub struct Inherited {
    fd: OwnedFd,
    kind: SocketType,
    /// A listening socket (`Accept=no`), or one connection (`Accept=yes`).
    listening: bool,
    /// The name for logs: `LISTEN_FDNAMES`, else the socket's path.
    name: String,
}

impl Listener {
    /// Binds `address` as a socket of type `kind`, handling every case of the socket file's
    /// lifecycle.
    pub async fn bind(
        address: &SocketAddress,
        socket_mode: u32,
        kind: SocketType,
    ) -> Result<Listener, ListenError> {
        match address {
            SocketAddress::Path(path) => {
                let (fd, file) = socket_file::bind(path, socket_mode, kind).await?;
                let socket = Socket::new(fd, kind, true)
                    .map_err(|e| ListenError::io(path, "registering the socket", e))?;
                Ok(Listener {
                    socket,
                    owned_file: Some(file),
                    name: path.display().to_string(),
                })
            }
            SocketAddress::Abstract(name) => bind_abstract(name, kind),
        }
    }

    /// The default socket ([`SocketAddress::default_path`]) once its private directory exists
    /// and has been checked; see [`default_socket_dir`](crate::default_socket_dir).
    pub fn default_socket() -> Result<SocketAddress, ListenError> {
        let dir = crate::config::default_socket_dir();
        socket_file::prepare_private_dir(&dir)?;
        Ok(SocketAddress::Path(
            dir.join(crate::config::DEFAULT_SOCKET_NAME),
        ))
    }

    /// Takes the socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`), if there is one: a
    /// listening stream or seqpacket socket, a datagram socket, or (`Accept=yes`) one
    /// connection. The socket belongs to systemd: this server never unlinks it.
    ///
    /// Call it before starting threads: it clears `LISTEN_FDS` and `LISTEN_PID`.
    pub fn from_systemd() -> Result<Option<Inherited>, ListenError> {
        let mut fds = listenfd::ListenFd::from_env();
        match fds.len() {
            0 => return Ok(None),
            1 => {}
            n => {
                return Err(ListenError::Activation(io::Error::other(format!(
                    "systemd passed {n} sockets; udsecho serves one (one Listen...= line per \
                     socket unit)"
                ))));
            }
        }
        let family = i32::from(rustix::net::AddressFamily::UNIX.as_raw());
        for kind in SocketType::ALL {
            // Each try validates the family and type; a mismatch leaves the descriptor.
            let raw_kind = i32::try_from(kind.raw().as_raw()).unwrap_or(-1);
            match fds.take_custom::<OwnedFd>(0, family, raw_kind, "Unix socket") {
                Ok(Some(fd)) => {
                    let listening = kind.connects()
                        && rustix::net::sockopt::socket_acceptconn(&fd)
                            .map_err(|e| ListenError::Activation(e.into()))?;
                    let name = systemd_name(&fd);
                    return Ok(Some(Inherited {
                        fd,
                        kind,
                        listening,
                        name,
                    }));
                }
                Ok(None) => break,
                Err(_) => continue,
            }
        }
        Err(ListenError::Activation(io::Error::other(
            "LISTEN_FDS is set but descriptor 3 is not a Unix socket",
        )))
    }

    /// Wraps a socket inherited from systemd; must be called inside the runtime.
    pub fn inherited(inherited: Inherited) -> Result<Listener, ListenError> {
        let Inherited {
            fd,
            kind,
            listening,
            name,
        } = inherited;
        rustix::io::ioctl_fionbio(&fd, true).map_err(|e| ListenError::Activation(e.into()))?;
        let socket = Socket::new(fd, kind, listening).map_err(ListenError::Activation)?;
        Ok(Listener {
            socket,
            owned_file: None,
            name,
        })
    }

    /// `--inetd`: standard input is the socket to serve (inetd, systemd's `Accept=yes` with
    /// `StandardInput=socket`, ucspi-unix's `unixserver`, s6-ipcserver all pass one there):
    /// a connection, served until it ends, or a datagram socket. Inside the runtime.
    pub fn inetd() -> Result<Listener, ListenError> {
        use std::os::fd::AsFd;
        let not_a_socket = |why: String| ListenError::Inetd(why);
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| not_a_socket(format!("standard input: {e}")))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| not_a_socket(e.to_string()))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
            return Err(not_a_socket("standard input is not a socket".to_owned()));
        }
        let family =
            rustix::net::sockopt::socket_domain(&fd).map_err(|e| not_a_socket(e.to_string()))?;
        if family != rustix::net::AddressFamily::UNIX {
            return Err(not_a_socket(
                "standard input is not a Unix socket".to_owned(),
            ));
        }
        let raw =
            rustix::net::sockopt::socket_type(&fd).map_err(|e| not_a_socket(e.to_string()))?;
        let kind = SocketType::from_raw(raw).ok_or_else(|| {
            not_a_socket("standard input is an unsupported socket type".to_owned())
        })?;
        let listening =
            kind.connects() && rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false);
        rustix::io::ioctl_fionbio(&fd, true).map_err(|e| not_a_socket(e.to_string()))?;
        let socket = Socket::new(fd, kind, listening).map_err(|e| not_a_socket(e.to_string()))?;
        Ok(Listener {
            socket,
            owned_file: None,
            name: "standard input (--inetd)".to_owned(),
        })
    }

    /// The socket, as shown in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of socket served.
    pub fn socket_type(&self) -> SocketType {
        self.socket.kind()
    }
}

/// How to name an inherited socket: its `LISTEN_FDNAMES` entry when systemd gave one, else
/// its path.
fn systemd_name(fd: &OwnedFd) -> String {
    let given = std::env::var("LISTEN_FDNAMES")
        .ok()
        .and_then(|names| names.split(':').next().map(str::to_owned))
        .filter(|name| !name.is_empty() && name != "unknown");
    let path = rustix::net::getsockname(fd)
        .ok()
        .and_then(|addr| rustix::net::SocketAddrUnix::try_from(addr).ok())
        .and_then(|addr| addr.path().map(|p| p.to_string_lossy().into_owned()));
    match (given, path) {
        (Some(name), Some(path)) => format!("{path} ({name}, from systemd)"),
        (Some(name), None) => format!("{name} (from systemd)"),
        (None, Some(path)) => format!("{path} (from systemd)"),
        (None, None) => "a socket from systemd".to_owned(),
    }
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str, kind: SocketType) -> Result<Listener, ListenError> {
    let display = format!("@{name}");
    let io_err = |op, source| ListenError::Io {
        socket: display.clone(),
        op,
        source,
    };
    if name.len() > MAX_SOCKET_PATH {
        return Err(ListenError::TooLong {
            path: PathBuf::from(&display),
            len: name.len(),
        });
    }
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes())
        .map_err(|e| io_err("naming the abstract socket", e.into()))?;
    let fd = socket_file::serving_socket(kind).map_err(|e| io_err("creating the socket", e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| {
        if e == rustix::io::Errno::ADDRINUSE {
            ListenError::InUse(display.clone())
        } else {
            io_err("binding", e.into())
        }
    })?;
    udsecho_unix::socket::listen(&fd, kind).map_err(|e| io_err("listening", e))?;
    let socket = Socket::new(fd, kind, true).map_err(|e| io_err("registering", e))?;
    Ok(Listener {
        socket,
        owned_file: None,
        name: display,
    })
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(name: &str, _kind: SocketType) -> Result<Listener, ListenError> {
    Err(ListenError::AbstractUnsupported(name.to_owned()))
}
