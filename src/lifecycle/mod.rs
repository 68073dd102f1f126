//! The server's life as explicit phases ([`Phase`], in [`crate::state`]),
//! one-to-one with sd_notify messages: bind everything (Starting), serve
//! (Ready), re-read the configuration on SIGHUP (Reloading, back to Ready
//! whether it worked or not), stop accepting and let in-flight requests
//! finish within `shutdown_timeout` (Draining), done (Stopped).
//!
//! The server is driven by [`Event`]s on a channel, not by signals directly:
//! [`signals`] turns SIGHUP/SIGTERM/SIGINT into events in production, and
//! tests send events without raising real signals. The jobs, one module each:
//! - [`listeners`]: every listening socket (site and metrics) as one set;
//! - [`reload`]: load, validate, open, swap;
//! - [`signals`]: signal handlers -> events;
//! - [`watchdog`]: liveness check and `WATCHDOG=1`;
//! - [`certs`]: certificate files watched and reloaded in place;
//! - [`notify`]: the sd_notify messages.

pub mod certs;
pub mod listeners;
pub mod notify;
pub mod reload;
pub mod signals;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use signals::Signals;

use crate::addr::ListenAddr;
use crate::config::{Config, Sources};
use crate::conn::drain::Drain;
use crate::conn::Purpose;
use crate::listen::{Inherited, ListenError};
pub use crate::state::Phase;
use crate::state::State;
use listeners::{Bound, Set};
use reload::Reloader;

/// What the outside world asks of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Re-read and validate the configuration, then swap it in (SIGHUP).
    Reload,
    /// Stop accepting and drain (SIGTERM, SIGINT).
    Shutdown,
}

/// Records a phase change and tells systemd, in that order, so a probe that
/// systemd's message triggers already sees the new phase.
fn enter(state: &State, phase: Phase, status: &str) {
    state.set_phase(phase);
    notify::phase(phase, status);
}

/// A server whose sockets are bound but which does not accept yet.
pub struct Server {
    reloader: Reloader,
    bound: Vec<Bound>,
    state: Arc<State>,
}

impl Server {
    /// Binds every listener or none: the first failure is returned and the
    /// sockets opened so far are closed. `sources` is kept for reloads.
    pub fn bind(
        config: Config,
        sources: Sources,
        inherited: Inherited,
    ) -> Result<Server, ListenError> {
        let bound = listeners::open(&listeners::wanted(&config), &inherited)?;
        Ok(Server {
            reloader: Reloader { sources, inherited },
            bound,
            state: Arc::new(State::new(Arc::new(config))),
        })
    }

    /// The site addresses actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.bound
            .iter()
            .filter(|b| b.is_site())
            .flat_map(|b| b.local())
            .collect()
    }

    /// The server's state (configuration generation, phase, metrics).
    pub fn state(&self) -> Arc<State> {
        Arc::clone(&self.state)
    }

    /// The metrics listener's bound address, if any.
    pub fn metrics_addr(&self) -> Option<ListenAddr> {
        self.bound
            .iter()
            .filter(|b| !b.is_site())
            .flat_map(|b| b.local())
            .next()
    }

    /// Serves until a Shutdown event (or the sender is dropped), handling
    /// reloads meanwhile; then drains. Returns once every connection has
    /// finished or `shutdown_timeout` has passed.
    pub async fn run(self, mut events: mpsc::Receiver<Event>) {
        let Server {
            reloader,
            bound,
            state,
        } = self;
        let drain = Drain::new();
        let mut set = Set::default();
        for b in bound {
            set.push(listeners::serve(b, &state, &drain));
        }
        let status = status_line(&state, &set);
        tracing::info!("ready: {status}");
        enter(&state, Phase::Ready, &status);

        let cert_watch = tokio::spawn(certs::watch(Arc::clone(&state)));
        let period = watchdog::period();
        let mut tick = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Reload) => reloader.reload(&state, &drain, &mut set).await,
                    Some(Event::Shutdown) | None => break,
                },
                _ = tick.tick(), if period.is_some() => watchdog::tick(&set).await,
            }
        }

        cert_watch.abort();
        drain_site(&state, drain, &mut set).await;
        enter(&state, Phase::Stopped, "stopped");
        // Probes answered "draining" until now; the metrics listener goes last.
        set.stop(Purpose::Metrics).await;
    }
}

/// Stops accepting on the site listeners and waits for in-flight requests,
/// at most `shutdown_timeout`.
async fn drain_site(state: &State, drain: Drain, set: &mut Set) {
    let timeout = state.config().shutdown_timeout;
    enter(
        state,
        Phase::Draining,
        "draining: finishing in-flight requests",
    );
    set.stop(Purpose::Site).await;
    // Every site accept loop has returned: what still watches the drain is
    // connections (and loops a reload stopped that have not yet returned).
    tracing::info!(
        connections = drain.count(),
        timeout_s = timeout.as_secs_f64(),
        "draining: stopped accepting, waiting for in-flight requests"
    );
    match tokio::time::timeout(timeout, drain.shutdown()).await {
        Ok(()) => tracing::info!("drained: all connections closed"),
        Err(_) => tracing::warn!(
            "shutdown_timeout ({:?}) reached; closing the remaining connections",
            timeout
        ),
    }
}

fn status_line(state: &State, set: &Set) -> String {
    let listening: Vec<String> = set
        .local(Purpose::Site)
        .iter()
        .map(|a| match a {
            ListenAddr::Tcp(a) => format!("http://{a}/"),
            other => other.to_string(),
        })
        .collect();
    format!(
        "serving {} on {} (generation {})",
        state.config().root.display(),
        listening.join(" "),
        state.generation()
    )
}
