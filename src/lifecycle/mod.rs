//! The server's life as explicit phases: bind everything (Starting), serve
//! (Ready), stop accepting and let in-flight requests finish within
//! `shutdown_timeout` (Draining), done (Stopped). The systemd issue maps these
//! one-to-one onto sd_notify messages and adds Reloading.
//!
//! Shutdown is driven by a future, not by signals directly, so tests can stop
//! an in-process server without raising a real signal.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, ListenAddr};
use crate::conn;
use crate::listen::{ListenError, Listener};
use crate::serve::Site;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
    Stopped = 3,
}

/// State shared by every connection: the current configuration generation
/// (swapped whole on reload; requests load it once and keep it) and the phase.
#[derive(Debug)]
pub struct Shared {
    site: ArcSwap<Site>,
    phase: AtomicU8,
}

impl Shared {
    pub fn new(config: Arc<Config>) -> Shared {
        Shared {
            site: ArcSwap::from_pointee(Site::new(config)),
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }
    /// The current generation; cheap (one atomic load and a refcount).
    pub fn site(&self) -> Arc<Site> {
        self.site.load_full()
    }
    /// Swaps in a new configuration; in-flight requests keep the old one.
    pub fn replace(&self, config: Arc<Config>) {
        self.site.store(Arc::new(Site::new(config)));
    }
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }
    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }
}

/// A server whose sockets are bound but which does not accept yet.
pub struct Server {
    listeners: Vec<Listener>,
    addrs: Vec<ListenAddr>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds every listener or none: the first failure is returned and the
    /// sockets bound so far are closed.
    pub fn bind(config: Config) -> Result<Server, ListenError> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in &config.listen {
            let l = Listener::bind(addr)?;
            addrs.push(l.local_addr().unwrap_or_else(|_| addr.clone()));
            listeners.push(l);
        }
        Ok(Server {
            listeners,
            addrs,
            shared: Arc::new(Shared::new(Arc::new(config))),
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Serves until `shutdown` resolves, then drains. Returns once every
    /// connection has finished or `shutdown_timeout` has passed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listeners,
            addrs,
            shared,
        } = self;
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = JoinSet::new();
        for l in listeners {
            loops.spawn(conn::accept_loop(
                l,
                Arc::clone(&shared),
                Arc::clone(&graceful),
                stop_rx.clone(),
            ));
        }
        shared.set_phase(Phase::Ready);
        let config = shared.site().config.clone();
        let listening: Vec<String> = addrs.iter().map(|a| format!("http://{a}/")).collect();
        tracing::info!(
            "ready: serving {} on {}",
            config.root.display(),
            listening.join(" ")
        );

        shutdown.await;

        shared.set_phase(Phase::Draining);
        let timeout = shared.site().config.shutdown_timeout;
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        let open = graceful.count();
        tracing::info!(
            connections = open,
            timeout_s = timeout.as_secs_f64(),
            "draining: stopped accepting, waiting for in-flight requests"
        );
        // Every accept loop has returned, so we hold the last reference.
        match Arc::try_unwrap(graceful) {
            Ok(graceful) => match tokio::time::timeout(timeout, graceful.shutdown()).await {
                Ok(()) => tracing::info!("drained: all connections closed"),
                Err(_) => tracing::warn!(
                    "shutdown_timeout ({:?}) reached; closing the remaining connections",
                    timeout
                ),
            },
            Err(_) => tracing::warn!("accept loops still hold the drain token; not waiting"),
        }
        shared.set_phase(Phase::Stopped);
    }
}

/// Resolves on the first SIGINT or SIGTERM. A second one exits the process at
/// once, for an operator who does not want to wait for the drain.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = name,
            "second signal: exiting without waiting for the drain"
        );
        std::process::exit(0);
    });
}
