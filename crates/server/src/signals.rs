//! Which signals do what. The rule: no signal a terminal, a supervisor or a stray `kill` sends
//! may leave the socket file behind.
//!
//! | signal | effect |
//! |---|---|
//! | `SIGTERM`, `SIGINT`, `SIGHUP` | graceful shutdown: stop accepting, drain, remove the file, exit 0 (`SIGHUP` is a closed terminal: the demo server must clean up too) |
//! | the same again during the drain | cut the remaining connections now |
//! | `SIGQUIT` | cut every connection now (no drain), remove the file, exit 0 |
//! | `SIGUSR1`, `SIGUSR2`, `SIGALRM` | logged and ignored (their default action would kill the server and leave the file) |
//! | `SIGPIPE` | ignored (the Rust runtime does this): a peer that vanished is an error on its write |

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::shutdown::Shutdown;

/// The server's signal handlers, installed before the socket is bound so that a signal that
/// arrives as soon as the file exists drains instead of killing.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    quit: Signal,
    usr1: Signal,
    usr2: Signal,
    alrm: Signal,
}

/// What a received signal asks for.
enum Ask {
    Drain(&'static str),
    Cut(&'static str),
    Nothing(&'static str),
}

impl Signals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> io::Result<Signals> {
        let on = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| io::Error::new(e.kind(), format!("handling {name}: {e}")))
        };
        Ok(Signals {
            term: on(SignalKind::terminate(), "SIGTERM")?,
            int: on(SignalKind::interrupt(), "SIGINT")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
            quit: on(SignalKind::quit(), "SIGQUIT")?,
            usr1: on(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: on(SignalKind::user_defined2(), "SIGUSR2")?,
            alrm: on(SignalKind::alarm(), "SIGALRM")?,
        })
    }

    async fn next(&mut self) -> Ask {
        tokio::select! {
            _ = self.term.recv() => Ask::Drain("SIGTERM"),
            _ = self.int.recv() => Ask::Drain("SIGINT"),
            _ = self.hup.recv() => Ask::Drain("SIGHUP"),
            _ = self.quit.recv() => Ask::Cut("SIGQUIT"),
            _ = self.usr1.recv() => Ask::Nothing("SIGUSR1"),
            _ = self.usr2.recv() => Ask::Nothing("SIGUSR2"),
            _ = self.alrm.recv() => Ask::Nothing("SIGALRM"),
        }
    }

    /// Turns signals into `shutdown` steps, forever (abort the task once the server is done).
    pub async fn drive(mut self, shutdown: Shutdown) {
        loop {
            match self.next().await {
                Ask::Nothing(name) => tracing::info!("{name} received: ignored"),
                Ask::Cut(name) => {
                    tracing::warn!("{name} received: closing every connection now");
                    shutdown.force();
                }
                Ask::Drain(name) if !shutdown.is_begun() => {
                    tracing::info!("{name} received: draining (a second signal stops at once)");
                    shutdown.begin();
                }
                Ask::Drain(name) => {
                    tracing::warn!("{name} received again: closing every connection now");
                    shutdown.force();
                }
            }
        }
    }
}
