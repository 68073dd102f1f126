//! The server's life as explicit phases, one-to-one with sd_notify messages:
//! bind everything (Starting), serve (Ready), re-read the configuration on
//! SIGHUP (Reloading, back to Ready whether it worked or not), stop accepting
//! and let in-flight requests finish within `shutdown_timeout` (Draining),
//! done (Stopped).
//!
//! The server is driven by [`Event`]s on a channel, not by signals directly:
//! [`signals`] turns SIGHUP/SIGTERM/SIGINT into events in production, and
//! tests send events without raising real signals.

pub mod notify;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, Config, ListenAddr, Sources};
use crate::conn;
use crate::listen::{Inherited, ListenError, Listener};
use crate::metrics::Metrics;
use crate::serve::Site;
use crate::tls::{self, Resolver};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Reloading = 2,
    Draining = 3,
    Stopped = 4,
}

/// What the outside world asks of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Re-read and validate the configuration, then swap it in (SIGHUP).
    Reload,
    /// Stop accepting and drain (SIGTERM, SIGINT).
    Shutdown,
}

/// Whether a process with effective user id `euid` may serve `cfg`.
///
/// Root is refused unless `allow_root = true`: once its sockets are open a
/// static file server needs no privilege, and as root any file the root
/// directory links to (or a mistake in `root` itself) is readable. The one
/// exception is the bundled demo tree with no configuration of its own, so
/// that the README's first command works on a fresh machine where the user is
/// root; it is logged as a warning.
pub fn privileges(cfg: &Config, euid: u32) -> Result<Option<String>, String> {
    if euid != 0 || cfg.allow_root {
        return Ok(None);
    }
    let demo = std::fs::canonicalize(config::demo_root()).ok();
    if cfg.source.is_none() && demo.as_deref() == Some(cfg.root.as_path()) {
        return Ok(Some(
            "running as root, allowed for the bundled demo tree only; \
             a configured root is refused as root unless allow_root = true"
                .into(),
        ));
    }
    Err(format!(
        "refusing to run as root (serving {}). Run it as an unprivileged user: \
         the systemd units in deploy/ do (DynamicUser=yes, with sockets passed by \
         systemd), or `setpriv --reuid=www-data --regid=www-data --init-groups \
         ruchy-serve ...`. Set allow_root = true (or RUCHY_SERVE_ALLOW_ROOT=true) \
         to override.",
        cfg.root.display()
    ))
}

/// Reload bookkeeping, for logs, STATUS and the metrics issue.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Configuration generation: 1 at start, +1 per successful reload.
    pub generation: AtomicU64,
}

/// State shared by every connection: the current configuration generation
/// (swapped whole on reload; each request loads it once and keeps it, so
/// in-flight requests finish under the generation they started with) and the
/// phase.
#[derive(Debug)]
pub struct Shared {
    site: ArcSwap<Site>,
    phase: AtomicU8,
    pub reloads: ReloadStats,
    /// Certificates by SNI; swapped on reload and by the file watch.
    pub tls_resolver: Arc<Resolver>,
    /// One rustls configuration for the process, so session tickets survive
    /// certificate rotation.
    pub tls_config: Arc<rustls::ServerConfig>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(config: Arc<Config>) -> Shared {
        let reloads = ReloadStats::default();
        reloads.generation.store(1, Ordering::Relaxed);
        let tls_resolver = Arc::new(Resolver::default());
        tls_resolver.replace(Arc::clone(&config.tls.store));
        let tls_config = tls::server_config(Arc::clone(&tls_resolver));
        let metrics = Arc::new(Metrics::new());
        metrics.generation.set(1);
        metrics.last_reload_success.set(unix_now() as f64);
        metrics.set_certificates(&config.tls.store);
        Shared {
            site: ArcSwap::from_pointee(Site::new(config, metrics.file_cache.clone())),
            phase: AtomicU8::new(Phase::Starting as u8),
            reloads,
            tls_resolver,
            tls_config,
            metrics,
        }
    }
    /// The current generation; cheap (one atomic load and a refcount).
    pub fn site(&self) -> Arc<Site> {
        self.site.load_full()
    }
    /// Swaps in a new configuration with fresh caches.
    fn replace(&self, config: Arc<Config>) {
        self.tls_resolver.replace(Arc::clone(&config.tls.store));
        self.site
            .store(Arc::new(Site::new(config, self.metrics.file_cache.clone())));
        let generation = self.reloads.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.generation.set(generation as i64);
        self.metrics.last_reload_success.set(unix_now() as f64);
        self.metrics.set_certificates(&self.tls_resolver.store());
    }
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Reloading,
            3 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }
    fn set_phase(&self, phase: Phase, status: &str) {
        self.phase.store(phase as u8, Ordering::Release);
        notify::phase(phase, status);
    }
    pub fn generation(&self) -> u64 {
        self.reloads.generation.load(Ordering::Relaxed)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The sockets opened for one `[[listen]]` entry.
struct Bound {
    addr: ListenAddr,
    listeners: Vec<Listener>,
}

/// A `[[listen]]` entry being served: its accept loops and their stop switch.
struct Serving {
    addr: ListenAddr,
    local: Vec<ListenAddr>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

/// A server whose sockets are bound but which does not accept yet.
pub struct Server {
    sources: Sources,
    inherited: Inherited,
    bound: Vec<Bound>,
    /// The metrics listener, if configured.
    admin: Option<Bound>,
    shared: Arc<Shared>,
}

fn open_all(config: &Config, inherited: &Inherited) -> Result<Vec<Bound>, ListenError> {
    let mut bound = Vec::new();
    for l in &config.listen {
        bound.push(Bound {
            addr: l.addr.clone(),
            listeners: Listener::open(&l.addr, inherited)?,
        });
    }
    Ok(bound)
}

impl Server {
    /// Binds every listener or none: the first failure is returned and the
    /// sockets opened so far are closed. `sources` is kept for reloads.
    pub fn bind(
        config: Config,
        sources: Sources,
        inherited: Inherited,
    ) -> Result<Server, ListenError> {
        let bound = open_all(&config, &inherited)?;
        let admin = open_admin(&config, &inherited)?;
        Ok(Server {
            sources,
            inherited,
            bound,
            admin,
            shared: Arc::new(Shared::new(Arc::new(config))),
        })
    }

    /// The addresses actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.bound
            .iter()
            .flat_map(|b| b.listeners.iter().filter_map(|l| l.local_addr().ok()))
            .collect()
    }

    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The metrics listener's bound address, if any.
    pub fn metrics_addr(&self) -> Option<ListenAddr> {
        self.admin
            .as_ref()
            .and_then(|b| b.listeners.first())
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until a Shutdown event (or the sender is dropped), handling
    /// reloads meanwhile; then drains. Returns once every connection has
    /// finished or `shutdown_timeout` has passed.
    pub async fn run(self, mut events: mpsc::Receiver<Event>) {
        let Server {
            sources,
            inherited,
            bound,
            admin,
            shared,
        } = self;
        // Probes first: /readyz answers 503 until the main listeners serve.
        let mut admin = admin.map(|b| serve_admin(b, &shared));
        let graceful = Arc::new(GracefulShutdown::new());
        let mut serving: Vec<Serving> = bound
            .into_iter()
            .map(|b| serve(b, &shared, &graceful))
            .collect();
        let status = status_line(&shared, &serving);
        tracing::info!("ready: {status}");
        shared.set_phase(Phase::Ready, &status);

        let cert_watch = tokio::spawn(watch_certificates(Arc::clone(&shared)));

        // The watchdog keep-alive is sent from this loop, only after the
        // accept loops and the blocking pool have been seen alive, so a wedged
        // process stops sending and systemd restarts it.
        let watchdog = notify::watchdog_interval();
        let mut tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Reload) => {
                        reload(&sources, &inherited, &shared, &graceful, &mut serving, &mut admin).await;
                    }
                    Some(Event::Shutdown) | None => break,
                },
                _ = tick.tick(), if watchdog.is_some() => {
                    if alive(&serving).await {
                        notify::watchdog();
                    } else {
                        tracing::error!("liveness check failed; withholding the watchdog keep-alive");
                    }
                }
            }
        }

        cert_watch.abort();
        let timeout = shared.site().config.shutdown_timeout;
        shared.set_phase(Phase::Draining, "draining: finishing in-flight requests");
        for s in &serving {
            let _ = s.stop.send(true);
        }
        for s in serving {
            for l in s.loops {
                let _ = l.await;
            }
        }
        tracing::info!(
            connections = graceful.count(),
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
        shared.set_phase(Phase::Stopped, "stopped");
        if let Some(a) = admin {
            let _ = a.stop.send(true);
        }
    }
}

fn open_admin(config: &Config, inherited: &Inherited) -> Result<Option<Bound>, ListenError> {
    config
        .metrics
        .address
        .as_ref()
        .map(|addr| {
            Ok(Bound {
                addr: addr.clone(),
                listeners: Listener::open(addr, inherited)?,
            })
        })
        .transpose()
}

fn serve_admin(bound: Bound, shared: &Arc<Shared>) -> Serving {
    let shared = Arc::clone(shared);
    spawn_loops(bound, move |l, _, stop| {
        crate::admin::serve(l, Arc::clone(&shared), stop)
    })
}

/// Checks certificate and key files for changes every `tls.watch_interval`
/// (read from the current configuration each round, so reload can change it).
async fn watch_certificates(shared: Arc<Shared>) {
    let mut last_error = None;
    loop {
        let interval = shared.site().config.tls.watch_interval;
        if interval.is_zero() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(interval).await;
        let resolver = Arc::clone(&shared.tls_resolver);
        last_error = tokio::task::spawn_blocking(move || {
            resolver.refresh_if_changed(&mut last_error);
            last_error
        })
        .await
        .unwrap_or(None);
        shared
            .metrics
            .set_certificates(&shared.tls_resolver.store());
    }
}

fn serve(bound: Bound, shared: &Arc<Shared>, graceful: &Arc<GracefulShutdown>) -> Serving {
    let (shared, graceful) = (Arc::clone(shared), Arc::clone(graceful));
    spawn_loops(bound, move |l, addr, stop| {
        conn::accept_loop(l, addr, Arc::clone(&shared), Arc::clone(&graceful), stop)
    })
}

/// One task per socket of a `[[listen]]` entry (a `systemd:` name may stand
/// for several), all stopped by one switch.
fn spawn_loops<F, Fut>(bound: Bound, accept_loop: F) -> Serving
where
    F: Fn(Listener, ListenAddr, watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop, stop_rx) = watch::channel(false);
    let local = bound
        .listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let loops = bound
        .listeners
        .into_iter()
        .map(|l| tokio::spawn(accept_loop(l, bound.addr.clone(), stop_rx.clone())))
        .collect();
    Serving {
        addr: bound.addr,
        local,
        stop,
        loops,
    }
}

fn status_line(shared: &Shared, serving: &[Serving]) -> String {
    let listening: Vec<String> = serving
        .iter()
        .flat_map(|s| s.local.iter())
        .map(|a| match a {
            ListenAddr::Tcp(a) => format!("http://{a}/"),
            other => other.to_string(),
        })
        .collect();
    format!(
        "serving {} on {} (generation {})",
        shared.site().config.root.display(),
        listening.join(" "),
        shared.generation()
    )
}

/// Liveness: every accept loop still running, and the blocking pool (all file
/// I/O goes through it) answering within a second.
async fn alive(serving: &[Serving]) -> bool {
    if serving
        .iter()
        .flat_map(|s| &s.loops)
        .any(|l| l.is_finished())
    {
        return false;
    }
    let probe = tokio::task::spawn_blocking(|| ());
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(()))
    )
}

/// Reload: read and validate the whole configuration off the runtime, open
/// the listeners it adds, then swap. Any failure leaves the old configuration
/// and listeners serving. Either way systemd hears READY=1 at the end.
async fn reload(
    sources: &Sources,
    inherited: &Inherited,
    shared: &Arc<Shared>,
    graceful: &Arc<GracefulShutdown>,
    serving: &mut Vec<Serving>,
    admin: &mut Option<Serving>,
) {
    shared.set_phase(Phase::Reloading, "reloading configuration");
    let src = sources.clone();
    let loaded = tokio::task::spawn_blocking(move || config::load(&src))
        .await
        .unwrap_or_else(|e| panic!("config loader panicked: {e}"));
    let result = match loaded {
        Err(e) => Err(e.to_string()),
        Ok(cfg) => {
            // Open what is new before touching anything: a port in use must
            // not leave us half reloaded.
            let mut added = Vec::new();
            let mut failure = None;
            for addr in cfg.listen.iter().map(|l| &l.addr) {
                if serving.iter().any(|s| s.addr.same_socket(addr)) {
                    continue;
                }
                match Listener::open(addr, inherited) {
                    Ok(listeners) => added.push(Bound {
                        addr: addr.clone(),
                        listeners,
                    }),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            // The metrics listener: reopened only when its address changed.
            let same_admin = match (&*admin, &cfg.metrics.address) {
                (Some(a), Some(b)) => a.addr.same_socket(b),
                (None, None) => true,
                _ => false,
            };
            let mut new_admin = None;
            if failure.is_none() && !same_admin {
                match open_admin(&cfg, inherited) {
                    Ok(b) => new_admin = Some(b),
                    Err(e) => failure = Some(e.to_string()),
                }
            }
            match failure {
                Some(e) => Err(e),
                None => {
                    if !same_admin {
                        if let Some(old) = admin.take() {
                            let _ = old.stop.send(true);
                        }
                        *admin = new_admin.flatten().map(|b| serve_admin(b, shared));
                    }
                    let (keep, removed): (Vec<Serving>, Vec<Serving>) = std::mem::take(serving)
                        .into_iter()
                        .partition(|s| cfg.listen.iter().any(|l| l.addr.same_socket(&s.addr)));
                    *serving = keep;
                    for s in removed {
                        tracing::info!(listen = %s.addr, "closing listener removed from the configuration");
                        let _ = s.stop.send(true);
                    }
                    crate::logging::apply(&cfg.log);
                    shared.replace(Arc::new(cfg));
                    for b in added {
                        tracing::info!(listen = %b.addr, "opening listener added to the configuration");
                        serving.push(serve(b, shared, graceful));
                    }
                    Ok(())
                }
            }
        }
    };
    let status = match result {
        Ok(()) => {
            shared.reloads.succeeded.fetch_add(1, Ordering::Relaxed);
            shared.metrics.reloads.with_label_values(&["success"]).inc();
            let status = status_line(shared, serving);
            tracing::info!("reloaded: {status}");
            status
        }
        Err(e) => {
            shared.reloads.failed.fetch_add(1, Ordering::Relaxed);
            shared.metrics.reloads.with_label_values(&["failure"]).inc();
            tracing::error!(
                "reload failed, still serving generation {}: {e}",
                shared.generation()
            );
            format!(
                "reload failed: {e}; still serving generation {}",
                shared.generation()
            )
        }
    };
    shared.set_phase(Phase::Ready, &status);
}

/// The signal handlers, installed before READY=1 is sent: a SIGHUP that
/// systemd sends right after READY must find a handler, not SIGHUP's
/// default action (terminate).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers now (needs the runtime).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Turns signals into events: SIGHUP reloads; the first SIGTERM or SIGINT
    /// shuts down gracefully; a second one exits at once, for an operator who
    /// does not want to wait for the drain.
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
