//! The server's life as explicit phases ([`Phase`], in [`crate::state`]),
//! one-to-one with sd_notify messages: bind everything (Starting), serve
//! (Ready), re-read the configuration on SIGHUP (Reloading, back to Ready
//! whether it worked or not), stop accepting and let in-flight requests
//! finish within `shutdown_timeout` (Draining), done (Stopped).
//!
//! The server is driven by [`Event`]s on a channel, not by signals directly:
//! [`signals`] turns SIGHUP/SIGTERM/SIGINT into events in production, and
//! tests send events without raising real signals (SIGUSR1 reopens the
//! access-log file, for logrotate). The jobs, one module each:
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

use crate::access::file::FileLog;
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
    /// Write what the access-log file has buffered and open its path again
    /// (SIGUSR1, after logrotate moved the file).
    ReopenLogs,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be opened.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The access-log file could not be opened.
    #[error("log.access_log_path: cannot open {}: {source}", path.display())]
    AccessLog {
        /// The configured path.
        path: std::path::PathBuf,
        /// What the open said.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the access-log file `cfg` asks for, unless `current` is that file
/// already (a reload that did not change it keeps writing the same one).
pub(crate) fn access_log_for(
    cfg: &Config,
    current: Option<Arc<FileLog>>,
    state: &State,
) -> Result<Option<Arc<FileLog>>, StartError> {
    let Some(spec) = &cfg.log.access_file else {
        return Ok(None);
    };
    if let Some(log) = current.filter(|l| l.spec() == spec) {
        return Ok(Some(log));
    }
    FileLog::open(spec, state.metrics.access_log.clone())
        .map(|l| Some(Arc::new(l)))
        .map_err(|source| StartError::AccessLog {
            path: spec.path.clone(),
            source,
        })
}

/// Opens the `[[sites]]` entries' own access-log files (those other than
/// the top level's), keeping each of `current` that is still wanted.
pub(crate) fn site_logs_for(
    cfg: &Config,
    current: &crate::state::SiteLogs,
    state: &State,
) -> Result<crate::state::SiteLogs, StartError> {
    let mut out = crate::state::SiteLogs::new();
    for site in &cfg.sites {
        let Some(spec) = &site.config.log.access_file else {
            continue;
        };
        if cfg.log.access_file.as_ref() == Some(spec) || out.contains_key(&spec.path) {
            continue;
        }
        let log = match current.get(&spec.path).filter(|l| l.spec() == spec) {
            Some(l) => Arc::clone(l),
            None => Arc::new(
                FileLog::open(spec, state.metrics.access_log.clone()).map_err(|source| {
                    StartError::AccessLog {
                        path: spec.path.clone(),
                        source,
                    }
                })?,
            ),
        };
        out.insert(spec.path.clone(), log);
    }
    Ok(out)
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
    ) -> Result<Server, StartError> {
        let bound = listeners::open(&listeners::wanted(&config), &inherited)?;
        let state = State::new(Arc::new(config));
        state.set_access_log(access_log_for(&state.config(), None, &state)?);
        state.set_site_logs(site_logs_for(&state.config(), &Default::default(), &state)?);
        Ok(Server {
            reloader: Reloader { sources, inherited },
            bound,
            state: Arc::new(state),
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
        let acme = tokio::spawn(crate::acme::manager::run(Arc::clone(&state)));
        let period = watchdog::period();
        let mut tick = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Reload) => reloader.reload(&state, &drain, &mut set).await,
                    Some(Event::ReopenLogs) => {
                        for log in state.all_access_logs() {
                            tracing::info!(path = %log.spec().path.display(), "reopening the access log");
                            log.reopen();
                        }
                    }
                    Some(Event::Shutdown) | None => break,
                },
                _ = tick.tick(), if period.is_some() => watchdog::tick(&set).await,
            }
        }

        cert_watch.abort();
        acme.abort();
        drain_site(&state, drain, &mut set).await;
        for log in state.all_access_logs() {
            // Every request has been logged; write the last lines out.
            let path = log.spec().path.clone();
            let written = tokio::task::spawn_blocking(move || log.close(Duration::from_secs(5)))
                .await
                .unwrap_or(false);
            if !written {
                tracing::warn!(path = %path.display(), "the access log could not be written out within 5 s");
            }
        }
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
    let cfg = state.config();
    let bound = set.bound(Purpose::Site);
    // The endpoints are the `[[listen]]` entries in order (several may be
    // `127.0.0.1:0`), so the order says which is which.
    let in_order = bound.len() == cfg.listen.len();
    let listening: Vec<String> = bound
        .into_iter()
        .enumerate()
        .flat_map(|(i, (configured, local))| {
            // A TLS listener is shown as the URL a browser would use.
            let tls = match in_order {
                true => cfg.listen[i].tls,
                false => cfg.listen.iter().any(|l| l.tls && l.addr == *configured),
            };
            local.iter().map(move |a| match a {
                ListenAddr::Tcp(a) if tls => format!("https://{a}/"),
                ListenAddr::Tcp(a) => format!("http://{a}/"),
                other => other.to_string(),
            })
        })
        .collect();
    format!(
        "serving {} on {} (generation {})",
        state.config().served(),
        listening.join(" "),
        state.generation()
    )
}
