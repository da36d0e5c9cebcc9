//! Readiness for systemd (`Type=notify`): `READY=1` once the socket is served, `STOPPING=1`
//! when the drain begins. A no-op without `NOTIFY_SOCKET`; a failure to notify is logged,
//! never fatal (the service manager's timeout says the rest).

use sd_notify::NotifyState;

/// The socket is bound and served.
pub(crate) fn ready(name: &str) {
    let status = format!("serving {name}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The shutdown began: no new connections, the open ones are being drained.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}
