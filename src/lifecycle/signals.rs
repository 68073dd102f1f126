//! Signals in, [`Event`]s out: SIGHUP reloads; SIGUSR1 reopens the
//! access-log file (logrotate's postrotate); the first SIGTERM or SIGINT
//! shuts down gracefully; a second one exits at once, for an operator who
//! does not want to wait for the drain. Tests send events instead.

use tokio::sync::mpsc;

use super::Event;

/// The signal handlers, installed before READY=1 is sent: a SIGHUP that
/// systemd sends right after READY must find a handler, not SIGHUP's
/// default action (terminate).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers now (needs the runtime).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    /// Turns signals into events until the process exits.
    pub async fn forward(mut self, events: mpsc::Sender<Event>) {
        let mut stopping = false;
        loop {
            let name = tokio::select! {
                _ = self.hup.recv() => {
                    if !stopping {
                        tracing::info!(signal = "SIGHUP", "reload requested");
                        let _ = events.send(Event::Reload).await;
                    }
                    continue;
                }
                _ = self.usr1.recv() => {
                    let _ = events.send(Event::ReopenLogs).await;
                    continue;
                }
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            };
            if stopping {
                tracing::warn!(
                    signal = name,
                    "second signal: exiting without waiting for the drain"
                );
                std::process::exit(0);
            }
            stopping = true;
            tracing::info!(signal = name, "shutdown requested");
            let _ = events.send(Event::Shutdown).await;
        }
    }
}
