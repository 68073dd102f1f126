//! sd_notify: each [`Phase`] change is one message to the service manager.
//! Without NOTIFY_SOCKET (not under systemd, or Type=simple) every call is a
//! no-op, so the rest of the code never asks whether systemd is there.

use crate::state::Phase;
use sd_notify::NotifyState;

/// Tells systemd about a phase change, with a one-line human status.
///
/// - Ready: `READY=1` (start-up done, or a reload finished, failed or not).
/// - Reloading: `RELOADING=1` with `MONOTONIC_USEC`, which systemd 253+
///   requires to match the reload to the SIGHUP it sent.
/// - Draining: `STOPPING=1`.
pub fn phase(phase: Phase, status: &str) {
    let result = match phase {
        Phase::Ready => sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]),
        Phase::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => {
                sd_notify::notify(&[NotifyState::Reloading, now, NotifyState::Status(status)])
            }
            Err(e) => Err(e),
        },
        Phase::Draining => sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status(status)]),
        Phase::Starting | Phase::Stopped => sd_notify::notify(&[NotifyState::Status(status)]),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// `WATCHDOG=1`: "still alive", sent only after a liveness check passed.
pub fn watchdog() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
        tracing::warn!(error = %e, "cannot send the watchdog keep-alive");
    }
}

/// The watchdog interval systemd asked for (WATCHDOG_USEC), if any.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}
