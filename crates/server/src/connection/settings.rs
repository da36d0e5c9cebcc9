//! What a connection needs from the server's configuration: read-only, shared by every
//! connection.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Mode;
use crate::fault::Faults;

/// What a connection needs from the server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) max_frame: u32,
    pub(crate) idle_timeout: Option<Duration>,
    /// Our name in the Hello answer.
    pub(crate) agent: &'static str,
    /// The server's faults (`--fault`, `--control`); `None` without them.
    pub(crate) faults: Option<Arc<Faults>>,
    /// A proxy's upstream (`--upstream`): connections are forwarded there, not echoed.
    pub(crate) proxy: Option<Arc<crate::proxy::Proxy>>,
}
