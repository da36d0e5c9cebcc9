//! The udsecho server as a library: [`Listener::bind`] the socket, then [`run`] it until a
//! [`Shutdown`] begins. `main.rs` only parses flags (`cli.rs`), installs logging and signal
//! handlers, and turns errors into one line and an exit code; tests call the same functions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), udsecho_server::ListenError> {
//! use udsecho_server::{Config, Listener, Shutdown, SocketAddress};
//!
//! let config = Config::new(SocketAddress::parse("/tmp/echo.sock"));
//! let listener = Listener::bind(&config.socket, config.socket_mode, config.socket_type).await?;
//! let shutdown = Shutdown::new();
//! let server = tokio::spawn({
//!     let shutdown = shutdown.clone();
//!     async move { udsecho_server::run(listener, &config, shutdown).await }
//! });
//! // ... later:
//! shutdown.begin();
//! server.await.ok();
//! # Ok(()) }
//! ```

mod busy_poll;
mod config;
mod connection;
mod datagram;
mod descriptors;
mod echo_log;
mod fault;
mod listen_error;
mod listener;
pub mod logging;
mod notify;
mod proxy;
mod server;
mod shutdown;
mod signals;
mod socket_file;
mod unix_diag;
mod workers;

pub use crate::config::{
    Config, DEFAULT_BUSY_POLL, DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SOCKET_MODE, DEFAULT_SOCKET_NAME, MAX_SOCKET_PATH, MIN_BUSY_POLL, Mode, SocketAddress,
    SocketType, default_socket_dir, default_threads,
};
pub use crate::fault::{Answer, Control, Fault, FaultError, FaultSpec, Faults};
pub use crate::listen_error::ListenError;
pub use crate::listener::{Inherited, Listener};
pub use crate::proxy::faults::{applied as proxy_faults, applies as proxy_applies};
pub use crate::proxy::record::{RecordError, Recorder};
pub use crate::server::{ServeError, run, run_with_control};
pub use crate::shutdown::Shutdown;
pub use crate::signals::Signals;
