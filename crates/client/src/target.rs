//! The socket to talk to, and connecting to it with errors a person understands.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::error::ClientError;

/// Where the server is: a socket file, or a Linux abstract socket (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (without the `@`).
    Abstract(String),
}

impl Target {
    /// Reads `@name` as abstract, anything else as a path.
    pub fn parse(s: &str) -> Target {
        match s.strip_prefix('@') {
            Some(name) => Target::Abstract(name.to_owned()),
            None => Target::Path(PathBuf::from(s)),
        }
    }

    /// The default socket, the same as the server's: `$XDG_RUNTIME_DIR/udsecho.sock`, else
    /// `/tmp/udsecho-$UID.sock`.
    pub fn default_path() -> Target {
        Target::Path(match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("udsecho.sock"),
            _ => PathBuf::from(format!(
                "/tmp/udsecho-{}.sock",
                rustix::process::getuid().as_raw()
            )),
        })
    }

    /// Connects, retrying while the server's backlog is full, for at most `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<UnixStream, ClientError> {
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
            Ok(Err(e)) => Err(self.connect_error(e)),
            Err(_) => Err(ClientError::TimedOut {
                socket: self.to_string(),
                what: "connecting",
                after: timeout,
            }),
        }
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

    fn connect_error(&self, e: io::Error) -> ClientError {
        let socket = self.to_string();
        match e.kind() {
            io::ErrorKind::NotFound => ClientError::NoSuchSocket(socket),
            io::ErrorKind::ConnectionRefused => match self {
                Target::Path(path) if !is_socket(path) => ClientError::NotASocket(socket),
                _ => ClientError::Refused(socket),
            },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket),
            _ => ClientError::Io {
                socket,
                what: "connecting",
                source: e,
            },
        }
    }
}

fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Path(path) => write!(f, "{}", path.display()),
            Target::Abstract(name) => write!(f, "@{name}"),
        }
    }
}
