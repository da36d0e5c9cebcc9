//! The udsecho server as a library: [`Listener::bind`] the socket, then [`run`] it until a
//! [`Shutdown`] begins. `main.rs` only parses flags, installs logging and signal handlers,
//! and turns errors into one line and an exit code; tests call the same functions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), udsecho_server::ListenError> {
//! use udsecho_server::{Config, Listener, Shutdown, SocketAddress};
//!
//! let config = Config::new(SocketAddress::parse("/tmp/echo.sock"));
//! let listener = Listener::bind(&config.socket, config.socket_mode).await?;
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

mod config;
mod connection;
mod listener;
mod server;
mod shutdown;

pub use crate::config::{Config, MAX_SOCKET_PATH, Mode, SocketAddress};
pub use crate::listener::{ListenError, Listener};
pub use crate::server::run;
pub use crate::shutdown::Shutdown;
