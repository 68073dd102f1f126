//! The systemd watchdog: `WATCHDOG=1` is sent only after a liveness check
//! passes, so a wedged process stops sending and systemd restarts it.

use std::time::Duration;

use super::listeners::Set;

/// How often to check and send: half the interval systemd asked for
/// (WATCHDOG_USEC), or `None` when there is no watchdog.
pub fn period() -> Option<Duration> {
    super::notify::watchdog_interval().map(|w| w / 2)
}

/// Liveness: every accept loop still running, and the blocking pool (all file
/// I/O goes through it) answering within a second.
pub async fn alive(listeners: &Set) -> bool {
    if !listeners.all_running() {
        return false;
    }
    let probe = tokio::task::spawn_blocking(|| ());
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(()))
    )
}

/// One watchdog round: the keep-alive if alive, else an error in the log.
pub async fn tick(listeners: &Set) {
    if alive(listeners).await {
        super::notify::watchdog();
    } else {
        tracing::error!("liveness check failed; withholding the watchdog keep-alive");
    }
}
